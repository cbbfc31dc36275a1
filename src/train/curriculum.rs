//! A pass-rate curriculum for GRPO (online difficulty filtering, arXiv 2504.03380): a Beta
//! estimate of each training prompt's pass rate, updated from every rollout, and prompts drawn
//! only while their estimate lies inside a band, so steps are spent where a group can hold both
//! a success and a failure.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The band prompts are drawn from, and the prior of the estimates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurriculumConfig {
    /// Lowest estimated pass rate drawn.
    pub low: f64,
    /// Highest estimated pass rate drawn.
    pub high: f64,
    /// The Beta prior's pseudo-counts of successes and failures (`[1, 1]`: uniform, an unseen
    /// prompt's estimate is 0.5).
    pub prior: [f64; 2],
}

impl CurriculumConfig {
    /// Checks the band lies in [0, 1] and the prior is positive.
    pub fn validate(&self) -> Result<()> {
        let ok = (0.0..=1.0).contains(&self.low)
            && (0.0..=1.0).contains(&self.high)
            && self.low <= self.high
            && self.prior.iter().all(|p| p.is_finite() && *p > 0.0);
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                source_name: "[grpo.curriculum]".into(),
                reason: format!(
                    "the band needs 0 ≤ low ≤ high ≤ 1 and the prior two positive counts, not \
                     low {}, high {}, prior {:?}",
                    self.low, self.high, self.prior
                ),
            })
        }
    }
}

/// Successes and failures seen for each prompt of a pool (by its index in the pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassRates {
    /// `[successes, failures]` per prompt.
    counts: Vec<[u32; 2]>,
}

impl PassRates {
    /// No rollout seen yet, for a pool of `n` prompts.
    pub fn new(n: usize) -> Self {
        Self {
            counts: vec![[0, 0]; n],
        }
    }

    /// Prompts in the pool.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Counts one rollout of prompt `prompt`.
    pub fn record(&mut self, prompt: usize, success: bool) -> Result<()> {
        let n = self.counts.len();
        let c = self
            .counts
            .get_mut(prompt)
            .ok_or_else(|| Error::Batch(format!("pass rates: prompt {prompt} of a pool of {n}")))?;
        c[usize::from(!success)] += 1;
        Ok(())
    }

    /// Rollouts seen of prompt `prompt`: `[successes, failures]`.
    pub fn counts(&self, prompt: usize) -> [u32; 2] {
        self.counts.get(prompt).copied().unwrap_or([0, 0])
    }

    /// The posterior mean pass rate of prompt `prompt`: `(s + a) / (s + f + a + b)` with the
    /// prior `[a, b]`.
    pub fn estimate(&self, prompt: usize, prior: [f64; 2]) -> f64 {
        let [s, f] = self.counts(prompt);
        (f64::from(s) + prior[0]) / (f64::from(s) + f64::from(f) + prior[0] + prior[1])
    }

    /// Whether prompt `prompt`'s estimate lies inside the band.
    pub fn in_band(&self, prompt: usize, config: &CurriculumConfig) -> bool {
        let p = self.estimate(prompt, config.prior);
        (config.low..=config.high).contains(&p)
    }

    /// How many prompts of the pool are inside the band.
    pub fn count_in_band(&self, config: &CurriculumConfig) -> usize {
        (0..self.len()).filter(|&i| self.in_band(i, config)).count()
    }

    /// The pool's estimates in `bins` equal bins over [0, 1] (the last one closed).
    pub fn histogram(&self, prior: [f64; 2], bins: usize) -> Vec<usize> {
        let mut out = vec![0; bins.max(1)];
        let last = out.len() - 1;
        for i in 0..self.len() {
            let bin = (self.estimate(i, prior) * out.len() as f64) as usize;
            out[bin.min(last)] += 1;
        }
        out
    }

    /// Restores saved counts, which must be for a pool of the same size.
    pub fn restore(&mut self, saved: PassRates) -> Result<()> {
        if saved.len() != self.len() {
            return Err(Error::Batch(format!(
                "the checkpoint's pass rates are for {} prompts, the run has {}: resume with the \
                 same prompts, or start over",
                saved.len(),
                self.len()
            )));
        }
        *self = saved;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAND: CurriculumConfig = CurriculumConfig {
        low: 0.1,
        high: 0.8,
        prior: [1.0, 1.0],
    };

    #[test]
    fn estimates_are_the_beta_posterior_mean_and_move_with_every_rollout() {
        let mut rates = PassRates::new(3);
        assert_eq!(rates.estimate(0, BAND.prior), 0.5);
        for success in [true, false, false, false] {
            rates.record(1, success).unwrap();
        }
        // (1 + 1) / (4 + 2)
        assert!((rates.estimate(1, BAND.prior) - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(rates.counts(1), [1, 3]);
        assert!(rates.record(3, true).is_err());
        // Eight failures: 1 / 10 = 0.1, still inside; nine leave the band.
        for _ in 0..8 {
            rates.record(2, false).unwrap();
        }
        assert!(rates.in_band(2, &BAND));
        rates.record(2, false).unwrap();
        assert!(!rates.in_band(2, &BAND));
        // Four successes out of four: 5 / 6 > 0.8, too easy.
        let mut easy = PassRates::new(1);
        for _ in 0..4 {
            easy.record(0, true).unwrap();
        }
        assert!(!easy.in_band(0, &BAND));
        assert_eq!(rates.count_in_band(&BAND), 2);
        assert_eq!(
            rates.histogram(BAND.prior, 10),
            [1, 0, 0, 1, 0, 1, 0, 0, 0, 0]
        );
    }

    #[test]
    fn saved_rates_restore_only_onto_the_same_pool() {
        let mut rates = PassRates::new(2);
        rates.record(0, true).unwrap();
        let json = serde_json::to_value(&rates).unwrap();
        let mut back = PassRates::new(2);
        back.restore(serde_json::from_value(json.clone()).unwrap())
            .unwrap();
        assert_eq!(back, rates);
        let e = PassRates::new(3)
            .restore(serde_json::from_value(json).unwrap())
            .unwrap_err();
        assert!(
            e.to_string().contains("for 2 prompts, the run has 3"),
            "{e}"
        );
    }

    #[test]
    fn a_band_outside_zero_to_one_or_a_zero_prior_is_refused() {
        assert!(BAND.validate().is_ok());
        for bad in [
            CurriculumConfig { low: 0.9, ..BAND },
            CurriculumConfig { high: 1.5, ..BAND },
            CurriculumConfig {
                prior: [0.0, 1.0],
                ..BAND
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
