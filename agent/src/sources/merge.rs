//! Merging sources into one [`VipTable`] (pure).
//!
//! [`Merger`] keeps each source's last good table. A source that starts failing
//! keeps serving its last good table for a grace period, then its table is
//! withdrawn; every transition is returned as a [`SourceEvent`] for the log.
//! [`build_table`] unions the tables (a VIP declared by several sources gets
//! every backend; a backend declared twice keeps the most conservative weight
//! and health) and resolves named VIPs through the allocator. A VIP that cannot
//! be built is left out with an error naming it; the others are unaffected.
//! A VIP whose address may not be a VIP on this host (loopback, link-local,
//! multicast, unspecified, broadcast, one of the host's own addresses: see
//! [`crate::vip::sanity`]) is refused: left out as a [`RefusedVip`] naming
//! the source and where in it the VIP is declared.
use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::{SourceTable, VipRef};
use crate::vip::{
    Backend, VipKey, VipTable,
    named::{NamedVipAllocator, dns_name},
    sanity::{HostAddrs, Unfit, unfit},
};

#[derive(Debug, Default)]
struct SourceState {
    last_good: Option<SourceTable>,
    failing_since: Option<Instant>,
    withdrawn: bool,
}

/// What happened to a source, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Failing {
        source: String,
        error: String,
        kept_vips: usize,
        grace: Duration,
    },
    StillFailing {
        source: String,
        error: String,
    },
    Recovered {
        source: String,
    },
    Withdrawn {
        source: String,
        error: String,
        after: Duration,
    },
}

/// Every source's last good table and failure state.
#[derive(Debug)]
pub struct Merger {
    grace: Duration,
    sources: BTreeMap<String, SourceState>,
    last_errors: BTreeMap<String, String>,
    pending: std::collections::BTreeSet<String>,
}

impl Merger {
    pub fn new(grace: Duration) -> Self {
        Merger {
            grace,
            sources: BTreeMap::new(),
            last_errors: BTreeMap::new(),
            pending: Default::default(),
        }
    }

    /// Declares a source before its first report (see [`Merger::all_reported`]).
    pub fn register(&mut self, source: &str) {
        self.sources.entry(source.to_string()).or_default();
        self.pending.insert(source.to_string());
    }

    /// True once every registered source has reported at least once: until
    /// then the agent keeps what is programmed (e.g. re-adopted after a
    /// restart) instead of programming a partial table.
    pub fn all_reported(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records a poll result; returns events worth logging and whether the
    /// served tables changed.
    pub fn update(
        &mut self,
        source: &str,
        result: Result<SourceTable, String>,
        now: Instant,
    ) -> (Vec<SourceEvent>, bool) {
        self.pending.remove(source);
        let state = self.sources.entry(source.to_string()).or_default();
        let mut events = Vec::new();
        match result {
            Ok(table) => {
                if state.failing_since.take().is_some() {
                    events.push(SourceEvent::Recovered {
                        source: source.into(),
                    });
                }
                self.last_errors.remove(source);
                let changed = state.withdrawn || state.last_good.as_ref() != Some(&table);
                state.withdrawn = false;
                state.last_good = Some(table);
                (events, changed)
            }
            Err(error) => {
                let repeated = self.last_errors.get(source) == Some(&error);
                self.last_errors.insert(source.into(), error.clone());
                if state.failing_since.is_none() {
                    state.failing_since = Some(now);
                    events.push(SourceEvent::Failing {
                        source: source.into(),
                        error,
                        kept_vips: state.last_good.as_ref().map_or(0, Vec::len),
                        grace: self.grace,
                    });
                } else if !repeated {
                    events.push(SourceEvent::StillFailing {
                        source: source.into(),
                        error,
                    });
                }
                let (expired, changed) = self.expire(now);
                events.extend(expired);
                (events, changed)
            }
        }
    }

    /// Withdraws tables of sources failing for longer than the grace period.
    pub fn expire(&mut self, now: Instant) -> (Vec<SourceEvent>, bool) {
        let mut events = Vec::new();
        let mut changed = false;
        for (name, state) in &mut self.sources {
            if let Some(since) = state.failing_since
                && !state.withdrawn
                && now.duration_since(since) >= self.grace
            {
                state.withdrawn = true;
                changed |= state.last_good.take().is_some_and(|t| !t.is_empty());
                events.push(SourceEvent::Withdrawn {
                    source: name.clone(),
                    error: self.last_errors.get(name).cloned().unwrap_or_default(),
                    after: self.grace,
                });
            }
        }
        (events, changed)
    }

    /// The tables currently served, with their source's name.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &SourceTable)> {
        self.sources
            .iter()
            .filter(|(_, s)| !s.withdrawn)
            .filter_map(|(name, s)| Some((name.as_str(), s.last_good.as_ref()?)))
    }
}

/// A VIP left out because its address may not be a VIP on this host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefusedVip {
    pub vip: VipKey,
    /// The source's name (`file`, `mesos URL`, `control`).
    pub source: String,
    /// Where in the source (task and label, file, revision).
    pub origin: Vec<String>,
    pub reason: Unfit,
}

impl fmt::Display for RefusedVip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VIP {} refused: {} is {}; declared by {}",
            self.vip,
            self.vip.addr.ip(),
            self.reason,
            self.source
        )?;
        if !self.origin.is_empty() {
            write!(f, ": {}", self.origin.join("; "))?;
        }
        Ok(())
    }
}

/// What [`build_table`] made of the sources.
#[derive(Debug, Default)]
pub struct Built {
    pub table: VipTable,
    /// One line per VIP left out because it could not be built.
    pub errors: Vec<String>,
    /// VIPs left out because of their address, in order.
    pub refused: Vec<RefusedVip>,
}

/// Unions `tables` (each with its source's name) into a [`VipTable`],
/// allocating named VIP addresses and refusing VIP addresses unfit on a host
/// with addresses `host`.
pub fn build_table<'a>(
    tables: impl Iterator<Item = (&'a str, &'a SourceTable)>,
    allocator: &mut NamedVipAllocator,
    zone: &str,
    host: &HostAddrs,
) -> Built {
    let mut errors = Vec::new();
    let mut refused = Vec::new();
    let mut vips: BTreeMap<VipKey, (Option<String>, BTreeMap<SocketAddr, Backend>)> =
        BTreeMap::new();
    let declared = tables.flat_map(|(source, t)| t.iter().map(move |v| (source, v)));
    for (source, vip) in declared {
        let (addr, name) = match &vip.vip {
            VipRef::Ip { addr, name } => (*addr, name.clone()),
            VipRef::Named {
                name,
                framework,
                port,
            } => {
                let Some(fqdn) = dns_name(name, framework, zone) else {
                    errors.push(format!("named VIP {name:?} of framework {framework:?}: the name has no usable DNS label"));
                    continue;
                };
                match allocator.address(&fqdn) {
                    Ok(ip) => (SocketAddr::new(IpAddr::V4(ip), *port), Some(fqdn)),
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                }
            }
        };
        let key = VipKey {
            addr,
            protocol: vip.protocol,
        };
        if let Some(reason) = unfit(addr.ip(), host) {
            refused.push(RefusedVip {
                vip: key,
                source: source.to_string(),
                origin: vip.origin.clone(),
                reason,
            });
            continue;
        }
        let entry = vips
            .entry(key)
            .or_insert_with(|| (name.clone(), BTreeMap::new()));
        if entry.0.is_none() {
            entry.0 = name;
        }
        for b in &vip.backends {
            entry
                .1
                .entry(b.addr)
                .and_modify(|e| {
                    e.weight = e.weight.min(b.weight);
                    e.healthy &= b.healthy;
                })
                .or_insert(*b);
        }
    }
    let mut table = VipTable::new();
    for (key, (name, backends)) in vips {
        match table.insert(key, backends.into_values().collect()) {
            Ok(()) => {
                if let Some(name) = name {
                    table.set_name(key, name);
                }
            }
            Err(e) => errors.push(format!("VIP {key}: {e}")),
        }
    }
    refused.sort();
    Built {
        table,
        errors,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sources::SourceVip,
        vip::{Protocol, named::L4LB_ZONE},
    };

    fn ip_vip(vip: &str, backends: &[&str]) -> SourceVip {
        SourceVip {
            vip: VipRef::Ip {
                addr: vip.parse().unwrap(),
                name: None,
            },
            protocol: Protocol::Tcp,
            backends: backends
                .iter()
                .map(|b| Backend::new(b.parse().unwrap()))
                .collect(),
            origin: vec![format!("declared {vip}")],
        }
    }

    fn no_host() -> HostAddrs {
        HostAddrs::new()
    }

    fn alloc() -> NamedVipAllocator {
        NamedVipAllocator::new("11.0.0.0/8".parse().unwrap())
    }

    #[test]
    fn union_of_sources_and_named_vips() {
        let a = vec![ip_vip("1.2.3.4:80", &["10.0.0.1:80"])];
        let mut b = vec![ip_vip("1.2.3.4:80", &["10.0.0.2:80", "10.0.0.1:80"])];
        b.push(SourceVip {
            vip: VipRef::Named {
                name: "web".into(),
                framework: "marathon".into(),
                port: 80,
            },
            protocol: Protocol::Tcp,
            backends: vec![Backend::new("10.0.0.3:8080".parse().unwrap())],
            origin: vec![],
        });
        let mut al = alloc();
        let built = build_table(
            [("a", &a), ("b", &b)].into_iter(),
            &mut al,
            L4LB_ZONE,
            &no_host(),
        );
        assert!(built.errors.is_empty(), "{:?}", built.errors);
        assert!(built.refused.is_empty(), "{:?}", built.refused);
        let t = built.table;
        assert_eq!(t.len(), 2);
        let key = VipKey {
            addr: "1.2.3.4:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(t.get(&key).unwrap().len(), 2);
        let (named_key, _) = t.iter().find(|(k, _)| t.name(k).is_some()).unwrap();
        assert_eq!(
            t.name(named_key).unwrap(),
            "web.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(named_key.addr.port(), 80);
    }

    #[test]
    fn a_bad_vip_is_left_out_alone() {
        let mut al = NamedVipAllocator::new("11.0.0.0/30".parse().unwrap());
        let named = |n: &str| SourceVip {
            vip: VipRef::Named {
                name: n.into(),
                framework: "marathon".into(),
                port: 80,
            },
            protocol: Protocol::Tcp,
            backends: vec![],
            origin: vec![],
        };
        let t1 = vec![
            named("a"),
            named("b"),
            named("c"),
            named("!!"),
            ip_vip("1.2.3.4:80", &["[fd00::1]:80"]),
            ip_vip("1.2.3.5:80", &[]),
        ];
        let Built {
            table: t, errors, ..
        } = build_table([("s", &t1)].into_iter(), &mut al, L4LB_ZONE, &no_host());
        assert_eq!(t.len(), 3, "two named VIPs fit a /30, plus 1.2.3.5");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("no free address")));
        assert!(errors.iter().any(|e| e.contains("no usable DNS label")));
        assert!(errors.iter().any(|e| e.contains("IPv6")));
    }

    #[test]
    fn unfit_vips_are_refused_by_name_and_the_good_ones_kept() {
        let mesos = vec![
            ip_vip("127.0.0.1:5051", &["10.0.0.1:31000"]),
            ip_vip("11.2.3.4:80", &["10.0.0.2:31000"]),
            ip_vip("10.0.0.7:80", &["10.0.0.3:31000"]),
        ];
        let file = vec![
            ip_vip("[fe80::1]:80", &["[fd00::1]:80"]),
            ip_vip("[fd00::9]:80", &["[fd00::2]:80"]),
            ip_vip("11.2.3.4:80", &["10.0.0.4:31000"]),
        ];
        let host: HostAddrs = ["10.0.0.7".parse().unwrap()].into();
        let mut al = alloc();
        let built = build_table(
            [("mesos http://m/state", &mesos), ("file", &file)].into_iter(),
            &mut al,
            L4LB_ZONE,
            &host,
        );
        assert!(built.errors.is_empty(), "{:?}", built.errors);
        let kept: Vec<String> = built.table.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(kept, ["11.2.3.4:80/tcp", "[fd00::9]:80/tcp"]);
        let key = VipKey {
            addr: "11.2.3.4:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        };
        assert_eq!(
            built.table.get(&key).unwrap().len(),
            2,
            "a good VIP keeps the backends of every source"
        );
        let refused: Vec<(String, &str, Unfit)> = built
            .refused
            .iter()
            .map(|r| (r.vip.to_string(), r.source.as_str(), r.reason))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "10.0.0.7:80/tcp".to_string(),
                    "mesos http://m/state",
                    Unfit::HostAddress
                ),
                (
                    "127.0.0.1:5051/tcp".to_string(),
                    "mesos http://m/state",
                    Unfit::Loopback
                ),
                ("[fe80::1]:80/tcp".to_string(), "file", Unfit::LinkLocal),
            ]
        );
        let line = built.refused[1].to_string();
        assert!(
            line.contains("127.0.0.1:5051")
                && line.contains("mesos http://m/state")
                && line.contains("declared 127.0.0.1:5051")
                && line.contains("loopback"),
            "{line}"
        );
    }

    #[test]
    fn failing_source_keeps_table_for_grace_then_withdraws() {
        let mut m = Merger::new(Duration::from_secs(60));
        m.register("mesos");
        assert!(!m.all_reported());
        let t0 = Instant::now();
        let (_, changed) = m.update(
            "mesos",
            Ok(vec![ip_vip("1.2.3.4:80", &["10.0.0.1:80"])]),
            t0,
        );
        assert!(changed);
        let (ev, changed) = m.update(
            "mesos",
            Err("connection refused".into()),
            t0 + Duration::from_secs(1),
        );
        assert!(!changed);
        assert!(
            matches!(&ev[..], [SourceEvent::Failing { kept_vips: 1, .. }]),
            "{ev:?}"
        );
        let (ev, _) = m.update(
            "mesos",
            Err("connection refused".into()),
            t0 + Duration::from_secs(2),
        );
        assert!(ev.is_empty(), "same error not repeated: {ev:?}");
        assert_eq!(m.tables().count(), 1, "still served within grace");
        let (ev, changed) = m.expire(t0 + Duration::from_secs(62));
        assert!(changed);
        assert!(matches!(&ev[..], [SourceEvent::Withdrawn { .. }]), "{ev:?}");
        assert_eq!(m.tables().count(), 0);
        let (ev, changed) = m.update("mesos", Ok(vec![]), t0 + Duration::from_secs(70));
        assert!(matches!(&ev[..], [SourceEvent::Recovered { .. }]));
        assert!(changed);
    }
}
