//! garrison-agent: the per-host data plane.
//!
//! Module map:
//! - [`vip`] — the brain: [`vip::VipTable`], the VIP file, weighted slots. Pure.
//! - [`dataplane`] — the kernel side: the [`dataplane::Dataplane`] trait, the
//!   pure map-update [`dataplane::plan`], and [`dataplane::EbpfDataplane`].
//!
//! Decisions live in `vip` and `dataplane::plan`; effects (syscalls, maps) live
//! in `dataplane::ebpf` only.
pub mod dataplane;
pub mod vip;
