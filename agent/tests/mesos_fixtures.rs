//! The Mesos state source against real Mesos state documents (the DC/OS
//! Minuteman test fixtures; see tests/fixtures/SOURCES.md). Expected VIPs and
//! backends are the ones Minuteman's own tests assert for these files.
use std::{collections::BTreeMap, net::SocketAddr};

use garrison_agent::{
    sources::{VipRef, mesos::parse_state},
    vip::Protocol,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/minuteman/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// VIP label → sorted backends "ip:port" (with "!" for unhealthy, "~0" for weight 0).
fn vips(name: &str) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let parsed = parse_state(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = BTreeMap::new();
    for v in parsed.vips {
        let label = match &v.vip {
            VipRef::Ip { addr, .. } => format!("{}/{}", addr, v.protocol),
            VipRef::Named {
                name,
                framework,
                port,
            } => format!("{name}.{framework}:{port}/{}", v.protocol),
        };
        let mut backends: Vec<String> = v
            .backends
            .iter()
            .map(|b| {
                let mut s = b.addr.to_string();
                if !b.healthy {
                    s.push('!');
                }
                if b.weight == 0 {
                    s.push_str("~0");
                }
                s
            })
            .collect();
        backends.sort();
        out.insert(label, backends);
    }
    (out, parsed.warnings)
}

fn expect(name: &str, expected: &[(&str, &[&str])]) {
    let (got, warnings) = vips(name);
    let want: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(got, want, "{name}; warnings: {warnings:?}");
}

#[test]
fn agent_state_discovery_vip() {
    expect(
        "state3.json",
        &[("1.2.3.4:5000/tcp", &["10.0.0.243:26645"])],
    );
}

#[test]
fn master_state_finds_the_agent_through_slaves() {
    expect(
        "state4.json",
        &[("1.2.3.4:5000/tcp", &["10.0.0.243:26645"])],
    );
}

#[test]
fn discovery_info_vip() {
    expect(
        "state_di.json",
        &[("1.2.3.4:8080/tcp", &["10.0.2.234:19426"])],
    );
}

#[test]
fn container_network_scope_uses_the_task_ip() {
    expect("overlay.json", &[("1.2.3.4:5000/tcp", &["9.0.1.130:80"])]);
}

#[test]
fn legacy_task_labels_use_the_task_ports() {
    expect(
        "two-healthcheck-free-vips-state.json",
        &[
            (
                "4.3.2.1:1234/tcp",
                &["33.33.33.1:31362", "33.33.33.1:31634"],
            ),
            (
                "4.3.2.2:1234/tcp",
                &["33.33.33.1:31215", "33.33.33.1:31290"],
            ),
        ],
    );
    expect("docker.json", &[("1.2.3.4:5000/tcp", &["10.0.2.4:28027"])]);
}

#[test]
fn only_labelled_tasks_declare_vips() {
    // Minuteman expects only the app task's VIP: the (unhealthy) proxy task has
    // no VIP label. Health itself is covered below.
    expect(
        "state2.json",
        &[("1.2.3.4:5000/tcp", &["10.10.0.109:8014"])],
    );
}

#[test]
fn named_vip_of_the_framework() {
    expect(
        "named-base-vips.json",
        &[("merp.marathon:5000/tcp", &["10.0.0.243:12049"])],
    );
}

#[test]
fn tcp_and_udp_on_the_same_port_are_two_vips() {
    // Garrison balances UDP too, so state5's udp port is a VIP of its own.
    expect(
        "state5.json",
        &[
            ("1.2.3.4:5000/tcp", &["10.0.0.243:26645"]),
            ("1.2.3.4:5000/udp", &["10.0.0.243:26645"]),
        ],
    );
}

#[test]
fn bad_labels_are_skipped_with_a_warning() {
    for (file, needle) in [
        ("missing-port.json", "missing-port"),
        ("invalid-port.json", "invalid-port::1234"),
    ] {
        let (got, warnings) = vips(file);
        assert!(got.is_empty(), "{file}: {got:?}");
        assert_eq!(warnings.len(), 1, "{file}: {warnings:?}");
        assert!(
            warnings[0].contains(needle) && warnings[0].contains("catsmeow"),
            "{}",
            warnings[0]
        );
    }
}

#[test]
fn empty_state_has_no_vips() {
    expect("empty.json", &[]);
}

#[test]
fn killing_tasks_are_drained_and_unhealthy_marked() {
    let mut doc: serde_json::Value = serde_json::from_str(&fixture("state4.json")).unwrap();
    let task = &mut doc["frameworks"][0]["tasks"][0];
    task["state"] = "TASK_KILLING".into();
    let parsed = parse_state(&doc.to_string()).unwrap();
    let b = parsed.vips[0].backends[0];
    assert_eq!(
        (b.weight, b.healthy),
        (0, true),
        "TASK_KILLING drains at once"
    );

    let mut doc: serde_json::Value = serde_json::from_str(&fixture("state4.json")).unwrap();
    doc["frameworks"][0]["tasks"][0]["statuses"][0]["healthy"] = false.into();
    let parsed = parse_state(&doc.to_string()).unwrap();
    let b = parsed.vips[0].backends[0];
    assert!(!b.healthy);
    assert_eq!(b.addr, "10.0.0.243:26645".parse::<SocketAddr>().unwrap());
    assert_eq!(parsed.vips[0].protocol, Protocol::Tcp);

    let mut doc: serde_json::Value = serde_json::from_str(&fixture("state4.json")).unwrap();
    doc["frameworks"][0]["tasks"][0]["state"] = "TASK_FINISHED".into();
    assert!(
        parse_state(&doc.to_string()).unwrap().vips.is_empty(),
        "ended tasks serve nothing"
    );
}
