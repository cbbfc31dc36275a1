//! Loaders for the public corpora in their official formats. Every loader names the file (and
//! the line, for JSONL) on malformed input, and a missing file with where to get it.
//!
//! | source | files |
//! |---|---|
//! | Spider | `train_spider.json` / `dev.json`, `tables.json`, `database/<db>/<db>.sqlite` |
//! | SParC, CoSQL | `train.json` / `dev.json` (interactions), `database/<db>/<db>.sqlite` |
//! | BIRD | `train.json` / `dev.json` (with `evidence`), `<split>_databases/<db>/<db>.sqlite` |
//! | ReAct (FireAct) | JSONL, one OpenAI `messages` conversation per line |
//! | ShareGPT | JSON list or JSONL of `{"conversations": [{"from", "value"}]}` |
//!
//! How to get the full corpora is in the README (section "Data"); tests use the Spider dev set
//! and a FireAct sample kept in `data/` (see [`crate::paths::spider_dev_dir`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chat::{Conversation, Message, Role};
use crate::error::{Error, Result};
use crate::io::read_jsonl;

/// One text-to-SQL example: a database, a question and its gold SQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlExample {
    /// The database id (its folder name).
    pub db_id: String,
    /// The SQLite file.
    pub db_path: PathBuf,
    /// The question.
    pub question: String,
    /// The gold SQL.
    pub sql: String,
    /// BIRD's evidence (a hint about the schema or values); empty elsewhere.
    pub evidence: String,
}

/// A multi-turn text-to-SQL interaction (SParC, CoSQL): questions that build on each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlInteraction {
    /// The database id.
    pub db_id: String,
    /// The SQLite file.
    pub db_path: PathBuf,
    /// The turns in order: (question, gold SQL).
    pub turns: Vec<(String, String)>,
}

/// Reads a whole JSON file, naming it on failure.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, hint: &str) -> Result<T> {
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: hint.to_string(),
        });
    }
    crate::io::read_json(path)
}

/// The SQLite file of `db_id` under `databases`, which must exist.
fn database(databases: &Path, db_id: &str, hint: &str) -> Result<PathBuf> {
    let path = databases.join(db_id).join(format!("{db_id}.sqlite"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFile {
            path,
            hint: hint.to_string(),
        })
    }
}

const SPIDER_HINT: &str = "download Spider (https://yale-lily.github.io/spider) and unzip it; the \
folder holds dev.json, train_spider.json, tables.json and database/";

#[derive(Deserialize)]
struct SpiderRecord {
    db_id: String,
    question: String,
    query: String,
}

/// Spider (or Spider-format) examples: `split` is the file name (`dev.json`,
/// `train_spider.json`, `train_others.json`) inside `dir`, whose `database/` holds the files.
pub fn load_spider(dir: &Path, split: &str) -> Result<Vec<SqlExample>> {
    let records: Vec<SpiderRecord> = read_json(&dir.join(split), SPIDER_HINT)?;
    let databases = dir.join("database");
    records
        .into_iter()
        .map(|r| {
            Ok(SqlExample {
                db_path: database(&databases, &r.db_id, SPIDER_HINT)?,
                db_id: r.db_id,
                question: r.question,
                sql: r.query,
                evidence: String::new(),
            })
        })
        .collect()
}

/// One table of a Spider-format schema (`tables.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaTable {
    /// The table's name in the database.
    pub name: String,
    /// Its columns (name, type).
    pub columns: Vec<(String, String)>,
}

/// A database schema from `tables.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The database id.
    pub db_id: String,
    /// Its tables.
    pub tables: Vec<SchemaTable>,
}

#[derive(Deserialize)]
struct TablesRecord {
    db_id: String,
    table_names_original: Vec<String>,
    column_names_original: Vec<(i64, String)>,
    column_types: Vec<String>,
}

/// The schemas of `tables.json` (Spider, SParC, CoSQL share the format).
pub fn load_schemas(path: &Path) -> Result<Vec<Schema>> {
    let records: Vec<TablesRecord> = read_json(path, SPIDER_HINT)?;
    Ok(records
        .into_iter()
        .map(|r| {
            let mut tables: Vec<SchemaTable> = r
                .table_names_original
                .iter()
                .map(|name| SchemaTable {
                    name: name.clone(),
                    columns: Vec::new(),
                })
                .collect();
            for ((table, column), kind) in r.column_names_original.iter().zip(&r.column_types) {
                if let Some(t) = usize::try_from(*table).ok().and_then(|t| tables.get_mut(t)) {
                    t.columns.push((column.clone(), kind.clone()));
                }
            }
            Schema {
                db_id: r.db_id,
                tables,
            }
        })
        .collect())
}

const SPARC_HINT: &str = "download SParC (https://yale-lily.github.io/sparc) or CoSQL \
(https://yale-lily.github.io/cosql) and unzip it; the folder holds train.json, dev.json and database/";

#[derive(Deserialize)]
struct InteractionRecord {
    database_id: String,
    interaction: Vec<InteractionTurn>,
}

#[derive(Deserialize)]
struct InteractionTurn {
    utterance: String,
    query: String,
}

/// SParC or CoSQL interactions from `split` (`train.json`, `dev.json`) inside `dir`. CoSQL's
/// turns come from its SQL-grounded `interaction` list, as in SParC.
pub fn load_interactions(dir: &Path, split: &str) -> Result<Vec<SqlInteraction>> {
    let records: Vec<InteractionRecord> = read_json(&dir.join(split), SPARC_HINT)?;
    let databases = dir.join("database");
    records
        .into_iter()
        .map(|r| {
            Ok(SqlInteraction {
                db_path: database(&databases, &r.database_id, SPARC_HINT)?,
                db_id: r.database_id,
                turns: r
                    .interaction
                    .into_iter()
                    .map(|t| (t.utterance, t.query))
                    .collect(),
            })
        })
        .collect()
}

const BIRD_HINT: &str = "download BIRD (https://bird-bench.github.io) and unzip it; the folder \
holds train.json (or dev.json) and train_databases/ (or dev_databases/)";

#[derive(Deserialize)]
struct BirdRecord {
    db_id: String,
    question: String,
    #[serde(default)]
    evidence: String,
    #[serde(rename = "SQL")]
    sql: String,
}

/// BIRD examples from `split` (`train` or `dev`) inside `dir`: `<split>.json` and
/// `<split>_databases/`.
pub fn load_bird(dir: &Path, split: &str) -> Result<Vec<SqlExample>> {
    let records: Vec<BirdRecord> = read_json(&dir.join(format!("{split}.json")), BIRD_HINT)?;
    let databases = dir.join(format!("{split}_databases"));
    records
        .into_iter()
        .map(|r| {
            Ok(SqlExample {
                db_path: database(&databases, &r.db_id, BIRD_HINT)?,
                db_id: r.db_id,
                question: r.question,
                sql: r.sql,
                evidence: r.evidence,
            })
        })
        .collect()
}

/// ReAct trajectories in OpenAI form (FireAct's `multitask.jsonl`): one `{"messages": [...]}`
/// per line. A conversation without an assistant turn is an error naming its line.
pub fn load_react(path: &Path) -> Result<Vec<Conversation>> {
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: "FireAct's data/finetune/gpt_format/multitask.jsonl (https://github.com/anchen1011/FireAct), or any JSONL of {\"messages\": [...]}".into(),
        });
    }
    let conversations: Vec<Conversation> = read_jsonl(path)?;
    for (i, c) in conversations.iter().enumerate() {
        if !c.messages.iter().any(|m| m.role == Role::Assistant) {
            return Err(Error::Chat(format!(
                "{}: record {} has no assistant turn",
                path.display(),
                i + 1
            )));
        }
    }
    Ok(conversations)
}

#[derive(Deserialize)]
struct ShareGptRecord {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Deserialize)]
struct ShareGptTurn {
    from: String,
    value: String,
}

/// ShareGPT-style chat (`[{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}]`,
/// as a JSON list or JSONL). Unknown speakers are an error naming the record.
pub fn load_sharegpt(path: &Path) -> Result<Vec<Conversation>> {
    let hint = "a ShareGPT-format file, e.g. from a hub dataset (see the README, section Data)";
    if !path.exists() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: hint.into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    let records: Vec<ShareGptRecord> = if text.trim_start().starts_with('[') {
        read_json(path, hint)?
    } else {
        read_jsonl(path)?
    };
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let messages = r
                .conversations
                .into_iter()
                .map(|t| {
                    let role = match t.from.as_str() {
                        "human" | "user" => Role::User,
                        "gpt" | "assistant" | "chatgpt" | "bard" => Role::Assistant,
                        "system" => Role::System,
                        other => {
                            return Err(Error::Chat(format!(
                                "{}: record {}: unknown speaker {other:?} (human, gpt or system)",
                                path.display(),
                                i + 1
                            )));
                        }
                    };
                    Ok(Message::new(role, t.value))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Conversation::new(messages))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("react.jsonl");
        std::fs::write(
            &path,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n{\"messages\": [}\n",
        )
        .unwrap();
        let err = load_react(&path).unwrap_err().to_string();
        assert!(err.contains("react.jsonl:2:"), "{err}");

        let err = load_spider(dir.path(), "dev.json").unwrap_err().to_string();
        assert!(
            err.contains("dev.json does not exist") && err.contains("spider"),
            "{err}"
        );

        std::fs::write(dir.path().join("dev.json"), "[{\"db_id\": 1}]").unwrap();
        let err = load_spider(dir.path(), "dev.json").unwrap_err().to_string();
        assert!(err.contains("dev.json") && err.contains("line 1"), "{err}");

        let share = dir.path().join("chat.json");
        std::fs::write(
            &share,
            r#"[{"conversations": [{"from": "robot", "value": "x"}]}]"#,
        )
        .unwrap();
        let err = load_sharegpt(&share).unwrap_err().to_string();
        assert!(err.contains("record 1") && err.contains("robot"), "{err}");
    }

    #[test]
    fn reads_sparc_bird_and_sharegpt_formats() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("database/pets/pets.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        std::fs::write(&db, b"").unwrap();
        std::fs::write(
            dir.path().join("dev.json"),
            r#"[{"database_id": "pets", "interaction": [{"utterance": "How many pets?", "query": "SELECT count(*) FROM pets"}, {"utterance": "And dogs?", "query": "SELECT count(*) FROM pets WHERE kind = 'dog'"}], "final": {"utterance": "x", "query": "y"}}]"#,
        )
        .unwrap();
        let sparc = load_interactions(dir.path(), "dev.json").unwrap();
        assert_eq!(sparc[0].turns.len(), 2);
        assert_eq!(sparc[0].turns[1].0, "And dogs?");

        let bird_db = dir.path().join("dev_databases/pets/pets.sqlite");
        std::fs::create_dir_all(bird_db.parent().unwrap()).unwrap();
        std::fs::write(&bird_db, b"").unwrap();
        std::fs::write(
            dir.path().join("dev.json"),
            r#"[{"db_id": "pets", "question": "Oldest?", "evidence": "age is in years", "SQL": "SELECT max(age) FROM pets"}]"#,
        )
        .unwrap();
        let bird = load_bird(dir.path(), "dev").unwrap();
        assert_eq!(bird[0].evidence, "age is in years");
        assert_eq!(bird[0].db_path, bird_db);

        let share = dir.path().join("chat.jsonl");
        std::fs::write(
            &share,
            "{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n",
        )
        .unwrap();
        let chats = load_sharegpt(&share).unwrap();
        assert_eq!(chats[0].messages[2].role, Role::Assistant);
    }
}
