//! Property tests of the allocator: nothing is ever over-allocated, reserved
//! resources never reach another role, and continuously demanding frameworks
//! end within one task's share of each other.
use std::time::Duration;

use garrison_control::{
    allocator::{Allocator, ManualClock, Offer},
    resources::Resources,
    simulate::simulate,
};
use proptest::prelude::*;

const ROLES: [&str; 4] = ["a", "b", "a/x", "c"];

#[derive(Debug, Clone)]
enum Op {
    Allocate,
    /// Recover the i-th outstanding offer, with a filter of so many seconds (0: none).
    Recover(usize, u64),
    /// Keep (launch on) the i-th outstanding offer.
    Keep(usize),
    Advance(u64),
    Suppress(usize),
    Revive(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Allocate),
        3 => (0..8usize, 0..10u64).prop_map(|(i, s)| Op::Recover(i, s)),
        2 => (0..8usize).prop_map(Op::Keep),
        1 => (1..20u64).prop_map(Op::Advance),
        1 => (0..4usize).prop_map(Op::Suppress),
        1 => (0..4usize).prop_map(Op::Revive),
    ]
}

fn agent() -> impl Strategy<Value = String> {
    (
        1..16u32,
        1..8u32,
        proptest::option::of((0..4usize, 1..4u32)),
    )
        .prop_map(|(c, m, rsv)| {
            let mut s = format!("cpus:{c};mem:{};ports:[31000-31010]", m * 512);
            if let Some((r, rc)) = rsv {
                s.push_str(&format!(";cpus({}):{rc}", ROLES[r]));
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_over_allocated_and_reservations_stay_in_their_role(
        agents in proptest::collection::vec(agent(), 1..6),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let clock = ManualClock::default();
        let mut alloc = Allocator::with_clock(clock.clone());
        for (i, a) in agents.iter().enumerate() {
            alloc.add_agent(&format!("ag{i}"), Resources::parse(a).unwrap()).unwrap();
        }
        let frameworks = ["f0", "f1", "f2", "f3"];
        for (i, f) in frameworks.iter().enumerate() {
            alloc.add_framework(f, &[ROLES[i]]).unwrap();
        }
        let mut outstanding: Vec<Offer> = Vec::new();
        let mut kept: Vec<Offer> = Vec::new();
        for op in ops {
            match op {
                Op::Allocate => {
                    for o in alloc.allocate() {
                        for role in o.resources.reserved.keys() {
                            prop_assert!(o.role == *role || o.role.starts_with(&format!("{role}/")),
                                "{} got {}'s reservation", o.role, role);
                        }
                        outstanding.push(o);
                    }
                }
                Op::Recover(i, secs) if !outstanding.is_empty() => {
                    let o = outstanding.remove(i % outstanding.len());
                    let refuse = (secs > 0).then(|| Duration::from_secs(secs));
                    alloc.recover(&o, refuse).unwrap();
                }
                Op::Keep(i) if !outstanding.is_empty() => kept.push(outstanding.remove(i % outstanding.len())),
                Op::Advance(s) => clock.advance(Duration::from_secs(s)),
                Op::Suppress(i) => alloc.suppress(frameworks[i]).unwrap(),
                Op::Revive(i) => alloc.revive(frameworks[i]).unwrap(),
                _ => {}
            }
            // Invariant: per agent, what is allocated is exactly the live
            // offers and kept resources, and never more than the agent has.
            for (i, a) in agents.iter().enumerate() {
                let id = format!("ag{i}");
                let mut sum = Resources::default();
                for o in outstanding.iter().chain(&kept).filter(|o| o.agent == id) {
                    sum.add(&o.resources);
                }
                let allocated = alloc.allocated(&id).unwrap();
                prop_assert_eq!(&allocated, &sum);
                prop_assert!(Resources::parse(a).unwrap().contains(&allocated));
            }
        }
    }

    #[test]
    fn demanding_frameworks_end_within_one_task_of_each_other(
        cpus in 8..64u32,
        mem in 8..64u32,
        tasks in proptest::collection::vec((1..4u32, 1..4u32), 2..4),
        seed in 0..1000u64,
    ) {
        let frameworks: Vec<String> = tasks
            .iter()
            .enumerate()
            .map(|(i, (c, m))| format!(r#"{{"id":"F{i}","role":"r{i}","task":{{"cpus":{c},"mem":{}}}}}"#, m * 1024))
            .collect();
        let scenario = format!(
            r#"{{"agents":[{{"id":"a1","resources":{{"cpus":{cpus},"mem":{}}}}}],"frameworks":[{}]}}"#,
            mem * 1024,
            frameworks.join(",")
        );
        let result = simulate(&scenario, seed).unwrap();
        let shares: Vec<f64> = result.frameworks.values().map(|f| f.dominant_share).collect();
        let max_task = tasks
            .iter()
            .map(|(c, m)| (*c as f64 / cpus as f64).max(*m as f64 / mem as f64))
            .fold(0.0, f64::max);
        let spread = shares.iter().cloned().fold(0.0, f64::max) - shares.iter().cloned().fold(1.0, f64::min);
        prop_assert!(spread <= max_task + 1e-3, "shares {:?} spread {} > one task {}", shares, spread, max_task);
    }
}
