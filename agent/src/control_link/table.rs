//! The control's VIP table as a source table (pure).
//!
//! The control is the authority for named-VIP addresses: its VIPs arrive with
//! their address and DNS name, so they become address VIPs carrying the name
//! (the agent's own allocator is not consulted). Addresses and protocols are
//! typed on the wire: a table with one that does not parse is refused whole
//! before it gets here, so every entry converts.
use std::net::SocketAddr;

use garrison_proto::VipTable;

use crate::sources::{SourceTable, SourceVip, VipRef};
use crate::vip::{Backend, Protocol};

/// The table as a source table.
pub fn source_table(table: &VipTable) -> SourceTable {
    table
        .vips
        .iter()
        .map(|v| SourceVip {
            vip: VipRef::Ip {
                addr: SocketAddr::new(v.ip, v.port),
                name: v.name.clone(),
            },
            protocol: v.protocol.into(),
            backends: v
                .backends
                .iter()
                .map(|b| Backend {
                    addr: SocketAddr::new(b.ip, b.port),
                    weight: b.weight,
                    healthy: true,
                })
                .collect(),
            origin: vec![format!("revision {}", table.revision)],
        })
        .collect()
}

/// The wire's protocol as the data path's (total: both know TCP and UDP).
impl From<garrison_proto::Protocol> for Protocol {
    fn from(p: garrison_proto::Protocol) -> Self {
        match p {
            garrison_proto::Protocol::Tcp => Protocol::Tcp,
            garrison_proto::Protocol::Udp => Protocol::Udp,
        }
    }
}

/// The data path's protocol as the wire's (VIP counter keys).
impl From<Protocol> for garrison_proto::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => garrison_proto::Protocol::Tcp,
            Protocol::Udp => garrison_proto::Protocol::Udp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use garrison_proto::{Vip, VipBackend};

    #[test]
    fn named_vips_keep_the_controls_address_and_weights() {
        let backend = |ip: &str, port, weight| VipBackend {
            ip: ip.parse().unwrap(),
            port,
            weight,
        };
        let table = VipTable {
            revision: 3,
            vips: vec![
                Vip {
                    ip: [11, 4, 5, 6].into(),
                    port: 80,
                    protocol: garrison_proto::Protocol::Tcp,
                    name: Some("web.marathon.l4lb.thisdcos.directory".into()),
                    backends: vec![backend("10.0.0.1", 31000, 1), backend("10.0.0.2", 31001, 0)],
                },
                Vip {
                    ip: [10, 10, 0, 1].into(),
                    port: 53,
                    protocol: garrison_proto::Protocol::Udp,
                    name: None,
                    backends: vec![backend("fd00::2", 31053, 1)],
                },
            ],
        };
        let t = source_table(&table);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].vip,
            VipRef::Ip {
                addr: "11.4.5.6:80".parse().unwrap(),
                name: Some("web.marathon.l4lb.thisdcos.directory".into())
            }
        );
        assert_eq!(t[0].protocol, Protocol::Tcp);
        assert_eq!(
            t[0].backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
            vec![1, 0]
        );
        assert_eq!(t[1].protocol, Protocol::Udp);
        assert_eq!(t[1].backends[0].addr, "[fd00::2]:31053".parse().unwrap());
    }
}
