//! Agent-side metrics (the kernel's counters are read at scrape time): update
//! latency histogram, source health and errors, apply outcomes. Rendered in
//! Prometheus text by `api::metrics`.
use std::{collections::BTreeMap, time::Duration};

/// Upper bounds of the update-latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// A fixed-bucket histogram (Prometheus semantics: cumulative on render).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Count per bucket (not cumulative), plus +Inf at the end.
    pub counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
        self.count += 1;
    }
}

/// Health of one source as the daemon last saw it.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    pub up: bool,
    pub errors_total: u64,
    pub last_error: Option<String>,
    pub vips: usize,
}

/// Everything the daemon counts.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    /// From a source change seen to the data plane updated.
    pub update_latency: Histogram,
    pub updates_applied: u64,
    pub apply_errors: u64,
    pub vip_errors: u64,
    /// VIPs refused for their address (loopback, a host address, …).
    pub refused: Vec<crate::sources::merge::RefusedVip>,
    pub sources: BTreeMap<String, SourceHealth>,
}
