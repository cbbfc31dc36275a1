//! Phase 02 (notebook `02_prompts`, `abt prompts`): the RL and pair prompts.

use crate::config::RunContext;
use crate::error::Result;
use crate::prompts::{Prompt, PromptConfig, build_prompts, write_prompts};

use super::Phase;

/// Builds the prompts of `config` and writes `prompts.jsonl` into the run's `02_prompts`.
pub fn build(ctx: &RunContext, config: &PromptConfig) -> Result<Vec<Prompt>> {
    let prompts = build_prompts(config)?;
    write_prompts(&ctx.phase_dir(Phase::Prompts), &prompts)?;
    Ok(prompts)
}
