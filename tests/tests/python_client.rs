//! The published Python Marathon client against `garrison-control`, on the
//! host only (the QEMU guests have no Python). Needs the virtualenv that
//! `cargo xtask deps` makes.
#[test]
fn python_marathon_client_runs_an_app_on_the_control() {
    garrison_tests::python::python_marathon_client_runs_an_app_on_the_control();
}
