//! `cargo xtask deps`: installs what a fresh machine of this kind lacks, step by
//! step, skipping what is present. A failed step stops with its command and output.
//!
//! The last step is a Python virtualenv, `<target>/pyenv`, holding the published
//! Marathon client pinned in `tests/python/requirements.txt`: the privileged
//! tests run `tests/python/marathon_client.py` with its interpreter.
use std::path::{Path, PathBuf};

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
    // ring (TLS to the control) compiles C for the static musl guest agent
    "musl-tools",
    "curl",
    // the demo: nsenter for node agents, dig for Garrison's DNS
    "util-linux",
    "bind9-dnsutils",
    // benchmark peers and the plot's font
    "haproxy",
    "nftables",
    "fonts-dejavu-core",
    // the virtualenv for the published Python Marathon client
    "python3",
    "python3-venv",
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
    let requirements = cmd::root().join(PYTHON_REQUIREMENTS);
    let pins = read_pins(&requirements)?;
    let venv = python_venv();
    step(
        &format!(
            "Python virtualenv {} ({})",
            venv.display(),
            pins.iter()
                .map(|p| format!("{}=={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        venv_has_pins(&venv, &pins).is_ok(),
        || install_venv(&venv, &requirements, &pins),
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

/// The pinned Python packages, relative to the workspace root.
const PYTHON_REQUIREMENTS: &str = "tests/python/requirements.txt";

/// One `name==version` line of the requirements file.
#[derive(Debug, PartialEq, Eq)]
struct Pin {
    name: String,
    version: String,
}

/// Reads `name==version` lines (blank lines and `#` comments skipped);
/// anything else is an error naming the file and line: pins are exact.
fn parse_pins(file: &Path, text: &str) -> Result<Vec<Pin>> {
    let mut pins = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, version)) = line.split_once("==") else {
            bail!(
                "{}:{}: `{line}` is not an exact pin (name==version)",
                file.display(),
                n + 1
            );
        };
        let (name, version) = (name.trim(), version.trim());
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !plain(name) || !plain(version) {
            bail!(
                "{}:{}: `{line}` is not an exact pin (name==version)",
                file.display(),
                n + 1
            );
        }
        pins.push(Pin {
            name: name.to_string(),
            version: version.to_string(),
        });
    }
    if pins.is_empty() {
        bail!("{}: no pinned package", file.display());
    }
    Ok(pins)
}

fn read_pins(file: &Path) -> Result<Vec<Pin>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_pins(file, &text)
}

/// `<target>/pyenv`: the test binaries find the virtualenv beside their own
/// profile directory.
fn python_venv() -> PathBuf {
    cmd::target_dir().join("pyenv")
}

/// Exits 0 when every `name==version` argument is installed at that version;
/// prints the others.
const PIN_CHECK: &str = r#"
import sys, importlib.metadata as m
bad = []
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = m.version(name)
    except m.PackageNotFoundError:
        have = "not installed"
    if have != want:
        bad.append(f"{name}: pinned {want}, found {have}")
print("; ".join(bad))
sys.exit(1 if bad else 0)
"#;

/// Asks the virtualenv's interpreter for the installed version of every pin;
/// the error lists those missing or at another version.
fn venv_has_pins(venv: &Path, pins: &[Pin]) -> Result<()> {
    let python = venv.join("bin/python");
    if !python.is_file() {
        bail!("{} does not exist", python.display());
    }
    let mut args = vec!["-c".to_string(), PIN_CHECK.to_string()];
    args.extend(pins.iter().map(|p| format!("{}=={}", p.name, p.version)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::output(&python.to_string_lossy(), &args).map(drop)
}

fn install_venv(venv: &Path, requirements: &Path, pins: &[Pin]) -> Result<()> {
    let python = venv.join("bin/python");
    if !python.is_file() {
        cmd::output("python3", &["-m", "venv", &venv.to_string_lossy()]).with_context(|| {
            format!(
                "creating the virtualenv {} with `python3 -m venv` failed \
                 (on Debian it needs the package python3-venv)",
                venv.display()
            )
        })?;
    }
    cmd::output(
        &python.to_string_lossy(),
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "-r",
            &requirements.to_string_lossy(),
        ],
    )
    .with_context(|| {
        format!(
            "installing {} into {} with pip failed",
            requirements.display(),
            venv.display()
        )
    })?;
    venv_has_pins(venv, pins).with_context(|| {
        format!(
            "after pip install, {} still lacks pins of {}",
            venv.display(),
            requirements.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{Pin, parse_pins};
    use std::path::Path;

    #[test]
    fn reads_exact_pins_and_skips_comments() {
        let pins = parse_pins(
            Path::new("r.txt"),
            "# the client\nmarathon==0.13.0\n\nrequests-toolbelt == 1.0.0  # pulled\n",
        )
        .unwrap();
        assert_eq!(
            pins,
            vec![
                Pin {
                    name: "marathon".into(),
                    version: "0.13.0".into()
                },
                Pin {
                    name: "requests-toolbelt".into(),
                    version: "1.0.0".into()
                },
            ]
        );
    }

    #[test]
    fn refuses_ranges_and_names_the_line() {
        let e = parse_pins(Path::new("r.txt"), "marathon==0.13.0\nrequests>=2\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.txt:2: `requests>=2` is not an exact pin (name==version)"
        );
        assert!(parse_pins(Path::new("r.txt"), "# nothing\n").is_err());
        assert!(parse_pins(Path::new("r.txt"), "marathon==0.13.0; python_version<'3'\n").is_err());
    }

    #[test]
    fn the_shipped_requirements_pin_the_marathon_client() {
        let file = crate::cmd::root().join(super::PYTHON_REQUIREMENTS);
        let pins = parse_pins(&file, &std::fs::read_to_string(&file).unwrap()).unwrap();
        assert!(
            pins.iter()
                .any(|p| p.name == "marathon" && p.version.starts_with("0.13."))
        );
    }
}
