//! `cargo xtask demo`.
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Leave the namespaces and the agent running, and print how to reach them.
    #[arg(long)]
    pub keep: bool,
}

pub fn run(_args: &DemoArgs) -> Result<()> {
    anyhow::bail!("demo: not built yet")
}
