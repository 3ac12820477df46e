//! `garrison-control`: `simulate FILE [--seed N]` runs the allocator on a
//! scenario and prints JSON (see `garrison_control::simulate`).
use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | None => {
            println!("{}", garrison_control::version());
            Ok(())
        }
        Some("simulate") => {
            let file = args
                .get(1)
                .context("usage: garrison-control simulate FILE [--seed N]")?;
            let seed = match args.iter().position(|a| a == "--seed") {
                Some(i) => args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .context("--seed takes a whole number")?,
                None => 1,
            };
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
            let result = garrison_control::simulate::simulate(&text, seed)
                .with_context(|| format!("simulating {file}"))?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Some(other) => {
            bail!("unknown command {other:?}; commands: simulate FILE [--seed N], --version")
        }
    }
}
