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

/// A table given inline: name, columns and rows (DB Bench creates every column as TEXT).
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
    /// The type the item declares (`TEXT`, `INT`, `DATE`…). Kept as read; the episode's
    /// table declares every column `TEXT`, as AgentBench does.
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

/// A row value as the text a MySQL `TEXT` column holds after AgentBench inserts it with
/// pymysql: strings as they are, integers in decimal, booleans as `1`/`0`, other numbers as
/// [`mysql_double`] prints them; `None` for null.
fn mysql_text(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
        Value::Number(n) if n.is_f64() => n.as_f64().map(mysql_double),
        other => Some(other.to_string()),
    }
}

/// A double as text the way MySQL converts it: the shortest digits that read back, no
/// trailing `.0` (`2.5`, `3`), exponent form for huge or tiny magnitudes (`1e20`; the cut-off
/// at 1e15 and 1e-15 approximates MySQL's). AgentBench's items hold strings and integers only.
fn mysql_double(x: f64) -> String {
    let magnitude = x.abs();
    if x == 0.0 || (1e-15..1e15).contains(&magnitude) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

impl TableSpec {
    /// Creates the table in `conn` as AgentBench does, every column `TEXT` whatever type
    /// the item declares (so values keep their text: `'07'`, `'1.50'`, text order), and
    /// inserts its rows (see [`mysql_text`]).
    pub fn materialise(&self, conn: &Connection) -> Result<()> {
        let columns = &self.table_info.columns;
        let defs: Vec<String> = columns
            .iter()
            .map(|c| format!("{} TEXT", quote_ident(&c.name)))
            .collect();
        let table = quote_ident(&self.table_name);
        conn.execute_batch(&format!("CREATE TABLE {table} ({});", defs.join(", ")))?;
        let marks = vec!["?"; columns.len()].join(", ");
        let mut insert = conn.prepare(&format!("INSERT INTO {table} VALUES ({marks})"))?;
        for row in &self.table_info.rows {
            let values: Vec<Option<String>> = row.iter().map(mysql_text).collect();
            insert.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_values_become_the_text_mysql_stores() {
        let text = |v: serde_json::Value| mysql_text(&v);
        assert_eq!(text(json!("007")), Some("007".into()));
        assert_eq!(text(json!(12)), Some("12".into()));
        assert_eq!(text(json!(-3)), Some("-3".into()));
        assert_eq!(text(json!(2.5)), Some("2.5".into()));
        assert_eq!(text(json!(2.0)), Some("2".into()));
        assert_eq!(text(json!(1e20)), Some("1e20".into()));
        assert_eq!(text(json!(true)), Some("1".into()));
        assert_eq!(text(json!(null)), None);
    }

    #[test]
    fn every_column_is_created_text() {
        let spec: TableSpec = serde_json::from_value(json!({
            "table_name": "t",
            "table_info": {"columns": [{"name": "n", "type": "INT"}, {"name": "d", "type": "DECIMAL"}],
                           "rows": [["010", 3]]}
        }))
        .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        spec.materialise(&conn).unwrap();
        let (n, d): (String, String) = conn
            .query_row("SELECT n, d FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((n.as_str(), d.as_str()), ("010", "3"));
        let types: String = conn
            .query_row(
                "SELECT group_concat(type) FROM pragma_table_info('t')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(types, "TEXT,TEXT");
    }
}
