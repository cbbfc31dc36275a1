//! The stage comparison: base vs SFT vs DPO vs GRPO (or any labelled scores) on the same tasks,
//! as one table and one grouped bar chart, saved as `06_eval/summary.json`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{DbBenchScore, QuickScore};
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
                let rank = |s: &str| ORDER.iter().position(|o| *o == s).unwrap_or(ORDER.len());
                // Stable: known stages in pipeline order, the rest as added.
                self.rows.sort_by_key(|r| rank(&r.stage));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Conversation;
    use crate::data::Difficulty;
    use crate::env::Protocol;
    use crate::eval::{DbBenchResult, TaskResult};
    use crate::generate::EpisodeEnd;

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
