//! The socket-level VIP rewrite on the host kernel.
use garrison_tests::scenarios;

#[test]
fn tcp_vip_reaches_backend_and_other_addresses_are_untouched() {
    scenarios::tcp_vip_reaches_backend_and_other_addresses_are_untouched();
}
