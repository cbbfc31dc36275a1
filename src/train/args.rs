//! The settings every trainer shares (as TRL's `TrainingArguments`), flattened into
//! [`super::SftConfig`], [`super::DpoConfig`] and [`super::GrpoConfig`]: in their JSON and in the
//! settings tables they read as fields of the trainer's own configuration.

use serde::{Deserialize, Serialize};

use super::optim::AdamWParams;
use crate::error::{Error, Result};
use crate::model::LoraConfig;

/// Adapters, optimizer, schedule, evaluation and checkpoint settings of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainArgs {
    /// The adapters trained.
    pub lora: LoraConfig,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW's betas, ε and weight decay.
    pub adamw: AdamWParams,
    /// Examples (SFT rows, DPO pairs, GRPO episodes) per forward/backward pass.
    pub micro_batch: usize,
    /// Warmup as a share of the optimizer updates.
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Evaluate every this many steps (and at the end; 0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (and at the end; 0: only at the end).
    pub save_every: usize,
    /// Checkpoints kept on disk (the newest).
    pub keep_checkpoints: usize,
    /// Recompute each layer in the backward pass instead of keeping its activations.
    pub checkpointing: bool,
    /// Seed of the data order, the sampling and the adapters' initialisation.
    pub seed: u64,
}

impl Default for TrainArgs {
    /// LoRA r 16 / α 32 on every projection, lr 1e-4, one example a pass, no warmup, clipping
    /// at 1, evaluation and a checkpoint only at the end (two kept), activation checkpointing.
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            learning_rate: 1e-4,
            adamw: AdamWParams::default(),
            micro_batch: 1,
            warmup_ratio: 0.0,
            max_grad_norm: 1.0,
            eval_every: 0,
            save_every: 0,
            keep_checkpoints: 2,
            checkpointing: true,
            seed: 0,
        }
    }
}

impl TrainArgs {
    /// Checks the settings a run cannot start with; `owner` names the configuration.
    pub fn validate(&self, owner: &str) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::InvalidConfig {
                source_name: owner.into(),
                reason,
            })
        };
        if self.micro_batch == 0 {
            return invalid("micro_batch must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate >= 0.0) {
            return invalid(format!(
                "learning_rate must be a finite number ≥ 0, not {}",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return invalid(format!(
                "warmup_ratio is a share of the updates, in [0, 1], not {}",
                self.warmup_ratio
            ));
        }
        if self.lora.r == 0 {
            return invalid("lora.r must be at least 1".into());
        }
        Ok(())
    }
}

/// Implements `AsRef<TrainArgs>` (its `train` field) and `Default` (its `section` of the
/// Qwen2.5-7B-Instruct profile, the method's recipe) for a trainer's configuration.
macro_rules! trainer_config {
    ($config:ty, $section:ident) => {
        impl AsRef<$crate::train::TrainArgs> for $config {
            fn as_ref(&self) -> &$crate::train::TrainArgs {
                &self.train
            }
        }

        impl Default for $config {
            /// The method's settings for Qwen2.5-7B-Instruct (`configs/profiles/colab-qwen2.5-7b.toml`).
            fn default() -> Self {
                $crate::presets::Presets::resolve(
                    $crate::config::Profile::ColabQwen25_7b,
                    $crate::config::Scale::Full,
                )
                .expect("the built-in profile files are valid (presets' tests check them)")
                .$section
            }
        }
    };
}
pub(crate) use trainer_config;
