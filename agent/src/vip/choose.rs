//! Backend choice for the NFQUEUE path (pure): power of two choices. Two
//! backends are drawn at random in proportion to their weights; the one with
//! fewer pending (unanswered) connections wins, the first on a tie. The eBPF
//! path chooses in the kernel from weighted slots ([`super::slots`]).
use std::net::SocketAddr;

use super::Backend;

/// The choosable backends of one VIP with their cumulative weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightedBackends {
    addrs: Vec<SocketAddr>,
    /// `cumulative[i]` = sum of the weights of backends `0..=i`.
    cumulative: Vec<u64>,
}

impl WeightedBackends {
    /// Backends with an effective weight above 0 (healthy and not drained).
    pub fn new(backends: &[Backend]) -> Self {
        let mut out = WeightedBackends::default();
        let mut total = 0u64;
        for b in backends.iter().filter(|b| b.effective_weight() > 0) {
            total += u64::from(b.effective_weight());
            out.addrs.push(b.addr);
            out.cumulative.push(total);
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The backend whose weight interval holds `r` modulo the total weight.
    fn draw(&self, r: u64) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let x = r % total;
        Some(self.cumulative.partition_point(|&c| c <= x))
    }

    /// Power of two choices with the random numbers `r1`, `r2`; `pending`
    /// gives a backend's unanswered connections.
    pub fn choose(
        &self,
        r1: u64,
        r2: u64,
        pending: impl Fn(SocketAddr) -> u64,
    ) -> Option<SocketAddr> {
        let a = self.addrs[self.draw(r1)?];
        let b = self.addrs[self.draw(r2)?];
        Some(if pending(b) < pending(a) { b } else { a })
    }
}

/// A small, fast pseudo-random generator (SplitMix64) for backend draws:
/// not for secrets, only for spreading load.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn b(port: u16, weight: u32, healthy: bool) -> Backend {
        Backend {
            addr: SocketAddr::from(([10, 0, 0, 1], port)),
            weight,
            healthy,
        }
    }

    #[test]
    fn unhealthy_and_drained_backends_are_never_choosable() {
        let w = WeightedBackends::new(&[b(1, 0, true), b(2, 5, false), b(3, 1, true)]);
        assert_eq!(w.addrs(), &[SocketAddr::from(([10, 0, 0, 1], 3))]);
        assert!(WeightedBackends::new(&[b(1, 0, true)]).is_empty());
        assert_eq!(WeightedBackends::new(&[]).choose(1, 2, |_| 0), None);
    }

    #[test]
    fn fewer_pending_wins() {
        let w = WeightedBackends::new(&[b(1, 1, true), b(2, 1, true)]);
        let busy = SocketAddr::from(([10, 0, 0, 1], 1));
        // r1 draws backend 1 (busy), r2 draws backend 2.
        let pick = w.choose(0, 1, |a| if a == busy { 10 } else { 0 });
        assert_eq!(pick, Some(SocketAddr::from(([10, 0, 0, 1], 2))));
        // A tie keeps the first draw.
        assert_eq!(w.choose(0, 1, |_| 0), Some(busy));
    }

    #[test]
    fn draws_follow_weights_without_load() {
        let w = WeightedBackends::new(&[b(1, 1, true), b(2, 3, true)]);
        let mut rng = SplitMix64::new(42);
        let mut count = BTreeMap::new();
        for _ in 0..40_000 {
            // With no pending connections the first draw wins: pure weighting.
            let a = w.choose(rng.next_u64(), rng.next_u64(), |_| 0).unwrap();
            *count.entry(a.port()).or_insert(0u32) += 1;
        }
        let share = f64::from(count[&2]) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
