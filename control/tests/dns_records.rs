//! The record generator against Mesos-DNS's own fixture and expectations:
//! `TestInsertState` of records/generator_test.go (mesos-dns @ be53925), run
//! on factories/fake.json (see tests/fixtures/SOURCES.md).
use std::net::IpAddr;

use garrison_control::dns::labels::LabelRule;
use garrison_control::dns::records::{GeneratorConfig, RecordSet, generate};
use garrison_control::dns::state::{IpSource, MasterState};

fn fixture() -> MasterState {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mesos-dns/fake.json"
    );
    MasterState::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Upstream's test resolves host names with the system resolver; the only
/// name in the fixture is `localhost`.
fn resolve(host: &str) -> Vec<IpAddr> {
    match host {
        "localhost" => vec!["127.0.0.1".parse().unwrap()],
        _ => Vec::new(),
    }
}

fn records(state: &MasterState, sources: &[IpSource]) -> RecordSet {
    let config = GeneratorConfig {
        domain: "mesos".into(),
        ip_sources: sources.to_vec(),
        label_rule: LabelRule::Rfc952,
        masters: vec!["144.76.157.37:5050".into()],
        leader: Some("master@144.76.157.37:5050".into()),
        name_server: Some(("mesos-dns.mesos.".into(), "127.0.0.1".parse().unwrap())),
    };
    generate(state, &config, &resolve)
}

fn values<'a>(map: &'a garrison_control::dns::records::RecordMap, name: &str) -> Vec<&'a str> {
    map.get(name)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

use IpSource::{Docker, Host, Mesos, NetInfo};

#[test]
fn insert_state_matches_mesos_dns() {
    let state = fixture();
    let rg = records(&state, &[NetInfo, Docker, Mesos, Host]);
    let docker = records(&state, &[Docker, Host]);
    let mesos = records(&state, &[Mesos, Host]);
    let slave = records(&state, &[Host]);
    let netinfo = records(&state, &[NetInfo]);

    // (records, kind, name, expected values) — upstream's table, in its order.
    let table: Vec<(&RecordSet, &str, &str, Vec<&str>)> = vec![
        (&rg, "A", "big-dog.marathon.mesos.", vec!["10.3.0.1"]),
        (
            &rg,
            "A",
            "liquor-store.marathon.mesos.",
            vec!["10.3.0.1", "10.3.0.2"],
        ),
        (
            &rg,
            "A",
            "liquor-store.marathon.slave.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (
            &rg,
            "A",
            "car-store.marathon.slave.mesos.",
            vec!["1.2.3.11"],
        ),
        (&rg, "A", "nginx.marathon.mesos.", vec!["10.3.0.3"]),
        (&rg, "A", "poseidon.marathon.mesos.", vec![]),
        (&rg, "A", "poseidon.marathon.slave.mesos.", vec![]),
        (&rg, "A", "master.mesos.", vec!["144.76.157.37"]),
        (&rg, "A", "master0.mesos.", vec!["144.76.157.37"]),
        (&rg, "A", "leader.mesos.", vec!["144.76.157.37"]),
        (
            &rg,
            "A",
            "slave.mesos.",
            vec!["1.2.3.10", "1.2.3.11", "1.2.3.12"],
        ),
        (
            &rg,
            "A",
            "some-box.chronoswithaspaceandmixe.mesos.",
            vec!["1.2.3.11"],
        ),
        (&rg, "A", "marathon.mesos.", vec!["1.2.3.11"]),
        (
            &rg,
            "AAAA",
            "toy-store.ipv6-framework.mesos.",
            vec!["fd01:b::1:8000:2"],
        ),
        (
            &rg,
            "AAAA",
            "toy-store.ipv6-framework.slave.mesos.",
            vec!["2001:db8::1"],
        ),
        (&rg, "AAAA", "ipv6-framework.mesos.", vec!["2001:db8::1"]),
        (&rg, "AAAA", "slave.mesos.", vec!["2001:db8::1"]),
        (
            &rg,
            "SRV",
            "_big-dog._tcp.marathon.mesos.",
            vec![
                "big-dog-4dfjd-0.marathon.mesos.:443",
                "big-dog-4dfjd-0.marathon.mesos.:80",
            ],
        ),
        (&rg, "SRV", "_poseidon._tcp.marathon.mesos.", vec![]),
        (
            &rg,
            "SRV",
            "_leader._tcp.mesos.",
            vec!["leader.mesos.:5050"],
        ),
        (
            &rg,
            "SRV",
            "_liquor-store._tcp.marathon.mesos.",
            vec![
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:80",
            ],
        ),
        (&rg, "SRV", "_liquor-store._udp.marathon.mesos.", vec![]),
        (&rg, "SRV", "_liquor-store.marathon.mesos.", vec![]),
        (
            &rg,
            "SRV",
            "_https._liquor-store._tcp.marathon.mesos.",
            vec![
                "liquor-store-4dfjd-0.marathon.mesos.:443",
                "liquor-store-zasmd-1.marathon.mesos.:443",
            ],
        ),
        (
            &rg,
            "SRV",
            "_http._liquor-store._tcp.marathon.mesos.",
            vec![
                "liquor-store-4dfjd-0.marathon.mesos.:80",
                "liquor-store-zasmd-1.marathon.mesos.:80",
            ],
        ),
        (
            &rg,
            "SRV",
            "_car-store._tcp.marathon.mesos.",
            vec![
                "car-store-zinaz-0.marathon.slave.mesos.:31364",
                "car-store-zinaz-0.marathon.slave.mesos.:31365",
            ],
        ),
        (
            &rg,
            "SRV",
            "_car-store._udp.marathon.mesos.",
            vec![
                "car-store-zinaz-0.marathon.slave.mesos.:31364",
                "car-store-zinaz-0.marathon.slave.mesos.:31365",
            ],
        ),
        (&rg, "SRV", "_slave._tcp.mesos.", vec!["slave.mesos.:5051"]),
        (
            &rg,
            "SRV",
            "_framework._tcp.marathon.mesos.",
            vec!["marathon.mesos.:25501"],
        ),
        (
            &slave,
            "A",
            "liquor-store.marathon.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (
            &slave,
            "A",
            "liquor-store.marathon.slave.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (&slave, "A", "nginx.marathon.mesos.", vec!["1.2.3.11"]),
        (
            &slave,
            "A",
            "car-store.marathon.slave.mesos.",
            vec!["1.2.3.11"],
        ),
        (
            &slave,
            "AAAA",
            "toy-store.ipv6-framework.mesos.",
            vec!["2001:db8::1"],
        ),
        (
            &slave,
            "AAAA",
            "toy-store.ipv6-framework.slave.mesos.",
            vec!["2001:db8::1"],
        ),
        (
            &mesos,
            "A",
            "liquor-store.marathon.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (
            &mesos,
            "A",
            "liquor-store.marathon.slave.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (&mesos, "A", "nginx.marathon.mesos.", vec!["10.3.0.3"]),
        (
            &mesos,
            "A",
            "car-store.marathon.slave.mesos.",
            vec!["1.2.3.11"],
        ),
        (
            &mesos,
            "AAAA",
            "toy-store.ipv6-framework.mesos.",
            vec!["2001:db8::1"],
        ),
        (
            &mesos,
            "AAAA",
            "toy-store.ipv6-framework.slave.mesos.",
            vec!["2001:db8::1"],
        ),
        // Upstream's row says 12.0.1.2: its fake.json at be53925 had one
        // network_info. The fixture (master) puts an interface with 12.0.1.3
        // first, and the first IPv4 of the first source wins; see
        // `netinfo_takes_the_first_ipv4_as_upstream_did` for upstream's value.
        (
            &netinfo,
            "A",
            "toy-store.ipv6-framework.mesos.",
            vec!["12.0.1.3"],
        ),
        (
            &netinfo,
            "AAAA",
            "toy-store.ipv6-framework.mesos.",
            vec!["fd01:b::1:8000:2"],
        ),
        (
            &netinfo,
            "AAAA",
            "toy-store.ipv6-framework.slave.mesos.",
            vec!["2001:db8::1"],
        ),
        (
            &docker,
            "A",
            "liquor-store.marathon.mesos.",
            vec!["10.3.0.1", "10.3.0.2"],
        ),
        (
            &docker,
            "A",
            "liquor-store.marathon.slave.mesos.",
            vec!["1.2.3.11", "1.2.3.12"],
        ),
        (&docker, "A", "nginx.marathon.mesos.", vec!["1.2.3.11"]),
        (
            &docker,
            "A",
            "car-store.marathon.slave.mesos.",
            vec!["1.2.3.11"],
        ),
        (
            &docker,
            "AAAA",
            "toy-store.ipv6-framework.mesos.",
            vec!["2001:db8::1"],
        ),
        (
            &docker,
            "AAAA",
            "toy-store.ipv6-framework.slave.mesos.",
            vec!["2001:db8::1"],
        ),
    ];
    let mut failures = Vec::new();
    for (i, (set, kind, name, want)) in table.iter().enumerate() {
        let map = match *kind {
            "A" => &set.a,
            "AAAA" => &set.aaaa,
            _ => &set.srv,
        };
        let got = values(map, name);
        if &got != want {
            failures.push(format!(
                "#{} {kind} {name}: got {got:?}, want {want:?}",
                i + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn netinfo_takes_the_first_ipv4_as_upstream_did() {
    // The fixture as it was at be53925: the toy-store status has only the
    // interface holding 12.0.1.2 and fd01:b::1:8000:2.
    let mut state = fixture();
    let toy = &mut state.frameworks[0].tasks[0];
    assert_eq!(toy.name, "toy-store");
    let infos = &mut toy.statuses[0]
        .container_status
        .as_mut()
        .unwrap()
        .network_infos;
    infos.remove(0);
    let rg = records(&state, &[NetInfo]);
    assert_eq!(
        values(&rg.a, "toy-store.ipv6-framework.mesos."),
        vec!["12.0.1.2"]
    );
    assert_eq!(
        values(&rg.aaaa, "toy-store.ipv6-framework.mesos."),
        vec!["fd01:b::1:8000:2"]
    );
}

#[test]
fn only_running_tasks_on_known_agents_and_the_name_server_record() {
    let rg = records(&fixture(), &[NetInfo, Docker, Mesos, Host]);
    assert_eq!(values(&rg.a, "mesos-dns.mesos."), vec!["127.0.0.1"]);
    // Every task name is a valid RFC 952 name under the zone.
    for name in rg.a.keys().chain(rg.aaaa.keys()).chain(rg.srv.keys()) {
        assert!(name.ends_with(".mesos."), "{name}");
        assert!(!name.contains(".."), "{name}");
        assert!(!name.contains("poseidon"), "killed task published: {name}");
        for part in name.trim_end_matches('.').split('.') {
            let part = part.trim_start_matches('_');
            assert!(!part.is_empty() && part.len() <= 63, "{name}");
            assert!(
                part.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }
    // The framework without a PID resolves its hostname and has no SRV.
    assert_eq!(values(&rg.a, "nopid.mesos."), vec!["127.0.0.1"]);
    assert!(!rg.srv.contains_key("_framework._tcp.nopid.mesos."));
}

#[test]
fn cli_prints_the_records_and_refuses_bad_input_clearly() {
    let bin = env!("CARGO_BIN_EXE_garrison-control");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mesos-dns/fake.json"
    );
    let out = std::process::Command::new(bin)
        .args([
            "dns-records",
            "--mesos-state",
            fixture,
            "--ip-sources",
            "docker,host",
        ])
        .args(["--label-rule", "rfc952", "--domain", "mesos"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["A"]["liquor-store.marathon.mesos."],
        serde_json::json!(["10.3.0.1", "10.3.0.2"])
    );
    assert_eq!(
        json["AAAA"]["slave.mesos."],
        serde_json::json!(["2001:db8::1"])
    );
    assert_eq!(
        json["SRV"]["_slave._tcp.mesos."],
        serde_json::json!(["slave.mesos.:5051"])
    );

    let dir = std::env::temp_dir().join(format!("garrison-dns-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"slaves":[{"id":"s","pid":"slave(1)@1.2.3.4"}]}"#).unwrap();
    let out = std::process::Command::new(bin)
        .args(["dns-records", "--mesos-state"])
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.json") && err.contains("has no ':port'"),
        "{err}"
    );
}
