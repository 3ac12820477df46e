//! Autoscaling apps from the connection rates of their VIPs (decisions on
//! [`Cluster`]; the rule is [`crate::marathon::autoscale`]).
//!
//! Agents report cumulative per-VIP connection counters; at each app's
//! interval the sum over live agents and the app's VIP keys is compared with
//! the previous sample to give a rate (a counter that went down, e.g. an agent
//! restarted, counts as no traffic). A decision sets `instances` (a scale, not
//! a new version) and starts a deployment, as a `PUT` would. Samples live in
//! memory only: after a control restart the averaging starts over.
use std::collections::BTreeMap;

use super::Cluster;
use crate::marathon::autoscale::{AutoscaleState, spec_from_labels};

/// One app's autoscaler.
#[derive(Debug, Default)]
pub struct AppAutoscaler {
    rule: AutoscaleState,
    last: Option<(u64, u64)>,
    next_at_ms: u64,
}

impl Cluster {
    /// An agent's counters (cumulative connections per VIP key).
    pub fn vip_counters(&mut self, agent: &str, counters: BTreeMap<String, u64>) {
        self.counters.insert(agent.to_string(), counters);
    }

    /// Connections so far over the VIP keys of `app_id`, on live agents.
    fn app_connections(&self, app_id: &str) -> u64 {
        let Some(keys) = self.app_vip_keys.get(app_id) else {
            return 0;
        };
        self.counters
            .iter()
            .filter(|(agent, _)| self.agents.get(*agent).is_some_and(|a| a.is_live()))
            .flat_map(|(_, c)| keys.iter().filter_map(move |k| c.get(k)))
            .sum()
    }

    pub(super) fn autoscale(&mut self, now_ms: u64) {
        let apps: Vec<(String, u32, BTreeMap<String, String>)> = self
            .apps
            .values()
            .map(|a| (a.id.clone(), a.instances, a.labels.clone()))
            .collect();
        self.autoscalers.retain(|id, _| self.apps.contains_key(id));
        for (id, instances, labels) in apps {
            let Ok(Some(spec)) = spec_from_labels(&labels) else {
                continue;
            };
            let total = self.app_connections(&id);
            let state = self.autoscalers.entry(id.clone()).or_default();
            if now_ms < state.next_at_ms {
                continue;
            }
            state.next_at_ms = now_ms + spec.interval_ms;
            let previous = state.last.replace((total, now_ms));
            let Some((last_total, last_ms)) = previous else {
                continue;
            };
            let secs = (now_ms.saturating_sub(last_ms)) as f64 / 1000.0;
            if secs <= 0.0 {
                continue;
            }
            let rate = total.saturating_sub(last_total) as f64 / secs;
            let Some(target) = state.rule.sample(&spec, rate, instances) else {
                continue;
            };
            if target == instances {
                continue;
            }
            tracing::info!(app = %id, rate, from = instances, to = target, "autoscale");
            if let Some(app) = self.apps.get_mut(&id) {
                app.instances = target;
            }
            self.touch_app(&id);
            self.event(serde_json::json!({
                "eventType": "api_post_event", "uri": format!("/v2/apps{id}"),
                "source": "autoscale", "rate": rate, "instances": target, "timestamp": now_ms,
            }));
            self.start_deployment(&id, false, now_ms);
        }
    }
}
