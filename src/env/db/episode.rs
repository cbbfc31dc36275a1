//! A DB Bench episode on SQLite, in AgentBench's v0.2 text protocol or its function-calling
//! protocol.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::item::DbItem;
use super::protocol::{FC_SYSTEM_PROMPT, INSTRUCTIONS, TextAction, fc_tools, parse_reply};
use super::sandbox::{Sandbox, SandboxLimits};
use super::score::{answer_matches, fc_answer_matches};
use crate::chat::tool_parse::parse_tool_calls;
use crate::chat::{Conversation, Message};
use crate::env::{Environment, Protocol, Step};
use crate::error::{Error, Result};

/// AgentBench's round limit for DB Bench.
pub const MAX_ROUNDS: usize = 15;

/// How an episode ended (AgentBench's sample status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbStatus {
    /// The agent committed a final answer.
    Completed,
    /// A reply matched no pattern, or an operation had no SQL block.
    AgentValidationFailed,
    /// The round limit passed without an answer.
    TaskLimitReached,
}

/// The result of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbOutcome {
    /// How it ended.
    pub status: DbStatus,
    /// The raw text after `Final Answer:`, or the committed answers as JSON (empty without).
    pub answer: String,
    /// SQL operations run.
    pub rounds: usize,
    /// Scored as AgentBench does: the answer against the label, or for a modification the
    /// table hash against `answer_md5` (whatever the status).
    pub correct: bool,
}

/// One DB Bench item played as an [`Environment`]: the agent operates its own copy of the
/// table and answers; reward 1 for a correct outcome, else 0.
#[derive(Debug)]
pub struct DbEnv {
    item: DbItem,
    protocol: Protocol,
    limits: SandboxLimits,
    max_rounds: usize,
    sandbox: Option<Sandbox>,
    rounds: usize,
    outcome: Option<DbOutcome>,
}

impl DbEnv {
    /// An environment for `item` with the default limits and 15 rounds.
    pub fn new(item: DbItem) -> Self {
        Self {
            item,
            protocol: Protocol::Text,
            limits: SandboxLimits::default(),
            max_rounds: MAX_ROUNDS,
            sandbox: None,
            rounds: 0,
            outcome: None,
        }
    }

    /// This environment speaking `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// This environment with other sandbox limits.
    pub fn with_limits(mut self, limits: SandboxLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The item played.
    pub fn item(&self) -> &DbItem {
        &self.item
    }

    /// The outcome, once the episode is over.
    pub fn outcome(&self) -> Option<&DbOutcome> {
        self.outcome.as_ref()
    }

    /// The opening conversation. Text: the instructions, `Ok.`, then the question and table.
    /// Tools: the system prompt, then the table information and the question, with the
    /// `execute_sql` and `commit_final_answer` tools offered.
    pub fn opening(item: &DbItem, protocol: Protocol) -> Conversation {
        match protocol {
            Protocol::Text => Conversation::new(vec![
                Message::user(INSTRUCTIONS),
                Message::assistant("Ok."),
                Message::user(format!("{}\n{}", item.description, item.add_description)),
            ]),
            Protocol::Tools => {
                let mut prompt = String::new();
                if !item.add_description.is_empty() {
                    prompt += &format!(
                        "Additional table information about the question: {}\n",
                        item.add_description
                    );
                }
                prompt += &format!("Question: {}\n", item.description);
                Conversation::new(vec![
                    Message::system(FC_SYSTEM_PROMPT),
                    Message::user(prompt),
                ])
                .with_tools(fc_tools())
            }
        }
    }

    fn sandbox(&self) -> Result<&Sandbox> {
        self.sandbox
            .as_ref()
            .ok_or_else(|| Error::Chat("DbEnv::step called before reset".into()))
    }

    /// Whether the table's state is the expected one (modification items). A table the agent
    /// dropped or renamed, or one whose read fails or runs out of time, is wrong, as in
    /// AgentBench, where the hash query's error text never equals the expected hash.
    fn table_matches(&self) -> Result<bool> {
        let hash = self.sandbox()?.table_hash(&self.item.table.table_name);
        Ok(hash.is_ok_and(|h| self.item.answer_md5.as_deref() == Some(h.as_str())))
    }

    fn finish(&mut self, status: DbStatus, answer: String) -> Result<Step> {
        let correct = if self.item.is_modification() {
            self.table_matches()?
        } else {
            answer_matches(&answer, &self.item.label)
        };
        self.end(status, answer, correct)
    }

    fn end(&mut self, status: DbStatus, answer: String, correct: bool) -> Result<Step> {
        self.outcome = Some(DbOutcome {
            status,
            answer,
            rounds: self.rounds,
            correct,
        });
        Ok(Step::finish(if correct { 1.0 } else { 0.0 }))
    }
}

impl DbEnv {
    /// A text-protocol reply.
    fn step_text(&mut self, reply: &Message) -> Result<Step> {
        match parse_reply(&reply.content, self.rounds < self.max_rounds) {
            TextAction::Operation(sql) => {
                let sandbox = self.sandbox()?;
                sandbox.begin_reply();
                let observation = sandbox.execute(&sql).observation();
                sandbox.end_reply();
                self.rounds += 1;
                Ok(Step::observe(observation))
            }
            TextAction::MissingSql => self.finish(DbStatus::AgentValidationFailed, String::new()),
            TextAction::Answer(answer) => self.finish(DbStatus::Completed, answer),
            TextAction::Invalid if self.rounds >= self.max_rounds => {
                self.finish(DbStatus::TaskLimitReached, String::new())
            }
            TextAction::Invalid => self.finish(DbStatus::AgentValidationFailed, String::new()),
        }
    }

    /// A function-calling reply: its tool calls (parsed from the text when the message has
    /// none) run in order, their statements within one reply's time budget;
    /// `commit_final_answer` ends the episode. Every reply is a round.
    fn step_tools(&mut self, reply: &Message) -> Result<Step> {
        self.sandbox()?.begin_reply();
        let step = self.run_tool_calls(reply);
        self.sandbox()?.end_reply();
        step
    }

    fn run_tool_calls(&mut self, reply: &Message) -> Result<Step> {
        let calls = if reply.tool_calls.is_empty() {
            parse_tool_calls(&reply.content).1
        } else {
            reply.tool_calls.clone()
        };
        self.rounds += 1;
        let mut observation = Vec::new();
        if calls.is_empty() {
            observation.push(Message::user(
                "Internal error: No tool calls found despite finish reason.",
            ));
        }
        for call in calls {
            let id = call.id.clone().unwrap_or_default();
            let first = match call.parsed_arguments() {
                Some(Value::Object(map)) => map.into_iter().next().map(|(_, v)| v),
                _ => None,
            };
            let text = match (call.name.as_str(), first) {
                (_, None) => {
                    "Error: Failed to parse tool call. Tool call format is incorrect.".to_string()
                }
                ("execute_sql", Some(sql)) => {
                    let sql = sql.as_str().map_or_else(|| sql.to_string(), String::from);
                    let response = self.sandbox()?.execute(&sql).observation();
                    if response.is_empty() {
                        "No response from database.".to_string()
                    } else {
                        response
                    }
                }
                ("commit_final_answer", Some(answer)) => {
                    let correct = if self.item.is_modification() {
                        self.table_matches()?
                    } else {
                        fc_answer_matches(&answer, &self.item.label)
                    };
                    return self.end(DbStatus::Completed, answer.to_string(), correct);
                }
                _ => "Invalid function call. Please call a tool instead.".to_string(),
            };
            observation.push(Message::tool(id, text));
        }
        if self.rounds >= self.max_rounds {
            return self.end(DbStatus::TaskLimitReached, String::new(), false);
        }
        Ok(Step {
            observation,
            reward: 0.0,
            done: false,
        })
    }
}

impl Environment for DbEnv {
    fn reset(&mut self) -> Result<Conversation> {
        self.sandbox = Some(match &self.item.database {
            Some(path) => Sandbox::from_file(path, self.limits, false)?,
            None => {
                let table = &self.item.table;
                Sandbox::new(self.limits, |conn| table.materialise(conn))?
            }
        });
        self.rounds = 0;
        self.outcome = None;
        Ok(Self::opening(&self.item, self.protocol))
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        if self.outcome.is_some() {
            return Err(Error::Chat("the DB Bench episode is over; reset it".into()));
        }
        match self.protocol {
            Protocol::Text => self.step_text(reply),
            Protocol::Tools => self.step_tools(reply),
        }
    }
}
