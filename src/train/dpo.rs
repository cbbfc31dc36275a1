//! Phase 05, DPO: LoRA adapters trained on preference pairs against a frozen reference.
//!
//! The policy starts from the SFT model (its adapter merged into the weights, see
//! [`Decoder::merge_adapter`]) with fresh adapters; the reference is the same weights with the
//! adapters off, so no second copy of the model is held. The reference's sequence log-probs
//! are computed once and cached in `reference.json` beside the checkpoints. Each side's
//! log-prob sums the continuation's assistant tokens only (the shared opening and the
//! observations are context). Losses: sigmoid (default, β 0.1), IPO (on per-token means, as
//! TRL), hinge and robust; checkpoints and resume as in SFT.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::args::TrainArgs;
use super::data::SftExample;
use super::losses::{DpoLoss, DpoParams, chosen_nll, dpo_loss};
use super::run::{TrainState, peak_memory_mb};
use super::trainer::{Core, Method, Trainer};
use crate::chat::{EncodeOptions, Tokenizer, Truncation};
use crate::error::{Error, Result};
use crate::io::create_dir_all;
use crate::model::host;
use crate::model::{Decoder, Mode, Padding, TokenBatch};
use crate::pairs::Pair;
use crate::rng::Rng;

/// How DPO trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoConfig {
    /// Adapters (on top of the merged SFT model), optimizer, schedule, evaluation and
    /// checkpoints (`micro_batch`: pairs per forward/backward pass, two rows each).
    #[serde(flatten)]
    pub train: TrainArgs,
    /// Loss, β and label smoothing.
    pub loss: DpoParams,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Longest side in tokens (later turns are dropped whole beyond it).
    pub max_len: usize,
    /// Passes over the pairs (each round).
    pub epochs: usize,
    /// Rounds of iterative DPO: after the first (on phase 04's pairs), each round samples new
    /// pairs from the latest policy, which also becomes the reference (see [`dpo_rounds`]).
    pub rounds: usize,
    /// Stop after this many optimizer steps (the schedule spans them).
    pub max_steps: Option<usize>,
    /// Share of pairs held out for the eval metrics.
    pub eval_share: f64,
}

super::args::trainer_config!(DpoConfig, dpo);

/// One pair as token sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct DpoExample {
    /// The chosen side, its continuation's replies trained.
    pub chosen: SftExample,
    /// The rejected side.
    pub rejected: SftExample,
}

/// Encodes pairs with the chat template, each side truncated to `max_len` (later turns
/// dropped whole); pairs where a side keeps no trained token are skipped. Returns the examples
/// and how many pairs were skipped.
pub fn encode_pairs(
    pairs: &[Pair],
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<(Vec<DpoExample>, usize)> {
    let options = EncodeOptions {
        max_len: Some(max_len),
        truncation: Truncation::DropTurns,
        ..EncodeOptions::default()
    };
    let mut out = Vec::with_capacity(pairs.len());
    let mut skipped = 0;
    for pair in pairs {
        let (chosen, rejected) = pair.conversations();
        let side = |c| -> Result<Option<SftExample>> {
            let e = tokenizer.encode_conversation(c, &options)?;
            Ok(
                (e.num_trained() > 0 && e.ids.len() >= 2 && e.ids.len() <= max_len).then_some(
                    SftExample {
                        ids: e.ids,
                        mask: e.mask,
                    },
                ),
            )
        };
        match (side(&chosen)?, side(&rejected)?) {
            (Some(chosen), Some(rejected)) => out.push(DpoExample { chosen, rejected }),
            _ => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// Sequence log-probs of both sides of some pairs: `(chosen [n], rejected [n])`, summed over
/// the trained tokens (or averaged per token when `mean`), in one forward pass of `2n` rows.
pub fn pair_logprobs(
    model: &Decoder,
    examples: &[&DpoExample],
    pad_id: u32,
    mode: Mode,
    mean: bool,
) -> Result<(Tensor, Tensor)> {
    let sides: Vec<&SftExample> = examples
        .iter()
        .flat_map(|e| [&e.chosen, &e.rejected])
        .collect();
    let rows: Vec<Vec<u32>> = sides.iter().map(|s| s.ids.clone()).collect();
    let batch = TokenBatch::pad(&rows, pad_id, Padding::Right, model.device())?;
    let (n_rows, t) = batch.dims();
    let mut positions = Vec::new();
    let mut owner = Vec::new();
    for (r, side) in sides.iter().enumerate() {
        for (k, _) in side
            .mask
            .iter()
            .enumerate()
            .skip(1)
            .filter(|&(_, &m)| m == 1)
        {
            positions.push((r * (t - 1) + k - 1) as u32);
            owner.push(r);
        }
    }
    let lp = model.token_logprobs_at(&batch, &positions, mode, 1.0)?;
    // Per-row sums as a matmul with a one-hot [rows, positions] matrix (differentiable).
    let mut onehot = vec![0f32; n_rows * positions.len()];
    for (p, &r) in owner.iter().enumerate() {
        onehot[r * positions.len() + p] = 1.0;
    }
    let onehot = host::tensor(onehot, (n_rows, positions.len()), model.device())?;
    let mut sums = onehot
        .matmul(&lp.to_dtype(DType::F32)?.unsqueeze(1)?)?
        .squeeze(1)?;
    if mean {
        let counts: Vec<f32> = (0..n_rows)
            .map(|r| owner.iter().filter(|&&o| o == r).count().max(1) as f32)
            .collect();
        sums = (sums / host::tensor(counts, n_rows, model.device())?)?;
    }
    let sums = sums.reshape((examples.len(), 2))?;
    Ok((
        sums.narrow(1, 0, 1)?.squeeze(1)?,
        sums.narrow(1, 1, 1)?.squeeze(1)?,
    ))
}

/// The reference's sequence log-probs of every pair, cached on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReferenceCache {
    /// Hash of the token ids and masks it was computed on.
    fingerprint: u64,
    /// Whether the values are per-token means (IPO).
    mean: bool,
    chosen: Vec<f32>,
    rejected: Vec<f32>,
}

fn fingerprint(examples: &[DpoExample]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in examples {
        e.chosen.ids.hash(&mut h);
        e.chosen.mask.hash(&mut h);
        e.rejected.ids.hash(&mut h);
        e.rejected.mask.hash(&mut h);
    }
    h.finish()
}

/// What one DPO optimizer step did (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoMetrics {
    /// Optimizer steps done (1-based).
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean loss over the step's pairs.
    pub loss: f64,
    /// Share of pairs whose chosen reward beats the rejected one.
    pub accuracy: f64,
    /// Mean β·(log π − log π_ref) of the chosen sides.
    pub chosen_reward: f64,
    /// The same for the rejected sides.
    pub rejected_reward: f64,
    /// Mean chosen − rejected reward.
    pub margin: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (padding excluded) per second of this step.
    pub tokens_per_s: f64,
    /// Peak resident memory so far, MB.
    pub memory_mb: f64,
    /// Loss, accuracy and margin on the held-out pairs, when measured.
    pub eval: Option<DpoEval>,
}

impl DpoMetrics {
    /// A one-line report.
    pub fn line(&self, total: usize) -> String {
        let eval = self
            .eval
            .as_ref()
            .map(|e| format!(" | eval loss {:.4} acc {:.2}", e.loss, e.accuracy))
            .unwrap_or_default();
        format!(
            "step {:>4}/{total} loss {:.4} acc {:.2} margin {:+.4} (chosen {:+.4} rejected {:+.4}) lr {:.2e} grad-norm {:.3} {:.0} tok/s{eval}",
            self.step,
            self.loss,
            self.accuracy,
            self.margin,
            self.chosen_reward,
            self.rejected_reward,
            self.lr,
            self.grad_norm,
            self.tokens_per_s
        )
    }
}

/// DPO metrics over a set of pairs without training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DpoEval {
    /// Mean loss.
    pub loss: f64,
    /// Share of pairs ranked right.
    pub accuracy: f64,
    /// Mean reward margin.
    pub margin: f64,
}

/// The loss, accuracy and margin curves of a DPO run.
pub fn dpo_chart(metrics: &[DpoMetrics]) -> Result<crate::plot::Svg> {
    crate::plot::LineChart::new("DPO: loss, reward accuracy and margin")
        .x_label("step")
        .integer_x(true)
        .series("loss", metrics.iter().map(|m| (m.step as f64, m.loss)))
        .series(
            "accuracy",
            metrics.iter().map(|m| (m.step as f64, m.accuracy)),
        )
        .series("margin", metrics.iter().map(|m| (m.step as f64, m.margin)))
        .series(
            "eval loss",
            metrics
                .iter()
                .filter_map(|m| m.eval.map(|e| (m.step as f64, e.loss))),
        )
        .render()
}

/// DPO as a [`Method`]: the pairs, the reference's log-probs of each, and the loss.
pub struct Dpo {
    config: DpoConfig,
    train: Vec<DpoExample>,
    eval: Vec<DpoExample>,
    /// Reference log-probs of `train` then `eval`, chosen and rejected.
    reference: ReferenceCache,
    batches: Vec<Vec<usize>>,
}

/// Trains LoRA adapters with DPO.
pub type DpoTrainer = Trainer<Dpo>;

/// Pair indices of one epoch in a seeded order, `per_batch` to a micro-batch.
fn pair_batches(n: usize, seed: u64, epoch: usize, per_batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0xd90 ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).shuffle(&mut order);
    order
        .chunks(per_batch.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// The reference's log-probs of every pair, reloaded from `dir/reference.json` when it holds
/// them for these pairs, else computed with `model` (adapters off) and saved there.
fn reference_logprobs(
    model: &Decoder,
    all: &[DpoExample],
    config: &DpoConfig,
    pad_id: u32,
    dir: &Path,
) -> Result<ReferenceCache> {
    let mean = config.loss.loss == DpoLoss::Ipo;
    let print = fingerprint(all);
    let cache_path = dir.join("reference.json");
    let cached: Option<ReferenceCache> = cache_path
        .is_file()
        .then(|| crate::io::read_json(&cache_path).ok())
        .flatten()
        .filter(|c: &ReferenceCache| c.fingerprint == print && c.mean == mean);
    if let Some(cache) = cached {
        return Ok(cache);
    }
    if model.lora_config().is_some() {
        return Err(Error::Adapter(
            "DPO adds its own adapters: merge the SFT adapter first (Decoder::merge_adapter)"
                .into(),
        ));
    }
    let mut progress =
        crate::progress::Progress::new("05 DPO · reference log-probs", Some(all.len() as u64))
            .with_unit("pairs");
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    for chunk in all.chunks(config.train.micro_batch.max(1)) {
        let refs: Vec<&DpoExample> = chunk.iter().collect();
        let (c, r) = pair_logprobs(model, &refs, pad_id, Mode::Reference, mean)?;
        chosen.extend(c.to_vec1::<f32>()?);
        rejected.extend(r.to_vec1::<f32>()?);
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let cache = ReferenceCache {
        fingerprint: print,
        mean,
        chosen,
        rejected,
    };
    crate::io::write_json(&cache_path, &cache)?;
    Ok(cache)
}

impl Dpo {
    /// The loss and its parts on some pairs (indices into train, or into eval with an
    /// offset of `train.len()`).
    fn loss_on(
        &self,
        core: &Core,
        indices: &[usize],
        mode: Mode,
    ) -> Result<(Tensor, super::losses::DpoOutput)> {
        let examples: Vec<&DpoExample> = indices
            .iter()
            .map(|&i| {
                if i < self.train.len() {
                    &self.train[i]
                } else {
                    &self.eval[i - self.train.len()]
                }
            })
            .collect();
        let mean = self.config.loss.loss == DpoLoss::Ipo;
        let (pc, pr) = pair_logprobs(core.model(), &examples, core.pad_id(), mode, mean)?;
        let (rc, rr): (Vec<f32>, Vec<f32>) = indices
            .iter()
            .map(|&i| (self.reference.chosen[i], self.reference.rejected[i]))
            .unzip();
        let n = indices.len();
        let rc = host::tensor(rc, n, core.device())?;
        let rr = host::tensor(rr, n, core.device())?;
        let out = dpo_loss(&pc, &pr, &rc, &rr, &self.config.loss)?;
        let alpha = self.config.loss.rpo_alpha;
        if alpha == 0.0 {
            return Ok((out.loss.clone(), out));
        }
        // The tokens `pair_logprobs` scores: trained positions after the first.
        let tokens: Vec<usize> = examples
            .iter()
            .map(|e| e.chosen.mask.iter().skip(1).filter(|&&m| m == 1).count())
            .collect();
        let sums = if mean {
            let counts = tokens.iter().map(|&k| k.max(1) as f32).collect();
            (pc.to_dtype(DType::F32)? * host::tensor(counts, n, core.device())?)?
        } else {
            pc
        };
        let loss = (&out.loss + (chosen_nll(&sums, &tokens)? * alpha)?)?;
        Ok((loss, out))
    }

    /// Loss, accuracy and margin on the held-out pairs in `mode`.
    fn evaluate(&self, core: &Core, mode: Mode) -> Result<DpoEval> {
        if self.eval.is_empty() {
            return Err(Error::Batch(
                "no held-out pairs to evaluate (eval_share is 0 or there are fewer than 2 pairs)"
                    .into(),
            ));
        }
        let offset = self.train.len();
        let (mut loss, mut right, mut margin) = (0.0, 0.0, 0.0);
        for chunk in (offset..offset + self.eval.len())
            .collect::<Vec<_>>()
            .chunks(self.config.train.micro_batch)
        {
            let (l, out) = self.loss_on(core, chunk, mode)?;
            let n = chunk.len() as f64;
            loss += n * l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let (acc, m) = reward_stats(&out)?;
            right += n * acc;
            margin += n * m;
        }
        let n = self.eval.len().max(1) as f64;
        Ok(DpoEval {
            loss: loss / n,
            accuracy: right / n,
            margin: margin / n,
        })
    }

    /// The next `grad_accum` micro-batches of pairs (crossing into the next epoch if needed).
    fn next_micro_batches(&mut self, state: &mut TrainState) -> Vec<Vec<usize>> {
        let mut micro = Vec::with_capacity(self.config.grad_accum);
        while micro.len() < self.config.grad_accum {
            if state.cursor >= self.batches.len() {
                state.epoch += 1;
                state.cursor = 0;
                self.seek_epoch(state.epoch);
            }
            micro.push(self.batches[state.cursor].clone());
            state.cursor += 1;
        }
        micro
    }

    fn seek_epoch(&mut self, epoch: usize) {
        self.batches = pair_batches(
            self.train.len(),
            self.config.train.seed,
            epoch,
            self.config.train.micro_batch,
        );
    }
}

impl Method for Dpo {
    type Config = DpoConfig;
    type Metrics = DpoMetrics;

    fn config(&self) -> &DpoConfig {
        &self.config
    }

    fn seek(&mut self, state: &TrainState) -> Result<()> {
        self.seek_epoch(state.epoch);
        Ok(())
    }

    /// Forward/backward over `grad_accum` micro-batches of pairs (each weighted by its share
    /// of the step's pairs), then one update.
    fn step(&mut self, core: &mut Core) -> Result<DpoMetrics> {
        let start = Instant::now();
        let micro = self.next_micro_batches(core.state_mut());
        let pairs: usize = micro.iter().map(Vec::len).sum();
        let mut grads = core.grads();
        let (mut loss_sum, mut right, mut chosen, mut rejected, mut tokens) =
            (0.0, 0.0, 0.0, 0.0, 0usize);
        for m in &micro {
            let (loss, out) = self.loss_on(core, m, Mode::Train)?;
            let share = m.len() as f64 / pairs as f64;
            let loss = (loss * share)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            core.backward(&loss, &mut grads)?;
            let n = m.len() as f64;
            right += n * reward_stats(&out)?.0;
            chosen += n * mean_of(&out.chosen_rewards)?;
            rejected += n * mean_of(&out.rejected_rewards)?;
            tokens += m
                .iter()
                .map(|&i| self.train[i].chosen.ids.len() + self.train[i].rejected.ids.len())
                .sum::<usize>();
        }
        let (grad_norm, lr) = core.update(&mut grads, 0)?;
        let n = pairs as f64;
        Ok(DpoMetrics {
            step: core.state().step + 1,
            epoch: core.state().epoch,
            loss: loss_sum,
            accuracy: right / n,
            chosen_reward: chosen / n,
            rejected_reward: rejected / n,
            margin: (chosen - rejected) / n,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            memory_mb: peak_memory_mb(),
            eval: None,
        })
    }

    fn has_eval(&self) -> bool {
        !self.eval.is_empty()
    }

    fn evaluate_into(&mut self, core: &Core, metrics: &mut DpoMetrics) -> Result<()> {
        metrics.eval = Some(self.evaluate(core, Mode::Eval)?);
        Ok(())
    }
}

impl Trainer<Dpo> {
    /// A run in `dir` on `model` (whose weights are the reference): computes (or reloads) the
    /// reference log-probs, then adds the adapters. Call [`Trainer::resume`] to continue from
    /// the last checkpoint.
    pub fn new(
        model: Decoder,
        train: Vec<DpoExample>,
        eval: Vec<DpoExample>,
        config: DpoConfig,
        pad_id: u32,
        dir: &Path,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::Batch(
                "no preference pairs to train on (phase 04 kept none?)".into(),
            ));
        }
        if config.train.micro_batch == 0 || config.grad_accum == 0 {
            return Err(Error::Batch(
                "micro_batch and grad_accum must be at least 1".into(),
            ));
        }
        config.train.validate("DpoConfig")?;
        create_dir_all(dir)?;
        let all: Vec<DpoExample> = train.iter().chain(&eval).cloned().collect();
        let reference = reference_logprobs(&model, &all, &config, pad_id, dir)?;
        let per_epoch = train
            .len()
            .div_ceil(config.train.micro_batch)
            .div_ceil(config.grad_accum);
        let total = config
            .max_steps
            .unwrap_or(per_epoch * config.epochs.max(1))
            .max(1);
        let core = Core::new(model, &config.train, total, 1, pad_id, dir)?;
        let mut method = Dpo {
            config,
            train,
            eval,
            reference,
            batches: Vec::new(),
        };
        method.seek_epoch(0);
        Ok(Self::from_parts(core, method))
    }

    /// The training pairs.
    pub fn train_examples(&self) -> &[DpoExample] {
        &self.method().train
    }

    /// The held-out pairs.
    pub fn eval_examples(&self) -> &[DpoExample] {
        &self.method().eval
    }

    /// Loss, accuracy and margin on the held-out pairs (adapters on, no dropout).
    pub fn evaluate(&self) -> Result<DpoEval> {
        self.evaluate_mode(Mode::Eval)
    }

    /// The same metrics in a given mode ([`Mode::Reference`]: the starting point, loss ln 2).
    pub fn evaluate_mode(&self, mode: Mode) -> Result<DpoEval> {
        let (core, dpo) = self.parts();
        dpo.evaluate(core, mode)
    }
}

/// What one round of iterative DPO did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round (1 is the first, on phase 04's pairs).
    pub round: usize,
    /// Pairs sampled from the policy for this round.
    pub pairs: usize,
    /// Share of the sampled episodes that solved their task (`None` when the round's pairs
    /// were already on disk).
    pub solved: Option<f64>,
    /// Held-out pair metrics at the end of the round.
    pub eval: Option<DpoEval>,
}

/// Rounds 2 to `config.rounds` of iterative DPO, after a first round trained on phase 04's
/// pairs: each folds the last round's adapters into the weights (so the latest policy is the
/// new reference), samples and filters new best-of-N pairs with it on `prompts` (written to
/// `pairs_dir/round-N/`, reused if there), and trains fresh adapters on them in
/// `dpo_dir/round-N/` (resuming from a checkpoint there). Returns the final model, whose
/// [`Decoder::save_adapter`] writes SFT and every round stacked, and a summary per round; a
/// round that finds no pair ends the iteration. `on_step` sees the round, its total steps and
/// each step's metrics.
#[allow(clippy::too_many_arguments)]
pub fn dpo_rounds(
    model: Decoder,
    tokenizer: &Tokenizer,
    prompts: &[crate::prompts::Prompt],
    pairs_config: &crate::pairs::PairsConfig,
    config: &DpoConfig,
    pairs_dir: &Path,
    dpo_dir: &Path,
    mut on_step: impl FnMut(usize, usize, &DpoMetrics),
) -> Result<(Decoder, Vec<RoundSummary>)> {
    use crate::pairs::{best_of_n_pairs, read_pairs, sample_prompts, write_pairs};
    let mut model = model;
    let mut summaries = Vec::new();
    for round in 2..=config.rounds {
        model.merge_lora()?;
        let round_pairs = pairs_dir.join(format!("round-{round}"));
        let (pairs, solved) = if crate::pairs::pairs_path(&round_pairs).is_file() {
            (read_pairs(&round_pairs)?, None)
        } else {
            let start = Instant::now();
            let picked = pairs_config.pick(prompts);
            let sampling = pairs_config.for_round(round);
            let samples = sample_prompts(&model, tokenizer, &picked, &sampling, None)?;
            let (pairs, report) =
                best_of_n_pairs(&samples, &sampling, start.elapsed().as_secs_f64())?;
            write_pairs(&round_pairs, &pairs, &samples, &report)?;
            let solved = samples.iter().filter(|s| s.score.success).count() as f64
                / samples.len().max(1) as f64;
            (pairs, Some(solved))
        };
        println!("round {round}: {} pairs", pairs.len());
        if pairs.is_empty() {
            // Nothing left to prefer: the policy's samples all scored alike. Stop here, the
            // adapters so far folded into the weights (save_adapter still writes them all).
            summaries.push(RoundSummary {
                round,
                pairs: 0,
                solved,
                eval: None,
            });
            break;
        }
        let mut round_config = config.clone();
        round_config.train.seed = config.train.seed.wrapping_add(round as u64);
        let (mut trainer, _) = dpo_trainer(
            model,
            &pairs,
            tokenizer,
            round_config,
            &dpo_dir.join(format!("round-{round}")),
            false,
        )?;
        let total = trainer.total_steps();
        trainer.train(None, |m| on_step(round, total, m))?;
        let eval = (!trainer.eval_examples().is_empty())
            .then(|| trainer.evaluate())
            .transpose()?;
        summaries.push(RoundSummary {
            round,
            pairs: pairs.len(),
            solved,
            eval,
        });
        model = trainer.into_model();
    }
    Ok((model, summaries))
}

fn mean_of(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()?)
}

/// (accuracy, mean margin) of a loss output.
fn reward_stats(out: &super::losses::DpoOutput) -> Result<(f64, f64)> {
    let c = out.chosen_rewards.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let r = out
        .rejected_rewards
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let n = c.len().max(1) as f64;
    let right = c.iter().zip(&r).filter(|(c, r)| c > r).count() as f64;
    let margin: f64 = c.iter().zip(&r).map(|(c, r)| c - r).sum();
    Ok((right / n, margin / n))
}

/// Encodes the pairs, holds out the eval share, and builds a trainer over `model` (the SFT
/// model, adapter merged) in `dir`, resuming from its last checkpoint when there is one
/// (`fresh`: delete checkpoints and the cached reference, and start over). Returns the trainer and how many pairs were
/// skipped (a side with no trained token within `max_len`).
pub fn dpo_trainer(
    model: Decoder,
    pairs: &[Pair],
    tokenizer: &Tokenizer,
    config: DpoConfig,
    dir: &Path,
    fresh: bool,
) -> Result<(DpoTrainer, usize)> {
    let (mut examples, skipped) = encode_pairs(pairs, tokenizer, config.max_len)?;
    Rng::new(config.train.seed ^ 0xe7a1).shuffle(&mut examples);
    // At least one held-out pair whenever there are two and a share is asked for, so that a
    // small run still reports held-out metrics.
    let wanted = (examples.len() as f64 * config.eval_share).round() as usize;
    let n_eval = if config.eval_share > 0.0 {
        wanted.max(1)
    } else {
        0
    }
    .min(examples.len() / 2);
    let train = examples.split_off(n_eval);
    if fresh {
        let cache = dir.join("reference.json");
        if cache.exists() {
            std::fs::remove_file(&cache).map_err(|e| Error::io("removing", &cache, e))?;
        }
    }
    let trainer = DpoTrainer::new(
        model,
        train,
        examples,
        config,
        tokenizer.pad_token_id(),
        dir,
    )?
    .open(fresh)?;
    Ok((trainer, skipped))
}
