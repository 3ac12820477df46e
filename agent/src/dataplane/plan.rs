//! Pure planning of map updates: from what is programmed and the desired
//! [`VipTable`], the ordered list of map operations that gets there without a
//! VIP ever having zero backends mid-update and without a reader ever seeing a
//! half-written slot.
//!
//! Update protocol for one VIP whose backends changed:
//! 1. write all slots of revision `r+1` (new keys, invisible to readers);
//! 2. overwrite the service entry with `{revision: r+1, slot_count}` (one
//!    atomic map update: "the flip");
//! 3. delete the slots of revision `r`.
//!
//! A reader that read the entry before the flip and looks up an old slot after
//! step 3 misses; the program then re-reads the entry once (see
//! ebpf/programs/src/lb.rs).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use garrison_common::{
    BackendSlot, IpAddrBytes, MAX_BACKENDS, MAX_SERVICES, ServiceKey, ServiceValue, SlotKey,
    family_of, port_to_net,
};

use crate::vip::{Protocol, VipKey, VipTable, slots::selection_slots};

/// One map operation, in the order it must be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Zero the statistics of a backend id being freed, so every free id
    /// reads zero when it is handed out again (fresh maps start at zero).
    ResetStats(u32),
    PutSlot(SlotKey, BackendSlot),
    PutService(ServiceKey, ServiceValue),
    DeleteService(ServiceKey),
    DeleteSlot(SlotKey),
}

/// A service as it is in the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgrammedService {
    pub value: ServiceValue,
    /// Slot contents of the live revision, index = slot number.
    pub slots: Vec<BackendSlot>,
    /// Backend id of each backend address, sorted by address (a flat vector:
    /// 160,000 backends cost a few MB, not a tree's worth).
    pub backend_ids: Vec<(SocketAddr, u32)>,
}

impl ProgrammedService {
    /// The backend id of `addr` in this service.
    pub fn backend_id(&self, addr: SocketAddr) -> Option<u32> {
        self.backend_ids
            .binary_search_by_key(&addr, |(a, _)| *a)
            .ok()
            .map(|i| self.backend_ids[i].1)
    }
}

/// What the maps hold, as far as the agent knows (rebuilt from the maps on
/// re-adoption).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub services: BTreeMap<ServiceKey, ProgrammedService>,
}

impl Programmed {
    /// Every (service, backend address, backend id).
    pub fn backend_ids(&self) -> impl Iterator<Item = (&ServiceKey, SocketAddr, u32)> {
        self.services
            .iter()
            .flat_map(|(k, s)| s.backend_ids.iter().map(move |(a, id)| (k, *a, *id)))
    }
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("too many VIPs: {0} (the service map holds {MAX_SERVICES})")]
    TooManyServices(usize),
    #[error("too many VIP backends: the statistics map holds {MAX_BACKENDS} (VIP, backend) pairs")]
    TooManyBackends,
}

/// The map key of a VIP.
pub fn service_key(vip: &VipKey) -> ServiceKey {
    ServiceKey {
        addr: IpAddrBytes::from_ip(vip.addr.ip()),
        port: port_to_net(vip.addr.port()),
        proto: vip.protocol.number(),
        family: family_of(&vip.addr.ip()),
    }
}

/// The VIP of a map key (inverse of [`service_key`]); `None` for a protocol
/// Garrison never writes.
pub fn vip_key(key: &ServiceKey) -> Option<VipKey> {
    Some(VipKey {
        addr: SocketAddr::new(
            key.addr.to_ip(key.family),
            garrison_common::port_from_net(key.port),
        ),
        protocol: Protocol::from_number(key.proto)?,
    })
}

/// Backend address of a slot.
pub fn slot_addr(slot: &BackendSlot) -> SocketAddr {
    SocketAddr::new(
        slot.addr.to_ip(slot.family),
        garrison_common::port_from_net(slot.port),
    )
}

/// Hands out ids below `limit` not in `used`, scanning forward from a cursor
/// (amortised O(log n) per id, so a cold start of 160,000 backends is cheap).
struct IdPool {
    used: BTreeSet<u32>,
    cursor: u32,
    limit: u32,
}

impl IdPool {
    fn new(used: BTreeSet<u32>, limit: u32) -> Self {
        IdPool {
            used,
            cursor: 0,
            limit,
        }
    }

    fn take(&mut self) -> Option<u32> {
        if self.used.len() as u64 >= u64::from(self.limit) {
            return None;
        }
        loop {
            if self.cursor >= self.limit {
                self.cursor = 0;
            }
            let c = self.cursor;
            self.cursor += 1;
            if self.used.insert(c) {
                return Some(c);
            }
        }
    }
}

/// Plans the map operations taking `programmed` to `desired`; returns them
/// and the resulting programmed state.
pub fn plan(
    programmed: &Programmed,
    desired: &VipTable,
) -> Result<(Vec<MapOp>, Programmed), PlanError> {
    if desired.len() > MAX_SERVICES as usize {
        return Err(PlanError::TooManyServices(desired.len()));
    }
    let mut ops = Vec::new();
    let mut next = Programmed::default();
    let mut service_ids = IdPool::new(
        programmed
            .services
            .values()
            .map(|s| s.value.service_id)
            .collect(),
        MAX_SERVICES,
    );
    let mut backend_ids = IdPool::new(
        programmed.backend_ids().map(|(_, _, id)| id).collect(),
        MAX_BACKENDS,
    );
    let desired_keys: BTreeSet<ServiceKey> = desired.iter().map(|(v, _)| service_key(v)).collect();

    // Ids of what goes away stay reserved within this plan (the pools start
    // with every programmed id), so no id is shared within one update.
    for (vip, backends) in desired.iter() {
        let key = service_key(vip);
        let old = programmed.services.get(&key);
        let service_id = match old {
            Some(s) => s.value.service_id,
            None => service_ids
                .take()
                .ok_or(PlanError::TooManyServices(desired.len()))?,
        };
        let mut slot_backends = Vec::with_capacity(backends.len());
        let mut ids = Vec::with_capacity(backends.len());
        for b in backends.iter() {
            let id = match old.and_then(|o| o.backend_id(b.addr)) {
                Some(id) => id,
                None => backend_ids.take().ok_or(PlanError::TooManyBackends)?,
            };
            ids.push((b.addr, id));
            slot_backends.push(BackendSlot {
                addr: IpAddrBytes::from_ip(b.addr.ip()),
                port: port_to_net(b.addr.port()),
                family: key.family,
                _pad: 0,
                backend_id: id,
            });
        }
        let weights: Vec<u32> = backends.iter().map(|b| b.effective_weight()).collect();
        let slots: Vec<BackendSlot> = selection_slots(&weights)
            .into_iter()
            .map(|i| slot_backends[i])
            .collect();
        // VipTable keeps backends sorted by address, so `ids` is sorted.
        debug_assert!(ids.windows(2).all(|w| w[0].0 < w[1].0));
        if let Some(old) = old
            && old.slots == slots
        {
            next.services.insert(
                key,
                ProgrammedService {
                    value: old.value,
                    slots,
                    backend_ids: ids,
                },
            );
            continue;
        }
        let revision = old.map_or(1, |o| o.value.revision.wrapping_add(1));
        for (i, slot) in slots.iter().enumerate() {
            ops.push(MapOp::PutSlot(
                SlotKey {
                    service_id,
                    revision,
                    slot: i as u32,
                    _pad: 0,
                },
                *slot,
            ));
        }
        let value = ServiceValue {
            service_id,
            revision,
            slot_count: slots.len() as u32,
            _pad: 0,
        };
        ops.push(MapOp::PutService(key, value));
        if let Some(old) = old {
            push_slot_deletes(&mut ops, &old.value);
        }
        next.services.insert(
            key,
            ProgrammedService {
                value,
                slots,
                backend_ids: ids,
            },
        );
    }

    for (key, old) in &programmed.services {
        if !desired_keys.contains(key) {
            ops.push(MapOp::DeleteService(*key));
            push_slot_deletes(&mut ops, &old.value);
        }
    }
    // Last, once no slot points at them any more: zero the freed ids.
    let kept: BTreeSet<u32> = next.backend_ids().map(|(_, _, id)| id).collect();
    for (_, _, id) in programmed.backend_ids() {
        if !kept.contains(&id) {
            ops.push(MapOp::ResetStats(id));
        }
    }
    Ok((ops, next))
}

fn push_slot_deletes(ops: &mut Vec<MapOp>, value: &ServiceValue) {
    for slot in 0..value.slot_count {
        ops.push(MapOp::DeleteSlot(SlotKey {
            service_id: value.service_id,
            revision: value.revision,
            slot,
            _pad: 0,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::Backend;

    fn table(entries: &[(&str, &[(&str, u32)])]) -> VipTable {
        let mut t = VipTable::new();
        for (vip, backends) in entries {
            let backends = backends
                .iter()
                .map(|(a, w)| Backend {
                    addr: a.parse().unwrap(),
                    weight: *w,
                    healthy: true,
                })
                .collect();
            t.insert(
                VipKey {
                    addr: vip.parse().unwrap(),
                    protocol: Protocol::Tcp,
                },
                backends,
            )
            .unwrap();
        }
        t
    }

    fn position(ops: &[MapOp], pred: impl Fn(&MapOp) -> bool) -> usize {
        ops.iter().position(pred).expect("op present")
    }

    #[test]
    fn new_vip_writes_slots_before_the_service() {
        let t = table(&[("11.0.0.1:80", &[("10.0.0.1:8080", 1), ("10.0.0.2:8080", 2)])]);
        let (ops, next) = plan(&Programmed::default(), &t).unwrap();
        let flip = position(&ops, |o| matches!(o, MapOp::PutService(..)));
        let slots: Vec<_> = ops
            .iter()
            .filter(|o| matches!(o, MapOp::PutSlot(..)))
            .collect();
        assert_eq!(slots.len(), 3);
        assert!(
            ops[..flip]
                .iter()
                .filter(|o| matches!(o, MapOp::PutSlot(..)))
                .count()
                == 3
        );
        let svc = next.services.values().next().unwrap();
        assert_eq!((svc.value.revision, svc.value.slot_count), (1, 3));
        assert_eq!(next.backend_ids().count(), 2);
    }

    #[test]
    fn unchanged_table_plans_nothing() {
        let t = table(&[("11.0.0.1:80", &[("10.0.0.1:8080", 1)])]);
        let (_, p1) = plan(&Programmed::default(), &t).unwrap();
        let (ops, p2) = plan(&p1, &t).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(p1, p2);
    }

    #[test]
    fn change_flips_revision_then_deletes_old_slots() {
        let t1 = table(&[("11.0.0.1:80", &[("10.0.0.1:8080", 1), ("10.0.0.2:8080", 1)])]);
        let t2 = table(&[("11.0.0.1:80", &[("10.0.0.2:8080", 1)])]);
        let (_, p1) = plan(&Programmed::default(), &t1).unwrap();
        let (ops, p2) = plan(&p1, &t2).unwrap();
        let flip = position(
            &ops,
            |o| matches!(o, MapOp::PutService(_, v) if v.revision == 2 && v.slot_count == 1),
        );
        let put = position(
            &ops,
            |o| matches!(o, MapOp::PutSlot(k, _) if k.revision == 2),
        );
        let del = position(
            &ops,
            |o| matches!(o, MapOp::DeleteSlot(k) if k.revision == 1),
        );
        assert!(put < flip && flip < del, "{ops:?}");
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, MapOp::DeleteSlot(_)))
                .count(),
            2
        );
        // the surviving backend keeps its id (and so its counters)
        let id = |p: &Programmed| {
            p.backend_ids()
                .find(|(_, a, _)| a.port() == 8080 && a.ip().to_string() == "10.0.0.2")
                .map(|(_, _, id)| id)
        };
        assert_eq!(id(&p1), id(&p2));
        // the removed backend's id is zeroed last, after the slots pointing at it are gone
        let freed = p1
            .backend_ids()
            .map(|(_, _, i)| i)
            .find(|i| !p2.backend_ids().any(|(_, _, j)| j == *i))
            .unwrap();
        let reset = position(&ops, |o| matches!(o, MapOp::ResetStats(i) if *i == freed));
        assert_eq!(reset, ops.len() - 1, "{ops:?}");
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, MapOp::ResetStats(_)))
                .count(),
            1
        );
    }

    #[test]
    fn removed_vip_is_deleted_and_no_backend_vip_has_zero_slots() {
        let t1 = table(&[
            ("11.0.0.1:80", &[("10.0.0.1:8080", 1)]),
            ("11.0.0.2:80", &[("10.0.0.1:8080", 1)]),
        ]);
        let t2 = table(&[("11.0.0.2:80", &[("10.0.0.1:8080", 0)])]);
        let (_, p1) = plan(&Programmed::default(), &t1).unwrap();
        let (ops, p2) = plan(&p1, &t2).unwrap();
        assert!(ops.iter().any(|o| matches!(o, MapOp::DeleteService(k) if vip_key(k).unwrap().addr.to_string() == "11.0.0.1:80")));
        assert!(
            ops.iter()
                .any(|o| matches!(o, MapOp::PutService(_, v) if v.slot_count == 0))
        );
        assert_eq!(p2.services.len(), 1);
    }

    #[test]
    fn cold_start_resets_nothing_and_ids_are_unique() {
        let mut t = VipTable::new();
        for v in 0..200u32 {
            let backends = (0..16u32)
                .map(|b| Backend::new(format!("10.1.{}.{}:80", v % 250, b + 1).parse().unwrap()))
                .collect();
            t.insert(
                VipKey {
                    addr: format!("11.0.{}.{}:80", v / 250, v % 250).parse().unwrap(),
                    protocol: Protocol::Tcp,
                },
                backends,
            )
            .unwrap();
        }
        let (ops, p) = plan(&Programmed::default(), &t).unwrap();
        assert!(!ops.iter().any(|o| matches!(o, MapOp::ResetStats(_))));
        let ids: BTreeSet<u32> = p.backend_ids().map(|(_, _, id)| id).collect();
        assert_eq!(ids.len(), 3200);
        let sids: BTreeSet<u32> = p.services.values().map(|s| s.value.service_id).collect();
        assert_eq!(sids.len(), 200);
    }

    #[test]
    fn id_pool_wraps_and_fills() {
        let mut pool = IdPool::new([0, 2].into_iter().collect(), 4);
        assert_eq!(pool.take(), Some(1));
        assert_eq!(pool.take(), Some(3));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn keys_round_trip() {
        for s in ["11.0.0.1:80", "[fd00::5]:443"] {
            let vip = VipKey {
                addr: s.parse().unwrap(),
                protocol: Protocol::Udp,
            };
            assert_eq!(vip_key(&service_key(&vip)), Some(vip));
        }
    }
}
