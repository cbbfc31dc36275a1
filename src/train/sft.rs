//! The LoRA SFT trainer: assistant-only loss, packing, gradient accumulation, AdamW with a
//! warmup + cosine schedule, gradient-norm clipping, eval loss at intervals, metrics, and
//! atomic checkpoints that resume exactly.

use std::path::Path;
use std::time::Instant;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::args::TrainArgs;
use super::data::{MicroBatch, SftExample, epoch_batches};
use super::run::{TrainState, peak_memory_mb};
use super::trainer::{Core, Method, Trainer};
use crate::error::{Error, Result};
use crate::model::{Decoder, Mode};
use crate::rng::Rng;

/// Everything an SFT run is configured by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// Adapters, optimizer, schedule, evaluation and checkpoints (`micro_batch`: rows per
    /// forward/backward pass; the eval loss every `eval_every` steps).
    #[serde(flatten)]
    pub train: TrainArgs,
    /// Micro-batches per optimizer step (effective batch = `micro_batch × grad_accum` rows).
    pub grad_accum: usize,
    /// Longest sequence (and packed row) in tokens.
    pub max_len: usize,
    /// Pack several examples into each row.
    pub packing: bool,
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps (the schedule spans them).
    pub max_steps: Option<usize>,
    /// Share of examples held out for the eval loss.
    pub eval_share: f64,
}

super::args::trainer_config!(SftConfig, sft);

/// What one optimizer step did (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer steps done (1-based).
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Mean loss per trained token over the effective batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens (padding excluded) per second of this step.
    pub tokens_per_s: f64,
    /// Trained tokens in the step.
    pub trained_tokens: usize,
    /// Resident memory of the process, MB (peak so far).
    pub memory_mb: f64,
    /// Eval loss, on steps where it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

impl StepMetrics {
    /// A one-line report: `step 3/40 loss 1.2345 eval 1.1000 lr 2.00e-4 …`.
    pub fn line(&self, total: usize) -> String {
        let eval = self
            .eval_loss
            .map(|e| format!(" eval {e:.4}"))
            .unwrap_or_default();
        format!(
            "step {:>4}/{total} loss {:.4}{eval} lr {:.2e} grad-norm {:.3} {:.0} tok/s {:.0} MB",
            self.step, self.loss, self.lr, self.grad_norm, self.tokens_per_s, self.memory_mb
        )
    }
}

/// The loss curves of a run: training loss per step and the eval loss where it was computed.
pub fn loss_chart(metrics: &[StepMetrics]) -> Result<crate::plot::Svg> {
    crate::plot::LineChart::new("SFT loss (per trained token)")
        .x_label("step")
        .integer_x(true)
        .y_label("loss")
        .series("train", metrics.iter().map(|m| (m.step as f64, m.loss)))
        .series(
            "eval",
            metrics
                .iter()
                .filter_map(|m| m.eval_loss.map(|e| (m.step as f64, e))),
        )
        .render()
}

/// The learning rate and the gradient norm (before clipping) per step.
pub fn schedule_chart(metrics: &[StepMetrics]) -> Result<crate::plot::Svg> {
    crate::plot::LineChart::new("learning rate (x 1000) and gradient norm")
        .x_label("step")
        .integer_x(true)
        .series(
            "lr x 1000",
            metrics.iter().map(|m| (m.step as f64, 1e3 * m.lr)),
        )
        .series(
            "grad norm",
            metrics.iter().map(|m| (m.step as f64, m.grad_norm)),
        )
        .render()
}

/// Splits examples into train and eval sets (a seeded share held out).
pub fn split_examples(
    mut examples: Vec<SftExample>,
    eval_share: f64,
    seed: u64,
) -> (Vec<SftExample>, Vec<SftExample>) {
    Rng::new(seed ^ 0xe7a1).shuffle(&mut examples);
    let n_eval = ((examples.len() as f64 * eval_share).round() as usize).min(examples.len() / 2);
    let train = examples.split_off(n_eval);
    (train, examples)
}

/// SFT as a [`Method`]: its examples, their micro-batches, and the loss per trained token.
pub struct Sft {
    config: SftConfig,
    train: Vec<SftExample>,
    eval: Vec<SftExample>,
    batches: Vec<MicroBatch>,
}

/// Trains LoRA adapters on a decoder with the assistant-only SFT loss.
pub type SftTrainer = Trainer<Sft>;

impl Sft {
    fn epoch_batches(&self, epoch: usize) -> Result<Vec<MicroBatch>> {
        let c = &self.config;
        epoch_batches(
            &self.train,
            c.train.seed,
            epoch,
            c.train.micro_batch,
            c.max_len,
            c.packing,
        )
    }

    /// The next micro-batches of one optimizer step (crossing into the next epoch if needed).
    fn next_micro_batches(&mut self, state: &mut TrainState) -> Result<Vec<MicroBatch>> {
        let mut out = Vec::with_capacity(self.config.grad_accum);
        while out.len() < self.config.grad_accum {
            if state.cursor >= self.batches.len() {
                state.epoch += 1;
                state.cursor = 0;
                self.batches = self.epoch_batches(state.epoch)?;
            }
            out.push(self.batches[state.cursor].clone());
            state.cursor += 1;
        }
        Ok(out)
    }

    /// Mean loss per trained token of `examples` in `mode` (no dropout, no gradients).
    fn loss_on(&self, core: &Core, examples: &[SftExample], mode: Mode) -> Result<f64> {
        if examples.is_empty() {
            return Ok(f64::NAN);
        }
        let batches = epoch_batches(
            examples,
            0,
            0,
            self.config.train.micro_batch,
            self.config.max_len,
            self.config.packing,
        )?;
        let (mut nll, mut tokens) = (0.0, 0usize);
        for b in &batches {
            let (batch, positions) = b.tensors(examples, core.pad_id(), core.device())?;
            if positions.is_empty() {
                continue;
            }
            let lp = core
                .model()
                .token_logprobs_at(&batch, &positions, mode, 1.0)?;
            nll -= lp.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            tokens += b.trained(examples);
        }
        Ok(nll / tokens.max(1) as f64)
    }
}

impl Method for Sft {
    type Config = SftConfig;
    type Metrics = StepMetrics;

    fn config(&self) -> &SftConfig {
        &self.config
    }

    fn seek(&mut self, state: &TrainState) -> Result<()> {
        self.batches = self.epoch_batches(state.epoch)?;
        Ok(())
    }

    /// Forward/backward over `grad_accum` micro-batches (loss = summed NLL of trained tokens /
    /// trained tokens of the whole step), then one update.
    fn step(&mut self, core: &mut Core) -> Result<StepMetrics> {
        let start = Instant::now();
        let micro = self.next_micro_batches(core.state_mut())?;
        let trained: usize = micro.iter().map(|m| m.trained(&self.train)).sum();
        let denom = trained.max(1) as f64;
        let mut grads = core.grads();
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        for m in &micro {
            let (batch, positions) = m.tensors(&self.train, core.pad_id(), core.device())?;
            tokens += batch.num_tokens();
            if positions.is_empty() {
                continue;
            }
            let lp = core
                .model()
                .token_logprobs_at(&batch, &positions, Mode::Train, 1.0)?;
            let nll = lp.sum_all()?.neg()?;
            let loss = (&nll / denom)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            core.backward(&loss, &mut grads)?;
        }
        let (grad_norm, lr) = core.update(&mut grads, 0)?;
        Ok(StepMetrics {
            step: core.state().step + 1,
            epoch: core.state().epoch,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            trained_tokens: trained,
            memory_mb: peak_memory_mb(),
            eval_loss: None,
        })
    }

    fn has_eval(&self) -> bool {
        !self.eval.is_empty()
    }

    fn evaluate_into(&mut self, core: &Core, metrics: &mut StepMetrics) -> Result<()> {
        metrics.eval_loss = Some(self.loss_on(core, &self.eval, Mode::Eval)?);
        Ok(())
    }
}

impl Trainer<Sft> {
    /// A fresh run in `dir` (metrics, checkpoints, adapter): adds the adapters to `model`.
    /// Call [`Trainer::resume`] to continue from the last checkpoint in `dir` instead.
    pub fn new(
        model: Decoder,
        train: Vec<SftExample>,
        eval: Vec<SftExample>,
        config: SftConfig,
        pad_id: u32,
        dir: &Path,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::Batch("no training examples".into()));
        }
        if config.train.micro_batch == 0 || config.grad_accum == 0 {
            return Err(Error::Batch(
                "micro_batch and grad_accum must be at least 1".into(),
            ));
        }
        config.train.validate("SftConfig")?;
        let mut method = Sft {
            config,
            train,
            eval,
            batches: Vec::new(),
        };
        method.batches = method.epoch_batches(0)?;
        let c = &method.config;
        let per_epoch = method.batches.len().div_ceil(c.grad_accum);
        let total = c.max_steps.unwrap_or(per_epoch * c.epochs.max(1)).max(1);
        let core = Core::new(model, &c.train, total, 1, pad_id, dir)?;
        Ok(Self::from_parts(core, method))
    }

    /// The training examples.
    pub fn train_examples(&self) -> &[SftExample] {
        &self.method().train
    }

    /// The held-out examples of the eval loss.
    pub fn eval_examples(&self) -> &[SftExample] {
        &self.method().eval
    }

    /// The current epoch's micro-batches, in order.
    pub fn batches(&self) -> &[MicroBatch] {
        &self.method().batches
    }

    /// Mean loss per trained token of `examples` in `mode` (no dropout, no gradients):
    /// [`Mode::Eval`] with the adapters, [`Mode::Reference`] without.
    pub fn loss_on(&self, examples: &[SftExample], mode: Mode) -> Result<f64> {
        let (core, sft) = self.parts();
        sft.loss_on(core, examples, mode)
    }

    /// The eval loss on the held-out examples.
    pub fn eval_loss(&self) -> Result<f64> {
        self.loss_on(self.eval_examples(), Mode::Eval)
    }

    /// The eval loss of the base model (adapters off): the point training starts from.
    pub fn base_eval_loss(&self) -> Result<f64> {
        self.loss_on(self.eval_examples(), Mode::Reference)
    }
}

/// Encodes the records, holds out the eval share, and builds a trainer over `model` in
/// `dir`, resuming from its last checkpoint when there is one (`fresh`: delete checkpoints and
/// start over). Returns the trainer and how many records were skipped (no trained token left
/// after truncation).
pub fn sft_trainer(
    model: Decoder,
    records: &[crate::data::SftRecord],
    tokenizer: &crate::chat::Tokenizer,
    config: SftConfig,
    dir: &Path,
    fresh: bool,
) -> Result<(SftTrainer, usize)> {
    let (examples, skipped) = super::data::encode_records(records, tokenizer, config.max_len)?;
    let (train, eval) = split_examples(examples, config.eval_share, config.train.seed);
    let trainer = SftTrainer::new(model, train, eval, config, tokenizer.pad_token_id(), dir)?;
    Ok((trainer.open(fresh)?, skipped))
}
