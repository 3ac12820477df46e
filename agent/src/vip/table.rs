//! [`VipTable`]: every VIP (address, port, protocol) with its weighted backends.
use std::{collections::BTreeMap, fmt, net::SocketAddr, str::FromStr};

/// L4 protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower-case name as used in the VIP file and API.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => garrison_common::PROTO_TCP,
            Protocol::Udp => garrison_common::PROTO_UDP,
        }
    }

    /// From an IANA protocol number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            garrison_common::PROTO_TCP => Some(Protocol::Tcp),
            garrison_common::PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = VipTableError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(VipTableError::UnknownProtocol(s.to_string())),
        }
    }
}

/// One virtual IP: address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKey {
    pub addr: SocketAddr,
    pub protocol: Protocol,
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// One backend of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Relative share of new connections; 0 = drained (never chosen).
    pub weight: u32,
    /// An unhealthy backend is never chosen, whatever its weight.
    pub healthy: bool,
}

impl Backend {
    /// A healthy backend of weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Backend {
            addr,
            weight: 1,
            healthy: true,
        }
    }

    /// Weight with health applied: what selection actually uses.
    pub fn effective_weight(&self) -> u32 {
        if self.healthy { self.weight } else { 0 }
    }
}

/// Why a VIP or backend was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipTableError {
    #[error("unknown protocol {0:?} (expected \"tcp\" or \"udp\")")]
    UnknownProtocol(String),
    #[error("backend {backend} is IPv{backend_family} but VIP {vip} is IPv{vip_family}")]
    FamilyMismatch {
        vip: SocketAddr,
        backend: SocketAddr,
        vip_family: u8,
        backend_family: u8,
    },
    #[error("port 0 is not a valid {what} port ({addr})")]
    PortZero {
        what: &'static str,
        addr: SocketAddr,
    },
    #[error("backend {0} is listed twice")]
    DuplicateBackend(SocketAddr),
    #[error("VIP {0} is listed twice")]
    DuplicateVip(VipKey),
    #[error("VIP address {0} is unspecified, multicast or broadcast")]
    BadVipAddress(SocketAddr),
}

fn family(addr: &SocketAddr) -> u8 {
    if addr.is_ipv4() { 4 } else { 6 }
}

/// The desired VIP state: VIP → backends, kept sorted so two equal tables
/// compare and serialise equally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VipTable {
    vips: BTreeMap<VipKey, Vec<Backend>>,
    /// DNS names of named VIPs (`web.marathon.l4lb.thisdcos.directory`).
    names: BTreeMap<VipKey, String>,
}

impl VipTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a VIP with its backends after validating them; a VIP already present
    /// is an error (merging is the caller's decision, not the table's).
    pub fn insert(&mut self, vip: VipKey, mut backends: Vec<Backend>) -> Result<(), VipTableError> {
        validate_vip(&vip)?;
        for b in &backends {
            validate_backend(&vip, b)?;
        }
        backends.sort();
        if let Some(w) = backends.windows(2).find(|w| w[0].addr == w[1].addr) {
            return Err(VipTableError::DuplicateBackend(w[0].addr));
        }
        if self.vips.contains_key(&vip) {
            return Err(VipTableError::DuplicateVip(vip));
        }
        self.vips.insert(vip, backends);
        Ok(())
    }

    /// Gives a VIP present in the table its DNS name.
    pub fn set_name(&mut self, vip: VipKey, name: String) {
        if self.vips.contains_key(&vip) {
            self.names.insert(vip, name);
        }
    }

    /// The DNS name of a named VIP.
    pub fn name(&self, vip: &VipKey) -> Option<&str> {
        self.names.get(vip).map(String::as_str)
    }

    /// Backends of one VIP.
    pub fn get(&self, vip: &VipKey) -> Option<&[Backend]> {
        self.vips.get(vip).map(Vec::as_slice)
    }

    /// All VIPs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&VipKey, &[Backend])> {
        self.vips.iter().map(|(k, v)| (k, v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.vips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vips.is_empty()
    }
}

fn validate_vip(vip: &VipKey) -> Result<(), VipTableError> {
    let ip = vip.addr.ip();
    let bad_v4 = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || bad_v4 {
        return Err(VipTableError::BadVipAddress(vip.addr));
    }
    if vip.addr.port() == 0 {
        return Err(VipTableError::PortZero {
            what: "VIP",
            addr: vip.addr,
        });
    }
    Ok(())
}

fn validate_backend(vip: &VipKey, b: &Backend) -> Result<(), VipTableError> {
    if family(&vip.addr) != family(&b.addr) {
        return Err(VipTableError::FamilyMismatch {
            vip: vip.addr,
            backend: b.addr,
            vip_family: family(&vip.addr),
            backend_family: family(&b.addr),
        });
    }
    if b.addr.port() == 0 {
        return Err(VipTableError::PortZero {
            what: "backend",
            addr: b.addr,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> VipKey {
        VipKey {
            addr: s.parse().unwrap(),
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn sorts_backends_and_rejects_duplicates() {
        let mut t = VipTable::new();
        let b = |s: &str| Backend::new(s.parse().unwrap());
        t.insert(key("11.0.0.1:80"), vec![b("10.0.0.3:80"), b("10.0.0.2:80")])
            .unwrap();
        let got: Vec<_> = t
            .get(&key("11.0.0.1:80"))
            .unwrap()
            .iter()
            .map(|b| b.addr.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2:80", "10.0.0.3:80"]);
        assert_eq!(
            t.insert(key("11.0.0.2:80"), vec![b("10.0.0.2:80"), b("10.0.0.2:80")]),
            Err(VipTableError::DuplicateBackend(
                "10.0.0.2:80".parse().unwrap()
            ))
        );
        assert!(matches!(
            t.insert(key("11.0.0.1:80"), vec![]),
            Err(VipTableError::DuplicateVip(_))
        ));
    }

    #[test]
    fn rejects_mixed_families_and_port_zero() {
        let mut t = VipTable::new();
        let err = t
            .insert(
                key("11.0.0.1:80"),
                vec![Backend::new("[fd00::1]:80".parse().unwrap())],
            )
            .unwrap_err();
        assert!(matches!(err, VipTableError::FamilyMismatch { .. }), "{err}");
        assert!(matches!(
            t.insert(key("11.0.0.1:0"), vec![]),
            Err(VipTableError::PortZero { .. })
        ));
        assert!(matches!(
            t.insert(key("0.0.0.0:80"), vec![]),
            Err(VipTableError::BadVipAddress(_))
        ));
        assert!(t.is_empty());
    }

    #[test]
    fn unhealthy_backends_have_no_weight() {
        let mut b = Backend::new("10.0.0.1:1".parse().unwrap());
        b.weight = 5;
        assert_eq!(b.effective_weight(), 5);
        b.healthy = false;
        assert_eq!(b.effective_weight(), 0);
    }
}
