//! `cgroup/recvmsg4` and `cgroup/recvmsg6`: a UDP reply from a backend is
//! reported to the application as coming from the VIP it sent to.
use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use garrison_common::{FAMILY_V4, FAMILY_V6};

use crate::lb::reverse;

#[cgroup_sock_addr(recvmsg4)]
pub fn garrison_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V4)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn garrison_recvmsg6(ctx: SockAddrContext) -> i32 {
    reverse(&ctx, FAMILY_V6)
}
