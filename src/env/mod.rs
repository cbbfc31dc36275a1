//! Environments the agent acts in. `db`: AgentBench's DB Bench on SQLite.
//!
//! Every environment implements [`Environment`]: `reset` opens an episode with the messages the
//! agent first sees, `step` takes the agent's reply and answers with observations, a reward and
//! whether the episode is over. [`crate::generate::rollout`] runs a model against one.
//!
//! So far: DB Bench in the v0.2 text protocol ([`db::DbEnv`]) with its sandbox and AgentBench's
//! scoring. The function-calling protocol and the household world are being built (issue 5).

use crate::chat::{Conversation, Message};
use crate::error::Result;

pub mod db;

/// What an environment answers to one reply of the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Messages appended to the conversation in the protocol's form (a user message with the
    /// observation, or tool results); empty when the episode ends without one.
    pub observation: Vec<Message>,
    /// Reward for this step (most environments give it only at the end).
    pub reward: f64,
    /// Whether the episode is over.
    pub done: bool,
}

impl Step {
    /// A step that continues with one user message.
    pub fn observe(text: impl Into<String>) -> Self {
        Self {
            observation: vec![Message::user(text)],
            reward: 0.0,
            done: false,
        }
    }

    /// The final step, with its reward.
    pub fn finish(reward: f64) -> Self {
        Self {
            observation: Vec::new(),
            reward,
            done: true,
        }
    }
}

/// A multi-turn task an agent interacts with.
pub trait Environment {
    /// Starts an episode and returns the conversation so far (system prompt, task, any
    /// few-shot turns); the agent speaks next.
    fn reset(&mut self) -> Result<Conversation>;

    /// Takes the agent's reply (an assistant message) and returns what happens.
    fn step(&mut self, reply: &Message) -> Result<Step>;
}
