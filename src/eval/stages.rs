//! The stage comparison: base vs SFT vs DPO vs GRPO (or any labelled scores) on the same tasks,
//! as one table and one grouped bar chart, saved as `06_eval/summary.json`: the held-out test
//! split's scores, the quick (dev split) scores and DB Bench, whichever the run holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{Fingerprint, reuse_or_save};
use crate::config::RunContext;
use crate::error::{Error, Result};
use crate::eval::{DbBenchConfig, DbBenchScore, Efficacy, ErrorReport, QuickScore};
use crate::io::{read_json, write_json};
use crate::model::{Decoder, Mode};
use crate::phases::Phase;
use crate::prompts::Split;
use crate::table::Table;

/// The stages in pipeline order; other labels follow in the order they were added.
const ORDER: [&str; 5] = ["base", "sft", "dpo", "rft", "grpo"];

/// One stage's numbers (absent where it was not evaluated that way).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    /// The score's label (`base`, `sft`, …).
    pub stage: String,
    /// Held-out test split: DB tasks (solved, played).
    #[serde(default)]
    pub heldout_db: Option<(usize, usize)>,
    /// Held-out test split: household games (solved, played).
    #[serde(default)]
    pub heldout_household: Option<(usize, usize)>,
    /// Held-out test split: the mean graded reward.
    #[serde(default)]
    pub heldout_reward: Option<f64>,
    /// Quick score (dev split): DB tasks (solved, played).
    pub quick_db: Option<(usize, usize)>,
    /// Quick score (dev split): household games (solved, played).
    pub quick_household: Option<(usize, usize)>,
    /// Quick score (dev split): the mean graded reward.
    #[serde(default)]
    pub quick_reward: Option<f64>,
    /// DB Bench: AgentBench's `overall_cat_accuracy`.
    pub dbbench_overall: Option<f64>,
    /// DB Bench: items played.
    pub dbbench_items: Option<usize>,
}

impl StageRow {
    fn new(stage: &str) -> Self {
        Self {
            stage: stage.into(),
            heldout_db: None,
            heldout_household: None,
            heldout_reward: None,
            quick_db: None,
            quick_household: None,
            quick_reward: None,
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

/// A table column: its name and a stage's cell (none where the stage lacks the measure).
type Column = (&'static str, fn(&StageRow) -> Option<String>);

/// A chart category: its name and a stage's share (none where the stage lacks the measure).
type Measure = (&'static str, fn(&StageRow) -> Option<f64>);

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

    /// Adds a quick score under its label, as the test or dev split's by its split; every score
    /// of a split must cover the same tasks.
    pub fn add_quick(&mut self, score: &QuickScore) -> Result<()> {
        let (db, household) = (score.solved_of("db"), score.solved_of("household"));
        let split = score.split;
        let counts = move |r: &StageRow| match split {
            Split::Test => (r.heldout_db, r.heldout_household),
            Split::Dev => (r.quick_db, r.quick_household),
        };
        let differs = |r: &&StageRow| {
            let (d, h) = counts(r);
            d.is_some_and(|c| c.1 != db.1) || h.is_some_and(|c| c.1 != household.1)
        };
        if let Some(other) = self.rows.iter().find(differs) {
            let (d, h) = counts(other);
            return Err(Error::Batch(format!(
                "{} ({} split) played {} DB and {} household tasks, {} played {:?} and {:?}",
                score.label,
                split.name(),
                db.1,
                household.1,
                other.stage,
                d.map(|c| c.1),
                h.map(|c| c.1)
            )));
        }
        let row = self.row(&score.label);
        let reward = Some(score.mean_reward()).filter(|m| m.is_finite());
        match split {
            Split::Test => {
                (row.heldout_db, row.heldout_household, row.heldout_reward) =
                    (Some(db), Some(household), reward);
            }
            Split::Dev => {
                (row.quick_db, row.quick_household, row.quick_reward) =
                    (Some(db), Some(household), reward);
            }
        }
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

    /// The measures some stage has, each as a column name and a stage's cell.
    fn columns(&self) -> Vec<Column> {
        fn cell(c: Option<(usize, usize)>) -> Option<String> {
            c.map(|c| format!("{} / {} ({:.1} %)", c.0, c.1, 100.0 * share(c)))
        }
        let all: [Column; 7] = [
            ("held-out DB", |r| cell(r.heldout_db)),
            ("held-out household", |r| cell(r.heldout_household)),
            ("held-out mean reward", |r| {
                r.heldout_reward.map(|x| format!("{x:.3}"))
            }),
            ("quick DB", |r| cell(r.quick_db)),
            ("quick household", |r| cell(r.quick_household)),
            ("quick mean reward", |r| {
                r.quick_reward.map(|x| format!("{x:.3}"))
            }),
            ("DB Bench overall_cat_accuracy", |r| {
                r.dbbench_overall
                    .map(|a| format!("{:.1} % of {}", 100.0 * a, r.dbbench_items.unwrap_or(0)))
            }),
        ];
        all.into_iter()
            .filter(|(_, f)| self.rows.iter().any(|r| f(r).is_some()))
            .collect()
    }

    /// One row per stage: the held-out test split's and the quick score's DB and household
    /// solved (solved / played and %) and mean reward, and DB Bench — the measures the run has.
    pub fn table(&self) -> Result<Table> {
        let columns = self.columns();
        let mut header = vec!["stage"];
        header.extend(columns.iter().map(|(name, _)| *name));
        let mut t = Table::new(header).with_title("stage comparison");
        for r in &self.rows {
            let mut row = vec![r.stage.clone()];
            row.extend(
                columns
                    .iter()
                    .map(|(_, f)| f(r).unwrap_or_else(|| "–".into())),
            );
            t.push_row(row)?;
        }
        Ok(t)
    }

    /// Grouped bars: the success measures the run has (%), one series per stage.
    pub fn chart(&self) -> Result<crate::plot::Svg> {
        let measures: [Measure; 5] = [
            ("held-out DB solved", |r| r.heldout_db.map(share)),
            ("held-out household solved", |r| {
                r.heldout_household.map(share)
            }),
            ("quick DB solved", |r| r.quick_db.map(share)),
            ("quick household solved", |r| r.quick_household.map(share)),
            ("DB Bench overall_cat_accuracy", |r| r.dbbench_overall),
        ];
        let present: Vec<_> = measures
            .into_iter()
            .filter(|(_, f)| self.rows.iter().any(|r| f(r).is_some()))
            .collect();
        let mut chart = crate::plot::BarChart::new("stage comparison (%)")
            .y_label("solved (%)")
            .categories(present.iter().map(|(name, _)| *name));
        for r in &self.rows {
            chart = chart.series(
                r.stage.clone(),
                present.iter().map(|(_, f)| 100.0 * f(r).unwrap_or(0.0)),
            );
        }
        chart.render()
    }
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

/// The training stages in pipeline order, each with its phase.
pub const TRAINED_STAGES: [(&str, Phase); 4] = [
    ("sft", Phase::Sft),
    ("dpo", Phase::Dpo),
    ("rft", Phase::Rft),
    ("grpo", Phase::Grpo),
];

/// The stages whose adapters a run holds, in pipeline order: `base` (no adapter) and each of
/// `sft`, `dpo`, `rft`, `grpo` whose `adapter/` directory exists.
pub fn stage_adapters(run_dir: &Path) -> Vec<(String, Option<PathBuf>)> {
    let mut stages = vec![("base".to_string(), None)];
    for (stage, phase) in TRAINED_STAGES {
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

/// Every score saved in a run: held-out test scores, quick (dev) scores and DB Bench scores,
/// each in pipeline order.
#[derive(Debug, Clone, Default)]
pub struct RunScores {
    /// The test split's scores (`<run>/eval/heldout_*.json`).
    pub heldout: Vec<QuickScore>,
    /// The dev split's quick scores (`<run>/eval/quick_*.json`).
    pub quick: Vec<QuickScore>,
    /// `<run>/06_eval/dbbench_*.json`.
    pub dbbench: Vec<DbBenchScore>,
}

/// The `.json` files in `dir` whose names start with `prefix`, sorted; none if `dir` is absent.
fn scores_in(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut files = crate::io::files_with_extension(dir, "json")?;
    files.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    });
    Ok(files)
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
        let eval = run_dir.join("eval");
        let mut scores = Vec::new();
        for path in [scores_in(&eval, "heldout_")?, scores_in(&eval, "quick_")?].concat() {
            scores.push(read_json::<QuickScore>(&path)?);
        }
        scores.sort_by_key(|s: &QuickScore| stage_rank(&s.label));
        let (heldout, quick) = scores.into_iter().partition(|s| s.split == Split::Test);
        let mut dbbench = Vec::new();
        for path in scores_in(&run_dir.join(Phase::Eval.dir_name()), "dbbench_")? {
            dbbench.push(read_dbbench(&path)?);
        }
        dbbench.sort_by_key(|s: &DbBenchScore| stage_rank(&s.label));
        Ok(Self {
            heldout,
            quick,
            dbbench,
        })
    }

    /// Whether the run holds no score at all.
    pub fn is_empty(&self) -> bool {
        self.heldout.is_empty() && self.quick.is_empty() && self.dbbench.is_empty()
    }

    /// The task scores the stages are judged on: the test split's when the run has any, else
    /// the quick (dev split) scores.
    pub fn decisive(&self) -> &[QuickScore] {
        if self.heldout.is_empty() {
            &self.quick
        } else {
            &self.heldout
        }
    }

    /// What each stage buys on the [`Self::decisive`] scores, each stage compared with the one
    /// it started from (`starts`: stage → start, as [`Efficacy::new`]).
    pub fn efficacy(&self, starts: &BTreeMap<String, String>) -> Result<Efficacy> {
        let scores: Vec<&QuickScore> = self.decisive().iter().collect();
        Efficacy::new(&scores, starts)
    }

    /// The stage comparison of every score.
    pub fn comparison(&self) -> Result<StageComparison> {
        let mut comparison = StageComparison::default();
        for score in self.heldout.iter().chain(&self.quick) {
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

    /// Why the [`Self::decisive`] scores' failed episodes failed, one report per stage.
    pub fn task_errors(&self) -> Vec<(String, ErrorReport)> {
        self.decisive()
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
        QuickScore {
            split: Split::Dev,
            ..heldout(label, db, household)
        }
    }

    fn heldout(label: &str, db: &[bool], household: &[bool]) -> QuickScore {
        let result = |source: &str, success: bool| TaskResult {
            source: source.into(),
            kind: "k".into(),
            difficulty: Difficulty::Easy,
            success,
            reward: f64::from(u8::from(success)),
            score: Some(f64::from(u8::from(success))),
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
            split: Split::Test,
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
        // Only the measures some stage has are columns.
        assert!(!t.contains("held-out"), "{t}");
        assert!(c.chart().is_ok());
        // Test-split scores go to their own columns and are checked among themselves.
        c.add_quick(&heldout("sft", &[true, true, false], &[true]))
            .unwrap();
        assert!(c.add_quick(&heldout("base", &[true], &[true])).is_err());
        let sft = &c.rows[1];
        assert_eq!(sft.heldout_db, Some((2, 3)));
        assert_eq!(sft.quick_db, Some((1, 2)));
        assert_eq!(sft.heldout_reward, Some(0.75));
        let t = c.table().unwrap().to_string();
        assert!(
            t.contains("held-out DB") && t.contains("2 / 3 (66.7 %)"),
            "{t}"
        );
    }

    #[test]
    fn efficacy_compares_each_stage_with_its_start_on_the_test_split() {
        // base solves task 0; sft solves 0, 1, 2 (and the game); dpo solves 1, 2, 3 and the game.
        let base = heldout("base", &[true, false, false, false], &[false]);
        let sft = heldout("sft", &[true, true, true, false], &[true]);
        let dpo = heldout("dpo", &[false, true, true, true], &[true]);
        let scores = RunScores {
            heldout: vec![base, sft, dpo],
            quick: vec![quick("base", &[true], &[])],
            dbbench: vec![],
        };
        let starts = BTreeMap::from([("grpo".to_string(), "dpo".to_string())]);
        let e = scores.efficacy(&starts).unwrap();
        assert_eq!((e.tasks.db, e.tasks.household), (4, 1));
        assert_eq!(e.order, ["base", "sft", "dpo"]);
        assert_eq!(e.stages["sft"].db_solved, 3);
        assert_eq!(e.stages["sft"].household_solved, 1);
        assert_eq!(e.stages["base"].mean_reward, Some(0.2));
        let steps: Vec<(&str, &str, usize, usize)> = e
            .comparisons
            .iter()
            .map(|c| (c.better.as_str(), c.than.as_str(), c.won, c.lost))
            .collect();
        assert_eq!(steps, [("sft", "base", 3, 0), ("dpo", "sft", 1, 1)]);
        // A stage is compared with the one it started from, not the one before it: an RFT
        // adapter trained on the SFT adapter is judged against SFT, beside DPO.
        let rft = heldout("rft", &[true, true, true, true], &[true]);
        let with_rft = [
            &scores.heldout[0],
            &scores.heldout[1],
            &scores.heldout[2],
            &rft,
        ];
        let starts = BTreeMap::from([("rft".to_string(), "sft".to_string())]);
        let judged = Efficacy::new(&with_rft, &starts).unwrap();
        let last = judged.comparisons.last().unwrap();
        assert_eq!((last.better.as_str(), last.than.as_str()), ("rft", "sft"));
        assert_eq!((last.won, last.lost), (1, 0));
        assert_eq!(judged.grpo_start, None);
        let starts = BTreeMap::from([("grpo".to_string(), "dpo".to_string())]);
        // 3 against 0: 2 · (1/2)³; 1 against 1: no evidence.
        assert!((e.comparisons[0].p_value - 0.25).abs() < 1e-12);
        assert_eq!(e.comparisons[1].p_value, 1.0);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["stages"]["dpo"]["db_solved"], 3);
        assert_eq!(json["comparisons"][0]["better"], "sft");
        assert_eq!(json["grpo_start"], "dpo");
        // Scores of different splits are not compared.
        let mixed = [&scores.heldout[0], &scores.quick[0]];
        assert!(Efficacy::new(&mixed, &starts).is_err());

        // The dated report: Markdown, its data and chart, and the latest `efficacy.json`.
        let dir = tempfile::tempdir().unwrap();
        let refs: Vec<&QuickScore> = scores.heldout.iter().collect();
        let config: crate::eval::QuickConfig = crate::presets::Presets::resolve(
            crate::config::Profile::Tiny,
            crate::config::Scale::Full,
        )
        .unwrap()
        .heldout;
        let md = e
            .write_report(dir.path(), &refs, &config, "abt heldout --run runs/x")
            .unwrap();
        let text = std::fs::read_to_string(&md).unwrap();
        assert!(text.contains("| sft | base | 3 | 0 | 0.250 |"), "{text}");
        assert!(text.contains("abt heldout --run runs/x"), "{text}");
        let latest: Efficacy = crate::io::read_json(&dir.path().join("efficacy.json")).unwrap();
        assert_eq!(latest, e);
        let data: serde_json::Value = crate::io::read_json(&md.with_extension("json")).unwrap();
        assert_eq!(data["tasks"].as_array().unwrap().len(), 5);
        assert_eq!(data["tasks"][3]["solved"]["dpo"], true);
        assert_eq!(data["settings"]["split"], "test");
        assert!(md.with_extension("svg").is_file());
    }
}
