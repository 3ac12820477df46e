//! The passive failure detector (pure), as DC/OS Minuteman's: per backend of
//! each VIP, a TCP connect with no answer within a threshold (default 400 ms)
//! or refused is a failure; `max_failures` (default 5) consecutive failures
//! take the backend out of selection; it is retried `backoff` (default 30 s)
//! after its last failure, and one more failure then takes it out again.
//!
//! Inputs are the kernel's monotonic counters (established / failed) and the
//! agent's count of overdue connects; [`Detector::observe`] turns their deltas
//! into state changes. Within one observation the order of successes and
//! failures is unknown: failures after a success are assumed to be the latest.
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    dataplane::{BackendCounters, Pending},
    vip::{VipKey, VipTable},
};

/// Detector settings.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// A connect unanswered for this long is a failure.
    pub timeout: Duration,
    /// Consecutive failures that take a backend out.
    pub max_failures: u32,
    /// Time after the last failure before a backend is retried.
    pub backoff: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            timeout: Duration::from_millis(400),
            max_failures: 5,
            backoff: Duration::from_secs(30),
        }
    }
}

/// What the API shows of one backend (totals come from the kernel counters).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthView {
    pub healthy: bool,
    pub pending: u64,
    /// Connects the agent found unanswered past the threshold (the kernel
    /// counts the refused and timed-out ones).
    pub overdue: u64,
    /// Mean connect time between the last two samples (at most 60 s apart),
    /// microseconds; 0 without connects.
    pub latency_last_60s_us: u64,
}

/// A backend the detector is watching: it failed lately or is taken out.
#[derive(Debug, Clone)]
struct Tracked {
    seen_established: u64,
    consecutive: u32,
    open: bool,
    last_failure: Instant,
}

/// Health state. It costs memory only for backends that failed: a healthy
/// cluster of 160,000 backends keeps nothing here but latency samples of the
/// backends the API was asked about.
#[derive(Debug, Default)]
pub struct Detector {
    config: HealthConfig,
    tracked: BTreeMap<(VipKey, SocketAddr), Tracked>,
    /// Last kernel `failed` counter of backends that ever failed.
    failed_seen: HashMap<(VipKey, SocketAddr), u64>,
    overdue: HashMap<(VipKey, SocketAddr), u64>,
    pending: HashMap<(VipKey, SocketAddr), u64>,
    /// (when, established, connect ns, mean µs of the last interval).
    latency: HashMap<(VipKey, SocketAddr), (Instant, u64, u64, u64)>,
    initialised: bool,
}

/// A backend taken out or let back in for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    Down {
        vip: VipKey,
        backend: SocketAddr,
        failures: u32,
    },
    Retry {
        vip: VipKey,
        backend: SocketAddr,
    },
}

impl Detector {
    pub fn new(config: HealthConfig) -> Self {
        Detector {
            config,
            ..Default::default()
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Backends whose successes matter right now: failing (a success resets
    /// their count) or taken out.
    pub fn watched(&self) -> Vec<(VipKey, SocketAddr)> {
        self.tracked.keys().copied().collect()
    }

    /// Records counter samples of every backend for the latency mean, and
    /// forgets backends that no longer exist (no state change).
    pub fn sample(
        &mut self,
        now: Instant,
        counters: &BTreeMap<(VipKey, SocketAddr), BackendCounters>,
    ) {
        self.latency.retain(|k, _| counters.contains_key(k));
        self.failed_seen.retain(|k, _| counters.contains_key(k));
        self.overdue.retain(|k, _| counters.contains_key(k));
        for (key, c) in counters {
            let entry = self
                .latency
                .entry(*key)
                .or_insert((now, c.established, c.connect_ns, 0));
            let (t, est, ns, mean) = *entry;
            let mean = if c.established > est && now.duration_since(t) <= Duration::from_secs(60) {
                (c.connect_ns - ns) / (c.established - est) / 1000
            } else if c.established > 0 && est == c.established && mean == 0 {
                c.connect_ns / c.established / 1000
            } else {
                mean
            };
            *entry = (now, c.established, c.connect_ns, mean);
        }
    }

    /// Takes in counters read at `now` (every backend when `full`, else only
    /// the watched ones) and the pending connects; returns the transitions.
    pub fn observe(
        &mut self,
        now: Instant,
        counters: &BTreeMap<(VipKey, SocketAddr), BackendCounters>,
        pending: &BTreeMap<(VipKey, SocketAddr), Pending>,
        full: bool,
    ) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        if full {
            // A full read lists every failing or watched backend that exists.
            self.tracked.retain(|k, _| counters.contains_key(k));
        }
        self.pending = pending
            .iter()
            .filter(|(_, p)| p.in_flight > 0)
            .map(|(k, p)| (*k, p.in_flight))
            .collect();
        let first = !self.initialised && full;
        for (key, c) in counters {
            let overdue = pending.get(key).map_or(0, |p| p.overdue);
            if overdue > 0 {
                *self.overdue.entry(*key).or_default() += overdue;
            }
            let before = self.failed_seen.get(key).copied();
            if c.failed > 0 {
                self.failed_seen.insert(*key, c.failed);
            }
            // On the first full read, failures counted before this agent
            // started (the counters outlive it) are history, not news.
            let failed = if first {
                overdue
            } else {
                c.failed.saturating_sub(before.unwrap_or(0)) + overdue
            };
            let tracked = self.tracked.get_mut(key);
            match (tracked, failed > 0) {
                (None, false) => {}
                (None, true) => {
                    let t = Tracked {
                        seen_established: c.established,
                        consecutive: failed as u32,
                        open: true,
                        last_failure: now,
                    };
                    self.tracked.insert(*key, t);
                }
                (Some(t), true) => {
                    let ok = c.established.saturating_sub(t.seen_established);
                    t.seen_established = c.established;
                    t.consecutive = if ok > 0 {
                        failed as u32
                    } else {
                        t.consecutive.saturating_add(failed as u32)
                    };
                    t.last_failure = now;
                }
                (Some(t), false) => {
                    let ok = c.established.saturating_sub(t.seen_established);
                    t.seen_established = c.established;
                    if ok > 0 && t.open {
                        // Answered again: no longer watched.
                        self.tracked.remove(key);
                    }
                }
            }
            if let Some(t) = self.tracked.get_mut(key)
                && t.open
                && t.consecutive >= self.config.max_failures
            {
                t.open = false;
                events.push(HealthEvent::Down {
                    vip: key.0,
                    backend: key.1,
                    failures: t.consecutive,
                });
            }
        }
        if full {
            self.initialised = true;
        }
        for (key, t) in &mut self.tracked {
            if !t.open && now.duration_since(t.last_failure) >= self.config.backoff {
                // Half-open: chosen again; one more failure takes it out.
                t.open = true;
                t.consecutive = self.config.max_failures.saturating_sub(1);
                events.push(HealthEvent::Retry {
                    vip: key.0,
                    backend: key.1,
                });
            }
        }
        events
    }

    /// Whether the detector lets a backend be chosen (unknown: yes).
    pub fn is_open(&self, vip: &VipKey, backend: SocketAddr) -> bool {
        self.tracked.get(&(*vip, backend)).is_none_or(|t| t.open)
    }

    /// `table` with backends the detector took out marked unhealthy.
    pub fn overlay(&self, table: &VipTable) -> VipTable {
        let mut out = VipTable::new();
        for (key, backends) in table.iter() {
            let backends = backends
                .iter()
                .map(|b| {
                    let mut b = *b;
                    b.healthy &= self.is_open(key, b.addr);
                    b
                })
                .collect();
            out.insert(*key, backends)
                .expect("same VIPs and backends as a valid table");
            if let Some(name) = table.name(key) {
                out.set_name(*key, name.to_string());
            }
        }
        out
    }

    /// The API's view of one backend.
    pub fn view(&self, vip: &VipKey, backend: SocketAddr) -> HealthView {
        let key = (*vip, backend);
        HealthView {
            healthy: self.is_open(vip, backend),
            pending: self.pending.get(&key).copied().unwrap_or(0),
            overdue: self.overdue.get(&key).copied().unwrap_or(0),
            latency_last_60s_us: self.latency.get(&key).map_or(0, |l| l.3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::{Backend, Protocol};

    fn key() -> (VipKey, SocketAddr) {
        (
            VipKey {
                addr: "11.0.0.1:80".parse().unwrap(),
                protocol: Protocol::Tcp,
            },
            "10.0.0.1:80".parse().unwrap(),
        )
    }

    fn counters(established: u64, failed: u64) -> BTreeMap<(VipKey, SocketAddr), BackendCounters> {
        BTreeMap::from([(
            key(),
            BackendCounters {
                established,
                failed,
                connect_ns: established * 100_000,
                ..Default::default()
            },
        )])
    }

    fn cfg() -> HealthConfig {
        HealthConfig {
            timeout: Duration::from_millis(400),
            max_failures: 5,
            backoff: Duration::from_secs(30),
        }
    }

    #[test]
    fn five_consecutive_failures_take_a_backend_out_and_backoff_retries_it() {
        let mut d = Detector::new(cfg());
        let t0 = Instant::now();
        let none = BTreeMap::new();
        assert!(d.observe(t0, &counters(10, 0), &none, true).is_empty());
        assert!(
            d.observe(t0, &counters(10, 4), &none, true).is_empty(),
            "4 failures: still in"
        );
        let ev = d.observe(
            t0 + Duration::from_millis(100),
            &counters(10, 5),
            &none,
            true,
        );
        assert!(
            matches!(ev[..], [HealthEvent::Down { failures: 5, .. }]),
            "{ev:?}"
        );
        assert!(!d.is_open(&key().0, key().1));
        assert!(
            d.observe(t0 + Duration::from_secs(10), &counters(10, 5), &none, true)
                .is_empty(),
            "within backoff"
        );
        let ev = d.observe(t0 + Duration::from_secs(31), &counters(10, 5), &none, true);
        assert!(matches!(ev[..], [HealthEvent::Retry { .. }]), "{ev:?}");
        assert!(d.is_open(&key().0, key().1));
        let ev = d.observe(t0 + Duration::from_secs(32), &counters(10, 6), &none, true);
        assert!(
            matches!(ev[..], [HealthEvent::Down { .. }]),
            "one failure after a retry: out again"
        );
    }

    #[test]
    fn a_success_resets_the_count_and_overdue_connects_are_failures() {
        let mut d = Detector::new(cfg());
        let t0 = Instant::now();
        let none = BTreeMap::new();
        d.observe(t0, &counters(0, 0), &none, true);
        d.observe(t0, &counters(0, 4), &none, true);
        d.observe(t0, &counters(1, 4), &none, true);
        assert!(
            d.observe(t0, &counters(1, 8), &none, true).is_empty(),
            "4 after a success: in"
        );
        let overdue = BTreeMap::from([(
            key(),
            Pending {
                in_flight: 2,
                overdue: 1,
            },
        )]);
        let ev = d.observe(t0, &counters(1, 8), &overdue, true);
        assert!(matches!(ev[..], [HealthEvent::Down { .. }]), "{ev:?}");
        let v = d.view(&key().0, key().1);
        assert_eq!((v.pending, v.overdue, v.healthy), (2, 1, false));
    }

    #[test]
    fn overlay_marks_only_taken_out_backends() {
        let mut d = Detector::new(cfg());
        let t0 = Instant::now();
        d.observe(t0, &counters(0, 0), &BTreeMap::new(), true);
        d.observe(t0, &counters(0, 5), &BTreeMap::new(), true);
        let mut t = VipTable::new();
        let other: SocketAddr = "10.0.0.2:80".parse().unwrap();
        t.insert(key().0, vec![Backend::new(key().1), Backend::new(other)])
            .unwrap();
        let o = d.overlay(&t);
        let b = o.get(&key().0).unwrap();
        assert_eq!((b[0].healthy, b[1].healthy), (false, true));
    }

    #[test]
    fn latency_is_the_mean_over_the_window() {
        let mut d = Detector::new(cfg());
        let t0 = Instant::now();
        d.sample(t0, &counters(0, 0));
        d.sample(t0 + Duration::from_secs(1), &counters(10, 0));
        assert_eq!(d.view(&key().0, key().1).latency_last_60s_us, 100);
    }
}
