//! The marathon-lb-autoscale rule (pure), driven by the connection rates of
//! an app's VIPs instead of HAProxy's request rates.
//!
//! An app opts in with labels `AUTOSCALE_TARGET_RPS`, `AUTOSCALE_MIN` and
//! `AUTOSCALE_MAX`; the other knobs default to marathon-lb-autoscale's:
//! `AUTOSCALE_INTERVAL` (seconds between samples, 60), `AUTOSCALE_SAMPLES`
//! (averaged, 10), `AUTOSCALE_COOLDOWN` (intervals after a change, 5),
//! `AUTOSCALE_THRESHOLD_PERCENT` (0.5), `AUTOSCALE_THRESHOLD_INSTANCES` (3),
//! `AUTOSCALE_INTERVALS` (intervals past the threshold before acting, 3).
//!
//! Every interval: the average rate of the last samples gives the target
//! `clamp(ceil(avg / target_rps), min, max)`. The app is past the threshold
//! when the target differs from the current count by at least the instance
//! threshold, or the rate per current instance differs from the target rate
//! by at least the percent threshold (and the target differs). After that many
//! intervals in a row it is scaled to the target, then left alone for the
//! cooldown.
use std::collections::{BTreeMap, VecDeque};

/// An app's autoscale settings, from its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleSpec {
    pub target_rps: f64,
    pub min: u32,
    pub max: u32,
    pub interval_ms: u64,
    pub samples: usize,
    pub cooldown: u32,
    pub threshold_percent: f64,
    pub threshold_instances: u32,
    pub intervals: u32,
}

/// Reads the labels; `Ok(None)` when the app does not autoscale, `Err` with
/// every problem when the labels are there but wrong.
pub fn spec_from_labels(
    labels: &BTreeMap<String, String>,
) -> Result<Option<AutoscaleSpec>, Vec<(String, String)>> {
    let required = ["AUTOSCALE_TARGET_RPS", "AUTOSCALE_MIN", "AUTOSCALE_MAX"];
    if !labels.keys().any(|k| k.starts_with("AUTOSCALE_")) {
        return Ok(None);
    }
    let mut errors = Vec::new();
    for r in required {
        if !labels.contains_key(r) {
            errors.push((r.to_string(), "is required to autoscale".to_string()));
        }
    }
    let mut num = |key: &str, default: f64, min: f64| -> f64 {
        match labels.get(key) {
            None => default,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= min => n,
                _ => {
                    errors.push((key.to_string(), format!("{v:?} must be a number ≥ {min}")));
                    default
                }
            },
        }
    };
    let spec = AutoscaleSpec {
        target_rps: num("AUTOSCALE_TARGET_RPS", 1000.0, 0.001),
        min: num("AUTOSCALE_MIN", 1.0, 0.0) as u32,
        max: num("AUTOSCALE_MAX", 1.0, 0.0) as u32,
        interval_ms: (num("AUTOSCALE_INTERVAL", 60.0, 0.05) * 1000.0) as u64,
        samples: num("AUTOSCALE_SAMPLES", 10.0, 1.0) as usize,
        cooldown: num("AUTOSCALE_COOLDOWN", 5.0, 0.0) as u32,
        threshold_percent: num("AUTOSCALE_THRESHOLD_PERCENT", 0.5, 0.0),
        threshold_instances: num("AUTOSCALE_THRESHOLD_INSTANCES", 3.0, 1.0) as u32,
        intervals: num("AUTOSCALE_INTERVALS", 3.0, 1.0) as u32,
    };
    if spec.max < spec.min {
        errors.push((
            "AUTOSCALE_MAX".into(),
            "must be at least AUTOSCALE_MIN".into(),
        ));
    }
    if errors.is_empty() {
        Ok(Some(spec))
    } else {
        Err(errors)
    }
}

/// The rule's memory for one app.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoscaleState {
    samples: VecDeque<f64>,
    past_threshold: u32,
    cooldown_left: u32,
}

impl AutoscaleState {
    /// Takes one interval's rate (connections/s over the app's VIPs); returns
    /// the instance count to scale to, if the rule says so now.
    pub fn sample(&mut self, spec: &AutoscaleSpec, rate: f64, current: u32) -> Option<u32> {
        self.samples.push_back(rate.max(0.0));
        while self.samples.len() > spec.samples {
            self.samples.pop_front();
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            return None;
        }
        let avg = self.samples.iter().sum::<f64>() / self.samples.len() as f64;
        let target = ((avg / spec.target_rps).ceil() as u32).clamp(spec.min, spec.max);
        let off_by = target.abs_diff(current);
        let per_instance = avg / f64::from(current.max(1));
        let off_rate = (per_instance - spec.target_rps).abs() / spec.target_rps;
        let past = off_by > 0
            && (off_by >= spec.threshold_instances || off_rate >= spec.threshold_percent);
        if !past {
            self.past_threshold = 0;
            return None;
        }
        self.past_threshold += 1;
        if self.past_threshold < spec.intervals {
            return None;
        }
        self.past_threshold = 0;
        self.cooldown_left = spec.cooldown;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AutoscaleSpec {
        spec_from_labels(
            &[
                ("AUTOSCALE_TARGET_RPS", "100"),
                ("AUTOSCALE_MIN", "1"),
                ("AUTOSCALE_MAX", "10"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn labels_default_to_marathon_lb_autoscale() {
        let s = spec();
        assert_eq!(
            (s.interval_ms, s.samples, s.cooldown, s.intervals),
            (60_000, 10, 5, 3)
        );
        assert_eq!((s.threshold_percent, s.threshold_instances), (0.5, 3));
        assert_eq!(spec_from_labels(&BTreeMap::new()), Ok(None));
        let bad: BTreeMap<String, String> = [
            ("AUTOSCALE_MIN", "5"),
            ("AUTOSCALE_MAX", "2"),
            ("AUTOSCALE_TARGET_RPS", "x"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let errors = spec_from_labels(&bad).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, vec!["AUTOSCALE_TARGET_RPS", "AUTOSCALE_MAX"]);
    }

    #[test]
    fn scales_after_three_intervals_past_the_threshold_then_cools_down() {
        let s = spec();
        let mut st = AutoscaleState::default();
        // 450 conn/s on 1 instance: target 5 (off by 4 ≥ 3).
        assert_eq!(st.sample(&s, 450.0, 1), None);
        assert_eq!(st.sample(&s, 450.0, 1), None);
        assert_eq!(st.sample(&s, 450.0, 1), Some(5));
        // Cooldown: 5 intervals ignored whatever the rate.
        for _ in 0..5 {
            assert_eq!(st.sample(&s, 5000.0, 5), None);
        }
        // Average now includes the spike: target clamps at the max.
        assert_eq!(st.sample(&s, 5000.0, 5), None);
        assert_eq!(st.sample(&s, 5000.0, 5), None);
        assert_eq!(st.sample(&s, 5000.0, 5), Some(10));
    }

    #[test]
    fn small_deviations_and_interruptions_do_not_scale() {
        let s = spec();
        let mut st = AutoscaleState::default();
        // 120 conn/s on 1 instance: target 2 (off by 1), 20 % over the rate: below both thresholds.
        for _ in 0..10 {
            assert_eq!(st.sample(&s, 120.0, 1), None);
        }
        // Two intervals past, one back inside: the count restarts.
        let mut st = AutoscaleState::default();
        assert_eq!(st.sample(&s, 1000.0, 1), None);
        assert_eq!(st.sample(&s, 1000.0, 1), None);
        let mut quiet = st.clone();
        quiet.samples.clear();
        assert_eq!(quiet.sample(&s, 100.0, 1), None);
        assert_eq!(quiet.sample(&s, 1000.0, 1), None);
        // Scale down to the minimum when idle.
        let mut st = AutoscaleState::default();
        for _ in 0..2 {
            assert_eq!(st.sample(&s, 0.0, 6), None);
        }
        assert_eq!(st.sample(&s, 0.0, 6), Some(1));
    }
}
