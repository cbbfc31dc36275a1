//! Text generation: sampling, batched KV-cache generation and multi-turn rollouts.
//!
//! - [`sampling`]: greedy, temperature, top-k, top-p, repetition penalty.
//! - [`generator`]: [`generate`] a batch of prompts with a preallocated KV cache.
//! - [`chat_model`]: a model with its tokenizer, answering conversations.
//! - [`rollout`]: play episodes of an [`crate::env::Environment`], turn by turn.

pub mod chat_model;
pub mod generator;
pub mod rollout;
pub mod sampling;
pub mod tasks;

pub use chat_model::ChatModel;
pub use generator::{FinishReason, GenerateOptions, Generation, GenerationSession, generate};
pub use rollout::{Episode, EpisodeEnd, RolloutOptions, rollout};
pub use sampling::Sampling;
pub use tasks::{
    BATCH_SEED_STEP, PART_BATCHES, PlayOptions, PlayedTask, TaskPart, env_batches, play_part,
    play_tasks, task_parts,
};
