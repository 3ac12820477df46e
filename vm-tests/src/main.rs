//! `garrison-vm-init`: PID 1 of the QEMU test guests.
//!
//! Mounts proc, sysfs, devtmpfs, tmpfs, bpffs at /sys/fs/bpf and cgroup2 at
//! /sys/fs/cgroup; loads the kernel modules the suite needs (from modules.dep,
//! with finit_module); runs every scenario of `garrison_tests::scenarios`;
//! prints one line `garrison-vm: result: N passed, M failed`; powers off.
mod modules;

use std::{ffi::CString, io::Write, panic, time::Instant};

const MOUNTS: &[(&str, &str)] = &[
    ("proc", "/proc"),
    ("sysfs", "/sys"),
    ("devtmpfs", "/dev"),
    ("tmpfs", "/run"),
    ("tmpfs", "/tmp"),
    ("bpf", "/sys/fs/bpf"),
    ("cgroup2", "/sys/fs/cgroup"),
];

/// Modules the scenarios may need; a missing one is reported, not fatal.
const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "nf_conntrack",
    "nf_nat",
    "nf_conntrack_netlink",
    "nfnetlink_queue",
    "ip_set",
    "ip_set_hash_ipport",
    "ip_tables",
    "iptable_raw",
    "iptable_filter",
    "iptable_nat",
    "xt_set",
    "xt_NFQUEUE",
    "xt_tcpudp",
    "ipt_REJECT",
    "nf_tables",
    "nft_compat",
    // iptables-nft turns these matches and targets into native expressions
    "nft_chain_nat",
    "nft_ct",
    "nft_queue",
    "nft_reject",
    "nft_reject_inet",
    "nft_reject_ipv4",
    "nft_reject_ipv6",
    "xt_conntrack",
    "xt_comment",
    "xt_mark",
    "ip6t_REJECT",
    "ip6_tables",
    "nf_reject_ipv6",
    // project quotas on a loop-mounted ext4 image
    "loop",
    "quota_v2",
    "quota_tree",
];

fn mount(fstype: &str, dir: &str) {
    let _ = std::fs::create_dir_all(dir);
    let c = |s: &str| CString::new(s).expect("no NUL");
    // SAFETY: mount(2) with valid C strings.
    let r = unsafe {
        libc::mount(
            c(fstype).as_ptr(),
            c(dir).as_ptr(),
            c(fstype).as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        println!(
            "garrison-vm: mount {fstype} on {dir} failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: sync and reboot(2) as PID 1.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::park();
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "garrison-vm-init is the init of the test guests; it refuses to run as PID {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    println!("garrison-vm: started");
    for (fstype, dir) in MOUNTS {
        mount(fstype, dir);
    }
    let release = kernel_release();
    println!("garrison-vm: kernel {release}");
    modules::load_all(&release, MODULES);
    // SAFETY: still single-threaded; the scenarios find the agent through this.
    unsafe {
        std::env::set_var("GARRISON_AGENT_BIN", "/bin/garrison-agent");
        std::env::set_var("GARRISON_CONTROL_BIN", "/bin/garrison-control");
        std::env::set_var("GARRISON_TEST_SERVE_BIN", "/bin/garrison-test-serve");
        // Where xtask's userland stage put iptables, ipset and ip and their
        // libraries (xtask/src/vm/userland.rs).
        std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        std::env::set_var(
            "LD_LIBRARY_PATH",
            "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib64",
        );
    }

    let (mut passed, mut failed) = (0u32, 0u32);
    for (name, scenario) in garrison_tests::scenarios::ALL {
        let start = Instant::now();
        println!("garrison-vm: test {name} ...");
        match panic::catch_unwind(scenario) {
            Ok(()) => {
                passed += 1;
                println!(
                    "garrison-vm: test {name} ... ok ({:.2} s)",
                    start.elapsed().as_secs_f64()
                );
            }
            Err(_) => {
                failed += 1;
                println!("garrison-vm: test {name} ... FAILED");
            }
        }
    }
    println!("garrison-vm: result: {passed} passed, {failed} failed");
    power_off();
}
