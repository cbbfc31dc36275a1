//! Next-token choice from logits: repetition penalty, temperature, top-k, top-p, then a draw.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How the next token is picked (transformers' `generate` semantics and order: repetition
/// penalty, temperature, top-k, top-p).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Softmax temperature; 0 is greedy (the most likely token, deterministic).
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Divide positive (multiply negative) logits of tokens already in the sequence
    /// (1 = off; CTRL's penalty as in transformers).
    pub repetition_penalty: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
        }
    }

    /// Sampling at `temperature` with nothing else restricted.
    pub fn with_temperature(temperature: f32) -> Self {
        Self {
            temperature,
            ..Self::greedy()
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Generate(what));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!("temperature {} must be ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }

    /// The temperature of the distribution tokens are drawn from, at which their log-probs are
    /// recorded: the sampling temperature, or 1 for greedy decoding.
    pub fn logprob_temperature(&self) -> f32 {
        if self.temperature > 0.0 {
            self.temperature
        } else {
            1.0
        }
    }

    /// Picks the next token from `logits` (modified in place); `history` are the ids so far.
    pub fn pick(&self, logits: &mut [f32], history: &[u32], rng: &mut Rng) -> u32 {
        if self.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / self.repetition_penalty
                    } else {
                        *l * self.repetition_penalty
                    };
                }
            }
        }
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit, highest first, cut by top-k.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        let k = if self.top_k > 0 {
            self.top_k.min(order.len())
        } else {
            order.len()
        };
        if k < order.len() {
            order.select_nth_unstable_by(k - 1, by_logit);
            order.truncate(k);
        }
        order.sort_unstable_by(by_logit);
        let max = logits[order[0] as usize];
        let mut probs: Vec<f32> = order
            .iter()
            .map(|&i| ((logits[i as usize] - max) / self.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if self.top_p < 1.0 {
            // transformers keeps the tokens whose cumulative probability (from the top) stays
            // within top_p, and always the first.
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
            let sum: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= sum);
        }
        let u = rng.uniform() as f32;
        let mut cumulative = 0.0;
        for (p, &id) in probs.iter().zip(&order) {
            cumulative += p;
            if u < cumulative {
                return id;
            }
        }
        *order.last().unwrap_or(&0)
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The log-prob of `id` under `softmax(logits / temperature)`, computed stably.
pub fn logprob_at(logits: &[f32], id: u32, temperature: f32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| ((l - max) / temperature).exp()).sum();
    (logits[id as usize] - max) / temperature - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut l = vec![0.1, 3.0, 3.0, -1.0];
        assert_eq!(Sampling::greedy().pick(&mut l, &[], &mut Rng::new(0)), 1);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let s = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::greedy()
        };
        let mut l = vec![4.0, 3.0, -1.0];
        // token 0 is penalised to 2.0 < 3.0; the negative one grows more negative
        assert_eq!(s.pick(&mut l, &[0, 0, 2], &mut Rng::new(0)), 1);
        assert_eq!(l, vec![2.0, 3.0, -2.0]);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_draw() {
        let logits = vec![2.0f32, 1.9, 0.0, -5.0];
        let mut rng = Rng::new(7);
        let top_k = Sampling {
            top_k: 2,
            ..Sampling::with_temperature(1.0)
        };
        let top_p = Sampling {
            top_p: 0.5,
            ..Sampling::with_temperature(1.0)
        };
        for _ in 0..200 {
            assert!(top_k.pick(&mut logits.clone(), &[], &mut rng) < 2);
            // p(0) ≈ 0.47 < 0.5, so the top-p set is {0, 1}
            assert!(top_p.pick(&mut logits.clone(), &[], &mut rng) < 2);
        }
    }

    /// How often `s` draws `id` from `logits` in 20,000 draws seeded with `seed`.
    fn frequency_of(id: u32, logits: &[f32], s: &Sampling, seed: u64) -> f64 {
        let mut rng = Rng::new(seed);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| s.pick(&mut logits.to_vec(), &[], &mut rng) == id)
            .count();
        hits as f64 / n as f64
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax() {
        let logits = vec![0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let freq = frequency_of(1, &logits, &Sampling::with_temperature(1.0), 1);
        assert!((freq - 0.75).abs() < 0.015, "{freq}");
    }

    #[test]
    fn logprob_is_the_log_softmax_the_draw_follows() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f32 = l.iter().map(|v| v.exp()).sum();
        assert!((logprob_at(&l, 2, 1.0) - (3f32.exp() / z).ln()).abs() < 1e-6);
        // At temperature 0.5: softmax(2 l).
        let z2: f32 = l.iter().map(|v| (2.0 * v).exp()).sum();
        assert!((logprob_at(&l, 0, 0.5) - (2f32.exp() / z2).ln()).abs() < 1e-6);
        // The sampler draws token 1 of [0, ln 3] at temperature 0.5 with probability 9/10,
        // which is what the recorded log-prob says.
        let logits = [0.0f32, 3f32.ln()];
        let s = Sampling::with_temperature(0.5);
        assert_eq!(s.logprob_temperature(), 0.5);
        assert_eq!(Sampling::greedy().logprob_temperature(), 1.0);
        let expected = logprob_at(&logits, 1, s.logprob_temperature()).exp();
        assert!((expected - 0.9).abs() < 1e-6);
        let freq = frequency_of(1, &logits, &s, 3);
        assert!((freq - 0.9).abs() < 0.01, "{freq}");
    }

    #[test]
    fn validation_names_the_bad_value() {
        let s = Sampling {
            top_p: 0.0,
            ..Sampling::greedy()
        };
        assert!(s.validate().unwrap_err().to_string().contains("top_p"));
    }
}
