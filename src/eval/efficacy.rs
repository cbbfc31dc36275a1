//! What each stage buys: every stage of a run scored on the same held-out tasks (the test
//! split, for final comparisons), each compared with the stage it was trained from (else the
//! stage before it) by the exact sign test on the tasks only one of them solves. Written as `efficacy.json` (solved counts, mean graded
//! reward, won / lost / p per comparison) and, for an experiment that is kept, as a dated report
//! (`efficacy-<date>.md` with its JSON: settings, commit, every task's outcome per stage, chart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::quick::{QuickConfig, QuickScore, compare, kind_chart, kind_table};
use crate::prompts::Split;
use crate::table::Table;

/// Tasks every stage played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Synthetic DB tasks.
    pub db: usize,
    /// Household games.
    pub household: usize,
}

/// One stage's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageOutcome {
    /// DB tasks solved.
    pub db_solved: usize,
    /// Household games solved.
    pub household_solved: usize,
    /// The mean graded score over every episode (none for scores saved before it was recorded).
    pub mean_reward: Option<f64>,
}

/// A stage against the one it was trained from (or the one before it), task by task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStep {
    /// The later stage.
    pub better: String,
    /// The stage it started from (or, when that is unknown, the stage before it).
    pub than: String,
    /// Tasks only the later stage solves.
    pub won: usize,
    /// Tasks only the earlier stage solves.
    pub lost: usize,
    /// Exact two-sided sign test on `won` against `lost`.
    pub p_value: f64,
}

/// Every stage on the same tasks, and each compared with the one it started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Efficacy {
    /// Tasks each stage played.
    pub tasks: TaskCounts,
    /// The split they come from.
    pub split: Split,
    /// The stage GRPO started from (`sft`, `dpo`, `rft`), when the run trained GRPO.
    pub grpo_start: Option<String>,
    /// The stages in pipeline order.
    pub order: Vec<String>,
    /// Each stage's numbers, by label.
    pub stages: BTreeMap<String, StageOutcome>,
    /// One comparison per stage after the first: with the stage it started from when that
    /// was scored, else with the stage before it.
    pub comparisons: Vec<StageStep>,
}

impl Efficacy {
    /// From scores of the same tasks in pipeline order; each is compared with the stage it
    /// started from (`starts`: stage → start, e.g. `grpo` → `dpo`) when that was scored, else
    /// with the one before it.
    pub fn new(scores: &[&QuickScore], starts: &BTreeMap<String, String>) -> Result<Self> {
        let Some(first) = scores.first() else {
            return Err(Error::Batch("no scores to compare".into()));
        };
        if let Some(other) = scores.iter().find(|s| s.split != first.split) {
            return Err(Error::Batch(format!(
                "{} played the {} split and {} the {} split",
                first.label,
                first.split.name(),
                other.label,
                other.split.name()
            )));
        }
        let stages = scores
            .iter()
            .map(|s| {
                let outcome = StageOutcome {
                    db_solved: s.solved_of("db").0,
                    household_solved: s.solved_of("household").0,
                    mean_reward: Some(s.mean_reward()).filter(|m| m.is_finite()),
                };
                (s.label.clone(), outcome)
            })
            .collect();
        let comparisons = scores
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, later)| {
                let earlier = starts
                    .get(&later.label)
                    .and_then(|start| scores[..i].iter().find(|s| &s.label == start))
                    .unwrap_or(&scores[i - 1]);
                let c = compare(earlier, later)?;
                Ok(StageStep {
                    better: c.b,
                    than: c.a,
                    won: c.only_b,
                    lost: c.only_a,
                    p_value: c.p_value,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            tasks: TaskCounts {
                db: first.solved_of("db").1,
                household: first.solved_of("household").1,
            },
            split: first.split,
            grpo_start: starts.get("grpo").cloned(),
            order: scores.iter().map(|s| s.label.clone()).collect(),
            stages,
            comparisons,
        })
    }

    /// One row per stage: DB and household solved (and %), mean graded reward.
    pub fn table(&self) -> Result<Table> {
        let rate = |k: usize, n: usize| {
            if n == 0 {
                "–".to_string()
            } else {
                format!("{k} / {n} ({:.1} %)", 100.0 * k as f64 / n as f64)
            }
        };
        let mut t = Table::new(["stage", "DB solved", "household solved", "mean reward"])
            .with_title(format!(
                "every stage on the {} split's {} DB tasks and {} household games",
                self.split.name(),
                self.tasks.db,
                self.tasks.household
            ));
        for label in &self.order {
            if let Some(s) = self.stages.get(label) {
                t.push_row([
                    label.clone(),
                    rate(s.db_solved, self.tasks.db),
                    rate(s.household_solved, self.tasks.household),
                    s.mean_reward
                        .map_or_else(|| "–".into(), |m| format!("{m:.3}")),
                ])?;
            }
        }
        Ok(t)
    }

    /// One row per consecutive pair: tasks won and lost, and the sign test's p.
    pub fn comparisons_table(&self) -> Result<Table> {
        let mut t = Table::new(["stage", "than", "won", "lost", "sign test p"])
            .with_title("each stage against the stage it started from, task by task");
        for c in &self.comparisons {
            t.push_row([
                c.better.clone(),
                c.than.clone(),
                c.won.to_string(),
                c.lost.to_string(),
                format_p(c.p_value),
            ])?;
        }
        Ok(t)
    }

    /// Writes the experiment's dated report into `dir`: `efficacy-<date>.md`, `.json` (this
    /// comparison, the settings, the commit and every task's outcome per stage) and `.svg`
    /// (solved per task kind), and this comparison as `efficacy.json`, the latest. `scores` are
    /// the ones it was made from, `command` what reproduces it. Returns the Markdown file.
    pub fn write_report(
        &self,
        dir: &Path,
        scores: &[&QuickScore],
        config: &QuickConfig,
        command: &str,
    ) -> Result<PathBuf> {
        let date = today();
        let commit = commit();
        let stem = format!("efficacy-{date}");
        let tasks: Vec<serde_json::Value> = match scores.first() {
            Some(first) => (0..first.results.len())
                .map(|i| {
                    let r = &first.results[i];
                    let solved: BTreeMap<&str, bool> = scores
                        .iter()
                        .filter_map(|s| Some((s.label.as_str(), s.results.get(i)?.success)))
                        .collect();
                    serde_json::json!({"source": r.source, "kind": r.kind, "solved": solved})
                })
                .collect(),
            None => Vec::new(),
        };
        let seconds: BTreeMap<&str, f64> = scores
            .iter()
            .map(|s| (s.label.as_str(), s.seconds))
            .collect();
        crate::io::write_json(
            &dir.join(format!("{stem}.json")),
            &serde_json::json!({
                "date": date,
                "commit": commit,
                "code": env!("ABT_SOURCE_DIGEST"),
                "command": command,
                "settings": crate::table::shortest_floats(
                    serde_json::to_value(config).map_err(|e| Error::Batch(e.to_string()))?
                ),
                "efficacy": self,
                "seconds": seconds,
                "tasks": tasks,
            }),
        )?;
        crate::io::write_json(&dir.join("efficacy.json"), self)?;
        let chart = kind_chart(scores)?;
        chart.save(dir.join(format!("{stem}.svg")))?;
        let settings = crate::data::summary::settings_table("settings", config);
        let markdown = format!(
            "# What each stage buys: {date}\n\n\
             Checkout at commit `{commit}` when written (code digest `{code}`); reproduce with \
             `{command}`. Greedy decoding; every stage plays \
             the same held-out tasks. A comparison counts only the tasks exactly one of the two \
             stages solves; the exact two-sided sign test says how likely a split at least that \
             uneven is if neither were better. Data: [`{stem}.json`]({stem}.json).\n\n\
             {}\n{}\n{}\n![solved per task kind]({stem}.svg)\n\n{}",
            self.table()?.to_markdown(),
            self.comparisons_table()?.to_markdown(),
            kind_table(scores)?.to_markdown(),
            settings.to_markdown(),
            code = env!("ABT_SOURCE_DIGEST"),
        );
        let path = dir.join(format!("{stem}.md"));
        crate::io::write_atomic(&path, markdown.as_bytes())?;
        Ok(path)
    }
}

/// A p-value to three decimals, or in scientific notation below 0.001.
fn format_p(p: f64) -> String {
    if p < 1e-3 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    crate::chat::template::strftime(secs, "%Y-%m-%d")
}

/// The checkout's commit (`git rev-parse --short HEAD`, `+dirty` when files differ), or
/// `unknown` outside a git checkout.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+dirty") } else { hash }
        }
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_p_values_keep_their_digits() {
        assert_eq!(format_p(0.25), "0.250");
        assert_eq!(format_p(2.0 * 0.5f64.powi(31)), "9.3e-10");
        assert_eq!(today().len(), 10);
    }
}
