//! The pinned maps shared with the agent. Names and layouts come from
//! `garrison-common`; the agent owns their contents (see docs/architecture.md).
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use garrison_common::{
    BackendSlot, BackendStats, COUNTER_COUNT, Counter, MAX_BACKENDS, MAX_CONNECTS, MAX_REVNAT,
    MAX_SERVICES, MAX_SLOTS, PendingConnect, RevNatKey, RevNatValue, ServiceKey, ServiceValue,
    SlotKey,
};

#[map(name = "GARRISON_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);

#[map(name = "GARRISON_SLOTS")]
pub static SLOTS: HashMap<SlotKey, BackendSlot> = HashMap::pinned(MAX_SLOTS, 0);

#[map(name = "GARRISON_BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendStats> = PerCpuArray::pinned(MAX_BACKENDS, 0);

#[map(name = "GARRISON_REVNAT")]
pub static REVNAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::pinned(MAX_REVNAT, 0);

#[map(name = "GARRISON_CONNECTS")]
pub static CONNECTS: LruHashMap<u64, PendingConnect> = LruHashMap::pinned(MAX_CONNECTS, 0);

#[map(name = "GARRISON_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn bump(counter: Counter) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *c += 1 };
    }
}
