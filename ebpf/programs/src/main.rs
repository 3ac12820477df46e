//! Garrison's kernel programs, built into one BPF object named `garrison`.
//!
//! One file per program type:
//! - [`connect`]: `cgroup/connect4`, `cgroup/connect6` — TCP and connected UDP
//! - [`sendmsg`]: `cgroup/sendmsg4`, `cgroup/sendmsg6` — unconnected UDP
//! - [`recvmsg`]: `cgroup/recvmsg4`, `cgroup/recvmsg6` — UDP replies appear from the VIP
//! - [`getpeername`]: `cgroup/getpeername4`, `cgroup/getpeername6` — peer is the VIP
//! - [`sockops`]: `sockops` — outcomes of steered TCP connects (passive health)
//!
//! Shared pieces: [`maps`] (the pinned maps) and [`lb`] (backend choice and
//! rewriting, identical for every hook). The programs never decide policy: the
//! agent writes the selection slots, the programs pick one uniformly.
//!
//! On the host (`cargo clippy --workspace`) this compiles as an ordinary
//! program with an empty `main`, so the code is linted without a BPF target.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

mod connect;
mod getpeername;
mod lb;
mod maps;
mod recvmsg;
mod sendmsg;
mod sockops;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
