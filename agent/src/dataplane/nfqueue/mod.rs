//! [`NfqueueDataplane`]: DC/OS Minuteman's data path. iptables sends each new
//! TCP connection's SYN to a VIP into an NFQUEUE; a worker thread per queue
//! picks a backend (power of two choices), creates the conntrack entry with
//! DNAT (and SNAT when needed) over ctnetlink and accepts the SYN; the kernel
//! carries the rest of the flow. A conntrack event reader resolves pending
//! connects for the failure detector.
//!
//! - [`rules`]: the ipsets and iptables rules (pure list + commands).
//! - [`ctnetlink`]: conntrack entries and events over netlink.
//! - [`packet`]: parsing queued packets.
//! - [`book`]: the selection table and the flow book (pure).
//!
//! Ownership: the dataplane owns the rules and sets (installed at open,
//! removed on drop — a clean shutdown); the worker and event threads share
//! [`State`] and stop when the dataplane is dropped. A SIGKILLed agent leaves
//! rules and sets in place: new connections to VIPs are then refused (or, with
//! `fail_open`, go to the VIP address unbalanced) and established ones carry
//! on; a restarted agent adopts the rules and rebuilds the sets.
//!
//! Descriptors: the `nfq` crate opens its netlink socket without
//! `SOCK_CLOEXEC` and does not expose it; right after opening a queue, every
//! descriptor of the agent above 2 is marked close-on-exec
//! ([`crate::isolation::privilege::close_on_exec_above_stdio`]), so no program the agent starts inherits
//! it (tasks also mark every descriptor close-on-exec in their child).
pub mod book;
pub mod ctnetlink;
pub mod packet;
pub mod rules;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use book::{FlowBook, Outcome, Selection};
use ctnetlink::{CtError, CtEvents, CtSocket};
use packet::Parsed;
use rules::{Family, RuleConfig, RulesError};

use super::{BackendCounters, Dataplane, DataplaneError, Pending};
use crate::vip::{VipKey, VipTable, choose::SplitMix64};

/// Settings of the NFQUEUE path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfqueueConfig {
    /// First and last queue number (`--queue-balance`), DC/OS: 50:58.
    pub queues: (u16, u16),
    /// What happens to SYNs the agent does not see (agent down, queue full):
    /// `false` refuses them, `true` lets them go to the VIP address.
    pub fail_open: bool,
}

impl Default for NfqueueConfig {
    fn default() -> Self {
        NfqueueConfig {
            queues: (50, 58),
            fail_open: false,
        }
    }
}

/// Why the NFQUEUE path failed.
#[derive(Debug, thiserror::Error)]
pub enum NfqueueError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Conntrack(#[from] CtError),
    #[error("NFQUEUE {queue}: {what}: {source}")]
    Queue {
        queue: u16,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Lifetime of a conntrack entry we create (the kernel's SYN_SENT default;
/// each state change resets it to that state's timeout).
const CT_TIMEOUT_SECS: u32 = 120;
/// Bytes of each packet copied to userspace: enough for IP and TCP headers.
const COPY_RANGE: u16 = 128;
/// `NF_INET_LOCAL_OUT`: the SYN was sent by a local socket.
const HOOK_LOCAL_OUT: u8 = 3;

/// Data-path event counters.
#[derive(Debug, Default)]
struct Events {
    queued: AtomicU64,
    steered: AtomicU64,
    no_backend: AtomicU64,
    not_a_vip: AtomicU64,
    ct_create_failed: AtomicU64,
    retransmitted_syn: AtomicU64,
    replaced_entries: AtomicU64,
    event_errors: AtomicU64,
}

/// What the workers, the event reader and the agent share.
#[derive(Debug, Default)]
struct State {
    selection: RwLock<Arc<Selection>>,
    book: Mutex<FlowBook>,
    events: Events,
    stop: AtomicBool,
}

/// The NFQUEUE data path (see the module docs).
pub struct NfqueueDataplane {
    config: NfqueueConfig,
    state: Arc<State>,
    /// Lookups of overdue flows (the agent's thread).
    ct: CtSocket,
    /// VIP addresses in the sets now.
    in_sets: BTreeSet<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl NfqueueDataplane {
    /// Binds the queues, starts the workers and the event reader, then creates
    /// the sets and installs the rules (in that order: a rule never points
    /// at a queue nobody reads or a set that does not exist).
    pub fn open(config: NfqueueConfig) -> Result<Self, NfqueueError> {
        let state = Arc::new(State::default());
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for queue in config.queues.0..=config.queues.1 {
            let (state, ready) = (state.clone(), ready_tx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("nfq-{queue}"))
                    .spawn(move || worker(queue, config, state, ready))
                    .expect("spawn NFQUEUE worker"),
            );
        }
        drop(ready_tx);
        for _ in config.queues.0..=config.queues.1 {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    state.stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(_) => unreachable!("every worker reports once"),
            }
        }
        let mut events = CtEvents::open(8 << 20)?;
        let st = state.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ct-events".into())
                .spawn(move || {
                    while !st.stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        let r = events.read(|e| st.book.lock().expect("book").observe(&e, now));
                        if let Err(e) = r {
                            st.events.event_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "reading conntrack events");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .expect("spawn conntrack event reader"),
        );
        let dp = NfqueueDataplane {
            config,
            state,
            ct: CtSocket::open()?,
            in_sets: BTreeSet::new(),
            threads,
        };
        rules::ensure_sets()?;
        for family in Family::BOTH {
            rules::rebuild_set(family, &[])?;
        }
        let wanted = rules::rules(&dp.rule_config());
        // A previous run with the other fail-open setting left its REJECT
        // rules (a SIGKILLed agent removes nothing): take them out first.
        let other = rules::rules(&RuleConfig {
            fail_open: !dp.config.fail_open,
            ..dp.rule_config()
        });
        for rule in other.iter().filter(|r| !wanted.contains(r)) {
            rules::remove(rule)?;
        }
        for rule in &wanted {
            rules::ensure(rule)?;
        }
        Ok(dp)
    }

    /// The book's counters of the backends `keep` selects.
    fn counters_where(
        &self,
        keep: impl Fn(&(VipKey, SocketAddr), &BackendCounters) -> bool,
    ) -> BTreeMap<(VipKey, SocketAddr), BackendCounters> {
        self.state
            .book
            .lock()
            .expect("book")
            .counters()
            .filter(|(k, c)| keep(k, c))
            .collect()
    }

    fn rule_config(&self) -> RuleConfig {
        RuleConfig {
            queues: self.config.queues,
            fail_open: self.config.fail_open,
        }
    }

    /// Removes the rules, then the sets (what a clean shutdown does).
    pub fn remove_rules(&self) -> Result<(), RulesError> {
        for rule in rules::rules(&self.rule_config()).iter().rev() {
            rules::remove(rule)?;
        }
        rules::destroy_sets()
    }
}

impl Drop for NfqueueDataplane {
    fn drop(&mut self) {
        if let Err(e) = self.remove_rules() {
            tracing::error!(error = %e, "removing the NFQUEUE rules and sets");
        }
        self.state.stop.store(true, Ordering::Relaxed);
        // The event reader wakes within 200 ms; workers block in recv and end
        // with the process (no packet reaches them once the rules are gone).
        for t in self.threads.drain(..) {
            if t.thread().name() == Some("ct-events") {
                let _ = t.join();
            }
        }
    }
}

/// One queue's loop: parse, choose, create the conntrack entry, accept.
fn worker(
    queue: u16,
    config: NfqueueConfig,
    state: Arc<State>,
    ready: std::sync::mpsc::Sender<Result<(), NfqueueError>>,
) {
    let setup = || -> Result<(nfq::Queue, CtSocket), NfqueueError> {
        let err = |what| {
            move |source| NfqueueError::Queue {
                queue,
                what,
                source,
            }
        };
        let mut q = nfq::Queue::open().map_err(err("open"))?;
        crate::isolation::privilege::close_on_exec_above_stdio()
            .map_err(err("marking descriptors close-on-exec"))?;
        q.bind(queue).map_err(err("bind"))?;
        q.set_copy_range(queue, COPY_RANGE)
            .map_err(err("copy range"))?;
        q.set_queue_max_len(queue, 4096)
            .map_err(err("queue length"))?;
        q.set_fail_open(queue, config.fail_open)
            .map_err(err("fail-open flag"))?;
        Ok((q, CtSocket::open()?))
    };
    let (mut q, mut ct) = match setup() {
        Ok(v) => {
            let _ = ready.send(Ok(()));
            v
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let seed = u64::from(queue) ^ (std::process::id() as u64) << 16 ^ now_nanos();
    let mut rng = SplitMix64::new(seed);
    while !state.stop.load(Ordering::Relaxed) {
        let mut msg = match q.recv() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(queue, error = %e, "NFQUEUE receive");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let local = msg.get_hook() == HOOK_LOCAL_OUT;
        if !handle(&state, &mut ct, &mut rng, msg.get_payload(), local) {
            msg.set_nfmark((msg.get_nfmark() & !rules::MARK_MASK) | rules::NO_BACKEND_MARK);
        }
        msg.set_verdict(nfq::Verdict::Accept);
        if let Err(e) = q.verdict(msg) {
            tracing::warn!(queue, error = %e, "NFQUEUE verdict");
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Steers one queued SYN; `false` when it must be refused (no backend, or the
/// conntrack entry could not be made).
fn handle(
    state: &State,
    ct: &mut CtSocket,
    rng: &mut SplitMix64,
    payload: &[u8],
    local: bool,
) -> bool {
    let ev = &state.events;
    ev.queued.fetch_add(1, Ordering::Relaxed);
    let Parsed::Tcp(flow) = packet::parse(payload) else {
        return true;
    };
    let selection = state.selection.read().expect("selection").clone();
    let Some((vip, backends)) = selection.vip(&flow.dst) else {
        ev.not_a_vip.fetch_add(1, Ordering::Relaxed);
        return false;
    };
    let seq = packet::tcp_seq(payload);
    let backend = {
        let mut book = state.book.lock().expect("book");
        if book.is_retransmission(&flow, seq) {
            // A retransmitted SYN: its entry exists, the kernel NATs it.
            ev.retransmitted_syn.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // A new connection on a tuple whose previous flow is still pending
        // (its conntrack event not read yet): the client reuses the port, so
        // that connection completed (TIME_WAIT is what it leaves).
        book.settle(&flow, Outcome::Answered, Instant::now());
        let Some(b) = backends.choose(rng.next_u64(), rng.next_u64(), |a| book.pending_of(vip, a))
        else {
            ev.no_backend.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        book.begin(flow, *vip, b, Instant::now(), seq);
        b
    };
    let snat = selection.snat_for(&flow, backend, local);
    let created = match ct.create(&flow, backend, snat, CT_TIMEOUT_SECS) {
        // An entry with this tuple outlived its flow (TIME_WAIT after a close,
        // or a connect given up on): the client reuses the port for a new
        // connection. Left alone, the kernel would reopen it without NAT and
        // the SYN would be refused (DC/OS's TIME_WAIT limit); replace it.
        Err(CtError::Exists) => {
            ev.replaced_entries.fetch_add(1, Ordering::Relaxed);
            ct.delete(&flow)
                .and_then(|()| ct.create(&flow, backend, snat, CT_TIMEOUT_SECS))
        }
        other => other,
    };
    match created {
        Ok(()) => {
            ev.steered.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            state.book.lock().expect("book").abandon(&flow);
            if ev.ct_create_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::error!(error = %e, %flow.dst, "creating a conntrack NAT entry (first failure; counted in ct_create_failed)");
            }
            false
        }
    }
}

impl Dataplane for NfqueueDataplane {
    fn apply(&mut self, table: &VipTable) -> Result<(), DataplaneError> {
        // Route lookups are cached per backend address across updates (a
        // 10,000 × 16 table would otherwise cost 160,000 lookups per change).
        // Known limit: a backend's route changing later keeps the old source.
        let previous = self.state.selection.read().expect("selection").clone();
        let selection = Selection::build(table, |ip| {
            previous
                .source_of(ip)
                .unwrap_or_else(|| rules::preferred_source(ip))
        });
        let wanted: BTreeSet<SocketAddr> = selection.vip_addrs().into_iter().collect();
        // New choices first, then the sets: a VIP reaches the queue only once
        // a worker can choose for it.
        *self.state.selection.write().expect("selection") = Arc::new(selection);
        let of = |set: &BTreeSet<SocketAddr>, family| -> Vec<SocketAddr> {
            set.iter()
                .copied()
                .filter(|a| Family::of(a) == family)
                .collect()
        };
        let mut rebuilt = Vec::new();
        for family in Family::BOTH {
            let new = of(&wanted, family);
            if of(&self.in_sets, family) == new {
                continue;
            }
            if let Err(e) = rules::rebuild_set(family, &new) {
                // Keep what was working: the previous choices and sets.
                *self.state.selection.write().expect("selection") = previous;
                for done in rebuilt {
                    if let Err(undo) = rules::rebuild_set(done, &of(&self.in_sets, done)) {
                        tracing::error!(error = %undo, "restoring the previous VIP set");
                    }
                }
                return Err(NfqueueError::from(e).into());
            }
            rebuilt.push(family);
        }
        self.in_sets = wanted;
        self.state.book.lock().expect("book").retain(table);
        Ok(())
    }

    fn counters(&self) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError> {
        Ok(self.state.book.lock().expect("book").counters().collect())
    }

    fn counters_failing(
        &self,
        also: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError> {
        Ok(self.counters_where(|k, c| c.failed > 0 || also.contains(k)))
    }

    fn counters_for(
        &self,
        keys: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError> {
        Ok(self.counters_where(|k, _| keys.contains(k)))
    }

    fn events(&self) -> Result<BTreeMap<&'static str, u64>, DataplaneError> {
        let e = &self.state.events;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let failed = self.state.book.lock().expect("book").failed_total();
        Ok(BTreeMap::from([
            ("queued", get(&e.queued)),
            ("steered", get(&e.steered)),
            ("no_backend", get(&e.no_backend)),
            ("not_a_vip", get(&e.not_a_vip)),
            ("ct_create_failed", get(&e.ct_create_failed)),
            ("retransmitted_syn", get(&e.retransmitted_syn)),
            ("ct_replaced", get(&e.replaced_entries)),
            ("ct_event_errors", get(&e.event_errors)),
            ("connect_failed", failed),
        ]))
    }

    fn pending(
        &mut self,
        overdue_after: Duration,
    ) -> Result<BTreeMap<(VipKey, SocketAddr), Pending>, DataplaneError> {
        let now = Instant::now();
        let late = self
            .state
            .book
            .lock()
            .expect("book")
            .older_than(overdue_after, now);
        // Events can be lost under load: ask conntrack before calling a flow
        // unanswered.
        for flow in late {
            let answered = match self.ct.get(&flow) {
                Ok(Some(e)) => e.answered(),
                Ok(None) => false,
                Err(e) => return Err(NfqueueError::from(e).into()),
            };
            let outcome = if answered {
                Outcome::Answered
            } else {
                Outcome::Overdue
            };
            self.state
                .book
                .lock()
                .expect("book")
                .settle(&flow, outcome, now);
        }
        Ok(self.state.book.lock().expect("book").take_pending())
    }
}
