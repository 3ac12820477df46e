//! Sorting clients (roles, or frameworks within a role) for allocation.
//!
//! [`DrfSorter`]: hierarchical Dominant Resource Fairness over client paths
//! (`"eng/web"`). A node's share is the largest, over scalar resources, of its
//! allocation divided by the cluster total, divided by its weight; allocations
//! add up into ancestors and sorting is per level: lower share first, then
//! fewer allocations so far, then name. Inactive clients are never returned. A
//! client that is also a parent (clients `a` and `a/b`) keeps its own
//! allocation in a virtual leaf `a/.` under the internal node `a`, as Mesos does.
//!
//! Shares are cached per node and a node moves within its parent's sorted
//! children when its allocation changes, so an allocation costs O(depth ×
//! siblings) at worst and a sort without changes returns the cached order.
//!
//! [`RandomSorter`]: a weighted shuffle, as Mesos' random sorter.
use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
};

use crate::resources::Quantity;

/// Index of a client (a leaf) in a sorter.
pub type ClientId = usize;

#[derive(Debug, Clone)]
struct Node {
    name: String,
    path: String,
    parent: Option<usize>,
    /// Sorted by (share, allocations, name) unless `dirty`.
    children: Vec<usize>,
    dirty: bool,
    leaf: bool,
    active: bool,
    removed: bool,
    allocation: BTreeMap<String, Quantity>,
    allocations: u64,
    share: f64,
}

impl Node {
    fn new(name: &str, path: &str, parent: Option<usize>, leaf: bool) -> Self {
        Node {
            name: name.to_string(),
            path: path.to_string(),
            parent,
            children: Vec::new(),
            dirty: true,
            leaf,
            active: leaf,
            removed: false,
            allocation: BTreeMap::new(),
            allocations: 0,
            share: 0.0,
        }
    }
}

/// Hierarchical DRF sorter.
#[derive(Debug, Clone)]
pub struct DrfSorter {
    nodes: Vec<Node>,
    /// Client path → leaf; internal path → internal node (under `internal:`).
    clients: HashMap<String, usize>,
    internals: HashMap<String, usize>,
    total: BTreeMap<String, Quantity>,
    weights: HashMap<String, f64>,
    cache: Option<Vec<ClientId>>,
}

impl Default for DrfSorter {
    fn default() -> Self {
        Self::new()
    }
}

/// `"a/b/c"` → (`"a/b"`, `"c"`); a top-level path has the root `""` as parent.
fn split_path(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn key_cmp(a: &Node, b: &Node) -> Ordering {
    a.share
        .total_cmp(&b.share)
        .then(a.allocations.cmp(&b.allocations))
        .then_with(|| a.name.cmp(&b.name))
}

impl DrfSorter {
    pub fn new() -> Self {
        DrfSorter {
            nodes: vec![Node::new("", "", None, false)],
            clients: HashMap::new(),
            internals: HashMap::from([(String::new(), 0)]),
            total: BTreeMap::new(),
            weights: HashMap::new(),
            cache: None,
        }
    }

    /// The cluster totals shares are computed against.
    pub fn set_total(&mut self, total: BTreeMap<String, Quantity>) {
        self.total = total;
        for i in 0..self.nodes.len() {
            self.refresh_share(i);
            self.nodes[i].dirty = true;
        }
        self.cache = None;
    }

    /// Weight of a path (a role); 1 unless set. Must be finite and positive
    /// (checked by the caller).
    pub fn set_weight(&mut self, path: &str, weight: f64) {
        self.weights.insert(path.to_string(), weight);
        let ids: Vec<usize> = [self.clients.get(path), self.internals.get(path)]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for id in ids {
            self.touch(id);
        }
        self.cache = None;
    }

    /// The weight set for a path (1 unless set).
    pub fn weight(&self, path: &str) -> f64 {
        self.weights.get(path).copied().unwrap_or(1.0)
    }

    fn weight_of(&self, node: &Node) -> f64 {
        // A virtual leaf `a/.` carries the weight of `a`.
        let path = node.path.strip_suffix("/.").unwrap_or(&node.path);
        self.weights.get(path).copied().unwrap_or(1.0)
    }

    fn refresh_share(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut share: f64 = 0.0;
        for (r, q) in &node.allocation {
            if let Some(t) = self.total.get(r)
                && !t.is_zero()
            {
                share = share.max(q.milli() as f64 / t.milli() as f64);
            }
        }
        let w = self.weight_of(node);
        self.nodes[i].share = share / w;
    }

    /// Recomputes `i`'s share and moves it to its place among its siblings,
    /// then does the same for its ancestors.
    fn touch(&mut self, mut i: usize) {
        loop {
            self.refresh_share(i);
            let Some(p) = self.nodes[i].parent else { break };
            if !self.nodes[p].dirty {
                let pos = self.nodes[p]
                    .children
                    .iter()
                    .position(|&c| c == i)
                    .expect("child of parent");
                self.nodes[p].children.remove(pos);
                let nodes = &self.nodes;
                let at = nodes[p]
                    .children
                    .partition_point(|&c| key_cmp(&nodes[c], &nodes[i]) == Ordering::Less);
                self.nodes[p].children.insert(at, i);
            }
            i = p;
        }
        self.cache = None;
    }

    /// Appends a node under `parent` (whose order then needs a re-sort).
    fn push_node(&mut self, name: &str, path: &str, parent: usize, leaf: bool) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node::new(name, path, Some(parent), leaf));
        self.nodes[parent].children.push(id);
        self.nodes[parent].dirty = true;
        id
    }

    fn internal(&mut self, path: &str) -> usize {
        if let Some(&i) = self.internals.get(path) {
            return i;
        }
        let (parent_path, name) = split_path(path);
        let parent = self.internal(parent_path);
        let id = self.push_node(name, path, parent, false);
        self.internals.insert(path.to_string(), id);
        // A client with this very path becomes the virtual leaf `path/.`.
        if let Some(leaf) = self.clients.get(path).copied() {
            let old_parent = self.nodes[leaf].parent.expect("leaf has a parent");
            self.nodes[old_parent].children.retain(|&c| c != leaf);
            self.nodes[leaf].parent = Some(id);
            self.nodes[leaf].name = ".".into();
            self.nodes[leaf].path = format!("{path}/.");
            self.nodes[id].children.push(leaf);
            self.nodes[id].allocation = self.nodes[leaf].allocation.clone();
            self.nodes[id].allocations = self.nodes[leaf].allocations;
            self.nodes[id].dirty = true;
            self.refresh_share(id);
        }
        id
    }

    /// Adds a client (idempotent); it starts active.
    pub fn add(&mut self, path: &str) -> ClientId {
        if let Some(&c) = self.clients.get(path) {
            return c;
        }
        let (parent_path, name) = split_path(path);
        let parent = self.internal(parent_path);
        let id = match self.internals.get(path) {
            // Already a parent: the client's own allocation lives in `path/.`.
            Some(&internal) => self.push_node(".", &format!("{path}/."), internal, true),
            None => self.push_node(name, path, parent, true),
        };
        self.clients.insert(path.to_string(), id);
        self.cache = None;
        id
    }

    /// The id of a client.
    pub fn id(&self, path: &str) -> Option<ClientId> {
        self.clients.get(path).copied()
    }

    /// The client path of an id.
    pub fn path(&self, id: ClientId) -> &str {
        let p = &self.nodes[id].path;
        p.strip_suffix("/.").unwrap_or(p)
    }

    pub fn activate(&mut self, id: ClientId) {
        self.nodes[id].active = true;
        self.cache = None;
    }

    pub fn deactivate(&mut self, id: ClientId) {
        self.nodes[id].active = false;
        self.cache = None;
    }

    pub fn is_active(&self, id: ClientId) -> bool {
        self.nodes[id].active
    }

    /// Removes a client (its allocation leaves the ancestors too).
    pub fn remove(&mut self, id: ClientId) {
        let alloc = std::mem::take(&mut self.nodes[id].allocation);
        self.unallocated(id, &alloc);
        self.nodes[id].removed = true;
        self.nodes[id].active = false;
        if let Some(p) = self.nodes[id].parent {
            self.nodes[p].children.retain(|&c| c != id);
        }
        let path = self.path(id).to_string();
        self.clients.remove(&path);
        self.cache = None;
    }

    /// Records an allocation of `scalars` to a client.
    pub fn allocated(&mut self, id: ClientId, scalars: &BTreeMap<String, Quantity>) {
        let mut i = Some(id);
        while let Some(n) = i {
            for (k, v) in scalars {
                *self.nodes[n].allocation.entry(k.clone()).or_default() += *v;
            }
            self.nodes[n].allocations += 1;
            i = self.nodes[n].parent;
        }
        self.touch(id);
    }

    /// Records that `scalars` allocated to a client came back.
    pub fn unallocated(&mut self, id: ClientId, scalars: &BTreeMap<String, Quantity>) {
        let mut i = Some(id);
        while let Some(n) = i {
            for (k, v) in scalars {
                if let Some(cur) = self.nodes[n].allocation.get_mut(k) {
                    *cur = cur.saturating_sub(*v);
                }
            }
            i = self.nodes[n].parent;
        }
        self.touch(id);
    }

    /// A client's (or an internal path's) allocation.
    pub fn allocation(&self, path: &str) -> BTreeMap<String, Quantity> {
        let id = self.internals.get(path).or_else(|| self.clients.get(path));
        id.map(|&i| self.nodes[i].allocation.clone())
            .unwrap_or_default()
    }

    /// A client's dominant share (weighted).
    pub fn share(&self, id: ClientId) -> f64 {
        self.nodes[id].share
    }

    fn sort_children(&mut self, i: usize) {
        let mut children = std::mem::take(&mut self.nodes[i].children);
        for &c in &children {
            self.refresh_share(c);
        }
        let nodes = &self.nodes;
        children.sort_by(|&a, &b| key_cmp(&nodes[a], &nodes[b]));
        self.nodes[i].children = children;
        self.nodes[i].dirty = false;
    }

    /// Active clients in allocation order.
    pub fn sort(&mut self) -> &[ClientId] {
        if self.cache.is_none() {
            let mut out = Vec::with_capacity(self.clients.len());
            // Walk every active client in order (the predicate never matches).
            self.find_in(0, &mut |c| {
                out.push(c);
                false
            });
            self.cache = Some(out);
        }
        self.cache.as_deref().expect("just computed")
    }

    fn find_in(&mut self, i: usize, pred: &mut dyn FnMut(ClientId) -> bool) -> Option<ClientId> {
        if self.nodes[i].dirty {
            self.sort_children(i);
        }
        for k in 0..self.nodes[i].children.len() {
            let c = self.nodes[i].children[k];
            if self.nodes[c].removed {
                continue;
            }
            if self.nodes[c].leaf {
                if self.nodes[c].active && pred(c) {
                    return Some(c);
                }
            } else if let Some(found) = self.find_in(c, pred) {
                return Some(found);
            }
        }
        None
    }

    /// The first active client in allocation order for which `pred` holds,
    /// without materialising the whole order (an allocation loop usually
    /// stops at the first or second client).
    pub fn find_first(&mut self, mut pred: impl FnMut(ClientId) -> bool) -> Option<ClientId> {
        self.find_in(0, &mut pred)
    }

    /// Active client paths in allocation order.
    pub fn sorted_paths(&mut self) -> Vec<String> {
        let ids = self.sort().to_vec();
        ids.into_iter().map(|i| self.path(i).to_string()).collect()
    }
}

/// Weighted shuffle sorter (Mesos' `random` sorter): each sort draws a fresh
/// order in which a client of weight w comes first with probability
/// proportional to w.
#[derive(Debug, Clone)]
pub struct RandomSorter {
    clients: Vec<(String, f64, bool)>,
    state: u64,
}

impl RandomSorter {
    pub fn new(seed: u64) -> Self {
        RandomSorter {
            clients: Vec::new(),
            state: seed | 1,
        }
    }

    pub fn add(&mut self, path: &str, weight: f64) {
        if !self.clients.iter().any(|c| c.0 == path) {
            self.clients.push((path.to_string(), weight, true));
        }
    }

    pub fn set_weight(&mut self, path: &str, weight: f64) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.0 == path) {
            c.1 = weight;
        }
    }

    pub fn set_active(&mut self, path: &str, active: bool) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.0 == path) {
            c.2 = active;
        }
    }

    fn next(&mut self) -> f64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Active clients in a weighted random order (Efraimidis–Spirakis keys).
    pub fn sort(&mut self) -> Vec<String> {
        let mut keyed: Vec<(f64, String)> = Vec::new();
        for i in 0..self.clients.len() {
            if self.clients[i].2 {
                let u = self.next().max(f64::MIN_POSITIVE);
                keyed.push((u.powf(1.0 / self.clients[i].1), self.clients[i].0.clone()));
            }
        }
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed.into_iter().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, f64)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::from_f64(k, *v).unwrap()))
            .collect()
    }

    fn sorter_with_total() -> DrfSorter {
        let mut s = DrfSorter::new();
        s.set_total(q(&[("cpus", 100.0), ("mem", 100.0)]));
        s
    }

    #[test]
    fn mesos_sorter_example() {
        let mut s = sorter_with_total();
        let a = s.add("a");
        let b = s.add("b");
        s.allocated(a, &q(&[("cpus", 5.0), ("mem", 5.0)]));
        s.allocated(b, &q(&[("cpus", 6.0), ("mem", 6.0)]));
        assert_eq!(s.sorted_paths(), ["a", "b"]);
        let c = s.add("c");
        s.allocated(c, &q(&[("cpus", 1.0), ("mem", 1.0)]));
        let d = s.add("d");
        s.allocated(d, &q(&[("cpus", 3.0), ("mem", 1.0)]));
        assert_eq!(s.sorted_paths(), ["c", "d", "a", "b"]);
    }

    #[test]
    fn weights_divide_shares() {
        let mut s = sorter_with_total();
        let a = s.add("a");
        let b = s.add("b");
        s.set_weight("b", 2.0);
        s.allocated(a, &q(&[("cpus", 5.0), ("mem", 5.0)]));
        s.allocated(b, &q(&[("cpus", 6.0), ("mem", 6.0)]));
        assert_eq!(s.sorted_paths(), ["b", "a"]);
    }

    #[test]
    fn ties_break_on_allocation_count_then_name() {
        let mut s = sorter_with_total();
        let x = s.add("x");
        let y = s.add("y");
        assert_eq!(s.sorted_paths(), ["x", "y"], "equal: by name");
        s.allocated(x, &q(&[("cpus", 0.0)]));
        assert_eq!(
            s.sorted_paths(),
            ["y", "x"],
            "equal shares: fewer allocations first"
        );
        let _ = y;
    }

    #[test]
    fn nested_roles_sort_per_level() {
        let mut s = sorter_with_total();
        let ab = s.add("a/b");
        let ac = s.add("a/c");
        let d = s.add("d");
        s.allocated(ab, &q(&[("cpus", 10.0)]));
        s.allocated(ac, &q(&[("cpus", 1.0)]));
        s.allocated(d, &q(&[("cpus", 5.0)]));
        // a holds 11 in total (> d's 5): d first; inside a, c before b.
        assert_eq!(s.sorted_paths(), ["d", "a/c", "a/b"]);
        assert_eq!(s.allocation("a")["cpus"].as_f64(), 11.0);
    }

    #[test]
    fn a_client_that_is_also_a_parent() {
        let mut s = sorter_with_total();
        let a = s.add("a");
        s.allocated(a, &q(&[("cpus", 3.0)]));
        let ab = s.add("a/b");
        s.allocated(ab, &q(&[("cpus", 1.0)]));
        let e = s.add("e");
        s.allocated(e, &q(&[("cpus", 2.0)]));
        // a's subtree holds 4 > e's 2; inside a: b (1) before a's own leaf (3).
        assert_eq!(s.sorted_paths(), ["e", "a/b", "a"]);
        assert_eq!(s.allocation("a")["cpus"].as_f64(), 4.0);
        // and the other way round: a parent first, then the client
        let mut t = sorter_with_total();
        let xy = t.add("x/y");
        t.allocated(xy, &q(&[("cpus", 5.0)]));
        let x = t.add("x");
        assert_eq!(t.sorted_paths(), ["x", "x/y"]);
        assert_eq!(t.path(x), "x");
    }

    #[test]
    fn inactive_and_removed_clients_are_never_returned() {
        let mut s = sorter_with_total();
        let a = s.add("a");
        let b = s.add("b");
        s.deactivate(a);
        assert_eq!(s.sorted_paths(), ["b"]);
        s.activate(a);
        s.remove(b);
        assert_eq!(s.sorted_paths(), ["a"]);
    }

    #[test]
    fn random_sorter_respects_weights_and_activity() {
        let mut r = RandomSorter::new(42);
        r.add("heavy", 9.0);
        r.add("light", 1.0);
        r.add("off", 1.0);
        r.set_active("off", false);
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let order = r.sort();
            assert_eq!(order.len(), 2);
            if order[0] == "heavy" {
                heavy_first += 1;
            }
        }
        assert!(
            (1650..=1950).contains(&heavy_first),
            "{heavy_first} of 2000 (expected ~1800)"
        );
    }
}
