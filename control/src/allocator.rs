//! The hierarchical DRF allocator, after the Mesos master's.
//!
//! Each [`Allocator::allocate`] cycle visits agents (in a seeded shuffled
//! order) and, per agent, roles in DRF order and frameworks in DRF order
//! within each role, offering the first eligible framework what the agent has
//! available for its role:
//!
//! 1. **quota stage**: only roles whose top-level role has an unmet quota
//!    guarantee, offered unreserved resources up to what the guarantee still
//!    needs (and within the quota limit), plus their reservations;
//! 2. **fair-share stage**: every role; unreserved resources are offered only
//!    beyond the headroom that unmet guarantees of other roles still need, and
//!    within the role's quota limit.
//!
//! Reserved resources go only to their role and its descendants. A framework
//! that declined an agent with a filter is not offered that agent again until
//! the filter expires (default 5 s; per framework, role and agent).
//! Suppressed frameworks are not offered anything until revived (revive also
//! clears their filters). An offer must hold at least cpus 0.01 or mem 32 MB.
//! Time comes from an injectable [`Clock`].
//!
//! Cost: an agent on which every eligible framework is filtered is skipped in
//! O(1) (a per-agent count of live filters), so a cycle in which everyone
//! declines costs O(agents), not O(agents × frameworks).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    resources::{Bundle, Quantity, ResourceError, Resources},
    sorter::{ClientId, DrfSorter, RandomSorter},
};

/// Monotonic time for filters.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock(std::time::Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(std::time::Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// Typed errors; nothing in the allocator panics on bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocatorError {
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("agent {0:?} already exists")]
    DuplicateAgent(String),
    #[error("unknown framework {0:?}")]
    UnknownFramework(String),
    #[error("framework {0:?} already exists")]
    DuplicateFramework(String),
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    #[error("role name {0:?} is invalid (non-empty path segments of [a-zA-Z0-9_.-], not . or ..)")]
    InvalidRole(String),
    #[error("framework {0:?} has no role")]
    NoRole(String),
    #[error("role {role:?}: weight {weight} must be a finite number above 0")]
    InvalidWeight { role: String, weight: String },
    #[error("role {0:?}: quota is only supported on top-level roles")]
    QuotaOnNestedRole(String),
    #[error("role {role:?}: quota limit is below its guarantee for {resource}")]
    QuotaLimitBelowGuarantee { role: String, resource: String },
    #[error("framework {framework:?} is not subscribed to role {role:?}")]
    NotSubscribed { framework: String, role: String },
    #[error("agent {agent:?} does not have {resources} available")]
    Overcommitted { agent: String, resources: String },
    #[error(transparent)]
    Resources(#[from] ResourceError),
}

/// Validates a role path.
pub fn validate_role(role: &str) -> Result<(), AllocatorError> {
    let ok = !role.is_empty()
        && role.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(AllocatorError::InvalidRole(role.into()))
    }
}

fn top_level(role: &str) -> &str {
    role.split('/').next().unwrap_or(role)
}

/// Scalar amounts (quota guarantees and limits).
pub type Scalars = BTreeMap<String, Quantity>;

/// Quota of a top-level role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quota {
    /// Resources the role is guaranteed (offered first, held back from others).
    pub guarantee: Scalars,
    /// Resources the role may never exceed (absent: unlimited).
    pub limit: Option<Scalars>,
}

/// One offer: resources of one agent for one framework in one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub framework: String,
    pub role: String,
    pub agent: String,
    pub resources: Resources,
}

/// The smallest offer worth making (Mesos: cpus 0.01 or mem 32 MB).
#[derive(Debug, Clone, Copy)]
pub struct MinAllocatable {
    pub cpus: Quantity,
    pub mem: Quantity,
}

impl Default for MinAllocatable {
    fn default() -> Self {
        MinAllocatable {
            cpus: Quantity::from_milli(10),
            mem: Quantity::from_milli(32_000),
        }
    }
}

impl MinAllocatable {
    fn allows(&self, r: &Resources) -> bool {
        r.scalar("cpus") >= self.cpus && !r.scalar("cpus").is_zero()
            || r.scalar("mem") >= self.mem && !r.scalar("mem").is_zero()
    }
}

#[derive(Debug)]
struct Agent {
    id: String,
    total: Resources,
    allocated: Resources,
    /// Live filters on this agent (for the all-filtered skip).
    filtered: usize,
}

impl Agent {
    fn available(&self) -> Resources {
        let mut a = self.total.clone();
        a.subtract(&self.allocated).expect("allocated ⊆ total");
        a
    }
}

#[derive(Debug)]
struct Framework {
    id: String,
    roles: Vec<u32>,
    suppressed: bool,
}

#[derive(Debug)]
struct Role {
    name: String,
    frameworks: DrfSorter,

    /// Framework sorter client → framework index.
    fw_of_client: HashMap<ClientId, usize>,
    /// This role's client in the role sorter.
    client: ClientId,
    quota: Option<Quota>,
}

/// A filter key: (framework index, role index, agent index).
type FilterKey = (usize, u32, usize);

/// The allocator. `C` is the clock.
pub struct Allocator<C: Clock = SystemClock> {
    clock: C,
    agents: Vec<Agent>,
    agent_index: HashMap<String, usize>,
    /// Sum of every agent's total.
    total: Resources,
    totals_dirty: bool,
    frameworks: Vec<Framework>,
    framework_index: HashMap<String, usize>,
    roles: Vec<Role>,
    role_index: HashMap<String, u32>,
    role_of_client: HashMap<ClientId, u32>,
    role_sorter: DrfSorter,
    filters: HashMap<FilterKey, Duration>,
    expiries: BTreeSet<(Duration, usize, u32, usize)>,
    /// Number of (framework, role) pairs that can receive offers.
    eligible: usize,
    min: MinAllocatable,
    seed: u64,
    cycle: u64,
    /// `Some`: roles are ordered by a weighted shuffle instead of DRF.
    random_roles: Option<RandomSorter>,
}

/// How roles are ordered in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleOrder {
    /// Hierarchical DRF (the default, as Mesos).
    Drf,
    /// A weighted random shuffle per agent (Mesos' `random` sorter), seeded.
    Random { seed: u64 },
}

impl Allocator<SystemClock> {
    pub fn new() -> Self {
        Self::with_clock(SystemClock::default())
    }
}

impl Default for Allocator<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

/// `q` capped by the room left under a quota limit for resource `k`.
fn within_room(room: Option<&Scalars>, k: &str, q: Quantity) -> Quantity {
    match room.and_then(|r| r.get(k)) {
        Some(r) => q.min(*r),
        None => q,
    }
}

/// True if `reserved_for` is `role` or one of its ancestors.
fn reservation_applies(reserved_for: &str, role: &str) -> bool {
    role == reserved_for
        || (role.len() > reserved_for.len()
            && role.starts_with(reserved_for)
            && role.as_bytes()[reserved_for.len()] == b'/')
}

impl<C: Clock> Allocator<C> {
    pub fn with_clock(clock: C) -> Self {
        Allocator {
            clock,
            agents: Vec::new(),
            agent_index: HashMap::new(),
            total: Resources::default(),
            totals_dirty: false,
            frameworks: Vec::new(),
            framework_index: HashMap::new(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            role_of_client: HashMap::new(),
            role_sorter: DrfSorter::new(),
            filters: HashMap::new(),
            expiries: BTreeSet::new(),
            eligible: 0,
            min: MinAllocatable::default(),
            seed: 0x9E37_79B9_7F4A_7C15,
            cycle: 0,
            random_roles: None,
        }
    }

    /// Chooses how roles are ordered (frameworks within a role stay DRF).
    pub fn set_role_order(&mut self, order: RoleOrder) {
        self.random_roles = match order {
            RoleOrder::Drf => None,
            RoleOrder::Random { seed } => {
                let mut r = RandomSorter::new(seed);
                for role in &self.roles {
                    r.add(&role.name, self.role_sorter.weight(&role.name));
                    r.set_active(&role.name, self.role_sorter.is_active(role.client));
                }
                Some(r)
            }
        };
    }

    /// Seed of the agent visiting order (deterministic for a given seed).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    pub fn set_min_allocatable(&mut self, min: MinAllocatable) {
        self.min = min;
    }

    /// Gives every sorter the current cluster totals (lazily: adding 10,000
    /// agents must not re-sort 10,000 times).
    fn refresh_totals(&mut self) {
        if !self.totals_dirty {
            return;
        }
        let total = self.total.scalar_totals();
        self.role_sorter.set_total(total.clone());
        for r in &mut self.roles {
            r.frameworks.set_total(total.clone());
        }
        self.totals_dirty = false;
    }

    /// Adds an agent with its total resources (static reservations included
    /// as `cpus(role):n`).
    pub fn add_agent(&mut self, id: &str, total: Resources) -> Result<(), AllocatorError> {
        if self.agent_index.contains_key(id) {
            return Err(AllocatorError::DuplicateAgent(id.into()));
        }
        for role in total.reserved.keys() {
            validate_role(role)?;
        }
        self.total.add(&total);
        self.totals_dirty = true;
        self.agent_index.insert(id.into(), self.agents.len());
        self.agents.push(Agent {
            id: id.into(),
            total,
            allocated: Resources::default(),
            filtered: 0,
        });
        Ok(())
    }

    fn role_id(&mut self, role: &str) -> Result<u32, AllocatorError> {
        validate_role(role)?;
        if let Some(&r) = self.role_index.get(role) {
            return Ok(r);
        }
        let idx = self.roles.len() as u32;
        let mut frameworks = DrfSorter::new();
        frameworks.set_total(self.total.scalar_totals());
        let client = self.role_sorter.add(role);
        // A role sorts as a client only while it has frameworks.
        self.role_sorter.deactivate(client);
        if let Some(r) = self.random_roles.as_mut() {
            r.add(role, 1.0);
            r.set_active(role, false);
        }
        self.roles.push(Role {
            name: role.to_string(),
            frameworks,
            fw_of_client: HashMap::new(),
            client,
            quota: None,
        });
        self.role_index.insert(role.to_string(), idx);
        self.role_of_client.insert(client, idx);
        Ok(idx)
    }

    /// Declares a role (optional: roles also come into being with frameworks).
    pub fn add_role(&mut self, role: &str) -> Result<(), AllocatorError> {
        self.role_id(role).map(drop)
    }

    /// Sets a role's weight (> 0, finite).
    pub fn set_weight(&mut self, role: &str, weight: f64) -> Result<(), AllocatorError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AllocatorError::InvalidWeight {
                role: role.into(),
                weight: weight.to_string(),
            });
        }
        if !self.role_index.contains_key(role) {
            return Err(AllocatorError::UnknownRole(role.into()));
        }
        self.role_sorter.set_weight(role, weight);
        if let Some(r) = self.random_roles.as_mut() {
            r.set_weight(role, weight);
        }
        Ok(())
    }

    /// Sets the quota of a top-level role.
    pub fn set_quota(&mut self, role: &str, quota: Quota) -> Result<(), AllocatorError> {
        validate_role(role)?;
        if role.contains('/') {
            return Err(AllocatorError::QuotaOnNestedRole(role.into()));
        }
        if let Some(limit) = &quota.limit {
            for (k, g) in &quota.guarantee {
                if limit.get(k).is_some_and(|l| l < g) {
                    return Err(AllocatorError::QuotaLimitBelowGuarantee {
                        role: role.into(),
                        resource: k.clone(),
                    });
                }
            }
        }
        let r = self.role_id(role)?;
        self.roles[r as usize].quota = Some(quota);
        Ok(())
    }

    /// Adds a framework subscribed to `roles`.
    pub fn add_framework(&mut self, id: &str, roles: &[&str]) -> Result<(), AllocatorError> {
        if self.framework_index.contains_key(id) {
            return Err(AllocatorError::DuplicateFramework(id.into()));
        }
        if roles.is_empty() {
            return Err(AllocatorError::NoRole(id.into()));
        }
        for role in roles {
            validate_role(role)?;
        }
        let f = self.frameworks.len();
        let mut role_ids = Vec::new();
        for role in roles {
            let r = self.role_id(role)?;
            let state = &mut self.roles[r as usize];
            let client = state.frameworks.add(id);
            state.fw_of_client.insert(client, f);
            let rc = state.client;
            self.role_sorter.activate(rc);
            if let Some(r) = self.random_roles.as_mut() {
                r.set_active(role, true);
            }
            self.eligible += 1;
            role_ids.push(r);
        }
        self.framework_index.insert(id.into(), f);
        self.frameworks.push(Framework {
            id: id.into(),
            roles: role_ids,
            suppressed: false,
        });
        Ok(())
    }

    fn framework(&self, id: &str) -> Result<usize, AllocatorError> {
        self.framework_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownFramework(id.into()))
    }

    fn agent(&self, id: &str) -> Result<usize, AllocatorError> {
        self.agent_index
            .get(id)
            .copied()
            .ok_or_else(|| AllocatorError::UnknownAgent(id.into()))
    }

    fn drop_framework_filters(&mut self, f: usize) {
        let keys: Vec<FilterKey> = self.filters.keys().filter(|k| k.0 == f).copied().collect();
        for k in keys {
            self.drop_filter(&k);
        }
    }

    /// Stops offering to a framework until [`Allocator::revive`]. Its filters
    /// are dropped (revive would clear them anyway), so the per-agent filter
    /// counts only ever count eligible frameworks.
    pub fn suppress(&mut self, framework: &str) -> Result<(), AllocatorError> {
        let f = self.framework(framework)?;
        self.drop_framework_filters(f);
        if !self.frameworks[f].suppressed {
            self.frameworks[f].suppressed = true;
            for r in self.frameworks[f].roles.clone() {
                let sorter = &mut self.roles[r as usize].frameworks;
                let id = sorter.id(framework).expect("client");
                sorter.deactivate(id);
                self.eligible -= 1;
            }
        }
        Ok(())
    }

    /// Offers to a framework again and clears its filters.
    pub fn revive(&mut self, framework: &str) -> Result<(), AllocatorError> {
        let f = self.framework(framework)?;
        if self.frameworks[f].suppressed {
            self.frameworks[f].suppressed = false;
            for r in self.frameworks[f].roles.clone() {
                let sorter = &mut self.roles[r as usize].frameworks;
                let id = sorter.id(framework).expect("client");
                sorter.activate(id);
                self.eligible += 1;
            }
        }
        self.drop_framework_filters(f);
        Ok(())
    }

    fn drop_filter(&mut self, k: &FilterKey) {
        if let Some(until) = self.filters.remove(k) {
            self.expiries.remove(&(until, k.0, k.1, k.2));
            self.agents[k.2].filtered -= 1;
        }
    }

    fn add_filter(&mut self, k: FilterKey, until: Duration) {
        self.drop_filter(&k);
        self.expiries.insert((until, k.0, k.1, k.2));
        self.agents[k.2].filtered += 1;
        self.filters.insert(k, until);
    }

    fn expire_filters(&mut self) {
        let now = self.clock.now();
        while let Some(&first) = self.expiries.first() {
            if first.0 > now {
                break;
            }
            self.drop_filter(&(first.1, first.2, first.3));
        }
    }

    /// Removes every filter on an agent (e.g. its free resources changed).
    pub fn clear_agent_filters(&mut self, agent: &str) -> Result<(), AllocatorError> {
        let a = self.agent(agent)?;
        let keys: Vec<FilterKey> = self.filters.keys().filter(|k| k.2 == a).copied().collect();
        for k in keys {
            self.drop_filter(&k);
        }
        Ok(())
    }

    fn note_allocated(&mut self, f: usize, r: u32, a: usize, res: &Resources) {
        self.agents[a].allocated.add(res);
        let scalars = res.scalar_totals();
        let role = &mut self.roles[r as usize];
        self.role_sorter.allocated(role.client, &scalars);
        let fid = role
            .frameworks
            .id(&self.frameworks[f].id)
            .expect("framework client");
        role.frameworks.allocated(fid, &scalars);
    }

    /// Returns resources of an offer (declined or tasks ended). With
    /// `refuse`, the framework is not offered this agent in this role again
    /// for that long (Mesos' default for declines is 5 s).
    pub fn recover(
        &mut self,
        offer: &Offer,
        refuse: Option<Duration>,
    ) -> Result<(), AllocatorError> {
        let f = self.framework(&offer.framework)?;
        let a = self.agent(&offer.agent)?;
        let r = self
            .role_index
            .get(&offer.role)
            .copied()
            .filter(|r| self.frameworks[f].roles.contains(r))
            .ok_or_else(|| AllocatorError::NotSubscribed {
                framework: offer.framework.clone(),
                role: offer.role.clone(),
            })?;
        self.agents[a].allocated.subtract(&offer.resources)?;
        let scalars = offer.resources.scalar_totals();
        let role = &mut self.roles[r as usize];
        self.role_sorter.unallocated(role.client, &scalars);
        let fid = role
            .frameworks
            .id(&offer.framework)
            .expect("framework client");
        role.frameworks.unallocated(fid, &scalars);
        if let Some(d) = refuse
            && !d.is_zero()
            && !self.frameworks[f].suppressed
        {
            let until = self.clock.now() + d;
            self.add_filter((f, r, a), until);
        }
        Ok(())
    }

    /// Dynamically reserves available unreserved resources of an agent for a role.
    pub fn reserve(
        &mut self,
        agent: &str,
        role: &str,
        resources: &Bundle,
    ) -> Result<(), AllocatorError> {
        validate_role(role)?;
        let a = self.agent(agent)?;
        let mut available = self.agents[a].available();
        let want = Resources {
            unreserved: resources.clone(),
            reserved: BTreeMap::new(),
        };
        available.subtract(&want)?;
        let agent = &mut self.agents[a];
        agent.total.unreserved.subtract(resources)?;
        agent
            .total
            .reserved
            .entry(role.to_string())
            .or_default()
            .add(resources);
        self.total.unreserved.subtract(resources)?;
        self.total
            .reserved
            .entry(role.to_string())
            .or_default()
            .add(resources);
        Ok(())
    }

    /// Releases a dynamic (or static) reservation back to unreserved.
    pub fn unreserve(
        &mut self,
        agent: &str,
        role: &str,
        resources: &Bundle,
    ) -> Result<(), AllocatorError> {
        let a = self.agent(agent)?;
        let mut available = self.agents[a].available();
        let mut want = Resources::default();
        want.reserved.insert(role.to_string(), resources.clone());
        available.subtract(&want)?;
        let agent = &mut self.agents[a];
        agent
            .total
            .reserved
            .get_mut(role)
            .expect("contained")
            .subtract(resources)?;
        agent.total.reserved.retain(|_, b| !b.is_empty());
        agent.total.unreserved.add(resources);
        if let Some(b) = self.total.reserved.get_mut(role) {
            b.subtract(resources)?;
        }
        self.total.reserved.retain(|_, b| !b.is_empty());
        self.total.unreserved.add(resources);
        Ok(())
    }

    /// Scalars allocated to a role and its descendants.
    pub fn role_allocation(&self, role: &str) -> Scalars {
        self.role_sorter.allocation(role)
    }

    /// Marks resources already in use by a framework's running tasks as
    /// allocated (Mesos' `used` when an agent is re-added after a failover):
    /// they must be available on the agent.
    pub fn add_used(&mut self, used: &Offer) -> Result<(), AllocatorError> {
        let f = self.framework(&used.framework)?;
        let a = self.agent(&used.agent)?;
        let r = self
            .role_index
            .get(&used.role)
            .copied()
            .filter(|r| self.frameworks[f].roles.contains(r))
            .ok_or_else(|| AllocatorError::NotSubscribed {
                framework: used.framework.clone(),
                role: used.role.clone(),
            })?;
        if !self.agents[a].available().contains(&used.resources) {
            return Err(AllocatorError::Overcommitted {
                agent: used.agent.clone(),
                resources: used.resources.to_string(),
            });
        }
        self.note_allocated(f, r, a, &used.resources);
        Ok(())
    }

    /// An agent's unallocated resources.
    pub fn available(&self, agent: &str) -> Result<Resources, AllocatorError> {
        Ok(self.agents[self.agent(agent)?].available())
    }

    /// What is allocated on an agent.
    pub fn allocated(&self, agent: &str) -> Result<Resources, AllocatorError> {
        Ok(self.agents[self.agent(agent)?].allocated.clone())
    }

    /// The agent visiting order of this cycle: a seeded Fisher–Yates shuffle.
    fn agent_order(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.agents.len()).collect();
        let mut s = self.seed ^ self.cycle.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
        for i in (1..order.len()).rev() {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let j = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        self.cycle += 1;
        order
    }

    /// For each role: the index of its top-level role if that one has a quota.
    fn quota_top(&self) -> Vec<Option<u32>> {
        self.roles
            .iter()
            .map(|r| {
                let top = top_level(&r.name);
                let t = *self.role_index.get(top)?;
                self.roles[t as usize].quota.is_some().then_some(t)
            })
            .collect()
    }

    /// Unmet guarantee of a top-level quota role.
    fn unmet_of(&self, top: u32) -> Scalars {
        let role = &self.roles[top as usize];
        let Some(q) = &role.quota else {
            return BTreeMap::new();
        };
        let consumed = self.role_sorter.allocation(&role.name);
        q.guarantee
            .iter()
            .filter_map(|(k, g)| {
                let left = g.saturating_sub(consumed.get(k).copied().unwrap_or_default());
                (!left.is_zero()).then(|| (k.clone(), left))
            })
            .collect()
    }

    /// Room under a top-level role's quota limit, per limited scalar.
    fn limit_room(&self, top: Option<u32>) -> Option<Scalars> {
        let role = &self.roles[top? as usize];
        let limit = role.quota.as_ref()?.limit.as_ref()?;
        let consumed = self.role_sorter.allocation(&role.name);
        Some(
            limit
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        l.saturating_sub(consumed.get(k).copied().unwrap_or_default()),
                    )
                })
                .collect(),
        )
    }

    /// What `available` can offer role `r`: reservations of the role and its
    /// ancestors, plus unreserved resources capped per scalar by `cap`.
    fn offerable(
        &self,
        available: &Resources,
        r: u32,
        cap: &dyn Fn(&str, Quantity) -> Quantity,
    ) -> Resources {
        let role = &self.roles[r as usize].name;
        let mut offer = Resources::default();
        for (reserved_for, bundle) in &available.reserved {
            if reservation_applies(reserved_for, role) {
                offer.reserved.insert(reserved_for.clone(), bundle.clone());
            }
        }
        let mut unreserved = Bundle::default();
        for (k, q) in &available.unreserved.scalars {
            let c = cap(k, *q).min(*q);
            if !c.is_zero() {
                unreserved.scalars.insert(k.clone(), c);
            }
        }
        if !unreserved.scalars.is_empty() {
            unreserved.ranges = available.unreserved.ranges.clone();
            unreserved.sets = available.unreserved.sets.clone();
        }
        offer.unreserved = unreserved;
        offer
    }

    /// Offers `available` (of agent `a`) to the first eligible framework of
    /// role `r`, if allocatable; the offer is allocated and `available` shrinks.
    fn offer_in_role(
        &mut self,
        a: usize,
        r: u32,
        available: &mut Resources,
        cap: &dyn Fn(&str, Quantity) -> Quantity,
    ) -> Option<Offer> {
        let resources = self.offerable(available, r, cap);
        if resources.is_empty() || !self.min.allows(&resources) {
            return None;
        }
        let chosen = {
            let role = &mut self.roles[r as usize];
            let filters = &self.filters;
            let fw_of_client = &role.fw_of_client;
            let client = role
                .frameworks
                .find_first(|c| !filters.contains_key(&(fw_of_client[&c], r, a)))?;
            fw_of_client[&client]
        };

        self.note_allocated(chosen, r, a, &resources);
        available
            .subtract(&resources)
            .expect("offered from available");
        Some(Offer {
            framework: self.frameworks[chosen].id.clone(),
            role: self.roles[r as usize].name.clone(),
            agent: self.agents[a].id.clone(),
            resources,
        })
    }

    fn unreserved_free(&self) -> Scalars {
        let mut free: Scalars = BTreeMap::new();
        for agent in &self.agents {
            for (k, v) in &agent.total.unreserved.scalars {
                *free.entry(k.clone()).or_default() += *v;
            }
            for (k, v) in &agent.allocated.unreserved.scalars {
                if let Some(f) = free.get_mut(k) {
                    *f = f.saturating_sub(*v);
                }
            }
        }
        free
    }

    /// Role order as role indices.
    fn role_order(&mut self) -> Vec<u32> {
        if let Some(r) = self.random_roles.as_mut() {
            return r.sort().iter().map(|name| self.role_index[name]).collect();
        }
        let ids = self.role_sorter.sort();
        ids.iter().map(|c| self.role_of_client[c]).collect()
    }

    /// One allocation cycle: returns the offers made (their resources are
    /// allocated until recovered).
    pub fn allocate(&mut self) -> Vec<Offer> {
        self.refresh_totals();
        self.expire_filters();
        let mut offers = Vec::new();
        let order = self.agent_order();
        let mut free = self.unreserved_free();
        let quota_top = self.quota_top();
        let mut unmet: BTreeMap<u32, Scalars> = BTreeMap::new();
        for (i, r) in self.roles.iter().enumerate() {
            if r.quota.is_some() {
                let u = self.unmet_of(i as u32);
                if !u.is_empty() {
                    unmet.insert(i as u32, u);
                }
            }
        }
        let mut required = Scalars::new();
        for need in unmet.values() {
            for (k, v) in need {
                *required.entry(k.clone()).or_default() += *v;
            }
        }

        // Stage 1: roles whose top-level role has an unmet guarantee get the
        // guaranteed kinds up to what the guarantee still needs, and other
        // kinds as far as no unmet guarantee needs them.
        if !unmet.is_empty() {
            for &a in &order {
                if unmet.is_empty() {
                    break;
                }
                let mut available = self.agents[a].available();
                for r in self.role_order() {
                    if !self.min.allows(&available) {
                        break;
                    }
                    let Some(top) = quota_top[r as usize] else {
                        continue;
                    };
                    let Some(need) = unmet.get(&top) else {
                        continue;
                    };
                    let room = self.limit_room(Some(top));
                    let cap = |k: &str, q: Quantity| {
                        let allowed = match need.get(k) {
                            Some(n) => (*n).min(q),
                            None => free
                                .get(k)
                                .copied()
                                .unwrap_or_default()
                                .saturating_sub(required.get(k).copied().unwrap_or_default())
                                .min(q),
                        };
                        within_room(room.as_ref(), k, allowed)
                    };
                    let Some(offer) = self.offer_in_role(a, r, &mut available, &cap) else {
                        continue;
                    };
                    for (k, v) in &offer.resources.unreserved.scalars {
                        if let Some(f) = free.get_mut(k) {
                            *f = f.saturating_sub(*v);
                        }
                    }
                    let before = unmet.remove(&top).unwrap_or_default();
                    let after = self.unmet_of(top);
                    for (k, v) in &before {
                        let now = after.get(k).copied().unwrap_or_default();
                        if let Some(req) = required.get_mut(k) {
                            *req = req.saturating_sub(v.saturating_sub(now));
                        }
                    }
                    if !after.is_empty() {
                        unmet.insert(top, after);
                    }
                    offers.push(offer);
                }
            }
        }

        // Stage 2: everyone, holding back headroom for unmet guarantees.
        for &a in &order {
            if self.eligible == 0 || self.agents[a].filtered >= self.eligible {
                continue;
            }
            let mut available = self.agents[a].available();
            for r in self.role_order() {
                if !self.min.allows(&available) {
                    break;
                }
                let top = quota_top[r as usize];
                let own_unmet = top.and_then(|t| unmet.get(&t)).cloned().unwrap_or_default();
                let room = self.limit_room(top);
                let cap = |k: &str, q: Quantity| {
                    let f = free.get(k).copied().unwrap_or_default();
                    let held = required.get(k).copied().unwrap_or_default();
                    let own = own_unmet.get(k).copied().unwrap_or_default();
                    // What can go without eating into others' unmet guarantees.
                    let allowed = (f.saturating_sub(held) + own).min(q);
                    within_room(room.as_ref(), k, allowed)
                };
                let Some(offer) = self.offer_in_role(a, r, &mut available, &cap) else {
                    continue;
                };
                for (k, v) in &offer.resources.unreserved.scalars {
                    if let Some(f) = free.get_mut(k) {
                        *f = f.saturating_sub(*v);
                    }
                    if let Some(o) = own_unmet.get(k)
                        && let Some(req) = required.get_mut(k)
                    {
                        *req = req.saturating_sub((*v).min(*o));
                    }
                }
                if let Some(t) = top {
                    let u = self.unmet_of(t);
                    if u.is_empty() {
                        unmet.remove(&t);
                    } else {
                        unmet.insert(t, u);
                    }
                }
                offers.push(offer);
            }
        }
        offers
    }
}
