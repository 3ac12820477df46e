//! Weighted choice as uniform choice: a backend of weight w gets w selection
//! slots (after dividing all weights by their gcd, and scaling down
//! proportionally when the total would exceed [`MAX_SLOTS_PER_VIP`]). The
//! kernel program then picks a slot uniformly, one map lookup per connect.

/// Upper bound on slots for one VIP; larger totals are scaled down.
pub const MAX_SLOTS_PER_VIP: u32 = 4096;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Returns, for each slot, the index (into `weights`) of the backend it points
/// at. Zero weights get no slot; any positive weight gets at least one.
/// Slots are interleaved round-robin so a prefix of the table is also fair.
pub fn selection_slots(weights: &[u32]) -> Vec<usize> {
    let positive: Vec<(usize, u32)> = weights
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, w)| w > 0)
        .collect();
    if positive.is_empty() {
        return Vec::new();
    }
    let g = positive.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let mut counts: Vec<(usize, u64)> = positive
        .iter()
        .map(|&(i, w)| (i, u64::from(w / g)))
        .collect();
    let total: u64 = counts.iter().map(|&(_, c)| c).sum();
    let cap = u64::from(MAX_SLOTS_PER_VIP);
    if total > cap {
        // Proportional scale-down, each positive weight keeping at least one slot.
        for (_, c) in &mut counts {
            *c = ((*c * cap) / total).max(1);
        }
    }
    let mut slots = Vec::with_capacity(counts.iter().map(|&(_, c)| c as usize).sum());
    let mut round = 0u64;
    loop {
        let before = slots.len();
        for &(i, c) in &counts {
            if c > round {
                slots.push(i);
            }
        }
        if slots.len() == before {
            return slots;
        }
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(slots: &[usize], i: usize) -> usize {
        slots.iter().filter(|&&s| s == i).count()
    }

    #[test]
    fn equal_weights_one_slot_each() {
        assert_eq!(selection_slots(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(selection_slots(&[7, 7]), vec![0, 1]);
    }

    #[test]
    fn weights_are_reduced_and_respected() {
        let s = selection_slots(&[2, 4, 0, 6]);
        assert_eq!(s.len(), 6);
        assert_eq!(
            (count(&s, 0), count(&s, 1), count(&s, 2), count(&s, 3)),
            (1, 2, 0, 3)
        );
        assert_eq!(&s[..3], &[0, 1, 3], "interleaved");
    }

    #[test]
    fn no_positive_weight_means_no_slot() {
        assert!(selection_slots(&[]).is_empty());
        assert!(selection_slots(&[0, 0]).is_empty());
    }

    #[test]
    fn huge_weights_are_capped() {
        let s = selection_slots(&[1_000_000, 1, 3_000_000]);
        assert!(s.len() as u32 <= MAX_SLOTS_PER_VIP + 3, "{}", s.len());
        assert_eq!(count(&s, 1), 1);
        let ratio = count(&s, 2) as f64 / count(&s, 0) as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
    }
}
