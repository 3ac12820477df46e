//! The control's VIP table as a source table (pure).
//!
//! The control is the authority for named-VIP addresses: its VIPs arrive with
//! their address and DNS name, so they become address VIPs carrying the name
//! (the agent's own allocator is not consulted). An entry that does not parse
//! is left out with a reason; the others are kept.
use std::net::{IpAddr, SocketAddr};

use garrison_proto::VipTable;

use crate::sources::{SourceTable, SourceVip, VipRef};
use crate::vip::{Backend, Protocol};

/// The table, and one reason per entry left out.
pub fn source_table(table: &VipTable) -> (SourceTable, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for v in &table.vips {
        let ip: IpAddr = match v.ip.parse() {
            Ok(ip) => ip,
            Err(_) => {
                skipped.push(format!("VIP address {:?} is not an IP", v.ip));
                continue;
            }
        };
        let protocol = match v.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                skipped.push(format!("VIP {ip}:{}: protocol {other:?}", v.port));
                continue;
            }
        };
        let mut backends = Vec::new();
        for b in &v.backends {
            match b.ip.parse::<IpAddr>() {
                Ok(bip) => backends.push(Backend {
                    addr: SocketAddr::new(bip, b.port),
                    weight: b.weight,
                    healthy: true,
                }),
                Err(_) => skipped.push(format!(
                    "VIP {ip}:{}: backend {:?} is not an IP",
                    v.port, b.ip
                )),
            }
        }
        out.push(SourceVip {
            vip: VipRef::Ip {
                addr: SocketAddr::new(ip, v.port),
                name: v.name.clone(),
            },
            protocol,
            backends,
            origin: vec![format!("revision {}", table.revision)],
        });
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use garrison_proto::{Vip, VipBackend};

    #[test]
    fn named_vips_keep_the_controls_address_and_weights() {
        let table = VipTable {
            revision: 3,
            vips: vec![
                Vip {
                    ip: "11.4.5.6".into(),
                    port: 80,
                    protocol: "tcp".into(),
                    name: Some("web.marathon.l4lb.thisdcos.directory".into()),
                    backends: vec![
                        VipBackend {
                            ip: "10.0.0.1".into(),
                            port: 31000,
                            weight: 1,
                        },
                        VipBackend {
                            ip: "10.0.0.2".into(),
                            port: 31001,
                            weight: 0,
                        },
                        VipBackend {
                            ip: "nope".into(),
                            port: 1,
                            weight: 1,
                        },
                    ],
                },
                Vip {
                    ip: "x".into(),
                    port: 1,
                    protocol: "tcp".into(),
                    name: None,
                    backends: vec![],
                },
            ],
        };
        let (t, skipped) = source_table(&table);
        assert_eq!(t.len(), 1);
        assert_eq!(skipped.len(), 2);
        assert_eq!(
            t[0].vip,
            VipRef::Ip {
                addr: "11.4.5.6:80".parse().unwrap(),
                name: Some("web.marathon.l4lb.thisdcos.directory".into())
            }
        );
        assert_eq!(
            t[0].backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
            vec![1, 0]
        );
    }
}
