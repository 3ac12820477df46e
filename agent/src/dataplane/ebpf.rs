//! [`EbpfDataplane`]: loads the kernel programs, attaches them to a cgroup,
//! pins maps and links under a bpffs directory and applies map plans.
//!
//! Ownership of pins (see docs/architecture.md): the agent owns everything
//! under its pin directory (default `/sys/fs/bpf/garrison`): the maps
//! `GARRISON_*` and the links `link_<program>`. The pins keep the programs
//! attached and the maps alive while no agent runs; a starting agent re-adopts
//! them (maps by name through the loader, links by path) and reads the
//! programmed state back from the maps. Only [`EbpfDataplane::cleanup`]
//! (`--cleanup`) removes them.
use std::{
    collections::BTreeMap,
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps, links::FdLink, links::PinnedLink,
    },
    util::nr_cpus,
};
use garrison_common::{
    BACKEND_STATS_MAP, BackendSlot, BackendStats, CONNECTS_MAP, COUNTERS_MAP, Counter,
    PendingConnect, REVNAT_MAP, SERVICES_MAP, SLOTS_MAP, ServiceKey, ServiceValue, SlotKey,
};

use super::{
    BackendCounters, Dataplane, Pending,
    plan::{MapOp, Programmed, ProgrammedService, plan, slot_addr, vip_key},
};
use crate::vip::{VipKey, VipTable};

/// The kernel programs, built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/garrison"));

/// Program names in the object, each attached once to the cgroup.
pub const PROGRAM_NAMES: [&str; 9] = [
    "garrison_connect4",
    "garrison_connect6",
    "garrison_sendmsg4",
    "garrison_sendmsg6",
    "garrison_recvmsg4",
    "garrison_recvmsg6",
    "garrison_getpeername4",
    "garrison_getpeername6",
    "garrison_sockops",
];

const MAP_NAMES: [&str; 6] = [
    SERVICES_MAP,
    SLOTS_MAP,
    BACKEND_STATS_MAP,
    REVNAT_MAP,
    COUNTERS_MAP,
    CONNECTS_MAP,
];

/// BPF_FS_MAGIC from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where to attach and where to pin.
#[derive(Debug, Clone)]
pub struct EbpfConfig {
    /// cgroup v2 directory the programs attach to; sockets of every process in
    /// it and below are balanced.
    pub cgroup: PathBuf,
    /// Pin directory on a bpffs, created if missing.
    pub pin_dir: PathBuf,
}

/// Errors of the eBPF data path. Each says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{0}: not on a bpf filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)")]
    NotBpffs(PathBuf),
    #[error("loading the eBPF object (pins in {pin_dir}): {source}")]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("program {program}: pinning link at {path}: {reason}")]
    Pin {
        program: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error(transparent)]
    Plan(#[from] super::plan::PlanError),
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map {
        map,
        source: Box::new(source),
    }
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> EbpfError {
    let path = path.to_path_buf();
    move |source| EbpfError::Io { path, what, source }
}

/// The socket-level data path.
pub struct EbpfDataplane {
    config: EbpfConfig,
    /// Keeps the loaded object (program fds) alive.
    _ebpf: Ebpf,
    services: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    slots: BpfHashMap<MapData, SlotKey, BackendSlot>,
    stats: PerCpuArray<MapData, BackendStats>,
    counters: PerCpuArray<MapData, u64>,
    connects: BpfHashMap<MapData, u64, PendingConnect>,
    programmed: Programmed,
    /// Whether the links already existed (a re-adoption) at open.
    readopted: bool,
}

fn check_bpffs(dir: &Path) -> Result<(), EbpfError> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| EbpfError::NotBpffs(dir.into()))?;
    // SAFETY: statfs into a zeroed struct with a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io_err(dir, "statfs")(io::Error::last_os_error()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(EbpfError::NotBpffs(dir.into()));
    }
    Ok(())
}

fn link_pin(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("link_{program}"))
}

impl EbpfDataplane {
    /// Loads (or re-adopts) the programs and maps and attaches them to the
    /// configured cgroup.
    pub fn open(config: EbpfConfig) -> Result<Self, EbpfError> {
        std::fs::create_dir_all(&config.pin_dir)
            .map_err(io_err(&config.pin_dir, "creating pin directory"))?;
        check_bpffs(&config.pin_dir)?;
        let maps_pinned = MAP_NAMES.iter().all(|m| config.pin_dir.join(m).exists());
        if !maps_pinned {
            // Links without their maps would run programs over orphaned maps:
            // drop them and attach afresh.
            for program in PROGRAM_NAMES {
                let path = link_pin(&config.pin_dir, program);
                if path.exists() {
                    if let Ok(link) = PinnedLink::from_pin(&path) {
                        let _ = link.unpin();
                    } else {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_dir)
            .load(PROGRAMS)
            .map_err(|source| EbpfError::Load {
                pin_dir: config.pin_dir.clone(),
                source: Box::new(source),
            })?;
        let cgroup =
            File::open(&config.cgroup).map_err(io_err(&config.cgroup, "opening cgroup"))?;
        let mut readopted = true;
        for program in PROGRAM_NAMES {
            let path = link_pin(&config.pin_dir, program);
            if path.exists() && PinnedLink::from_pin(&path).is_ok() {
                continue;
            }
            readopted = false;
            attach_and_pin(&mut ebpf, program, &cgroup, &path)?;
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| EbpfError::Map {
                map: name,
                source: Box::new(MapError::InvalidName {
                    name: name.to_string(),
                }),
            })
        };
        let services =
            BpfHashMap::try_from(take(&mut ebpf, SERVICES_MAP)?).map_err(map_err(SERVICES_MAP))?;
        let slots =
            BpfHashMap::try_from(take(&mut ebpf, SLOTS_MAP)?).map_err(map_err(SLOTS_MAP))?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, BACKEND_STATS_MAP)?)
            .map_err(map_err(BACKEND_STATS_MAP))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, COUNTERS_MAP)?).map_err(map_err(COUNTERS_MAP))?;
        let connects =
            BpfHashMap::try_from(take(&mut ebpf, CONNECTS_MAP)?).map_err(map_err(CONNECTS_MAP))?;
        let mut dp = EbpfDataplane {
            config,
            _ebpf: ebpf,
            services,
            slots,
            stats,
            counters,
            connects,
            programmed: Programmed::default(),
            readopted,
        };
        dp.programmed = dp.read_programmed()?;
        Ok(dp)
    }

    /// True when the programs were already attached (pinned links found).
    pub fn readopted(&self) -> bool {
        self.readopted
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.config.pin_dir
    }

    /// Rebuilds the programmed state from the maps and deletes slots of dead
    /// revisions (left by an agent killed mid-update).
    fn read_programmed(&mut self) -> Result<Programmed, EbpfError> {
        let mut programmed = Programmed::default();
        let mut entries = Vec::new();
        for item in self.services.iter() {
            entries.push(item.map_err(map_err(SERVICES_MAP))?);
        }
        let mut all_slots = Vec::new();
        for item in self.slots.iter() {
            all_slots.push(item.map_err(map_err(SLOTS_MAP))?);
        }
        let live: BTreeMap<(u32, u32), ServiceKey> = entries
            .iter()
            .map(|(k, v)| ((v.service_id, v.revision), *k))
            .collect();
        for (key, value) in &entries {
            programmed.services.insert(
                *key,
                ProgrammedService {
                    value: *value,
                    slots: vec![BackendSlot::default(); value.slot_count as usize],
                    backend_ids: Vec::new(),
                },
            );
        }
        for (slot_key, slot) in all_slots {
            match live.get(&(slot_key.service_id, slot_key.revision)) {
                Some(service) => {
                    let p = programmed
                        .services
                        .get_mut(service)
                        .expect("service present");
                    if let Some(s) = p.slots.get_mut(slot_key.slot as usize) {
                        *s = slot;
                        p.backend_ids.push((slot_addr(&slot), slot.backend_id));
                    }
                }
                None => {
                    let _ = self.slots.remove(&slot_key);
                }
            }
        }
        for service in programmed.services.values_mut() {
            service.backend_ids.sort_unstable();
            service.backend_ids.dedup();
        }
        Ok(programmed)
    }

    fn execute(&mut self, op: &MapOp) -> Result<(), EbpfError> {
        match op {
            MapOp::ResetStats(id) => {
                let zero = PerCpuValues::try_from(vec![BackendStats::default(); nr_cpus_or_one()])
                    .map_err(io_err(&self.config.pin_dir, "building per-CPU zero value"))?;
                self.stats
                    .set(*id, zero, 0)
                    .map_err(map_err(BACKEND_STATS_MAP))
            }
            MapOp::PutSlot(k, v) => self.slots.insert(k, v, 0).map_err(map_err(SLOTS_MAP)),
            MapOp::PutService(k, v) => self.services.insert(k, v, 0).map_err(map_err(SERVICES_MAP)),
            MapOp::DeleteService(k) => {
                ignore_missing(self.services.remove(k)).map_err(map_err(SERVICES_MAP))
            }
            MapOp::DeleteSlot(k) => {
                ignore_missing(self.slots.remove(k)).map_err(map_err(SLOTS_MAP))
            }
        }
    }

    /// One backend's counters, summed over the CPUs.
    fn read_stats(&self, id: u32) -> Result<BackendCounters, EbpfError> {
        let per_cpu = self.stats.get(&id, 0).map_err(map_err(BACKEND_STATS_MAP))?;
        let mut c = BackendCounters::default();
        for s in per_cpu.iter() {
            c.selected += s.selected;
            c.established += s.established;
            c.failed += s.failed;
            c.connect_ns += s.connect_ns;
        }
        Ok(c)
    }

    /// Detaches the programs and removes every pin and the pin directory.
    pub fn cleanup(self) -> Result<(), EbpfError> {
        let pin_dir = self.config.pin_dir.clone();
        drop(self);
        remove_pins(&pin_dir)
    }
}

/// Removes the pins under `pin_dir` (links first, so the programs detach) and
/// the directory. Used by `--cleanup` and by tests.
pub fn remove_pins(pin_dir: &Path) -> Result<(), EbpfError> {
    for program in PROGRAM_NAMES {
        let path = link_pin(pin_dir, program);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path, "removing link pin"))?;
        }
    }
    for map in MAP_NAMES {
        let path = pin_dir.join(map);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path, "removing map pin"))?;
        }
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(pin_dir, "removing pin directory")(e)),
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime into a zeroed timespec.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn nr_cpus_or_one() -> usize {
    nr_cpus().map(|n| n.max(1)).unwrap_or(1)
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

fn attach_and_pin(
    ebpf: &mut Ebpf,
    program: &'static str,
    cgroup: &File,
    path: &Path,
) -> Result<(), EbpfError> {
    let prog_err = |source: ProgramError| EbpfError::Program {
        program,
        source: Box::new(source),
    };
    let pin_err = |e: &dyn std::fmt::Display| EbpfError::Pin {
        program,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| prog_err(ProgramError::UnexpectedProgramType))?;
    // Load, attach to the cgroup and turn the link into a pinnable FdLink; the
    // same steps for both program types aya models separately.
    macro_rules! attach_as {
        ($ty:ty) => {{
            let prog: &mut $ty = prog.try_into().map_err(prog_err)?;
            prog.load().map_err(prog_err)?;
            let id = prog
                .attach(cgroup, CgroupAttachMode::Single)
                .map_err(prog_err)?;
            let link = prog.take_link(id).map_err(prog_err)?;
            link.try_into().map_err(|e| pin_err(&e))?
        }};
    }
    let fd_link: FdLink = if program == "garrison_sockops" {
        attach_as!(SockOps)
    } else {
        attach_as!(CgroupSockAddr)
    };
    fd_link.pin(path).map_err(|e| EbpfError::Pin {
        program,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(())
}

impl Dataplane for EbpfDataplane {
    fn apply(&mut self, table: &VipTable) -> Result<(), super::DataplaneError> {
        let (ops, next) = plan(&self.programmed, table).map_err(EbpfError::from)?;
        for op in &ops {
            if let Err(e) = self.execute(op) {
                // Re-read what is really there so the next apply plans from truth.
                self.programmed = self.read_programmed().unwrap_or_default();
                return Err(e.into());
            }
        }
        self.programmed = next;
        Ok(())
    }

    fn counters(
        &self,
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, super::DataplaneError> {
        let mut out = BTreeMap::new();
        for (service, backend, id) in self.programmed.backend_ids() {
            let Some(vip) = vip_key(service) else {
                continue;
            };
            out.insert((vip, backend), self.read_stats(id)?);
        }
        Ok(out)
    }

    fn counters_failing(
        &self,
        also: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, super::DataplaneError> {
        let also: std::collections::BTreeSet<&(VipKey, SocketAddr)> = also.iter().collect();
        let mut out = BTreeMap::new();
        for (service, backend, id) in self.programmed.backend_ids() {
            let Some(vip) = vip_key(service) else {
                continue;
            };
            let c = self.read_stats(id)?;
            if c.failed > 0 || also.contains(&(vip, backend)) {
                out.insert((vip, backend), c);
            }
        }
        Ok(out)
    }

    fn counters_for(
        &self,
        keys: &[(VipKey, SocketAddr)],
    ) -> Result<BTreeMap<(VipKey, SocketAddr), BackendCounters>, super::DataplaneError> {
        let mut out = BTreeMap::new();
        for (vip, backend) in keys {
            let id = self
                .programmed
                .services
                .get(&super::plan::service_key(vip))
                .and_then(|s| s.backend_id(*backend));
            if let Some(id) = id {
                out.insert((*vip, *backend), self.read_stats(id)?);
            }
        }
        Ok(out)
    }

    fn pending(
        &mut self,
        overdue_after: std::time::Duration,
    ) -> Result<BTreeMap<(VipKey, SocketAddr), Pending>, super::DataplaneError> {
        let now = monotonic_ns();
        let mut by_id: BTreeMap<u32, Pending> = BTreeMap::new();
        let mut overdue_keys = Vec::new();
        for item in self.connects.iter() {
            let (cookie, p) = item.map_err(map_err(CONNECTS_MAP))?;
            let entry = by_id.entry(p.backend_id).or_default();
            if now.saturating_sub(p.start_ns) > overdue_after.as_nanos() as u64 {
                entry.overdue += 1;
                overdue_keys.push(cookie);
            } else {
                entry.in_flight += 1;
            }
        }
        // An overdue connect is a failure once: forget it (a late answer then
        // counts nothing).
        for cookie in overdue_keys {
            let _ = ignore_missing(self.connects.remove(&cookie));
        }
        let mut out = BTreeMap::new();
        for (service, backend, id) in self.programmed.backend_ids() {
            if let (Some(vip), Some(p)) = (vip_key(service), by_id.get(&id)) {
                out.insert((vip, backend), *p);
            }
        }
        Ok(out)
    }

    fn events(&self) -> Result<BTreeMap<&'static str, u64>, super::DataplaneError> {
        let mut out = BTreeMap::new();
        for c in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(c as u32), 0)
                .map_err(map_err(COUNTERS_MAP))?;
            out.insert(c.name(), per_cpu.iter().sum());
        }
        Ok(out)
    }
}

impl EbpfDataplane {
    /// The table the maps hold, rebuilt from the slots (weights are the
    /// backends' slot counts; backends with no slot are not visible).
    pub fn programmed_table(&self) -> VipTable {
        let mut table = VipTable::new();
        for (key, service) in &self.programmed.services {
            let Some(vip) = vip_key(key) else { continue };
            let mut weights: BTreeMap<SocketAddr, u32> = BTreeMap::new();
            for slot in &service.slots {
                *weights.entry(slot_addr(slot)).or_default() += 1;
            }
            let backends = weights
                .into_iter()
                .map(|(addr, weight)| crate::vip::Backend {
                    addr,
                    weight,
                    healthy: true,
                })
                .collect();
            let _ = table.insert(vip, backends);
        }
        table
    }
}
