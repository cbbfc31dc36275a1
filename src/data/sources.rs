//! Loaders for the public corpora in their official formats. Every loader names the file (and
//! the line, for JSONL) on malformed input, and a missing file with where to get it.
//!
//! | source | files |
//! |---|---|
//! | Spider | `train_spider.json` / `dev.json`, `tables.json`, `database/<db>/<db>.sqlite` |
//! | SParC, CoSQL | `train.json` / `dev.json` (interactions), `database/<db>/<db>.sqlite` |
//! | BIRD | `train.json` / `dev.json` (with `evidence`), `<split>_databases/<db>/<db>.sqlite` |
//! | ReAct (FireAct) | JSONL, one OpenAI `messages` conversation per line |
//! | general chat | JSON, JSONL or parquet of `{"messages": [...]}` or ShareGPT `{"conversations": [...]}` |
//!
//! Every loader takes a [`crate::data::DataSource`]: a local path, or a hub dataset
//! (`hf://datasets/<owner>/<name>[@<revision>][/<folder>]`) fetched into the hub cache.
//!
//! How to get the full corpora is in `docs/data.md`; tests use the Spider dev set
//! and a FireAct sample kept in `data/` (see [`crate::paths::spider_dev_dir`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::location::{Corpus, OpenSource};
use super::mix::take_evenly;
use crate::chat::{Conversation, Message, Role};
use crate::error::{Error, Result};

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

/// Reads the whole JSON file `rel` of a corpus, naming it on failure.
fn read_json<T: serde::de::DeserializeOwned>(
    source: &OpenSource,
    rel: &str,
    hint: &str,
) -> Result<T> {
    crate::io::read_json(&source.file(rel, hint)?)
}

/// The SQLite file of `db_id` in the corpus's `databases` folder, which must exist.
fn database(source: &OpenSource, databases: &str, db_id: &str, hint: &str) -> Result<PathBuf> {
    source.file(&format!("{databases}/{db_id}/{db_id}.sqlite"), hint)
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
/// `train_spider.json`, `train_others.json`) in the corpus (a folder, or a hub dataset folder),
/// whose `database/` holds the SQLite files. At most `max` examples, evenly spaced over the
/// split; only the databases they use are fetched.
pub fn load_spider(
    source: impl Corpus,
    split: &str,
    max: Option<usize>,
) -> Result<Vec<SqlExample>> {
    let source = source.open_corpus()?;
    let records: Vec<SpiderRecord> = read_json(&source, split, SPIDER_HINT)?;
    take_evenly(records, max)
        .into_iter()
        .map(|r| {
            Ok(SqlExample {
                db_path: database(&source, "database", &r.db_id, SPIDER_HINT)?,
                db_id: r.db_id,
                question: r.question,
                sql: r.query,
                evidence: String::new(),
            })
        })
        .collect()
}

/// The formats of the DB corpora.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCorpus {
    /// Spider: `<split>` (a file name) and `database/`.
    Spider,
    /// SParC or CoSQL: `<split>` (a file name) and `database/`.
    Interactions,
    /// BIRD: `<split>.json` and `<split>_databases/`.
    Bird,
}

/// The files a DB corpus's loader reads for `split` with at most `max` examples: the split
/// file, then the SQLite file of every database those examples use, each once. The split file
/// is read (fetched, if need be: it is small) to learn them.
pub fn db_corpus_files(
    source: &OpenSource,
    corpus: DbCorpus,
    split: &str,
    max: Option<usize>,
) -> Result<Vec<String>> {
    let (split_file, databases, field, hint) = match corpus {
        DbCorpus::Spider => (
            split.to_string(),
            "database".to_string(),
            "db_id",
            SPIDER_HINT,
        ),
        DbCorpus::Interactions => (
            split.to_string(),
            "database".to_string(),
            "database_id",
            SPARC_HINT,
        ),
        DbCorpus::Bird => (
            format!("{split}.json"),
            format!("{split}_databases"),
            "db_id",
            BIRD_HINT,
        ),
    };
    let records: Vec<serde_json::Value> = read_json(source, &split_file, hint)?;
    let mut files = vec![split_file];
    for record in take_evenly(records, max) {
        let Some(db) = record[field].as_str() else {
            continue;
        };
        let file = format!("{databases}/{db}/{db}.sqlite");
        if !files.contains(&file) {
            files.push(file);
        }
    }
    Ok(files)
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
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: SPIDER_HINT.into(),
        });
    }
    let records: Vec<TablesRecord> = crate::io::read_json(path)?;
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

/// SParC or CoSQL interactions from `split` (`train.json`, `dev.json`) in the corpus, with
/// `database/`; at most `max`, evenly spaced. CoSQL's turns come from its SQL-grounded
/// `interaction` list, as in SParC.
pub fn load_interactions(
    source: impl Corpus,
    split: &str,
    max: Option<usize>,
) -> Result<Vec<SqlInteraction>> {
    let source = source.open_corpus()?;
    let records: Vec<InteractionRecord> = read_json(&source, split, SPARC_HINT)?;
    take_evenly(records, max)
        .into_iter()
        .map(|r| {
            Ok(SqlInteraction {
                db_path: database(&source, "database", &r.database_id, SPARC_HINT)?,
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

/// BIRD examples from `split` (`train` or `dev`) in the corpus: `<split>.json` and
/// `<split>_databases/`; at most `max`, evenly spaced (only their databases are fetched).
pub fn load_bird(source: impl Corpus, split: &str, max: Option<usize>) -> Result<Vec<SqlExample>> {
    let source = source.open_corpus()?;
    let records: Vec<BirdRecord> = read_json(&source, &format!("{split}.json"), BIRD_HINT)?;
    let databases = format!("{split}_databases");
    take_evenly(records, max)
        .into_iter()
        .map(|r| {
            Ok(SqlExample {
                db_path: database(&source, &databases, &r.db_id, BIRD_HINT)?,
                db_id: r.db_id,
                question: r.question,
                sql: r.sql,
                evidence: r.evidence,
            })
        })
        .collect()
}

/// ReAct trajectories in OpenAI form (FireAct's `multitask.jsonl`): one `{"messages": [...]}`
/// per record, in a JSONL, JSON or parquet file, a folder of them, or a hub dataset. A
/// conversation without an assistant turn is an error naming its file and record.
pub fn load_react(source: impl Corpus) -> Result<Vec<Conversation>> {
    let mut conversations = Vec::new();
    source.open_corpus()?.for_each_record(|record, path, n| {
        let conversation = conversation(record, path, n)?;
        if !conversation
            .messages
            .iter()
            .any(|m| m.role == Role::Assistant)
        {
            return Err(Error::Chat(format!(
                "{}: record {n} has no assistant turn",
                path.display()
            )));
        }
        conversations.push(conversation);
        Ok(true)
    })?;
    Ok(conversations)
}

/// General chat, at most `limit` conversations (all when `None`), read shard by shard so a
/// large set never has to fit in memory: records in OpenAI form (`{"messages": [{"role",
/// "content"}]}`, as in `HuggingFaceH4/ultrachat_200k`) or ShareGPT form (`{"conversations":
/// [{"from": "human"|"gpt"|"system", "value"}]}`), in JSON, JSONL or parquet files, a folder of
/// them, or a hub dataset. Unknown speakers are an error naming the record.
pub fn load_chat(source: impl Corpus, limit: Option<usize>) -> Result<Vec<Conversation>> {
    let mut conversations = Vec::new();
    if limit == Some(0) {
        return Ok(conversations);
    }
    source.open_corpus()?.for_each_record(|record, path, n| {
        conversations.push(conversation(record, path, n)?);
        Ok(limit.is_none_or(|l| conversations.len() < l))
    })?;
    Ok(conversations)
}

/// One conversation record, in OpenAI (`messages`) or ShareGPT (`conversations`) form.
fn conversation(record: serde_json::Value, path: &Path, n: usize) -> Result<Conversation> {
    let at = || format!("{}: record {n}", path.display());
    if record.get("messages").is_some() {
        return serde_json::from_value(record).map_err(|e| Error::Chat(format!("{}: {e}", at())));
    }
    let Some(turns) = record.get("conversations").and_then(|t| t.as_array()) else {
        return Err(Error::Chat(format!(
            "{}: has neither `messages` (OpenAI form) nor `conversations` (ShareGPT form)",
            at()
        )));
    };
    let messages = turns
        .iter()
        .map(|t| {
            let text = |key: &str| t.get(key).and_then(|v| v.as_str()).unwrap_or_default();
            let role = match text("from") {
                "human" | "user" => Role::User,
                "gpt" | "assistant" | "chatgpt" | "bard" => Role::Assistant,
                "system" => Role::System,
                other => {
                    return Err(Error::Chat(format!(
                        "{}: unknown speaker {other:?} (human, gpt or system)",
                        at()
                    )));
                }
            };
            Ok(Message::new(role, text("value")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Conversation::new(messages))
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

        let err = load_spider(dir.path(), "dev.json", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev.json does not exist") && err.contains("spider"),
            "{err}"
        );

        std::fs::write(dir.path().join("dev.json"), "[{\"db_id\": 1}]").unwrap();
        let err = load_spider(dir.path(), "dev.json", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dev.json") && err.contains("line 1"), "{err}");

        let share = dir.path().join("chat.json");
        std::fs::write(
            &share,
            r#"[{"conversations": [{"from": "robot", "value": "x"}]}]"#,
        )
        .unwrap();
        let err = load_chat(&share, None).unwrap_err().to_string();
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
        let sparc = load_interactions(dir.path(), "dev.json", None).unwrap();
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
        let bird = load_bird(dir.path(), "dev", None).unwrap();
        assert_eq!(bird[0].evidence, "age is in years");
        assert_eq!(bird[0].db_path, bird_db);

        let share = dir.path().join("chat.jsonl");
        std::fs::write(
            &share,
            "{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}, {\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n",
        )
        .unwrap();
        let chats = load_chat(&share, None).unwrap();
        assert_eq!(chats[0].messages[2].role, Role::Assistant);
    }
}
