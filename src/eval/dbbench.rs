//! DB Bench-style evaluation: a model plays DB Bench items (`dev.jsonl`, `standard.jsonl`, or
//! any file of that format) in [`crate::env::db`], greedily and batched, and is scored with
//! AgentBench's metric.
//!
//! AgentBench's `calculate_overall` reports an accuracy per item type (`other`, `counting`,
//! `comparison`, `ranking`, `aggregation-SUM/MIN/MAX/AVG`, `INSERT`, `UPDATE`), a `SELECT`
//! accuracy over every item that is neither INSERT nor UPDATE, and `overall_cat_accuracy`, the
//! mean of the SELECT, INSERT and UPDATE accuracies. A type with no item scores 0 there (with a
//! warning); [`TypeAccuracy::total`] says when that happened.
//!
//! ```ignore
//! let items = DbItem::read_jsonl(Path::new("dev.jsonl"))?;
//! let score = evaluate_dbbench("sft", &decoder, &tokenizer, &items, &DbBenchConfig::default(), Mode::Eval)?;
//! println!("{}", score.metrics().overall_cat_accuracy());
//! ```

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::chat::{Conversation, Tokenizer};
use crate::display::Show;
use crate::env::Protocol;
use crate::env::db::{DbItem, MAX_ROUNDS};
use crate::error::{Error, Result};
use crate::generate::{EpisodeEnd, PlayOptions, Sampling, play_tasks};
use crate::model::{Decoder, Mode};
use crate::prompts::{DbPrompt, Difficulty, Prompt};
use crate::table::Table;

/// AgentBench's query types, in the order of its metrics.
pub const QUERY_TYPES: [&str; 8] = [
    "other",
    "counting",
    "comparison",
    "ranking",
    "aggregation-SUM",
    "aggregation-MIN",
    "aggregation-MAX",
    "aggregation-AVG",
];

/// How the items are played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbBenchConfig {
    /// The protocol: v0.2 text or function calling.
    pub protocol: Protocol,
    /// Episodes played together (one generation batch).
    pub batch: usize,
    /// Most new tokens per reply (AgentBench's HTTP agent asks for 512).
    pub max_new_tokens: usize,
    /// Most replies per episode (AgentBench: 15 operations, then the answer).
    pub turns: usize,
    /// Most tokens per episode, prompt included.
    pub max_context: usize,
    /// Play only this many items, evenly spaced through the file (so every type keeps its
    /// share); all when `None`.
    #[serde(default)]
    pub max_items: Option<usize>,
}

impl Default for DbBenchConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::Text,
            batch: 8,
            max_new_tokens: 512,
            turns: MAX_ROUNDS + 1,
            max_context: 8192,
            max_items: None,
        }
    }
}

impl DbBenchConfig {
    /// The items played: all, or `max_items` evenly spaced ones.
    pub fn pick<'a>(&self, items: &'a [DbItem]) -> Vec<&'a DbItem> {
        crate::data::evenly_spaced(items, self.max_items)
    }
}

/// The prompts that play `items` in `protocol` (source `dbbench`, kind = the item's type).
pub fn dbbench_prompts(items: &[DbItem], protocol: Protocol) -> Result<Vec<Prompt>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let kind = item_type(item)
                .ok_or_else(|| Error::Batch(format!("DB Bench item {i} has no type")))?;
            let gold_sql = if item.is_modification() {
                item.label
                    .first()
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            } else {
                String::new()
            };
            Ok(Prompt::Db(Box::new(DbPrompt {
                source: "dbbench".into(),
                kind: kind.to_string(),
                difficulty: Difficulty::Medium,
                protocol,
                gold_sql,
                item: item.clone(),
            })))
        })
        .collect()
}

/// An item's type: the first entry of its `type` list.
fn item_type(item: &DbItem) -> Option<&str> {
    item.kind.first().map(String::as_str)
}

/// Correct / played of one of AgentBench's accuracies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeAccuracy {
    /// The metric's name without `_accuracy` (`counting`, `SELECT`, …).
    pub name: String,
    /// Items answered correctly.
    pub correct: usize,
    /// Items of this type.
    pub total: usize,
}

impl TypeAccuracy {
    /// The accuracy; 0 when no item has the type, as AgentBench reports it.
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// AgentBench's DB Bench metrics of a set of scored items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbBenchMetrics {
    /// The eight query types, then `SELECT`, `INSERT` and `UPDATE`, as AgentBench lists them.
    pub types: Vec<TypeAccuracy>,
}

impl DbBenchMetrics {
    /// The metrics of (item type, correct) pairs. Types outside AgentBench's (`DELETE`) count
    /// towards `SELECT` only, as there.
    pub fn of<'a>(results: impl IntoIterator<Item = (&'a str, bool)>) -> Self {
        let names = QUERY_TYPES
            .iter()
            .copied()
            .chain(["SELECT", "INSERT", "UPDATE"]);
        let mut types: Vec<TypeAccuracy> = names
            .map(|name| TypeAccuracy {
                name: name.into(),
                correct: 0,
                total: 0,
            })
            .collect();
        for (kind, correct) in results {
            let bucket = if matches!(kind, "INSERT" | "UPDATE") {
                kind
            } else {
                "SELECT"
            };
            for t in types
                .iter_mut()
                .filter(|t| t.name == kind || t.name == bucket)
            {
                t.total += 1;
                t.correct += usize::from(correct);
            }
        }
        Self { types }
    }

    /// One accuracy by AgentBench's name (`counting`, `SELECT`, …); `None` for an unknown name.
    pub fn accuracy(&self, name: &str) -> Option<f64> {
        self.types
            .iter()
            .find(|t| t.name == name)
            .map(TypeAccuracy::accuracy)
    }

    /// `overall_cat_accuracy`: the mean of the SELECT, INSERT and UPDATE accuracies.
    pub fn overall_cat_accuracy(&self) -> f64 {
        ["SELECT", "INSERT", "UPDATE"]
            .iter()
            .map(|n| self.accuracy(n).unwrap_or(0.0))
            .sum::<f64>()
            / 3.0
    }

    /// The metrics as AgentBench's `calculate_overall` names them (`counting_accuracy`, …,
    /// `overall_cat_accuracy`).
    pub fn agentbench(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out: serde_json::Map<String, serde_json::Value> = self
            .types
            .iter()
            .map(|t| (format!("{}_accuracy", t.name), t.accuracy().into()))
            .collect();
        out.insert(
            "overall_cat_accuracy".into(),
            self.overall_cat_accuracy().into(),
        );
        out
    }

    /// A table: one row per type with items, correct and accuracy, then the overall metric.
    pub fn table(&self, title: &str) -> Result<Table> {
        let mut t = Table::new(["type", "items", "correct", "accuracy"]).with_title(title);
        for a in &self.types {
            t.push_row([
                a.name.clone(),
                a.total.to_string(),
                a.correct.to_string(),
                if a.total == 0 {
                    "–".into()
                } else {
                    format!("{:.1} %", 100.0 * a.accuracy())
                },
            ])?;
        }
        t.push_row([
            "overall_cat_accuracy".into(),
            String::new(),
            String::new(),
            format!("{:.1} %", 100.0 * self.overall_cat_accuracy()),
        ])?;
        Ok(t)
    }
}

/// How one item went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbBenchResult {
    /// The item's type.
    pub kind: String,
    /// Scored correct as AgentBench scores it.
    pub correct: bool,
    /// Whether every reply kept to the protocol.
    pub valid: bool,
    /// Replies given.
    pub turns: usize,
    /// Why the episode ended.
    pub end: EpisodeEnd,
    /// The whole conversation.
    pub conversation: Conversation,
    /// Messages of the opening.
    pub prompt_messages: usize,
}

/// A model's results on a DB Bench file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbBenchScore {
    /// Which model (`base`, `sft`, …).
    pub label: String,
    /// The protocol played.
    pub protocol: Protocol,
    /// One result per item, in file order.
    pub results: Vec<DbBenchResult>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl DbBenchScore {
    /// AgentBench's metrics of these results.
    pub fn metrics(&self) -> DbBenchMetrics {
        DbBenchMetrics::of(self.results.iter().map(|r| (r.kind.as_str(), r.correct)))
    }

    /// Why the failed items failed (indices into `results`).
    pub fn errors(&self) -> crate::eval::ErrorReport {
        let failed = self.results.iter().enumerate().filter(|(_, r)| !r.correct);
        crate::eval::ErrorReport::classify_all(
            self.protocol,
            self.results.len(),
            failed.map(|(i, r)| {
                let task = crate::eval::TaskShape::db_kind(&r.kind);
                (
                    i,
                    task,
                    &r.conversation.messages[..],
                    r.prompt_messages,
                    r.end,
                )
            }),
        )
    }

    /// The metrics table, titled with the label.
    pub fn table(&self) -> Result<Table> {
        self.metrics().table(&format!(
            "DB Bench · {} · {:?} protocol · {} items",
            self.label,
            self.protocol,
            self.results.len()
        ))
    }
}

impl Show for DbBenchScore {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        match self.table() {
            Ok(t) => t.mime_bundle(),
            Err(e) => vec![("text/plain", e.to_string())],
        }
    }
}

/// Plays every item once with greedy decoding, `config.batch` episodes at a time, with the
/// decoder's adapters on (`Mode::Eval`) or off (`Mode::Reference`, the base model).
pub fn evaluate_dbbench(
    label: &str,
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    items: &[DbItem],
    config: &DbBenchConfig,
    mode: Mode,
) -> Result<DbBenchScore> {
    if items.is_empty() {
        return Err(Error::Batch("DB Bench: no items to evaluate".into()));
    }
    let start = Instant::now();
    let items: Vec<DbItem> = config.pick(items).into_iter().cloned().collect();
    let prompts = dbbench_prompts(&items, config.protocol)?;
    let options = PlayOptions {
        batch: config.batch,
        max_new_tokens: config.max_new_tokens,
        db_turns: config.turns,
        household_turns: 0,
        max_context: config.max_context,
        sampling: Sampling::greedy(),
        seed: 0,
        mode,
    };
    let played = play_tasks(
        decoder,
        tokenizer,
        &prompts,
        &options,
        &format!("DB Bench · {label}"),
    )?;
    let results = prompts
        .iter()
        .zip(played)
        .map(|(prompt, p)| DbBenchResult {
            kind: prompt.kind(),
            correct: p.score.success,
            valid: p.score.valid,
            turns: p.episode.turns(),
            end: p.episode.end,
            prompt_messages: p.episode.prompt_messages,
            conversation: p.episode.conversation,
        })
        .collect();
    Ok(DbBenchScore {
        label: label.into(),
        protocol: config.protocol,
        results,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_agentbench_buckets() {
        let m = DbBenchMetrics::of([
            ("counting", true),
            ("counting", false),
            ("ranking", true),
            ("INSERT", true),
            ("UPDATE", false),
            ("DELETE", true),
        ]);
        assert_eq!(m.accuracy("counting"), Some(0.5));
        assert_eq!(m.accuracy("ranking"), Some(1.0));
        // SELECT: every item that is neither INSERT nor UPDATE (DELETE included): 3 of 4.
        assert_eq!(m.accuracy("SELECT"), Some(0.75));
        assert_eq!(m.accuracy("INSERT"), Some(1.0));
        assert_eq!(m.accuracy("UPDATE"), Some(0.0));
        // Absent types score 0, as in AgentBench.
        assert_eq!(m.accuracy("aggregation-AVG"), Some(0.0));
        assert_eq!(m.accuracy("DELETE"), None);
        assert!((m.overall_cat_accuracy() - (0.75 + 1.0 + 0.0) / 3.0).abs() < 1e-12);
        let named = m.agentbench();
        assert_eq!(named.len(), 12);
        assert_eq!(named["SELECT_accuracy"], 0.75);
        assert!(m.table("t").is_ok());
    }
}
