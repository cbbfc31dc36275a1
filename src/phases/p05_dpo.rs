//! Phase 05, DPO (notebook `05_dpo_grpo`, `abt dpo`): preference optimisation of the SFT
//! policy on phase 04's pairs, iterated in rounds when the settings ask for more than one.

use std::path::PathBuf;

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::error::Result;
use crate::model::Decoder;
use crate::pairs::{PairsConfig, read_pairs};
use crate::prompts::read_prompts;
use crate::table::Table;
use crate::train::{Dpo, DpoConfig, DpoMetrics, RoundSummary, dpo_rounds, dpo_trainer};

use super::{Phase, TrainingPhase, load_policy};

/// Opens DPO on the run: phase 04's pairs, the base model with `start` merged (the SFT adapter
/// when `None`), `config`; resumed from the last checkpoint unless `fresh`.
pub fn open(
    ctx: &RunContext,
    config: DpoConfig,
    start: Option<PathBuf>,
    fresh: bool,
) -> Result<TrainingPhase<Dpo>> {
    let pairs = read_pairs(&ctx.phase_dir(Phase::Pairs))?;
    let start = start.unwrap_or_else(|| ctx.adapter(Phase::Sft));
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let model = load_policy(ctx, Some(&start))?;
    let dir = ctx.phase_dir(Phase::Dpo);
    let (trainer, skipped) = dpo_trainer(model, &pairs, &tokenizer, config, &dir, fresh)?;
    Ok(TrainingPhase::new(
        ctx,
        Phase::Dpo,
        trainer,
        tokenizer,
        Some(start),
        pairs.len(),
        skipped,
    ))
}

/// DPO finished: the final policy, its adapter and what each later round did.
pub struct DpoOutcome {
    /// The policy after the last round (base, SFT and every round's adapters).
    pub model: Decoder,
    /// The profile's tokenizer.
    pub tokenizer: Tokenizer,
    /// The saved adapter (SFT and DPO stacked).
    pub adapter: PathBuf,
    /// Rounds 2 and later (empty for a single round).
    pub rounds: Vec<RoundSummary>,
}

impl TrainingPhase<Dpo> {
    /// The run at a glance: pairs, held-out pairs, trainable parameters, steps.
    pub fn summary(&self) -> Table {
        let t = &self.trainer;
        self.run_table(vec![
            ("pairs", self.inputs.to_string()),
            ("training pairs", t.train_examples().len().to_string()),
            ("held-out pairs", t.eval_examples().len().to_string()),
            (
                "skipped (a side with nothing trained within max_len)",
                self.skipped.to_string(),
            ),
        ])
    }

    /// After the first round's training: its adapter saved with the start it was trained from
    /// recorded beside it ([`super::started_from`]), then the later rounds (each on pairs sampled
    /// from the latest policy with `pairs_config`, see [`dpo_rounds`]) and the stacked adapter,
    /// saved.
    /// `on_step` sees each later round's number, its total steps and each step's metrics.
    pub fn finish(
        self,
        ctx: &RunContext,
        pairs_config: &PairsConfig,
        on_step: impl FnMut(usize, usize, &DpoMetrics),
    ) -> Result<DpoOutcome> {
        let config = self.trainer.config().clone();
        let dir = self.dir().to_path_buf();
        // The first round's adapter, with the start it was trained from recorded beside it.
        let adapter = self.save_adapter()?;
        let tokenizer = self.tokenizer;
        let mut model = self.trainer.into_model();
        let mut rounds = Vec::new();
        if config.rounds > 1 {
            let prompts = read_prompts(&ctx.phase_dir(Phase::Prompts))?;
            (model, rounds) = dpo_rounds(
                model,
                &tokenizer,
                &prompts,
                pairs_config,
                &config,
                &ctx.phase_dir(Phase::Pairs),
                &dir,
                on_step,
            )?;
            model.save_adapter(&adapter, ctx.profile.base_model())?;
        }
        Ok(DpoOutcome {
            model,
            tokenizer,
            adapter,
            rounds,
        })
    }
}
