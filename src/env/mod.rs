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
pub use crate::reward::TaskScore;
use crate::reward::{DbVerdict, grade_db, grade_household};

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

impl std::str::FromStr for Protocol {
    type Err = crate::error::Error;

    /// `text` (AgentBench v0.2) or `tools` (function calling).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "text" => Ok(Protocol::Text),
            "tools" => Ok(Protocol::Tools),
            other => Err(crate::error::Error::InvalidConfig {
                source_name: "protocol".into(),
                reason: format!("unknown protocol {other:?}: use text (AgentBench v0.2) or tools"),
            }),
        }
    }
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

impl TaskEnv {
    /// The graded score of the episode played so far (an episode cut off before the
    /// environment ended it counts as out of rounds / by its progress).
    pub fn score(&self) -> TaskScore {
        match self {
            TaskEnv::Db(env) => {
                let verdict = match env.outcome() {
                    None => DbVerdict::Failed,
                    Some(outcome) => match outcome.status {
                        _ if outcome.correct => DbVerdict::Solved,
                        db::DbStatus::Completed => {
                            let item = env.item();
                            // Partial credit for query answers; a wrong modification earns none.
                            let overlap = if item.answer_md5.is_none() {
                                db::answer_overlap(&outcome.answer, &item.label)
                            } else {
                                0.0
                            };
                            DbVerdict::Answered { overlap }
                        }
                        db::DbStatus::TaskLimitReached => DbVerdict::Failed,
                        db::DbStatus::AgentValidationFailed => DbVerdict::Invalid,
                    },
                };
                grade_db(verdict)
            }
            TaskEnv::Household(env) => {
                let success = env.outcome().is_some_and(|o| o.success);
                let invalid = env
                    .outcome()
                    .is_some_and(|o| o.status == household::HouseholdStatus::AgentInvalidAction);
                grade_household(success, env.progress(), invalid)
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::{Prompt, held_out_prompts};

    fn reply(env: &mut TaskEnv, text: &str) -> Step {
        env.step(&Message::assistant(text)).unwrap()
    }

    #[test]
    fn scores_grade_right_partial_broken_and_unfinished_episodes() {
        let prompts = held_out_prompts(3, 1, Protocol::Text, false).unwrap();
        let Some(Prompt::Db(db)) = prompts.iter().find(|p| {
            matches!(p, Prompt::Db(d) if d.item.answer_md5.is_none() && d.item.label.len() == 1)
        }) else {
            panic!("a query task")
        };
        let label = db.item.label[0].to_string();
        let mut env = Prompt::Db(db.clone()).env();
        env.reset().unwrap();
        reply(
            &mut env,
            &format!("Action: Answer\nFinal Answer: [{label}]"),
        );
        assert_eq!(
            env.score(),
            TaskScore {
                success: true,
                score: 1.0,
                valid: true
            }
        );

        // A wrong answer sharing one of two values: half of the Jaccard overlap (1/2).
        let mut env = Prompt::Db(db.clone()).env();
        env.reset().unwrap();
        reply(
            &mut env,
            &format!("Action: Answer\nFinal Answer: [{label}, \"zzz\"]"),
        );
        let s = env.score();
        assert!(!s.success && (s.score - 0.25).abs() < 1e-12, "{s:?}");

        let mut env = Prompt::Db(db.clone()).env();
        env.reset().unwrap();
        reply(&mut env, "I do not know.");
        assert_eq!(
            env.score(),
            TaskScore {
                success: false,
                score: -0.5,
                valid: false
            }
        );

        // Cut off before answering: out of rounds.
        let mut env = Prompt::Db(db.clone()).env();
        env.reset().unwrap();
        assert_eq!(env.score().score, -0.25);

        let household = prompts
            .iter()
            .find(|p| matches!(p, Prompt::Household(_)))
            .unwrap();
        let mut env = household.env();
        env.reset().unwrap();
        reply(&mut env, "no action here");
        let s = env.score();
        assert!(
            !s.valid && s.score <= -0.5 + 1e-12 && s.score >= -0.5,
            "{s:?}"
        );
    }
}
