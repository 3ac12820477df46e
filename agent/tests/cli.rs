//! The agent binary's configuration handling, unprivileged: bad configuration
//! is rejected at start, before anything touches the kernel, with the key, the
//! value and why; the example config shipped in docs/deploy parses.
use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_garrison-agent"))
}

fn run_fails_with(args: &[&str], config: Option<&str>, needles: &[&str]) {
    let dir = std::env::temp_dir().join(format!(
        "garrison-cli-{}-{}",
        std::process::id(),
        needles[0].len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = agent();
    cmd.arg("run");
    if let Some(text) = config {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(&path);
    }
    let out = cmd.args(args).output().expect("run garrison-agent");
    assert!(!out.status.success(), "must fail: {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_config_key_is_rejected_with_file_and_key() {
    run_fails_with(
        &[],
        Some("api = \"127.0.0.1:1\"\nbogus_key = 1\n"),
        &["agent.toml", "bogus_key"],
    );
}

#[test]
fn bad_values_name_key_value_and_reason() {
    run_fails_with(
        &["--api", "nowhere"],
        None,
        &["`api`", "\"nowhere\"", "ADDRESS:PORT"],
    );
    run_fails_with(
        &["--named-vip-range", "11.0.0.0/33"],
        None,
        &["named_vip_range", "11.0.0.0/33"],
    );
    run_fails_with(
        &[],
        Some("[sources]\nmesos_state = [\"ftp://x/state\"]\n"),
        &["sources.mesos_state", "ftp://x/state"],
    );
    run_fails_with(
        &["--dataplane", "ipvs"],
        None,
        &["`dataplane`", "auto, ebpf or nfqueue"],
    );
}

#[test]
fn flags_override_the_file() {
    // The file's value is bad, the flag's good: the failure must then come
    // from elsewhere (here: a second bad flag), proving the flag won.
    run_fails_with(
        &["--api", "127.0.0.1:1", "--dns-domain", "Bad..Domain"],
        Some("api = \"bad\"\n"),
        &["dns_domain"],
    );
}

#[test]
fn the_shipped_example_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy/agent.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let raw = garrison_agent::config::parse(path, &text).expect("example parses");
    let config = raw.validate().expect("example validates");
    assert_eq!(config.sources.mesos_state, ["http://127.0.0.1:5051/state"]);
}
