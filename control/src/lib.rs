//! garrison-control: the control plane — Garrison without Mesos.
//!
//! Module map (decisions are pure; effects live in `server` and `store`):
//! - [`resources`]: Mesos-style resources (fixed-point scalars, ranges, sets,
//!   reservations) with arithmetic that cannot go negative.
//! - [`sorter`]: hierarchical DRF sorter and a weighted random sorter.
//! - [`allocator`]: the two-stage hierarchical DRF allocator with quota,
//!   reservations, weights, offer filters, suppress/revive and an injectable clock.
//! - [`marathon`]: app definitions and validation, task environment, placement
//!   from the allocator's offers, the autoscale rule.
//! - [`cluster`]: apps, tasks and agents, and every decision on them
//!   (convergence, VIP table, Mesos-DNS view, autoscale).
//! - [`dns`]: Mesos-DNS names: label rules, the master-state model, the
//!   record generator, DNS answers, a small client.
//! - [`store`]: the crash-safe redb store.
//! - [`server`]: `garrison-control run` — HTTP (Marathon API, agent streams,
//!   Mesos-DNS HTTP) and DNS sockets around the cluster.
//! - [`client`]: a minimal HTTP client (tests, demo, benchmarks).
//! - [`auth`]: accounts, the token key, session/join tokens, agent credentials.
//! - [`tls`]: the control's CA and server certificate, rustls configurations.
//! - [`files`]: atomic writes of secret (0600) and public files.
//! - [`simulate`]: `garrison-control simulate FILE`, the what-if tool.
//!
//! Allocating the DRF paper's cluster (9 CPUs, 18 GB; A's tasks ⟨1 CPU, 4 GB⟩,
//! B's ⟨3 CPUs, 1 GB⟩): A runs 3 tasks, B runs 2, both at a dominant share of 2/3.
//!
//! ```
//! let scenario = r#"{"agents":[{"id":"a1","resources":{"cpus":9,"mem":18432}}],
//!   "frameworks":[{"id":"A","role":"a","task":{"cpus":1,"mem":4096}},
//!                 {"id":"B","role":"b","task":{"cpus":3,"mem":1024}}]}"#;
//! let result = garrison_control::simulate::simulate(scenario, 1).unwrap();
//! assert_eq!(result.frameworks["A"].tasks, 3);
//! assert_eq!(result.frameworks["B"].tasks, 2);
//! assert_eq!(result.frameworks["A"].dominant_share, 0.6667);
//! assert_eq!(result.frameworks["B"].dominant_share, 0.6667);
//! ```
pub mod allocator;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod dns;
pub mod files;
pub mod marathon;
pub mod resources;
pub mod server;
pub mod simulate;
pub mod sorter;
pub mod store;
pub mod tls;

/// Name and version of this build, as printed by `garrison-control --version`.
pub fn version() -> String {
    format!("garrison-control {}", env!("CARGO_PKG_VERSION"))
}
