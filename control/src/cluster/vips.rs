//! The cluster VIP table (pure decisions on [`Cluster`]).
//!
//! `VIP_<n>` labels of an app's port `i` become VIPs: `/name:port` gets the
//! DNS name `name.marathon.l4lb.thisdcos.directory` and an address from the
//! named-VIP range (hash, then probe; allocations persist), `a.b.c.d:port` is
//! used as is. Backends are the app's RUNNING and KILLING tasks at their
//! agent's address and host port `i`, weight 1 when running and healthy (or
//! without health checks), 0 when unhealthy, not yet healthy, or being
//! killed — drained at once, not after a poll interval. Apps sharing a VIP
//! share its backends. Protocol `udp,tcp` gives one VIP per protocol.
//!
//! A new table gets the next revision and goes to every connected agent (one
//! broadcast); a VIP
//! name is answered by DNS only once every live agent acknowledged a revision
//! at or after the one that introduced it.
use std::collections::BTreeMap;
use std::net::IpAddr;

use garrison_proto::named::{L4LB_ZONE, dns_name};
use garrison_proto::{ControlMessage, Protocol, TaskState, Vip, VipBackend};

use super::Cluster;
use crate::marathon::app::{VipLabel, parse_vip_label};

impl Cluster {
    /// The VIPs the apps and tasks imply now (allocating named addresses).
    pub(super) fn compute_vips(&mut self) -> Vec<Vip> {
        let mut table: BTreeMap<(IpAddr, u16, Protocol), Vip> = BTreeMap::new();
        let mut app_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Tasks indexed by app once: O(tasks), not O(apps × tasks).
        let mut by_app: std::collections::HashMap<&str, Vec<&super::TaskRecord>> =
            std::collections::HashMap::new();
        for t in self.tasks.values() {
            if t.state == TaskState::Running || t.is_killing() {
                by_app.entry(t.app_id.as_str()).or_default().push(t);
            }
        }
        for app in self.apps.values() {
            let checks = !app.health_checks.is_empty();
            for (index, label) in app.vip_labels() {
                let Ok(vip) = parse_vip_label(&label) else {
                    continue;
                };
                let (ip, port, name): (IpAddr, u16, Option<String>) = match vip {
                    VipLabel::Ip { ip, port } => (ip.into(), port, None),
                    VipLabel::Named { name, port } => {
                        let Some(dns) = dns_name(&name, app.framework(), L4LB_ZONE) else {
                            continue;
                        };
                        match self.vip_allocator.address(&dns) {
                            Ok(ip) => (ip.into(), port, Some(dns)),
                            Err(e) => {
                                tracing::error!(error = %e, app = %app.id, "VIP left out");
                                continue;
                            }
                        }
                    }
                };
                let protocols = &app.port_definitions[index].protocol;
                let backends: Vec<VipBackend> = by_app
                    .get(app.id.as_str())
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        Some(VipBackend {
                            ip: t.ip,
                            port: *t.ports.get(index)?,
                            weight: u32::from(t.is_healthy(checks)),
                        })
                    })
                    .collect();
                for &protocol in protocols {
                    app_keys
                        .entry(app.id.clone())
                        .or_default()
                        .push(garrison_proto::vip_key(ip, port, protocol));
                    let entry = table.entry((ip, port, protocol)).or_insert_with(|| Vip {
                        ip,
                        port,
                        protocol,
                        name: name.clone(),
                        backends: Vec::new(),
                    });
                    entry.backends.extend(backends.iter().cloned());
                }
            }
        }
        let mut vips: Vec<Vip> = table.into_values().collect();
        for v in &mut vips {
            v.backends.sort_by_key(|b| (b.ip, b.port));
        }
        self.app_vip_keys = app_keys;
        let allocations = self.vip_allocator.allocations().clone();
        if allocations != self.meta.vip_allocations {
            self.meta.vip_allocations = allocations;
            self.touch_meta();
        }
        vips
    }

    /// Recomputes the table; a change gets a new revision and is sent to
    /// every connected agent.
    pub(super) fn publish_vips(&mut self) {
        let vips = self.compute_vips();
        if vips == self.vip_table.vips {
            return;
        }
        self.meta.vip_revision += 1;
        self.dns_epoch += 1;
        let revision = self.meta.vip_revision;
        for v in &vips {
            if let Some(name) = &v.name {
                self.meta.vip_since.entry(name.clone()).or_insert(revision);
            }
        }
        let live: Vec<&str> = vips.iter().filter_map(|v| v.name.as_deref()).collect();
        self.meta
            .vip_since
            .retain(|name, _| live.contains(&name.as_str()));
        self.touch_meta();
        self.vip_table.revision = revision;
        self.vip_table.vips = vips;
        let table = self.vip_table.clone();
        self.outbox_broadcast(ControlMessage::VipTable(table));
    }

    /// Named VIPs DNS may answer: every live agent has programmed them.
    pub fn answerable_vip_names(&self) -> BTreeMap<String, std::net::IpAddr> {
        let floor = self
            .agents
            .values()
            .filter(|a| a.is_live())
            .map(|a| a.acked_revision)
            .min()
            .unwrap_or(u64::MAX);
        let mut out = BTreeMap::new();
        for v in &self.vip_table.vips {
            let Some(name) = &v.name else { continue };
            let since = self.meta.vip_since.get(name).copied().unwrap_or(u64::MAX);
            if since <= floor {
                out.insert(name.clone(), v.ip);
            }
        }
        out
    }
}
