//! Phase 05, GRPO: multi-turn online RL with group-relative advantages.
//!
//! Each step draws `prompts_per_step` training prompts (phase 02's), plays each `group_size`
//! times in its environment at temperature 0.8 with the adapters on, and grades every episode
//! with [`crate::env::TaskScore`] (execution outcome with partial credit for DB tasks, completion
//! with progress credit for household games; or, with [`GrpoReward::Success`], 1 for a solved
//! task and 0 otherwise; or [`GrpoReward::Correct`], aligned with correctness), optionally on
//! the prompts of some task types only. Rewards are
//! normalised within each prompt's group (groups whose rewards are all equal teach nothing and
//! are skipped and counted); every token the policy wrote in a kept episode gets its episode's
//! advantage, and the prompt, the observations and the template's tokens get no loss and no
//! gradient. With `mask_truncated`, episodes cut off by the reply or context limit count in
//! their group's baseline but get no loss (DAPO's overlong filtering). The loss is [`grpo_loss`]: clipped importance ratio, k3 KL to the reference (the
//! same weights with the adapters off, so the SFT model), and grpo / dr_grpo / dapo aggregation
//! over the step. With `filter_groups`, only groups holding a success and a reward spread
//! train, and a step short of its quota plays more prompts (DAPO's dynamic sampling); with a
//! `curriculum`, each prompt's pass rate is estimated from its rollouts and prompts are drawn
//! only while the estimate lies inside a band ([`super::curriculum`]).
//!
//! Log-probs are computed only at the policy's tokens ([`Decoder::token_logprobs_at`]) and laid
//! out compactly, one row per episode and one column per policy token, so long observations
//! cost a forward pass but no output head. They are taken at the rollout temperature — the
//! distribution the sampler drew from, as verl does — for the policy, the old policy and the
//! reference alike.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::args::TrainArgs;
use super::curriculum::{CurriculumConfig, PassRates};
use super::losses::{
    AdvantageScale, GroupAdvantages, GrpoParams, StepNorm, group_advantages, grpo_loss,
};
use super::run::{TrainState, append_metrics, peak_memory_mb, read_metrics};
use super::trainer::{Core, Method, Trainer};
use crate::chat::Tokenizer;
use crate::error::{Error, Result};
use crate::generate::{Episode, EpisodeEnd, PlayOptions, PlayedTask, Sampling, play_tasks};
use crate::model::host;
use crate::model::{Decoder, Mode, Padding, TokenBatch};
use crate::prompts::Prompt;
use crate::rng::Rng;

/// How GRPO trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    /// Adapters (on top of the merged SFT model), optimizer, schedule (`warmup_ratio`: a share
    /// of the optimizer updates), held-out evaluation and checkpoints (`micro_batch`: episodes
    /// per forward/backward pass).
    #[serde(flatten)]
    pub train: TrainArgs,
    /// Clipping, KL weight and loss aggregation.
    pub loss: GrpoParams,
    /// Advantages scaled by the group's standard deviation (GRPO) or not (Dr.GRPO).
    pub advantage: AdvantageScale,
    /// Episodes per prompt (G).
    pub group_size: usize,
    /// Prompts per step (each played `group_size` times).
    pub prompts_per_step: usize,
    /// Optimizer updates on each step's episodes (μ; with 1 the ratio is exactly 1 and only
    /// the KL term and the advantages shape the update, as TRL's default).
    pub iterations: usize,
    /// Rollout sampling temperature.
    pub temperature: f32,
    /// Rollout nucleus threshold (1 = off).
    pub top_p: f32,
    /// Episodes generated together.
    pub rollout_batch: usize,
    /// Most new tokens per reply.
    pub max_new_tokens: usize,
    /// Most replies per DB episode.
    pub db_turns: usize,
    /// Most replies per household episode.
    pub household_turns: usize,
    /// Most tokens per episode, prompt included.
    pub max_context: usize,
    /// Steps (rollout batches) in the run.
    pub steps: usize,
    /// Play the held-out tasks greedily at the start, every `eval_every` steps and at the
    /// end (off in the short and smoke runs, whose quick scores play the same tasks).
    #[serde(default = "held_out_default")]
    pub held_out_eval: bool,
    /// What each episode is rewarded with.
    #[serde(default)]
    pub reward: GrpoReward,
    /// Train only on prompts whose task type (`db/<kind>` or `household/<kind>`, as in
    /// [`GrpoMetrics::success_by_kind`]) starts with one of these, e.g. `["db"]` (empty: all).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Give no loss to episodes that the reply or context limit cut off (they still count in
    /// their group's baseline): DAPO's overlong filtering.
    #[serde(default)]
    pub mask_truncated: bool,
    /// Success-aware dynamic sampling (DAPO's `filter_groups`): train only on groups that hold
    /// a success and whose rewards differ, the first `prompts_per_step` of them; a step short of
    /// that many plays more prompts, up to `max_resamples` extra rollout batches.
    #[serde(default)]
    pub filter_groups: bool,
    /// With `filter_groups`: most extra rollout batches a step plays to fill its quota.
    #[serde(default = "max_resamples_default")]
    pub max_resamples: usize,
    /// A pass-rate curriculum: each prompt's pass rate estimated from its rollouts (saved in
    /// checkpoints), and prompts drawn only while the estimate lies in the band (none: every
    /// prompt in turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curriculum: Option<CurriculumConfig>,
}

fn max_resamples_default() -> usize {
    3
}

super::args::trainer_config!(GrpoConfig, grpo);

/// What a GRPO episode is rewarded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpoReward {
    /// The graded score ([`crate::env::TaskScore::score`]): 1 for a solved task, partial
    /// credit for a wrong answer or household progress, negative for an unfinished or broken
    /// episode.
    #[default]
    Graded,
    /// 1 for a solved task, 0 for anything else: only groups with both a success and a
    /// failure train, so the policy is never pushed towards a better wrong answer.
    Success,
    /// Aligned with correctness: 1 for a solved task; a small partial credit (0.1 × the answer's
    /// overlap with the gold, or the household game's progress) for an unsolved one, so a wrong
    /// answer that shares nothing and an episode out of rounds get 0; −0.1 for a reply that
    /// broke the protocol.
    Correct,
}

/// [`GrpoReward::Correct`]'s weight of the partial credit.
const CORRECT_PARTIAL: f64 = 0.1;
/// [`GrpoReward::Correct`]'s reward of an episode whose reply broke the protocol.
const CORRECT_BROKEN: f64 = -0.1;

impl GrpoReward {
    /// The reward of an episode with this `score`.
    pub fn of(self, score: &crate::env::TaskScore) -> f64 {
        use crate::reward::grade::PARTIAL_WEIGHT;
        match self {
            GrpoReward::Graded => score.score,
            GrpoReward::Success => f64::from(u8::from(score.success)),
            GrpoReward::Correct if score.success => 1.0,
            GrpoReward::Correct if !score.valid => CORRECT_BROKEN,
            // The graded score of a valid unsolved episode is PARTIAL_WEIGHT × the overlap or
            // progress, or below 0 when it ran out of rounds.
            GrpoReward::Correct => CORRECT_PARTIAL * (score.score / PARTIAL_WEIGHT).max(0.0),
        }
    }
}

impl GrpoConfig {
    /// Checks the settings (group size, temperatures, loss, training arguments).
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                source_name: "GrpoConfig".into(),
                reason: reason.into(),
            })
        };
        if self.group_size < 2 {
            return invalid("group_size must be at least 2 (advantages are relative to the group)");
        }
        if self.prompts_per_step == 0 || self.train.micro_batch == 0 || self.iterations == 0 {
            return invalid("prompts_per_step, micro_batch and iterations must be at least 1");
        }
        if self.steps == 0 {
            return invalid("steps must be at least 1");
        }
        if self.temperature <= 0.0 {
            return invalid("rollouts must sample: temperature must be above 0");
        }
        if let Some(curriculum) = &self.curriculum {
            curriculum.validate()?;
        }
        self.train.validate("GrpoConfig")
    }

    fn play_options(&self, sampling: Sampling, seed: u64) -> PlayOptions {
        PlayOptions {
            batch: self.rollout_batch.max(1),
            max_new_tokens: self.max_new_tokens,
            db_turns: self.db_turns,
            household_turns: self.household_turns,
            max_context: self.max_context,
            sampling,
            seed,
            mode: Mode::Eval,
        }
    }
}

/// Whether each group of `g` episodes can teach something about being right: it holds a success
/// and its `rewards` are not all equal.
pub fn informative_groups(played: &[PlayedTask], rewards: &[f64], g: usize) -> Vec<bool> {
    played
        .chunks(g)
        .zip(rewards.chunks(g))
        .map(|(group, rewards)| {
            let (lo, hi) = rewards
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
                    (lo.min(r), hi.max(r))
                });
            group.iter().any(|p| p.score.success) && hi - lo > 1e-9
        })
        .collect()
}

/// The groups a step trains on: with `filter`, the first `quota` informative ones (dynamic
/// sampling); else every group.
pub fn selected_groups(informative: &[bool], filter: bool, quota: usize) -> Vec<bool> {
    let mut taken = 0;
    informative
        .iter()
        .map(|&useful| {
            let take = !filter || (useful && taken < quota);
            taken += usize::from(filter && take);
            take
        })
        .collect()
}

/// The episodes a step trains on (indices into `played`, in groups of `g`): those of `selected`
/// groups that were not flat, with a token the policy wrote, and, with `mask_truncated`, that
/// ended on their own rather than at the reply or context limit.
pub fn trained_episodes(
    played: &[PlayedTask],
    groups: &GroupAdvantages,
    selected: &[bool],
    policy_tokens: &[usize],
    g: usize,
    mask_truncated: bool,
) -> Vec<usize> {
    (0..played.len())
        .filter(|&i| selected[i / g] && !groups.skipped[i / g] && policy_tokens[i] > 0)
        .filter(|&i| !mask_truncated || played[i].episode.end == EpisodeEnd::Done)
        .collect()
}

/// The target indices (into the `len − 1` next-token predictions of a sequence) of the tokens
/// the policy wrote: token `k` is predicted at position `k − 1`. Prompt, observation and
/// template tokens never appear.
pub fn policy_targets(episode: &Episode) -> Vec<usize> {
    episode
        .policy_mask
        .iter()
        .enumerate()
        .skip(1)
        .filter(|&(_, &m)| m == 1)
        .map(|(k, _)| k - 1)
        .collect()
}

/// Log-probs of the policy's tokens of some episodes, laid out compactly: `[n, l]` with row
/// `i` holding episode `i`'s policy tokens in order (padded with 0 to the longest), and the
/// `[n, l]` mask of real entries. Differentiable in `mode` [`Mode::Train`].
pub fn episode_logprobs(
    model: &Decoder,
    episodes: &[&Episode],
    pad_id: u32,
    mode: Mode,
    temperature: f32,
) -> Result<(Tensor, Tensor)> {
    let rows: Vec<Vec<u32>> = episodes.iter().map(|e| e.tokens.clone()).collect();
    let batch = TokenBatch::pad(&rows, pad_id, Padding::Right, model.device())?;
    let (n, t) = batch.dims();
    let targets: Vec<Vec<usize>> = episodes.iter().map(|e| policy_targets(e)).collect();
    let width = targets.iter().map(Vec::len).max().unwrap_or(0);
    if width == 0 {
        return Err(Error::Batch(
            "GRPO: none of these episodes holds a token the policy wrote".into(),
        ));
    }
    let positions: Vec<u32> = targets
        .iter()
        .enumerate()
        .flat_map(|(r, ks)| ks.iter().map(move |&k| (r * (t - 1) + k) as u32))
        .collect();
    let flat = model
        .token_logprobs_at(&batch, &positions, mode, temperature)?
        .to_dtype(DType::F32)?;
    // Scatter into [n, width] by gathering from the flat values plus one trailing zero.
    let pad_at = positions.len() as u32;
    let flat = Tensor::cat(&[&flat, &Tensor::zeros(1, DType::F32, model.device())?], 0)?;
    let mut index = Vec::with_capacity(n * width);
    let mut mask = Vec::with_capacity(n * width);
    let mut next = 0u32;
    for ks in &targets {
        for j in 0..width {
            if j < ks.len() {
                index.push(next);
                next += 1;
                mask.push(1f32);
            } else {
                index.push(pad_at);
                mask.push(0.0);
            }
        }
    }
    let index = host::tensor(index, n * width, model.device())?;
    let logprobs = flat.index_select(&index, 0)?.reshape((n, width))?;
    let mask = host::tensor(mask, (n, width), model.device())?;
    Ok((logprobs, mask))
}

/// What one GRPO step did (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoMetrics {
    /// Steps done (1-based).
    pub step: usize,
    /// Mean episode score.
    pub reward_mean: f64,
    /// Standard deviation of the episode scores.
    pub reward_std: f64,
    /// Share of episodes that solved their task.
    pub success: f64,
    /// Success per task type (`db/<kind>`, `household/<kind>`).
    pub success_by_kind: BTreeMap<String, f64>,
    /// The step's loss (summed over its updates' micro-batches, last update).
    pub loss: f64,
    /// Mean k3 KL to the reference over the trained tokens.
    pub kl: f64,
    /// Share of trained tokens whose ratio was clipped.
    pub clip_fraction: f64,
    /// Mean tokens the policy wrote per episode.
    pub response_tokens: f64,
    /// Mean replies per episode.
    pub turns: f64,
    /// Groups whose rewards were all equal (skipped).
    pub skipped_groups: usize,
    /// Groups played.
    pub groups: usize,
    /// Groups with a success and a reward spread.
    #[serde(default)]
    pub informative_groups: usize,
    /// Groups left out by dynamic sampling (`filter_groups`): not informative, or beyond the
    /// step's quota.
    #[serde(default)]
    pub dropped_groups: usize,
    /// Episodes the reply or context limit cut off (no loss with `mask_truncated`).
    #[serde(default)]
    pub truncated: usize,
    /// With a curriculum: prompts passed over this step because their estimated pass rate lay
    /// outside the band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_band: Option<usize>,
    /// With a curriculum: prompts of the pool inside the band after this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_in_band: Option<usize>,
    /// With a curriculum: the pool's estimated pass rates after this step, in ten bins over
    /// [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_rates: Option<Vec<usize>>,
    /// Learning rate of the last update.
    pub lr: f64,
    /// Global gradient norm before clipping (last update; 0 when every group was skipped).
    pub grad_norm: f64,
    /// Seconds spent playing the episodes.
    pub rollout_s: f64,
    /// Policy tokens generated per second of rollout.
    pub rollout_tokens_per_s: f64,
    /// Seconds spent in the updates (reference pass included).
    pub train_s: f64,
    /// Peak resident memory so far, MB.
    pub memory_mb: f64,
    /// The held-out evaluation after this step, when one was due (also in `eval.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<GrpoEval>,
}

impl GrpoMetrics {
    /// A one-line report (two with a held-out evaluation).
    pub fn line(&self, total: usize) -> String {
        let eval = self
            .eval
            .as_ref()
            .map(|e| format!("\n{}", e.line()))
            .unwrap_or_default();
        format!(
            "step {:>3}/{total} reward {:+.3}±{:.3} solved {:.0}% kl {:.4} clip {:.3} loss {:+.4} len {:.0} skipped {}/{} informative {} dropped {} cut off {} grad-norm {:.3} | rollout {:.0}s ({:.0} tok/s) train {:.0}s",
            self.step,
            self.reward_mean,
            self.reward_std,
            100.0 * self.success,
            self.kl,
            self.clip_fraction,
            self.loss,
            self.response_tokens,
            self.skipped_groups,
            self.groups,
            self.informative_groups,
            self.dropped_groups,
            self.truncated,
            self.grad_norm,
            self.rollout_s,
            self.rollout_tokens_per_s,
            self.train_s
        ) + &eval
    }
}

/// Greedy play of the held-out tasks (a line of `eval.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoEval {
    /// Steps done when measured (0: the starting point).
    pub step: usize,
    /// Mean score over all held-out tasks.
    pub reward: f64,
    /// Share solved.
    pub success: f64,
    /// Mean score of the DB tasks.
    pub db_reward: f64,
    /// Mean score of the household games.
    pub household_reward: f64,
    /// Tasks played.
    pub tasks: usize,
}

impl GrpoEval {
    /// Summarises greedy episodes of `tasks`.
    fn of(step: usize, tasks: &[Prompt], played: &[PlayedTask]) -> Self {
        let mean = |household: bool| {
            let scores: Vec<f64> = tasks
                .iter()
                .zip(played)
                .filter(|(t, _)| matches!(t, Prompt::Household(_)) == household)
                .map(|(_, p)| p.score.score)
                .collect();
            scores.iter().sum::<f64>() / scores.len().max(1) as f64
        };
        let n = played.len().max(1) as f64;
        Self {
            step,
            reward: played.iter().map(|p| p.score.score).sum::<f64>() / n,
            success: played.iter().filter(|p| p.score.success).count() as f64 / n,
            db_reward: mean(false),
            household_reward: mean(true),
            tasks: played.len(),
        }
    }

    /// A one-line report.
    pub fn line(&self) -> String {
        format!(
            "eval @ step {}: reward {:+.3} (DB {:+.3}, household {:+.3}) solved {:.1}% of {}",
            self.step,
            self.reward,
            self.db_reward,
            self.household_reward,
            100.0 * self.success,
            self.tasks
        )
    }
}

/// Training reward and held-out reward (when there were held-out evaluations) of a GRPO run.
pub fn grpo_chart(metrics: &[GrpoMetrics], evals: &[GrpoEval]) -> Result<crate::plot::Svg> {
    crate::plot::LineChart::new("GRPO: mean episode reward")
        .x_label("step")
        .integer_x(true)
        .series(
            "train reward",
            metrics.iter().map(|m| (m.step as f64, m.reward_mean)),
        )
        .series(
            "held-out DB",
            evals.iter().map(|e| (e.step as f64, e.db_reward)),
        )
        .series(
            "held-out household",
            evals.iter().map(|e| (e.step as f64, e.household_reward)),
        )
        .render()
}

/// KL, clip fraction and success rate of a GRPO run.
pub fn grpo_health_chart(metrics: &[GrpoMetrics]) -> Result<crate::plot::Svg> {
    crate::plot::LineChart::new("GRPO: KL to the reference, clipped share, success")
        .x_label("step")
        .integer_x(true)
        .series("KL", metrics.iter().map(|m| (m.step as f64, m.kl)))
        .series(
            "clip fraction",
            metrics.iter().map(|m| (m.step as f64, m.clip_fraction)),
        )
        .series(
            "success",
            metrics.iter().map(|m| (m.step as f64, m.success)),
        )
        .render()
}

/// Old configuration files, written before `held_out_eval` existed, evaluated.
fn held_out_default() -> bool {
    true
}

/// The task type a prompt counts under in the per-type success.
fn task_type(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Household(_) => format!("household/{}", prompt.kind()),
        Prompt::Db(_) => format!("db/{}", prompt.kind()),
    }
}

/// The `prompts` whose task type starts with one of `tasks` (all of them when it is empty);
/// an error lists the task types there are when none matches.
fn select_tasks(prompts: Vec<Prompt>, tasks: &[String]) -> Result<Vec<Prompt>> {
    if tasks.is_empty() {
        return Ok(prompts);
    }
    let types: std::collections::BTreeSet<String> = prompts.iter().map(task_type).collect();
    let kept: Vec<Prompt> = prompts
        .into_iter()
        .filter(|p| {
            let kind = task_type(p);
            tasks.iter().any(|t| kind.starts_with(t.as_str()))
        })
        .collect();
    if kept.is_empty() {
        return Err(Error::InvalidConfig {
            source_name: "GrpoConfig".into(),
            reason: format!(
                "no training prompt matches tasks {tasks:?}; the prompts' task types are {}",
                types.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(kept)
}

/// GRPO as a [`Method`]: the training prompts and their order, the held-out tasks, and the
/// tokenizer the episodes are played with.
pub struct Grpo {
    config: GrpoConfig,
    tokenizer: Tokenizer,
    prompts: Vec<Prompt>,
    eval: Vec<Prompt>,
    order: Vec<usize>,
    /// Each prompt's position in `prompts`, by its JSON (rollouts name their prompt by value).
    index: HashMap<String, usize>,
    /// Pass-rate estimates of `prompts` (kept with a curriculum).
    rates: PassRates,
    /// Prompts passed over by the curriculum since the last step's metrics.
    out_of_band: usize,
}

/// Trains LoRA adapters with multi-turn GRPO.
pub type GrpoTrainer = Trainer<Grpo>;

/// Prompt indices of one pass in a seeded order.
fn prompt_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0x6790 ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .shuffle(&mut order);
    order
}

/// What the optimizer updates of a step measured (the last update's).
#[derive(Debug, Default)]
struct Update {
    loss: f64,
    kl: f64,
    clip_fraction: f64,
    grad_norm: f64,
    lr: f64,
}

impl Grpo {
    fn eval_path(core: &Core) -> PathBuf {
        core.dir().join("eval.jsonl")
    }

    /// The next `prompts_per_step` prompts of the seeded order (a new order each pass); with a
    /// curriculum, prompts whose estimated pass rate lies outside the band are passed over
    /// (counted), unless a whole pass finds none inside it.
    fn next_prompts(&mut self, state: &mut TrainState) -> Vec<Prompt> {
        let mut picked = Vec::with_capacity(self.config.prompts_per_step);
        let mut passed_over = 0;
        while picked.len() < self.config.prompts_per_step {
            if state.cursor >= self.order.len() {
                state.epoch += 1;
                state.cursor = 0;
                self.order = prompt_order(self.prompts.len(), self.config.train.seed, state.epoch);
            }
            let i = self.order[state.cursor];
            state.cursor += 1;
            if let Some(curriculum) = &self.config.curriculum
                && !self.rates.in_band(i, curriculum)
                && passed_over < self.prompts.len()
            {
                passed_over += 1;
                continue;
            }
            picked.push(self.prompts[i].clone());
        }
        self.out_of_band += passed_over;
        picked
    }

    /// Counts each rollout towards its prompt's pass rate (with a curriculum).
    fn record_pass_rates(&mut self, prompts: &[Prompt], played: &[PlayedTask]) -> Result<()> {
        if self.config.curriculum.is_none() {
            return Ok(());
        }
        let g = self.config.group_size;
        for (prompt, group) in prompts.iter().zip(played.chunks(g)) {
            let key = serde_json::to_string(prompt)
                .map_err(|e| Error::Batch(format!("GRPO: a prompt as JSON: {e}")))?;
            // A prompt from outside the pool (rollouts played by the caller) has no estimate.
            if let Some(&i) = self.index.get(&key) {
                for p in group {
                    self.rates.record(i, p.score.success)?;
                }
            }
        }
        Ok(())
    }

    /// Plays the held-out tasks greedily with the adapters on and records the result in
    /// `eval.jsonl` under the current step.
    fn evaluate(&self, core: &Core) -> Result<GrpoEval> {
        let step = core.state().step;
        let options = self.config.play_options(Sampling::greedy(), 0);
        let played = play_tasks(
            core.model(),
            &self.tokenizer,
            &self.eval,
            &options,
            &format!("05 GRPO · held-out eval @ {step}"),
        )?;
        let eval = GrpoEval::of(step, &self.eval, &played);
        append_metrics(&Self::eval_path(core), eval.step == 0, &eval)?;
        Ok(eval)
    }

    /// Plays one group of episodes per prompt: the step's rollouts (its `batch`-th batch of
    /// them; more than one with dynamic sampling), in prompt order.
    fn rollouts(&self, core: &Core, prompts: &[Prompt], batch: usize) -> Result<Vec<PlayedTask>> {
        let tasks: Vec<Prompt> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.clone(), self.config.group_size))
            .collect();
        let sampling = Sampling {
            temperature: self.config.temperature,
            top_p: self.config.top_p,
            ..Sampling::greedy()
        };
        let step = core.state().step;
        let seed = self
            .config
            .train
            .seed
            .wrapping_add((step as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d))
            .wrapping_add((batch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        play_tasks(
            core.model(),
            &self.tokenizer,
            &tasks,
            &self.config.play_options(sampling, seed),
            &if batch == 0 {
                format!("05 GRPO · rollouts {}", step + 1)
            } else {
                format!("05 GRPO · rollouts {} (more, {batch})", step + 1)
            },
        )
    }

    /// The rest of a step, on the `played` rollouts of `prompts`: advantages, `iterations`
    /// optimizer updates, and the step's metrics.
    fn learn(
        &mut self,
        core: &mut Core,
        prompts: &[Prompt],
        played: &[PlayedTask],
        rollout_s: f64,
    ) -> Result<GrpoMetrics> {
        let g = self.config.group_size;
        if played.len() != prompts.len() * g {
            return Err(Error::Batch(format!(
                "GRPO: {} rollouts of {} prompts, expected {} per prompt",
                played.len(),
                prompts.len(),
                g
            )));
        }
        let rewards: Vec<f64> = played
            .iter()
            .map(|p| self.config.reward.of(&p.score))
            .collect();
        let groups = group_advantages(&rewards, g, self.config.advantage)?;

        // Episode statistics.
        let n = played.len() as f64;
        let reward_mean = rewards.iter().sum::<f64>() / n;
        let reward_std = (rewards
            .iter()
            .map(|r| (r - reward_mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let policy_tokens: Vec<usize> = played
            .iter()
            .map(|p| p.episode.policy_mask.iter().filter(|&&m| m == 1).count())
            .collect();
        let generated: usize = policy_tokens.iter().sum();
        let mut by_kind: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (i, p) in played.iter().enumerate() {
            let entry = by_kind.entry(task_type(&prompts[i / g])).or_default();
            entry.0 += usize::from(p.score.success);
            entry.1 += 1;
        }

        let train_start = Instant::now();
        let informative = informative_groups(played, &rewards, g);
        let selected = selected_groups(
            &informative,
            self.config.filter_groups,
            self.config.prompts_per_step,
        );
        let kept = trained_episodes(
            played,
            &groups,
            &selected,
            &policy_tokens,
            g,
            self.config.mask_truncated,
        );
        let truncated = played
            .iter()
            .filter(|p| p.episode.end != EpisodeEnd::Done)
            .count();
        let update = if kept.is_empty() {
            Update::default()
        } else {
            self.update(core, played, &kept, &groups, &policy_tokens)?
        };
        self.record_pass_rates(prompts, played)?;
        let out_of_band = std::mem::take(&mut self.out_of_band);
        let curriculum = self.config.curriculum.as_ref();
        Ok(GrpoMetrics {
            step: core.state().step + 1,
            reward_mean,
            reward_std,
            success: played.iter().filter(|p| p.score.success).count() as f64 / n,
            success_by_kind: by_kind
                .into_iter()
                .map(|(k, (s, t))| (k, s as f64 / t as f64))
                .collect(),
            loss: update.loss,
            kl: update.kl,
            clip_fraction: update.clip_fraction,
            response_tokens: generated as f64 / n,
            turns: played.iter().map(|p| p.episode.turns()).sum::<usize>() as f64 / n,
            skipped_groups: groups.skipped.iter().filter(|&&s| s).count(),
            groups: groups.skipped.len(),
            informative_groups: informative.iter().filter(|&&i| i).count(),
            dropped_groups: selected.iter().filter(|&&s| !s).count(),
            truncated,
            out_of_band: curriculum.map(|_| out_of_band),
            pool_in_band: curriculum.map(|c| self.rates.count_in_band(c)),
            pass_rates: curriculum.map(|c| self.rates.histogram(c.prior, 10)),
            lr: update.lr,
            grad_norm: update.grad_norm,
            rollout_s,
            rollout_tokens_per_s: generated as f64 / rollout_s.max(1e-9),
            train_s: train_start.elapsed().as_secs_f64(),
            memory_mb: peak_memory_mb(),
            eval: None,
        })
    }

    /// `iterations` optimizer updates on the `kept` episodes: the reference's log-probs first
    /// (with a KL penalty), then per update a forward/backward pass over every micro-batch.
    fn update(
        &self,
        core: &mut Core,
        played: &[PlayedTask],
        kept: &[usize],
        groups: &GroupAdvantages,
        policy_tokens: &[usize],
    ) -> Result<Update> {
        let config = &self.config;
        let norm = StepNorm {
            sequences: kept.len(),
            tokens: kept.iter().map(|&i| policy_tokens[i]).sum(),
        };
        let chunks: Vec<Vec<usize>> = kept
            .chunks(config.train.micro_batch)
            .map(<[usize]>::to_vec)
            .collect();
        let episodes = |chunk: &[usize]| -> Vec<&Episode> {
            chunk.iter().map(|&i| &played[i].episode).collect()
        };
        // Episode passes: the reference's (with a KL penalty) and one per iteration.
        let passes = config.iterations + usize::from(config.loss.beta > 0.0);
        let mut progress = crate::progress::Progress::new(
            format!("05 GRPO · update {}", core.state().step + 1),
            Some((passes * kept.len()) as u64),
        )
        .with_unit("episodes");
        let reference: Vec<Option<Tensor>> = chunks
            .iter()
            .map(|c| {
                if config.loss.beta <= 0.0 {
                    return Ok(None);
                }
                let (lp, _) = episode_logprobs(
                    core.model(),
                    &episodes(c),
                    core.pad_id(),
                    Mode::Reference,
                    config.temperature,
                )?;
                progress.inc(c.len() as u64);
                Ok(Some(lp.detach()))
            })
            .collect::<Result<_>>()?;
        let mut old: Vec<Option<Tensor>> = vec![None; chunks.len()];
        let mut update = Update::default();
        for iteration in 0..config.iterations {
            let mut grads = core.grads();
            let (mut loss, mut kl_sum, mut clip_sum, mut tokens) = (0.0, 0.0, 0.0, 0);
            for (c, chunk) in chunks.iter().enumerate() {
                let (lp, mask) = episode_logprobs(
                    core.model(),
                    &episodes(chunk),
                    core.pad_id(),
                    Mode::Train,
                    config.temperature,
                )?;
                // The rollouts came from these weights: the sampling policy's log-probs are
                // this first pass's, without gradient.
                let old_lp = match &old[c] {
                    Some(o) => o.clone(),
                    None => {
                        let o = lp.detach();
                        if config.iterations > 1 {
                            old[c] = Some(o.clone());
                        }
                        o
                    }
                };
                let advantages: Vec<f32> =
                    chunk.iter().map(|&i| groups.advantages[i] as f32).collect();
                let advantages = host::tensor(advantages, chunk.len(), core.device())?;
                let out = grpo_loss(
                    &lp,
                    &old_lp,
                    reference[c].as_ref(),
                    &advantages,
                    &mask,
                    &config.loss,
                    Some(norm),
                )?;
                loss += out.loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                kl_sum += out.kl * out.tokens as f64;
                clip_sum += out.clip_fraction * out.tokens as f64;
                tokens += out.tokens;
                core.backward(&out.loss, &mut grads)?;
                progress.inc(chunk.len() as u64);
            }
            let (grad_norm, lr) = core.update(&mut grads, iteration)?;
            update = Update {
                loss,
                kl: kl_sum / tokens.max(1) as f64,
                clip_fraction: clip_sum / tokens.max(1) as f64,
                grad_norm,
                lr,
            };
        }
        progress.finish();
        Ok(update)
    }
}

impl Method for Grpo {
    type Config = GrpoConfig;
    type Metrics = GrpoMetrics;

    fn config(&self) -> &GrpoConfig {
        &self.config
    }

    fn seek(&mut self, state: &TrainState) -> Result<()> {
        self.order = prompt_order(self.prompts.len(), self.config.train.seed, state.epoch);
        Ok(())
    }

    /// Rollouts of the next prompts, then learning from them.
    fn step(&mut self, core: &mut Core) -> Result<GrpoMetrics> {
        let start = Instant::now();
        let mut prompts = self.next_prompts(core.state_mut());
        let mut played = self.rollouts(core, &prompts, 0)?;
        if self.config.filter_groups {
            // Dynamic sampling: more prompts until the step has its quota of informative groups.
            let g = self.config.group_size;
            for batch in 1..=self.config.max_resamples {
                let rewards: Vec<f64> = played
                    .iter()
                    .map(|p| self.config.reward.of(&p.score))
                    .collect();
                let informative = informative_groups(&played, &rewards, g);
                if informative.iter().filter(|&&i| i).count() >= self.config.prompts_per_step {
                    break;
                }
                let more = self.next_prompts(core.state_mut());
                played.extend(self.rollouts(core, &more, batch)?);
                prompts.extend(more);
            }
        }
        self.learn(core, &prompts, &played, start.elapsed().as_secs_f64())
    }

    fn has_eval(&self) -> bool {
        self.config.held_out_eval && !self.eval.is_empty()
    }

    fn evaluate_into(&mut self, core: &Core, metrics: &mut GrpoMetrics) -> Result<()> {
        metrics.eval = Some(self.evaluate(core)?);
        Ok(())
    }

    /// The held-out tasks at the starting point, unless a run that was cut off before its
    /// first checkpoint already played them.
    fn start(&mut self, core: &Core) -> Result<()> {
        if self.has_eval() && read_metrics::<GrpoEval>(&Self::eval_path(core))?.is_empty() {
            self.evaluate(core)?;
        }
        Ok(())
    }

    fn logs(&self) -> &'static [&'static str] {
        &["eval.jsonl"]
    }

    /// The pass-rate estimates, with a curriculum.
    fn saved_state(&self) -> Result<Option<serde_json::Value>> {
        if self.config.curriculum.is_none() {
            return Ok(None);
        }
        serde_json::to_value(&self.rates)
            .map(Some)
            .map_err(|e| Error::Batch(format!("GRPO: pass rates as JSON: {e}")))
    }

    fn restore_state(&mut self, saved: Option<serde_json::Value>) -> Result<()> {
        match saved {
            Some(saved) if self.config.curriculum.is_some() => {
                let saved: PassRates = serde_json::from_value(saved)
                    .map_err(|e| Error::Batch(format!("GRPO: saved pass rates: {e}")))?;
                self.rates.restore(saved)
            }
            _ => Ok(()),
        }
    }
}

impl Trainer<Grpo> {
    /// A run in `dir` on `model` (the SFT model, adapter merged; with its adapters off it is
    /// the reference) over training `prompts`, evaluated greedily on held-out `eval` tasks,
    /// played with `tokenizer`. Call [`Trainer::resume`] to continue from the last checkpoint.
    pub fn new(
        model: Decoder,
        prompts: Vec<Prompt>,
        eval: Vec<Prompt>,
        config: GrpoConfig,
        tokenizer: &Tokenizer,
        dir: &Path,
    ) -> Result<Self> {
        config.validate()?;
        if prompts.is_empty() {
            return Err(Error::Batch(
                "no prompts to train on (run notebook 02_prompts or `abt prompts`)".into(),
            ));
        }
        let prompts = select_tasks(prompts, &config.tasks)?;
        if model.lora_config().is_some() {
            return Err(Error::Adapter(
                "GRPO adds its own adapters: merge the SFT adapter first (Decoder::merge_adapter)"
                    .into(),
            ));
        }
        let core = Core::new(
            model,
            &config.train,
            config.steps,
            config.iterations,
            tokenizer.pad_token_id(),
            dir,
        )?;
        let order = prompt_order(prompts.len(), config.train.seed, 0);
        let index = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                serde_json::to_string(p)
                    .map(|key| (key, i))
                    .map_err(|e| Error::Batch(format!("GRPO: a prompt as JSON: {e}")))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        let method = Grpo {
            config,
            tokenizer: tokenizer.clone(),
            rates: PassRates::new(prompts.len()),
            prompts,
            eval,
            order,
            index,
            out_of_band: 0,
        };
        Ok(Self::from_parts(core, method))
    }

    /// The pass-rate estimates of the training prompts (counted with a curriculum).
    pub fn pass_rates(&self) -> &PassRates {
        &self.method().rates
    }

    /// The held-out tasks.
    pub fn eval_tasks(&self) -> &[Prompt] {
        &self.method().eval
    }

    /// `eval.jsonl` of the run.
    pub fn eval_path(&self) -> PathBuf {
        self.dir().join("eval.jsonl")
    }

    /// Reads the held-out evaluations written so far.
    pub fn read_evals(&self) -> Result<Vec<GrpoEval>> {
        read_metrics(&self.eval_path())
    }

    /// Plays the held-out tasks greedily with the adapters on and records the result in
    /// `eval.jsonl` under the current step.
    pub fn evaluate(&self) -> Result<GrpoEval> {
        let (core, grpo) = self.parts();
        grpo.evaluate(core)
    }

    /// Plays one group of episodes per prompt: a step's rollouts, in prompt order.
    pub fn rollouts(&self, prompts: &[Prompt]) -> Result<Vec<PlayedTask>> {
        let (core, grpo) = self.parts();
        grpo.rollouts(core, prompts, 0)
    }

    /// A step on rollouts played outside ([`Trainer::rollouts`], which took `rollout_s`):
    /// advantages, `iterations` optimizer updates, then the step's bookkeeping as
    /// [`Trainer::step`] does it.
    pub fn learn(
        &mut self,
        prompts: &[Prompt],
        played: &[PlayedTask],
        rollout_s: f64,
    ) -> Result<GrpoMetrics> {
        let (core, grpo) = self.parts_mut();
        let metrics = grpo.learn(core, prompts, played, rollout_s)?;
        self.finish_step(metrics)
    }
}

/// Builds a trainer over `model` (the SFT model, adapter merged) in `dir`, resuming from its
/// last checkpoint when there is one (`fresh`: delete checkpoints and logs, and start over).
pub fn grpo_trainer(
    model: Decoder,
    prompts: Vec<Prompt>,
    eval: Vec<Prompt>,
    tokenizer: &Tokenizer,
    config: GrpoConfig,
    dir: &Path,
    fresh: bool,
) -> Result<GrpoTrainer> {
    GrpoTrainer::new(model, prompts, eval, config, tokenizer, dir)?.open(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Profile, Scale};
    use crate::generate::EpisodeEnd;
    use crate::presets::Presets;
    use crate::train::LossAggregation;

    #[test]
    fn policy_targets_are_the_predictions_of_the_policys_tokens() {
        let episode = Episode {
            conversation: crate::chat::Conversation::default(),
            tokens: vec![10, 11, 12, 13, 14, 15, 16],
            policy_mask: vec![0, 0, 1, 1, 0, 1, 0],
            logprobs: vec![0.0; 7],
            prompt_len: 2,
            prompt_messages: 1,
            rewards: vec![0.0, 1.0],
            end: EpisodeEnd::Done,
        };
        // Token 2 is predicted from position 1, token 3 from 2, token 5 from 4.
        assert_eq!(policy_targets(&episode), vec![1, 2, 4]);
    }

    #[test]
    fn truncated_episodes_get_no_loss_when_masked() {
        let played = |end: EpisodeEnd, policy: u8| PlayedTask {
            episode: Episode {
                conversation: crate::chat::Conversation::default(),
                tokens: vec![1, 2, 3],
                policy_mask: vec![0, policy, policy],
                logprobs: vec![0.0; 3],
                prompt_len: 1,
                prompt_messages: 1,
                rewards: vec![0.0],
                end,
            },
            score: crate::env::TaskScore {
                success: end == EpisodeEnd::Done,
                score: 0.0,
                valid: true,
            },
        };
        // Group 0: done, cut by the reply limit, cut by the context, done without a policy
        // token; group 1 is flat.
        let episodes = vec![
            played(EpisodeEnd::Done, 1),
            played(EpisodeEnd::MaxTurns, 1),
            played(EpisodeEnd::ContextFull, 1),
            played(EpisodeEnd::Done, 0),
            played(EpisodeEnd::Done, 1),
            played(EpisodeEnd::MaxTurns, 1),
        ];
        let tokens: Vec<usize> = episodes
            .iter()
            .map(|p| p.episode.policy_mask.iter().filter(|&&m| m == 1).count())
            .collect();
        let groups = GroupAdvantages {
            advantages: vec![1.0, -1.0, -1.0, 1.0, 0.0, 0.0],
            skipped: vec![false, true],
        };
        let all = [true, true];
        assert_eq!(
            trained_episodes(&episodes, &groups, &all, &tokens, 4, false),
            [0, 1, 2]
        );
        assert_eq!(
            trained_episodes(&episodes, &groups, &all, &tokens, 4, true),
            [0]
        );
        // A group dynamic sampling dropped trains nothing.
        assert!(trained_episodes(&episodes, &groups, &[false, true], &tokens, 4, false).is_empty());
    }

    #[test]
    fn dynamic_sampling_keeps_exactly_the_informative_groups_up_to_the_quota() {
        let played = |success: bool| PlayedTask {
            episode: Episode {
                conversation: crate::chat::Conversation::default(),
                tokens: vec![1, 2],
                policy_mask: vec![0, 1],
                logprobs: vec![0.0; 2],
                prompt_len: 1,
                prompt_messages: 1,
                rewards: vec![0.0],
                end: EpisodeEnd::Done,
            },
            score: crate::env::TaskScore {
                success,
                score: if success { 1.0 } else { 0.0 },
                valid: true,
            },
        };
        // Groups of two: a success and a failure (informative); two failures with a reward
        // spread but no success; two successes (flat); a failure and a success; a success and
        // a failure with equal rewards.
        let outcomes = [
            (true, 1.0),
            (false, 0.0),
            (false, 0.2),
            (false, -0.5),
            (true, 1.0),
            (true, 1.0),
            (false, 0.1),
            (true, 1.0),
            (true, 0.5),
            (false, 0.5),
        ];
        let episodes: Vec<PlayedTask> = outcomes.iter().map(|&(s, _)| played(s)).collect();
        let rewards: Vec<f64> = outcomes.iter().map(|&(_, r)| r).collect();
        let informative = informative_groups(&episodes, &rewards, 2);
        assert_eq!(informative, [true, false, false, true, false]);
        // Without filtering every group is selected; with it, the informative ones in order,
        // no more than the quota.
        assert_eq!(selected_groups(&informative, false, 1), [true; 5]);
        assert_eq!(
            selected_groups(&informative, true, 5),
            [true, false, false, true, false]
        );
        assert_eq!(
            selected_groups(&informative, true, 1),
            [true, false, false, false, false]
        );
    }

    #[test]
    fn smoke_and_tiny_settings_are_valid() {
        for profile in [Profile::Tiny, Profile::ColabQwen25_7b] {
            let config = Presets::resolve(profile, Scale::Full).unwrap().grpo;
            config.validate().unwrap();
            assert_eq!(config.group_size, 4);
            assert!((config.temperature - 0.8).abs() < 1e-6);
            assert_eq!(config.loss.aggregation, LossAggregation::Grpo);
        }
        let mut bad = Presets::resolve(Profile::Tiny, Scale::Full).unwrap().grpo;
        bad.group_size = 1;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_success_reward_is_one_for_a_solved_task_and_zero_for_any_other() {
        let score = |success, score| crate::env::TaskScore {
            success,
            score,
            valid: true,
        };
        let solved = score(true, 1.0);
        let partial = score(false, 0.25);
        let unfinished = score(false, -0.25);
        assert_eq!(GrpoReward::Graded.of(&partial), 0.25);
        assert_eq!(GrpoReward::Graded.of(&unfinished), -0.25);
        assert_eq!(GrpoReward::Success.of(&solved), 1.0);
        assert_eq!(GrpoReward::Success.of(&partial), 0.0);
        assert_eq!(GrpoReward::Success.of(&unfinished), 0.0);
        // Correctness-aligned: a success 1, partial credit a tenth of the overlap or progress,
        // out of rounds 0, a broken reply −0.1 (graded by the scale's own functions).
        use crate::reward::{DbVerdict, grade_db, grade_household};
        let correct = |s: crate::env::TaskScore| GrpoReward::Correct.of(&s);
        assert_eq!(correct(grade_db(DbVerdict::Solved)), 1.0);
        assert!((correct(grade_db(DbVerdict::Answered { overlap: 0.5 })) - 0.05).abs() < 1e-12);
        assert_eq!(correct(grade_db(DbVerdict::Answered { overlap: 0.0 })), 0.0);
        assert_eq!(correct(grade_db(DbVerdict::Failed)), 0.0);
        assert_eq!(correct(grade_db(DbVerdict::Invalid)), -0.1);
        assert!((correct(grade_household(false, 0.5, false)) - 0.05).abs() < 1e-12);
        assert_eq!(correct(grade_household(false, 0.5, true)), -0.1);
        assert_eq!(correct(grade_household(true, 1.0, false)), 1.0);
        // A group that differs only in partial credit is flat under the success reward.
        let rewards: Vec<f64> = [partial, unfinished, partial, unfinished]
            .iter()
            .map(|s| GrpoReward::Success.of(s))
            .collect();
        let groups = group_advantages(&rewards, 4, AdvantageScale::Std).unwrap();
        assert_eq!(groups.skipped, vec![true]);
        // Old configuration files, without the new fields, still read.
        let mut json =
            serde_json::to_value(Presets::resolve(Profile::Tiny, Scale::Full).unwrap().grpo)
                .unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("reward");
        object.remove("tasks");
        object.remove("mask_truncated");
        object.remove("filter_groups");
        object.remove("max_resamples");
        let config: GrpoConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config.reward, GrpoReward::Graded);
        assert!(config.tasks.is_empty() && !config.mask_truncated && !config.filter_groups);
        assert_eq!(config.max_resamples, 3);
    }

    #[test]
    fn tasks_select_training_prompts_by_type_prefix() {
        let prompts =
            crate::prompts::held_out_prompts(2, 2, crate::env::Protocol::Text, false).unwrap();
        assert_eq!(select_tasks(prompts.clone(), &[]).unwrap().len(), 4);
        let db = select_tasks(prompts.clone(), &["db".into()]).unwrap();
        assert_eq!(db.len(), 2);
        assert!(db.iter().all(|p| matches!(p, Prompt::Db(_))));
        let kind = task_type(&prompts[0]);
        let one = select_tasks(prompts.clone(), std::slice::from_ref(&kind)).unwrap();
        assert!(one.iter().all(|p| task_type(p) == kind));
        let err = select_tasks(prompts, &["webshop".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("webshop") && err.contains(&kind), "{err}");
    }
}
