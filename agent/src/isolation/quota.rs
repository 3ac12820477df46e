//! Project quotas (the `disk/quota` isolator, as Mesos' disk/xfs): each
//! task's sandbox gets a project id (inherited by everything created in it)
//! and a hard block limit equal to its disk resource, so writes past it fail
//! with EDQUOT. Works on ext4 with the `project` and `quota` features
//! (mounted with `prjquota`) and on XFS with `pquota`, through
//! `quotactl_fd(2)` (Linux 5.14+) on the sandbox itself: no device path.
//! The generic quota code exempts CAP_SYS_RESOURCE from limits: the launcher
//! drops that capability from every task (see `launcher::spawn`).
use std::{
    fs::File,
    io,
    os::fd::{AsRawFd, RawFd},
    path::Path,
};

/// `struct fsxattr` (linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct if_dqblk` (linux/quota.h); block limits in 1 KiB units.
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const PRJQUOTA: u32 = 2;
const QIF_BLIMITS: u32 = 1;
const QIF_SPACE: u32 = 2;
/// `__NR_quotactl_fd` on x86_64 and aarch64 (the generic table).
const SYS_QUOTACTL_FD: libc::c_long = 443;

fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | PRJQUOTA
}

fn quotactl_fd(fd: RawFd, cmd: u32, id: u32, q: &mut IfDqblk) -> io::Result<()> {
    // SAFETY: quotactl_fd(2) with an open fd and a properly sized if_dqblk.
    let r = unsafe {
        libc::syscall(
            SYS_QUOTACTL_FD,
            fd,
            qcmd(cmd),
            id,
            q as *mut IfDqblk as *mut libc::c_void,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `dir`'s filesystem enforces project quotas (a query succeeds).
pub fn supported(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    let mut q = IfDqblk::default();
    quotactl_fd(f.as_raw_fd(), Q_GETQUOTA, 0, &mut q).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "project quotas are not enabled on the filesystem of {} ({e}); \
                 ext4 needs `mkfs.ext4 -O quota,project` and `-o prjquota`, XFS `-o pquota`",
                dir.display()
            ),
        )
    })
}

/// Puts `dir` (and everything created in it later) in project `id`.
pub fn set_project(dir: &Path, id: u32) -> io::Result<()> {
    let f = File::open(dir)?;
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FS{GET,SET}XATTR ioctls with a struct fsxattr.
    unsafe {
        if libc::ioctl(
            f.as_raw_fd(),
            FS_IOC_FSGETXATTR as _,
            &mut x as *mut FsXattr,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        x.projid = id;
        x.xflags |= FS_XFLAG_PROJINHERIT;
        if libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR as _, &x as *const FsXattr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets project `id`'s hard block limit to `bytes` (0 removes it), on the
/// filesystem holding `dir`.
pub fn set_limit(dir: &Path, id: u32, bytes: u64) -> io::Result<()> {
    let f = File::open(dir)?;
    let kib = bytes.div_ceil(1024);
    let mut q = IfDqblk {
        bhardlimit: kib,
        bsoftlimit: kib,
        valid: QIF_BLIMITS,
        ..Default::default()
    };
    quotactl_fd(f.as_raw_fd(), Q_SETQUOTA, id, &mut q)
}

/// Bytes charged to project `id`.
pub fn used(dir: &Path, id: u32) -> io::Result<u64> {
    let f = File::open(dir)?;
    let mut q = IfDqblk::default();
    quotactl_fd(f.as_raw_fd(), Q_GETQUOTA, id, &mut q)?;
    Ok(if q.valid & QIF_SPACE != 0 || q.curspace > 0 {
        q.curspace
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
        assert_eq!(qcmd(Q_SETQUOTA), 0x8000_0802);
    }
}
