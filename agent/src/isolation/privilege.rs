//! Who a task runs as and what it keeps of the agent's privileges.
//!
//! A task runs as the user its request names (Marathon's app `user`) or the
//! agent's `isolation.default_user` (`nobody` unless configured); a user
//! whose uid is 0 only when `isolation.allow_root_tasks` is set
//! ([`check_user`], pure). The name is resolved with `getpwnam_r` and its
//! groups with `getgrouplist` ([`resolve_user`]).
//!
//! The task's environment is built from nothing ([`task_env`], pure): a
//! default `PATH` (Mesos' executor's, when the request sets none), `HOME` and
//! `MESOS_SANDBOX` (the sandbox), `MESOS_TASK_ID`, then the request's `env`.
//!
//! Between fork and exec the child applies a [`Confinement`] prepared before
//! the fork (async-signal-safe system calls only, on data already in memory):
//! the bounding set is emptied while still privileged, the ambient set
//! cleared, groups, gid and uid set, the remaining sets (effective,
//! permitted, inheritable) zeroed (a root task keeps uid 0 and nothing else),
//! `no_new_privs` set, and every descriptor above 2 marked close-on-exec.
//! The agent also marks its own descriptors close-on-exec at start and after
//! opening sockets it does not create itself ([`close_on_exec_above_stdio`]).
//!
//! [`protect_agent_files`] keeps the agent's own files away from tasks: the
//! config file loses its group and other bits, the state directory is 0700
//! (0711 when the work directory lies inside it, its files 0600), the bpf pin
//! directory 0700. The launcher makes the work directory and its `tasks/`
//! traversable but not listable (0711) and `meta/` 0700 (see
//! [`WORK_DIR_MODE`]); a sandbox belongs to its task's user (0750).
use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use super::TaskError;

/// `PATH` of a task whose request sets none (what Mesos' executor sets).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user tasks run as when their request names none.
pub const DEFAULT_USER: &str = "nobody";

/// Mode of the work directory and its `tasks/`: tasks reach their sandbox
/// through them, but cannot list other tasks.
pub(crate) const WORK_DIR_MODE: u32 = 0o711;
/// Mode of `<work_dir>/meta` (recovery records) and of a state directory
/// that holds no work directory.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of a sandbox, owned by the task's user and group.
pub(crate) const SANDBOX_MODE: u32 = 0o750;

/// A resolved task user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`getgrouplist`: the primary group included).
    pub groups: Vec<u32>,
}

/// Which user a task asks for, and what the agent allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserPolicy {
    /// `isolation.default_user`.
    pub default_user: String,
    /// `isolation.allow_root_tasks`.
    pub allow_root: bool,
}

impl Default for UserPolicy {
    fn default() -> Self {
        UserPolicy {
            default_user: DEFAULT_USER.into(),
            allow_root: false,
        }
    }
}

fn refused(why: impl Into<String>) -> TaskError {
    TaskError::Invalid {
        field: "user",
        why: why.into(),
    }
}

impl UserPolicy {
    /// The user name a task runs as: the requested one, else the default.
    pub(crate) fn name_for<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        requested.unwrap_or(&self.default_user)
    }

    /// Refuses a user whose uid is 0 unless root tasks are allowed (by uid,
    /// not name: an alias of root is root).
    pub(crate) fn check_user(&self, user: &TaskUser) -> Result<(), TaskError> {
        if user.uid == 0 && !self.allow_root {
            return Err(refused(format!(
                "{:?} has uid 0 and this agent does not run root tasks (isolation.allow_root_tasks = false)",
                user.name
            )));
        }
        Ok(())
    }
}

/// Resolves `name` with the system's user database (`getpwnam_r`; a static
/// musl binary reads /etc/passwd and /etc/group) and its groups with
/// `getgrouplist`.
pub(crate) fn resolve_user(name: &str) -> Result<TaskUser, TaskError> {
    let c_name = CString::new(name).map_err(|_| refused(format!("{name:?} holds NUL")))?;
    // SAFETY: a zeroed passwd is a valid out-parameter.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: every pointer is valid for the call; `buf`'s length is
        // passed with it; `result` points at `pwd` or is null afterwards.
        let r = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        match r {
            0 => break,
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            err => {
                return Err(TaskError::Io {
                    what: format!("looking up user {name:?}"),
                    source: io::Error::from_raw_os_error(err),
                });
            }
        }
    }
    if result.is_null() {
        return Err(refused(format!("no user {name:?} on this host")));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `n` entries; getgrouplist writes at most
        // `n` and sets `n` to the number it has (or needs).
        let r = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n.max(0) as usize);
            break;
        }
        let wanted = (n.max(0) as usize).max(groups.len() * 2);
        if wanted > 65536 {
            return Err(TaskError::Io {
                what: format!("listing the groups of user {name:?}"),
                source: io::Error::other("more than 65536 groups"),
            });
        }
        groups.resize(wanted, 0);
    }
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(TaskUser {
        name: name.to_string(),
        uid,
        gid,
        groups,
    })
}

/// The whole environment of a task: nothing of the agent's own. `PATH` and
/// `HOME` first (the request may override them), then Mesos' variables,
/// then the request's `env`.
pub(crate) fn task_env(
    id: &str,
    sandbox: &Path,
    requested: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let sandbox = sandbox.display().to_string();
    let mut env = BTreeMap::from([
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOME".to_string(), sandbox.clone()),
        ("MESOS_SANDBOX".to_string(), sandbox),
        ("MESOS_TASK_ID".to_string(), id.to_string()),
    ]);
    env.extend(requested.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The highest capability number of the running kernel
/// (`/proc/sys/kernel/cap_last_cap`); 63 (every bit a set can hold) when it
/// cannot be read: numbers the kernel does not know are skipped.
pub(crate) fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// What the child applies between fork and exec, prepared before the fork.
#[derive(Debug, Clone)]
pub(crate) struct Confinement {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    last_cap: u32,
    /// Descriptors below this are marked close-on-exec one by one when
    /// `close_range` is unavailable (kernels before 5.11).
    fd_limit: u32,
}

impl Confinement {
    pub(crate) fn new(user: &TaskUser, last_cap: u32) -> Confinement {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) into a valid struct.
        let fd_limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
            rl.rlim_cur.min(1 << 20) as u32
        } else {
            1 << 16
        };
        Confinement {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            last_cap: last_cap.min(63),
            fd_limit,
        }
    }

    /// Drops every privilege; to be called in the child between fork and
    /// exec, while it still runs with the agent's privileges. Stops at the
    /// first failure (the launch then fails with that error).
    ///
    /// # Safety
    /// Only in a child between fork and exec: it changes the credentials of
    /// the calling thread only (raw system calls), which is the whole
    /// process there. It allocates nothing and calls only async-signal-safe
    /// system calls.
    pub(crate) unsafe fn apply(&self) -> io::Result<()> {
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY (whole block): plain system calls on integers and on
        // memory owned by `self` or this stack frame.
        unsafe {
            // 1. The bounding set, while CAP_SETPCAP is still ours: nothing
            //    can be regained at exec, not even by a root task.
            for cap in 0..=self.last_cap {
                let held = libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0);
                if held == 1 {
                    check(
                        libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0).into(),
                    )?;
                }
            }
            // 2. Ambient capabilities (EINVAL: a kernel before 4.3 has none).
            let r = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::last_os_error());
            }
            // 3. Groups, then gid, then uid (each needs the privilege the
            //    next one gives up).
            check(libc::syscall(
                libc::SYS_setgroups,
                self.groups.len(),
                self.groups.as_ptr(),
            ))?;
            check(libc::syscall(
                libc::SYS_setresgid,
                self.gid,
                self.gid,
                self.gid,
            ))?;
            check(libc::syscall(
                libc::SYS_setresuid,
                self.uid,
                self.uid,
                self.uid,
            ))?;
            // 4. Effective, permitted, inheritable: empty (a non-root uid
            //    already lost them; uid 0 keeps them until this).
            let header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            }; 2];
            check(libc::syscall(
                libc::SYS_capset,
                &header as *const CapHeader,
                data.as_ptr(),
            ))?;
            // 5. No setuid, setgid or file-capability gain at exec.
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
            // 6. Nothing of the agent's open files survives the exec.
            let r = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r < 0 {
                for fd in 3..self.fd_limit as libc::c_int {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // 7. Files the task creates: the usual 022 (the agent's own is
            //    stricter).
            libc::umask(0o022);
        }
        Ok(())
    }
}

/// Marks every open descriptor of this process above 2 close-on-exec (the
/// agent means none of them for a child: inherited ones, and those of
/// libraries opening sockets without `SOCK_CLOEXEC`, such as `nfq`).
/// Returns how many were not.
pub fn close_on_exec_above_stdio() -> std::io::Result<usize> {
    let mut marked = 0;
    let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl(2) on a descriptor number; one closed meanwhile
        // (the directory listing's own, or another thread's) gives EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: as above; only the close-on-exec flag is added.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == 0 {
                marked += 1;
            }
        }
    }
    Ok(marked)
}

/// The agent's own files, kept away from tasks.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// The config file (`--config`).
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// The bpf pin directory (eBPF data path).
    pub pins: Option<PathBuf>,
    /// Tasks' work directory (tasks traverse it to their sandboxes).
    pub work_dir: Option<PathBuf>,
}

/// How a path's mode must change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wanted {
    /// Exactly this mode.
    Mode(u32),
    /// No group or other permission left.
    OwnerOnly,
    /// Others may traverse (x), nothing more is added.
    Traversable,
}

impl Wanted {
    /// The mode a path with `current` permission bits gets.
    pub(crate) fn apply(self, current: u32) -> u32 {
        let current = current & 0o7777;
        match self {
            Wanted::Mode(m) => m,
            Wanted::OwnerOnly => current & !0o077,
            Wanted::Traversable => current | 0o111,
        }
    }
}

/// What [`protect_agent_files`] changes (pure): the config file owner-only;
/// the state directory 0700, or 0711 when the work directory lies inside it
/// (with every directory between them traversable); the pin directory 0700.
pub(crate) fn protection_plan(files: &AgentFiles) -> Vec<(PathBuf, Wanted)> {
    let mut plan = Vec::new();
    if let Some(c) = &files.config {
        plan.push((c.clone(), Wanted::OwnerOnly));
    }
    let state = &files.state_dir;
    match files.work_dir.as_deref().filter(|w| w.starts_with(state)) {
        Some(work) => {
            plan.push((state.clone(), Wanted::Mode(WORK_DIR_MODE)));
            let mut between: Vec<PathBuf> = work
                .ancestors()
                .skip(1)
                .take_while(|a| *a != state.as_path() && a.starts_with(state))
                .map(Path::to_path_buf)
                .collect();
            between.reverse();
            plan.extend(between.into_iter().map(|d| (d, Wanted::Traversable)));
        }
        None => plan.push((state.clone(), Wanted::Mode(PRIVATE_DIR_MODE))),
    }
    if let Some(p) = &files.pins {
        plan.push((p.clone(), Wanted::Mode(PRIVATE_DIR_MODE)));
    }
    plan
}

/// Whether a directory is shared with others and not the agent's to
/// change: the root directory, or one with the sticky bit (such as /tmp).
pub(crate) fn is_shared_dir(path: &Path, mode: u32) -> bool {
    path.parent().is_none() || mode & 0o1000 != 0
}

/// Sets a path's mode as wanted; `Ok(Some(old, new))` when it changed,
/// `Ok(None)` when it was right or does not exist. A shared directory
/// ([`is_shared_dir`]) is left alone: an error says why.
pub(crate) fn set_mode(path: &Path, wanted: Wanted) -> io::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let old = meta.permissions().mode() & 0o7777;
    if meta.is_dir() && is_shared_dir(path, old) {
        return Err(io::Error::other(
            "a shared directory (root, or sticky like /tmp) is left as it is: give the agent a directory of its own",
        ));
    }
    let new = wanted.apply(old);
    if new == old {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))?;
    Ok(Some((old, new)))
}

/// Applies [`protection_plan`] (creating the state directory when missing)
/// and makes the files directly in the state directory owner-only. Every
/// change is logged; returns the problems (path: error), which do not stop
/// the agent.
pub fn protect_agent_files(files: &AgentFiles) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = std::fs::create_dir_all(&files.state_dir) {
        problems.push(format!("{}: {e}", files.state_dir.display()));
    }
    let mut plan = protection_plan(files);
    if let Ok(entries) = std::fs::read_dir(&files.state_dir) {
        plan.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| (e.path(), Wanted::OwnerOnly)),
        );
    }
    for (path, wanted) in plan {
        match set_mode(&path, wanted) {
            Ok(Some((old, new))) => {
                tracing::info!(path = %path.display(), old = %format!("{old:o}"), new = %format!("{new:o}"), "kept away from tasks: mode changed");
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    problems
}

/// New files and directories of the agent are its own (umask 077); tasks
/// get 022 back ([`Confinement::apply`]). For the agent's process, at start.
pub fn private_files_by_default() {
    // SAFETY: umask(2) cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Gives the sandbox (and the files already in it) to the task's user,
/// mode [`SANDBOX_MODE`].
pub(crate) fn give_sandbox(sandbox: &Path, user: &TaskUser) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let with_path = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    // The mode first: changing it once the user owns the directory would
    // need CAP_FOWNER.
    std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(SANDBOX_MODE))
        .map_err(with_path(sandbox))?;
    std::os::unix::fs::chown(sandbox, Some(user.uid), Some(user.gid))
        .map_err(with_path(sandbox))?;
    for entry in std::fs::read_dir(sandbox)?.flatten() {
        let p = entry.path();
        std::os::unix::fs::lchown(&p, Some(user.uid), Some(user.gid)).map_err(with_path(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32) -> TaskUser {
        TaskUser {
            name: name.into(),
            uid,
            gid: uid,
            groups: vec![uid],
        }
    }

    #[test]
    fn the_default_user_is_nobody_and_root_needs_allow_root_tasks() {
        let policy = UserPolicy::default();
        assert_eq!(policy.name_for(None), "nobody");
        assert_eq!(policy.name_for(Some("www-data")), "www-data");
        assert!(policy.check_user(&user("nobody", 65534)).is_ok());
        for root in [user("root", 0), user("toor", 0)] {
            match policy.check_user(&root) {
                Err(TaskError::Invalid { field: "user", why }) => {
                    assert!(why.contains("allow_root_tasks"), "{why}")
                }
                other => panic!("{other:?}"),
            }
        }
        let allowing = UserPolicy {
            allow_root: true,
            ..Default::default()
        };
        assert!(allowing.check_user(&user("root", 0)).is_ok());
    }

    #[test]
    fn users_resolve_from_the_host_database() {
        let root = resolve_user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        match resolve_user("no-such-user-garrison") {
            Err(TaskError::Invalid { field: "user", why }) => {
                assert!(why.contains("no user"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_environment_is_built_from_nothing() {
        let env = task_env("web.1", Path::new("/w/tasks/web.1"), &BTreeMap::new());
        assert_eq!(
            env.keys().map(String::as_str).collect::<Vec<_>>(),
            ["HOME", "MESOS_SANDBOX", "MESOS_TASK_ID", "PATH"]
        );
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["HOME"], "/w/tasks/web.1");
        assert_eq!(env["MESOS_SANDBOX"], "/w/tasks/web.1");
        let requested = BTreeMap::from([
            ("PATH".to_string(), "/opt/bin".to_string()),
            ("PORT0".to_string(), "31000".to_string()),
        ]);
        let env = task_env("web.1", Path::new("/s"), &requested);
        assert_eq!(env["PATH"], "/opt/bin", "the request's PATH wins");
        assert_eq!(env["PORT0"], "31000");
        assert_eq!(env.len(), 5);
    }

    #[test]
    fn shared_directories_are_not_the_agents() {
        assert!(is_shared_dir(Path::new("/"), 0o755));
        assert!(is_shared_dir(Path::new("/tmp"), 0o1777));
        assert!(!is_shared_dir(Path::new("/var/lib/garrison"), 0o755));
    }

    #[test]
    fn modes() {
        assert_eq!(Wanted::OwnerOnly.apply(0o100644), 0o600);
        assert_eq!(Wanted::OwnerOnly.apply(0o640), 0o600);
        assert_eq!(Wanted::Traversable.apply(0o700), 0o711);
        assert_eq!(Wanted::Mode(0o711).apply(0o755), 0o711);
    }

    #[test]
    fn the_plan_keeps_state_private_and_the_work_dir_reachable() {
        let files = |state: &str, work: &str| AgentFiles {
            config: Some("/etc/garrison/agent.toml".into()),
            state_dir: state.into(),
            pins: Some("/sys/fs/bpf/garrison".into()),
            work_dir: Some(work.into()),
        };
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            protection_plan(&files("/var/lib/garrison-state", "/var/lib/garrison")),
            vec![
                (p("/etc/garrison/agent.toml"), Wanted::OwnerOnly),
                (p("/var/lib/garrison-state"), Wanted::Mode(0o700)),
                (p("/sys/fs/bpf/garrison"), Wanted::Mode(0o700)),
            ],
            "a sibling with a common prefix is not inside"
        );
        assert_eq!(
            protection_plan(&files("/var/lib/garrison", "/var/lib/garrison"))[1],
            (p("/var/lib/garrison"), Wanted::Mode(0o711)),
            "the default: one directory for both"
        );
        assert_eq!(
            protection_plan(&files("/var/lib/g", "/var/lib/g/a/work"))[1..3],
            [
                (p("/var/lib/g"), Wanted::Mode(0o711)),
                (p("/var/lib/g/a"), Wanted::Traversable),
            ]
        );
    }

    #[test]
    fn inheritable_descriptors_become_close_on_exec() {
        // SAFETY: open(2) of a path literal, without O_CLOEXEC on purpose.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
        assert!(fd > 2, "{}", std::io::Error::last_os_error());
        // SAFETY: fcntl(2) on the descriptor just opened.
        let before = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(before & libc::FD_CLOEXEC, 0);
        assert!(close_on_exec_above_stdio().unwrap() >= 1);
        // SAFETY: as above; then closed once.
        let after = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        unsafe { libc::close(fd) };
        assert_eq!(after & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
