//! A DB Bench episode on SQLite, in AgentBench's v0.2 text protocol.

use serde::{Deserialize, Serialize};

use super::hash::table_hash;
use super::item::DbItem;
use super::protocol::{INSTRUCTIONS, TextAction, parse_reply};
use super::sandbox::{Sandbox, SandboxLimits};
use super::score::answer_matches;
use crate::chat::{Conversation, Message};
use crate::env::{Environment, Step};
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
    /// The raw text after `Final Answer:` (empty without one).
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
            limits: SandboxLimits::default(),
            max_rounds: MAX_ROUNDS,
            sandbox: None,
            rounds: 0,
            outcome: None,
        }
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

    /// The opening conversation: the instructions, `Ok.`, then the question and table.
    pub fn opening(item: &DbItem) -> Conversation {
        Conversation::new(vec![
            Message::user(INSTRUCTIONS),
            Message::assistant("Ok."),
            Message::user(format!("{}\n{}", item.description, item.add_description)),
        ])
    }

    fn sandbox(&self) -> Result<&Sandbox> {
        self.sandbox
            .as_ref()
            .ok_or_else(|| Error::Chat("DbEnv::step called before reset".into()))
    }

    fn finish(&mut self, status: DbStatus, answer: String) -> Result<Step> {
        let correct = if self.item.is_modification() {
            let hash = table_hash(self.sandbox()?.connection(), &self.item.table.table_name)?;
            self.item.answer_md5.as_deref() == Some(hash.as_str())
        } else {
            answer_matches(&answer, &self.item.label)
        };
        self.outcome = Some(DbOutcome {
            status,
            answer,
            rounds: self.rounds,
            correct,
        });
        Ok(Step::finish(if correct { 1.0 } else { 0.0 }))
    }
}

impl Environment for DbEnv {
    fn reset(&mut self) -> Result<Conversation> {
        let table = &self.item.table;
        self.sandbox = Some(Sandbox::new(self.limits, |conn| table.materialise(conn))?);
        self.rounds = 0;
        self.outcome = None;
        Ok(Self::opening(&self.item))
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        if self.outcome.is_some() {
            return Err(Error::Chat("the DB Bench episode is over; reset it".into()));
        }
        match parse_reply(&reply.content, self.rounds < self.max_rounds) {
            TextAction::Operation(sql) => {
                let observation = self.sandbox()?.execute(&sql).observation();
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
}
