//! `/metrics` in the Prometheus text format (pure rendering).
use std::fmt::Write as _;

use super::views::{Snapshot, vip_label};
use crate::metrics::{AgentMetrics, LATENCY_BUCKETS};
use crate::vip::sanity::Unfit;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the kernel counters (from `snap`) and the agent's own metrics.
pub fn render(snap: &Snapshot, m: &AgentMetrics) -> String {
    let mut o = String::new();
    let backends: usize = snap.table.iter().map(|(_, b)| b.len()).sum();
    let _ = writeln!(
        o,
        "# HELP garrison_vips VIPs programmed in the data plane.\n# TYPE garrison_vips gauge\ngarrison_vips {}",
        snap.table.len()
    );
    let _ = writeln!(
        o,
        "# HELP garrison_backends Backends programmed, over all VIPs.\n# TYPE garrison_backends gauge\ngarrison_backends {backends}"
    );
    let _ = writeln!(
        o,
        "# HELP garrison_backend_connections_total Connections (and unconnected UDP sends) the kernel steered to a backend of a VIP.\n# TYPE garrison_backend_connections_total counter"
    );
    for (key, backends) in snap.table.iter() {
        for b in backends {
            let n = snap.counters.get(&(*key, b.addr)).map_or(0, |c| c.selected);
            let _ = writeln!(
                o,
                "garrison_backend_connections_total{{vip=\"{}\",backend=\"{}\"}} {n}",
                escape(&vip_label(key)),
                b.addr
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP garrison_backend_healthy 1 if the backend can be chosen.\n# TYPE garrison_backend_healthy gauge"
    );
    for (key, backends) in snap.table.iter() {
        for b in backends {
            let _ = writeln!(
                o,
                "garrison_backend_healthy{{vip=\"{}\",backend=\"{}\"}} {}",
                escape(&vip_label(key)),
                b.addr,
                u8::from(b.effective_weight() > 0)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP garrison_dataplane_events_total Data-path events (counted in the kernel on the eBPF path, by the agent on the NFQUEUE path).\n# TYPE garrison_dataplane_events_total counter"
    );
    for (name, n) in &snap.events {
        let _ = writeln!(o, "garrison_dataplane_events_total{{event=\"{name}\"}} {n}");
    }
    let h = &m.update_latency;
    let _ = writeln!(
        o,
        "# HELP garrison_update_latency_seconds From a source change seen to the data plane updated.\n# TYPE garrison_update_latency_seconds histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            o,
            "garrison_update_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += h.counts[LATENCY_BUCKETS.len()];
    let _ = writeln!(
        o,
        "garrison_update_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        o,
        "garrison_update_latency_seconds_sum {}\ngarrison_update_latency_seconds_count {}",
        h.sum, h.count
    );
    let _ = writeln!(
        o,
        "# HELP garrison_updates_applied_total Table updates programmed.\n# TYPE garrison_updates_applied_total counter\ngarrison_updates_applied_total {}",
        m.updates_applied
    );
    let _ = writeln!(
        o,
        "# HELP garrison_apply_errors_total Table updates the data plane refused.\n# TYPE garrison_apply_errors_total counter\ngarrison_apply_errors_total {}",
        m.apply_errors
    );
    let _ = writeln!(
        o,
        "# HELP garrison_vip_errors VIPs left out of the table (bad labels, range exhausted).\n# TYPE garrison_vip_errors gauge\ngarrison_vip_errors {}",
        m.vip_errors
    );
    let _ = writeln!(
        o,
        "# HELP garrison_vips_refused VIPs refused for their address (GET /v1/vips/refused lists them).\n# TYPE garrison_vips_refused gauge"
    );
    for reason in Unfit::ALL {
        let n = m.refused.iter().filter(|r| r.reason == reason).count();
        let _ = writeln!(
            o,
            "garrison_vips_refused{{reason=\"{}\"}} {n}",
            reason.as_str()
        );
    }
    let _ = writeln!(
        o,
        "# HELP garrison_source_up 1 if the source's last poll succeeded.\n# TYPE garrison_source_up gauge"
    );
    for (name, s) in &m.sources {
        let _ = writeln!(
            o,
            "garrison_source_up{{source=\"{}\"}} {}",
            escape(name),
            u8::from(s.up)
        );
    }
    let _ = writeln!(
        o,
        "# HELP garrison_source_errors_total Failed polls per source.\n# TYPE garrison_source_errors_total counter"
    );
    for (name, s) in &m.sources {
        let _ = writeln!(
            o,
            "garrison_source_errors_total{{source=\"{}\"}} {}",
            escape(name),
            s.errors_total
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        dataplane::BackendCounters,
        vip::{Backend, VipTable},
    };

    #[test]
    fn renders_counters_and_histogram() {
        let key = super::super::views::parse_vip_key("11.1.2.3:80").unwrap();
        let mut table = VipTable::new();
        let b: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
        table.insert(key, vec![Backend::new(b)]).unwrap();
        let mut counters = BTreeMap::new();
        counters.insert(
            (key, b),
            BackendCounters {
                selected: 42,
                ..Default::default()
            },
        );
        let mut events = BTreeMap::new();
        events.insert("no_backend", 3);
        let mut m = AgentMetrics::default();
        m.update_latency
            .observe(std::time::Duration::from_micros(300));
        m.sources
            .entry("mesos http://x/state".into())
            .or_default()
            .errors_total = 2;
        m.refused.push(crate::sources::merge::RefusedVip {
            vip: super::super::views::parse_vip_key("127.0.0.1:5051").unwrap(),
            source: "mesos http://x/state".into(),
            origin: vec![],
            reason: Unfit::Loopback,
        });
        let text = render(
            &Snapshot {
                table,
                counters,
                events,
                health: BTreeMap::new(),
            },
            &m,
        );
        assert!(text.contains("garrison_vips 1\n"), "{text}");
        assert!(text.contains(
            "garrison_backend_connections_total{vip=\"11.1.2.3:80\",backend=\"10.0.0.1:80\"} 42"
        ));
        assert!(text.contains("garrison_dataplane_events_total{event=\"no_backend\"} 3"));
        assert!(text.contains("garrison_update_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("garrison_update_latency_seconds_bucket{le=\"0.00025\"} 0"));
        assert!(text.contains("garrison_update_latency_seconds_count 1"));
        assert!(text.contains("garrison_source_errors_total{source=\"mesos http://x/state\"} 2"));
        assert!(
            text.contains("garrison_vips_refused{reason=\"loopback\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("garrison_vips_refused{reason=\"host_address\"} 0"),
            "{text}"
        );
    }
}
