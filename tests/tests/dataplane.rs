//! The socket-level data path and the agent on the host kernel, each test in
//! its own network namespace, cgroup and pin directory. Bodies live in
//! `garrison_tests::scenarios`; the QEMU guests run the same list.
macro_rules! host_tests {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                garrison_tests::scenarios::$name();
            }
        )*
    };
}
garrison_tests::with_scenarios!(host_tests);
