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
    collections::{BTreeMap, VecDeque},
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

/// What the API shows of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthView {
    pub healthy: bool,
    pub pending: u64,
    pub total_failures: u64,
    pub total_successes: u64,
    /// Mean connect time over the last 60 s, microseconds (0: no connects).
    pub latency_last_60s_us: u64,
}

#[derive(Debug, Clone)]
struct BackendHealth {
    seen_established: u64,
    seen_failed: u64,
    overdue_total: u64,
    consecutive: u32,
    open: bool,
    last_failure: Option<Instant>,
    pending: u64,
    /// (when, established so far, connect ns so far) samples for the 60 s mean.
    samples: VecDeque<(Instant, u64, u64)>,
    successes: u64,
    connect_ns: u64,
}

impl BackendHealth {
    fn new(c: &BackendCounters) -> Self {
        BackendHealth {
            seen_established: c.established,
            seen_failed: c.failed,
            overdue_total: 0,
            consecutive: 0,
            open: true,
            last_failure: None,
            pending: 0,
            samples: VecDeque::new(),
            successes: c.established,
            connect_ns: c.connect_ns,
        }
    }
}

/// Health state of every backend of every VIP.
#[derive(Debug, Default)]
pub struct Detector {
    config: HealthConfig,
    backends: BTreeMap<(VipKey, SocketAddr), BackendHealth>,
}

/// A backend taken out or brought back.
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
            backends: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Backends whose successes matter right now: failing (a success resets
    /// their count) or taken out. Everything else needs no reading until the
    /// kernel reports a failure somewhere.
    pub fn watched(&self) -> Vec<(VipKey, SocketAddr)> {
        self.backends
            .iter()
            .filter(|(_, h)| h.consecutive > 0 || !h.open)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Records counter samples for the 60 s latency mean (no state change).
    pub fn sample(
        &mut self,
        now: Instant,
        counters: &BTreeMap<(VipKey, SocketAddr), BackendCounters>,
    ) {
        for (key, c) in counters {
            let h = self
                .backends
                .entry(*key)
                .or_insert_with(|| BackendHealth::new(c));
            h.successes = c.established;
            h.connect_ns = c.connect_ns;
            h.samples.push_back((now, c.established, c.connect_ns));
            while h.samples.len() > 1
                && h.samples
                    .front()
                    .is_some_and(|(t, _, _)| now.duration_since(*t) > Duration::from_secs(60))
            {
                h.samples.pop_front();
            }
        }
    }

    /// Takes in counters read at `now` (every backend when `full`, else only
    /// some) and the pending connects; returns the transitions (empty when
    /// nothing changed selection).
    pub fn observe(
        &mut self,
        now: Instant,
        counters: &BTreeMap<(VipKey, SocketAddr), BackendCounters>,
        pending: &BTreeMap<(VipKey, SocketAddr), Pending>,
        full: bool,
    ) -> Vec<HealthEvent> {
        let mut events = Vec::new();
        if full {
            self.backends.retain(|k, _| counters.contains_key(k));
        }
        self.sample(now, counters);
        for (key, c) in counters {
            let h = self.backends.get_mut(key).expect("sampled above");
            let p = pending.get(key).copied().unwrap_or_default();
            h.pending = p.in_flight;
            // Counters restart at zero when an id is reused: never go backwards.
            let ok = c.established.saturating_sub(h.seen_established);
            let failed = c.failed.saturating_sub(h.seen_failed) + p.overdue;
            h.seen_established = c.established;
            h.seen_failed = c.failed;
            h.overdue_total += p.overdue;
            if failed > 0 {
                h.consecutive = if ok > 0 {
                    failed as u32
                } else {
                    h.consecutive.saturating_add(failed as u32)
                };
                h.last_failure = Some(now);
                if h.open && h.consecutive >= self.config.max_failures {
                    h.open = false;
                    events.push(HealthEvent::Down {
                        vip: key.0,
                        backend: key.1,
                        failures: h.consecutive,
                    });
                }
            } else if ok > 0 && h.open {
                // A closed backend only comes back through the backoff.
                h.consecutive = 0;
            }
        }
        for (key, h) in &mut self.backends {
            if !h.open
                && h.last_failure
                    .is_some_and(|t| now.duration_since(t) >= self.config.backoff)
            {
                // Half-open: chosen again; one more failure takes it out.
                h.open = true;
                h.consecutive = self.config.max_failures.saturating_sub(1);
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
        self.backends.get(&(*vip, backend)).is_none_or(|h| h.open)
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
    pub fn view(&self, vip: &VipKey, backend: SocketAddr) -> Option<HealthView> {
        let h = self.backends.get(&(*vip, backend))?;
        let latency = match (h.samples.front(), h.samples.back()) {
            (Some(first), Some(last)) if last.1 > first.1 => {
                (last.2 - first.2) / (last.1 - first.1) / 1000
            }
            // One sample in the window: the mean since the backend appeared.
            (_, Some(last)) if last.1 > 0 && h.samples.len() == 1 => last.2 / last.1 / 1000,
            _ => 0,
        };
        Some(HealthView {
            healthy: h.open,
            pending: h.pending,
            total_failures: h.seen_failed + h.overdue_total,
            total_successes: h.successes,
            latency_last_60s_us: latency,
        })
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
        let v = d.view(&key().0, key().1).unwrap();
        assert_eq!((v.pending, v.total_failures, v.healthy), (2, 9, false));
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
        d.observe(t0, &counters(0, 0), &BTreeMap::new(), true);
        d.observe(
            t0 + Duration::from_secs(1),
            &counters(10, 0),
            &BTreeMap::new(),
            true,
        );
        assert_eq!(d.view(&key().0, key().1).unwrap().latency_last_60s_us, 100);
    }
}
