//! Host facts read from procfs: where cgroup2 and bpffs are mounted.
use std::path::PathBuf;

/// The first mount point of a filesystem type, from /proc/self/mounts.
pub fn find_mount(fstype: &str) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| PathBuf::from(dir))
    })
}

/// Whether `dir` is itself a mount point of `fstype`.
pub fn is_mount_of(dir: &std::path::Path, fstype: &str) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let _ = f.next();
        f.next().map(std::path::Path::new) == Some(dir) && f.next() == Some(fstype)
    })
}
