//! Text-to-SQL examples turned into multi-turn DB Bench episodes, in either protocol: a brief
//! thought, one SQL statement, the real observation from executing it, and the final answer.
//! A share of episodes first makes a realistic mistake (a wrong column name), sees the error
//! and repairs it. Every episode is replayed in [`DbEnv`] and kept only if it scores correct.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::record::{SftRecord, freeze_opening};
use super::sources::SqlExample;
use crate::chat::{Conversation, Message, ToolCall};
use crate::env::db::{DbEnv, DbItem, Sandbox, SandboxLimits, SqlResult};
use crate::env::{Protocol, play};
use crate::error::Result;
use crate::python::PyValue;
use crate::rng::Rng;

/// How episodes are written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DbEpisodeOptions {
    /// The protocol the episode speaks.
    pub protocol: Protocol,
    /// Share of episodes that make a mistake and repair it (0 to 1).
    pub repair_share: f64,
    /// Share of function-calling episodes that open with a negative sample (Agent-FLAN
    /// style): a call of a tool that does not exist, or SQL written in the content without a
    /// call, then the environment's complaint. The mistaken turn is masked. The text protocol
    /// has no recoverable format error (AgentBench ends the episode), so this applies to tools.
    pub negative_share: f64,
    /// Most answer values an episode may have (longer results are skipped).
    pub max_answers: usize,
}

impl Default for DbEpisodeOptions {
    fn default() -> Self {
        Self {
            protocol: Protocol::Text,
            repair_share: 0.2,
            negative_share: 0.1,
            max_answers: 10,
        }
    }
}

/// A finished episode with the item it was replayed against.
#[derive(Debug, Clone)]
pub struct DbEpisode {
    /// The whole conversation, opening included.
    pub conversation: Conversation,
    /// The item (question, tables, expected answer).
    pub item: DbItem,
    /// Whether it contains a mistake and its repair.
    pub repaired: bool,
    /// Whether it opens with a negative sample (a wrong tool or a missing call).
    pub negative: bool,
}

impl DbEpisode {
    /// The episode as an SFT record from `source` of task `kind` (`select`, `insert`, …).
    pub fn into_record(self, source: &str, kind: &str, protocol: Protocol) -> SftRecord {
        SftRecord {
            conversation: self.conversation,
            source: source.into(),
            kind: kind.into(),
            protocol: Some(protocol),
        }
    }
}

/// Why an example gave no episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// The gold SQL failed on its database.
    GoldFails,
    /// The gold result is empty.
    EmptyResult,
    /// The gold result is too long to answer in a list or to observe whole.
    TooLong,
    /// The replayed episode did not score correct.
    NotReplayed,
}

/// The tables of the database and their columns, as DB Bench describes a table.
/// Table names with their column names.
type Tables = Vec<(String, Vec<String>)>;

fn describe_tables(sandbox: &Sandbox) -> Result<(String, Tables)> {
    let conn = sandbox.connection();
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
    )?;
    let names: Vec<String> = stmt
        .query_map([], |row| row.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let mut tables = Vec::new();
    for name in names {
        let mut info = conn.prepare(&format!(
            "PRAGMA table_info({})",
            crate::env::db::item::quote_ident(&name)
        ))?;
        let columns: Vec<String> = info
            .query_map([], |row| row.get(1))?
            .collect::<std::result::Result<_, _>>()?;
        tables.push((name, columns));
    }
    let text = tables
        .iter()
        .map(|(name, columns)| {
            format!(
                "The name of this table is {name}, and the headers of this table are {}.",
                columns.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok((text, tables))
}

fn to_json(value: &PyValue) -> Value {
    match value {
        PyValue::None => Value::Null,
        PyValue::Bool(b) => json!(b),
        PyValue::Int(i) => json!(i),
        PyValue::Float(f) => json!(f),
        PyValue::Str(s) => json!(s),
        PyValue::List(items) | PyValue::Tuple(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
    }
}

/// The SQL with a column it names misspelled, for a realistic error; `None` if no column of
/// the schema appears in it as a whole word.
fn misspell(sql: &str, tables: &[(String, Vec<String>)], rng: &mut Rng) -> Option<String> {
    let words: Vec<&str> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut columns: Vec<&str> = tables
        .iter()
        .flat_map(|(_, cols)| cols.iter().map(String::as_str))
        .filter(|c| c.len() > 2 && words.iter().any(|w| w.eq_ignore_ascii_case(c)))
        .filter(|c| !tables.iter().any(|(t, _)| t.eq_ignore_ascii_case(c)))
        .collect();
    columns.sort_unstable();
    columns.dedup();
    if columns.is_empty() {
        return None;
    }
    let column = columns[rng.below(columns.len())];
    let wrong = match rng.below(3) {
        0 => format!("{column}_name"),
        1 => format!("{column}s"),
        _ => format!(
            "{}_{column}",
            tables[rng.below(tables.len())].0.to_lowercase()
        ),
    };
    // Replace whole-word occurrences only.
    let mut out = String::with_capacity(sql.len() + 8);
    let mut word = String::new();
    for c in sql.chars().chain(std::iter::once('\0')) {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if word.eq_ignore_ascii_case(column) {
            out.push_str(&wrong);
        } else {
            out.push_str(&word);
        }
        word.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    Some(out)
}

/// Tables named in the SQL, for the thought.
fn tables_used<'a>(sql: &str, tables: &'a [(String, Vec<String>)]) -> Vec<&'a str> {
    let lower = sql.to_lowercase();
    tables
        .iter()
        .map(|(t, _)| t.as_str())
        .filter(|t| {
            lower
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == t.to_lowercase())
        })
        .collect()
}

/// An assistant turn that runs one SQL statement, in either protocol.
pub(super) fn operation(protocol: Protocol, thought: &str, sql: &str, call: usize) -> Message {
    match protocol {
        Protocol::Text => {
            Message::assistant(format!("{thought}\nAction: Operation\n```sql\n{sql}\n```"))
        }
        Protocol::Tools => {
            let mut c = ToolCall::new("execute_sql", json!({ "query": sql }));
            c.id = Some(format!("call_{call}"));
            Message::assistant(thought).with_tool_calls(vec![c])
        }
    }
}

/// A negative sample (masked): a call of a tool that does not exist, or the SQL written in the
/// content without a call.
pub(super) fn negative_turn(sql: &str, rng: &mut Rng) -> Message {
    let mistake = if rng.below(2) == 0 {
        let mut call = ToolCall::new("run_query", json!({ "sql": sql }));
        call.id = Some("call_x".into());
        Message::assistant("").with_tool_calls(vec![call])
    } else {
        Message::assistant(format!("```sql\n{sql}\n```"))
    };
    mistake.not_for_training()
}

/// The final turn: the answer values of a query, or (`None`) the end of a modification.
pub(super) fn answer_turn(
    protocol: Protocol,
    thought: &str,
    values: Option<&[PyValue]>,
    call: usize,
) -> Message {
    match protocol {
        Protocol::Text => {
            let answer = values.map_or_else(
                || "[\"none\"]".to_string(),
                |v| PyValue::List(v.to_vec()).repr(),
            );
            Message::assistant(format!("{thought}\nAction: Answer\nFinal Answer: {answer}"))
        }
        Protocol::Tools => {
            let answers: Vec<String> = values
                .unwrap_or_default()
                .iter()
                .map(|v| match v {
                    PyValue::Str(s) => s.clone(),
                    other => other.repr(),
                })
                .collect();
            let mut c = ToolCall::new("commit_final_answer", json!({ "answers": answers }));
            c.id = Some(format!("call_{call}"));
            Message::assistant(thought).with_tool_calls(vec![c])
        }
    }
}

/// Plays scripted replies against the item in [`DbEnv`]; the conversation (opening frozen)
/// when the episode scores correct, `None` otherwise.
pub(super) fn replay(
    item: &DbItem,
    protocol: Protocol,
    replies: Vec<Message>,
) -> Result<Option<Conversation>> {
    let mut env = DbEnv::new(item.clone()).with_protocol(protocol);
    let limit = replies.len();
    let mut replies = replies.into_iter();
    let played = play(&mut env, limit, |_| replies.next())?;
    if !env.outcome().is_some_and(|o| o.correct) {
        return Ok(None);
    }
    let mut conversation = played.conversation;
    freeze_opening(&mut conversation, played.prompt_messages);
    Ok(Some(conversation))
}

/// Builds the episode for one example and replays it; `Err(Skip)` says why there is none.
pub fn db_episode(
    example: &SqlExample,
    options: &DbEpisodeOptions,
    rng: &mut Rng,
) -> Result<std::result::Result<DbEpisode, Skip>> {
    let sandbox = Sandbox::from_file(&example.db_path, SandboxLimits::default(), true)?;
    let sql = example.sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let sql = sql.trim_end_matches(';').trim().to_string();
    let result = sandbox.execute(&sql);
    let rows = match &result {
        SqlResult::Rows {
            rows,
            complete: true,
        } => rows.clone(),
        SqlResult::Rows { .. } => return Ok(Err(Skip::TooLong)),
        _ => return Ok(Err(Skip::GoldFails)),
    };
    let values: Vec<PyValue> = rows.into_iter().flatten().collect();
    if values.is_empty() {
        return Ok(Err(Skip::EmptyResult));
    }
    let observation = result.observation();
    if values.len() > options.max_answers || observation.ends_with("[TRUNCATED]") {
        return Ok(Err(Skip::TooLong));
    }
    let (description, tables) = describe_tables(&sandbox)?;
    let mut question = example.question.clone();
    if !example.evidence.is_empty() {
        question = format!("{question} (Hint: {})", example.evidence);
    }
    let label: Vec<Value> = values.iter().map(to_json).collect();
    let item = DbItem::over_file(example.db_path.clone(), question, description, label);

    let used = tables_used(&sql, &tables);
    let where_ = match used.as_slice() {
        [] => "the database".to_string(),
        [one] => format!("the {one} table"),
        many => format!("the {} tables", many.join(" and ")),
    };
    let openers = [
        format!("I need to query {where_} to answer this."),
        format!("The answer is in {where_}. I'll write one query for it."),
        format!("Let me look this up in {where_}."),
    ];
    let mut replies = Vec::new();
    let mut negative = false;
    if options.protocol == Protocol::Tools && rng.uniform() < options.negative_share {
        replies.push(negative_turn(&sql, rng));
        negative = true;
    }
    let mut repaired = false;
    if rng.uniform() < options.repair_share
        && let Some(wrong) = misspell(&sql, &tables, rng)
        && matches!(sandbox.execute(&wrong), SqlResult::Error(e) if e.contains("no such column"))
    {
        // The mistake is shown but never trained on; the repair is.
        let thought = &openers[rng.below(3)];
        replies.push(operation(options.protocol, thought, &wrong, 0).not_for_training());
        let fix = [
            "The query failed: I used a column that does not exist. I'll use the right column name.",
            "That column name is wrong. Let me correct it and run the query again.",
        ];
        replies.push(operation(options.protocol, fix[rng.below(2)], &sql, 1));
        repaired = true;
    } else {
        let opener = if negative {
            "That was not a valid call; I must use the execute_sql tool."
        } else {
            &openers[rng.below(3)]
        };
        replies.push(operation(options.protocol, opener, &sql, 0));
    }
    let done = [
        "The result answers the question.",
        "This gives the answer.",
        "I have the answer now.",
    ][rng.below(3)];
    let call = replies.len();
    replies.push(answer_turn(options.protocol, done, Some(&values), call));
    let Some(conversation) = replay(&item, options.protocol, replies)? else {
        return Ok(Err(Skip::NotReplayed));
    };
    Ok(Ok(DbEpisode {
        conversation,
        item,
        repaired,
        negative,
    }))
}

/// A multi-turn interaction (SParC, CoSQL) as one episode that keeps its turn structure: the
/// first question opens the episode, each later question follows the previous answer as a user
/// turn (`Follow-up question: …`). Every turn is written and replayed in [`DbEnv`] as its own
/// item and must score correct; the episode keeps the longest correct prefix of turns.
/// `Err(Skip)` when not even the first turn replays, with the reason.
pub fn interaction_episode(
    interaction: &super::sources::SqlInteraction,
    options: &DbEpisodeOptions,
    rng: &mut Rng,
) -> Result<std::result::Result<(DbEpisode, usize), Skip>> {
    let mut whole: Option<DbEpisode> = None;
    let mut turns = 0;
    for (question, sql) in &interaction.turns {
        let example = SqlExample {
            db_id: interaction.db_id.clone(),
            db_path: interaction.db_path.clone(),
            question: question.clone(),
            sql: sql.clone(),
            evidence: String::new(),
        };
        // Negative samples open an episode only; later turns are plain.
        let turn_options = DbEpisodeOptions {
            negative_share: if whole.is_some() {
                0.0
            } else {
                options.negative_share
            },
            ..*options
        };
        let episode = match db_episode(&example, &turn_options, rng)? {
            Ok(e) => e,
            Err(skip) if whole.is_none() => return Ok(Err(skip)),
            Err(_) => break,
        };
        turns += 1;
        match whole.as_mut() {
            None => whole = Some(episode),
            Some(w) => {
                let opening = DbEnv::opening(&episode.item, options.protocol)
                    .messages
                    .len();
                // A committed answer is a tool call too; it gets its reply before the next turn.
                let committed = w
                    .conversation
                    .messages
                    .last()
                    .and_then(|m| m.tool_calls.last())
                    .and_then(|c| c.id.clone());
                if let Some(id) = committed {
                    w.conversation
                        .messages
                        .push(Message::tool(id, "Answer committed."));
                }
                w.conversation
                    .messages
                    .push(Message::user(format!("Follow-up question: {question}")));
                w.conversation
                    .messages
                    .extend(episode.conversation.messages.into_iter().skip(opening));
                w.repaired |= episode.repaired;
            }
        }
    }
    Ok(whole.map(|w| (w, turns)).ok_or(Skip::NotReplayed))
}
