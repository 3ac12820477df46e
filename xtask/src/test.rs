//! `cargo xtask test`: THE test command. Steps in order: deps, fmt, clippy,
//! unit tests, privileged host tests, VM tests on both kernels. Every step is
//! counted; it ends with one line `N passed, N failed`.
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::{cmd, deps, vm};

#[derive(Default)]
struct Tally {
    passed: u32,
    failed: u32,
    failures: Vec<String>,
}

impl Tally {
    fn step(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_string());
        }
    }
}

/// Runs cargo with `args`, streaming its output, and returns (passed, failed)
/// summed from libtest's `test result:` lines and whether cargo succeeded.
fn cargo_tests(args: &[&str]) -> Result<(u32, u32, bool)> {
    println!("+ cargo {}", args.join(" "));
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(cmd::root())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().expect("piped");
    let (mut passed, mut failed) = (0, 0);
    for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = parse_libtest(&line) {
            passed += p;
            failed += f;
        }
    }
    let ok = child.wait()?.success();
    Ok((passed, failed, ok))
}

/// `test result: ok. 3 passed; 0 failed; ...` → (3, 0).
fn parse_libtest(line: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix("test result: ")?;
    let num = |word: &str| -> Option<u32> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

fn tests_step(tally: &mut Tally, name: &str, args: &[&str]) -> Result<()> {
    let (p, f, ok) = cargo_tests(args)?;
    tally.passed += p;
    tally.failed += f;
    if !ok && f == 0 {
        // cargo failed without a failing test: a build error or a crash.
        tally.step(name, false);
    } else if f > 0 {
        tally.failures.push(name.to_string());
    }
    Ok(())
}

pub fn run(with_vm: bool) -> Result<()> {
    deps::run()?;
    let mut tally = Tally::default();
    let ok = cmd::cargo(&["fmt", "--all", "--check"]).is_ok();
    tally.step("cargo fmt --check", ok);
    let ok = cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])
    .is_ok();
    tally.step("cargo clippy", ok);
    tests_step(
        &mut tally,
        "unit tests",
        &[
            "test",
            "--workspace",
            "--exclude",
            "garrison-tests",
            "--exclude",
            "garrison-vm-tests",
            "--exclude",
            "garrison-ebpf",
        ],
    )?;
    // The scenarios run the agent, the control and the test task server as
    // processes.
    let ok = cmd::cargo(&[
        "build",
        "-p",
        "garrison-agent",
        "-p",
        "garrison-control",
        "-p",
        "garrison-tests",
        "--bins",
    ])
    .is_ok();
    tally.step(
        "build garrison-agent, garrison-control, garrison-test-serve",
        ok,
    );
    tests_step(
        &mut tally,
        "privileged host tests",
        &["test", "-p", "garrison-tests", "--", "--test-threads=1"],
    )?;
    if with_vm {
        let args = vm::VmTestArgs {
            kernel: vm::KernelChoice::All,
            accel: vm::Accel::Auto,
            timeout: 600,
        };
        match vm::run(&args) {
            Ok(s) => {
                tally.passed += s.passed;
                tally.failed += s.failed;
                if s.failed > 0 {
                    tally.failures.push("vm-test".into());
                }
            }
            Err(e) => {
                println!("vm-test: error: {e:#}");
                tally.step("vm-test", false);
            }
        }
    }
    if !tally.failures.is_empty() {
        println!("failed steps: {}", tally.failures.join(", "));
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        bail!("{} failed", tally.failed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_libtest;

    #[test]
    fn reads_libtest_summaries() {
        assert_eq!(
            parse_libtest(
                "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_libtest("test result: FAILED. 3 passed; 2 failed; 0 ignored"),
            Some((3, 2))
        );
        assert_eq!(parse_libtest("running 3 tests"), None);
    }
}
