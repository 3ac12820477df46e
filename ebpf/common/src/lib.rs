//! Types shared by Garrison's kernel programs (`garrison-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, has explicit padding fields (so no byte of a
//! map key is ever uninitialised) and documents the byte order of each field.
//!
//! **Byte order rule**: addresses and ports are stored exactly as the kernel
//! hands them to a `cgroup/connect*` program, i.e. in **network byte order**
//! (big endian) in memory. Conversion happens in one place, the constructors in
//! this crate ([`IpAddrBytes::from_ip`], [`port_to_net`], [`port_from_net`]);
//! nothing else converts.
//!
//! Map layout (see docs/architecture.md):
//! - [`SERVICES_MAP`]: [`ServiceKey`] → [`ServiceValue`]
//! - [`SLOTS_MAP`]: [`SlotKey`] → [`BackendSlot`]
//! - [`BACKEND_STATS_MAP`]: per-CPU array indexed by backend id → [`BackendStats`]
//! - [`REVNAT_MAP`]: LRU [`RevNatKey`] → [`RevNatValue`]
//! - [`COUNTERS_MAP`]: per-CPU array indexed by [`Counter`] → `u64`
//! - [`CONNECTS_MAP`]: LRU socket cookie → [`PendingConnect`] (TCP connects in flight)
#![no_std]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Pinned name of the service map.
pub const SERVICES_MAP: &str = "GARRISON_SERVICES";
/// Pinned name of the backend slot map.
pub const SLOTS_MAP: &str = "GARRISON_SLOTS";
/// Pinned name of the per-backend, per-CPU statistics array.
pub const BACKEND_STATS_MAP: &str = "GARRISON_BACKEND_STATS";
/// Pinned name of the reverse-translation LRU map.
pub const REVNAT_MAP: &str = "GARRISON_REVNAT";
/// Pinned name of the per-CPU error/event counters.
pub const COUNTERS_MAP: &str = "GARRISON_COUNTERS";
/// Pinned name of the in-flight TCP connects (LRU, by socket cookie).
pub const CONNECTS_MAP: &str = "GARRISON_CONNECTS";
/// Capacity of the in-flight connect map.
pub const MAX_CONNECTS: u32 = 65_536;

/// Capacity of the service map (VIP:port:protocol entries).
pub const MAX_SERVICES: u32 = 65_536;
/// Capacity of the slot map (sum over services of their selection slots, for
/// two revisions during an update).
pub const MAX_SLOTS: u32 = 524_288;
/// Capacity of the backend statistics array; backend ids (one per VIP and
/// backend pair) are below this.
pub const MAX_BACKENDS: u32 = 262_144;
/// Capacity of the reverse-translation map.
pub const MAX_REVNAT: u32 = 262_144;

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;
/// Address family tag used in keys: IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family tag used in keys: IPv6.
pub const FAMILY_V6: u8 = 6;

/// An IPv4 or IPv6 address as four 32-bit words in **network byte order**,
/// exactly as in `bpf_sock_addr.user_ip6`. An IPv4 address occupies word 0
/// (as `user_ip4`) and words 1..3 are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpAddrBytes(pub [u32; 4]);

impl IpAddrBytes {
    /// Converts an address into the in-map representation.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self([u32::from_ne_bytes(v4.octets()), 0, 0, 0]),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                Self([w(0), w(4), w(8), w(12)])
            }
        }
    }

    /// Converts back, given the family tag ([`FAMILY_V4`] or [`FAMILY_V6`]).
    pub fn to_ip(self, family: u8) -> IpAddr {
        if family == FAMILY_V4 {
            IpAddr::V4(Ipv4Addr::from(self.0[0].to_ne_bytes()))
        } else {
            let mut o = [0u8; 16];
            for (i, w) in self.0.iter().enumerate() {
                o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
    }
}

/// Family tag of an address.
pub fn family_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// Host-order port → the network-order value stored in maps.
pub const fn port_to_net(port: u16) -> u16 {
    port.to_be()
}

/// Network-order port from a map → host order.
pub const fn port_from_net(port: u16) -> u16 {
    u16::from_be(port)
}

/// Key of [`SERVICES_MAP`]: one virtual IP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// VIP address, network byte order.
    pub addr: IpAddrBytes,
    /// VIP port, network byte order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// Value of [`SERVICES_MAP`]. Written by the agent in one map update, after the
/// slots of `revision` are in place (the "flip").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Agent-assigned id, stable for the life of the service; part of [`SlotKey`].
    pub service_id: u32,
    /// Revision whose slots are live. Host byte order.
    pub revision: u32,
    /// Number of selection slots of this revision. 0 = no healthy backend:
    /// connects are refused with `ECONNREFUSED`. Host byte order.
    pub slot_count: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Key of [`SLOTS_MAP`]: one selection slot of one revision of a service.
/// All fields host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    pub service_id: u32,
    pub revision: u32,
    /// 0..slot_count. A backend of weight w fills w slots (after the agent
    /// reduces the weights), so a uniform slot choice is a weighted choice.
    pub slot: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Value of [`SLOTS_MAP`]: the backend a slot points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendSlot {
    /// Backend address, network byte order.
    pub addr: IpAddrBytes,
    /// Backend port, network byte order.
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; always the service's family.
    pub family: u8,
    /// Reserved, zero.
    pub _pad: u8,
    /// Index into [`BACKEND_STATS_MAP`]. Host byte order.
    pub backend_id: u32,
}

/// Per-backend statistics (per CPU; the agent sums the CPUs). Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Connections (TCP, connected UDP) and unconnected UDP sends steered to this backend.
    pub selected: u64,
    /// TCP connects that reached ESTABLISHED (sockops).
    pub established: u64,
    /// TCP connects that went from SYN_SENT to CLOSE: refused, timed out, or
    /// abandoned by the application before an answer (sockops).
    pub failed: u64,
    /// Sum of connect → ESTABLISHED times of `established`, in nanoseconds.
    pub connect_ns: u64,
}

/// Value of [`CONNECTS_MAP`]: a TCP connect steered to a backend, not yet
/// answered. Key: the socket cookie. Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingConnect {
    /// `bpf_ktime_get_ns()` at connect (CLOCK_MONOTONIC).
    pub start_ns: u64,
    pub backend_id: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Key of [`REVNAT_MAP`]: a socket (by cookie) and the backend it was steered to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevNatKey {
    /// `bpf_get_socket_cookie()`.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub addr: IpAddrBytes,
    /// Backend port, network byte order.
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// Reserved, zero.
    pub _pad: [u8; 5],
}

/// Value of [`REVNAT_MAP`]: the VIP the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNatValue {
    /// VIP address, network byte order.
    pub addr: IpAddrBytes,
    /// VIP port, network byte order.
    pub port: u16,
    /// Reserved, zero.
    pub _pad: [u8; 6],
}

/// Indices of [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A connect/sendmsg to a VIP was steered to a backend.
    Steered = 0,
    /// A connect/sendmsg to a VIP with no backend was refused (ECONNREFUSED).
    NoBackend = 1,
    /// A slot named by the service entry was missing (an update raced and the
    /// retry also missed); the connect was refused.
    SlotMiss = 2,
    /// The reverse-translation entry could not be stored (map full/error).
    RevNatStoreFailed = 3,
    /// A recvmsg/getpeername address was translated back to the VIP.
    RevNatApplied = 4,
    /// The backend statistics slot was missing (backend id out of range).
    StatsMiss = 5,
    /// An in-flight connect could not be recorded (its outcome goes uncounted).
    PendingStoreFailed = 6,
    /// A steered TCP connect failed (any backend): the agent's cue to read
    /// every backend's counters.
    ConnectFailed = 7,
}

/// Number of [`Counter`] values ([`COUNTERS_MAP`] size).
pub const COUNTER_COUNT: u32 = 8;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::Steered,
        Counter::NoBackend,
        Counter::SlotMiss,
        Counter::RevNatStoreFailed,
        Counter::RevNatApplied,
        Counter::StatsMiss,
        Counter::PendingStoreFailed,
        Counter::ConnectFailed,
    ];

    /// Stable metric name.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Steered => "steered",
            Counter::NoBackend => "no_backend",
            Counter::SlotMiss => "slot_miss",
            Counter::RevNatStoreFailed => "revnat_store_failed",
            Counter::RevNatApplied => "revnat_applied",
            Counter::StatsMiss => "stats_miss",
            Counter::PendingStoreFailed => "pending_store_failed",
            Counter::ConnectFailed => "connect_failed",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are #[repr(C)], Copy, made of integers with explicit
    // padding fields, so every bit pattern is valid and none is uninitialised.
    unsafe impl aya::Pod for IpAddrBytes {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for BackendSlot {}
    unsafe impl aya::Pod for BackendStats {}
    unsafe impl aya::Pod for RevNatKey {}
    unsafe impl aya::Pod for RevNatValue {}
    unsafe impl aya::Pod for PendingConnect {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 20);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<SlotKey>(), 16);
        assert_eq!(size_of::<BackendSlot>(), 24);
        assert_eq!(size_of::<RevNatKey>(), 32);
        assert_eq!(size_of::<RevNatValue>(), 24);
    }

    #[test]
    fn ipv4_is_network_order_in_word_zero() {
        let a = IpAddrBytes::from_ip("11.1.2.3".parse().unwrap());
        assert_eq!(a.0[0].to_ne_bytes(), [11, 1, 2, 3]);
        assert_eq!(a.0[1..], [0, 0, 0]);
        assert_eq!(a.to_ip(FAMILY_V4), "11.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ipv6_round_trips() {
        let ip: IpAddr = "fd00::1:2".parse().unwrap();
        let a = IpAddrBytes::from_ip(ip);
        assert_eq!(a.0[0].to_ne_bytes(), [0xfd, 0, 0, 0]);
        assert_eq!(a.to_ip(FAMILY_V6), ip);
    }

    #[test]
    fn ports_are_big_endian_in_memory() {
        assert_eq!(port_to_net(80).to_ne_bytes(), [0, 80]);
        assert_eq!(port_from_net(port_to_net(8080)), 8080);
    }
}
