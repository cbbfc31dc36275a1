//! The ReAct format reward, the heuristic used where no environment can judge a turn
//! (method.md, 04): 0.4 for the format, 0.3 for a valid action, 0.3 for reasoning.

use serde::{Deserialize, Serialize};

use crate::env::db::protocol::{TextAction, parse_reply};

/// Weight of a well-formed reply (reasoning then one action line).
pub const FORMAT_WEIGHT: f64 = 0.4;
/// Weight of an action that is admissible (or well-formed, without a list).
pub const VALIDITY_WEIGHT: f64 = 0.3;
/// Weight of the reasoning before the action.
pub const REASONING_WEIGHT: f64 = 0.3;
/// Words of reasoning that earn the full reasoning weight.
const REASONING_WORDS: usize = 8;

/// The parts of a ReAct reward.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FormatScore {
    /// 0 or [`FORMAT_WEIGHT`].
    pub format: f64,
    /// 0 or [`VALIDITY_WEIGHT`].
    pub validity: f64,
    /// Up to [`REASONING_WEIGHT`], growing with the words of reasoning.
    pub reasoning: f64,
}

impl FormatScore {
    /// The reward: the sum of the parts, in [0, 1].
    pub fn value(&self) -> f64 {
        self.format + self.validity + self.reasoning
    }
}

/// Household-style turns: `THOUGHT: …` (optional) then `ACTION: <command>`. The action is
/// the first line after the last `ACTION:`, lower-cased; with `admissible` it must be one of
/// them.
pub fn react_reward(reply: &str, admissible: Option<&[String]>) -> FormatScore {
    let upper = reply.to_ascii_uppercase();
    let Some(at) = upper.rfind("ACTION:") else {
        return FormatScore {
            format: 0.0,
            validity: 0.0,
            reasoning: reasoning_score(reply),
        };
    };
    let before = reply[..at].trim();
    let thought = if before.to_ascii_uppercase().starts_with("THOUGHT:") {
        &before["THOUGHT:".len()..]
    } else {
        before
    };
    let action = reply[at + "ACTION:".len()..]
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase();
    let single = upper.matches("ACTION:").count() == 1;
    let valid = match admissible {
        Some(list) => list.iter().any(|a| a.trim().to_lowercase() == action),
        None => !action.is_empty(),
    };
    FormatScore {
        format: if single && !action.is_empty() {
            FORMAT_WEIGHT
        } else {
            0.0
        },
        validity: if valid { VALIDITY_WEIGHT } else { 0.0 },
        reasoning: reasoning_score(thought),
    }
}

/// DB Bench text-protocol turns: a well-formed `Action: Operation` with SQL or `Action:
/// Answer` with a final answer, and the explanation before it.
pub fn db_format_reward(reply: &str) -> FormatScore {
    let action = parse_reply(reply, true);
    let (format, valid) = match &action {
        TextAction::Operation(sql) => (true, !sql.trim().is_empty()),
        TextAction::Answer(a) => (reply.contains("Action: Answer"), !a.trim().is_empty()),
        TextAction::MissingSql | TextAction::Invalid => (false, false),
    };
    let thought = reply.split("Action:").next().unwrap_or("");
    FormatScore {
        format: if format { FORMAT_WEIGHT } else { 0.0 },
        validity: if valid { VALIDITY_WEIGHT } else { 0.0 },
        reasoning: reasoning_score(thought),
    }
}

fn reasoning_score(thought: &str) -> f64 {
    let words = thought.split_whitespace().count().min(REASONING_WORDS);
    REASONING_WEIGHT * words as f64 / REASONING_WORDS as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn react_parts_add_up() {
        let admissible = vec!["go to countertop 1".to_string(), "look".to_string()];
        let full = react_reward(
            "THOUGHT: the apple is probably on the countertop, so I go there first.\nACTION: go to countertop 1",
            Some(&admissible),
        );
        assert!((full.value() - 1.0).abs() < 1e-12);
        let invalid = react_reward("THOUGHT: hmm.\nACTION: fly away", Some(&admissible));
        assert_eq!(invalid.format, FORMAT_WEIGHT);
        assert_eq!(invalid.validity, 0.0);
        assert!(invalid.reasoning > 0.0 && invalid.reasoning < REASONING_WEIGHT);
        assert_eq!(
            react_reward("go to countertop 1", Some(&admissible)).value(),
            0.0 + reasoning_score("go to countertop 1")
        );
        let twice = react_reward("ACTION: look\nACTION: look", None);
        assert_eq!(twice.format, 0.0);
    }

    #[test]
    fn db_replies_need_the_protocol() {
        let good = db_format_reward(
            "I need the number of rows in the table first, so I count them.\nAction: Operation\n```sql\nSELECT COUNT(*) FROM t\n```",
        );
        assert!((good.value() - 1.0).abs() < 1e-12);
        let answer = db_format_reward("It is three.\nAction: Answer\nFinal Answer: [\"3\"]");
        assert_eq!(
            answer.format + answer.validity,
            FORMAT_WEIGHT + VALIDITY_WEIGHT
        );
        assert_eq!(db_format_reward("SELECT 1").format, 0.0);
    }
}
