//! Phase 06 (notebook `06_eval`, `abt quick-score`, `abt eval`, `abt compare`): every stage
//! of the run scored on the same held-out tasks, and the stages compared.

use std::path::{Path, PathBuf};

use crate::chat::Tokenizer;
use crate::config::RunContext;
use crate::env::db::DbItem;
use crate::error::{Error, Result};
use crate::eval::{
    DbBenchConfig, DbBenchScore, QuickConfig, QuickScore, RunScores, StageComparison,
    evaluate_dbbench, saved_dbbench, saved_quick_score, stage_model,
};

use super::Phase;

/// The quick score of the stage `label` (the base model, or the base with `adapter` loaded)
/// on `config`'s held-out tasks; reused from the run when the stage and settings are unchanged.
pub fn quick_score(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    config: &QuickConfig,
    tokenizer: &Tokenizer,
) -> Result<QuickScore> {
    saved_quick_score(ctx, label, adapter, config, || {
        let tasks = config.tasks()?;
        let (model, mode) = stage_model(ctx, adapter)?;
        crate::eval::quick_score(label, &model, tokenizer, &tasks, config, mode)
    })
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

/// Every score the run holds, compared stage by stage; the comparison is written to
/// `06_eval/summary.json` and `summary.txt`.
pub fn summarise(ctx: &RunContext) -> Result<(RunScores, StageComparison)> {
    let scores = RunScores::read(&ctx.run_dir)?;
    if scores.is_empty() {
        return Err(Error::Batch(format!(
            "no scores in {}: run `abt quick-score` or `abt eval` first (or notebook 06)",
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
    Ok((scores, comparison))
}
