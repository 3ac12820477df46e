//! Test scenarios that run both on the host (tests/tests/*.rs) and in the QEMU
//! guests (vm-tests). Each is a plain function that panics on failure.
use std::net::{SocketAddr, TcpListener};

use garrison_agent::{
    dataplane::{Dataplane, EbpfConfig, EbpfDataplane},
    vip::{Backend, Protocol, VipKey, VipTable},
};

use crate::{NetNsGuard, TestCgroup, TestPins, ask_name, require_root, serve_tcp_name};

/// Every scenario by name, for the guest runner.
pub const ALL: &[(&str, fn())] = &[(
    "tcp_vip_reaches_backend_and_other_addresses_are_untouched",
    tcp_vip_reaches_backend_and_other_addresses_are_untouched,
)];

/// A TCP connect to a VIP reaches its backend; other addresses are untouched.
pub fn tcp_vip_reaches_backend_and_other_addresses_are_untouched() {
    require_root();
    let cg = TestCgroup::new("connect").expect("test cgroup");
    let pins = TestPins::new("connect").expect("pin dir");
    let _ns = NetNsGuard::enter_new().expect("netns");
    let backend = serve_tcp_name(TcpListener::bind("127.0.0.1:0").unwrap(), "backend-1");

    let mut dp = EbpfDataplane::open(EbpfConfig {
        cgroup: cg.path().to_path_buf(),
        pin_dir: pins.path().to_path_buf(),
    })
    .expect("load and attach");
    let vip: SocketAddr = "11.1.2.3:80".parse().unwrap();
    let mut table = VipTable::new();
    table
        .insert(
            VipKey {
                addr: vip,
                protocol: Protocol::Tcp,
            },
            vec![Backend::new(backend)],
        )
        .unwrap();
    dp.apply(&table).expect("apply");

    for _ in 0..5 {
        assert_eq!(ask_name(vip).expect("connect through the VIP"), "backend-1");
    }
    // Not a VIP: untouched, so it fails (no route in a fresh namespace).
    let other: SocketAddr = "11.1.2.4:80".parse().unwrap();
    assert!(
        ask_name(other).is_err(),
        "a non-VIP address must not be rewritten"
    );
    // Same address, other port: not a VIP either.
    assert!(ask_name("11.1.2.3:81".parse().unwrap()).is_err());
    assert_eq!(
        ask_name(backend).unwrap(),
        "backend-1",
        "direct traffic untouched"
    );

    let counters = dp.counters().unwrap();
    let selected: u64 = counters.values().map(|c| c.selected).sum();
    assert_eq!(
        selected, 5,
        "kernel counted every steered connect: {counters:?}"
    );
    dp.cleanup().expect("cleanup");
    assert!(!pins.path().exists(), "cleanup removes the pin directory");
}
