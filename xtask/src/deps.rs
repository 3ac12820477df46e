//! `cargo xtask deps`: installs what a fresh machine of this kind lacks, step by
//! step, skipping what is present. A failed step stops with its command and output.
use anyhow::{Context, Result, bail};

use crate::cmd;

/// Debian packages the project needs (build, tests, VM tests, demo).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "iptables",
    "ipset",
    "iproute2",
    "conntrack",
    "e2fsprogs",
    "mount",
    "coreutils",
    "dash",
    "cpio",
    "busybox-static",
    "kmod",
    "qemu-system-x86",
    "llvm-22-dev",
    "libclang-22-dev",
    "curl",
    // the demo: nsenter for node agents, dig for Garrison's DNS
    "util-linux",
    "bind9-dnsutils",
    // benchmark peers and the plot's font
    "haproxy",
    "nftables",
    "fonts-dejavu-core",
];

const BPF_LINKER_VERSION: &str = "0.10.4";
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

fn installed(pkg: &str) -> bool {
    cmd::stdout("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_ok_and(|s| s == "install ok installed")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn step(name: &str, present: bool, install: impl FnOnce() -> Result<()>) -> Result<()> {
    if present {
        println!("deps: {name}: present");
        return Ok(());
    }
    println!("deps: {name}: installing");
    install().with_context(|| format!("deps: installing {name} failed"))
}

fn nightly_has_rust_src() -> bool {
    cmd::stdout("rustup", &["run", "nightly", "rustc", "--print", "sysroot"]).is_ok_and(|s| {
        std::path::Path::new(&s)
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    })
}

fn bpf_linker_ok() -> bool {
    on_path("bpf-linker")
        && cmd::stdout("bpf-linker", &["--version"]).is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn musl_target_ok() -> bool {
    cmd::stdout("rustup", &["target", "list", "--installed"])
        .is_ok_and(|s| s.lines().any(|l| l == MUSL_TARGET))
}

/// Installs everything missing.
pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask deps installs Debian packages and must run as root");
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    step(
        &format!("Debian packages ({})", DEBIAN_PACKAGES.join(" ")),
        missing.is_empty(),
        || {
            println!("deps: missing: {}", missing.join(" "));
            cmd::output("apt-get", &["update", "-q"])?;
            let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
            args.extend(&missing);
            let out = std::process::Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .context("cannot start apt-get")?;
            if !out.status.success() {
                bail!(
                    "`apt-get {}` failed:\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        },
    )?;
    step(
        "rust-src for the nightly toolchain",
        nightly_has_rust_src(),
        || {
            cmd::output(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
            )
            .map(drop)
        },
    )?;
    step(
        &format!("rust target {MUSL_TARGET} (static guest binaries)"),
        musl_target_ok(),
        || cmd::output("rustup", &["target", "add", MUSL_TARGET]).map(drop),
    )?;
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        bpf_linker_ok(),
        || {
            cmd::output(
                "cargo",
                &[
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--locked",
                ],
            )
            .map(drop)
        },
    )?;
    println!("deps: all present");
    Ok(())
}

/// Fails with one clear line when the eBPF build cannot work.
pub fn check_build_prerequisites() -> Result<()> {
    if !bpf_linker_ok() {
        bail!("bpf-linker {BPF_LINKER_VERSION} is missing: run `cargo xtask deps`");
    }
    if !nightly_has_rust_src() {
        bail!("nightly rust-src is missing: run `cargo xtask deps`");
    }
    Ok(())
}
