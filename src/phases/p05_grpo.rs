//! Phase 05, GRPO (notebook `05_dpo_grpo`, `abt grpo`): online RL of the SFT policy in the
//! environments of phase 02's prompts.

use std::path::PathBuf;

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::error::Result;
use crate::prompts::{Prompt, read_prompts};
use crate::table::Table;
use crate::train::{Grpo, GrpoConfig, grpo_trainer};

use super::{Phase, TrainingPhase, load_policy};

/// Opens GRPO on the run: phase 02's prompts, the held-out `eval` tasks, the base model with
/// `start` merged (the SFT adapter when `None`), `config`; resumed from the last checkpoint
/// unless `fresh`.
pub fn open(
    ctx: &RunContext,
    config: GrpoConfig,
    eval: Vec<Prompt>,
    start: Option<PathBuf>,
    fresh: bool,
) -> Result<TrainingPhase<Grpo>> {
    let prompts = read_prompts(&ctx.phase_dir(Phase::Prompts))?;
    let inputs = prompts.len();
    let start = start.unwrap_or_else(|| ctx.adapter(Phase::Sft));
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let model = load_policy(ctx, Some(&start))?;
    let dir = ctx.phase_dir(Phase::Grpo);
    let trainer = grpo_trainer(model, prompts, eval, &tokenizer, config, &dir, fresh)?;
    Ok(TrainingPhase::new(
        ctx,
        Phase::Grpo,
        trainer,
        tokenizer,
        Some(start),
        inputs,
        0,
    ))
}

impl TrainingPhase<Grpo> {
    /// The run at a glance: prompts, held-out tasks, episodes per step, steps.
    pub fn summary(&self) -> Table {
        let t = &self.trainer;
        let c = t.config();
        self.run_table(vec![
            ("training prompts", self.inputs.to_string()),
            ("held-out tasks", t.eval_tasks().len().to_string()),
            (
                "episodes per step",
                (c.group_size * c.prompts_per_step).to_string(),
            ),
        ])
    }
}
