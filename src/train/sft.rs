//! The LoRA SFT trainer: assistant-only loss, packing, gradient accumulation, AdamW with a
//! warmup + cosine schedule, gradient-norm clipping, eval loss at intervals, metrics, and
//! atomic checkpoints that resume exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Var};
use serde::{Deserialize, Serialize};

use super::data::{MicroBatch, SftExample, epoch_batches};
use super::optim::{AdamW, AdamWParams};
use super::run::{
    Checkpoints, GradAccumulator, TrainState, append_metrics, peak_memory_mb, read_metrics,
};
use super::schedule::CosineSchedule;
use crate::config::{Profile, RunContext, Scale};
use crate::error::{Error, Result};
use crate::io::create_dir_all;
use crate::model::{Decoder, LoraConfig, Mode, Target};
use crate::rng::Rng;

/// Everything an SFT run is configured by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// The adapters trained.
    pub lora: LoraConfig,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW's betas, ε and weight decay.
    pub adamw: AdamWParams,
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
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
    /// Warmup as a share of the total steps.
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Share of examples held out for the eval loss.
    pub eval_share: f64,
    /// Eval loss every this many steps (and at the end; 0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub save_every: usize,
    /// Checkpoints kept on disk (the newest).
    pub keep_checkpoints: usize,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    pub checkpointing: bool,
    /// Seed of the split, the order and the adapters' initialisation.
    pub seed: u64,
}

impl SftConfig {
    /// The method's hyper-parameters per profile (Qwen2.5-7B: r 64 / α 128, lr 2e-5, effective
    /// batch 16, 4096 tokens, warmup 0.05; Qwen3-4B the same with lr 5e-5); `tiny` is sized to
    /// finish in minutes on 2 CPU cores.
    pub fn for_profile(profile: Profile) -> Self {
        let colab = |lr: f64| Self {
            lora: LoraConfig {
                r: 64,
                alpha: 128.0,
                dropout: 0.05,
                targets: Target::ALL.to_vec(),
                use_rslora: false,
                seed: 0,
            },
            learning_rate: lr,
            adamw: AdamWParams::default(),
            micro_batch: 2,
            grad_accum: 8,
            max_len: 4096,
            packing: true,
            epochs: 1,
            max_steps: None,
            warmup_ratio: 0.05,
            max_grad_norm: 1.0,
            eval_share: 0.05,
            eval_every: 50,
            save_every: 50,
            keep_checkpoints: 2,
            checkpointing: true,
            seed: 0,
        };
        match profile {
            Profile::ColabQwen25_7b => colab(2e-5),
            Profile::ColabQwen3_4b => colab(5e-5),
            // A 135M model with few steps: a high LoRA lr, one 2 × 1024-token pass per step. On
            // two cores 48 steps take ~11 min; lr 2e-3 reached eval loss 0.56 at step 12 where
            // 1e-3 reached 0.88, and 48 steps beat 24 on the quick score (7 vs 3 of 108).
            Profile::Tiny => Self {
                lora: LoraConfig {
                    r: 16,
                    alpha: 32.0,
                    ..colab(0.0).lora
                },
                learning_rate: 2e-3,
                micro_batch: 2,
                grad_accum: 1,
                max_len: 1024,
                max_steps: Some(48),
                eval_every: 12,
                save_every: 12,
                ..colab(0.0)
            },
        }
    }

    /// The profile's configuration for a run: at the short scale (the main job) 10 steps (a
    /// whole schedule), in a smoke run (CI) 4 steps, eval and checkpoint every 2.
    pub fn for_run(ctx: &RunContext) -> Self {
        let mut config = Self::for_profile(ctx.profile);
        match ctx.scale {
            Scale::Full => {}
            Scale::Short => {
                config.max_steps = Some(config.max_steps.map_or(10, |m| m.min(10)));
                config.eval_every = 5;
                config.save_every = 5;
            }
            Scale::Smoke => {
                config.max_steps = Some(4);
                config.eval_every = 2;
                config.save_every = 2;
            }
        }
        config
    }
}

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

/// Trains LoRA adapters on a decoder.
pub struct SftTrainer {
    model: Decoder,
    vars: Vec<Var>,
    optimizer: AdamW,
    schedule: CosineSchedule,
    config: SftConfig,
    train: Vec<SftExample>,
    eval: Vec<SftExample>,
    batches: Vec<MicroBatch>,
    state: TrainState,
    pad_id: u32,
    dir: PathBuf,
}

impl SftTrainer {
    /// A fresh run in `dir` (metrics, checkpoints, adapter): adds the adapters to `model`.
    /// Call [`SftTrainer::resume`] to continue from the last checkpoint in `dir` instead.
    pub fn new(
        mut model: Decoder,
        train: Vec<SftExample>,
        eval: Vec<SftExample>,
        config: SftConfig,
        pad_id: u32,
        dir: &Path,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(Error::Batch("no training examples".into()));
        }
        if config.micro_batch == 0 || config.grad_accum == 0 {
            return Err(Error::Batch(
                "micro_batch and grad_accum must be at least 1".into(),
            ));
        }
        model.add_lora(&LoraConfig {
            seed: config.seed ^ config.lora.seed,
            ..config.lora.clone()
        })?;
        model.set_checkpointing(config.checkpointing);
        let vars = model.trainable_vars();
        let optimizer = AdamW::new(vars.clone(), config.adamw)?;
        let per_epoch = epoch_batches(
            &train,
            config.seed,
            0,
            config.micro_batch,
            config.max_len,
            config.packing,
        )?
        .len()
        .div_ceil(config.grad_accum);
        let total = config
            .max_steps
            .unwrap_or(per_epoch * config.epochs.max(1))
            .max(1);
        let schedule = CosineSchedule::with_ratio(config.learning_rate, config.warmup_ratio, total);
        let batches = epoch_batches(
            &train,
            config.seed,
            0,
            config.micro_batch,
            config.max_len,
            config.packing,
        )?;
        create_dir_all(dir)?;
        Ok(Self {
            model,
            vars,
            optimizer,
            schedule,
            config,
            train,
            eval,
            batches,
            state: TrainState::default(),
            pad_id,
            dir: dir.to_path_buf(),
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &Decoder {
        &self.model
    }

    /// Gives the trained model back.
    pub fn into_model(self) -> Decoder {
        self.model
    }

    /// The run's configuration.
    pub fn config(&self) -> &SftConfig {
        &self.config
    }

    /// The training examples.
    pub fn train_examples(&self) -> &[SftExample] {
        &self.train
    }

    /// The held-out examples of the eval loss.
    pub fn eval_examples(&self) -> &[SftExample] {
        &self.eval
    }

    /// The current epoch's micro-batches, in order.
    pub fn batches(&self) -> &[MicroBatch] {
        &self.batches
    }

    /// Optimizer steps done.
    pub fn step_count(&self) -> usize {
        self.state.step
    }

    /// Optimizer steps the run will take.
    pub fn total_steps(&self) -> usize {
        self.schedule.total
    }

    /// The schedule.
    pub fn schedule(&self) -> &CosineSchedule {
        &self.schedule
    }

    /// `metrics.jsonl` of the run.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(&self.dir, self.config.keep_checkpoints)
    }

    /// Whether every step is done.
    pub fn finished(&self) -> bool {
        self.state.step >= self.schedule.total
    }

    /// Mean loss per trained token of `examples` in `mode` (no dropout, no gradients):
    /// [`Mode::Eval`] with the adapters, [`Mode::Reference`] without.
    pub fn loss_on(&self, examples: &[SftExample], mode: Mode) -> Result<f64> {
        if examples.is_empty() {
            return Ok(f64::NAN);
        }
        let batches = epoch_batches(
            examples,
            0,
            0,
            self.config.micro_batch,
            self.config.max_len,
            self.config.packing,
        )?;
        let (mut nll, mut tokens) = (0.0, 0usize);
        for b in &batches {
            let (batch, positions) = b.tensors(examples, self.pad_id, self.model.device())?;
            if positions.is_empty() {
                continue;
            }
            let lp = self.model.token_logprobs_at(&batch, &positions, mode)?;
            nll -= lp.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            tokens += b.trained(examples);
        }
        Ok(nll / tokens.max(1) as f64)
    }

    /// The eval loss on the held-out examples.
    pub fn eval_loss(&self) -> Result<f64> {
        self.loss_on(&self.eval, Mode::Eval)
    }

    /// The eval loss of the base model (adapters off): the point training starts from.
    pub fn base_eval_loss(&self) -> Result<f64> {
        self.loss_on(&self.eval, Mode::Reference)
    }

    /// The next micro-batches of one optimizer step (crossing into the next epoch if needed).
    fn next_micro_batches(&mut self) -> Result<Vec<MicroBatch>> {
        let mut out = Vec::with_capacity(self.config.grad_accum);
        while out.len() < self.config.grad_accum {
            if self.state.cursor >= self.batches.len() {
                self.state.epoch += 1;
                self.state.cursor = 0;
                self.batches = self.epoch_batches(self.state.epoch)?;
            }
            out.push(self.batches[self.state.cursor].clone());
            self.state.cursor += 1;
        }
        Ok(out)
    }

    fn epoch_batches(&self, epoch: usize) -> Result<Vec<MicroBatch>> {
        epoch_batches(
            &self.train,
            self.config.seed,
            epoch,
            self.config.micro_batch,
            self.config.max_len,
            self.config.packing,
        )
    }

    /// One optimizer step: forward/backward over `grad_accum` micro-batches (loss = summed
    /// NLL of trained tokens / trained tokens of the whole step), clip, AdamW update.
    pub fn step(&mut self) -> Result<StepMetrics> {
        let start = Instant::now();
        let micro = self.next_micro_batches()?;
        let trained: usize = micro.iter().map(|m| m.trained(&self.train)).sum();
        let denom = trained.max(1) as f64;
        let mut grads = GradAccumulator::new(self.vars.len());
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        for m in &micro {
            let (batch, positions) = m.tensors(&self.train, self.pad_id, self.model.device())?;
            tokens += batch.num_tokens();
            if positions.is_empty() {
                continue;
            }
            let lp = self
                .model
                .token_logprobs_at(&batch, &positions, Mode::Train)?;
            let nll = lp.sum_all()?.neg()?;
            let loss = (&nll / denom)?;
            loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            grads.add(&self.model.backward(&loss)?, &self.vars)?;
        }
        let grad_norm = grads.clip(self.config.max_grad_norm)?;
        let lr = self.schedule.lr(self.state.step);
        self.optimizer.step(grads.grads(), lr)?;
        self.state.step += 1;
        self.state.passes = self.model.train_passes();
        let mut metrics = StepMetrics {
            step: self.state.step,
            epoch: self.state.epoch,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            trained_tokens: trained,
            memory_mb: peak_memory_mb(),
            eval_loss: None,
        };
        let every = self.config.eval_every;
        if !self.eval.is_empty()
            && ((every > 0 && metrics.step.is_multiple_of(every)) || self.finished())
        {
            metrics.eval_loss = Some(self.eval_loss()?);
        }
        append_metrics(&self.metrics_path(), metrics.step == 1, &metrics)?;
        let save = self.config.save_every;
        if (save > 0 && metrics.step.is_multiple_of(save)) || self.finished() {
            self.save_checkpoint()?;
        }
        Ok(metrics)
    }

    /// Runs steps until the end (or `limit` more steps), reporting each to `on_step`.
    pub fn train(
        &mut self,
        limit: Option<usize>,
        mut on_step: impl FnMut(&StepMetrics),
    ) -> Result<Vec<StepMetrics>> {
        let mut out = Vec::new();
        while !self.finished() && limit.is_none_or(|l| out.len() < l) {
            let m = self.step()?;
            on_step(&m);
            out.push(m);
        }
        Ok(out)
    }

    /// Reads the metrics written so far.
    pub fn read_metrics(&self) -> Result<Vec<StepMetrics>> {
        read_metrics(&self.metrics_path())
    }

    /// Writes a checkpoint (trainable values, optimizer moments, state) into
    /// `checkpoints/step-NNNNNN/` (see [`Checkpoints::save`]).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        self.checkpoints().save(
            self.state.step,
            &self.vars,
            &self.optimizer,
            &self.state,
            &self.config,
        )
    }

    /// Continues from the last checkpoint in the run directory, if there is one: trainable
    /// values, optimizer moments, step, data position and dropout stream are restored, and
    /// metrics past the checkpoint are dropped. Returns whether it resumed.
    pub fn resume(&mut self) -> Result<bool> {
        let Some(state) = self
            .checkpoints()
            .load::<TrainState>(&self.vars, &mut self.optimizer)?
        else {
            return Ok(false);
        };
        self.state = state;
        self.model.set_train_passes(self.state.passes);
        self.batches = self.epoch_batches(self.state.epoch)?;
        // Metrics of steps after the checkpoint were never saved in it: drop them.
        let kept: Vec<StepMetrics> = self
            .read_metrics()?
            .into_iter()
            .filter(|m| m.step <= self.state.step)
            .collect();
        crate::io::write_jsonl(&self.metrics_path(), &kept)?;
        Ok(true)
    }

    /// Saves the adapter in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`).
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        self.model.save_adapter(dir, base_model)
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
    let (train, eval) = split_examples(examples, config.eval_share, config.seed);
    if fresh {
        Checkpoints::new(dir, 1).clear()?;
    }
    let mut trainer = SftTrainer::new(model, train, eval, config, tokenizer.pad_token_id(), dir)?;
    trainer.resume()?;
    Ok((trainer, skipped))
}
