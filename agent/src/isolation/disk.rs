//! The `disk/du` isolator's pieces: measuring a sandbox as `du` does
//! (allocated blocks of every file, hard links counted once) and the verdict
//! over a quota (pure), with the message Mesos' disk/du isolator gives.
use std::{collections::HashSet, fs, os::unix::fs::MetadataExt, path::Path};

/// Bytes allocated under `dir` (files, directories, links), bounded to
/// 1,000,000 entries; unreadable entries are skipped.
pub fn usage_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut entries = 0u32;
    while let Some(d) = stack.pop() {
        let Ok(read) = fs::read_dir(&d) else { continue };
        for e in read.flatten() {
            entries += 1;
            if entries > 1_000_000 {
                return total;
            }
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Bytes in the units Mesos prints (`Bytes` stringification: B, KB, MB, GB).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)];
    for (u, n) in UNITS {
        if b >= n {
            let v = b as f64 / n as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0}{u}")
            } else {
                format!("{v:.2}{u}")
            };
        }
    }
    format!("{b}B")
}

/// The limitation of a task using `used` bytes with a quota of `limit`
/// (`limit` 0: no disk requested, nothing enforced).
pub fn over_quota(used: u64, limit: u64) -> Option<String> {
    (limit > 0 && used > limit).then(|| {
        format!(
            "Disk usage ({}) exceeds quota ({})",
            format_bytes(used),
            format_bytes(limit)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_messages_follow_mesos() {
        assert_eq!(over_quota(10, 0), None);
        assert_eq!(over_quota(100, 200), None);
        assert_eq!(
            over_quota(3 << 20, 2 << 20).as_deref(),
            Some("Disk usage (3MB) exceeds quota (2MB)")
        );
        assert_eq!(format_bytes(1536), "1.50KB");
        assert_eq!(format_bytes(12), "12B");
    }

    #[test]
    fn usage_counts_allocated_blocks() {
        let dir = std::env::temp_dir().join(format!("garrison-du-{}", std::process::id()));
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a"), vec![1u8; 100_000]).unwrap();
        fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
        let used = usage_bytes(&dir);
        // 100 kB once (the hard link is not counted twice), plus directories.
        assert!((100_000..300_000).contains(&used), "{used}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
