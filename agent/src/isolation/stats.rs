//! Per-task statistics in the Mesos agent's `/monitor/statistics` shape, and
//! the parser of cgroup "key value" files (pure).
use std::collections::BTreeMap;

use serde::Serialize;

/// One task's figures (Mesos `ResourceStatistics` field names).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskStatistics {
    pub timestamp: f64,
    pub cpus_user_time_secs: f64,
    pub cpus_system_time_secs: f64,
    pub cpus_limit: f64,
    pub cpus_nr_periods: u64,
    pub cpus_nr_throttled: u64,
    pub cpus_throttled_time_secs: f64,
    pub mem_total_bytes: u64,
    pub mem_rss_bytes: u64,
    pub mem_limit_bytes: u64,
    pub mem_soft_limit_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_limit_bytes: u64,
    pub processes: u64,
    pub threads: u64,
}

/// Parses `key value` lines (cpu.stat, memory.stat, memory.events, …);
/// lines that are not a key and a number are skipped.
pub fn key_values(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_files() {
        let kv = key_values("usage_usec 1200\nuser_usec 1000\nsystem_usec 200\nbad\nx y\n");
        assert_eq!(kv["usage_usec"], 1200);
        assert_eq!(kv.len(), 3);
        let oom = key_values("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        assert_eq!(oom["oom_kill"], 2);
    }
}
