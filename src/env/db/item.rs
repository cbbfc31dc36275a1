//! A DB Bench item: one table given inline, a question, and the expected outcome.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One DB Bench record (`dev.jsonl` / `standard.jsonl` of AgentBench).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbItem {
    /// The question or instruction given to the agent.
    pub description: String,
    /// The sentence naming the table and its headers, appended to the question.
    #[serde(default)]
    pub add_description: String,
    /// The table the episode starts from.
    pub table: TableSpec,
    /// Item kind: `INSERT`, `UPDATE`, or a query kind (`counting`, `ranking`, ...).
    #[serde(rename = "type")]
    pub kind: Vec<String>,
    /// Expected answers; for INSERT/UPDATE, the gold statement.
    pub label: Vec<serde_json::Value>,
    /// For INSERT/UPDATE: the expected table hash, `[('<md5>',)]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_md5: Option<String>,
    /// A SQLite file the episode starts from instead of the inline table (Spider-style
    /// databases with several tables). Each episode works on an in-memory copy; the file is
    /// never written. Not part of DB Bench's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
}

/// A table given inline: name, columns and rows (DB Bench stores every column as TEXT).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableSpec {
    /// Table name (often with spaces).
    pub table_name: String,
    /// Columns and rows.
    pub table_info: TableInfo,
}

/// Columns and rows of a [`TableSpec`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableInfo {
    /// Column names and declared types.
    pub columns: Vec<Column>,
    /// Row values, one inner list per row (strings or numbers).
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// A column of a [`TableSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Declared type (DB Bench: always `TEXT`).
    #[serde(rename = "type", default = "text_type")]
    pub kind: String,
}

fn text_type() -> String {
    "TEXT".into()
}

/// Quotes an identifier for SQLite (`"name with ""quotes"""`).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl DbItem {
    /// Reads every item of a DB Bench JSONL file (bad lines are reported with file and line).
    pub fn read_jsonl(path: &Path) -> Result<Vec<Self>> {
        crate::io::read_jsonl(path)
    }

    /// A query item over a SQLite file: `description` is the question, `add_description`
    /// describes the tables, `label` holds the expected answer values.
    pub fn over_file(
        database: PathBuf,
        description: String,
        add_description: String,
        label: Vec<serde_json::Value>,
    ) -> Self {
        Self {
            description,
            add_description,
            table: TableSpec::default(),
            kind: vec!["query".into()],
            label,
            answer_md5: None,
            database: Some(database),
        }
    }

    /// Whether the item modifies the table (scored by table hash rather than answers).
    pub fn is_modification(&self) -> bool {
        self.kind
            .iter()
            .any(|k| k == "INSERT" || k == "UPDATE" || k == "DELETE")
    }
}

impl TableSpec {
    /// Creates the table in `conn` and inserts its rows (values stored as text, NULL for null).
    pub fn materialise(&self, conn: &Connection) -> Result<()> {
        let columns = &self.table_info.columns;
        let defs: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), c.kind))
            .collect();
        let table = quote_ident(&self.table_name);
        conn.execute_batch(&format!("CREATE TABLE {table} ({});", defs.join(", ")))?;
        let marks = vec!["?"; columns.len()].join(", ");
        let mut insert = conn.prepare(&format!("INSERT INTO {table} VALUES ({marks})"))?;
        for row in &self.table_info.rows {
            let values: Vec<Option<String>> = row
                .iter()
                .map(|v| match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect();
            insert.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }
}
