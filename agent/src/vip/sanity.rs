//! Which addresses may be VIPs (pure).
//!
//! A VIP captures every connect to its address and port on this host, the
//! agent's own included: a VIP on `127.0.0.1:5051` would take the agent's
//! fetch of the local Mesos state, one on the host's own address would take
//! every connection to a local service. So a VIP address in loopback,
//! link-local, multicast, unspecified or broadcast space, or equal to an
//! address of this host, is refused ([`unfit`]); the host's addresses are
//! data, collected by the caller (see `crate::sources::host`).
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as their IPv4.
use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The addresses configured on this host's interfaces.
pub type HostAddrs = BTreeSet<IpAddr>;

/// Why an address cannot be a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unfit {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// An address of one of this host's interfaces.
    HostAddress,
}

impl Unfit {
    /// Every reason, in order (for metrics that list each).
    pub const ALL: [Unfit; 6] = [
        Unfit::Loopback,
        Unfit::LinkLocal,
        Unfit::Multicast,
        Unfit::Unspecified,
        Unfit::Broadcast,
        Unfit::HostAddress,
    ];

    /// A short machine-readable name (`loopback`, `host_address`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Unfit::Loopback => "loopback",
            Unfit::LinkLocal => "link_local",
            Unfit::Multicast => "multicast",
            Unfit::Unspecified => "unspecified",
            Unfit::Broadcast => "broadcast",
            Unfit::HostAddress => "host_address",
        }
    }

    /// What the address is and what a VIP there would do.
    pub fn explain(self) -> &'static str {
        match self {
            Unfit::Loopback => {
                "a loopback address: a VIP there would capture this host's connections to its own services"
            }
            Unfit::LinkLocal => {
                "a link-local address: a VIP there would capture connections to link-local services (e.g. a metadata service)"
            }
            Unfit::Multicast => "a multicast address: a VIP cannot be multicast",
            Unfit::Unspecified => "the unspecified address: a VIP needs a real address",
            Unfit::Broadcast => "the broadcast address: a VIP cannot be broadcast",
            Unfit::HostAddress => {
                "an address of this host: a VIP there would capture connections to this host's own services"
            }
        }
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.explain())
    }
}

fn unfit_v4(ip: Ipv4Addr) -> Option<Unfit> {
    if ip.is_unspecified() {
        Some(Unfit::Unspecified)
    } else if ip.is_loopback() {
        Some(Unfit::Loopback)
    } else if ip.is_link_local() {
        Some(Unfit::LinkLocal)
    } else if ip.is_multicast() {
        Some(Unfit::Multicast)
    } else if ip.is_broadcast() {
        Some(Unfit::Broadcast)
    } else {
        None
    }
}

fn unfit_v6(ip: Ipv6Addr) -> Option<Unfit> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return unfit_v4(v4);
    }
    if ip.is_unspecified() {
        Some(Unfit::Unspecified)
    } else if ip.is_loopback() {
        Some(Unfit::Loopback)
    } else if ip.is_unicast_link_local() {
        Some(Unfit::LinkLocal)
    } else if ip.is_multicast() {
        Some(Unfit::Multicast)
    } else {
        None
    }
}

/// Why `ip` cannot be a VIP on a host with addresses `host`; `None` if it can.
pub fn unfit(ip: IpAddr, host: &HostAddrs) -> Option<Unfit> {
    let class = match ip {
        IpAddr::V4(v4) => unfit_v4(v4),
        IpAddr::V6(v6) => unfit_v6(v6),
    };
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    class.or_else(|| {
        (host.contains(&ip) || mapped.is_some_and(|m| host.contains(&m)))
            .then_some(Unfit::HostAddress)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostAddrs {
        ["10.0.0.5", "fd00::5", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    }

    fn judge(s: &str) -> Option<Unfit> {
        unfit(s.parse().unwrap(), &host())
    }

    #[test]
    fn reserved_spaces_are_refused_in_both_families() {
        for (ip, why) in [
            ("127.0.0.1", Unfit::Loopback),
            ("127.255.0.9", Unfit::Loopback),
            ("::1", Unfit::Loopback),
            ("169.254.169.254", Unfit::LinkLocal),
            ("169.254.0.1", Unfit::LinkLocal),
            ("fe80::1", Unfit::LinkLocal),
            ("febf::ffff", Unfit::LinkLocal),
            ("224.0.0.1", Unfit::Multicast),
            ("239.255.255.250", Unfit::Multicast),
            ("ff02::1", Unfit::Multicast),
            ("ff0e::1234", Unfit::Multicast),
            ("0.0.0.0", Unfit::Unspecified),
            ("::", Unfit::Unspecified),
            ("255.255.255.255", Unfit::Broadcast),
            ("::ffff:127.0.0.1", Unfit::Loopback),
            ("::ffff:169.254.1.1", Unfit::LinkLocal),
        ] {
            assert_eq!(judge(ip), Some(why), "{ip}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused() {
        assert_eq!(judge("10.0.0.5"), Some(Unfit::HostAddress));
        assert_eq!(judge("fd00::5"), Some(Unfit::HostAddress));
        assert_eq!(judge("::ffff:10.0.0.5"), Some(Unfit::HostAddress));
        // Loopback is named as loopback, not as a host address.
        assert_eq!(judge("127.0.0.1"), Some(Unfit::Loopback));
    }

    #[test]
    fn ordinary_addresses_are_accepted() {
        for ip in [
            "11.1.2.3",
            "10.0.0.6",
            "1.2.3.4",
            "223.255.255.255",
            "169.253.255.255",
            "169.255.0.1",
            "128.0.0.1",
            "fd00::6",
            "fec0::1",
            "2001:db8::1",
            "::ffff:11.1.2.3",
        ] {
            assert_eq!(judge(ip), None, "{ip}");
        }
        assert_eq!(
            unfit("10.0.0.5".parse().unwrap(), &HostAddrs::new()),
            None,
            "not a host address on another host"
        );
    }

    #[test]
    fn every_reason_has_a_distinct_name() {
        let names: BTreeSet<_> = Unfit::ALL.iter().map(|u| u.as_str()).collect();
        assert_eq!(names.len(), Unfit::ALL.len());
    }
}
