//! Where each controller lives and the cgroups of one task.
//!
//! [`Layout::parse`] is pure: from `/proc/self/mountinfo` and the cgroup v2
//! root's `cgroup.controllers` it decides, per controller, whether it is on
//! the unified (v2) hierarchy or on a v1 hierarchy of its own (hybrid hosts
//! keep cpu, memory and pids on v1). [`TaskCgroups`] creates, fills, kills
//! and removes a task's directories (one on v2, one per v1 hierarchy).
use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

/// The controllers Garrison uses.
pub const CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// Parent directory of task cgroups in every hierarchy.
pub const PARENT: &str = "garrison-tasks";

/// Which hierarchy a controller is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy mounted at this path.
    V2(PathBuf),
    /// A v1 hierarchy mounted at this path.
    V1(PathBuf),
}

/// Controller → hierarchy; controllers the host lacks are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    pub controllers: BTreeMap<&'static str, Hierarchy>,
    /// The unified hierarchy, if mounted.
    pub v2_root: Option<PathBuf>,
}

impl Layout {
    /// From mountinfo text and a reader of the v2 root's `cgroup.controllers`.
    pub fn parse(mountinfo: &str, v2_controllers: impl Fn(&Path) -> String) -> Layout {
        let mut layout = Layout::default();
        let mut v1: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let (fstype, _source, options) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") if layout.v2_root.is_none() => {
                    layout.v2_root = Some(PathBuf::from(mount));
                }
                Some("cgroup") => {
                    for c in CONTROLLERS {
                        if options.split(',').any(|o| o == c) {
                            v1.entry(c).or_insert_with(|| PathBuf::from(mount));
                        }
                    }
                }
                _ => {}
            }
        }
        let on_v2: Vec<String> = layout
            .v2_root
            .as_deref()
            .map(|r| {
                v2_controllers(r)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        for c in CONTROLLERS {
            if let Some(p) = v1.remove(c) {
                layout.controllers.insert(c, Hierarchy::V1(p));
            } else if let Some(root) = &layout.v2_root {
                // On v2, cpuacct's figures are part of cpu (cpu.stat).
                let name = if c == "cpuacct" { "cpu" } else { c };
                if on_v2.iter().any(|x| x == name) {
                    layout.controllers.insert(c, Hierarchy::V2(root.clone()));
                }
            }
        }
        layout
    }

    /// This host's layout.
    pub fn detect() -> io::Result<Layout> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        Ok(Layout::parse(&mountinfo, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        }))
    }

    /// Short description for logs: `cpu=v1 memory=v2 …`.
    pub fn describe(&self) -> String {
        self.controllers
            .iter()
            .map(|(c, h)| match h {
                Hierarchy::V1(_) => format!("{c}=v1"),
                Hierarchy::V2(_) => format!("{c}=v2"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Mode 0755 whatever the agent's umask: a task reads its own limits (as
/// runtimes such as the JVM do to size themselves); only root writes them.
fn readable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))
}

/// The cgroup directories of one task.
#[derive(Debug, Clone)]
pub struct TaskCgroups {
    /// controller → (directory, on v2).
    by_controller: BTreeMap<&'static str, (PathBuf, bool)>,
}

impl TaskCgroups {
    /// Creates the task's directory in every hierarchy holding a controller
    /// (on v2, enabling the controllers for the parent first).
    pub fn create(layout: &Layout, task: &str) -> io::Result<TaskCgroups> {
        let mut by_controller = BTreeMap::new();
        for (c, h) in &layout.controllers {
            let (mount, v2) = match h {
                Hierarchy::V1(p) => (p, false),
                Hierarchy::V2(p) => (p, true),
            };
            let parent = mount.join(PARENT);
            if !parent.exists() {
                fs::create_dir_all(&parent)?;
                readable(&parent)?;
            }
            if v2 && *c != "cpuacct" {
                for dir in [mount.as_path(), parent.as_path()] {
                    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control"))?;
                    if !enabled.split_whitespace().any(|x| x == *c) {
                        write(&dir.join("cgroup.subtree_control"), &format!("+{c}"))?;
                    }
                }
            }
            let dir = parent.join(task);
            if !dir.exists() {
                fs::create_dir(&dir)?;
                readable(&dir)?;
            }
            by_controller.insert(*c, (dir, v2));
        }
        Ok(TaskCgroups { by_controller })
    }

    /// The task's directories that exist now (a task left by an earlier
    /// agent), or `None` when there are none.
    pub fn existing(layout: &Layout, task: &str) -> Option<TaskCgroups> {
        let by_controller: BTreeMap<&'static str, (PathBuf, bool)> = layout
            .controllers
            .iter()
            .filter_map(|(c, h)| {
                let (mount, v2) = match h {
                    Hierarchy::V1(p) => (p, false),
                    Hierarchy::V2(p) => (p, true),
                };
                let dir = mount.join(PARENT).join(task);
                dir.is_dir().then_some((*c, (dir, v2)))
            })
            .collect();
        (!by_controller.is_empty()).then_some(TaskCgroups { by_controller })
    }

    /// The directory holding `controller`'s files, and whether it is v2.
    pub fn dir(&self, controller: &str) -> Option<(&Path, bool)> {
        self.by_controller
            .get(controller)
            .map(|(p, v2)| (p.as_path(), *v2))
    }

    /// Every distinct directory (a process joins each).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .by_controller
            .values()
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Writes `value` to `file` of `controller`'s directory.
    pub fn set(&self, controller: &str, file: &str, value: &str) -> io::Result<()> {
        let (dir, _) = self.dir(controller).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("controller {controller} is not available"),
            )
        })?;
        write(&dir.join(file), value)
    }

    /// Reads `file` of `controller`'s directory.
    pub fn get(&self, controller: &str, file: &str) -> Option<String> {
        let (dir, _) = self.dir(controller)?;
        fs::read_to_string(dir.join(file)).ok()
    }

    /// Processes in the task's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs()
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Threads in the task's cgroups.
    pub fn threads(&self) -> usize {
        let Some((dir, v2)) = self.dir("pids").or_else(|| self.dir("memory")) else {
            return 0;
        };
        let file = if v2 { "cgroup.threads" } else { "tasks" };
        fs::read_to_string(dir.join(file)).map_or(0, |s| s.lines().count())
    }

    /// Sends `signal` to every process of the task.
    pub fn signal_all(&self, signal: i32) {
        for pid in self.pids() {
            // SAFETY: kill(2) on a pid read from the task's own cgroup.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// SIGKILLs every process until the cgroups are empty (bounded: 5 s),
    /// then removes the directories. Returns whether all are gone.
    pub fn destroy(&self) -> bool {
        for _ in 0..250 {
            if self.pids().is_empty() {
                break;
            }
            self.signal_all(libc::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut gone = true;
        for dir in self.dirs() {
            let mut removed = false;
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Ok(()) => {
                        removed = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        removed = true;
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            gone &= removed;
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 30 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 30 0:33 / /run/other rw - cgroup2 none rw
";

    #[test]
    fn hybrid_hosts_keep_controllers_on_v1() {
        let l = Layout::parse(HYBRID, |_| "hugetlb".into());
        assert_eq!(l.v2_root, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            l.controllers["memory"],
            Hierarchy::V1("/sys/fs/cgroup/memory".into())
        );
        assert_eq!(l.describe(), "cpu=v1 cpuacct=v1 memory=v1 pids=v1");
    }

    #[test]
    fn pure_v2_hosts_use_the_unified_hierarchy() {
        let mi = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = Layout::parse(mi, |_| "cpuset cpu io memory pids".into());
        assert_eq!(l.describe(), "cpu=v2 cpuacct=v2 memory=v2 pids=v2");
        let without_pids = Layout::parse(mi, |_| "cpu memory".into());
        assert!(!without_pids.controllers.contains_key("pids"));
    }

    #[test]
    fn v1_cpu_and_cpuacct_co_mounted() {
        let mi = "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let l = Layout::parse(mi, |_| String::new());
        assert_eq!(l.controllers["cpu"], l.controllers["cpuacct"]);
    }
}
