//! What the NFQUEUE path knows about its flows (pure, no I/O): the selection
//! table the workers choose from, and the flow book — connects waiting for an
//! answer and the counters per (VIP, backend) that the failure detector and
//! the API read. Time is passed in; nothing here reads a clock.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::ctnetlink::{CtEntry, Flow};
use crate::{
    dataplane::{BackendCounters, Pending},
    vip::{Protocol, VipKey, VipTable, choose::WeightedBackends},
};

/// What the workers choose from: every TCP VIP with its choosable backends,
/// and the source address each backend address is reached from.
#[derive(Debug, Default)]
pub struct Selection {
    vips: HashMap<SocketAddr, (VipKey, WeightedBackends)>,
    sources: HashMap<IpAddr, Option<IpAddr>>,
}

impl Selection {
    /// From a table; `source_for` tells the local address used to reach a
    /// backend address (a route lookup, injected). UDP VIPs are left out:
    /// the NFQUEUE path balances TCP, as Minuteman did.
    pub fn build(table: &VipTable, source_for: impl Fn(IpAddr) -> Option<IpAddr>) -> Self {
        let mut s = Selection::default();
        for (key, backends) in table.iter().filter(|(k, _)| k.protocol == Protocol::Tcp) {
            for b in backends {
                s.sources
                    .entry(b.addr.ip())
                    .or_insert_with(|| source_for(b.addr.ip()));
            }
            s.vips
                .insert(key.addr, (*key, WeightedBackends::new(backends)));
        }
        s
    }

    /// The source address already found for a backend address.
    pub fn source_of(&self, backend: IpAddr) -> Option<Option<IpAddr>> {
        self.sources.get(&backend).copied()
    }

    pub fn vip(&self, dst: &SocketAddr) -> Option<&(VipKey, WeightedBackends)> {
        self.vips.get(dst)
    }

    /// The SNAT address for a locally sent SYN of `flow` to `backend`: the
    /// address the backend is reached from, when it is not the SYN's source
    /// (the VIP's route left from another interface, as Minuteman handled).
    pub fn snat_for(&self, flow: &Flow, backend: SocketAddr, local: bool) -> Option<IpAddr> {
        if !local {
            return None;
        }
        let src = (*self.sources.get(&backend.ip())?)?;
        (src != flow.src.ip()).then_some(src)
    }

    /// The TCP VIP addresses (what the ipsets hold).
    pub fn vip_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.vips.keys().copied().collect();
        v.sort();
        v
    }
}

#[derive(Debug, Clone, Copy)]
struct PendingFlow {
    vip: VipKey,
    backend: SocketAddr,
    since: Instant,
    /// The SYN's sequence number: a retransmission repeats it, a new
    /// connection reusing the tuple does not.
    syn_seq: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct BackendBook {
    counters: BackendCounters,
    pending: u64,
    overdue: u64,
}

/// Flows waiting for an answer and the per-backend counters.
#[derive(Debug, Default)]
pub struct FlowBook {
    pending: HashMap<Flow, PendingFlow>,
    backends: HashMap<(VipKey, SocketAddr), BackendBook>,
    failed_total: u64,
}

/// How a pending flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// Reset by the backend or gone before an answer.
    Failed,
    /// No answer within the threshold.
    Overdue,
}

impl FlowBook {
    /// Unanswered connects to `backend` of `vip`.
    pub fn pending_of(&self, vip: &VipKey, backend: SocketAddr) -> u64 {
        self.backends.get(&(*vip, backend)).map_or(0, |b| b.pending)
    }

    pub fn is_pending(&self, flow: &Flow) -> bool {
        self.pending.contains_key(flow)
    }

    /// Whether a SYN of `flow` with sequence number `seq` repeats the pending
    /// one (a retransmission), rather than opening a new connection on the
    /// same tuple (a reused client port whose previous flow is still pending).
    pub fn is_retransmission(&self, flow: &Flow, seq: Option<u32>) -> bool {
        self.pending
            .get(flow)
            .is_some_and(|p| p.syn_seq.is_none() || seq.is_none() || p.syn_seq == seq)
    }

    /// A SYN of `flow` (sequence number `syn_seq`) was sent to `backend`.
    pub fn begin(
        &mut self,
        flow: Flow,
        vip: VipKey,
        backend: SocketAddr,
        now: Instant,
        syn_seq: Option<u32>,
    ) {
        let b = self.backends.entry((vip, backend)).or_default();
        b.counters.selected += 1;
        b.pending += 1;
        self.pending.insert(
            flow,
            PendingFlow {
                vip,
                backend,
                since: now,
                syn_seq,
            },
        );
    }

    /// The conntrack entry for `flow` could not be made: it was not sent.
    pub fn abandon(&mut self, flow: &Flow) {
        if let Some(p) = self.pending.remove(flow)
            && let Some(b) = self.backends.get_mut(&(p.vip, p.backend))
        {
            b.pending -= 1;
            b.counters.selected -= 1;
        }
    }

    /// Ends `flow` with `outcome` (no-op for flows not pending).
    pub fn settle(&mut self, flow: &Flow, outcome: Outcome, now: Instant) {
        let Some(p) = self.pending.remove(flow) else {
            return;
        };
        let b = self.backends.entry((p.vip, p.backend)).or_default();
        b.pending -= 1;
        match outcome {
            Outcome::Answered => {
                b.counters.established += 1;
                b.counters.connect_ns += now.saturating_duration_since(p.since).as_nanos() as u64;
            }
            Outcome::Failed => {
                b.counters.failed += 1;
                self.failed_total += 1;
            }
            Outcome::Overdue => b.overdue += 1,
        }
    }

    /// Applies a conntrack event or lookup result.
    pub fn observe(&mut self, e: &CtEntry, now: Instant) {
        if e.answered() {
            self.settle(&e.flow, Outcome::Answered, now);
        } else if e.failed() {
            self.settle(&e.flow, Outcome::Failed, now);
        }
    }

    /// Flows unanswered for at least `after`.
    pub fn older_than(&self, after: Duration, now: Instant) -> Vec<Flow> {
        self.pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) >= after)
            .map(|(f, _)| *f)
            .collect()
    }

    /// In-flight connects per backend, and the overdue ones counted since the
    /// last call (reported once).
    pub fn take_pending(&mut self) -> BTreeMap<(VipKey, SocketAddr), Pending> {
        self.backends
            .iter_mut()
            .filter(|(_, b)| b.pending > 0 || b.overdue > 0)
            .map(|(k, b)| {
                let p = Pending {
                    in_flight: b.pending,
                    overdue: std::mem::take(&mut b.overdue),
                };
                (*k, p)
            })
            .collect()
    }

    pub fn counters(&self) -> impl Iterator<Item = ((VipKey, SocketAddr), BackendCounters)> + '_ {
        self.backends.iter().map(|(k, b)| (*k, b.counters))
    }

    /// Failed connects of all backends, ever.
    pub fn failed_total(&self) -> u64 {
        self.failed_total
    }

    /// Forgets counters of backends no longer in `table` (their pending
    /// flows stay until they settle).
    pub fn retain(&mut self, table: &VipTable) {
        let pending: std::collections::HashSet<(VipKey, SocketAddr)> =
            self.pending.values().map(|p| (p.vip, p.backend)).collect();
        self.backends.retain(|(vip, addr), _| {
            table
                .get(vip)
                .is_some_and(|bs| bs.iter().any(|b| b.addr == *addr))
                || pending.contains(&(*vip, *addr))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::Backend;

    fn vip() -> VipKey {
        VipKey {
            addr: "11.1.2.3:80".parse().unwrap(),
            protocol: Protocol::Tcp,
        }
    }

    fn flow(port: u16) -> Flow {
        Flow {
            src: SocketAddr::from(([10, 0, 0, 1], port)),
            dst: vip().addr,
        }
    }

    fn backend() -> SocketAddr {
        "10.0.1.2:8080".parse().unwrap()
    }

    #[test]
    fn answered_flows_count_established_and_latency() {
        let mut book = FlowBook::default();
        let t0 = Instant::now();
        book.begin(flow(1), vip(), backend(), t0, None);
        assert_eq!(book.pending_of(&vip(), backend()), 1);
        book.settle(&flow(1), Outcome::Answered, t0 + Duration::from_millis(3));
        let c: BTreeMap<_, _> = book.counters().collect();
        let c = c[&(vip(), backend())];
        assert_eq!((c.selected, c.established, c.failed), (1, 1, 0));
        assert_eq!(c.connect_ns, 3_000_000);
        assert_eq!(book.pending_of(&vip(), backend()), 0);
        // Settling twice (event and lookup) counts once.
        book.settle(&flow(1), Outcome::Failed, t0);
        assert_eq!(book.failed_total(), 0);
    }

    #[test]
    fn overdue_flows_are_reported_once() {
        let mut book = FlowBook::default();
        let t0 = Instant::now();
        book.begin(flow(1), vip(), backend(), t0, None);
        book.begin(
            flow(2),
            vip(),
            backend(),
            t0 + Duration::from_millis(300),
            None,
        );
        let late = book.older_than(Duration::from_millis(400), t0 + Duration::from_millis(500));
        assert_eq!(late, vec![flow(1)]);
        book.settle(&flow(1), Outcome::Overdue, t0);
        let p = book.take_pending();
        assert_eq!(
            p[&(vip(), backend())],
            Pending {
                in_flight: 1,
                overdue: 1
            }
        );
        assert_eq!(book.take_pending()[&(vip(), backend())].overdue, 0);
    }

    #[test]
    fn abandoned_flows_leave_no_trace() {
        let mut book = FlowBook::default();
        book.begin(flow(1), vip(), backend(), Instant::now(), None);
        book.abandon(&flow(1));
        assert!(!book.is_pending(&flow(1)));
        let c: BTreeMap<_, _> = book.counters().collect();
        assert_eq!(c[&(vip(), backend())].selected, 0);
    }

    #[test]
    fn snat_only_for_local_syns_from_another_address() {
        let mut t = VipTable::new();
        t.insert(vip(), vec![Backend::new(backend())]).unwrap();
        let udp = VipKey {
            addr: "11.1.2.4:53".parse().unwrap(),
            protocol: Protocol::Udp,
        };
        t.insert(udp, vec![Backend::new(backend())]).unwrap();
        let s = Selection::build(&t, |_| Some("10.0.1.1".parse().unwrap()));
        assert_eq!(s.vip_addrs(), vec![vip().addr], "UDP VIPs are not queued");
        assert_eq!(
            s.snat_for(&flow(1), backend(), true),
            Some("10.0.1.1".parse().unwrap())
        );
        assert_eq!(s.snat_for(&flow(1), backend(), false), None);
        let same = Flow {
            src: "10.0.1.1:5".parse().unwrap(),
            dst: vip().addr,
        };
        assert_eq!(s.snat_for(&same, backend(), true), None);
    }

    #[test]
    fn a_reused_port_is_not_a_retransmission() {
        let mut book = FlowBook::default();
        book.begin(flow(1), vip(), backend(), Instant::now(), Some(1000));
        assert!(
            book.is_retransmission(&flow(1), Some(1000)),
            "same ISN: retransmitted"
        );
        assert!(
            !book.is_retransmission(&flow(1), Some(5000)),
            "new ISN: a new connection"
        );
        assert!(
            !book.is_retransmission(&flow(2), Some(1000)),
            "another tuple"
        );
    }
}
