//! `cgroup/connect4` and `cgroup/connect6`: TCP and connected UDP sockets are
//! pointed at a backend before the first packet is built.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use garrison_common::{FAMILY_V4, FAMILY_V6};

use crate::lb::steer;

#[cgroup_sock_addr(connect4)]
pub fn garrison_connect4(ctx: SockAddrContext) -> i32 {
    steer(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(connect6)]
pub fn garrison_connect6(ctx: SockAddrContext) -> i32 {
    steer(&ctx, FAMILY_V6)
}
