//! A training phase opened on a run: what phases 03 and 05 share.

use std::path::{Path, PathBuf};

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::error::Result;
use crate::table::Table;
use crate::train::{Method, Trainer};

use super::Phase;

/// Where a phase records the adapter it started from: `<phase>/start.json`.
const START_FILE: &str = "start.json";

/// The adapter `phase` of the run in `run_dir` started from (as saved with its adapter), or
/// `None` when it recorded none.
pub fn started_from(run_dir: &Path, phase: Phase) -> Option<PathBuf> {
    let path = run_dir.join(phase.dir_name()).join(START_FILE);
    let saved: serde_json::Value = crate::io::read_json(&path).ok()?;
    let adapter = PathBuf::from(saved["adapter"].as_str()?);
    Some(run_dir.join(adapter))
}

/// A training phase opened on a run: its trainer (resumed from the phase's last checkpoint
/// unless opened fresh), the profile's tokenizer, and what the trainer was built from.
pub struct TrainingPhase<M: Method> {
    /// Which phase.
    pub phase: Phase,
    /// The trainer.
    pub trainer: Trainer<M>,
    /// The profile's tokenizer.
    pub tokenizer: Tokenizer,
    /// The adapter merged into the base model before training (none for SFT).
    pub start: Option<PathBuf>,
    /// Inputs read from the phase before (records, pairs or prompts).
    pub inputs: usize,
    /// Inputs left out because nothing they train fits within `max_len`.
    pub skipped: usize,
    dir: PathBuf,
    run_dir: PathBuf,
    base_model: String,
}

impl<M: Method> TrainingPhase<M> {
    /// Wraps a trainer built for `phase` of the run `ctx`.
    pub(crate) fn new(
        ctx: &RunContext,
        phase: Phase,
        trainer: Trainer<M>,
        tokenizer: Tokenizer,
        start: Option<PathBuf>,
        inputs: usize,
        skipped: usize,
    ) -> Self {
        Self {
            phase,
            trainer,
            tokenizer,
            start,
            inputs,
            skipped,
            dir: ctx.phase_dir(phase),
            run_dir: ctx.run_dir.clone(),
            base_model: ctx.profile.base_model().to_string(),
        }
    }

    /// The phase's directory in the run.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Where the phase's adapter goes (`<phase>/adapter`).
    pub fn adapter(&self) -> PathBuf {
        self.dir.join("adapter")
    }

    /// Saves the trained adapter (stacked on [`Self::start`], if any) as a PEFT directory and
    /// returns its path; the start is recorded beside it ([`started_from`]).
    pub fn save_adapter(&self) -> Result<PathBuf> {
        let out = self.adapter();
        self.trainer.save_adapter(&out, &self.base_model)?;
        if let Some(start) = &self.start {
            let start = start.strip_prefix(&self.run_dir).unwrap_or(start);
            crate::io::write_json(
                &self.dir.join(START_FILE),
                &serde_json::json!({ "adapter": start }),
            )?;
        }
        Ok(out)
    }

    /// "The run" table: `rows` (what the phase trains on), then the trainable parameters and
    /// the steps (done so far).
    pub(crate) fn run_table(&self, rows: Vec<(&str, String)>) -> Table {
        let t = &self.trainer;
        let steps = format!("{} (done: {})", t.total_steps(), t.step_count());
        Table::settings(
            "the run",
            rows.into_iter().chain([
                (
                    "trainable parameters",
                    t.model().num_trainable().to_string(),
                ),
                ("steps", steps),
            ]),
        )
    }

    /// What a command prints before training: where a resumed run stands and what was skipped.
    pub fn opening_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.trainer.step_count() > 0 {
            lines.push(format!(
                "resumed at step {} of {}",
                self.trainer.step_count(),
                self.trainer.total_steps()
            ));
        }
        if self.skipped > 0 {
            lines.push(format!(
                "{} of {} inputs had nothing trained within max_len and were skipped",
                self.skipped, self.inputs
            ));
        }
        lines
    }
}
