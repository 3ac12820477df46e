//! Garrison's kernel programs, built into one BPF object named `garrison`.
//!
//! One file per program type:
//! - [`connect`]: `cgroup/connect4`, `cgroup/connect6` — TCP and connected UDP
//! - [`sendmsg`]: `cgroup/sendmsg4`, `cgroup/sendmsg6` — unconnected UDP
//! - [`recvmsg`]: `cgroup/recvmsg4`, `cgroup/recvmsg6` — UDP replies appear from the VIP
//! - [`getpeername`]: `cgroup/getpeername4`, `cgroup/getpeername6` — peer is the VIP
//!
//! Shared pieces: [`maps`] (the pinned maps) and [`lb`] (backend choice and
//! rewriting, identical for every hook). The programs never decide policy: the
//! agent writes the selection slots, the programs pick one uniformly.
#![no_std]
#![no_main]

mod connect;
mod getpeername;
mod lb;
mod maps;
mod recvmsg;
mod sendmsg;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
