//! What the node offers (Mesos agent `/state` resources): totals from procfs
//! and statfs, the ports range and reservations from the configuration.
//! Building the JSON is pure ([`NodeResources::state_json`]).
use std::path::Path;

/// Resources reserved for one role (`[isolation.reserved]`): the type the
/// registration carries to the control.
pub use garrison_proto::Reservation;

/// The node's totals (mem and disk in MB, as Mesos).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    /// `[31000-32000]`.
    pub ports: String,
    pub reserved: Option<Reservation>,
}

/// `MemTotal` of /proc/meminfo in MB.
pub fn mem_total_mb(meminfo: &str) -> Option<f64> {
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((kb / 1024.0).floor())
}

impl NodeResources {
    /// Reads this host: online CPUs, MemTotal, the size of the filesystem
    /// holding `work_dir`.
    pub fn detect(work_dir: &Path, ports: &str, reserved: Option<Reservation>) -> NodeResources {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_mb(&m))
            .unwrap_or(0.0);
        let disk = statvfs_mb(work_dir).unwrap_or(0.0);
        NodeResources {
            cpus,
            mem,
            disk,
            ports: ports.to_string(),
            reserved,
        }
    }

    /// `resources`, `reserved_resources` and `unreserved_resources` as the
    /// Mesos agent's `/state` shows them.
    pub fn state_json(&self) -> serde_json::Value {
        let res = |cpus: f64, mem: f64, disk: f64, ports: Option<&str>| {
            let mut m = serde_json::json!({ "cpus": cpus, "mem": mem, "disk": disk });
            if let Some(p) = ports {
                m["ports"] = serde_json::Value::String(p.to_string());
            }
            m
        };
        let (reserved, unreserved) = match &self.reserved {
            Some(r) => (
                serde_json::json!({ r.role.clone(): res(r.cpus, r.mem, r.disk, None) }),
                res(
                    (self.cpus - r.cpus).max(0.0),
                    (self.mem - r.mem).max(0.0),
                    (self.disk - r.disk).max(0.0),
                    Some(&self.ports),
                ),
            ),
            None => (
                serde_json::json!({}),
                res(self.cpus, self.mem, self.disk, Some(&self.ports)),
            ),
        };
        serde_json::json!({
            "resources": res(self.cpus, self.mem, self.disk, Some(&self.ports)),
            "reserved_resources": reserved,
            "unreserved_resources": unreserved,
        })
    }
}

fn statvfs_mb(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) into a zeroed struct with a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(((st.f_blocks as f64) * (st.f_frsize as f64) / (1024.0 * 1024.0)).floor())
}

/// Parses `[LOW-HIGH]` (Mesos ports notation).
pub fn parse_ports(s: &str) -> Result<(u16, u16), &'static str> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or("expected [LOW-HIGH], e.g. [31000-32000]")?;
    let (a, b) = inner.split_once('-').ok_or("expected [LOW-HIGH]")?;
    let lo: u16 = a.trim().parse().map_err(|_| "LOW is not a port")?;
    let hi: u16 = b.trim().parse().map_err(|_| "HIGH is not a port")?;
    if lo == 0 || hi < lo {
        return Err("need 0 < LOW ≤ HIGH");
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_ports() {
        assert_eq!(
            mem_total_mb("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24000.0)
        );
        assert_eq!(parse_ports("[31000-32000]"), Ok((31000, 32000)));
        assert!(parse_ports("31000-32000").is_err());
        assert!(parse_ports("[32000-31000]").is_err());
    }

    #[test]
    fn reservations_split_the_totals() {
        let n = NodeResources {
            cpus: 8.0,
            mem: 16000.0,
            disk: 100000.0,
            ports: "[31000-32000]".into(),
            reserved: Some(Reservation {
                role: "slave_public".into(),
                cpus: 2.0,
                mem: 1000.0,
                disk: 0.0,
            }),
        };
        let j = n.state_json();
        assert_eq!(j["resources"]["ports"], "[31000-32000]");
        assert_eq!(j["reserved_resources"]["slave_public"]["cpus"], 2.0);
        assert_eq!(j["unreserved_resources"]["cpus"], 6.0);
        assert_eq!(j["unreserved_resources"]["mem"], 15000.0);
    }

    /// `[isolation.reserved]` parses into the type the registration carries.
    #[test]
    fn the_configured_reservation_is_the_wire_type() {
        let r: Reservation = toml::from_str("role = \"slave_public\"\nmem = 512\n").unwrap();
        assert_eq!(
            r,
            garrison_proto::Reservation {
                role: "slave_public".into(),
                cpus: 0.0,
                mem: 512.0,
                disk: 0.0,
            }
        );
        let typo = toml::from_str::<Reservation>("role = \"r\"\ncpu = 2\n").unwrap_err();
        assert!(typo.to_string().contains("cpu"), "{typo}");
    }
}
