//! Resources as Mesos models them: scalars (cpus, mem, disk, gpus, …) in fixed
//! point with three decimal places, ranges (ports) and sets, each either
//! unreserved or reserved for a role. Arithmetic never goes negative: a
//! subtraction of what is not there is an error, not a wrap.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

/// A non-negative scalar in thousandths (Mesos keeps three decimal places).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(u64);

/// Why resources were rejected or could not be subtracted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("resource {name}: {value} is not a finite non-negative number")]
    BadScalar { name: String, value: String },
    #[error("resource {name}: range {lo}-{hi} is reversed")]
    BadRange { name: String, lo: u64, hi: u64 },
    #[error(
        "resources {0:?} cannot be parsed (expected name:value;… as in cpus:2;ports:[31000-32000])"
    )]
    Syntax(String),
    #[error("cannot subtract {what}: not contained")]
    NotContained { what: String },
}

impl Quantity {
    pub const ZERO: Quantity = Quantity(0);

    /// From a float, rounded to the nearest thousandth; NaN, infinite and
    /// negative values are errors.
    pub fn from_f64(name: &str, v: f64) -> Result<Self, ResourceError> {
        if !v.is_finite() || v < 0.0 || v > (u64::MAX / 2000) as f64 {
            return Err(ResourceError::BadScalar {
                name: name.into(),
                value: v.to_string(),
            });
        }
        Ok(Quantity((v * 1000.0).round() as u64))
    }

    /// From thousandths.
    pub const fn from_milli(m: u64) -> Self {
        Quantity(m)
    }

    pub const fn milli(self) -> u64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn checked_sub(self, o: Quantity) -> Option<Quantity> {
        self.0.checked_sub(o.0).map(Quantity)
    }

    pub fn saturating_sub(self, o: Quantity) -> Quantity {
        Quantity(self.0.saturating_sub(o.0))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, o: Quantity) -> Quantity {
        Quantity(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, o: Quantity) {
        self.0 += o.0;
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}", self.as_f64())
        }
    }
}

/// Disjoint, sorted, merged inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        RangeSet(out)
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn union(&self, o: &RangeSet) -> RangeSet {
        RangeSet::new(self.0.iter().chain(&o.0).copied().collect())
    }

    pub fn contains(&self, o: &RangeSet) -> bool {
        o.0.iter()
            .all(|&(lo, hi)| self.0.iter().any(|&(a, b)| a <= lo && hi <= b))
    }

    /// `self - o`, when `o` is contained.
    pub fn difference(&self, o: &RangeSet) -> Option<RangeSet> {
        if !self.contains(o) {
            return None;
        }
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut cur = a;
            for &(lo, hi) in o.0.iter().filter(|&&(lo, hi)| hi >= a && lo <= b) {
                if lo > cur {
                    out.push((cur, lo - 1));
                }
                cur = hi.saturating_add(1);
            }
            if cur <= b {
                out.push((cur, b));
            }
        }
        Some(RangeSet(out))
    }

    /// The first `n` values, as ranges.
    pub fn take(&self, mut n: u64) -> RangeSet {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            if n == 0 {
                break;
            }
            let len = (b - a + 1).min(n);
            out.push((a, a + len - 1));
            n -= len;
        }
        RangeSet(out)
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// Resources of one reservation (or unreserved): scalars, ranges, sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle {
    pub scalars: BTreeMap<String, Quantity>,
    pub ranges: BTreeMap<String, RangeSet>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
}

impl Bundle {
    pub fn is_empty(&self) -> bool {
        self.scalars.values().all(|q| q.is_zero())
            && self.ranges.values().all(RangeSet::is_empty)
            && self.sets.values().all(BTreeSet::is_empty)
    }

    pub fn scalar(&self, name: &str) -> Quantity {
        self.scalars.get(name).copied().unwrap_or_default()
    }

    pub fn add(&mut self, o: &Bundle) {
        for (k, v) in &o.scalars {
            *self.scalars.entry(k.clone()).or_default() += *v;
        }
        for (k, v) in &o.ranges {
            let cur = self.ranges.entry(k.clone()).or_default();
            *cur = cur.union(v);
        }
        for (k, v) in &o.sets {
            self.sets
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
    }

    pub fn contains(&self, o: &Bundle) -> bool {
        o.scalars.iter().all(|(k, v)| self.scalar(k) >= *v)
            && o.ranges
                .iter()
                .all(|(k, v)| v.is_empty() || self.ranges.get(k).is_some_and(|r| r.contains(v)))
            && o.sets
                .iter()
                .all(|(k, v)| v.is_empty() || self.sets.get(k).is_some_and(|s| s.is_superset(v)))
    }

    /// `self - o`; an error (and `self` unchanged) if `o` is not contained.
    pub fn subtract(&mut self, o: &Bundle) -> Result<(), ResourceError> {
        if !self.contains(o) {
            return Err(ResourceError::NotContained {
                what: o.to_string(),
            });
        }
        for (k, v) in &o.scalars {
            let cur = self.scalars.get_mut(k).expect("contained");
            *cur = cur.checked_sub(*v).expect("contained");
        }
        for (k, v) in &o.ranges {
            if let Some(cur) = self.ranges.get_mut(k) {
                *cur = cur.difference(v).expect("contained");
            }
        }
        for (k, v) in &o.sets {
            if let Some(cur) = self.sets.get_mut(k) {
                cur.retain(|x| !v.contains(x));
            }
        }
        self.scalars.retain(|_, q| !q.is_zero());
        self.ranges.retain(|_, r| !r.is_empty());
        self.sets.retain(|_, s| !s.is_empty());
        Ok(())
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .scalars
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        parts.extend(self.ranges.iter().map(|(k, v)| format!("{k}:{v}")));
        parts.extend(self.sets.iter().map(|(k, v)| {
            format!(
                "{k}:{{{}}}",
                v.iter().cloned().collect::<Vec<_>>().join(",")
            )
        }));
        f.write_str(&parts.join(";"))
    }
}

/// Resources: an unreserved bundle and one bundle per reserving role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub unreserved: Bundle,
    pub reserved: BTreeMap<String, Bundle>,
}

impl Resources {
    /// Unreserved scalars, e.g. `Resources::scalars(&[("cpus", 9.0), ("mem", 18432.0)])`.
    pub fn scalars(pairs: &[(&str, f64)]) -> Result<Self, ResourceError> {
        let mut r = Resources::default();
        for (k, v) in pairs {
            r.unreserved
                .scalars
                .insert(k.to_string(), Quantity::from_f64(k, *v)?);
        }
        Ok(r)
    }

    /// Parses Mesos' text form: `cpus:24;mem:4096;ports:[31000-32000];cpus(db):2`
    /// (a `(role)` suffix reserves for that role; `{a,b}` is a set).
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let mut r = Resources::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| ResourceError::Syntax(text.into()))?;
            let (name, role) = match name.split_once('(') {
                Some((n, rest)) => (n.trim(), Some(rest.trim_end_matches(')').trim())),
                None => (name.trim(), None),
            };
            let bundle = match role {
                Some("*") | None => &mut r.unreserved,
                Some(role) => r.reserved.entry(role.to_string()).or_default(),
            };
            let value = value.trim();
            if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                let mut ranges = Vec::new();
                for rg in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (lo, hi) = rg
                        .split_once('-')
                        .ok_or_else(|| ResourceError::Syntax(text.into()))?;
                    let lo: u64 = lo
                        .trim()
                        .parse()
                        .map_err(|_| ResourceError::Syntax(text.into()))?;
                    let hi: u64 = hi
                        .trim()
                        .parse()
                        .map_err(|_| ResourceError::Syntax(text.into()))?;
                    if lo > hi {
                        return Err(ResourceError::BadRange {
                            name: name.into(),
                            lo,
                            hi,
                        });
                    }
                    ranges.push((lo, hi));
                }
                let cur = bundle.ranges.entry(name.to_string()).or_default();
                *cur = cur.union(&RangeSet::new(ranges));
            } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                bundle.sets.entry(name.to_string()).or_default().extend(
                    inner
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                );
            } else {
                let v: f64 = value.parse().map_err(|_| ResourceError::BadScalar {
                    name: name.into(),
                    value: value.into(),
                })?;
                *bundle.scalars.entry(name.to_string()).or_default() +=
                    Quantity::from_f64(name, v)?;
            }
        }
        Ok(r)
    }

    pub fn is_empty(&self) -> bool {
        self.unreserved.is_empty() && self.reserved.values().all(Bundle::is_empty)
    }

    pub fn add(&mut self, o: &Resources) {
        self.unreserved.add(&o.unreserved);
        for (role, b) in &o.reserved {
            self.reserved.entry(role.clone()).or_default().add(b);
        }
    }

    pub fn contains(&self, o: &Resources) -> bool {
        self.unreserved.contains(&o.unreserved)
            && o.reserved.iter().all(|(role, b)| {
                b.is_empty() || self.reserved.get(role).is_some_and(|s| s.contains(b))
            })
    }

    /// `self - o`; an error (and `self` unchanged) if not contained.
    pub fn subtract(&mut self, o: &Resources) -> Result<(), ResourceError> {
        if !self.contains(o) {
            return Err(ResourceError::NotContained {
                what: o.to_string(),
            });
        }
        self.unreserved.subtract(&o.unreserved)?;
        for (role, b) in &o.reserved {
            if let Some(cur) = self.reserved.get_mut(role) {
                cur.subtract(b)?;
            }
        }
        self.reserved.retain(|_, b| !b.is_empty());
        Ok(())
    }

    /// Scalar totals over every reservation (what DRF shares are computed on).
    pub fn scalar_totals(&self) -> BTreeMap<String, Quantity> {
        let mut out = self.unreserved.scalars.clone();
        for b in self.reserved.values() {
            for (k, v) in &b.scalars {
                *out.entry(k.clone()).or_default() += *v;
            }
        }
        out
    }

    /// Total of one scalar over every reservation.
    pub fn scalar(&self, name: &str) -> Quantity {
        self.unreserved.scalar(name)
            + self
                .reserved
                .values()
                .map(|b| b.scalar(name))
                .fold(Quantity::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.unreserved.is_empty() {
            parts.push(self.unreserved.to_string());
        }
        for (role, b) in &self.reserved {
            parts.push(format!("({role}) {b}"));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_has_three_decimals_and_rejects_bad_values() {
        let q = Quantity::from_f64("cpus", 0.1).unwrap() + Quantity::from_f64("cpus", 0.2).unwrap();
        assert_eq!(
            q,
            Quantity::from_f64("cpus", 0.3).unwrap(),
            "no float drift"
        );
        assert_eq!(Quantity::from_f64("cpus", 1.0004).unwrap().milli(), 1000);
        for bad in [f64::NAN, -1.0, f64::INFINITY] {
            assert!(Quantity::from_f64("cpus", bad).is_err());
        }
        assert_eq!(
            Quantity::from_f64("x", 1.0)
                .unwrap()
                .checked_sub(Quantity::from_f64("x", 2.0).unwrap()),
            None
        );
    }

    #[test]
    fn ranges_merge_subtract_and_take() {
        let r = RangeSet::new(vec![(31005, 31010), (31000, 31004), (32000, 32000)]);
        assert_eq!(r.ranges(), &[(31000, 31010), (32000, 32000)]);
        assert_eq!(r.count(), 12);
        let d = r.difference(&RangeSet::new(vec![(31003, 31004)])).unwrap();
        assert_eq!(
            d.ranges(),
            &[(31000, 31002), (31005, 31010), (32000, 32000)]
        );
        assert!(r.difference(&RangeSet::new(vec![(1, 2)])).is_none());
        assert_eq!(r.take(3).ranges(), &[(31000, 31002)]);
    }

    #[test]
    fn parse_reserved_and_arithmetic() {
        let mut total =
            Resources::parse("cpus:24;mem:4096;disk:4096;ports:[31000-32000];cpus(db):2").unwrap();
        assert_eq!(total.scalar("cpus").as_f64(), 26.0);
        assert_eq!(total.reserved["db"].scalar("cpus").as_f64(), 2.0);
        let used = Resources::parse("cpus:16;ports:[31000-31009]").unwrap();
        total.subtract(&used).unwrap();
        assert_eq!(total.unreserved.scalar("cpus").as_f64(), 8.0);
        assert_eq!(total.unreserved.ranges["ports"].count(), 991);
        let too_much = Resources::parse("cpus:9").unwrap();
        let before = total.clone();
        assert!(total.subtract(&too_much).is_err());
        assert_eq!(total, before, "a failed subtraction changes nothing");
        assert!(Resources::parse("cpus:-1").is_err());
        assert!(Resources::parse("cpus:NaN").is_err());
        assert!(Resources::parse("ports:[5-1]").is_err());
        assert!(Resources::parse("nonsense").is_err());
    }
}
