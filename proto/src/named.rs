//! Named VIPs: `/name:port` labels become DNS names
//! `<name>.<framework>.l4lb.thisdcos.directory` and stable addresses in a
//! configured range (default 11.0.0.0/8, as DC/OS).
//!
//! - [`sanitize_label`]: DC/OS label rules (lowercase; `-`, `_`, `.` → `-`;
//!   other characters dropped; edges trimmed; at most 63 characters).
//! - [`NamedVipAllocator`]: deterministic hash of the name, then linear probing
//!   on collision; allocations kept (and persisted by the caller through
//!   [`NamedVipAllocator::to_json`] / [`NamedVipAllocator::from_json`]) so a
//!   name keeps its address across restarts.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    str::FromStr,
};

/// The DNS zone of named VIPs.
pub const L4LB_ZONE: &str = "l4lb.thisdcos.directory";

/// Sanitizes one DNS label as DC/OS does.
pub fn sanitize_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            'a'..='z' | '0'..='9' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            '-' | '_' | '.' => out.push('-'),
            _ => {}
        }
    }
    let trimmed = out.trim_matches('-');
    let mut label: String = trimmed.chars().take(63).collect();
    while label.ends_with('-') {
        label.pop();
    }
    label
}

/// The DNS name of a named VIP, or `None` when a label sanitizes to nothing.
pub fn dns_name(name: &str, framework: &str, zone: &str) -> Option<String> {
    let n = sanitize_label(name.trim_start_matches('/'));
    let f = sanitize_label(framework);
    (!n.is_empty() && !f.is_empty()).then(|| format!("{n}.{f}.{zone}"))
}

/// An IPv4 range in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

/// Why a range is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("{0:?} is not IPv4 CIDR (e.g. 11.0.0.0/8)")]
    Syntax(String),
    #[error("prefix /{0} leaves fewer than 4 addresses (use /30 or shorter)")]
    TooSmall(u8),
    #[error("{0} has host bits set for /{1}")]
    HostBits(Ipv4Addr, u8),
}

impl FromStr for Ipv4Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| RangeError::Syntax(s.into()))?;
        let base: Ipv4Addr = ip.parse().map_err(|_| RangeError::Syntax(s.into()))?;
        let prefix: u8 = prefix.parse().map_err(|_| RangeError::Syntax(s.into()))?;
        if prefix > 30 {
            return Err(RangeError::TooSmall(prefix));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        if u32::from(base) & !mask != 0 {
            return Err(RangeError::HostBits(base, prefix));
        }
        Ok(Ipv4Range { base, prefix })
    }
}

impl std::fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl Ipv4Range {
    fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// Usable host addresses (network and broadcast excluded).
    pub fn usable(&self) -> u64 {
        self.size() - 2
    }

    fn nth_usable(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1 + n as u32)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == u32::from(self.base)
    }
}

/// The range has no free address left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("named VIP {name}: no free address left in {range}")]
pub struct RangeExhausted {
    pub name: String,
    pub range: Ipv4Range,
}

/// Name → address allocations in one range.
#[derive(Debug, Clone)]
pub struct NamedVipAllocator {
    range: Ipv4Range,
    by_name: BTreeMap<String, Ipv4Addr>,
    used: BTreeSet<Ipv4Addr>,
}

impl NamedVipAllocator {
    pub fn new(range: Ipv4Range) -> Self {
        NamedVipAllocator {
            range,
            by_name: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    /// The address of `name` (a DNS name), allocating one if new.
    pub fn address(&mut self, name: &str) -> Result<Ipv4Addr, RangeExhausted> {
        if let Some(ip) = self.by_name.get(name) {
            return Ok(*ip);
        }
        let usable = self.range.usable();
        if self.used.len() as u64 >= usable {
            return Err(RangeExhausted {
                name: name.to_string(),
                range: self.range,
            });
        }
        let start = crate::digest::fnv1a(name.as_bytes()) % usable;
        // Linear probing; terminates because at least one address is free.
        let mut n = start;
        loop {
            let ip = self.range.nth_usable(n);
            if !self.used.contains(&ip) {
                self.by_name.insert(name.to_string(), ip);
                self.used.insert(ip);
                return Ok(ip);
            }
            n = (n + 1) % usable;
        }
    }

    /// Current allocations.
    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.by_name
    }

    /// Serialises allocations for the state file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "range": self.range.to_string(),
            "allocations": self.by_name,
        }))
        .expect("serialisable")
    }

    /// Restores allocations from a state file; entries outside the range (the
    /// range changed) are dropped and reported.
    pub fn from_json(
        range: Ipv4Range,
        text: &str,
    ) -> Result<(Self, Vec<String>), serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct File {
            allocations: BTreeMap<String, Ipv4Addr>,
        }
        let file: File = serde_json::from_str(text)?;
        let mut alloc = NamedVipAllocator::new(range);
        let mut dropped = Vec::new();
        for (name, ip) in file.allocations {
            if range.contains(ip) && !alloc.used.contains(&ip) {
                alloc.used.insert(ip);
                alloc.by_name.insert(name, ip);
            } else {
                dropped.push(format!("{name} -> {ip}"));
            }
        }
        Ok((alloc, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_dcos_rules() {
        assert_eq!(sanitize_label("Merp"), "merp");
        assert_eq!(sanitize_label("my_app.v2"), "my-app-v2");
        assert_eq!(sanitize_label("--web!!--"), "web");
        assert_eq!(sanitize_label("a b/c"), "abc");
        assert_eq!(sanitize_label(&"x".repeat(80)).len(), 63);
        assert_eq!(sanitize_label("!!!"), "");
    }

    #[test]
    fn dns_names() {
        assert_eq!(
            dns_name("/web", "marathon", L4LB_ZONE).unwrap(),
            "web.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(
            dns_name("merp", "Marathon", L4LB_ZONE).unwrap(),
            "merp.marathon.l4lb.thisdcos.directory"
        );
        assert_eq!(dns_name("/!!", "marathon", L4LB_ZONE), None);
    }

    #[test]
    fn ranges_parse_and_reject() {
        let r: Ipv4Range = "11.0.0.0/8".parse().unwrap();
        assert_eq!(r.usable(), (1 << 24) - 2);
        assert!(r.contains("11.2.3.4".parse().unwrap()));
        assert!(!r.contains("12.0.0.1".parse().unwrap()));
        assert!(matches!(
            "11.0.0.1/8".parse::<Ipv4Range>(),
            Err(RangeError::HostBits(..))
        ));
        assert!(matches!(
            "11.0.0.0/31".parse::<Ipv4Range>(),
            Err(RangeError::TooSmall(31))
        ));
        assert!(matches!(
            "eleven".parse::<Ipv4Range>(),
            Err(RangeError::Syntax(_))
        ));
    }

    #[test]
    fn allocation_is_deterministic_stable_and_probes() {
        let range: Ipv4Range = "11.0.0.0/8".parse().unwrap();
        let mut a = NamedVipAllocator::new(range);
        let mut b = NamedVipAllocator::new(range);
        let x = a.address("web.marathon.l4lb.thisdcos.directory").unwrap();
        assert_eq!(
            x,
            b.address("web.marathon.l4lb.thisdcos.directory").unwrap(),
            "deterministic"
        );
        assert_eq!(
            x,
            a.address("web.marathon.l4lb.thisdcos.directory").unwrap(),
            "stable"
        );
        assert!(range.contains(x));
        // A tiny range forces collisions: every name still gets its own address.
        let small: Ipv4Range = "11.0.0.0/29".parse().unwrap();
        let mut s = NamedVipAllocator::new(small);
        let got: BTreeSet<Ipv4Addr> = (0..6)
            .map(|i| s.address(&format!("n{i}")).unwrap())
            .collect();
        assert_eq!(got.len(), 6);
        assert!(
            got.iter()
                .all(|ip| small.contains(*ip) && ip.octets()[3] != 0 && ip.octets()[3] != 7)
        );
        let err = s.address("one-too-many").unwrap_err();
        assert!(err.to_string().contains("no free address"), "{err}");
        assert_eq!(
            s.address("n3").unwrap(),
            *s.allocations().get("n3").unwrap(),
            "old names still resolve"
        );
    }

    #[test]
    fn allocations_survive_a_round_trip_and_range_changes_drop_strays() {
        let range: Ipv4Range = "11.0.0.0/8".parse().unwrap();
        let mut a = NamedVipAllocator::new(range);
        let ip = a.address("db.marathon.l4lb.thisdcos.directory").unwrap();
        let (b, dropped) = NamedVipAllocator::from_json(range, &a.to_json()).unwrap();
        assert!(dropped.is_empty());
        assert_eq!(
            b.allocations().get("db.marathon.l4lb.thisdcos.directory"),
            Some(&ip)
        );
        let other: Ipv4Range = "12.0.0.0/8".parse().unwrap();
        let (c, dropped) = NamedVipAllocator::from_json(other, &a.to_json()).unwrap();
        assert!(c.allocations().is_empty());
        assert_eq!(dropped.len(), 1);
    }
}
