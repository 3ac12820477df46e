//! Loading kernel modules in the guest without modprobe: dependencies from
//! `modules.dep` (made by `depmod -b` on the host), then `finit_module(2)`.
use std::{collections::BTreeSet, ffi::CString, fs, os::fd::AsRawFd, path::Path};

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

struct ModulesDep {
    /// (module name, path relative to the modules dir, dependency paths)
    entries: Vec<(String, String, Vec<String>)>,
}

impl ModulesDep {
    fn read(dir: &Path) -> std::io::Result<Self> {
        let text = fs::read_to_string(dir.join("modules.dep"))?;
        let entries = text
            .lines()
            .filter_map(|l| {
                let (path, deps) = l.split_once(':')?;
                let name = Path::new(path)
                    .file_name()?
                    .to_str()?
                    .split('.')
                    .next()?
                    .to_string();
                Some((
                    normalise(&name),
                    path.to_string(),
                    deps.split_whitespace().map(str::to_string).collect(),
                ))
            })
            .collect();
        Ok(ModulesDep { entries })
    }

    fn by_name(&self, name: &str) -> Option<&(String, String, Vec<String>)> {
        let n = normalise(name);
        self.entries.iter().find(|e| e.0 == n)
    }

    fn by_path(&self, path: &str) -> Option<&(String, String, Vec<String>)> {
        self.entries.iter().find(|e| e.1 == path)
    }
}

/// `MODULE_INIT_COMPRESSED_FILE` from linux/module.h.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

fn insert(dir: &Path, rel: &str) -> Result<(), String> {
    let file = fs::File::open(dir.join(rel)).map_err(|e| format!("open {rel}: {e}"))?;
    let params = CString::default();
    // Debian 6.12 ships .ko.xz: let the kernel decompress (CONFIG_MODULE_DECOMPRESS).
    let flags = if rel.ends_with(".xz") || rel.ends_with(".zst") || rel.ends_with(".gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module(2) with an open module file and empty parameters.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(format!("finit_module {rel}: {e}"));
        }
    }
    Ok(())
}

fn load(
    dir: &Path,
    dep: &ModulesDep,
    rel: &str,
    done: &mut BTreeSet<String>,
) -> Result<(), String> {
    if !done.insert(rel.to_string()) {
        return Ok(());
    }
    if let Some((_, _, deps)) = dep.by_path(rel) {
        // modules.dep lists dependencies nearest-first; load the farthest first.
        for d in deps.iter().rev() {
            load(dir, dep, d, done)?;
        }
    }
    insert(dir, rel)
}

/// Loads `names` (and their dependencies); built-in or missing modules are reported.
pub fn load_all(release: &str, names: &[&str]) {
    let dir = Path::new("/lib/modules").join(release);
    let dep = match ModulesDep::read(&dir) {
        Ok(d) => d,
        Err(e) => {
            println!("garrison-vm: no modules.dep in {}: {e}", dir.display());
            return;
        }
    };
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let mut done = BTreeSet::new();
    let mut loaded = Vec::new();
    for name in names {
        match dep.by_name(name) {
            Some((_, rel, _)) => match load(&dir, &dep, &rel.clone(), &mut done) {
                Ok(()) => loaded.push(*name),
                Err(e) => println!("garrison-vm: module {name}: {e}"),
            },
            None if builtin
                .lines()
                .any(|l| l.ends_with(&format!("/{}.ko", normalise(name)))) => {}
            None => println!("garrison-vm: module {name}: not in this kernel"),
        }
    }
    println!("garrison-vm: modules loaded: {}", loaded.join(" "));
}
