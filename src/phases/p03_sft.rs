//! Phase 03 (notebook `03_sft`, `abt sft`): LoRA SFT of the base model on phase 01's records.

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::data::read_sft;
use crate::error::Result;
use crate::table::Table;
use crate::train::{Sft, SftConfig, sft_trainer};

use super::{Phase, TrainingPhase, load_policy};

/// Opens SFT on the run: phase 01's records, the profile's base model, `config`; resumed from
/// the last checkpoint unless `fresh`.
pub fn open(ctx: &RunContext, config: SftConfig, fresh: bool) -> Result<TrainingPhase<Sft>> {
    let records = read_sft(&ctx.phase_dir(Phase::Data))?;
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let model = load_policy(ctx, None)?;
    let dir = ctx.phase_dir(Phase::Sft);
    let (trainer, skipped) = sft_trainer(model, &records, &tokenizer, config, &dir, fresh)?;
    Ok(TrainingPhase::new(
        ctx,
        Phase::Sft,
        trainer,
        tokenizer,
        None,
        records.len(),
        skipped,
    ))
}

impl TrainingPhase<Sft> {
    /// The run at a glance: records, examples, trainable parameters, steps.
    pub fn summary(&self) -> Table {
        let t = &self.trainer;
        self.run_table(vec![
            ("records", self.inputs.to_string()),
            ("training examples", t.train_examples().len().to_string()),
            ("eval examples", t.eval_examples().len().to_string()),
            (
                "skipped (nothing trained within max_len)",
                self.skipped.to_string(),
            ),
        ])
    }
}
