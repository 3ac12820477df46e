//! This host's own addresses (an effect: `getifaddrs(3)` in the agent's
//! network namespace), for [`crate::vip::sanity`]: a VIP may not take an
//! address of the host it runs on. Read again at every table rebuild and on
//! a timer, so an address added later is refused from then on.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::vip::sanity::HostAddrs;

/// Every IPv4 and IPv6 address on every interface, up or down.
pub fn host_addresses() -> std::io::Result<HostAddrs> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; on success the list
    // is ours until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = HostAddrs::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if let Some(ip) = ip_of(ifa.ifa_addr) {
            out.insert(ip);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP in a sockaddr of family AF_INET or AF_INET6.
fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: a non-null ifa_addr points at a sockaddr whose family says
    // which larger structure it is; each is read only for its own family.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_hosts_addresses() {
        let addrs = host_addresses().expect("getifaddrs");
        assert!(
            addrs.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
