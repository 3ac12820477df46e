//! Debian cloud kernels for the guests, resolved through their meta-packages
//! (the archive drops old patch releases), unpacked and cached under
//! target/vm/kernels/<series>/.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::cmd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    V6_1,
    V6_12,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    fn meta_package(self) -> &'static str {
        match self {
            Series::V6_1 => "linux-image-cloud-amd64",
            Series::V6_12 => "linux-image-6.12-cloud-amd64",
        }
    }
}

/// An unpacked kernel.
pub struct Kernel {
    /// e.g. 6.1.0-56-cloud-amd64
    pub version: String,
    pub vmlinuz: PathBuf,
    /// The unpacked lib/modules/<version> directory.
    pub modules: PathBuf,
}

fn cache_dir(series: Series) -> PathBuf {
    cmd::root().join("target/vm/kernels").join(series.name())
}

fn unpacked(dir: &Path) -> Option<Kernel> {
    let version = fs::read_to_string(dir.join("VERSION"))
        .ok()?
        .trim()
        .to_string();
    let vmlinuz = dir.join("root/boot").join(format!("vmlinuz-{version}"));
    let modules = dir.join("root/lib/modules").join(&version);
    (vmlinuz.is_file() && modules.is_dir()).then_some(Kernel {
        version,
        vmlinuz,
        modules,
    })
}

/// The image package the meta-package currently points at.
fn resolve(series: Series) -> Result<String> {
    let deps = cmd::stdout("apt-cache", &["depends", series.meta_package()])?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{} depends on no linux-image package (run `apt-get update`?):\n{deps}",
                series.meta_package()
            )
        })
}

/// Returns the cached kernel of `series`, downloading it on first use.
pub fn fetch(series: Series) -> Result<Kernel> {
    let dir = cache_dir(series);
    if let Some(k) = unpacked(&dir) {
        return Ok(k);
    }
    let package = match resolve(series) {
        Ok(p) => p,
        Err(_) => {
            cmd::output("apt-get", &["update", "-q"])?;
            resolve(series)?
        }
    };
    let version = package.trim_start_matches("linux-image-").to_string();
    println!("vm-test: downloading {package} (kernel {version})");
    let _ = fs::remove_dir_all(&dir);
    let dl = dir.join("deb");
    fs::create_dir_all(&dl)?;
    let out = std::process::Command::new("apt-get")
        .args(["download", &package])
        .current_dir(&dl)
        .output()
        .context("cannot start apt-get")?;
    if !out.status.success() {
        bail!(
            "`apt-get download {package}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download produced no .deb")?;
    let root = dir.join("root");
    cmd::output(
        "dpkg-deb",
        &[
            "-x",
            deb.to_str().context("path")?,
            root.to_str().context("path")?,
        ],
    )?;
    fs::write(dir.join("VERSION"), &version)?;
    fs::remove_dir_all(&dl)?;
    unpacked(&dir).with_context(|| {
        format!("{package} did not contain boot/vmlinuz-{version} and its modules")
    })
}
