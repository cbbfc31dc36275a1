//! The learning-rate schedule: linear warmup then cosine decay to zero, exactly as
//! transformers' `get_cosine_schedule_with_warmup` (TRL's default).

use serde::{Deserialize, Serialize};

/// Linear warmup over `warmup` steps, then a half cosine from `peak` to 0 at `total`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// The peak learning rate.
    pub peak: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total optimizer steps.
    pub total: usize,
}

impl CosineSchedule {
    /// Warmup as a share of the total (`ceil(ratio · total)`, as transformers does).
    pub fn with_ratio(peak: f64, warmup_ratio: f64, total: usize) -> Self {
        Self {
            peak,
            warmup: (warmup_ratio * total as f64).ceil() as usize,
            total,
        }
    }

    /// The learning rate of update `step` (0-based: the first update uses `lr(0)`, which is 0
    /// when there is warmup, as in transformers).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_transformers_cosine_with_warmup() {
        // Values of get_cosine_schedule_with_warmup(opt(lr=1.0), 2, 10) by hand.
        let s = CosineSchedule {
            peak: 1.0,
            warmup: 2,
            total: 10,
        };
        let want = [
            0.0,
            0.5,
            1.0,
            0.961_939_766,
            0.853_553_390,
            0.691_341_716,
            0.5,
            0.308_658_284,
            0.146_446_609,
            0.038_060_233,
        ];
        for (step, w) in want.iter().enumerate() {
            assert!(
                (s.lr(step) - w).abs() < 1e-8,
                "step {step}: {} vs {w}",
                s.lr(step)
            );
        }
        assert_eq!(s.lr(10), 0.0);
        assert_eq!(CosineSchedule::with_ratio(1.0, 0.05, 100).warmup, 5);
    }
}
