//! Phase 05, RFT (`abt rft`): rejection-sampling fine-tuning of the SFT policy. The first
//! round keeps the successes among phase 04's samples (the sampling pass DPO's pairs come from)
//! and trains on them mixed with phase 01's records; each later round samples the latest policy
//! with phase 04's settings and does the same. Each round's records and report are written
//! before it trains, so a round cut off resumes from its checkpoints.

use std::path::{Path, PathBuf};

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::data::{SftRecord, read_sft};
use crate::error::Result;
use crate::model::Decoder;
use crate::pairs::{PairsConfig, Sample, read_samples, sample_prompts, samples_path};
use crate::prompts::read_prompts;
use crate::table::Table;
use crate::train::{RftConfig, RftReport, Sft, StepMetrics, rft_records, sft_trainer};

use super::{Phase, TrainingPhase, load_policy};

/// A round's records (`records.jsonl`) and what it kept (`report.json`), written into `dir`.
fn write_round(dir: &Path, records: &[SftRecord], report: &RftReport) -> Result<()> {
    crate::io::create_dir_all(dir)?;
    crate::io::write_jsonl(&dir.join("records.jsonl"), records)?;
    crate::io::write_json(&dir.join("report.json"), report)
}

/// Opens RFT's first round on the run: the successes among phase 04's samples mixed with
/// phase 01's records, the base model with `start` merged (the SFT adapter when `None`),
/// `config`'s SFT settings; resumed from the last checkpoint unless `fresh`. Returns the phase
/// and what the round kept.
pub fn open(
    ctx: &RunContext,
    config: &RftConfig,
    start: Option<PathBuf>,
    fresh: bool,
) -> Result<(TrainingPhase<Sft>, RftReport)> {
    let samples = read_samples(&ctx.phase_dir(Phase::Pairs))?;
    let sft = read_sft(&ctx.phase_dir(Phase::Data))?;
    let (records, report) = rft_records(&samples, &sft, config, 1)?;
    let dir = ctx.phase_dir(Phase::Rft);
    write_round(&dir, &records, &report)?;
    let start = start.unwrap_or_else(|| ctx.adapter(Phase::Sft));
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let model = load_policy(ctx, Some(&start))?;
    let (trainer, skipped) =
        sft_trainer(model, &records, &tokenizer, config.sft.clone(), &dir, fresh)?;
    let phase = TrainingPhase::new(
        ctx,
        Phase::Rft,
        trainer,
        tokenizer,
        Some(start),
        records.len(),
        skipped,
    );
    Ok((phase, report))
}

/// RFT finished: the final policy, its adapter and what each later round kept.
pub struct RftOutcome {
    /// The policy after the last round (base, start and every round's adapters).
    pub model: Decoder,
    /// The saved adapter (the start and RFT stacked).
    pub adapter: PathBuf,
    /// Rounds 2 and later (empty for a single round).
    pub rounds: Vec<RftReport>,
}

impl TrainingPhase<Sft> {
    /// After RFT's first round: rounds 2 to `config.rounds`, each folding the adapters so far
    /// into the weights, sampling phase 02's prompts with `pairs_config` (a seed of its own per
    /// round; the samples kept in `round-N/samples.jsonl`, reused when present), keeping the
    /// successes and training on them in `round-N/`; then the stacked adapter, saved. A round
    /// whose samples solved nothing ends the rounds. `on_step` sees each later round's number,
    /// its total steps and each step's metrics.
    pub fn finish_rft(
        self,
        ctx: &RunContext,
        config: &RftConfig,
        pairs_config: &PairsConfig,
        mut on_step: impl FnMut(usize, usize, &StepMetrics),
    ) -> Result<RftOutcome> {
        let adapter = self.save_adapter()?;
        let dir = self.dir().to_path_buf();
        let tokenizer = self.tokenizer;
        let mut model = self.trainer.into_model();
        let mut rounds = Vec::new();
        if config.rounds > 1 {
            let prompts = read_prompts(&ctx.phase_dir(Phase::Prompts))?;
            let picked = pairs_config.pick(&prompts);
            let sft = read_sft(&ctx.phase_dir(Phase::Data))?;
            for round in 2..=config.rounds {
                model.merge_lora()?;
                let round_dir = dir.join(format!("round-{round}"));
                let samples_file = samples_path(&round_dir);
                let samples: Vec<Sample> = if samples_file.is_file() {
                    crate::io::read_jsonl(&samples_file)?
                } else {
                    let sampling = pairs_config.for_round(round);
                    let samples = sample_prompts(&model, &tokenizer, &picked, &sampling, None)?;
                    crate::io::create_dir_all(&round_dir)?;
                    crate::io::write_jsonl(&samples_file, &samples)?;
                    samples
                };
                let (records, report) = match rft_records(&samples, &sft, config, round) {
                    Ok(kept) => kept,
                    Err(e) => {
                        println!("{e}; the rounds end here");
                        break;
                    }
                };
                write_round(&round_dir, &records, &report)?;
                rounds.push(report);
                let mut round_config = config.sft.clone();
                round_config.train.seed = config.sft.train.seed.wrapping_add(round as u64);
                let (mut trainer, _) =
                    sft_trainer(model, &records, &tokenizer, round_config, &round_dir, false)?;
                let total = trainer.total_steps();
                trainer.train(None, |m| on_step(round, total, m))?;
                model = trainer.into_model();
            }
            model.save_adapter(&adapter, ctx.profile.base_model())?;
        }
        Ok(RftOutcome {
            model,
            adapter,
            rounds,
        })
    }
}

/// What RFT kept, round by round, as one table.
pub fn rounds_table(reports: &[RftReport]) -> Result<Table> {
    let mut t = Table::new([
        "round",
        "episodes",
        "solved",
        "prompts",
        "prompts solved",
        "kept",
        "SFT mixed",
    ])
    .with_title("RFT rounds");
    for r in reports {
        t.push_row([
            r.round.to_string(),
            r.samples.to_string(),
            r.solved.to_string(),
            r.prompts.to_string(),
            r.prompts_solved.to_string(),
            r.kept.to_string(),
            r.sft_mixed.to_string(),
        ])?;
    }
    Ok(t)
}
