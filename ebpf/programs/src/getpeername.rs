//! `cgroup/getpeername4` and `cgroup/getpeername6`: `getpeername()` on a steered
//! socket returns the VIP, not the backend.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use garrison_common::{FAMILY_V4, FAMILY_V6};

use crate::lb::reverse;

#[cgroup_sock_addr(getpeername4)]
pub fn garrison_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(getpeername6)]
pub fn garrison_getpeername6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V6)
}
