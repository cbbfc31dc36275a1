//! Phase 04 (notebook `04_pairs`, `abt pairs`): preference pairs from the SFT policy.
//!
//! [`PairsPhase`] holds the policy and what has been made so far; each step adds its pairs and
//! rewrites `pairs.jsonl`, so a run stopped after any step leaves a usable set.

use std::path::{Path, PathBuf};

use crate::cache::Fingerprint;
use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::error::Result;
use crate::model::Decoder;
use crate::pairs::{
    Pair, PairFilter, PairsConfig, PairsReport, Sample, StepLevelConfig, TeacherClient,
    TeacherStats, best_of_n_pairs, sample_prompts, sampling_fingerprint, saved_samples,
    saved_step_level_pairs, step_level_pairs, teacher_pairs, write_pairs,
};
use crate::prompts::{Prompt, read_prompts};
use crate::table::Table;

use super::{Phase, load_policy};

/// Phase 04 opened on a run: the policy, the prompts it samples, and the pairs so far.
pub struct PairsPhase {
    /// The settings.
    pub config: PairsConfig,
    /// The prompts sampled (evenly spaced over phase 02's).
    pub picked: Vec<Prompt>,
    /// How many prompts phase 02 wrote.
    pub prompts: usize,
    /// The adapter merged into the policy.
    pub adapter: PathBuf,
    /// The policy: the base model with the adapter merged.
    pub policy: Decoder,
    /// The profile's tokenizer.
    pub tokenizer: Tokenizer,
    /// Every episode sampled (and the teacher's, once asked).
    pub samples: Vec<Sample>,
    /// Every pair kept so far.
    pub pairs: Vec<Pair>,
    /// The best-of-N report (written as `report.json`).
    pub report: PairsReport,
    /// Seconds the sampling took (or took when it was first done, if reused).
    pub sampling_seconds: f64,
    dir: PathBuf,
    fingerprint: Fingerprint,
    filter: PairFilter,
}

impl PairsPhase {
    /// Opens phase 04: phase 02's prompts, the base model with `adapter` merged (the SFT
    /// adapter when `None`).
    pub fn open(ctx: &RunContext, config: PairsConfig, adapter: Option<PathBuf>) -> Result<Self> {
        let prompts = read_prompts(&ctx.phase_dir(Phase::Prompts))?;
        let picked: Vec<Prompt> = config.pick(&prompts).into_iter().cloned().collect();
        let adapter = adapter.unwrap_or_else(|| ctx.adapter(Phase::Sft));
        let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
        let policy = load_policy(ctx, Some(&adapter))?;
        let fingerprint =
            sampling_fingerprint(ctx.profile.base_model(), &adapter, &config, &picked)?;
        let filter = PairFilter::new(&config)?;
        Ok(Self {
            config,
            prompts: prompts.len(),
            picked,
            adapter,
            policy,
            tokenizer,
            samples: Vec::new(),
            pairs: Vec::new(),
            report: PairsReport::default(),
            sampling_seconds: 0.0,
            dir: ctx.phase_dir(Phase::Pairs),
            fingerprint,
            filter,
        })
    }

    /// The phase's directory in the run.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The policy at a glance: model, adapter, prompts, episodes.
    pub fn summary(&self, base_model: &str) -> Table {
        Table::settings(
            "the policy",
            [
                ("model", base_model.to_string()),
                ("adapter (merged)", self.adapter.display().to_string()),
                ("prompts in phase 02", self.prompts.to_string()),
                ("prompts sampled", self.picked.len().to_string()),
                (
                    "episodes",
                    (self.picked.len() * self.config.samples).to_string(),
                ),
            ],
        )
    }

    fn picked(&self) -> Vec<&Prompt> {
        self.picked.iter().collect()
    }

    fn write(&self) -> Result<()> {
        write_pairs(&self.dir, &self.pairs, &self.samples, &self.report)
    }

    /// Samples `config.samples` episodes per prompt (reused from the phase's cache when the
    /// policy, settings and prompts are unchanged) and keeps the best-of-N pairs. Returns the
    /// pairs this step added.
    pub fn best_of_n(&mut self) -> Result<Vec<Pair>> {
        let picked = self.picked();
        let (samples, seconds) = saved_samples(&self.dir, &self.fingerprint, |parts| {
            sample_prompts(
                &self.policy,
                &self.tokenizer,
                &picked,
                &self.config,
                Some(parts),
            )
        })?;
        let (pairs, report) = best_of_n_pairs(&samples, &self.config, seconds)?;
        self.samples = samples;
        self.sampling_seconds = seconds;
        self.report = report;
        self.pairs = pairs.clone();
        self.write()?;
        Ok(pairs)
    }

    /// Asks the teacher in `teacher_file` (a [`crate::pairs::TeacherConfig`] as JSON) for
    /// pairs where self-play gave none; its answers are cached in the phase directory.
    pub fn teacher(&mut self, teacher_file: &Path) -> Result<(PairsReport, TeacherStats)> {
        let mut client = TeacherClient::new(
            crate::io::read_json(teacher_file)?,
            self.dir.join("teacher_cache"),
        )?;
        let (extra, report, samples) =
            teacher_pairs(&mut client, &self.picked(), &self.samples, &self.filter)?;
        crate::io::write_json(&self.dir.join("teacher_report.json"), &report)?;
        self.pairs.extend(extra);
        self.samples.extend(samples);
        self.write()?;
        Ok((report, client.stats()))
    }

    /// Step-level pairs: the same history, two next turns judged by rollouts from there
    /// (reused from the phase's cache when nothing they depend on changed). Returns the pairs
    /// this step added and its report.
    pub fn step_level(&mut self, step: &StepLevelConfig) -> Result<(Vec<Pair>, PairsReport)> {
        let picked = self.picked();
        let (extra, report) =
            saved_step_level_pairs(&self.dir, &self.fingerprint, step, &self.samples, || {
                step_level_pairs(
                    &self.policy,
                    &self.tokenizer,
                    &picked,
                    &self.samples,
                    &self.config,
                    step,
                    &self.filter,
                )
            })?;
        crate::io::write_json(&self.dir.join("step_level_report.json"), &report)?;
        self.pairs.extend(extra.iter().cloned());
        self.write()?;
        Ok((extra, report))
    }
}
