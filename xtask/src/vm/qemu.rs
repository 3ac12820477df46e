//! Booting a guest: QEMU with `-nographic -no-reboot`, the console streamed to
//! our stdout, the result line parsed, and QEMU killed on a deadline, a panic or
//! a missing result line. Never waits on a hung guest.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Accel, kernel::Kernel};

const QEMU: &str = "qemu-system-x86_64";
/// Printed by the guest init as soon as it runs.
pub const STARTED_LINE: &str = "garrison-vm: started";
/// Prefix of the guest's one result line: `garrison-vm: result: N passed, M failed`.
pub const RESULT_PREFIX: &str = "garrison-vm: result: ";
/// How long a KVM guest gets to print its first line before we fall back to TCG.
const KVM_PROBE: Duration = Duration::from_secs(20);

/// Counts from the guest's result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestResult {
    pub passed: u32,
    pub failed: u32,
}

/// Fails with one clear line when QEMU is missing.
pub fn check_installed() -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(QEMU).is_file()));
    if !found {
        bail!("{QEMU} not found: run `cargo xtask deps` (Debian package qemu-system-x86)");
    }
    Ok(())
}

/// Parses `N passed, M failed` after the result prefix.
pub fn parse_result(line: &str) -> Option<GuestResult> {
    let rest = line.split(RESULT_PREFIX).nth(1)?.trim();
    let (p, f) = rest.split_once(',')?;
    let passed = p.trim().strip_suffix(" passed")?.trim().parse().ok()?;
    let failed = f.trim().strip_suffix(" failed")?.trim().parse().ok()?;
    Some(GuestResult { passed, failed })
}

fn spawn(kernel: &Kernel, image: &Path, kvm: bool) -> Result<Child> {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-nographic",
        "-no-reboot",
        "-m",
        "1024",
        "-smp",
        "2",
        "-nodefaults",
        "-serial",
        "stdio",
    ]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // Single-threaded TCG: with one host thread per vCPU (MTTCG), a
        // vCPU can run a stale translation of kernel text that another vCPU
        // is live-patching (a static key flips on every cgroup BPF attach or
        // detach) and the guest dies with "Oops: int3" in the patched
        // function (seen in __inet_stream_connect on 6.12). One thread
        // serialises the vCPUs; the guest still sees two CPUs.
        cmd.args(["-accel", "tcg,thread=single", "-cpu", "max"]);
    }
    cmd.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(image);
    cmd.args([
        "-append",
        "console=ttyS0 panic=-1 oops=panic rdinit=/init loglevel=4",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().with_context(|| format!("cannot start {QEMU}"))
}

enum Outcome {
    Result(GuestResult),
    /// KVM probe: the guest's init never started (silent, or QEMU gave up).
    NotStarted,
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn watch(
    mut child: Child,
    tag: &str,
    deadline: Duration,
    first_line_deadline: Option<Duration>,
) -> Result<Outcome> {
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let start = Instant::now();
    let mut started = false;
    let mut result = None;
    loop {
        let limit = match (started, first_line_deadline) {
            (false, Some(probe)) => probe,
            _ => deadline,
        };
        let Some(left) = limit.checked_sub(start.elapsed()) else {
            kill(&mut child);
            if !started && first_line_deadline.is_some() {
                return Ok(Outcome::NotStarted);
            }
            bail!(
                "guest gave no result line within {} s; QEMU killed",
                deadline.as_secs()
            );
        };
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                println!("[{tag}] {line}");
                if line.contains(STARTED_LINE) {
                    started = true;
                }
                if line.contains("Kernel panic") {
                    kill(&mut child);
                    bail!("guest kernel panicked: {line}");
                }
                if let Some(r) = parse_result(&line) {
                    result = Some(r);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    if !started && first_line_deadline.is_some() {
        return Ok(Outcome::NotStarted);
    }
    match result {
        Some(r) => Ok(Outcome::Result(r)),
        None => bail!("QEMU exited ({status}) without the guest's result line"),
    }
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boots the guest and returns its result and the accelerator actually used.
pub fn boot(
    kernel: &Kernel,
    image: &Path,
    accel: Accel,
    deadline: Duration,
) -> Result<(GuestResult, Accel)> {
    let tag = kernel
        .version
        .split('-')
        .next()
        .unwrap_or("guest")
        .to_string();
    if accel != Accel::Tcg {
        if !kvm_usable() {
            if accel == Accel::Kvm {
                bail!("--accel kvm: /dev/kvm cannot be opened");
            }
            println!("vm-test: /dev/kvm not usable; using TCG");
        } else {
            let probe = (accel == Accel::Auto).then_some(KVM_PROBE);
            match watch(spawn(kernel, image, true)?, &tag, deadline, probe)? {
                Outcome::Result(r) => return Ok((r, Accel::Kvm)),
                Outcome::NotStarted => println!(
                    "vm-test: KVM guest did not start within {} s; falling back to TCG",
                    KVM_PROBE.as_secs()
                ),
            }
        }
    }
    match watch(spawn(kernel, image, false)?, &tag, deadline, None)? {
        Outcome::Result(r) => Ok((r, Accel::Tcg)),
        Outcome::NotStarted => unreachable!("no probe deadline for TCG"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_result_line() {
        assert_eq!(
            parse_result("garrison-vm: result: 3 passed, 1 failed"),
            Some(GuestResult {
                passed: 3,
                failed: 1
            })
        );
        assert_eq!(
            parse_result("[  1.0] garrison-vm: result: 0 passed, 0 failed\r"),
            Some(GuestResult {
                passed: 0,
                failed: 0
            })
        );
        assert_eq!(parse_result("garrison-vm: result: many passed"), None);
        assert_eq!(parse_result("something else"), None);
    }
}
