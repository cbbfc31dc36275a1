//! Preference and policy-gradient losses on candle tensors.
//!
//! **DPO** (Rafailov et al., 2023), with `h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))`
//! per pair, as TRL's `DPOTrainer` computes them:
//! - sigmoid: `−(1−ε)·log σ(βh) − ε·log σ(−βh)` (ε: label smoothing, conservative DPO);
//! - robust (Chowdhury et al., 2024): `(−(1−ε)·log σ(βh) + ε·log σ(−βh)) / (1−2ε)`;
//! - hinge (SLiC): `max(0, 1 − βh)`;
//! - IPO (Azar et al., 2023): `(h − 1/(2β))²`, on per-token mean log-probs.
//!
//! The implicit rewards are `β·(log π − log π_ref)` of each side.
//!
//! **GRPO** (Shao et al., 2024) per token `t` of sequence `i`, with ratio
//! `ρ = exp(log π − log π_old)` and group-normalised advantage `A_i = (r_i − mean)/(std + 1e-4)`:
//! `−(min(ρA, clip(ρ, 1−ε_low, 1+ε_high)·A) − β·KL)`, KL by the k3 estimator
//! `exp(ref − log π) − (ref − log π) − 1`; aggregated per sequence then averaged (GRPO), over all
//! tokens (DAPO, Yu et al., 2025, which also clips higher: `ε_high` 0.28), or over a constant
//! `sequences × max tokens` (Dr.GRPO, Liu et al., 2025, which also drops the division by the
//! group's standard deviation: `A_i = r_i − mean`).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which DPO loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// `−log σ(βh)` (with optional label smoothing).
    #[default]
    Sigmoid,
    /// `(h − 1/(2β))²`; the caller passes per-token mean log-probs, as TRL does.
    Ipo,
    /// `max(0, 1 − βh)`.
    Hinge,
    /// Robust DPO: unbiased under a known rate `ε` of flipped labels.
    Robust,
}

/// DPO's loss, β and label smoothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpoParams {
    /// The loss.
    pub loss: DpoLoss,
    /// Temperature of the implicit reward, > 0 (0.1 by default).
    pub beta: f64,
    /// Assumed share of flipped preferences, in [0, 0.5) (sigmoid and robust; 0 by default).
    pub label_smoothing: f64,
    /// Weight of the chosen sides' negative log-likelihood added to the loss (RPO, TRL's
    /// `rpo_alpha`; 0, the default, leaves plain DPO).
    #[serde(default)]
    pub rpo_alpha: f64,
}

impl Default for DpoParams {
    fn default() -> Self {
        Self {
            loss: DpoLoss::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            rpo_alpha: 0.0,
        }
    }
}

/// The term RPO adds to DPO (weighted by [`DpoParams::rpo_alpha`]): the chosen sides' negative
/// log-likelihood per trained token over the whole batch, `−Σ log π(c) / Σ tokens`, from their
/// summed log-probs `[n]` (with gradients) and their trained token counts.
pub fn chosen_nll(chosen_sums: &Tensor, chosen_tokens: &[usize]) -> Result<Tensor> {
    let n = chosen_sums.dims1()?;
    if n != chosen_tokens.len() || n == 0 {
        return Err(Error::Batch(format!(
            "RPO: {n} chosen log-probs and {} token counts",
            chosen_tokens.len()
        )));
    }
    let tokens = chosen_tokens.iter().sum::<usize>().max(1) as f64;
    Ok((chosen_sums.to_dtype(DType::F32)?.sum_all()? * (-1.0 / tokens))?)
}

/// A DPO loss and the implicit rewards behind it.
#[derive(Debug, Clone)]
pub struct DpoOutput {
    /// Mean loss over the pairs (a scalar with gradients).
    pub loss: Tensor,
    /// `β·(log π(c) − log π_ref(c))` per pair `[n]`, detached.
    pub chosen_rewards: Tensor,
    /// `β·(log π(r) − log π_ref(r))` per pair `[n]`, detached.
    pub rejected_rewards: Tensor,
}

/// `log σ(x)` computed stably and differentiably: `min(x, 0) − ln(1 + exp(−|x|))`, written with
/// `p = relu(x)` as `(x − p) − ln(1 + exp(x − 2p))` so that the gradient at `x = 0` is the exact
/// `σ(0) = 0.5` (separate `min` and `abs` kinks would give 1 there, i.e. double the gradient of
/// the first DPO step, where the policy equals the reference).
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let p = x.relu()?;
    let neg_abs = (x - p.affine(2.0, 0.0)?)?;
    let softplus = (neg_abs.exp()? + 1.0)?.log()?;
    Ok(((x - &p)? - softplus)?)
}

/// The DPO loss of pairs given the sequence log-probs `[n]` of both sides under the policy
/// (with gradients) and the reference.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
    params: &DpoParams,
) -> Result<DpoOutput> {
    let invalid = |reason: String| Error::InvalidConfig {
        source_name: "DpoParams".into(),
        reason,
    };
    let beta = params.beta;
    if !beta.is_finite() || beta <= 0.0 {
        return Err(invalid(format!(
            "beta must be positive and finite, got {beta}"
        )));
    }
    let eps = params.label_smoothing;
    if !(0.0..0.5).contains(&eps) {
        return Err(invalid(format!(
            "label_smoothing must lie in [0, 0.5), got {eps}"
        )));
    }
    let n = policy_chosen.dims1()?;
    for (name, t) in [
        ("policy_rejected", policy_rejected),
        ("reference_chosen", reference_chosen),
        ("reference_rejected", reference_rejected),
    ] {
        if t.dims() != [n] {
            return Err(Error::Batch(format!(
                "DPO: {name} has shape {:?}, policy_chosen has [{n}]",
                t.dims()
            )));
        }
    }
    if n == 0 {
        return Err(Error::Batch("DPO: no pairs".into()));
    }
    let f = |t: &Tensor| t.to_dtype(DType::F32);
    let chosen_ratio = (f(policy_chosen)? - f(reference_chosen)?)?;
    let rejected_ratio = (f(policy_rejected)? - f(reference_rejected)?)?;
    let h = (&chosen_ratio - &rejected_ratio)?;
    let per_pair = match params.loss {
        DpoLoss::Sigmoid => {
            let pos = log_sigmoid(&(&h * beta)?)?;
            let neg = log_sigmoid(&(&h * -beta)?)?;
            ((pos * -(1.0 - eps))? - (neg * eps)?)?
        }
        DpoLoss::Robust => {
            let pos = log_sigmoid(&(&h * beta)?)?;
            let neg = log_sigmoid(&(&h * -beta)?)?;
            (((pos * -(1.0 - eps))? + (neg * eps)?)? / (1.0 - 2.0 * eps))?
        }
        DpoLoss::Hinge => (1.0 - (&h * beta)?)?.relu()?,
        DpoLoss::Ipo => (&h - 1.0 / (2.0 * beta))?.sqr()?,
    };
    Ok(DpoOutput {
        loss: per_pair.mean_all()?,
        chosen_rewards: (chosen_ratio.detach() * beta)?,
        rejected_rewards: (rejected_ratio.detach() * beta)?,
    })
}

/// Share of pairs whose chosen reward is strictly above the rejected one (TRL's
/// `rewards/accuracies`).
pub fn dpo_reward_accuracy(out: &DpoOutput) -> Result<f64> {
    let chosen = out.chosen_rewards.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let rejected = out
        .rejected_rewards
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    if chosen.is_empty() || chosen.len() != rejected.len() {
        return Err(Error::Batch(format!(
            "DPO: {} chosen and {} rejected rewards",
            chosen.len(),
            rejected.len()
        )));
    }
    let right = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count();
    Ok(right as f64 / chosen.len() as f64)
}

/// How advantages are scaled within a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageScale {
    /// `(r − mean) / (std + 1e-4)`, the sample standard deviation (GRPO, as TRL).
    #[default]
    Std,
    /// `r − mean` (Dr.GRPO: no difficulty bias from the scaling).
    None,
}

/// Advantages of rewards laid out group by group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAdvantages {
    /// One per reward (0 in skipped groups).
    pub advantages: Vec<f64>,
    /// Per group: whether every reward was the same (nothing to learn; skipped).
    pub skipped: Vec<bool>,
}

/// Normalises rewards within groups of `group_size` consecutive entries (group `g` is
/// `rewards[g·G..(g+1)·G]`); a group whose rewards are all equal gets advantages 0.
pub fn group_advantages(
    rewards: &[f64],
    group_size: usize,
    scale: AdvantageScale,
) -> Result<GroupAdvantages> {
    if group_size == 0 || !rewards.len().is_multiple_of(group_size) {
        return Err(Error::InvalidConfig {
            source_name: "GRPO".into(),
            reason: format!(
                "{} rewards do not make groups of {group_size}",
                rewards.len()
            ),
        });
    }
    if let Some(bad) = rewards.iter().find(|r| !r.is_finite()) {
        return Err(Error::Batch(format!("GRPO: reward {bad} is not finite")));
    }
    let mut advantages = Vec::with_capacity(rewards.len());
    let mut skipped = Vec::with_capacity(rewards.len() / group_size);
    for group in rewards.chunks(group_size) {
        let lo = group.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = group.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if hi - lo < 1e-9 {
            skipped.push(true);
            advantages.extend(std::iter::repeat_n(0.0, group.len()));
            continue;
        }
        skipped.push(false);
        let n = group.len() as f64;
        let mean = group.iter().sum::<f64>() / n;
        let divisor = match scale {
            AdvantageScale::None => 1.0,
            AdvantageScale::Std => {
                // A group that is not flat has at least two members, so n − 1 ≥ 1.
                let var = group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
                var.sqrt() + 1e-4
            }
        };
        advantages.extend(group.iter().map(|r| (r - mean) / divisor));
    }
    Ok(GroupAdvantages {
        advantages,
        skipped,
    })
}

/// How token losses become the batch loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over each sequence's tokens, then over sequences.
    #[default]
    Grpo,
    /// Sum over tokens divided by `sequences × max_completion_tokens`.
    DrGrpo,
    /// Mean over every token of the batch.
    Dapo,
}

/// GRPO's clipping, KL and aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GrpoParams {
    /// Lower clip range: ratios below `1 − epsilon_low` are clipped (0.2).
    pub epsilon_low: f64,
    /// Upper clip range: ratios above `1 + epsilon_high` are clipped (0.2; DAPO's
    /// clip-higher uses 0.28).
    pub epsilon_high: f64,
    /// Weight of the KL penalty to the reference (0.05; 0 drops it and the reference pass).
    pub beta: f64,
    /// How token losses are aggregated.
    pub aggregation: LossAggregation,
    /// Dr.GRPO's constant normaliser: the most policy tokens a sequence may hold.
    pub max_completion_tokens: usize,
}

impl Default for GrpoParams {
    fn default() -> Self {
        Self {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.05,
            aggregation: LossAggregation::Grpo,
            max_completion_tokens: 1024,
        }
    }
}

/// Counts over a whole optimizer step, so that the losses of its micro-batches sum to the
/// step's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepNorm {
    /// Sequences in the step.
    pub sequences: usize,
    /// Policy tokens (mask 1) in the step.
    pub tokens: usize,
}

/// A GRPO loss and what happened to its tokens.
#[derive(Debug, Clone)]
pub struct GrpoOutput {
    /// The loss (a scalar with gradients).
    pub loss: Tensor,
    /// Mean k3 KL to the reference over the policy tokens (0 without reference log-probs; also
    /// reported when `beta` is 0 and they are given).
    pub kl: f64,
    /// Share of policy tokens whose ratio was clipped on the side their advantage pushes it.
    pub clip_fraction: f64,
    /// Policy tokens (mask 1) in this batch.
    pub tokens: usize,
}

/// The GRPO loss of sequences `[n, t]`: the policy's token log-probs (with gradients), the
/// sampling policy's and the reference's, each sequence's advantage `[n]`, and the mask of the
/// policy's own tokens (1) against prompt, observation, tool and padding tokens (0), which
/// contribute nothing (no loss, no gradient, no NaN) whatever values they hold. `norm`: the
/// whole step's counts (`None`: this batch's).
pub fn grpo_loss(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    reference_logprobs: Option<&Tensor>,
    advantages: &Tensor,
    mask: &Tensor,
    params: &GrpoParams,
    norm: Option<StepNorm>,
) -> Result<GrpoOutput> {
    params.validate(reference_logprobs.is_some())?;
    let (n, t) = mask.dims2()?;
    check_grpo_shapes(
        n,
        t,
        [Some(logprobs), Some(old_logprobs), reference_logprobs],
        advantages,
    )?;
    let f = |x: &Tensor| x.to_dtype(DType::F32);
    let mask = f(mask)?;
    let keep = mask.ne(0.0)?;
    let zeros = mask.zeros_like()?;
    // Differences are replaced by 0 on masked tokens before any exp (where_cond, so that even
    // inf or NaN there cannot turn into inf · 0 = NaN, forward or backward).
    let masked_diff =
        |a: &Tensor, b: &Tensor| -> Result<Tensor> { Ok(keep.where_cond(&(a - b)?, &zeros)?) };
    let lp = f(logprobs)?;
    let ratio = masked_diff(&lp, &f(old_logprobs)?)?.exp()?;
    let adv_host = f(advantages)?.to_vec1::<f32>()?;
    let adv = f(advantages)?.reshape((n, 1))?;
    let unclipped = ratio.broadcast_mul(&adv)?;
    let clipped = ratio
        .clamp(1.0 - params.epsilon_low, 1.0 + params.epsilon_high)?
        .broadcast_mul(&adv)?;
    let surrogate = unclipped.minimum(&clipped)?;
    let kl = match reference_logprobs {
        Some(reference) => {
            let d = masked_diff(&f(reference)?, &lp)?;
            Some(((d.exp()? - &d)? - 1.0)?)
        }
        None => None,
    };
    let per_token = match &kl {
        Some(kl) if params.beta > 0.0 => (surrogate - (kl * params.beta)?)?.neg()?,
        _ => surrogate.neg()?,
    };
    let masked = (per_token * &mask)?;
    let counts = mask.sum(1)?; // [n]
    let tokens = counts.sum_all()?.to_scalar::<f32>()?.round() as usize;
    let norm = norm.unwrap_or(StepNorm {
        sequences: n,
        tokens,
    });
    let loss = match params.aggregation {
        LossAggregation::Grpo => {
            let per_seq = (masked.sum(1)? / counts.maximum(1.0)?)?;
            (per_seq.sum_all()? / norm.sequences.max(1) as f64)?
        }
        LossAggregation::Dapo => (masked.sum_all()? / norm.tokens.max(1) as f64)?,
        LossAggregation::DrGrpo => {
            (masked.sum_all()? / (norm.sequences.max(1) * params.max_completion_tokens) as f64)?
        }
    };
    let kl_sum = match &kl {
        Some(kl) => (kl * &mask)?.sum_all()?.to_scalar::<f32>()? as f64,
        None => 0.0,
    };
    let clipped_tokens = clipped_tokens(&ratio, &mask, &adv_host, params)?;
    Ok(GrpoOutput {
        loss,
        kl: kl_sum / tokens.max(1) as f64,
        clip_fraction: clipped_tokens as f64 / tokens.max(1) as f64,
        tokens,
    })
}

impl GrpoParams {
    /// Checks the settings (`has_reference`: whether reference log-probs are given).
    fn validate(&self, has_reference: bool) -> Result<()> {
        let invalid = |reason: String| Error::InvalidConfig {
            source_name: "GrpoParams".into(),
            reason,
        };
        for (name, v) in [
            ("epsilon_low", self.epsilon_low),
            ("epsilon_high", self.epsilon_high),
            ("beta", self.beta),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(format!(
                    "{name} must be finite and not negative, got {v}"
                )));
            }
        }
        if self.epsilon_low >= 1.0 {
            return Err(invalid(format!(
                "epsilon_low must be below 1, got {}",
                self.epsilon_low
            )));
        }
        if self.beta > 0.0 && !has_reference {
            return Err(invalid(
                "a KL penalty (beta > 0) needs the reference log-probs".into(),
            ));
        }
        if self.aggregation == LossAggregation::DrGrpo && self.max_completion_tokens == 0 {
            return Err(invalid(
                "Dr.GRPO aggregation needs max_completion_tokens > 0".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that the log-probs (policy, old, reference) are `[n, t]` as the mask is, and the
/// advantages `[n]` with `n` at least 1.
fn check_grpo_shapes(
    n: usize,
    t: usize,
    logprobs: [Option<&Tensor>; 3],
    advantages: &Tensor,
) -> Result<()> {
    let names = ["logprobs", "old_logprobs", "reference_logprobs"];
    for (name, x) in names.iter().zip(logprobs) {
        if let Some(x) = x
            && x.dims() != [n, t]
        {
            return Err(Error::Batch(format!(
                "GRPO: {name} has shape {:?}, the mask has [{n}, {t}]",
                x.dims()
            )));
        }
    }
    if advantages.dims() != [n] {
        return Err(Error::Batch(format!(
            "GRPO: advantages have shape {:?}, expected [{n}]",
            advantages.dims()
        )));
    }
    if n == 0 {
        return Err(Error::Batch("GRPO: no sequences".into()));
    }
    Ok(())
}

/// Tokens whose ratio left the clipping range on the side the advantage pushes it (elsewhere
/// `min` keeps the unclipped term and the gradient flows).
fn clipped_tokens(
    ratio: &Tensor,
    mask: &Tensor,
    advantages: &[f32],
    params: &GrpoParams,
) -> Result<usize> {
    let (low, high) = (1.0 - params.epsilon_low, 1.0 + params.epsilon_high);
    let ratio = ratio.to_vec2::<f32>()?;
    let mask = mask.to_vec2::<f32>()?;
    Ok(ratio
        .iter()
        .zip(&mask)
        .zip(advantages)
        .map(|((rs, ms), &a)| {
            rs.iter()
                .zip(ms)
                .filter(|&(&r, &m)| {
                    let r = f64::from(r);
                    m != 0.0 && ((r < low && a < 0.0) || (r > high && a > 0.0))
                })
                .count()
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    fn dpo(loss: DpoLoss, beta: f64, eps: f64, pc: f32, pr: f32, rc: f32, rr: f32) -> DpoOutput {
        let params = DpoParams {
            loss,
            beta,
            label_smoothing: eps,
            ..DpoParams::default()
        };
        dpo_loss(&t(&[pc]), &t(&[pr]), &t(&[rc]), &t(&[rr]), &params).unwrap()
    }

    #[test]
    fn the_rpo_term_is_the_chosen_nll_per_token_over_the_batch() {
        // Sums −10 over 5 tokens and −6 over 3: 16 / 8 = 2, not the mean of 2 and 2 per pair
        // nor of the sums.
        let nll = chosen_nll(&t(&[-10.0, -6.0]), &[5, 3]).unwrap();
        assert!((scalar(&nll) - 2.0).abs() < 1e-6);
        let nll = chosen_nll(&t(&[-10.0, -2.0]), &[5, 3]).unwrap();
        assert!((scalar(&nll) - 1.5).abs() < 1e-6);
        assert!(chosen_nll(&t(&[-1.0]), &[1, 2]).is_err());
        // Its gradient: −1 / total tokens for every pair's sum.
        let sums = Var::new(&[-10f32, -6.0], &Device::Cpu).unwrap();
        let grads = chosen_nll(sums.as_tensor(), &[5, 3])
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(&sums).unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|&g| (g + 0.125).abs() < 1e-7), "{g:?}");
    }

    #[test]
    fn dpo_losses_match_hand_computed_values() {
        // pc = −10, pr = −12, rc = −11, rr = −11.5: chosen ratio +1, rejected ratio −0.5,
        // h = 1.5, βh = 0.15 with β = 0.1.
        // sigmoid: −ln σ(0.15) = ln(1 + e^−0.15) = ln(1.860708) = 0.620957
        let out = dpo(DpoLoss::Sigmoid, 0.1, 0.0, -10.0, -12.0, -11.0, -11.5);
        assert!((scalar(&out.loss) - 0.620957).abs() < 1e-5);
        assert!((out.chosen_rewards.to_vec1::<f32>().unwrap()[0] - 0.1).abs() < 1e-6);
        assert!((out.rejected_rewards.to_vec1::<f32>().unwrap()[0] + 0.05).abs() < 1e-6);
        // h = −1.5: −ln σ(−0.15) = ln(1 + e^0.15) = ln(2.161834) = 0.770957
        let out = dpo(DpoLoss::Sigmoid, 0.1, 0.0, -12.0, -10.0, -11.5, -11.0);
        assert!((scalar(&out.loss) - 0.770957).abs() < 1e-5);
        // Label smoothing 0.1 at h = 1.5: 0.9·0.620957 + 0.1·0.770957 = 0.635957
        let out = dpo(DpoLoss::Sigmoid, 0.1, 0.1, -10.0, -12.0, -11.0, -11.5);
        assert!((scalar(&out.loss) - 0.635957).abs() < 1e-5);
        // Robust, ε 0.1: (0.9·0.620957 − 0.1·0.770957) / 0.8 = (0.558861 − 0.077096) / 0.8
        // = 0.602207
        let out = dpo(DpoLoss::Robust, 0.1, 0.1, -10.0, -12.0, -11.0, -11.5);
        assert!((scalar(&out.loss) - 0.602207).abs() < 1e-5);
        // Robust, ε 0.1, h = −1.5: (0.9·0.770957 − 0.1·0.620957) / 0.8
        // = (0.693861 − 0.062096) / 0.8 = 0.789707
        let out = dpo(DpoLoss::Robust, 0.1, 0.1, -12.0, -10.0, -11.5, -11.0);
        assert!((scalar(&out.loss) - 0.789707).abs() < 1e-5);
        // Label smoothing 0.1 at h = −1.5: 0.9·0.770957 + 0.1·0.620957 = 0.755957
        let out = dpo(DpoLoss::Sigmoid, 0.1, 0.1, -12.0, -10.0, -11.5, -11.0);
        assert!((scalar(&out.loss) - 0.755957).abs() < 1e-5);
        // Hinge: max(0, 1 − 0.15) = 0.85; with β = 1, h = 1.5: max(0, −0.5) = 0.
        let out = dpo(DpoLoss::Hinge, 0.1, 0.0, -10.0, -12.0, -11.0, -11.5);
        assert!((scalar(&out.loss) - 0.85).abs() < 1e-6);
        let out = dpo(DpoLoss::Hinge, 1.0, 0.0, -10.0, -12.0, -11.0, -11.5);
        assert_eq!(scalar(&out.loss), 0.0);
        // Hinge, h = −1.5: max(0, 1 + 0.15) = 1.15.
        let out = dpo(DpoLoss::Hinge, 0.1, 0.0, -12.0, -10.0, -11.5, -11.0);
        assert!((scalar(&out.loss) - 1.15).abs() < 1e-6);
        // IPO: (h − 1/(2β))² = (1.5 − 5)² = 12.25; h = −1.5: (−6.5)² = 42.25.
        let out = dpo(DpoLoss::Ipo, 0.1, 0.0, -10.0, -12.0, -11.0, -11.5);
        assert!((scalar(&out.loss) - 12.25).abs() < 1e-4);
        let out = dpo(DpoLoss::Ipo, 0.1, 0.0, -12.0, -10.0, -11.5, -11.0);
        assert!((scalar(&out.loss) - 42.25).abs() < 1e-4);
        // Policy = reference: h = 0, loss ln 2.
        let out = dpo(DpoLoss::Sigmoid, 0.1, 0.0, -3.0, -4.0, -3.0, -4.0);
        assert!((scalar(&out.loss) - std::f64::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn dpo_is_stable_far_out_and_rejects_bad_params() {
        // βh = ±1000: log σ must not overflow.
        let out = dpo(DpoLoss::Sigmoid, 1.0, 0.0, 0.0, -1000.0, 0.0, 0.0);
        assert!(scalar(&out.loss).abs() < 1e-6);
        let out = dpo(DpoLoss::Sigmoid, 1.0, 0.0, -1000.0, 0.0, 0.0, 0.0);
        assert!((scalar(&out.loss) - 1000.0).abs() < 1e-2);
        let bad = |beta, eps| {
            let params = DpoParams {
                loss: DpoLoss::Robust,
                beta,
                label_smoothing: eps,
                ..DpoParams::default()
            };
            dpo_loss(&t(&[0.0]), &t(&[0.0]), &t(&[0.0]), &t(&[0.0]), &params).is_err()
        };
        assert!(bad(0.0, 0.0) && bad(0.1, 0.5) && bad(0.1, -0.1) && !bad(0.1, 0.2));
        assert!(bad(f64::NAN, 0.0) && bad(0.1, f64::NAN) && bad(-0.1, 0.0));
        let params = DpoParams::default();
        let ragged = dpo_loss(&t(&[0.0, 1.0]), &t(&[0.0]), &t(&[0.0]), &t(&[0.0]), &params);
        assert!(matches!(ragged, Err(Error::Batch(_))));
        let empty = dpo_loss(&t(&[]), &t(&[]), &t(&[]), &t(&[]), &params);
        assert!(matches!(empty, Err(Error::Batch(_))));
    }

    #[test]
    fn dpo_rewards_and_accuracy() {
        // β = 0.2. Pair 0: chosen ratio −1 − (−2) = 1 → 0.2, rejected −3 − (−2.5) = −0.5 → −0.1
        // (right). Pair 1: chosen −4 − (−3) = −1 → −0.2, rejected −1 − (−1.5) = 0.5 → 0.1
        // (wrong). Pair 2: both ratios 0 (a tie, not right). Accuracy 1/3.
        let params = DpoParams {
            beta: 0.2,
            ..DpoParams::default()
        };
        let out = dpo_loss(
            &t(&[-1.0, -4.0, -2.0]),
            &t(&[-3.0, -1.0, -5.0]),
            &t(&[-2.0, -3.0, -2.0]),
            &t(&[-2.5, -1.5, -5.0]),
            &params,
        )
        .unwrap();
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(
            &out.chosen_rewards.to_vec1::<f32>().unwrap(),
            &[0.2, -0.2, 0.0]
        ));
        assert!(close(
            &out.rejected_rewards.to_vec1::<f32>().unwrap(),
            &[-0.1, 0.1, 0.0]
        ));
        assert!((dpo_reward_accuracy(&out).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn dpo_gradient_at_policy_equal_reference_is_exact() {
        // At the first step the policy is the reference: h = 0 and d/dpc [−log σ(βh)] =
        // −β·σ(0) = −β/2, averaged over 2 pairs: −0.1/4 = −0.025 (log σ's kink at 0 must not
        // double it).
        let var = Var::new(&[-2.0f32, -3.0], &Device::Cpu).unwrap();
        let out = dpo_loss(
            var.as_tensor(),
            &t(&[-4.0, -1.0]),
            &t(&[-2.0, -3.0]),
            &t(&[-4.0, -1.0]),
            &DpoParams::default(),
        )
        .unwrap();
        assert!((scalar(&out.loss) - std::f64::consts::LN_2).abs() < 1e-6);
        let grads = out.loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for gi in g {
            assert!((gi + 0.025).abs() < 1e-7, "{gi}");
        }
    }

    #[test]
    fn dpo_gradient_matches_finite_differences() {
        let params = DpoParams {
            loss: DpoLoss::Sigmoid,
            beta: 0.5,
            label_smoothing: 0.1,
            ..DpoParams::default()
        };
        let f = |pc: f32| {
            let out = dpo_loss(
                &t(&[pc, -2.0]),
                &t(&[-3.0, -1.0]),
                &t(&[-2.5, -2.2]),
                &t(&[-2.0, -1.5]),
                &params,
            )
            .unwrap();
            scalar(&out.loss)
        };
        let var = Var::new(&[-2.0f32, -2.0], &Device::Cpu).unwrap();
        let out = dpo_loss(
            var.as_tensor(),
            &t(&[-3.0, -1.0]),
            &t(&[-2.5, -2.2]),
            &t(&[-2.0, -1.5]),
            &params,
        )
        .unwrap();
        let grads = out.loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0] as f64;
        let d = 1e-2;
        let numeric = (f(-2.0 + d as f32) - f(-2.0 - d as f32)) / (2.0 * d);
        assert!(
            (g - numeric).abs() < 1e-4,
            "analytic {g} vs numeric {numeric}"
        );
        assert!(g < 0.0, "raising the chosen log-prob lowers the loss");
    }

    #[test]
    fn group_advantages_normalise_within_groups_and_skip_flat_ones() {
        // [1, 0, 0, 1]: mean 0.5, sample std √(4·0.25/3) = 0.577350; ±0.5/0.577450 = ±0.865876.
        let g = group_advantages(
            &[1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3],
            4,
            AdvantageScale::Std,
        )
        .unwrap();
        assert_eq!(g.skipped, vec![false, true]);
        let want = 0.5 / (0.577_350_3 + 1e-4);
        for (a, s) in g.advantages[..4].iter().zip([1.0, -1.0, -1.0, 1.0]) {
            assert!((a - s * want).abs() < 1e-6, "{a}");
        }
        assert!((want - 0.865_876).abs() < 1e-5);
        assert_eq!(&g.advantages[4..], &[0.0; 4]);
        let g = group_advantages(&[1.0, 0.0, 0.0, 1.0], 4, AdvantageScale::None).unwrap();
        assert_eq!(g.advantages, vec![0.5, -0.5, -0.5, 0.5]);
        assert!(group_advantages(&[1.0, 0.0, 0.0], 2, AdvantageScale::Std).is_err());
        assert!(group_advantages(&[1.0], 0, AdvantageScale::Std).is_err());
    }

    fn params(aggregation: LossAggregation, beta: f64) -> GrpoParams {
        GrpoParams {
            beta,
            aggregation,
            max_completion_tokens: 4,
            ..GrpoParams::default()
        }
    }

    fn m(rows: &[&[f32]]) -> Tensor {
        let v: Vec<Vec<f32>> = rows.iter().map(|r| r.to_vec()).collect();
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn grpo_loss_at_ratio_one_is_minus_the_aggregated_advantage() {
        // Two sequences, 3 and 1 policy tokens; advantages 1 and −2; lp = old; β = 0.
        let lp = m(&[&[-1.0, -2.0, -0.5, 0.0], &[-1.0, 0.0, 0.0, 0.0]]);
        let mask = m(&[&[1.0, 1.0, 1.0, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
        let adv = t(&[1.0, -2.0]);
        let run = |agg| {
            scalar(
                &grpo_loss(&lp, &lp, None, &adv, &mask, &params(agg, 0.0), None)
                    .unwrap()
                    .loss,
            )
        };
        // GRPO: mean over sequences of (−A): (−1 + 2) / 2 = 0.5.
        assert!((run(LossAggregation::Grpo) - 0.5).abs() < 1e-6);
        // DAPO: token sum (−1·3 + 2·1) / 4 tokens = −0.25.
        assert!((run(LossAggregation::Dapo) + 0.25).abs() < 1e-6);
        // Dr.GRPO: (−3 + 2) / (2 sequences · 4) = −0.125.
        assert!((run(LossAggregation::DrGrpo) + 0.125).abs() < 1e-6);
    }

    #[test]
    fn ratios_are_clipped_on_the_side_the_advantage_pushes() {
        // One token per sequence, log-ratio 0.4 (ratio e^0.4 = 1.491825 > 1.2).
        let lp = m(&[&[0.4], &[0.4]]);
        let old = m(&[&[0.0], &[0.0]]);
        let mask = m(&[&[1.0], &[1.0]]);
        let out = grpo_loss(
            &lp,
            &old,
            None,
            &t(&[1.0, -1.0]),
            &mask,
            &params(LossAggregation::Grpo, 0.0),
            None,
        )
        .unwrap();
        // A = 1: min(1.491825, 1.2) = 1.2 → −1.2; A = −1: min(−1.491825, −1.2) = −1.491825
        // → +1.491825. Mean: (−1.2 + 1.491825)/2 = 0.145912.
        assert!((scalar(&out.loss) - 0.145_912).abs() < 1e-5);
        assert!((out.clip_fraction - 0.5).abs() < 1e-12);
    }

    #[test]
    fn clipped_tokens_get_no_gradient_and_low_side_clips_negative_advantages() {
        // Log-ratio −0.4 (ratio e^−0.4 = 0.670320 < 0.8) and +0.1 (1.105171, inside the range).
        let var = Var::new(&[[-0.4f32, 0.1], [-0.4, 0.1]], &Device::Cpu).unwrap();
        let old = m(&[&[0.0, 0.0], &[0.0, 0.0]]);
        let mask = m(&[&[1.0, 1.0], &[1.0, 1.0]]);
        let out = grpo_loss(
            var.as_tensor(),
            &old,
            None,
            &t(&[-1.0, 1.0]),
            &mask,
            &params(LossAggregation::Dapo, 0.0),
            None,
        )
        .unwrap();
        // A = −1: min(−0.670320, −0.8) = −0.8 (clipped), min(−1.105171, −1.105171);
        // A = +1: min(0.670320, 0.8) = 0.670320 (not clipped), 1.105171.
        // Loss: (0.8 + 1.105171 − 0.670320 − 1.105171) / 4 = 0.129680 / 4 = 0.032420.
        assert!((scalar(&out.loss) - 0.032_420).abs() < 1e-5);
        assert!((out.clip_fraction - 0.25).abs() < 1e-12);
        // d/dlp of −ρA/4 = −ρA/4: clipped token 0; others −A·ρ/4.
        let g = out.loss.backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let want = [[0.0, 1.105_171 / 4.0], [-0.670_320 / 4.0, -1.105_171 / 4.0]];
        for (gr, wr) in g.iter().zip(&want) {
            for (gv, wv) in gr.iter().zip(wr) {
                assert!((*gv as f64 - wv).abs() < 1e-6, "{g:?}");
            }
        }
    }

    #[test]
    fn masked_tokens_get_no_gradient_whatever_they_hold() {
        // Observation tokens in the middle, padding at the end, with extreme values there.
        let var = Var::new(
            &[
                [-1.0f32, 60.0, 60.0, -0.5, 60.0],
                [-0.2, -0.3, 60.0, -0.4, 60.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = m(&[&[1.0, 0.0, 0.0, 1.0, 0.0], &[1.0, 1.0, 0.0, 1.0, 0.0]]);
        let old = m(&[
            &[-1.1, -80.0, -80.0, -0.4, -80.0],
            &[-0.2, -0.35, -80.0, -0.4, -80.0],
        ]);
        let reference = m(&[
            &[-1.0, 80.0, 80.0, -0.6, 80.0],
            &[-0.3, -0.3, 80.0, -0.5, 80.0],
        ]);
        for agg in [
            LossAggregation::Grpo,
            LossAggregation::Dapo,
            LossAggregation::DrGrpo,
        ] {
            let out = grpo_loss(
                var.as_tensor(),
                &old,
                Some(&reference),
                &t(&[0.7, -0.4]),
                &mask,
                &params(agg, 0.05),
                None,
            )
            .unwrap();
            assert!(scalar(&out.loss).is_finite() && out.kl.is_finite());
            assert_eq!(out.tokens, 5);
            let g = out.loss.backward().unwrap();
            let g = g.get(var.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
            let mk = mask.to_vec2::<f32>().unwrap();
            for (gr, mr) in g.iter().zip(&mk) {
                for (gv, mv) in gr.iter().zip(mr) {
                    if *mv == 0.0 {
                        assert_eq!(*gv, 0.0, "{agg:?}: gradient on a masked token");
                    } else {
                        assert!(gv.is_finite() && *gv != 0.0, "{agg:?}: {g:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn infinite_or_nan_values_on_masked_tokens_do_not_leak() {
        let var = Var::new(&[[-0.5f32, f32::NEG_INFINITY, -0.7]], &Device::Cpu).unwrap();
        let old = m(&[&[-0.6, f32::NAN, f32::INFINITY]]);
        let reference = m(&[&[-0.4, f32::INFINITY, f32::NAN]]);
        let mask = m(&[&[1.0, 0.0, 0.0]]);
        let out = grpo_loss(
            var.as_tensor(),
            &old,
            Some(&reference),
            &t(&[1.0]),
            &mask,
            &params(LossAggregation::Grpo, 0.1),
            None,
        )
        .unwrap();
        // One token: ρ = e^0.1 = 1.105171 (inside [0.8, 1.2]), d = 0.1, k3 = e^0.1 − 1.1 =
        // 0.005171; loss −(1.105171 − 0.1·0.005171) = −1.104654.
        assert!((scalar(&out.loss) + 1.104_654).abs() < 1e-5);
        assert!((out.kl - 0.005_171).abs() < 1e-6);
        let g = out.loss.backward().unwrap();
        let g = g.get(var.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(g[0][0].is_finite() && g[0][0] != 0.0);
        assert_eq!(&g[0][1..], &[0.0, 0.0]);
    }

    #[test]
    fn grpo_rejects_bad_params_and_shapes() {
        let lp = m(&[&[-1.0, -2.0]]);
        let mask = m(&[&[1.0, 1.0]]);
        let adv = t(&[1.0]);
        let run = |p: GrpoParams| grpo_loss(&lp, &lp, Some(&lp), &adv, &mask, &p, None);
        let ok = params(LossAggregation::DrGrpo, 0.05);
        assert!(run(ok).is_ok());
        for bad in [
            GrpoParams {
                epsilon_low: -0.1,
                ..ok
            },
            GrpoParams {
                epsilon_high: f64::NAN,
                ..ok
            },
            GrpoParams { beta: -1.0, ..ok },
            GrpoParams {
                max_completion_tokens: 0,
                ..ok
            },
        ] {
            assert!(
                matches!(run(bad), Err(Error::InvalidConfig { .. })),
                "{bad:?}"
            );
        }
        let p = params(LossAggregation::Grpo, 0.0);
        let short = m(&[&[-1.0]]);
        assert!(matches!(
            grpo_loss(&short, &lp, None, &adv, &mask, &p, None),
            Err(Error::Batch(_))
        ));
        assert!(matches!(
            grpo_loss(&lp, &lp, None, &t(&[1.0, 2.0]), &mask, &p, None),
            Err(Error::Batch(_))
        ));
    }

    #[test]
    fn kl_is_zero_at_the_reference_and_positive_away_from_it() {
        let lp = m(&[&[-1.0, -2.0], &[-0.5, -0.1]]);
        let mask = m(&[&[1.0, 1.0], &[1.0, 0.0]]);
        let p = params(LossAggregation::Grpo, 0.05);
        let out = grpo_loss(&lp, &lp, Some(&lp), &t(&[0.0, 0.0]), &mask, &p, None).unwrap();
        assert_eq!(out.kl, 0.0);
        assert_eq!(scalar(&out.loss), 0.0);
        let other = m(&[&[-1.5, -1.0], &[-0.7, 5.0]]);
        let out = grpo_loss(&lp, &lp, Some(&other), &t(&[0.0, 0.0]), &mask, &p, None).unwrap();
        // k3 at d = ref − lp: e^d − d − 1; d = −0.5, 1, −0.2 → 0.106531, 0.718282, 0.018731.
        let want = (0.106_531 + 0.718_282 + 0.018_731) / 3.0;
        assert!((out.kl - want).abs() < 1e-5, "{}", out.kl);
        assert!(scalar(&out.loss) > 0.0);
        assert!(grpo_loss(&lp, &lp, None, &t(&[0.0, 0.0]), &mask, &p, None).is_err());
    }

    #[test]
    fn micro_batch_losses_with_the_step_norm_sum_to_the_whole_batch_loss() {
        let lp = m(&[&[-1.0, -2.0, -0.5], &[-1.0, -0.3, 0.0], &[-0.7, -0.2, -0.9]]);
        let old = m(&[
            &[-1.1, -1.9, -0.5],
            &[-0.9, -0.3, 0.0],
            &[-0.7, -0.25, -1.0],
        ]);
        let mask = m(&[&[1.0, 1.0, 0.0], &[1.0, 1.0, 1.0], &[0.0, 1.0, 1.0]]);
        let adv = t(&[0.5, -1.0, 0.8]);
        let norm = StepNorm {
            sequences: 3,
            tokens: 7,
        };
        for agg in [
            LossAggregation::Grpo,
            LossAggregation::Dapo,
            LossAggregation::DrGrpo,
        ] {
            let p = params(agg, 0.0);
            let whole = scalar(
                &grpo_loss(&lp, &old, None, &adv, &mask, &p, None)
                    .unwrap()
                    .loss,
            );
            let part = |a: usize, b: usize| {
                let s = |x: &Tensor| x.narrow(0, a, b - a).unwrap();
                scalar(
                    &grpo_loss(
                        &s(&lp),
                        &s(&old),
                        None,
                        &adv.narrow(0, a, b - a).unwrap(),
                        &s(&mask),
                        &p,
                        Some(norm),
                    )
                    .unwrap()
                    .loss,
                )
            };
            let summed = part(0, 1) + part(1, 3);
            assert!(
                (whole - summed).abs() < 1e-6,
                "{agg:?}: {whole} vs {summed}"
            );
        }
    }
}
