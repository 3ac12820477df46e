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
    /// Zero the statistics of a newly allocated backend id.
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
}

/// What the maps hold, as far as the agent knows (rebuilt from the maps on
/// re-adoption).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    pub services: BTreeMap<ServiceKey, ProgrammedService>,
    /// Backend id of each (service, backend address).
    pub backend_ids: BTreeMap<(ServiceKey, SocketAddr), u32>,
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

fn lowest_free(used: &BTreeSet<u32>, limit: u32) -> Option<u32> {
    let mut candidate = 0;
    for &id in used {
        if id != candidate {
            break;
        }
        candidate += 1;
    }
    (candidate < limit).then_some(candidate)
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
    let mut used_services: BTreeSet<u32> = programmed
        .services
        .values()
        .map(|s| s.value.service_id)
        .collect();
    let mut used_backends: BTreeSet<u32> = programmed.backend_ids.values().copied().collect();
    let desired_keys: BTreeSet<ServiceKey> = desired.iter().map(|(v, _)| service_key(v)).collect();

    // Free ids of what goes away first, so they can be reused below... but only
    // after their entries are deleted, which happens at the end: keep them
    // reserved for this plan to avoid sharing an id within one update.
    for (vip, backends) in desired.iter() {
        let key = service_key(vip);
        let old = programmed.services.get(&key);
        let service_id = match old {
            Some(s) => s.value.service_id,
            None => {
                let id = lowest_free(&used_services, MAX_SERVICES)
                    .ok_or(PlanError::TooManyServices(desired.len()))?;
                used_services.insert(id);
                id
            }
        };
        let mut slot_backends = Vec::with_capacity(backends.len());
        for b in backends.iter() {
            let id = match programmed.backend_ids.get(&(key, b.addr)) {
                Some(&id) => id,
                None => {
                    let id = lowest_free(&used_backends, MAX_BACKENDS)
                        .ok_or(PlanError::TooManyBackends)?;
                    used_backends.insert(id);
                    ops.push(MapOp::ResetStats(id));
                    id
                }
            };
            next.backend_ids.insert((key, b.addr), id);
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
        if let Some(old) = old
            && old.slots == slots
        {
            next.services.insert(key, old.clone());
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
        next.services
            .insert(key, ProgrammedService { value, slots });
    }

    for (key, old) in &programmed.services {
        if !desired_keys.contains(key) {
            ops.push(MapOp::DeleteService(*key));
            push_slot_deletes(&mut ops, &old.value);
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
        assert_eq!(next.backend_ids.len(), 2);
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
            p.backend_ids
                .iter()
                .find(|((_, a), _)| a.port() == 8080 && a.ip().to_string() == "10.0.0.2")
                .map(|(_, id)| *id)
        };
        assert_eq!(id(&p1), id(&p2));
        assert!(!ops.iter().any(|o| matches!(o, MapOp::ResetStats(_))));
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
