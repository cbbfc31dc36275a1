//! Environments the agent acts in.
//!
//! Every environment implements [`Environment`]: `reset` opens an episode with the messages the
//! agent first sees, `step` takes the agent's reply and answers with observations, a reward and
//! whether the episode is over. [`crate::generate::rollout`] runs a model against one.
//!
//! - [`db::DbEnv`]: DB Bench in both protocols, sandboxed, scored as AgentBench scores it.
//! - [`household::HouseholdEnv`]: a generated text household with six ALFWorld-style task
//!   types, in both protocols, with an expert planner.
//! - [`TaskEnv`]: either one, for mixed task sets.

use crate::chat::{Conversation, Message};
use crate::error::Result;

pub mod db;
pub mod household;

/// Which AgentBench protocol an environment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// AgentBench v0.2: actions written in the text (`Action: Operation`, `ACTION: ...`).
    #[default]
    Text,
    /// Function calling: tools offered in the prompt, results as `tool` messages.
    Tools,
}

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

/// Either environment, so that a mixed task set (prompts, held-out tasks) plays as one batch.
#[derive(Debug)]
pub enum TaskEnv {
    /// A DB Bench item.
    Db(Box<db::DbEnv>),
    /// A household game.
    Household(Box<household::HouseholdEnv>),
}

impl Environment for TaskEnv {
    fn reset(&mut self) -> Result<Conversation> {
        match self {
            TaskEnv::Db(env) => env.reset(),
            TaskEnv::Household(env) => env.reset(),
        }
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        match self {
            TaskEnv::Db(env) => env.step(reply),
            TaskEnv::Household(env) => env.step(reply),
        }
    }
}

/// An episode played by a scripted policy (see [`play`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Played {
    /// The whole conversation: the opening, the replies and the observations.
    pub conversation: Conversation,
    /// Sum of the step rewards.
    pub reward: f64,
    /// Replies given.
    pub turns: usize,
    /// Whether the environment ended the episode (else the policy stopped or `max_turns`
    /// passed).
    pub done: bool,
    /// Messages of the opening conversation (the environment's `reset`).
    pub prompt_messages: usize,
}

/// Plays one episode without a model: `policy` sees the conversation so far and returns the
/// next reply, or `None` to stop. For expert trajectories, scripted baselines and tests.
pub fn play(
    env: &mut dyn Environment,
    max_turns: usize,
    mut policy: impl FnMut(&Conversation) -> Option<Message>,
) -> Result<Played> {
    let mut conversation = env.reset()?;
    let prompt_messages = conversation.messages.len();
    let (mut reward, mut turns, mut done) = (0.0, 0, false);
    while turns < max_turns && !done {
        let Some(reply) = policy(&conversation) else {
            break;
        };
        let step = env.step(&reply)?;
        conversation.push(reply);
        conversation.messages.extend(step.observation);
        reward += step.reward;
        turns += 1;
        done = step.done;
    }
    Ok(Played {
        conversation,
        reward,
        turns,
        done,
        prompt_messages,
    })
}
