//! `cgroup/sendmsg4` and `cgroup/sendmsg6`: each datagram of an unconnected UDP
//! socket sent to a VIP goes to the socket's backend.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use garrison_common::{FAMILY_V4, FAMILY_V6};

use crate::lb::steer;

#[cgroup_sock_addr(sendmsg4)]
pub fn garrison_sendmsg4(ctx: SockAddrContext) -> i32 {
    steer(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn garrison_sendmsg6(ctx: SockAddrContext) -> i32 {
    steer(&ctx, FAMILY_V6)
}
