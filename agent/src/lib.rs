//! garrison-agent: the per-host data plane.
//!
//! Module map:
//! - [`vip`] — the brain: [`vip::VipTable`], the VIP file, weighted slots. Pure.
//! - [`dataplane`] — the kernel side: the [`dataplane::Dataplane`] trait, the
//!   pure map-update [`dataplane::plan`], and [`dataplane::EbpfDataplane`].
//! - [`sources`] — where backends come from (the VIP file today).
//! - [`api`] — the HTTP API on 127.0.0.1:61421 (`/vips`, `/vip/..`, `/v1/vips`).
//! - [`daemon`] — the run loop tying sources, data plane and API together.
//! - [`sys`] — host facts (mount points); [`digest`] — the one stable hash.
//! - [`config`] — the TOML configuration and its validation; [`metrics`] — agent counters.
//! - [`isolation`] — tasks: launcher, cgroup v1/v2 isolators (cpu, memory, pids), statistics.
//! - [`control_link`] — following a `garrison-control`: its stream, its tasks'
//!   health checks, its VIP table as a source.
//!
//! Decisions live in `vip`, `dataplane::plan` and `api::views`; effects
//! (syscalls, maps, sockets, files) live in `dataplane::ebpf`, `sources`,
//! `daemon` and `api`'s handlers.
pub mod api;
pub mod config;
pub mod control_link;
pub mod daemon;
pub mod dataplane;
pub mod digest;
pub mod health;
pub mod isolation;
pub mod metrics;
pub mod sources;
pub mod sys;
pub mod vip;
