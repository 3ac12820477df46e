//! `garrison-control simulate FILE`: a what-if run of the allocator.
//!
//! Input (JSON): agents with resources (and optional reservations per role),
//! roles with optional weight and quota (a role not listed has weight 1 and no
//! quota), frameworks each with one role and one task shape:
//!
//! ```json
//! {"agents":[{"id":"a1","resources":{"cpus":9,"mem":18432},"reserved":{"db":{"cpus":2}}}],
//!  "roles":{"eng":{"weight":1,"quota":{"cpus":2}}},
//!  "frameworks":[{"id":"A","role":"eng","task":{"cpus":1,"mem":4096}}]}
//! ```
//!
//! Each cycle every framework launches at most one task from each offer it gets
//! and declines the rest with no filter; an offer too small for its task is
//! declined with a filter on that agent that lasts until the agent's free
//! resources change. It stops when a cycle launches nothing. Output:
//! `{"frameworks":{"A":{"tasks":3,"allocated":{"cpus":3,"mem":12288},"dominant_share":0.6667}},"cycles":N}`.
//! `dominant_share` is the framework's largest allocated/total over scalar
//! resources (unweighted, as in the DRF paper). Deterministic for a given seed.
use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    allocator::{Allocator, AllocatorError, ManualClock, Offer, Quota},
    resources::{Bundle, Quantity, Resources},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub agents: Vec<AgentSpec>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleSpec>,
    pub frameworks: Vec<FrameworkSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub id: String,
    pub resources: BTreeMap<String, f64>,
    #[serde(default)]
    pub reserved: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub weight: Option<f64>,
    pub quota: Option<BTreeMap<String, f64>>,
    pub limit: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkSpec {
    pub id: String,
    pub role: String,
    pub task: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct FrameworkResult {
    pub tasks: u64,
    pub allocated: BTreeMap<String, f64>,
    pub dominant_share: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SimulationResult {
    pub frameworks: BTreeMap<String, FrameworkResult>,
    pub cycles: u64,
}

/// Why a scenario could not be simulated.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("not a scenario: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Allocator(#[from] AllocatorError),
    #[error("framework {0:?}: its task asks for nothing")]
    EmptyTask(String),
}

fn bundle(pairs: &BTreeMap<String, f64>) -> Result<Bundle, AllocatorError> {
    let mut b = Bundle::default();
    for (k, v) in pairs {
        b.scalars.insert(k.clone(), Quantity::from_f64(k, *v)?);
    }
    Ok(b)
}

fn scalars(pairs: &BTreeMap<String, f64>) -> Result<BTreeMap<String, Quantity>, AllocatorError> {
    Ok(bundle(pairs)?.scalars)
}

/// How long "until the agent's free resources change" is at most.
const UNTIL_CHANGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Takes `task` out of an offer: from the role's reservations first, then
/// unreserved. `None` if the offer is too small.
fn take_task(offer: &Offer, task: &Bundle) -> Option<Resources> {
    let mut used = Resources::default();
    for (k, need) in &task.scalars {
        let mut left = *need;
        for (role, b) in &offer.resources.reserved {
            let have = b.scalar(k).min(left);
            if !have.is_zero() {
                used.reserved
                    .entry(role.clone())
                    .or_default()
                    .scalars
                    .insert(k.clone(), have);
                left = left.saturating_sub(have);
            }
        }
        let have = offer.resources.unreserved.scalar(k).min(left);
        if !have.is_zero() {
            used.unreserved.scalars.insert(k.clone(), have);
            left = left.saturating_sub(have);
        }
        if !left.is_zero() {
            return None;
        }
    }
    Some(used)
}

/// Runs a scenario.
pub fn simulate(text: &str, seed: u64) -> Result<SimulationResult, SimulateError> {
    let scenario: Scenario = serde_json::from_str(text)?;
    let clock = ManualClock::default();
    let mut alloc = Allocator::with_clock(clock.clone());
    alloc.set_seed(seed);
    let mut total = Resources::default();
    for a in &scenario.agents {
        let mut r = Resources {
            unreserved: bundle(&a.resources)?,
            reserved: BTreeMap::new(),
        };
        for (role, res) in &a.reserved {
            r.reserved.insert(role.clone(), bundle(res)?);
        }
        total.add(&r);
        alloc.add_agent(&a.id, r)?;
    }
    for (role, spec) in &scenario.roles {
        alloc.add_role(role)?;
        if let Some(w) = spec.weight {
            alloc.set_weight(role, w)?;
        }
        if spec.quota.is_some() || spec.limit.is_some() {
            alloc.set_quota(
                role,
                Quota {
                    guarantee: scalars(spec.quota.as_ref().unwrap_or(&BTreeMap::new()))?,
                    limit: spec.limit.as_ref().map(scalars).transpose()?,
                },
            )?;
        }
    }
    let mut tasks: BTreeMap<String, (Bundle, u64, Resources)> = BTreeMap::new();
    for f in &scenario.frameworks {
        let task = bundle(&f.task)?;
        if task.is_empty() {
            return Err(SimulateError::EmptyTask(f.id.clone()));
        }
        alloc.add_framework(&f.id, &[f.role.as_str()])?;
        tasks.insert(f.id.clone(), (task, 0, Resources::default()));
    }
    let mut cycles = 0;
    loop {
        let offers = alloc.allocate();
        cycles += 1;
        let mut launched = 0;
        for offer in &offers {
            let (task, count, used_total) =
                tasks.get_mut(&offer.framework).expect("known framework");
            match take_task(offer, task) {
                Some(used) => {
                    let mut rest = offer.resources.clone();
                    rest.subtract(&used).expect("taken from the offer");
                    let back = Offer {
                        resources: rest,
                        ..offer.clone()
                    };
                    alloc.recover(&back, None)?;
                    alloc.clear_agent_filters(&offer.agent)?;
                    *count += 1;
                    used_total.add(&used);
                    launched += 1;
                }
                None => alloc.recover(offer, Some(UNTIL_CHANGE))?,
            }
        }
        if launched == 0 || cycles >= 1_000_000 {
            break;
        }
    }
    let totals = total.scalar_totals();
    let frameworks = tasks
        .into_iter()
        .map(|(id, (_, count, used))| {
            let allocated = used.scalar_totals();
            let share = allocated
                .iter()
                .filter_map(|(k, v)| {
                    let t = totals.get(k)?;
                    (!t.is_zero()).then(|| v.milli() as f64 / t.milli() as f64)
                })
                .fold(0.0, f64::max);
            (
                id,
                FrameworkResult {
                    tasks: count,
                    allocated: allocated
                        .into_iter()
                        .map(|(k, v)| (k, v.as_f64()))
                        .collect(),
                    dominant_share: (share * 10_000.0).round() / 10_000.0,
                },
            )
        })
        .collect();
    Ok(SimulationResult { frameworks, cycles })
}
