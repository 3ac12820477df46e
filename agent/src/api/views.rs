//! Pure JSON views of the programmed table and its kernel counters.
//!
//! `/vips` keys: a TCP VIP is `"ip:port"` as in Minuteman; a UDP VIP is
//! `"ip:port/udp"`. Backend fields follow Minuteman's names, `total_sucesses`
//! spelled as DC/OS clients expect: for TCP the connects that reached
//! ESTABLISHED, for UDP the datagrams steered; `total_failures` the connects
//! refused, timed out or unanswered past the detector's threshold;
//! `pending_connections` the connects in flight; `latency_last_60s` the mean
//! connect time over the last 60 s in microseconds; `is_healthy` false when a
//! source or the failure detector took the backend out.
use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;

use crate::{
    dataplane::BackendCounters,
    health::HealthView,
    sources::merge::RefusedVip,
    vip::{Protocol, VipKey, VipTable},
};

/// Table and counters read together.
pub struct Snapshot {
    pub table: VipTable,
    pub counters: BTreeMap<(VipKey, SocketAddr), BackendCounters>,
    /// Data-path-wide event counters (`no_backend`, …).
    pub events: BTreeMap<&'static str, u64>,
    /// The failure detector's view of each backend.
    pub health: BTreeMap<(VipKey, SocketAddr), HealthView>,
}

/// One backend in `/vips`.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackendView {
    pub pending_connections: u64,
    pub total_failures: u64,
    pub total_sucesses: u64,
    pub is_healthy: bool,
    pub latency_last_60s: u64,
    /// Garrison extension: weight as programmed (0 = drained or unhealthy).
    pub weight: u32,
    /// Garrison extension: connections (and UDP sends) the kernel steered here.
    pub selected: u64,
}

/// `/vips` body. `names` (a Garrison extension) maps the key of each named
/// VIP to its DNS name and port.
#[derive(Debug, Serialize)]
pub struct VipsView {
    pub vips: BTreeMap<String, BTreeMap<String, BackendView>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub names: BTreeMap<String, String>,
}

/// `/backend/{ip:port}` body: the backend's stats in every VIP that has it.
#[derive(Debug, Serialize)]
pub struct BackendVipsView {
    pub backend: String,
    pub vips: BTreeMap<String, BackendView>,
}

/// The `/vips` key of a VIP.
pub fn vip_label(key: &VipKey) -> String {
    match key.protocol {
        Protocol::Tcp => key.addr.to_string(),
        Protocol::Udp => format!("{}/udp", key.addr),
    }
}

/// Parses a `/vip/{..}` path segment: `ip:port` (TCP) or `ip:port/udp`.
pub fn parse_vip_key(s: &str) -> Option<VipKey> {
    let (addr, protocol) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p.parse().ok()?),
        None => (s, Protocol::Tcp),
    };
    Some(VipKey {
        addr: addr.parse().ok()?,
        protocol,
    })
}

fn backend_view(s: &Snapshot, key: &VipKey, b: &crate::vip::Backend) -> BackendView {
    let c = s.counters.get(&(*key, b.addr)).copied().unwrap_or_default();
    let h = s.health.get(&(*key, b.addr)).copied().unwrap_or_default();
    BackendView {
        pending_connections: h.pending,
        total_failures: c.failed + h.overdue,
        // TCP: connects answered; UDP has no handshake: datagrams steered.
        total_sucesses: match key.protocol {
            Protocol::Tcp => c.established,
            Protocol::Udp => c.selected,
        },
        is_healthy: b.healthy,
        latency_last_60s: h.latency_last_60s_us,
        weight: b.effective_weight(),
        selected: c.selected,
    }
}

/// Backends of one VIP, or `None` when the VIP is unknown.
pub fn vip(s: &Snapshot, key: &VipKey) -> Option<BTreeMap<String, BackendView>> {
    let backends = s.table.get(key)?;
    Some(
        backends
            .iter()
            .map(|b| (b.addr.to_string(), backend_view(s, key, b)))
            .collect(),
    )
}

/// Every VIP a backend serves, or `None` when no VIP has it.
pub fn backend(s: &Snapshot, addr: SocketAddr) -> Option<BackendVipsView> {
    let vips: BTreeMap<String, BackendView> = s
        .table
        .iter()
        .filter_map(|(k, backends)| {
            let b = backends.iter().find(|b| b.addr == addr)?;
            Some((vip_label(k), backend_view(s, k, b)))
        })
        .collect();
    (!vips.is_empty()).then(|| BackendVipsView {
        backend: addr.to_string(),
        vips,
    })
}

/// The whole `/vips` body.
pub fn vips(s: &Snapshot) -> VipsView {
    VipsView {
        vips: s
            .table
            .iter()
            .filter_map(|(k, _)| Some((vip_label(k), vip(s, k)?)))
            .collect(),
        names: s
            .table
            .iter()
            .filter_map(|(k, _)| {
                Some((
                    vip_label(k),
                    format!("{}:{}", s.table.name(k)?, k.addr.port()),
                ))
            })
            .collect(),
    }
}

/// One entry of `/v1/vips/refused`.
#[derive(Debug, Serialize, PartialEq)]
pub struct RefusedView {
    /// `ip:port` as in `/v1/vips`.
    pub vip: String,
    pub protocol: &'static str,
    pub source: String,
    /// Where in the source: Mesos task and label, VIP file, control revision.
    pub origin: Vec<String>,
    /// `loopback`, `link_local`, `multicast`, `unspecified`, `broadcast`, `host_address`.
    pub reason: &'static str,
    /// The whole sentence, as logged.
    pub message: String,
}

/// The `/v1/vips/refused` body.
pub fn refused(list: &[RefusedVip]) -> Vec<RefusedView> {
    list.iter()
        .map(|r| RefusedView {
            vip: r.vip.addr.to_string(),
            protocol: r.vip.protocol.as_str(),
            source: r.source.clone(),
            origin: r.origin.clone(),
            reason: r.reason.as_str(),
            message: r.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::Backend;

    #[test]
    fn vips_view_has_minuteman_shape() {
        let key = parse_vip_key("11.1.2.3:80").unwrap();
        let mut table = VipTable::new();
        let backend: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        table.insert(key, vec![Backend::new(backend)]).unwrap();
        let mut counters = BTreeMap::new();
        counters.insert(
            (key, backend),
            BackendCounters {
                selected: 7,
                established: 7,
                ..Default::default()
            },
        );
        let snap = Snapshot {
            table,
            counters,
            events: BTreeMap::new(),
            health: BTreeMap::new(),
        };
        let json = serde_json::to_value(vips(&snap)).unwrap();
        assert!(json.get("names").is_none(), "no names without named VIPs");
        let by_backend = serde_json::to_value(super::backend(&snap, backend).unwrap()).unwrap();
        assert_eq!(by_backend["vips"]["11.1.2.3:80"]["total_sucesses"], 7);
        assert!(super::backend(&snap, "10.9.9.9:1".parse().unwrap()).is_none());
        let b = &json["vips"]["11.1.2.3:80"]["10.0.0.2:8080"];
        assert_eq!(b["total_sucesses"], 7);
        assert_eq!(b["is_healthy"], true);
        for field in ["pending_connections", "total_failures", "latency_last_60s"] {
            assert!(b.get(field).is_some(), "{field} missing");
        }
    }

    #[test]
    fn vip_keys_parse() {
        assert_eq!(
            parse_vip_key("11.1.2.3:80").unwrap().protocol,
            Protocol::Tcp
        );
        assert_eq!(
            parse_vip_key("[fd00::1]:53/udp").unwrap().protocol,
            Protocol::Udp
        );
        assert!(parse_vip_key("11.1.2.3").is_none());
        assert!(parse_vip_key("nonsense:80").is_none());
        assert!(parse_vip_key("11.1.2.3:80/sctp").is_none());
        assert_eq!(
            vip_label(&parse_vip_key("11.1.2.3:53/udp").unwrap()),
            "11.1.2.3:53/udp"
        );
    }
}
