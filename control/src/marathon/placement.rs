//! Where new instances go (pure): the DRF allocator's offers, as Marathon
//! receives them from a Mesos master.
//!
//! Each pass builds an [`Allocator`] from the live agents, marks what running
//! tasks use as allocated, subscribes the framework `marathon` to the roles of
//! the apps that need instances, and takes offers: an offer in a role goes to
//! that role's apps (in app id order), each taking one instance if the offer
//! holds its cpus, mem, disk and port count and its constraints allow; the
//! rest of the offer is declined without a filter, so the next round's offers
//! follow the updated DRF shares. Rounds repeat until a
//! round places nothing. Ports are the lowest free ones of the offer.
//! Marathon's default role `*` is the allocator role `_default` here (the
//! allocator's role names exclude `*`).
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::allocator::{Allocator, AllocatorError, Offer};
use crate::resources::{Bundle, Quantity, RangeSet, Resources};

/// The framework every app's tasks belong to.
pub const FRAMEWORK: &str = "marathon";

/// An agent as placement sees it.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub id: String,
    pub hostname: String,
    /// Unreserved totals and the static reservation, as the agent reported.
    pub total: Resources,
}

/// Resources a running task holds.
#[derive(Debug, Clone)]
pub struct UsedBy {
    pub agent: String,
    pub role: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub ports: Vec<u16>,
}

/// An app that needs `count` more instances.
#[derive(Debug, Clone)]
pub struct Need {
    pub app_id: String,
    pub role: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub ports: usize,
    pub count: usize,
    /// `hostname:UNIQUE`: agents that already run an instance are excluded.
    pub unique_hosts: bool,
    /// `hostname:CLUSTER:h`: only this hostname.
    pub only_host: Option<String>,
    /// Agents already running an instance of the app.
    pub on_agents: BTreeSet<String>,
}

/// One instance to launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub app_id: String,
    pub agent: String,
    pub ports: Vec<u16>,
}

/// The allocator role for an app role.
pub fn allocator_role(role: &str) -> String {
    if role == "*" {
        "_default".to_string()
    } else {
        role.to_string()
    }
}

/// Which ports a task takes.
enum Ports<'a> {
    /// The lowest free ones, this many.
    Any(usize),
    /// These (a running task's).
    Exactly(&'a [u16]),
}

/// How a task's resources split over `pools` (reservations first, then
/// unreserved): each scalar from the first pools that hold it, each port from
/// the pool that has it free. `None` when they do not fit.
fn split(
    pools: &[&Bundle],
    scalars: &[(&str, f64)],
    ports: Ports,
) -> Option<(Vec<Bundle>, Vec<u16>)> {
    let mut plan = vec![Bundle::default(); pools.len()];
    for &(name, amount) in scalars {
        if amount <= 0.0 {
            continue;
        }
        let mut left = Quantity::from_f64(name, amount).ok()?;
        for (i, pool) in pools.iter().enumerate() {
            let take = pool.scalar(name).min(left);
            if !take.is_zero() {
                plan[i].scalars.insert(name.to_string(), take);
                left = left.saturating_sub(take);
            }
        }
        if !left.is_zero() {
            return None;
        }
    }
    let free = |pool: &Bundle| pool.ranges.get("ports").cloned().unwrap_or_default();
    let mut chosen = Vec::new();
    let mut add = |i: usize, set: RangeSet, plan: &mut Vec<Bundle>| {
        chosen.extend(
            set.ranges()
                .iter()
                .flat_map(|&(a, b)| a..=b)
                .map(|p| p as u16),
        );
        let cur = plan[i].ranges.entry("ports".into()).or_default();
        *cur = cur.union(&set);
    };
    match ports {
        Ports::Any(mut n) => {
            for (i, pool) in pools.iter().enumerate() {
                if n == 0 {
                    break;
                }
                let taken = free(pool).take(n as u64);
                n -= taken.count() as usize;
                add(i, taken, &mut plan);
            }
            if n > 0 {
                return None;
            }
        }
        Ports::Exactly(list) => {
            for &port in list {
                let one = RangeSet::new(vec![(u64::from(port), u64::from(port))]);
                let i = pools.iter().position(|pool| free(pool).contains(&one))?;
                add(i, one, &mut plan);
            }
        }
    }
    chosen.sort_unstable();
    Some((plan, chosen))
}

/// Takes `need`'s resources out of `offer` (its reservations first, then
/// unreserved), or `None` if they do not fit.
fn take(offer: &mut Resources, need: &Need) -> Option<Vec<u16>> {
    let scalars = [("cpus", need.cpus), ("mem", need.mem), ("disk", need.disk)];
    let keys: Vec<String> = offer.reserved.keys().cloned().collect();
    let (plan, ports) = {
        let mut pools: Vec<&Bundle> = keys.iter().map(|k| &offer.reserved[k]).collect();
        pools.push(&offer.unreserved);
        split(&pools, &scalars, Ports::Any(need.ports))?
    };
    for (i, part) in plan.iter().enumerate() {
        let pool = match keys.get(i) {
            Some(k) => offer.reserved.get_mut(k)?,
            None => &mut offer.unreserved,
        };
        pool.subtract(part).ok()?;
    }
    Some(ports)
}

/// Why instances of `need` could not be placed (after this pass's
/// placements `placed`), for `/v2/queue`: the constraint that excludes every
/// agent, or the resource no agent has enough of free. A diagnosis, not a
/// second placement: this pass's placements of other apps count by their
/// ports only.
pub fn why_unplaced(
    agents: &[AgentSlot],
    used: &[UsedBy],
    placed: &[Placement],
    need: &Need,
) -> String {
    if agents.is_empty() {
        return "no connected agent offers resources".into();
    }
    let candidates: Vec<&AgentSlot> = agents
        .iter()
        .filter(|a| need.only_host.as_deref().is_none_or(|h| a.hostname == h))
        .collect();
    if candidates.is_empty() {
        let host = need.only_host.as_deref().unwrap_or("");
        return format!("constraint hostname:CLUSTER:{host}: no connected agent has that hostname");
    }
    let busy: BTreeSet<&str> = need
        .on_agents
        .iter()
        .map(String::as_str)
        .chain(
            placed
                .iter()
                .filter(|p| p.app_id == need.app_id)
                .map(|p| p.agent.as_str()),
        )
        .collect();
    let candidates: Vec<&AgentSlot> = candidates
        .into_iter()
        .filter(|a| !need.unique_hosts || !busy.contains(a.id.as_str()))
        .collect();
    if candidates.is_empty() {
        return "constraint hostname:UNIQUE: every agent already runs an instance".into();
    }
    // What each candidate has free for the need's role: its unreserved and
    // the role's reservation, minus running tasks and this pass's placements
    // (summed per agent once: O(agents + tasks)).
    let mut taken: HashMap<&str, [f64; 4]> = HashMap::new();
    for u in used {
        let t = taken.entry(u.agent.as_str()).or_default();
        t[0] += u.cpus;
        t[1] += u.mem;
        t[2] += u.disk;
        t[3] += u.ports.len() as f64;
    }
    for p in placed {
        let t = taken.entry(p.agent.as_str()).or_default();
        if p.app_id == need.app_id {
            t[0] += need.cpus;
            t[1] += need.mem;
            t[2] += need.disk;
        }
        t[3] += p.ports.len() as f64;
    }
    let free = |a: &AgentSlot, i: usize, name: &str| -> f64 {
        let role_res = a
            .total
            .reserved
            .get(&need.role)
            .map_or(0.0, |b| b.scalar(name).as_f64());
        let total = a.total.unreserved.scalar(name).as_f64() + role_res;
        (total - taken.get(a.id.as_str()).map_or(0.0, |t| t[i])).max(0.0)
    };
    for (i, (name, wanted)) in [("cpus", need.cpus), ("mem", need.mem), ("disk", need.disk)]
        .into_iter()
        .enumerate()
    {
        let most = candidates
            .iter()
            .map(|a| free(a, i, name))
            .fold(0.0, f64::max);
        if most + 1e-9 < wanted {
            return format!("not enough {name} on any agent: needs {wanted}, at most {most} free");
        }
    }
    let ports_free = |a: &AgentSlot| -> f64 {
        let total = a
            .total
            .unreserved
            .ranges
            .get("ports")
            .map_or(0, |r| r.count()) as f64;
        total - taken.get(a.id.as_str()).map_or(0.0, |t| t[3])
    };
    if candidates.iter().all(|a| ports_free(a) < need.ports as f64) {
        return format!("not enough free ports on any agent: needs {}", need.ports);
    }
    "no single agent has all the resources at once (or its role's share is used up)".into()
}

/// Places up to `need.count` instances of each need.
pub fn place(
    agents: &[AgentSlot],
    used: &[UsedBy],
    needs: &[Need],
) -> Result<Vec<Placement>, AllocatorError> {
    let mut out = Vec::new();
    let needs: Vec<&Need> = needs.iter().filter(|n| n.count > 0).collect();
    if needs.is_empty() || agents.is_empty() {
        return Ok(out);
    }
    let mut alloc: Allocator = Allocator::new();
    for a in agents {
        alloc.add_agent(&a.id, a.total.clone())?;
    }
    let mut roles: BTreeSet<String> = needs.iter().map(|n| allocator_role(&n.role)).collect();
    roles.extend(used.iter().map(|u| allocator_role(&u.role)));
    let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
    alloc.add_framework(FRAMEWORK, &role_refs)?;
    for u in used {
        if !agents.iter().any(|a| a.id == u.agent) {
            continue;
        }
        // The task holds its role's reservation first, then unreserved
        // resources, as it was placed.
        let role = allocator_role(&u.role);
        let available = alloc.available(&u.agent)?;
        let empty = Bundle::default();
        let reserved = available.reserved.get(&u.role).unwrap_or(&empty);
        let scalars = [("cpus", u.cpus), ("mem", u.mem), ("disk", u.disk)];
        let held = split(
            &[reserved, &available.unreserved],
            &scalars,
            Ports::Exactly(&u.ports),
        )
        .is_some_and(|(plan, _)| {
            let mut parts = plan.into_iter();
            let (res, unres) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let mut resources = Resources {
                unreserved: unres,
                reserved: BTreeMap::new(),
            };
            if !res.is_empty() {
                resources.reserved.insert(u.role.clone(), res);
            }
            let offer = Offer {
                framework: FRAMEWORK.into(),
                role: role.clone(),
                agent: u.agent.clone(),
                resources,
            };
            alloc.add_used(&offer).is_ok()
        });
        // A task the agent reported beyond its totals (totals shrank) is
        // still running; place around it as best we can.
        if !held {
            tracing::warn!(agent = %u.agent, role = %u.role, "running task does not fit its agent's reported resources");
        }
    }
    let hostnames: BTreeMap<&str, &str> = agents
        .iter()
        .map(|a| (a.id.as_str(), a.hostname.as_str()))
        .collect();
    let mut remaining: Vec<usize> = needs.iter().map(|n| n.count).collect();
    let mut on_agents: Vec<BTreeSet<String>> = needs.iter().map(|n| n.on_agents.clone()).collect();
    // Each round either places an instance or filters an (agent, role) pair
    // for the rest of this pass, so the rounds are bounded.
    let max_rounds = remaining.iter().sum::<usize>() + agents.len() * roles.len() + 1;
    for _ in 0..max_rounds {
        if remaining.iter().all(|&r| r == 0) {
            break;
        }
        let offers = alloc.allocate();
        if offers.is_empty() {
            break;
        }
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut placed = false;
            for (i, need) in needs.iter().enumerate() {
                if allocator_role(&need.role) != offer.role {
                    continue;
                }
                let host = hostnames.get(offer.agent.as_str()).copied().unwrap_or("");
                if need.only_host.as_deref().is_some_and(|h| h != host) {
                    continue;
                }
                // One instance per offer per round: the next round's offers
                // follow the updated DRF shares.
                if remaining[i] > 0 && !(need.unique_hosts && on_agents[i].contains(&offer.agent)) {
                    let Some(ports) = take(&mut left, need) else {
                        continue;
                    };
                    remaining[i] -= 1;
                    on_agents[i].insert(offer.agent.clone());
                    placed = true;
                    out.push(Placement {
                        app_id: need.app_id.clone(),
                        agent: offer.agent.clone(),
                        ports,
                    });
                }
            }
            // Decline what is left. An offer of the agent's unreserved
            // resources that nothing fitted is declined with a filter (as
            // Marathon declines with refuse_seconds), so they go to the next
            // role in DRF order; a reservation-only offer is not filtered (its
            // role may fit once it is offered the unreserved part too); an
            // offer that fitted comes back next round.
            let refuse = (!placed && !offer.resources.unreserved.is_empty())
                .then_some(std::time::Duration::from_secs(3600));
            let declined = Offer {
                resources: left,
                ..offer
            };
            alloc.recover(&declined, refuse)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, cpus: f64, mem: f64) -> AgentSlot {
        AgentSlot {
            id: id.into(),
            hostname: format!("host-{id}"),
            total: Resources::parse(&format!(
                "cpus:{cpus};mem:{mem};disk:1000;ports:[31000-31009]"
            ))
            .unwrap(),
        }
    }

    fn need(app: &str, role: &str, cpus: f64, mem: f64, count: usize) -> Need {
        Need {
            app_id: app.into(),
            role: role.into(),
            cpus,
            mem,
            disk: 0.0,
            ports: 1,
            count,
            unique_hosts: false,
            only_host: None,
            on_agents: BTreeSet::new(),
        }
    }

    #[test]
    fn fills_agents_and_assigns_distinct_ports() {
        let agents = [agent("a1", 2.0, 1024.0), agent("a2", 2.0, 1024.0)];
        let placed = place(&agents, &[], &[need("/web", "*", 1.0, 128.0, 3)]).unwrap();
        assert_eq!(placed.len(), 3);
        let mut seen = BTreeSet::new();
        for p in &placed {
            assert_eq!(p.ports.len(), 1);
            assert!((31000..=31009).contains(&p.ports[0]));
            assert!(
                seen.insert((p.agent.clone(), p.ports[0])),
                "port reused: {p:?}"
            );
        }
    }

    #[test]
    fn unique_hostnames_and_capacity_limit_placements() {
        let agents = [agent("a1", 8.0, 8192.0), agent("a2", 8.0, 8192.0)];
        let mut n = need("/db", "*", 1.0, 128.0, 3);
        n.unique_hosts = true;
        let placed = place(&agents, &[], &[n.clone()]).unwrap();
        assert_eq!(placed.len(), 2, "only two hosts: {placed:?}");
        n.on_agents.insert("a1".into());
        let placed = place(&agents, &[], &[n]).unwrap();
        assert_eq!(
            placed.iter().map(|p| p.agent.as_str()).collect::<Vec<_>>(),
            vec!["a2"]
        );
        // Not enough CPU anywhere: nothing placed.
        let placed = place(&agents, &[], &[need("/big", "*", 9.0, 128.0, 1)]).unwrap();
        assert!(placed.is_empty());
    }

    #[test]
    fn used_resources_and_ports_are_respected() {
        let agents = [agent("a1", 2.0, 1024.0)];
        let used = [UsedBy {
            agent: "a1".into(),
            role: "*".into(),
            cpus: 1.5,
            mem: 128.0,
            disk: 0.0,
            ports: vec![31000],
        }];
        let placed = place(&agents, &used, &[need("/web", "*", 0.5, 128.0, 5)]).unwrap();
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].ports, vec![31001]);
    }

    #[test]
    fn drf_between_roles() {
        // The DRF paper's cluster: 9 CPUs, 18 GB; A ⟨1 CPU, 4 GB⟩, B ⟨3 CPUs, 1 GB⟩.
        let agents = [AgentSlot {
            id: "a1".into(),
            hostname: "h".into(),
            total: Resources::parse("cpus:9;mem:18432;ports:[31000-31099]").unwrap(),
        }];
        let placed = place(
            &agents,
            &[],
            &[
                need("/a", "a", 1.0, 4096.0, 10),
                need("/b", "b", 3.0, 1024.0, 10),
            ],
        )
        .unwrap();
        let count = |app: &str| placed.iter().filter(|p| p.app_id == app).count();
        // A runs 3, B runs 2: both at a dominant share of 2/3.
        assert_eq!((count("/a"), count("/b")), (3, 2), "{placed:?}");
    }

    #[test]
    fn a_role_gets_its_reservation_and_others_do_not() {
        let agents = [AgentSlot {
            id: "a1".into(),
            hostname: "h".into(),
            total: Resources::parse(
                "cpus:0.5;mem:768;disk:1000;ports:[31000-31009];cpus(db):1.5;mem(db):256",
            )
            .unwrap(),
        }];
        // /web (default role) sees only 0.5 unreserved CPU; /db gets its 1.5
        // reserved plus the unreserved 0.5: two 1-CPU instances, the second
        // one using both.
        let placed = place(
            &agents,
            &[],
            &[
                need("/web", "*", 1.0, 32.0, 1),
                need("/db", "db", 1.0, 32.0, 3),
            ],
        )
        .unwrap();
        let apps: Vec<&str> = placed.iter().map(|p| p.app_id.as_str()).collect();
        assert_eq!(apps, vec!["/db", "/db"], "{placed:?}");
        // The same resources held by running tasks: nothing more fits.
        let used: Vec<UsedBy> = placed
            .iter()
            .map(|p| UsedBy {
                agent: p.agent.clone(),
                role: "db".into(),
                cpus: 1.0,
                mem: 32.0,
                disk: 0.0,
                ports: p.ports.clone(),
            })
            .collect();
        let again = place(
            &agents,
            &used,
            &[
                need("/web", "*", 1.0, 32.0, 1),
                need("/db", "db", 1.0, 32.0, 1),
            ],
        )
        .unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn unplaced_instances_say_why() {
        let agents = [agent("a1", 2.0, 1024.0), agent("a2", 2.0, 1024.0)];
        let big = need("/big", "*", 3.0, 64.0, 1);
        assert_eq!(
            why_unplaced(&agents, &[], &[], &big),
            "not enough cpus on any agent: needs 3, at most 2 free"
        );
        let mut unique = need("/u", "*", 0.1, 64.0, 1);
        unique.unique_hosts = true;
        unique.on_agents = ["a1".to_string(), "a2".to_string()].into();
        assert!(why_unplaced(&agents, &[], &[], &unique).contains("UNIQUE"));
        let mut pinned = need("/p", "*", 0.1, 64.0, 1);
        pinned.only_host = Some("elsewhere".into());
        assert!(why_unplaced(&agents, &[], &[], &pinned).contains("CLUSTER:elsewhere"));
        assert!(why_unplaced(&[], &[], &[], &big).contains("no connected agent"));
        let used = [UsedBy {
            agent: "a1".into(),
            role: "*".into(),
            cpus: 0.1,
            mem: 1000.0,
            disk: 0.0,
            ports: vec![],
        }];
        let mem = need("/m", "*", 0.1, 900.0, 1);
        let one = [agent("a1", 2.0, 1024.0)];
        assert!(why_unplaced(&one, &used, &[], &mem).starts_with("not enough mem"));
    }
}
