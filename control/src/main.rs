//! `garrison-control`: prints its version; the allocator and servers arrive with
//! their issues (see docs/architecture.md).
fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | None => {
            println!("{}", garrison_control::version());
            Ok(())
        }
        Some(other) => {
            anyhow::bail!("unknown argument {other:?}; garrison-control has no commands yet")
        }
    }
}
