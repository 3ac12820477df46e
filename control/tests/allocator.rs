//! The allocator's semantics, black-box: the DRF paper's example, quota before
//! fair share with headroom held back, reservations, weights, nested roles,
//! filters, suppress/revive, typed errors.
use std::{collections::BTreeMap, time::Duration};

use garrison_control::{
    allocator::{Allocator, AllocatorError, ManualClock, Offer, Quota},
    resources::{Bundle, Quantity, ResourceError, Resources},
    simulate::simulate,
};

fn res(text: &str) -> Resources {
    Resources::parse(text).unwrap()
}

fn q(pairs: &[(&str, f64)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::from_f64(k, *v).unwrap()))
        .collect()
}

fn cpus(offers: &[Offer], framework: &str) -> f64 {
    offers
        .iter()
        .filter(|o| o.framework == framework)
        .map(|o| o.resources.scalar("cpus").as_f64())
        .sum()
}

#[test]
fn drf_paper_example_from_the_fixture() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/drf-paper.json"
    ))
    .unwrap();
    for seed in [1, 2, 99] {
        let r = simulate(&text, seed).unwrap();
        assert_eq!(
            (r.frameworks["A"].tasks, r.frameworks["B"].tasks),
            (3, 2),
            "seed {seed}"
        );
        assert_eq!(r.frameworks["A"].allocated["cpus"], 3.0);
        assert_eq!(r.frameworks["A"].allocated["mem"], 12288.0);
        assert_eq!(r.frameworks["B"].allocated["cpus"], 6.0);
        assert_eq!(r.frameworks["A"].dominant_share, 0.6667);
        assert_eq!(r.frameworks["B"].dominant_share, 0.6667);
    }
}

/// Ten 1-CPU agents; framework F in role "r" always accepts.
fn ten_agents(clock: &ManualClock) -> Allocator<ManualClock> {
    let mut a = Allocator::with_clock(clock.clone());
    for i in 0..10 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"))
            .unwrap();
    }
    a
}

#[test]
fn quota_guarantee_is_met_first_and_headroom_is_held_back() {
    let clock = ManualClock::default();
    let mut a = ten_agents(&clock);
    a.add_framework("Fr", &["r"]).unwrap();
    a.add_framework("Fq", &["q"]).unwrap();
    a.set_quota(
        "q",
        Quota {
            guarantee: q(&[("cpus", 6.0)]),
            limit: None,
        },
    )
    .unwrap();
    let offers = a.allocate();
    assert_eq!(cpus(&offers, "Fq"), 6.0, "the guarantee first");
    assert_eq!(cpus(&offers, "Fr"), 4.0, "the rest to the others");

    // With q's framework suppressed, its unmet guarantee is still held back.
    let mut b = ten_agents(&clock);
    b.add_framework("Fr", &["r"]).unwrap();
    b.add_framework("Fq", &["q"]).unwrap();
    b.set_quota(
        "q",
        Quota {
            guarantee: q(&[("cpus", 6.0)]),
            limit: None,
        },
    )
    .unwrap();
    b.suppress("Fq").unwrap();
    let offers = b.allocate();
    assert_eq!(
        cpus(&offers, "Fr"),
        4.0,
        "6 CPUs held back for q's guarantee"
    );
    b.revive("Fq").unwrap();
    let offers = b.allocate();
    assert_eq!(cpus(&offers, "Fq"), 6.0);
}

#[test]
fn quota_limit_caps_a_role() {
    let clock = ManualClock::default();
    let mut a = ten_agents(&clock);
    a.add_framework("F", &["capped"]).unwrap();
    a.set_quota(
        "capped",
        Quota {
            guarantee: BTreeMap::new(),
            limit: Some(q(&[("cpus", 3.0)])),
        },
    )
    .unwrap();
    let offers = a.allocate();
    assert_eq!(cpus(&offers, "F"), 3.0);
}

#[test]
fn reserved_resources_go_only_to_their_role_and_children() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus(db):4;mem(db):4096")).unwrap();
    a.add_framework("web", &["web"]).unwrap();
    assert!(
        a.allocate().is_empty(),
        "nothing unreserved, nothing for web"
    );
    a.add_framework("db-child", &["db/replica"]).unwrap();
    let offers = a.allocate();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].framework, "db-child");
    assert_eq!(
        offers[0].resources.reserved["db"].scalar("cpus").as_f64(),
        4.0
    );
}

#[test]
fn dynamic_reservations() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus:4;mem:4096")).unwrap();
    let two = Bundle {
        scalars: q(&[("cpus", 2.0)]),
        ..Default::default()
    };
    a.reserve("a1", "db", &two).unwrap();
    a.add_framework("web", &["web"]).unwrap();
    let offers = a.allocate();
    assert_eq!(
        cpus(&offers, "web"),
        2.0,
        "the reserved half is not offered to web"
    );
    for o in &offers {
        a.recover(o, None).unwrap();
    }
    a.unreserve("a1", "db", &two).unwrap();
    let offers = a.allocate();
    assert_eq!(cpus(&offers, "web"), 4.0);
    assert!(
        a.unreserve("a1", "db", &two).is_err(),
        "nothing reserved any more"
    );
}

#[test]
fn weights_give_proportional_shares() {
    // Frameworks that keep every offer: one CPU per agent, 30 agents.
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    for i in 0..30 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"))
            .unwrap();
    }
    a.add_framework("heavy", &["heavy"]).unwrap();
    a.add_framework("light", &["light"]).unwrap();
    a.set_weight("heavy", 2.0).unwrap();
    let offers = a.allocate();
    assert_eq!(
        (cpus(&offers, "heavy"), cpus(&offers, "light")),
        (20.0, 10.0)
    );
}

#[test]
fn nested_roles_share_their_parent() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    for i in 0..40 {
        a.add_agent(&format!("a{i}"), res("cpus:1;mem:1024"))
            .unwrap();
    }
    a.add_framework("eng-web", &["eng/web"]).unwrap();
    a.add_framework("eng-db", &["eng/db"]).unwrap();
    a.add_framework("ops", &["ops"]).unwrap();
    let offers = a.allocate();
    // eng and ops split 20/20 at the top level; eng's 20 split 10/10 below.
    assert_eq!(cpus(&offers, "ops"), 20.0);
    assert_eq!(cpus(&offers, "eng-web"), 10.0);
    assert_eq!(cpus(&offers, "eng-db"), 10.0);
    assert_eq!(a.role_allocation("eng")["cpus"].as_f64(), 20.0);
}

#[test]
fn declined_agents_are_filtered_until_the_filter_expires() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    a.add_framework("F", &["r"]).unwrap();
    let offers = a.allocate();
    assert_eq!(offers.len(), 1);
    a.recover(&offers[0], Some(Duration::from_secs(5))).unwrap();
    clock.advance(Duration::from_secs(4));
    assert!(a.allocate().is_empty(), "filtered for 5 s");
    clock.advance(Duration::from_secs(2));
    assert_eq!(a.allocate().len(), 1, "offered again after expiry");
}

#[test]
fn suppress_stops_offers_and_revive_clears_filters() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus:2;mem:2048")).unwrap();
    a.add_framework("F", &["r"]).unwrap();
    a.suppress("F").unwrap();
    assert!(a.allocate().is_empty());
    a.revive("F").unwrap();
    let offers = a.allocate();
    assert_eq!(offers.len(), 1);
    a.recover(&offers[0], Some(Duration::from_secs(3600)))
        .unwrap();
    assert!(a.allocate().is_empty());
    a.revive("F").unwrap();
    assert_eq!(a.allocate().len(), 1, "revive clears filters");
}

#[test]
fn tiny_remainders_are_not_offered() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus:0.005;mem:16")).unwrap();
    a.add_framework("F", &["r"]).unwrap();
    assert!(a.allocate().is_empty(), "below cpus 0.01 and mem 32");
}

#[test]
fn invalid_inputs_are_typed_errors() {
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    assert!(matches!(
        Resources::parse("cpus:NaN"),
        Err(ResourceError::BadScalar { .. })
    ));
    assert!(matches!(
        Resources::scalars(&[("cpus", -1.0)]),
        Err(ResourceError::BadScalar { .. })
    ));
    assert_eq!(
        a.set_weight("nobody", 2.0),
        Err(AllocatorError::UnknownRole("nobody".into()))
    );
    a.add_role("eng").unwrap();
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(
                a.set_weight("eng", w),
                Err(AllocatorError::InvalidWeight { .. })
            ),
            "{w}"
        );
    }
    assert_eq!(
        a.set_quota("eng/web", Quota::default()),
        Err(AllocatorError::QuotaOnNestedRole("eng/web".into()))
    );
    assert!(matches!(
        a.add_framework("F", &["bad role"]),
        Err(AllocatorError::InvalidRole(_))
    ));
    assert!(matches!(
        a.add_framework("F", &[]),
        Err(AllocatorError::NoRole(_))
    ));
    assert!(matches!(
        a.set_quota(
            "eng",
            Quota {
                guarantee: q(&[("cpus", 4.0)]),
                limit: Some(q(&[("cpus", 2.0)]))
            }
        ),
        Err(AllocatorError::QuotaLimitBelowGuarantee { .. })
    ));
    a.add_agent("a1", res("cpus:1")).unwrap();
    assert!(matches!(
        a.add_agent("a1", res("cpus:1")),
        Err(AllocatorError::DuplicateAgent(_))
    ));
    let bogus = Offer {
        framework: "nope".into(),
        role: "r".into(),
        agent: "a1".into(),
        resources: res("cpus:1"),
    };
    assert!(matches!(
        a.recover(&bogus, None),
        Err(AllocatorError::UnknownFramework(_))
    ));
    assert!(
        simulate(
            "{\"agents\":[{\"id\":\"a\",\"resources\":{\"cpus\":-2}}],\"frameworks\":[]}",
            1
        )
        .is_err()
    );
    assert!(
        simulate(
            "{\"agents\":[],\"frameworks\":[{\"id\":\"F\",\"role\":\"r\",\"task\":{}}]}",
            1
        )
        .is_err()
    );
}

#[test]
fn random_role_order_follows_weights() {
    use garrison_control::allocator::RoleOrder;
    // One 1-CPU agent per cycle decision: who gets it first, over many cycles.
    let clock = ManualClock::default();
    let mut a = Allocator::with_clock(clock.clone());
    a.add_agent("a1", res("cpus:1;mem:1024")).unwrap();
    a.add_framework("heavy", &["heavy"]).unwrap();
    a.add_framework("light", &["light"]).unwrap();
    a.set_weight("heavy", 4.0).unwrap();
    a.set_role_order(RoleOrder::Random { seed: 7 });
    let mut heavy = 0;
    for _ in 0..1000 {
        let offers = a.allocate();
        assert_eq!(offers.len(), 1);
        if offers[0].framework == "heavy" {
            heavy += 1;
        }
        a.recover(&offers[0], None).unwrap();
    }
    assert!(
        (700..=900).contains(&heavy),
        "{heavy} of 1000 (expected ~800)"
    );
}

#[test]
fn simulate_cli_prints_the_papers_answer() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drf-paper.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_garrison-control"))
        .args(["simulate", fixture, "--seed", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["frameworks"]["A"]["tasks"], 3);
    assert_eq!(json["frameworks"]["B"]["tasks"], 2);
    assert_eq!(json["frameworks"]["A"]["dominant_share"], 0.6667);
    assert!(json["cycles"].as_u64().unwrap() >= 5);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_garrison-control"))
        .args(["simulate", "/nonexistent.json"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.json"));
}
