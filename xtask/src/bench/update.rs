//! Update latency and scale of the agent, measured by the agent itself: each
//! programmed table is logged with `micros=` = time from the source change
//! seen (the VIP file read) to the data plane updated.
//!
//! - update latency: the agent holds N VIPs (1 and 1,000) from a VIP file; the
//!   bench changes one backend weight at a time, 100 times, waiting for each
//!   change to be programmed; median and p99 of the agent's figures;
//! - scale: a cold start with 10,000 VIPs × 16 backends: the agent's
//!   programming time for the first table, the wall time from process start to
//!   the table served, and the agent's RSS (VmRSS 2 s after, VmHWM peak).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::median;
use crate::lab::Lab;

const BACKENDS_PER_VIP_UPDATE: usize = 3;

/// VIP i's address: 11.0.0.0/8 walked from 11.0.1.1.
fn vip_addr(i: usize) -> String {
    let n = i + 257;
    format!(
        "11.{}.{}.{}:80",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// A VIP file with `vips` VIPs of `backends` backends each; `bump` = (VIP
/// index, weight) gives one backend of one VIP another weight.
pub fn vip_file(vips: usize, backends: usize, bump: Option<(usize, u32)>) -> String {
    let mut s = String::with_capacity(vips * backends * 40);
    s.push('[');
    for v in 0..vips {
        if v > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"vip":"{}","protocol":"tcp","backend":["#,
            vip_addr(v)
        ));
        for b in 0..backends {
            if b > 0 {
                s.push(',');
            }
            let weight = match bump {
                Some((i, w)) if i == v && b == 0 => w,
                _ => 1,
            };
            s.push_str(&format!(
                r#"{{"ip":"198.19.{}.{}","port":{},"weight":{weight}}}"#,
                (v >> 8) & 0xff,
                (v & 0xff).max(1),
                8000 + b
            ));
        }
        s.push_str("]}");
    }
    s.push(']');
    s
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `micros=` of every "VIP table programmed" line in the agent's log.
fn programmed_micros(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("VIP table programmed"))
        .filter_map(|l| {
            l.split("micros=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn wait_for_programmed(log: &Path, count: usize, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while programmed_micros(log).len() < count {
        if start.elapsed() > timeout {
            bail!(
                "the agent programmed {} tables, expected {count}, within {:?}",
                programmed_micros(log).len(),
                timeout
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One update-latency measurement.
pub struct UpdateRow {
    pub vips: usize,
    pub changes: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Measures update latency with `vips` VIPs over `changes` changes.
pub fn update_latency(agent: &Path, vips: usize, changes: usize) -> Result<UpdateRow> {
    let lab = Lab::new("bupd", 1);
    lab.teardown();
    let result = (|| -> Result<UpdateRow> {
        lab.build()?;
        let file = lab.write_file("vips.json", &vip_file(vips, BACKENDS_PER_VIP_UPDATE, None))?;
        let (log, _) = lab.start_agent(
            agent,
            &["--vips", file.to_str().context("path")?, "--poll-ms", "10"],
            &vip_addr(vips - 1),
        )?;
        wait_for_programmed(&log, 1, Duration::from_secs(30))?;
        for c in 0..changes {
            let weight = 2 + (c as u32 % 2);
            write_atomically(
                &file,
                &vip_file(vips, BACKENDS_PER_VIP_UPDATE, Some((c % vips, weight))),
            )?;
            wait_for_programmed(&log, c + 2, Duration::from_secs(10))?;
        }
        let mut us: Vec<f64> = programmed_micros(&log)
            .into_iter()
            .skip(1)
            .map(|m| m as f64)
            .collect();
        us.sort_by(f64::total_cmp);
        Ok(UpdateRow {
            vips,
            changes: us.len(),
            median_us: median(us.clone()),
            p99_us: percentile(&us, 0.99),
            max_us: us.last().copied().unwrap_or(0.0),
        })
    })();
    lab.teardown();
    result
}

/// The cold-start measurement.
pub struct ScaleRow {
    pub vips: usize,
    pub backends: usize,
    pub program_ms: f64,
    pub wall_ms: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub file_mib: f64,
}

/// A `kB` field of /proc/PID/status (VmRSS:, VmHWM:), in KiB.
pub(super) fn status_kib(pid: u32, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
}

/// Cold start with `vips` × `backends`.
pub fn scale(agent: &Path, vips: usize, backends: usize) -> Result<ScaleRow> {
    let lab = Lab::new("bscale", 1);
    lab.teardown();
    let result = (|| -> Result<ScaleRow> {
        lab.build()?;
        let text = vip_file(vips, backends, None);
        let file = lab.write_file("vips.json", &text)?;
        let started = Instant::now();
        let (log, pid) = lab.start_agent(
            agent,
            &["--vips", file.to_str().context("path")?],
            &vip_addr(vips - 1),
        )?;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        wait_for_programmed(&log, 1, Duration::from_secs(60))?;
        let program_ms = programmed_micros(&log)[0] as f64 / 1000.0;
        // Steady state: the agent returns transient memory on its next tick.
        std::thread::sleep(Duration::from_secs(2));

        let rss = status_kib(pid, "VmRSS:").context("agent VmRSS")?;
        let hwm = status_kib(pid, "VmHWM:").context("agent VmHWM")?;
        Ok(ScaleRow {
            vips,
            backends,
            program_ms,
            wall_ms,
            rss_mib: rss / 1024.0,
            hwm_mib: hwm / 1024.0,
            file_mib: text.len() as f64 / (1024.0 * 1024.0),
        })
    })();
    lab.teardown();
    result
}

/// Markdown for both measurements.
pub fn render(updates: &[UpdateRow], scale: &[ScaleRow]) -> String {
    let mut s = String::new();
    s.push_str("\n**Update latency** (source change seen → data plane updated, as the agent logs it; target p99 < 10 ms):\n\n");
    s.push_str(
        "| VIPs programmed | changes | median µs | p99 µs | max µs |\n|---|---|---|---|---|\n",
    );
    for u in updates {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |\n",
            u.vips, u.changes, u.median_us, u.p99_us, u.max_us
        ));
    }
    s.push_str(
        "\n**Scale** (cold start from a VIP file; targets: programmed in < 1 s, RSS < 64 MiB):\n\n",
    );
    s.push_str("| VIPs × backends | VIP file | first table programmed (file read → maps written) | process start → API serves it | agent RSS | agent peak RSS |\n|---|---|---|---|---|---|\n");
    for r in scale {
        s.push_str(&format!(
            "| {} × {} | {:.1} MiB | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} MiB |\n",
            r.vips, r.backends, r.file_mib, r.program_ms, r.wall_ms, r.rss_mib, r.hwm_mib
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_files_are_valid_and_distinct() {
        let text = vip_file(300, 2, Some((5, 3)));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entries = v.as_array().unwrap();
        assert_eq!(entries.len(), 300);
        let addrs: std::collections::BTreeSet<&str> =
            entries.iter().map(|e| e["vip"].as_str().unwrap()).collect();
        assert_eq!(addrs.len(), 300);
        assert_eq!(entries[5]["backend"][0]["weight"], 3);
        assert_eq!(vip_addr(0), "11.0.1.1:80");
    }
}
