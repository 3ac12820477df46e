//! Parsing the packets NFQUEUE hands over (pure): the IPv4 or IPv6 header and
//! the TCP ports of a SYN. The rules queue only pure SYNs to a VIP, so anything
//! else is reported as [`Parsed::NotTcp`] and accepted unchanged.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::ctnetlink::Flow;

/// What a queued packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A TCP segment of `flow` (the rules make it a pure SYN).
    Tcp(Flow),
    /// Not TCP, truncated, or an IPv6 packet with extension headers.
    NotTcp,
}

const IPPROTO_TCP: u8 = 6;

fn port(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn tcp_ports(l4: &[u8]) -> Option<(u16, u16)> {
    Some((port(l4, 0)?, port(l4, 2)?))
}

/// Parses an IP packet as the queue delivers it (starting at the IP header).
/// The TCP sequence number of an IPv4 or IPv6 TCP packet (a SYN's ISN).
pub fn tcp_seq(p: &[u8]) -> Option<u32> {
    let l4 = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            p.get(ihl..)?
        }
        6 => p.get(40..)?,
        _ => return None,
    };
    Some(u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?))
}

pub fn parse(packet: &[u8]) -> Parsed {
    parse_inner(packet).unwrap_or(Parsed::NotTcp)
}

fn parse_inner(p: &[u8]) -> Option<Parsed> {
    let (src, dst, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if ihl < 20 || p.len() < ihl || p[9] != IPPROTO_TCP {
                return Some(Parsed::NotTcp);
            }
            let src: [u8; 4] = p[12..16].try_into().ok()?;
            let dst: [u8; 4] = p[16..20].try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                &p[ihl..],
            )
        }
        6 => {
            if p.len() < 40 || p[6] != IPPROTO_TCP {
                return Some(Parsed::NotTcp);
            }
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                &p[40..],
            )
        }
        _ => return Some(Parsed::NotTcp),
    };
    let (sport, dport) = tcp_ports(l4)?;
    Some(Parsed::Tcp(Flow {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_syn() -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[11, 1, 2, 3]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[33] = 0x02; // SYN
        p
    }

    #[test]
    fn the_syn_sequence_number_is_read() {
        let mut p = v4_syn();
        p[24..28].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        assert_eq!(tcp_seq(&p), Some(0xdead_beef));
        assert_eq!(tcp_seq(&p[..22]), None);
    }

    #[test]
    fn ipv4_syn_gives_the_flow() {
        assert_eq!(
            parse(&v4_syn()),
            Parsed::Tcp(Flow {
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "11.1.2.3:80".parse().unwrap(),
            })
        );
    }

    #[test]
    fn ipv6_syn_gives_the_flow() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = 6;
        p[23] = 1; // ::1
        p[24] = 0xfd;
        p[39] = 2;
        p[40..42].copy_from_slice(&1234u16.to_be_bytes());
        p[42..44].copy_from_slice(&443u16.to_be_bytes());
        let Parsed::Tcp(f) = parse(&p) else {
            panic!("not parsed")
        };
        assert_eq!(f.src, "[::1]:1234".parse().unwrap());
        assert_eq!(f.dst, "[fd00::2]:443".parse().unwrap());
    }

    #[test]
    fn other_or_short_packets_are_not_tcp() {
        let mut udp = v4_syn();
        udp[9] = 17;
        assert_eq!(parse(&udp), Parsed::NotTcp);
        assert_eq!(parse(&[]), Parsed::NotTcp);
        assert_eq!(parse(&v4_syn()[..21]), Parsed::NotTcp);
        let mut bad_ihl = v4_syn();
        bad_ihl[0] = 0x4f; // 60-byte header in a 40-byte packet
        assert_eq!(parse(&bad_ihl), Parsed::NotTcp);
    }
}
