//! Builds the kernel programs (ebpf/programs) for the BPF target with aya-build
//! and leaves the object at `$OUT_DIR/garrison`, embedded by `src/dataplane/ebpf.rs`.
//!
//! The BPF build needs a nightly toolchain with rust-src and `bpf-linker`. When a
//! piece is missing this fails with one line naming it and `cargo xtask deps`.
use std::{path::PathBuf, process::Command};

fn missing(what: &str) -> ! {
    // One clear line; cargo prints it under "error: failed to run custom build command".
    eprintln!(
        "error: garrison-agent needs {what} to build its eBPF programs; run `cargo xtask deps`"
    );
    std::process::exit(1);
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn check_prerequisites() {
    if !on_path("bpf-linker") {
        missing("bpf-linker (cargo install bpf-linker --version 0.10.4 --locked)");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => missing("the nightly toolchain (rustup toolchain install nightly)"),
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        missing("rust-src for nightly (rustup component add rust-src --toolchain nightly)");
    }
}

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    check_prerequisites();
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../ebpf/programs").canonicalize()?;
    // The programs include the shared types: rebuild when they change too.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../ebpf/common/src").display()
    );
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {root:?}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "garrison-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
