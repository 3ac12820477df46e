//! The guest image: a cpio "newc" archive with `/init` (the static guest test
//! binary), `/dev/console`, the host programs of [`super::userland`], and the
//! kernel modules the suite loads (networking, netfilter, veth) with a
//! `depmod`-made modules.dep.
use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::kernel::Kernel;
use crate::cmd;

/// Module subtrees copied into the guest (relative to lib/modules/<version>).
const MODULE_DIRS: &[&str] = &[
    "kernel/net",
    "kernel/lib",
    "kernel/crypto",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/block/loop.ko",
    "kernel/fs/quota",
];

/// Writes a cpio archive in the "newc" format the kernel unpacks.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (header.len() + name.len() + 1) as u64;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    pub fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, &[], (0, 0))
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, S_IFREG | perm, data, (0, 0))
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> std::io::Result<()> {
        self.entry(name, S_IFCHR | 0o600, &[], (major, minor))
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        Ok(self.out)
    }
}

fn add_tree<W: Write>(cpio: &mut CpioWriter<W>, src: &Path, dst: &str) -> Result<()> {
    let meta = fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.is_dir() {
        cpio.dir(dst)?;
        let mut entries: Vec<_> = fs::read_dir(src)?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            add_tree(
                cpio,
                &e.path(),
                &format!("{dst}/{}", name.to_string_lossy()),
            )?;
        }
    } else {
        let data = fs::read(src).with_context(|| format!("reading {}", src.display()))?;
        cpio.file(dst, meta.permissions().mode() & 0o777, &data)?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    if src.is_dir() {
        fs::create_dir_all(dst)?;
        for e in fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else {
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    }
    Ok(())
}

/// Stages the module subset and runs depmod on it; returns the staging root.
fn stage_modules(kernel: &Kernel, staging: &Path) -> Result<PathBuf> {
    let _ = fs::remove_dir_all(staging);
    let dst = staging.join("lib/modules").join(&kernel.version);
    for rel in MODULE_DIRS {
        // Single modules may be shipped compressed (6.12: .ko.xz).
        for candidate in [rel.to_string(), format!("{rel}.xz"), format!("{rel}.zst")] {
            let src = kernel.modules.join(&candidate);
            if src.exists() {
                copy_tree(&src, &dst.join(&candidate))?;
            }
        }
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let src = kernel.modules.join(f);
        if src.exists() {
            fs::copy(&src, dst.join(f))?;
        }
    }
    cmd::output(
        "depmod",
        &["-b", staging.to_str().context("path")?, &kernel.version],
    )?;
    Ok(staging.to_path_buf())
}

/// The guest's users: root and Debian's `nobody` (primary group `nogroup`).
const GUEST_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
/// The guest's groups.
const GUEST_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// Builds the initramfs for `kernel` with the guest init as /init, the
/// agent, the control and the test task server in /bin and users in /etc;
/// returns its path.
pub fn build(kernel: &Kernel, guest: &super::GuestBinaries) -> Result<PathBuf> {
    let work = cmd::root().join("target/vm/images").join(&kernel.version);
    fs::create_dir_all(&work)?;
    let staging = stage_modules(kernel, &work.join("staging"))?;
    let image = work.join("initramfs.cpio");
    let file = std::io::BufWriter::new(fs::File::create(&image)?);
    let mut cpio = CpioWriter::new(file);
    let tools = super::userland::files()?;
    let mut dirs: Vec<String> = ["dev", "proc", "sys", "run", "tmp", "lib", "bin", "etc"]
        .iter()
        .map(|d| d.to_string())
        .collect();
    dirs.extend(super::userland::dirs(&tools));
    dirs.dedup();
    let mut made = std::collections::BTreeSet::new();
    for d in dirs.iter().filter(|d| made.insert(d.as_str())) {
        cpio.dir(d)?;
    }
    cpio.char_dev("dev/console", 5, 1)?;
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    cpio.file("init", 0o755, &read(&guest.init)?)?;
    cpio.file("bin/garrison-agent", 0o755, &read(&guest.agent)?)?;
    cpio.file("bin/garrison-control", 0o755, &read(&guest.control)?)?;
    cpio.file("bin/garrison-test-serve", 0o755, &read(&guest.serve)?)?;
    for (guest, host) in &tools {
        cpio.file(guest, 0o755, &read(host)?)?;
    }
    // Tasks run as `nobody` (the agent's default user); the static musl
    // agent resolves users from these files directly.
    cpio.file("etc/passwd", 0o644, GUEST_PASSWD.as_bytes())?;
    cpio.file("etc/group", 0o644, GUEST_GROUP.as_bytes())?;
    for etc in ["protocols", "mke2fs.conf"] {
        if let Ok(data) = fs::read(Path::new("/etc").join(etc)) {
            cpio.file(&format!("etc/{etc}"), 0o644, &data)?;
        }
    }
    add_tree(&mut cpio, &staging.join("lib/modules"), "lib/modules")?;
    cpio.finish()?.flush()?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_trailer() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.dir("dev").unwrap();
        cpio.file("init", 0o755, b"abc").unwrap();
        let out = cpio.finish().unwrap();
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        // second header starts on a 4-byte boundary: 110-byte header + "dev\0" = 114, padded to 116
        let second = 116;
        assert_eq!(&out[second..second + 6], b"070701");
        // file size field of "init" is 3
        assert_eq!(&out[second + 6 + 6 * 8..second + 6 + 7 * 8], b"00000003");
        let tail = String::from_utf8_lossy(&out[out.len() - 16..]);
        assert!(tail.contains("TRAILER!!!"), "{tail}");
    }

    #[test]
    fn guest_users_are_root_and_nobody() {
        let users: Vec<Vec<&str>> = GUEST_PASSWD
            .lines()
            .map(|l| l.split(':').collect())
            .collect();
        assert_eq!(users.len(), 2);
        assert_eq!(&users[0][..4], ["root", "x", "0", "0"]);
        assert_eq!(&users[1][..4], ["nobody", "x", "65534", "65534"]);
        assert!(users.iter().all(|u| u.len() == 7), "{users:?}");
        assert!(
            GUEST_GROUP
                .lines()
                .any(|l| l.starts_with("nogroup:x:65534:"))
        );
    }
}
