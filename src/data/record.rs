//! The SFT record (one line of `sft.jsonl`) and the household episodes that fill it.

use serde::{Deserialize, Serialize};

use serde_json::json;

use crate::chat::{Conversation, Message, ToolCall};
use crate::env::household::{
    ExpertOptions, ExpertStep, HouseholdEnv, MAX_STEPS_TEXT, MAX_STEPS_TOOLS, NOTHING_HAPPENED,
    TaskKind, World, solve,
};
use crate::env::{Protocol, play};
use crate::error::Result;
use crate::rng::Rng;

/// One training conversation with where it came from. Assistant turns with `train: false`
/// (the fixed acknowledgement and worked example of an opening, a mistaken turn) are masked
/// out of the loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRecord {
    /// The messages and tools.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// The source (`spider`, `synthetic_sql`, `household`, `react`, `chat`, …).
    pub source: String,
    /// The task kind (`select`, `insert`, `put`, `heat`, …; `chat` for general chat).
    pub kind: String,
    /// The agent protocol, for agent records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl SftRecord {
    /// Number of assistant turns trained on.
    pub fn trained_turns(&self) -> usize {
        self.conversation
            .messages
            .iter()
            .filter(|m| m.role == crate::chat::Role::Assistant && m.train)
            .count()
    }
}

/// Marks the assistant turns of the first `n` messages (an environment's fixed opening) as
/// not trained on.
pub fn freeze_opening(conversation: &mut Conversation, n: usize) {
    for m in conversation.messages.iter_mut().take(n) {
        m.train = false;
    }
}

/// Expert household episodes, balanced over the six task types: episode `i` plays task type
/// `i % 6` on seed `seed + i`, opening with a solved example of the task type when `example`
/// (text protocol). The opening's acknowledgement and worked example are not trained on.
pub fn household_records(
    count: usize,
    seed: u64,
    protocol: Protocol,
    example: bool,
    options: ExpertOptions,
) -> Result<Vec<SftRecord>> {
    (0..count)
        .map(|i| {
            let kind = TaskKind::ALL[i % TaskKind::ALL.len()];
            let mut env = HouseholdEnv::with_kind(seed + i as u64, kind)
                .with_protocol(protocol)
                .with_example(example);
            let played = env.play_expert(options)?;
            let mut conversation = played.conversation;
            freeze_opening(&mut conversation, played.prompt_messages);
            Ok(SftRecord {
                conversation,
                source: "household".into(),
                kind: kind.name().into(),
                protocol: Some(protocol),
            })
        })
        .collect()
}

/// Actions that exist nowhere in the household's grammar or vocabulary, so AgentBench's
/// matching leaves them as they are and the household answers "Nothing happened.".
const HALLUCINATIONS: &[&str] = &[
    "search everywhere",
    "walk north",
    "wait",
    "ask someone for help",
    "grab everything",
    "teleport",
    "check my surroundings carefully",
];

/// A household expert episode with one Agent-FLAN-style negative sample: at a random step
/// the agent first makes a mistake (a hallucinated action in the text protocol; in the tool
/// protocol, also a reply without a tool call or a call of a tool that does not exist), the
/// environment complains, and the agent recovers with the expert's step. The mistaken turn
/// is kept as context with `train: false`. The episode is replayed and `None` is returned if
/// it does not end solved with the complaint in place.
pub fn household_negative_record(
    seed: u64,
    kind: TaskKind,
    protocol: Protocol,
    example: bool,
    rng: &mut Rng,
) -> Result<Option<SftRecord>> {
    let world = World::generate_kind(seed, kind);
    let max_steps = match protocol {
        Protocol::Text => MAX_STEPS_TEXT,
        Protocol::Tools => MAX_STEPS_TOOLS,
    };
    let steps = solve(&world, ExpertOptions::default(), max_steps - 1);
    if steps.is_empty() {
        return Ok(None);
    }
    let at = rng.below(steps.len());
    let hallucination = HALLUCINATIONS[rng.below(HALLUCINATIONS.len())];
    let mistake = match (protocol, rng.below(3)) {
        (Protocol::Text, _) | (Protocol::Tools, 0) => ExpertStep {
            thought: "I'll try this.".into(),
            command: hallucination.into(),
        }
        .message(protocol, at),
        (Protocol::Tools, 1) => Message::assistant(format!("ACTION: {hallucination}")),
        (Protocol::Tools, _) => {
            let mut call = ToolCall::new("search", json!({ "query": hallucination }));
            call.id = Some(format!("call_x{at}"));
            Message::assistant("").with_tool_calls(vec![call])
        }
    }
    .not_for_training();
    let recover = [
        "That did not work; I must choose one of the available actions.",
        "Nothing happened, so that action is not possible here.",
        "That was not a valid action. Back to the plan.",
    ][rng.below(3)];
    let mut replies = Vec::with_capacity(steps.len() + 1);
    for (i, (step, _)) in steps.iter().enumerate() {
        if i == at {
            replies.push(mistake.clone());
            let recovered = ExpertStep {
                thought: format!("{recover} {}", step.thought),
                command: step.command.clone(),
            };
            replies.push(recovered.message(protocol, i));
        } else {
            replies.push(step.message(protocol, i));
        }
    }
    let mut env = HouseholdEnv::from_world(world)
        .with_protocol(protocol)
        .with_example(example);
    let mut replies = replies.into_iter();
    let played = play(&mut env, max_steps + 1, |_| replies.next())?;
    let complained = played.conversation.messages.iter().any(|m| {
        m.content.starts_with(NOTHING_HAPPENED)
            || m.content.starts_with("Error: ")
            || m.content.starts_with("No action was taken")
    });
    if played.reward != 1.0 || !complained {
        return Ok(None);
    }
    let mut conversation = played.conversation;
    freeze_opening(&mut conversation, played.prompt_messages);
    Ok(Some(SftRecord {
        conversation,
        source: "household_negative".into(),
        kind: kind.name().into(),
        protocol: Some(protocol),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Role;

    #[test]
    fn household_records_are_balanced_solved_and_masked() {
        let records =
            household_records(12, 100, Protocol::Text, true, ExpertOptions::default()).unwrap();
        let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            &kinds[..6],
            &["put", "examine", "clean", "heat", "cool", "puttwo"]
        );
        for r in &records {
            let m = &r.conversation.messages;
            // The acknowledgement and the example's replies are frozen; the agent's are not.
            assert!(!m[1].train && m[1].role == Role::Assistant);
            assert!(m.last().unwrap().train);
            assert!(r.trained_turns() >= 2);
            let line = serde_json::to_string(r).unwrap();
            let back: SftRecord = serde_json::from_str(&line).unwrap();
            assert_eq!(&back, r);
        }
    }

    #[test]
    fn negative_samples_recover_and_mask_the_mistake() {
        let mut rng = Rng::new(3);
        for protocol in [Protocol::Text, Protocol::Tools] {
            let mut made = 0;
            for seed in 0..60 {
                let kind = TaskKind::ALL[seed % 6];
                let Some(r) =
                    household_negative_record(seed as u64, kind, protocol, true, &mut rng).unwrap()
                else {
                    continue;
                };
                made += 1;
                let m = &r.conversation.messages;
                let complaint = m
                    .iter()
                    .position(|x| {
                        x.content.starts_with(NOTHING_HAPPENED)
                            || x.content.starts_with("Error: ")
                            || x.content.starts_with("No action was taken")
                    })
                    .unwrap();
                // The reply before the complaint is the masked mistake; the one after trains.
                assert!(!m[complaint - 1].train, "{:?}", m[complaint - 1]);
                assert!(m[complaint + 1].train && m[complaint + 1].role == Role::Assistant);
            }
            assert!(made >= 55, "{protocol:?}: only {made} of 60");
        }
    }
}
