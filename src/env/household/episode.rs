//! A household game played as an [`Environment`], in the text protocol (AgentBench's ALFWorld
//! loop) or with the `take_action` tool.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::expert::{ExpertOptions, solve};
use super::protocol::{
    ACKNOWLEDGEMENT, FC_SYSTEM_PROMPT, INSTRUCTIONS, available_actions, fc_tools, match_action,
    process_action,
};
use super::task::TaskKind;
use super::world::World;
use crate::chat::tool_parse::parse_tool_calls;
use crate::chat::{Conversation, Message};
use crate::env::{Environment, Played, Protocol, Step, play};
use crate::error::{Error, Result};
use crate::reward::{EpisodeStats, OutcomeShaping, outcome_reward};

/// AgentBench's step limit for the text protocol.
pub const MAX_STEPS_TEXT: usize = 35;
/// The step limit for the function-calling protocol.
pub const MAX_STEPS_TOOLS: usize = 20;

/// Seeds of the one-shot examples (one per task type), far from any seed a user would pick.
const EXAMPLE_SEED: u64 = u64::MAX - 64;

/// How an episode ended (AgentBench's sample status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HouseholdStatus {
    /// The task was solved.
    Completed,
    /// A reply without `ACTION:`, or the same reply three times in a row.
    AgentInvalidAction,
    /// The step limit passed.
    TaskLimitReached,
}

/// The result of an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseholdOutcome {
    /// How it ended.
    pub status: HouseholdStatus,
    /// Whether the task was solved.
    pub success: bool,
    /// Actions taken.
    pub steps: usize,
    /// What the episode achieved, for [`outcome_reward`].
    pub stats: EpisodeStats,
}

/// One household game as an [`Environment`]: reward 1 when the task is solved, else 0 (or
/// the shaped outcome, see [`HouseholdEnv::with_shaping`]).
#[derive(Debug, Clone)]
pub struct HouseholdEnv {
    start: World,
    world: World,
    protocol: Protocol,
    max_steps: usize,
    example: bool,
    shaping: OutcomeShaping,
    steps: usize,
    replies: Vec<String>,
    last_action: Option<String>,
    invalid: usize,
    repeated: usize,
    progress: usize,
    outcome: Option<HouseholdOutcome>,
}

impl HouseholdEnv {
    /// The game of `seed` in the text protocol with AgentBench's 35-step limit.
    pub fn new(seed: u64) -> Self {
        Self::from_world(World::generate(seed))
    }

    /// The game of `seed` with a task of type `kind`.
    pub fn with_kind(seed: u64, kind: TaskKind) -> Self {
        Self::from_world(World::generate_kind(seed, kind))
    }

    /// An environment starting from `world`.
    pub fn from_world(world: World) -> Self {
        Self {
            start: world.clone(),
            world,
            protocol: Protocol::Text,
            max_steps: MAX_STEPS_TEXT,
            example: true,
            shaping: OutcomeShaping::default(),
            steps: 0,
            replies: Vec::new(),
            last_action: None,
            invalid: 0,
            repeated: 0,
            progress: 0,
            outcome: None,
        }
    }

    /// This environment speaking `protocol`, with that protocol's step limit.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self.max_steps = match protocol {
            Protocol::Text => MAX_STEPS_TEXT,
            Protocol::Tools => MAX_STEPS_TOOLS,
        };
        self
    }

    /// This environment with another step limit.
    pub fn with_max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// Whether the text protocol opens with a solved example of the same task type
    /// (default: yes, as AgentBench does).
    pub fn with_example(mut self, example: bool) -> Self {
        self.example = example;
        self
    }

    /// Rewards the episode with [`outcome_reward`] under `shaping` instead of plain success.
    pub fn with_shaping(mut self, shaping: OutcomeShaping) -> Self {
        self.shaping = shaping;
        self
    }

    /// The game as it is now.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The step limit.
    pub fn max_steps(&self) -> usize {
        self.max_steps
    }

    /// The outcome, once the episode is over.
    pub fn outcome(&self) -> Option<&HouseholdOutcome> {
        self.outcome.as_ref()
    }

    /// Share of the task's sub-goals reached so far, in [0, 1].
    pub fn progress(&self) -> f64 {
        self.progress as f64 / self.world.task().subgoals().max(1) as f64
    }

    /// The opening conversation for `world`. Text: the instructions, the acknowledgement, a
    /// solved example of the same task type (when `example`), then `Here is your task. ` with
    /// the room, the goal and the available actions. Tools: the system prompt, then the room,
    /// the goal and the available actions, with `take_action` offered.
    pub fn opening(world: &World, protocol: Protocol, example: bool) -> Conversation {
        let actions = available_actions(&world.admissible_commands());
        match protocol {
            Protocol::Text => {
                let mut messages = vec![
                    Message::user(INSTRUCTIONS),
                    Message::assistant(ACKNOWLEDGEMENT),
                ];
                if example {
                    messages.extend(example_turns(world.task().kind));
                }
                messages.push(Message::user(format!(
                    "Here is your task. {}{actions}",
                    world.intro()
                )));
                Conversation::new(messages)
            }
            Protocol::Tools => Conversation::new(vec![
                Message::system(FC_SYSTEM_PROMPT),
                Message::user(format!("{}{actions}", world.intro())),
            ])
            .with_tools(fc_tools()),
        }
    }

    fn stats(&self, success: bool) -> EpisodeStats {
        EpisodeStats {
            success,
            progress: self.progress as f64 / self.world.task().subgoals() as f64,
            invalid_actions: self.invalid,
            repeated_actions: self.repeated,
        }
    }

    fn end(&mut self, status: HouseholdStatus) -> Step {
        let success = status == HouseholdStatus::Completed;
        let stats = self.stats(success);
        self.outcome = Some(HouseholdOutcome {
            status,
            success,
            steps: self.steps,
            stats,
        });
        Step::finish(outcome_reward(&stats, &self.shaping))
    }

    /// Carries out one action and updates the counters; the observation text.
    fn act(&mut self, action: &str) -> String {
        self.steps += 1;
        let (observation, valid) = self.world.execute(action);
        self.invalid += usize::from(!valid);
        self.repeated += usize::from(self.last_action.as_deref() == Some(action));
        self.last_action = Some(action.to_string());
        self.progress = self.progress.max(self.world.task().progress(&self.world).0);
        observation
    }

    fn step_text(&mut self, reply: &Message) -> Step {
        let choices = self.world.admissible_commands();
        let Some(action) = process_action(&reply.content, &choices) else {
            return self.end(HouseholdStatus::AgentInvalidAction);
        };
        let observation = self.act(&action);
        self.replies.push(reply.content.clone());
        let n = self.replies.len();
        if n > 3
            && self.replies[n - 3..]
                .iter()
                .all(|r| *r == self.replies[n - 1])
        {
            return self.end(HouseholdStatus::AgentInvalidAction);
        }
        if self.world.solved() {
            return self.end(HouseholdStatus::Completed);
        }
        if self.steps >= self.max_steps {
            return self.end(HouseholdStatus::TaskLimitReached);
        }
        let actions = available_actions(&self.world.admissible_commands());
        Step::observe(format!("{observation}{actions}"))
    }

    fn step_tools(&mut self, reply: &Message) -> Step {
        let calls = if reply.tool_calls.is_empty() {
            parse_tool_calls(&reply.content).1
        } else {
            reply.tool_calls.clone()
        };
        let mut observation = Vec::new();
        if calls.is_empty() {
            self.steps += 1;
            self.invalid += 1;
            let actions = available_actions(&self.world.admissible_commands());
            observation.push(Message::user(format!(
                "No action was taken: call the take_action tool with one of the available \
                 actions.{actions}"
            )));
        }
        for call in calls {
            let id = call.id.clone().unwrap_or_default();
            let action = match (call.name.as_str(), call.parsed_arguments()) {
                ("take_action", Some(Value::Object(args))) => match args.get("action") {
                    Some(Value::String(a)) => Some(a.clone()),
                    _ => None,
                },
                _ => None,
            };
            let text = match action {
                Some(action) => {
                    let action = match_action(&action, &self.world.admissible_commands());
                    let text = self.act(&action);
                    self.replies.push(action);
                    text
                }
                None => {
                    self.steps += 1;
                    self.invalid += 1;
                    "Error: call take_action with an \"action\" string.".to_string()
                }
            };
            if self.world.solved() {
                return self.end(HouseholdStatus::Completed);
            }
            let actions = available_actions(&self.world.admissible_commands());
            observation.push(Message::tool(id, format!("{text}{actions}")));
            let n = self.replies.len();
            if n > 3
                && self.replies[n - 3..]
                    .iter()
                    .all(|r| *r == self.replies[n - 1])
            {
                return self.end(HouseholdStatus::AgentInvalidAction);
            }
            if self.steps >= self.max_steps {
                break;
            }
        }
        if self.steps >= self.max_steps {
            return self.end(HouseholdStatus::TaskLimitReached);
        }
        Step {
            observation,
            reward: 0.0,
            done: false,
        }
    }

    /// The expert's replies for this game, each with the observation it gets, in the text
    /// protocol's `THOUGHT:`/`ACTION:` form.
    pub fn expert_replies(&self, options: ExpertOptions) -> Vec<(String, String)> {
        solve(&self.start, options, self.max_steps)
            .into_iter()
            .map(|(step, observation)| (step.reply(), observation))
            .collect()
    }

    /// Plays the whole game with the expert in this environment's protocol: text replies
    /// `THOUGHT: …\nACTION: …`, or the thought as content with a `take_action` call.
    pub fn play_expert(&mut self, options: ExpertOptions) -> Result<Played> {
        let steps = solve(&self.start, options, self.max_steps);
        let protocol = self.protocol;
        let mut replies = steps
            .into_iter()
            .enumerate()
            .map(|(i, (step, _))| step.message(protocol, i));
        let max_steps = self.max_steps;
        play(self, max_steps, |_| replies.next())
    }
}

/// The one-shot example for a task type: the expert solving the example game of that type,
/// as alternating user observations and assistant replies (without action lists).
fn example_turns(kind: TaskKind) -> Vec<Message> {
    let world = World::generate_kind(EXAMPLE_SEED, kind);
    let steps = solve(&world, ExpertOptions::default(), MAX_STEPS_TEXT);
    let mut messages = vec![Message::user(format!(
        "Here is one example.\n{}",
        world.intro()
    ))];
    let last = steps.len().saturating_sub(1);
    for (i, (step, observation)) in steps.into_iter().enumerate() {
        messages.push(Message::assistant(step.reply()));
        if i < last {
            messages.push(Message::user(observation));
        }
    }
    messages
}

impl Environment for HouseholdEnv {
    fn reset(&mut self) -> Result<Conversation> {
        self.world = self.start.clone();
        self.steps = 0;
        self.replies.clear();
        self.last_action = None;
        self.invalid = 0;
        self.repeated = 0;
        self.progress = 0;
        self.outcome = None;
        Ok(Self::opening(&self.world, self.protocol, self.example))
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        if self.outcome.is_some() {
            return Err(Error::Chat(
                "the household episode is over; reset it".into(),
            ));
        }
        Ok(match self.protocol {
            Protocol::Text => self.step_text(reply),
            Protocol::Tools => self.step_tools(reply),
        })
    }
}
