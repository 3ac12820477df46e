//! Isolators, in the shape Mesos uses: each writes its limits before the task
//! starts ([`Isolator::prepare`]), tells whether the task hit a limit
//! ([`Isolator::limitation`]) and adds its figures to the task's statistics
//! ([`Isolator::usage`]). Placing the process and removing the cgroups is
//! the launcher's (one place for every isolator). Each works on cgroup v2
//! and on v1 hierarchies, whichever holds its controller.
use super::{
    TaskResources,
    cgroups::TaskCgroups,
    stats::{TaskStatistics, key_values},
};

/// The cpu period Garrison uses for hard caps (Mesos: 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// One isolator.
pub trait Isolator: Send + Sync {
    fn name(&self) -> &'static str;
    /// Writes the task's limits into its cgroups.
    fn prepare(&self, cg: &TaskCgroups, res: &TaskResources) -> std::io::Result<()>;
    /// Why the task was stopped by this isolator, if it was (e.g. an OOM kill).
    fn limitation(&self, _cg: &TaskCgroups) -> Option<String> {
        None
    }
    /// Adds this isolator's figures to `stats`.
    fn usage(&self, cg: &TaskCgroups, stats: &mut TaskStatistics);
}

/// cpu: shares (`cpu.weight` = 100 × cpus on v2, `cpu.shares` = 1024 × cpus on
/// v1) and, when `hard_limit`, a quota of cpus × 100 ms per 100 ms period.
#[derive(Debug, Clone, Copy)]
pub struct CpuIsolator {
    pub hard_limit: bool,
}

/// `cpu.weight` for `cpus` (v2 range 1..=10000).
pub fn cpu_weight(cpus: f64) -> u64 {
    ((cpus * 100.0).round() as u64).clamp(1, 10_000)
}

/// The quota for `cpus` per [`CPU_PERIOD_US`] (at least 1 ms).
pub fn cpu_quota_us(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1_000)
}

impl Isolator for CpuIsolator {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn prepare(&self, cg: &TaskCgroups, res: &TaskResources) -> std::io::Result<()> {
        let v2 = cg.dir("cpu").is_some_and(|(_, v2)| v2);
        let quota = cpu_quota_us(res.cpus);
        if v2 {
            cg.set("cpu", "cpu.weight", &cpu_weight(res.cpus).to_string())?;
            if self.hard_limit {
                cg.set("cpu", "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        } else {
            let shares = ((res.cpus * 1024.0).round() as u64).max(2);
            cg.set("cpu", "cpu.shares", &shares.to_string())?;
            if self.hard_limit {
                cg.set("cpu", "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                cg.set("cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    fn usage(&self, cg: &TaskCgroups, s: &mut TaskStatistics) {
        let v2 = cg.dir("cpu").is_some_and(|(_, v2)| v2);
        let stat = key_values(&cg.get("cpu", "cpu.stat").unwrap_or_default());
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        if v2 {
            s.cpus_user_time_secs = get("user_usec") as f64 / 1e6;
            s.cpus_system_time_secs = get("system_usec") as f64 / 1e6;
            s.cpus_throttled_time_secs = get("throttled_usec") as f64 / 1e6;
        } else {
            // cpuacct.stat is in USER_HZ ticks.
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
            let acct = key_values(&cg.get("cpuacct", "cpuacct.stat").unwrap_or_default());
            s.cpus_user_time_secs = acct.get("user").copied().unwrap_or(0) as f64 / hz;
            s.cpus_system_time_secs = acct.get("system").copied().unwrap_or(0) as f64 / hz;
            s.cpus_throttled_time_secs = get("throttled_time") as f64 / 1e9;
        }
        s.cpus_nr_periods = get("nr_periods");
        s.cpus_nr_throttled = get("nr_throttled");
    }
}

/// memory: a hard limit of `mem` MB (`memory.max` / `memory.limit_in_bytes`)
/// and the same as the soft one (`memory.low` / `memory.soft_limit_in_bytes`).
/// On v2 an OOM kills the whole task (`memory.oom.group`).
#[derive(Debug, Clone, Copy)]
pub struct MemoryIsolator;

impl Isolator for MemoryIsolator {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn prepare(&self, cg: &TaskCgroups, res: &TaskResources) -> std::io::Result<()> {
        let bytes = res.mem_bytes().to_string();
        if cg.dir("memory").is_some_and(|(_, v2)| v2) {
            cg.set("memory", "memory.max", &bytes)?;
            cg.set("memory", "memory.low", &bytes)?;
            // Swap would hide the limit; not every kernel has swap accounting.
            let _ = cg.set("memory", "memory.swap.max", "0");
            cg.set("memory", "memory.oom.group", "1")?;
        } else {
            cg.set("memory", "memory.limit_in_bytes", &bytes)?;
            cg.set("memory", "memory.soft_limit_in_bytes", &bytes)?;
            let _ = cg.set("memory", "memory.memsw.limit_in_bytes", &bytes);
        }
        Ok(())
    }

    fn limitation(&self, cg: &TaskCgroups) -> Option<String> {
        let v2 = cg.dir("memory")?.1;
        let (file, key) = if v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        let kills = key_values(&cg.get("memory", file)?)
            .get(key)
            .copied()
            .unwrap_or(0);
        (kills > 0).then(|| "memory limit".to_string())
    }

    fn usage(&self, cg: &TaskCgroups, s: &mut TaskStatistics) {
        let num = |f: &str| {
            cg.get("memory", f)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let v2 = cg.dir("memory").is_some_and(|(_, v2)| v2);
        let stat = key_values(&cg.get("memory", "memory.stat").unwrap_or_default());
        if v2 {
            s.mem_total_bytes = num("memory.current");
            s.mem_rss_bytes = stat.get("anon").copied().unwrap_or(0);
            s.mem_limit_bytes = num("memory.max");
            s.mem_soft_limit_bytes = num("memory.low");
        } else {
            s.mem_total_bytes = num("memory.usage_in_bytes");
            s.mem_rss_bytes = stat.get("total_rss").copied().unwrap_or(0);
            s.mem_limit_bytes = num("memory.limit_in_bytes");
            s.mem_soft_limit_bytes = num("memory.soft_limit_in_bytes");
        }
    }
}

/// pids: at most `max` processes and threads in the task.
#[derive(Debug, Clone, Copy)]
pub struct PidsIsolator {
    pub max: u64,
}

impl Isolator for PidsIsolator {
    fn name(&self) -> &'static str {
        "pids"
    }

    fn prepare(&self, cg: &TaskCgroups, _res: &TaskResources) -> std::io::Result<()> {
        cg.set("pids", "pids.max", &self.max.to_string())
    }

    fn usage(&self, cg: &TaskCgroups, s: &mut TaskStatistics) {
        s.processes = cg.pids().len() as u64;
        s.threads = cg.threads() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_figures_follow_mesos() {
        assert_eq!(cpu_weight(0.5), 50);
        assert_eq!(cpu_weight(1.0), 100);
        assert_eq!(cpu_weight(0.001), 1);
        assert_eq!(cpu_weight(500.0), 10_000);
        assert_eq!(cpu_quota_us(0.5), 50_000);
        assert_eq!(cpu_quota_us(2.0), 200_000);
        assert_eq!(cpu_quota_us(0.001), 1_000);
    }
}
