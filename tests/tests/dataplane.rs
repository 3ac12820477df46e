//! The socket-level data path on the host kernel, each test in its own network
//! namespace, cgroup and pin directory. Bodies live in `garrison_tests::scenarios`
//! (the QEMU guests run the same ones).
use garrison_tests::scenarios;

#[test]
fn tcp_vip_reaches_backend_and_other_addresses_are_untouched() {
    scenarios::tcp_vip_reaches_backend_and_other_addresses_are_untouched();
}

#[test]
fn tcp_backends_share_by_weight() {
    scenarios::tcp_backends_share_by_weight();
}

#[test]
fn removed_backend_is_never_chosen_and_empty_vip_refuses() {
    scenarios::removed_backend_is_never_chosen_and_empty_vip_refuses();
}

#[test]
fn getpeername_returns_the_vip() {
    scenarios::getpeername_returns_the_vip();
}

#[test]
fn udp_replies_come_from_the_vip_and_stick_to_one_backend() {
    scenarios::udp_replies_come_from_the_vip_and_stick_to_one_backend();
}

#[test]
fn ipv6_tcp_and_udp_vips() {
    scenarios::ipv6_tcp_and_udp_vips();
}

#[test]
fn agent_sigkill_and_restart_lose_no_connection() {
    scenarios::agent_sigkill_and_restart_lose_no_connection();
}

#[test]
fn agent_reloads_on_sighup_and_keeps_table_on_bad_file() {
    scenarios::agent_reloads_on_sighup_and_keeps_table_on_bad_file();
}

#[test]
fn agent_serves_named_vip_from_mesos_state() {
    scenarios::agent_serves_named_vip_from_mesos_state();
}
