//! Training: phase 03 (LoRA SFT) now; DPO and GRPO build on the same pieces.
//!
//! - [`data`]: SFT examples with the assistant-only loss mask, packed or padded micro-batches.
//! - [`optim`]: AdamW with saveable state.
//! - [`schedule`]: linear warmup + cosine decay, as transformers.
//! - [`run`]: what every trainer shares (gradient accumulation and clipping, checkpoints,
//!   the metrics log).
//! - [`sft`]: the trainer (accumulation, clipping, eval loss, metrics, checkpoints, resume).

pub mod data;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod sft;

pub use data::{LossView, MicroBatch, SftExample, encode_records, epoch_batches};
pub use optim::{AdamW, AdamWParams};
pub use schedule::CosineSchedule;
pub use sft::{
    SftConfig, SftTrainer, StepMetrics, loss_chart, schedule_chart, sft_trainer, split_examples,
};
