//! The SQL execution reward: run the completion's SQL and the gold SQL on the task's database
//! and compare results (method.md, 04).
//!
//! On the shared scale ([`super::grade`]): 1 when the results match (as multisets, or as lists
//! when the gold has `ORDER BY`); 0.5 × the Jaccard overlap of the result rows otherwise; −0.25
//! when the SQL fails to execute; −0.5 when no SQL can be found in the completion.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::grade::{DbVerdict, grade_db};
use crate::chat::parse_tool_calls;
use crate::env::db::protocol::{TextAction, parse_reply};
use crate::env::db::{Sandbox, SandboxLimits, SqlResult};
use crate::error::{Error, Result};
use crate::python::{PyValue, float_repr, str_repr};

/// How a completion fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlVerdict {
    /// Same result as the gold.
    Match,
    /// A different result (some rows may overlap).
    Partial,
    /// The SQL did not execute.
    ExecError,
    /// No SQL was found.
    NoSql,
}

/// A completion's reward with the reason.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SqlScore {
    /// The reward.
    pub value: f64,
    /// Why.
    pub verdict: SqlVerdict,
}

/// The SQL a completion proposes: an `Action: Operation` block, an `execute_sql` tool call,
/// any fenced code block, or the whole text when it is a bare statement.
pub fn extract_sql(completion: &str) -> Option<String> {
    if let TextAction::Operation(sql) = parse_reply(completion, true) {
        return Some(sql).filter(|s| !s.trim().is_empty());
    }
    let (_, calls) = parse_tool_calls(completion);
    if let Some(call) = calls.iter().find(|c| c.name == "execute_sql") {
        let query = call
            .parsed_arguments()
            .and_then(|a| a.as_object().and_then(|o| o.values().next().cloned()));
        if let Some(q) = query.as_ref().and_then(|q| q.as_str()) {
            return Some(q.to_string());
        }
    }
    if let Some(start) = completion.find("```") {
        let body = &completion[start + 3..];
        let body = body.strip_prefix("sql").unwrap_or(body);
        if let Some(end) = body.find("```") {
            let sql = body[..end].trim();
            if !sql.is_empty() {
                return Some(sql.replace('\n', " "));
            }
        }
    }
    let text = completion.trim();
    let head = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        head.as_str(),
        "SELECT" | "WITH" | "INSERT" | "UPDATE" | "DELETE"
    )
    .then(|| text.replace('\n', " "))
}

/// A row as a comparable key: numbers by value (1 == 1.0, as Python compares), text quoted.
fn row_key(row: &[PyValue]) -> String {
    row.iter()
        .map(|v| match v {
            PyValue::Int(i) => float_repr(*i as f64),
            PyValue::Float(f) => float_repr(*f),
            PyValue::Bool(b) => float_repr(f64::from(u8::from(*b))),
            PyValue::Str(s) => str_repr(s),
            other => other.repr(),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Whether the gold query fixes the row order.
fn ordered(gold_sql: &str) -> bool {
    gold_sql.to_ascii_lowercase().contains("order by")
}

/// Result rows compared as multisets (or lists), and their Jaccard overlap as sets.
fn compare(pred: &[String], gold: &[String], keep_order: bool) -> (bool, f64) {
    let same = if keep_order {
        pred == gold
    } else {
        let count = |rows: &[String]| {
            rows.iter().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.clone()).or_insert(0usize) += 1;
                m
            })
        };
        count(pred) == count(gold)
    };
    let a: BTreeSet<&String> = pred.iter().collect();
    let b: BTreeSet<&String> = gold.iter().collect();
    let union = a.union(&b).count();
    let jaccard = if union == 0 {
        1.0
    } else {
        a.intersection(&b).count() as f64 / union as f64
    };
    (same, jaccard)
}

/// Scores completions against gold SQL on a directory of SQLite databases laid out as
/// Spider's (`<dir>/<db_id>/<db_id>.sqlite`). Each database is loaded once into a read-only
/// sandbox; gold results are cached.
#[derive(Debug)]
pub struct SqlReward {
    dir: PathBuf,
    limits: SandboxLimits,
    sandboxes: HashMap<String, Sandbox>,
    gold: HashMap<(String, String), Vec<String>>,
}

impl SqlReward {
    /// A reward over the databases under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            limits: SandboxLimits {
                max_result_chars: 10_000_000,
                ..SandboxLimits::default()
            },
            sandboxes: HashMap::new(),
            gold: HashMap::new(),
        }
    }

    fn sandbox(&mut self, db_id: &str) -> Result<&Sandbox> {
        if !self.sandboxes.contains_key(db_id) {
            let path = self.dir.join(db_id).join(format!("{db_id}.sqlite"));
            let sandbox = Sandbox::from_file(&path, self.limits, true)?;
            self.sandboxes.insert(db_id.to_string(), sandbox);
        }
        Ok(&self.sandboxes[db_id])
    }

    fn rows(&mut self, db_id: &str, sql: &str) -> Result<std::result::Result<Vec<String>, String>> {
        Ok(match self.sandbox(db_id)?.execute(sql) {
            SqlResult::Rows { rows, .. } => Ok(rows.iter().map(|r| row_key(r)).collect()),
            SqlResult::Done(_) => Ok(Vec::new()),
            SqlResult::Error(e) => Err(e),
        })
    }

    /// The reward of `completion` for the question whose gold SQL is `gold_sql` on `db_id`.
    pub fn score(&mut self, db_id: &str, gold_sql: &str, completion: &str) -> Result<SqlScore> {
        let scored = |verdict: SqlVerdict, grade: DbVerdict| SqlScore {
            value: grade_db(grade).score,
            verdict,
        };
        let Some(sql) = extract_sql(completion) else {
            return Ok(scored(SqlVerdict::NoSql, DbVerdict::Invalid));
        };
        let key = (db_id.to_string(), gold_sql.to_string());
        if !self.gold.contains_key(&key) {
            let rows = self
                .rows(db_id, gold_sql)?
                .map_err(|e| Error::InvalidConfig {
                    source_name: format!("gold SQL on {db_id}"),
                    reason: format!("{gold_sql:?} does not execute: {e}"),
                })?;
            self.gold.insert(key.clone(), rows);
        }
        let Ok(pred) = self.rows(db_id, &sql)? else {
            return Ok(scored(SqlVerdict::ExecError, DbVerdict::Failed));
        };
        let (same, jaccard) = compare(&pred, &self.gold[&key], ordered(gold_sql));
        Ok(if same {
            scored(SqlVerdict::Match, DbVerdict::Solved)
        } else {
            scored(
                SqlVerdict::Partial,
                DbVerdict::Answered { overlap: jaccard },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_found_in_every_form_models_write() {
        assert_eq!(
            extract_sql("Action: Operation\n```sql\nSELECT 1\n```").as_deref(),
            Some("SELECT 1")
        );
        assert_eq!(
            extract_sql("<tool_call>\n{\"name\": \"execute_sql\", \"arguments\": {\"query\": \"SELECT 2\"}}\n</tool_call>").as_deref(),
            Some("SELECT 2")
        );
        assert_eq!(
            extract_sql("Here:\n```\nSELECT a\nFROM t\n```").as_deref(),
            Some("SELECT a FROM t")
        );
        assert_eq!(extract_sql("  select 3;").as_deref(), Some("select 3;"));
        assert_eq!(extract_sql("I do not know."), None);
        assert_eq!(extract_sql("Action: Operation\n```sql\n\n```"), None);
    }

    #[test]
    fn results_compare_as_multisets_unless_ordered() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            compare(&k(&["a", "b"]), &k(&["b", "a"]), false),
            (true, 1.0)
        );
        assert!(!compare(&k(&["a", "b"]), &k(&["b", "a"]), true).0);
        assert!(!compare(&k(&["a", "a"]), &k(&["a"]), false).0);
        let (same, j) = compare(&k(&["a", "c"]), &k(&["a", "b"]), false);
        assert!(!same && (j - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(row_key(&[PyValue::Int(1)]), row_key(&[PyValue::Float(1.0)]));
    }
}
