//! Phase 06 (notebook `06_eval`, `abt quick-score`, `abt eval`, `abt compare`): every stage
//! of the run scored on the same held-out tasks, and the stages compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::env::db::DbItem;
use crate::error::{Error, Result};
use crate::eval::{
    DbBenchConfig, DbBenchScore, Efficacy, QuickConfig, QuickScore, RunScores, StageComparison,
    evaluate_dbbench, saved_dbbench, saved_quick_score, stage_model,
};
use crate::model::{Decoder, Mode};

use super::Phase;

/// The quick score of the stage `label` (the base model, or the base with `adapter` loaded)
/// on `config`'s held-out tasks; reused from the run when the stage and settings are unchanged,
/// and resumed from its saved parts when an earlier call was cut off. The model is loaded only
/// if some part is still to be played.
pub fn quick_score(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    config: &QuickConfig,
    tokenizer: &Tokenizer,
) -> Result<QuickScore> {
    let mut loaded: Option<(Decoder, Mode)> = None;
    saved_quick_score(ctx, label, adapter, config, |tasks| {
        let (model, mode) = match &mut loaded {
            Some(loaded) => loaded,
            None => loaded.insert(stage_model(ctx, adapter)?),
        };
        crate::eval::quick_score(label, model, tokenizer, tasks, config, *mode)
    })
}

/// The stage each trained stage started from (`grpo` → `dpo`, `rft` → `sft`, …), as recorded
/// beside its adapter; a stage trained from an adapter that is not one of the run's stages is
/// left out.
pub fn stage_starts(run_dir: &Path) -> BTreeMap<String, String> {
    let stages = crate::eval::stage_adapters(run_dir);
    crate::eval::TRAINED_STAGES
        .iter()
        .filter_map(|&(stage, phase)| {
            let start = super::started_from(run_dir, phase)?;
            let (from, _) = stages
                .iter()
                .find(|(_, adapter)| adapter.as_deref() == Some(start.as_path()))?;
            Some((stage.to_string(), from.clone()))
        })
        .collect()
}

/// The DB Bench score of the stage `label` on the items in `items` (AgentBench's JSON lines);
/// reused from the run when the stage, items and settings are unchanged. Returns the score and
/// the file it is kept in.
pub fn dbbench(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    items: &Path,
    config: &DbBenchConfig,
    tokenizer: &Tokenizer,
) -> Result<(DbBenchScore, PathBuf)> {
    saved_dbbench(ctx, label, adapter, items, config, || {
        let items = DbItem::read_jsonl(items)?;
        let (model, mode) = stage_model(ctx, adapter)?;
        evaluate_dbbench(label, &model, tokenizer, &items, config, mode)
    })
}

/// Every score of a run, compared stage by stage.
pub struct Summary {
    /// The scores.
    pub scores: RunScores,
    /// Every measure of every stage, in one table.
    pub comparison: StageComparison,
    /// Each stage against the stage it started from on the decisive task scores (none without
    /// any).
    pub efficacy: Option<Efficacy>,
}

/// Every score the run holds, compared stage by stage; the comparison is written to
/// `06_eval/summary.json` and `summary.txt`, and what each stage buys to `06_eval/efficacy.json`.
pub fn summarise(ctx: &RunContext) -> Result<Summary> {
    let scores = RunScores::read(&ctx.run_dir)?;
    if scores.is_empty() {
        return Err(Error::Batch(format!(
            "no scores in {}: run `abt heldout`, `abt quick-score` or `abt eval` first (or \
             notebook 06)",
            ctx.run_dir.display()
        )));
    }
    let comparison = scores.comparison()?;
    let out = ctx.phase_dir(Phase::Eval);
    crate::io::write_json(&out.join("summary.json"), &comparison)?;
    crate::io::write_atomic(
        &out.join("summary.txt"),
        comparison.table()?.to_string().as_bytes(),
    )?;
    let efficacy = if scores.decisive().is_empty() {
        None
    } else {
        let efficacy = scores.efficacy(&stage_starts(&ctx.run_dir))?;
        crate::io::write_json(&out.join("efficacy.json"), &efficacy)?;
        Some(efficacy)
    };
    Ok(Summary {
        scores,
        comparison,
        efficacy,
    })
}
