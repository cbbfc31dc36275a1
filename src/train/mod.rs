//! Training: phase 03 (LoRA SFT) and phase 05 (DPO and multi-turn GRPO).
//!
//! - [`data`]: SFT examples with the assistant-only loss mask, packed or padded micro-batches.
//! - [`losses`]: DPO (sigmoid, IPO, hinge, robust) and GRPO (group advantages, clipped
//!   surrogate, k3 KL, GRPO/Dr.GRPO/DAPO aggregation) losses.
//! - [`dpo`]: the DPO trainer (reference log-probs cached, adapters on the merged SFT model).
//! - [`grpo`]: the multi-turn GRPO trainer (group rollouts in the environments, policy tokens
//!   trained, observations masked, KL to the SFT model).
//! - [`trainer`]: the one training loop ([`Trainer`]) and what a training algorithm supplies
//!   to it ([`Method`]); [`args`]: the settings every trainer shares ([`TrainArgs`]).
//! - [`curriculum`]: GRPO's pass-rate curriculum (per-prompt Beta estimates, a band).
//! - [`optim`]: AdamW with saveable state.
//! - [`schedule`]: linear warmup + cosine decay, as transformers.
//! - [`run`]: gradient accumulation and clipping, checkpoints, the metrics log.
//! - [`sft`]: LoRA SFT (assistant-only loss, packing, eval loss).
//! - [`rft`]: rejection-sampling fine-tuning: the policy's successes, mixed with SFT records,
//!   trained with the SFT trainer.

pub mod args;
pub mod curriculum;
pub mod data;
pub mod dpo;
pub mod grpo;
pub mod losses;
pub mod optim;
pub mod rft;
pub mod run;
pub mod schedule;
pub mod sft;
pub mod trainer;

pub use args::TrainArgs;
pub use curriculum::{CurriculumConfig, PassRates};
pub use data::{LossView, MicroBatch, SftExample, encode_records, epoch_batches};
pub use dpo::{
    Dpo, DpoConfig, DpoEval, DpoExample, DpoMetrics, DpoTrainer, RoundSummary, dpo_chart,
    dpo_rounds, dpo_trainer, encode_pairs, pair_logprobs,
};
pub use grpo::{
    Grpo, GrpoConfig, GrpoEval, GrpoMetrics, GrpoReward, GrpoTrainer, episode_logprobs, grpo_chart,
    grpo_health_chart, grpo_trainer, policy_targets,
};
pub use losses::{
    AdvantageScale, DpoLoss, DpoOutput, DpoParams, GroupAdvantages, GrpoOutput, GrpoParams,
    LossAggregation, StepNorm, chosen_nll, dpo_loss, dpo_reward_accuracy, group_advantages,
    grpo_loss,
};
pub use optim::{AdamW, AdamWParams};
pub use rft::{RftConfig, RftReport, keep_successes, rft_records, sample_record};
pub use schedule::CosineSchedule;
pub use sft::{
    Sft, SftConfig, SftTrainer, StepMetrics, loss_chart, schedule_chart, sft_trainer,
    split_examples,
};
pub use trainer::{Core, Method, Trainer};
