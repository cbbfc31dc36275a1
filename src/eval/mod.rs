//! Evaluation: models playing held-out tasks in the toolkit's environments.
//!
//! - [`dbbench`]: DB Bench items (AgentBench's format) scored with AgentBench's metric.
//! - [`errors`]: why failed episodes failed (format, SQL errors, limits, loops, …).
//! - [`stages`]: base vs SFT vs DPO vs GRPO on the same tasks (table, chart, summary).
//! - [`efficacy`]: what each stage buys on the held-out test split, with a sign test per
//!   consecutive pair (`efficacy.json` and a dated report).
//! - [`quick`]: the quick held-out score of a phase (base vs adapter on synthetic SQL tasks and
//!   household games), with a paired significance test.

pub mod dbbench;
pub mod efficacy;
pub mod errors;
pub mod quick;
pub mod stages;

pub use dbbench::{
    DbBenchConfig, DbBenchMetrics, DbBenchResult, DbBenchScore, TypeAccuracy, dbbench_prompts,
    evaluate_dbbench,
};
pub use efficacy::{Efficacy, StageOutcome, StageStep, TaskCounts};
pub use errors::{ErrorReport, FailureKind, TaskShape, classify};
pub use quick::{
    PairedComparison, QuickConfig, QuickScore, TaskResult, compare, kind_chart, kind_table,
    quick_score, quick_score_path, saved_quick_score,
};
pub use stages::{
    RunScores, StageComparison, StageRow, TRAINED_STAGES, dbbench_score_path, read_dbbench,
    save_dbbench, saved_dbbench, stage_adapters, stage_model,
};
