//! `cargo xtask vm-test`: the guest suite (vm-tests/) in QEMU on pinned Debian
//! kernels.
//!
//! - [`kernel`]: resolve, download and cache a Debian cloud kernel series.
//! - [`initramfs`]: a cpio "newc" writer and the guest image (init + modules).
//! - [`qemu`]: boot, stream the console, parse the result line, enforce deadlines.
pub mod initramfs;
pub mod kernel;
pub mod qemu;
pub mod userland;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::cmd;

/// Kernel series the suite runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

/// How QEMU executes the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// Probe KVM with a short deadline, fall back to TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Args, Debug, Clone)]
pub struct VmTestArgs {
    /// Kernel series: 6.1, 6.12 or all.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelChoice,
    /// Accelerator: auto (probe KVM, fall back to TCG), kvm or tcg.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Deadline for one guest, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Passed and failed guest tests over all kernels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
}

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";

/// Static guest binaries: the init (test runner), the agent, the control and
/// the test task server.
pub struct GuestBinaries {
    pub init: std::path::PathBuf,
    pub agent: std::path::PathBuf,
    pub control: std::path::PathBuf,
    pub serve: std::path::PathBuf,
}

fn build_guest() -> Result<GuestBinaries> {
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "garrison-vm-tests",
        "-p",
        "garrison-agent",
        "-p",
        "garrison-control",
        "--target",
        GUEST_TARGET,
    ])?;
    cmd::cargo(&[
        "build",
        "--release",
        "-p",
        "garrison-tests",
        "--bin",
        "garrison-test-serve",
        "--target",
        GUEST_TARGET,
    ])?;
    let dir = cmd::root()
        .join("target")
        .join(GUEST_TARGET)
        .join("release");
    let bins = GuestBinaries {
        init: dir.join("garrison-vm-init"),
        agent: dir.join("garrison-agent"),
        control: dir.join("garrison-control"),
        serve: dir.join("garrison-test-serve"),
    };
    for b in [&bins.init, &bins.agent, &bins.control, &bins.serve] {
        if !b.is_file() {
            bail!("guest binary {} was not built", b.display());
        }
    }
    Ok(bins)
}

/// Runs the suite on the chosen kernels.
pub fn run(args: &VmTestArgs) -> Result<Summary> {
    qemu::check_installed()?;
    let series: Vec<kernel::Series> = match args.kernel {
        KernelChoice::V6_1 => vec![kernel::Series::V6_1],
        KernelChoice::V6_12 => vec![kernel::Series::V6_12],
        KernelChoice::All => vec![kernel::Series::V6_1, kernel::Series::V6_12],
    };
    let guest = build_guest()?;
    let mut total = Summary::default();
    let mut accel = args.accel;
    for s in series {
        let k = kernel::fetch(s).with_context(|| format!("getting the {} kernel", s.name()))?;
        println!("vm-test: kernel {} ({})", k.version, s.name());
        let image = initramfs::build(&k, &guest)?;
        let started = Instant::now();
        let (result, used) = qemu::boot(&k, &image, accel, Duration::from_secs(args.timeout))
            .with_context(|| format!("guest on kernel {}", k.version))?;
        accel = used; // a probe that fell back to TCG is not repeated
        println!(
            "vm-test: kernel {}: {} passed, {} failed in {:.1} s ({:?})",
            k.version,
            result.passed,
            result.failed,
            started.elapsed().as_secs_f64(),
            used
        );
        total.passed += result.passed;
        total.failed += result.failed;
    }
    Ok(total)
}
