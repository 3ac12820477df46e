//! Host programs copied into the guest image: `iptables`/`ip6tables` and
//! `ipset` (the NFQUEUE data path runs them) and `ip` (the scenarios make
//! namespaces and veths with it), `sh`, `sleep` and `tail` (the task
//! scenarios' commands), with their shared libraries (from `ldd`)
//! and the xtables plugins, each at the path it has on the host. The guest
//! sets `PATH` and `LD_LIBRARY_PATH` to find them (vm-tests/src/main.rs).
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// (program on the host, path in the guest). `iptables` and `ip6tables` are
/// the same multi-call binary; it acts on the name it is called by.
const TOOLS: &[(&str, &str)] = &[
    ("iptables", "usr/sbin/iptables"),
    ("ip6tables", "usr/sbin/ip6tables"),
    ("ipset", "usr/sbin/ipset"),
    ("ip", "usr/sbin/ip"),
    // Task scenarios: the launcher runs `/bin/sh -c`; the commands use these.
    ("sh", "bin/sh"),
    ("sleep", "bin/sleep"),
    ("tail", "bin/tail"),
    // The project-quota scenario: an ext4 image on a loop device.
    ("mkfs.ext4", "usr/sbin/mkfs.ext4"),
    ("losetup", "usr/sbin/losetup"),
];

/// Where Debian's iptables loads its match and target plugins from.
const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` is not installed on the host (cargo xtask deps installs it)")
        })
}

/// Shared libraries of `elf` as `ldd` lists them (absolute paths).
fn libraries(elf: &Path) -> Result<Vec<PathBuf>> {
    let out = cmd::stdout("ldd", &[&elf.display().to_string()])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x..)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x..)"
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Every file to ship: (guest path without leading '/', host file).
pub fn files() -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut libs = BTreeSet::new();
    for (name, guest) in TOOLS {
        let host = fs::canonicalize(find_program(name)?)?;
        libs.extend(libraries(&host)?);
        out.push((guest.to_string(), host));
    }
    let plugins = fs::read_dir(XTABLES_DIR)
        .with_context(|| format!("reading {XTABLES_DIR} (iptables plugins)"))?;
    for p in plugins {
        let p = p?.path();
        if p.extension().is_some_and(|e| e == "so") {
            libs.extend(libraries(&p)?);
            out.push((
                p.display().to_string().trim_start_matches('/').to_string(),
                p,
            ));
        }
    }
    for lib in libs {
        let host = fs::canonicalize(&lib)
            .with_context(|| format!("resolving library {}", lib.display()))?;
        out.push((
            lib.display()
                .to_string()
                .trim_start_matches('/')
                .to_string(),
            host,
        ));
    }
    if out.is_empty() {
        bail!("no guest programs found");
    }
    Ok(out)
}

/// The directories (parents first) that must exist for `files`.
pub fn dirs(files: &[(String, PathBuf)]) -> Vec<String> {
    let mut set = BTreeSet::new();
    for (guest, _) in files {
        let mut p = Path::new(guest).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            set.insert(d.display().to_string());
            p = d.parent();
        }
    }
    // Sorted lexically, a parent precedes its children.
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        let files = vec![
            ("usr/sbin/ip".to_string(), PathBuf::from("/x")),
            (
                "lib/x86_64-linux-gnu/libc.so.6".to_string(),
                PathBuf::from("/y"),
            ),
        ];
        assert_eq!(
            dirs(&files),
            vec!["lib", "lib/x86_64-linux-gnu", "usr", "usr/sbin"]
        );
    }
}
