//! The kernel side: applies a [`VipTable`] to the kernel and reads counters
//! back. It never decides anything; decisions are in [`crate::vip`] and
//! [`plan`].
//!
//! - [`Dataplane`]: the trait every data path implements.
//! - [`plan`]: pure planning of map updates (the update protocol).
//! - [`ebpf`]: [`EbpfDataplane`], socket-level balancing with cgroup sock_addr programs.
//! - [`nfqueue`]: [`NfqueueDataplane`], DC/OS Minuteman's NFQUEUE + ipset + conntrack path.
pub mod ebpf;
pub mod nfqueue;
pub mod plan;

use std::{collections::BTreeMap, net::SocketAddr};

pub use ebpf::{EbpfConfig, EbpfDataplane, EbpfError};
pub use nfqueue::{NfqueueConfig, NfqueueDataplane, NfqueueError};

/// A data path's failure.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error(transparent)]
    Nfqueue(#[from] NfqueueError),
}

use crate::vip::{VipKey, VipTable};

/// Counters of one backend of one VIP (monotonic; from the kernel's maps on the
/// eBPF path, from the agent's flow book on the NFQUEUE path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Connections (and unconnected UDP sends) steered to this backend.
    pub selected: u64,
    /// TCP connects that reached ESTABLISHED.
    pub established: u64,
    /// TCP connects that failed (SYN_SENT → CLOSE).
    pub failed: u64,
    /// Sum of connect times of `established`, nanoseconds.
    pub connect_ns: u64,
}

/// TCP connects not answered yet, per backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Waiting for an answer, younger than the threshold.
    pub in_flight: u64,
    /// Older than the threshold: failures, removed from the kernel's map.
    pub overdue: u64,
}

/// A data path that can program a whole [`VipTable`].
pub trait Dataplane {
    /// Makes the kernel match `table`. On error, what was programmed before
    /// keeps working (the update protocol never leaves a VIP half-written).
    fn apply(&mut self, table: &VipTable) -> Result<(), DataplaneError>;

    /// Counters per (VIP, backend), read from the kernel.
    fn counters(&self) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError>;

    /// Counters of backends that have failures or are in `also` (the others
    /// are read but not returned: a health pass over 160,000 backends must
    /// not build a 160,000-entry map).
    fn counters_failing(
        &self,
        also: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError>;

    /// Counters of some backends only (unknown ones are left out).
    fn counters_for(
        &self,
        keys: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, DataplaneError>;

    /// Data-path-wide event counters by name (e.g. `no_backend`).
    fn events(&self) -> Result<BTreeMap<&'static str, u64>, DataplaneError>;

    /// Unanswered TCP connects per backend; those older than `overdue_after`
    /// are reported once as overdue and forgotten.
    fn pending(
        &mut self,
        overdue_after: std::time::Duration,
    ) -> Result<BTreeMap<(VipKey, SocketAddr), Pending>, DataplaneError>;
}
