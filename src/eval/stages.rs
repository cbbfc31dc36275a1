//! The stage comparison: base vs SFT vs DPO vs GRPO (or any labelled scores) on the same tasks,
//! as one table and one grouped bar chart, saved as `06_eval/summary.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{Fingerprint, reuse_or_save};
use crate::config::RunContext;
use crate::error::{Error, Result};
use crate::eval::{DbBenchConfig, DbBenchScore, ErrorReport, QuickScore};
use crate::io::{read_json, write_json};
use crate::model::{Decoder, Mode};
use crate::phases::Phase;
use crate::table::Table;

/// The stages in pipeline order; other labels follow in the order they were added.
const ORDER: [&str; 4] = ["base", "sft", "dpo", "grpo"];

/// One stage's numbers (absent where it was not evaluated that way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// The score's label (`base`, `sft`, …).
    pub stage: String,
    /// Quick score: DB tasks (solved, played).
    pub quick_db: Option<(usize, usize)>,
    /// Quick score: household games (solved, played).
    pub quick_household: Option<(usize, usize)>,
    /// DB Bench: AgentBench's `overall_cat_accuracy`.
    pub dbbench_overall: Option<f64>,
    /// DB Bench: items played.
    pub dbbench_items: Option<usize>,
}

impl StageRow {
    fn new(stage: &str) -> Self {
        Self {
            stage: stage.into(),
            quick_db: None,
            quick_household: None,
            dbbench_overall: None,
            dbbench_items: None,
        }
    }
}

/// Stages compared on the same tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageComparison {
    /// One row per stage, in pipeline order.
    pub rows: Vec<StageRow>,
}

fn share((solved, played): (usize, usize)) -> f64 {
    if played == 0 {
        0.0
    } else {
        solved as f64 / played as f64
    }
}

impl StageComparison {
    fn row(&mut self, stage: &str) -> &mut StageRow {
        let at = match self.rows.iter().position(|r| r.stage == stage) {
            Some(i) => i,
            None => {
                self.rows.push(StageRow::new(stage));
                // Stable: known stages in pipeline order, the rest as added.
                self.rows.sort_by_key(|r| stage_rank(&r.stage));
                self.rows
                    .iter()
                    .position(|r| r.stage == stage)
                    .unwrap_or(self.rows.len() - 1)
            }
        };
        &mut self.rows[at]
    }

    /// Adds a quick score under its label; every quick score must cover the same tasks.
    pub fn add_quick(&mut self, score: &QuickScore) -> Result<()> {
        let count = |db: bool| {
            let picked = score
                .results
                .iter()
                .filter(|r| r.source.starts_with("db") == db);
            let (mut solved, mut played) = (0, 0);
            for r in picked {
                solved += usize::from(r.success);
                played += 1;
            }
            (solved, played)
        };
        let (db, household) = (count(true), count(false));
        let differs = |r: &&StageRow| {
            r.quick_db.is_some_and(|c| c.1 != db.1)
                || r.quick_household.is_some_and(|c| c.1 != household.1)
        };
        if let Some(other) = self.rows.iter().find(differs) {
            return Err(Error::Batch(format!(
                "quick score {} played {} DB and {} household tasks, {} played {:?} and {:?}",
                score.label,
                db.1,
                household.1,
                other.stage,
                other.quick_db.map(|c| c.1),
                other.quick_household.map(|c| c.1)
            )));
        }
        let row = self.row(&score.label);
        row.quick_db = Some(db);
        row.quick_household = Some(household);
        Ok(())
    }

    /// Adds a DB Bench score under its label; every DB Bench score must cover as many items.
    pub fn add_dbbench(&mut self, score: &DbBenchScore) -> Result<()> {
        let items = score.results.len();
        if let Some(other) = self
            .rows
            .iter()
            .find(|r| r.dbbench_items.is_some_and(|n| n != items))
        {
            return Err(Error::Batch(format!(
                "DB Bench score {} has {items} items, {} has {:?}",
                score.label, other.stage, other.dbbench_items
            )));
        }
        let row = self.row(&score.label);
        row.dbbench_overall = Some(score.metrics().overall_cat_accuracy());
        row.dbbench_items = Some(items);
        Ok(())
    }

    /// One row per stage: quick score DB and household (solved / played and %), DB Bench.
    pub fn table(&self) -> Result<Table> {
        let mut t = Table::new([
            "stage",
            "quick DB",
            "quick household",
            "DB Bench overall_cat_accuracy",
        ])
        .with_title("stage comparison");
        let cell = |c: Option<(usize, usize)>| {
            c.map_or_else(
                || "–".to_string(),
                |c| format!("{} / {} ({:.1} %)", c.0, c.1, 100.0 * share(c)),
            )
        };
        for r in &self.rows {
            t.push_row([
                r.stage.clone(),
                cell(r.quick_db),
                cell(r.quick_household),
                r.dbbench_overall.map_or_else(
                    || "–".to_string(),
                    |a| format!("{:.1} % of {}", 100.0 * a, r.dbbench_items.unwrap_or(0)),
                ),
            ])?;
        }
        Ok(t)
    }

    /// Grouped bars: the three measures (%), one series per stage.
    pub fn chart(&self) -> Result<crate::plot::Svg> {
        let mut chart = crate::plot::BarChart::new("stage comparison (%)").categories([
            "quick DB solved",
            "quick household solved",
            "DB Bench overall_cat_accuracy",
        ]);
        for r in &self.rows {
            chart = chart.series(
                r.stage.clone(),
                [
                    r.quick_db.map_or(0.0, share),
                    r.quick_household.map_or(0.0, share),
                    r.dbbench_overall.unwrap_or(0.0),
                ]
                .map(|x| 100.0 * x),
            );
        }
        chart.render()
    }
}

/// Where a run keeps the quick score labelled `label`: `<run>/eval/quick_<label>.json`.
pub fn quick_score_path(run_dir: &Path, label: &str) -> PathBuf {
    run_dir.join("eval").join(format!("quick_{label}.json"))
}

/// Where a run keeps the DB Bench score labelled `label`: `<run>/06_eval/dbbench_<label>.json`.
pub fn dbbench_score_path(run_dir: &Path, label: &str) -> PathBuf {
    run_dir
        .join(Phase::Eval.dir_name())
        .join(format!("dbbench_{label}.json"))
}

/// Saves a DB Bench score at its place in the run, with the items file it played, its
/// metrics under AgentBench's names and its failures by cause; returns the path.
pub fn save_dbbench(run_dir: &Path, items: &Path, score: &DbBenchScore) -> Result<PathBuf> {
    let path = dbbench_score_path(run_dir, &score.label);
    write_json(
        &path,
        &serde_json::json!({
            "items": items,
            "metrics": score.metrics().agentbench(),
            "errors": score.errors(),
            "score": score,
        }),
    )?;
    Ok(path)
}

/// Reads a DB Bench score saved by [`save_dbbench`].
pub fn read_dbbench(path: &Path) -> Result<DbBenchScore> {
    let saved: serde_json::Value = read_json(path)?;
    serde_json::from_value(saved["score"].clone()).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A stage's DB Bench score in a run (`<run>/06_eval/dbbench_<label>.json`): the saved one if
/// the same model (base model and `adapter` files) played the same items file with the same
/// settings, else `play`ed now and saved with [`save_dbbench`] and its fingerprint (see
/// [`crate::cache`]). Returns the score and its path.
pub fn saved_dbbench(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    items: &Path,
    config: &DbBenchConfig,
    play: impl FnOnce() -> Result<DbBenchScore>,
) -> Result<(DbBenchScore, PathBuf)> {
    let fingerprint = Fingerprint::new()
        .value("dbbench config", config)?
        .file("items", items)?
        .model(ctx.profile.base_model(), adapter)?;
    let path = dbbench_score_path(&ctx.run_dir, label);
    let score = reuse_or_save(&path, &fingerprint, read_dbbench, play, |score| {
        if score.label != label {
            return Err(Error::Batch(format!(
                "DB Bench score labelled {} saved as {label}",
                score.label
            )));
        }
        save_dbbench(&ctx.run_dir, items, score).map(|_| ())
    })?;
    Ok((score, path))
}

/// The stages whose adapters a run holds, in pipeline order: `base` (no adapter) and each of
/// `sft`, `dpo`, `grpo` whose `adapter/` directory exists.
pub fn stage_adapters(run_dir: &Path) -> Vec<(String, Option<PathBuf>)> {
    let mut stages = vec![("base".to_string(), None)];
    for (stage, phase) in [
        ("sft", Phase::Sft),
        ("dpo", Phase::Dpo),
        ("grpo", Phase::Grpo),
    ] {
        let dir = run_dir.join(phase.dir_name()).join("adapter");
        if dir.join("adapter_config.json").is_file() {
            stages.push((stage.to_string(), Some(dir)));
        }
    }
    stages
}

/// The model of a stage: the profile's base model with the stage's adapter on
/// (`Mode::Eval`), or without one the base model itself (`Mode::Reference`).
pub fn stage_model(ctx: &RunContext, adapter: Option<&Path>) -> Result<(Decoder, Mode)> {
    let mut model = crate::phases::load_base(ctx)?;
    let mode = match adapter {
        Some(dir) => {
            model.load_adapter(dir)?;
            Mode::Eval
        }
        None => Mode::Reference,
    };
    Ok((model, mode))
}

/// Every score saved in a run: quick scores and DB Bench scores, in pipeline order.
#[derive(Debug, Clone, Default)]
pub struct RunScores {
    /// `<run>/eval/quick_*.json`.
    pub quick: Vec<QuickScore>,
    /// `<run>/06_eval/dbbench_*.json`.
    pub dbbench: Vec<DbBenchScore>,
}

/// The `.json` files in `dir` whose names start with `prefix`, sorted; none if `dir` is absent.
fn scores_in(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn stage_rank(label: &str) -> usize {
    ORDER
        .iter()
        .position(|o| *o == label)
        .unwrap_or(ORDER.len())
}

impl RunScores {
    /// Reads every score of the run in `run_dir`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let mut quick = Vec::new();
        for path in scores_in(&run_dir.join("eval"), "quick_")? {
            quick.push(read_json::<QuickScore>(&path)?);
        }
        let mut dbbench = Vec::new();
        for path in scores_in(&run_dir.join(Phase::Eval.dir_name()), "dbbench_")? {
            dbbench.push(read_dbbench(&path)?);
        }
        quick.sort_by_key(|s: &QuickScore| stage_rank(&s.label));
        dbbench.sort_by_key(|s: &DbBenchScore| stage_rank(&s.label));
        Ok(Self { quick, dbbench })
    }

    /// Whether the run holds no score at all.
    pub fn is_empty(&self) -> bool {
        self.quick.is_empty() && self.dbbench.is_empty()
    }

    /// The stage comparison of every score.
    pub fn comparison(&self) -> Result<StageComparison> {
        let mut comparison = StageComparison::default();
        for score in &self.quick {
            comparison.add_quick(score)?;
        }
        for score in &self.dbbench {
            comparison.add_dbbench(score)?;
        }
        Ok(comparison)
    }

    /// AgentBench's DB Bench metrics, one row per metric and one column per stage.
    pub fn dbbench_table(&self) -> Result<Table> {
        let mut header = vec!["metric".to_string()];
        header.extend(self.dbbench.iter().map(|s| s.label.clone()));
        let metrics: Vec<_> = self
            .dbbench
            .iter()
            .map(|s| s.metrics().agentbench())
            .collect();
        let items = self.dbbench.first().map_or(0, |s| s.results.len());
        let mut t = Table::new(header).with_title(format!("DB Bench · {items} items · accuracy"));
        if let Some(first) = metrics.first() {
            for name in first.keys() {
                let mut row = vec![name.clone()];
                row.extend(metrics.iter().map(|m| {
                    m.get(name)
                        .and_then(serde_json::Value::as_f64)
                        .map_or_else(|| "–".to_string(), |v| format!("{:.1} %", 100.0 * v))
                }));
                t.push_row(row)?;
            }
        }
        Ok(t)
    }

    /// Why the quick scores' failed episodes failed, one report per stage.
    pub fn quick_errors(&self) -> Vec<(String, ErrorReport)> {
        self.quick
            .iter()
            .map(|s| (s.label.clone(), s.errors()))
            .collect()
    }

    /// Why the DB Bench scores' failed items failed, one report per stage.
    pub fn dbbench_errors(&self) -> Vec<(String, ErrorReport)> {
        self.dbbench
            .iter()
            .map(|s| (s.label.clone(), s.errors()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Conversation;
    use crate::env::Protocol;
    use crate::eval::{DbBenchResult, TaskResult};
    use crate::generate::EpisodeEnd;
    use crate::prompts::Difficulty;

    fn quick(label: &str, db: &[bool], household: &[bool]) -> QuickScore {
        let result = |source: &str, success: bool| TaskResult {
            source: source.into(),
            kind: "k".into(),
            difficulty: Difficulty::Easy,
            success,
            reward: f64::from(u8::from(success)),
            turns: 1,
            end: EpisodeEnd::Done,
            conversation: Conversation::new(vec![]),
            prompt_messages: 0,
        };
        QuickScore {
            label: label.into(),
            results: db
                .iter()
                .map(|&s| result("db/synthetic_sql", s))
                .chain(household.iter().map(|&s| result("household", s)))
                .collect(),
            seconds: 1.0,
            protocol: Protocol::Text,
        }
    }

    fn dbbench(label: &str, correct: &[(&str, bool)]) -> DbBenchScore {
        DbBenchScore {
            label: label.into(),
            protocol: Protocol::Text,
            results: correct
                .iter()
                .map(|&(kind, correct)| DbBenchResult {
                    kind: kind.into(),
                    correct,
                    valid: true,
                    turns: 1,
                    end: EpisodeEnd::Done,
                    conversation: Conversation::new(vec![]),
                    prompt_messages: 0,
                })
                .collect(),
            seconds: 1.0,
        }
    }

    #[test]
    fn stages_are_ordered_merged_and_checked() {
        let mut c = StageComparison::default();
        c.add_quick(&quick("grpo", &[true, true], &[false]))
            .unwrap();
        c.add_quick(&quick("base", &[false, false], &[false]))
            .unwrap();
        c.add_quick(&quick("sft", &[true, false], &[true])).unwrap();
        c.add_dbbench(&dbbench(
            "sft",
            &[("counting", true), ("INSERT", false), ("UPDATE", true)],
        ))
        .unwrap();
        let stages: Vec<&str> = c.rows.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(stages, ["base", "sft", "grpo"]);
        let sft = &c.rows[1];
        assert_eq!(sft.quick_db, Some((1, 2)));
        assert_eq!(sft.quick_household, Some((1, 1)));
        assert!((sft.dbbench_overall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // Different task sets are refused.
        assert!(c.add_quick(&quick("dpo", &[true], &[false])).is_err());
        assert!(
            c.add_dbbench(&dbbench("dpo", &[("counting", true)]))
                .is_err()
        );
        let t = c.table().unwrap().to_string();
        assert!(
            t.contains("1 / 2 (50.0 %)") && t.contains("66.7 % of 3"),
            "{t}"
        );
        assert!(c.chart().is_ok());
    }
}
