//! Error taxonomy: why a failed episode failed, read from its transcript with the
//! environments' own parsers.
//!
//! Each failed episode gets one [`FailureKind`], the first that applies:
//!
//! - DB tasks: a reply that breaks the protocol ended it ([`FailureKind::FormatViolation`]);
//!   the last SQL it ran returned an error ([`FailureKind::SqlErrorNotRepaired`]); it never
//!   answered within the rounds or the context ([`FailureKind::RoundLimit`]); it answered a
//!   modification with the wrong table ([`FailureKind::WrongModification`]) or a query with the
//!   wrong values ([`FailureKind::WrongAnswer`]).
//! - Household games: the same reply three times in a row ([`FailureKind::RepetitionLoop`]); a
//!   reply without an action ended it ([`FailureKind::FormatViolation`]); an action named an
//!   object the game had not shown ([`FailureKind::HallucinatedObject`]); a third or more of
//!   its actions were impossible ([`FailureKind::InvalidAction`]); else it ran out of steps
//!   ([`FailureKind::RoundLimit`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::chat::{Message, Role, ToolCall, parse_tool_calls};
use crate::env::Protocol;
use crate::env::db::{MAX_ROUNDS, TextAction, parse_reply};
use crate::env::household::NOTHING_HAPPENED;
use crate::error::Result;
use crate::generate::EpisodeEnd;
use crate::table::Table;

/// Why an episode failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A reply matched none of the protocol's forms.
    FormatViolation,
    /// The last SQL statement failed and the agent did not fix it.
    SqlErrorNotRepaired,
    /// A query answered with the wrong values.
    WrongAnswer,
    /// A modification that left the table in the wrong state.
    WrongModification,
    /// The round, step or context limit came first.
    RoundLimit,
    /// Many actions the game could not carry out ("Nothing happened").
    InvalidAction,
    /// The same reply three times in a row.
    RepetitionLoop,
    /// An action naming an object the game had not shown.
    HallucinatedObject,
}

impl FailureKind {
    /// Every kind, in display order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::FormatViolation,
        FailureKind::SqlErrorNotRepaired,
        FailureKind::WrongAnswer,
        FailureKind::WrongModification,
        FailureKind::RoundLimit,
        FailureKind::InvalidAction,
        FailureKind::RepetitionLoop,
        FailureKind::HallucinatedObject,
    ];

    /// A short human name.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::FormatViolation => "format violation",
            FailureKind::SqlErrorNotRepaired => "SQL error not repaired",
            FailureKind::WrongAnswer => "wrong answer",
            FailureKind::WrongModification => "wrong modification",
            FailureKind::RoundLimit => "round/step limit",
            FailureKind::InvalidAction => "invalid action",
            FailureKind::RepetitionLoop => "repetition loop",
            FailureKind::HallucinatedObject => "hallucinated object",
        }
    }
}

/// The task an episode played, as far as the taxonomy needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskShape {
    /// A DB task; `modification`: INSERT/UPDATE/DELETE, scored by the table's state.
    Db {
        /// Whether the task changes the table.
        modification: bool,
    },
    /// A household game.
    Household,
}

impl TaskShape {
    /// A DB task of a kind named as DB Bench (`INSERT`) or the synthetic tasks (`insert`) name
    /// it.
    pub fn db_kind(kind: &str) -> Self {
        TaskShape::Db {
            modification: matches!(
                kind.to_ascii_lowercase().as_str(),
                "insert" | "update" | "delete"
            ),
        }
    }
}

/// One reply and what the environment answered to it.
struct Turn<'a> {
    reply: &'a Message,
    calls: Vec<ToolCall>,
    observation: String,
}

/// The replies after the opening, each with the text of the messages that answered it.
fn turns(messages: &[Message], prompt_messages: usize) -> Vec<Turn<'_>> {
    let mut out: Vec<Turn<'_>> = Vec::new();
    for m in messages.iter().skip(prompt_messages) {
        if m.role == Role::Assistant {
            let calls = if m.tool_calls.is_empty() {
                parse_tool_calls(&m.content).1
            } else {
                m.tool_calls.clone()
            };
            out.push(Turn {
                reply: m,
                calls,
                observation: String::new(),
            });
        } else if let Some(last) = out.last_mut() {
            if !last.observation.is_empty() {
                last.observation.push('\n');
            }
            last.observation.push_str(&m.content);
        }
    }
    out
}

/// Why the failed episode `messages` (its opening is the first `prompt_messages`) failed;
/// `end`: why the rollout stopped.
pub fn classify(
    task: TaskShape,
    protocol: Protocol,
    messages: &[Message],
    prompt_messages: usize,
    end: EpisodeEnd,
) -> FailureKind {
    let turns = turns(messages, prompt_messages);
    match task {
        TaskShape::Db { modification } => classify_db(modification, protocol, &turns, end),
        TaskShape::Household => {
            let seen: String = messages[..prompt_messages.min(messages.len())]
                .iter()
                .map(|m| m.content.to_lowercase())
                .collect::<Vec<_>>()
                .join("\n");
            classify_household(protocol, &turns, end, seen)
        }
    }
}

fn classify_db(
    modification: bool,
    protocol: Protocol,
    turns: &[Turn<'_>],
    end: EpisodeEnd,
) -> FailureKind {
    // The SQL results seen, in order: whether each was an error. A result is a Python list
    // of rows (`[...]`); anything else is the database's error text.
    let is_error = |obs: &str| {
        let obs = obs.trim();
        !(obs.starts_with('[') || obs.is_empty() || obs == "No response from database.")
    };
    let mut sql_errors = Vec::new();
    let mut operations = 0;
    let mut no_call = 0;
    let mut answered = false;
    for t in turns {
        match protocol {
            Protocol::Text => match parse_reply(&t.reply.content, operations < MAX_ROUNDS) {
                TextAction::Operation(_) => {
                    operations += 1;
                    sql_errors.push(is_error(&t.observation));
                }
                TextAction::Answer(_) => answered = true,
                _ => {}
            },
            Protocol::Tools => {
                no_call += usize::from(t.calls.is_empty());
                for call in &t.calls {
                    match call.name.as_str() {
                        "execute_sql" => sql_errors.push(is_error(&t.observation)),
                        "commit_final_answer" => answered = true,
                        _ => {}
                    }
                }
            }
        }
    }
    let last_sql_failed = sql_errors.last().copied().unwrap_or(false);
    if !answered {
        let broke_format = match protocol {
            Protocol::Text => {
                end == EpisodeEnd::Done
                    && turns.last().is_some_and(|t| {
                        matches!(
                            parse_reply(&t.reply.content, operations <= MAX_ROUNDS),
                            TextAction::Invalid | TextAction::MissingSql
                        )
                    })
                    && operations < MAX_ROUNDS
            }
            Protocol::Tools => !turns.is_empty() && 2 * no_call >= turns.len(),
        };
        return if broke_format {
            FailureKind::FormatViolation
        } else if last_sql_failed {
            FailureKind::SqlErrorNotRepaired
        } else {
            FailureKind::RoundLimit
        };
    }
    if last_sql_failed {
        FailureKind::SqlErrorNotRepaired
    } else if modification {
        FailureKind::WrongModification
    } else {
        FailureKind::WrongAnswer
    }
}

/// Object names in an action: a word followed by a number (`apple 1`, `countertop 2`).
fn object_names(action: &str) -> Vec<String> {
    let words: Vec<&str> = action.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| {
            w[1].chars().all(|c| c.is_ascii_digit()) && w[0].chars().all(|c| c.is_alphabetic())
        })
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect()
}

fn classify_household(
    protocol: Protocol,
    turns: &[Turn<'_>],
    end: EpisodeEnd,
    mut seen: String,
) -> FailureKind {
    let n = turns.len();
    if end == EpisodeEnd::Done
        && n >= 3
        && turns[n - 3..]
            .iter()
            .all(|t| t.reply.content == turns[n - 1].reply.content)
    {
        return FailureKind::RepetitionLoop;
    }
    let action = |t: &Turn<'_>| -> Option<String> {
        match protocol {
            Protocol::Text => {
                let start = t.reply.content.find("ACTION:")? + "ACTION:".len();
                let line = t.reply.content[start..].split('\n').next()?;
                Some(line.trim().to_lowercase())
            }
            Protocol::Tools => t.calls.iter().find_map(|c| {
                let args = c.parsed_arguments()?;
                Some(args.get("action")?.as_str()?.trim().to_lowercase())
            }),
        }
    };
    if end == EpisodeEnd::Done && turns.last().is_some_and(|t| action(t).is_none()) {
        return FailureKind::FormatViolation;
    }
    let mut hallucinated = false;
    let mut invalid = 0;
    let mut actions = 0;
    for t in turns {
        if let Some(a) = action(t) {
            actions += 1;
            hallucinated |= object_names(&a).iter().any(|o| !seen.contains(o.as_str()));
            invalid += usize::from(t.observation.contains(NOTHING_HAPPENED));
        }
        seen.push('\n');
        seen.push_str(&t.observation.to_lowercase());
    }
    if hallucinated {
        FailureKind::HallucinatedObject
    } else if actions > 0 && 3 * invalid >= actions {
        FailureKind::InvalidAction
    } else {
        FailureKind::RoundLimit
    }
}

/// Failures counted by kind, with the indices of the episodes behind each.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// Episode indices per kind, in order.
    pub episodes: BTreeMap<FailureKind, Vec<usize>>,
    /// Episodes played (failed or not).
    pub played: usize,
}

impl ErrorReport {
    /// Collects `(index, failure)` of every failed episode out of `played`.
    pub fn of(played: usize, failures: impl IntoIterator<Item = (usize, FailureKind)>) -> Self {
        let mut episodes: BTreeMap<FailureKind, Vec<usize>> = BTreeMap::new();
        for (i, kind) in failures {
            episodes.entry(kind).or_default().push(i);
        }
        Self { episodes, played }
    }

    /// Classifies the failed episodes among `played`: each as (index, task, messages, opening
    /// length, end), all in `protocol`.
    pub fn classify_all<'a>(
        protocol: Protocol,
        played: usize,
        failed: impl IntoIterator<Item = (usize, TaskShape, &'a [Message], usize, EpisodeEnd)>,
    ) -> Self {
        Self::of(
            played,
            failed.into_iter().map(|(i, task, messages, opening, end)| {
                (i, classify(task, protocol, messages, opening, end))
            }),
        )
    }

    /// Failed episodes of a kind.
    pub fn count(&self, kind: FailureKind) -> usize {
        self.episodes.get(&kind).map_or(0, Vec::len)
    }

    /// Failed episodes in all.
    pub fn failed(&self) -> usize {
        self.episodes.values().map(Vec::len).sum()
    }

    /// A table: kind, count, share of failures, first examples.
    pub fn table(&self, title: &str) -> Result<Table> {
        let mut t = Table::new(["failure", "episodes", "share", "examples"]).with_title(title);
        let failed = self.failed().max(1);
        for kind in FailureKind::ALL {
            let Some(ids) = self.episodes.get(&kind) else {
                continue;
            };
            let examples: Vec<String> = ids.iter().take(5).map(usize::to_string).collect();
            t.push_row([
                kind.name().to_string(),
                ids.len().to_string(),
                format!("{:.0} %", 100.0 * ids.len() as f64 / failed as f64),
                examples.join(", "),
            ])?;
        }
        Ok(t)
    }

    /// Failures per kind (rows) of several reports (columns, e.g. one per stage).
    pub fn comparison_table(reports: &[(&str, &ErrorReport)]) -> Result<Table> {
        let mut header = vec!["failure".to_string()];
        header.extend(reports.iter().map(|(label, _)| label.to_string()));
        let mut t = Table::new(header).with_title("failed episodes by cause");
        for kind in FailureKind::ALL {
            if reports.iter().all(|(_, r)| r.count(kind) == 0) {
                continue;
            }
            let mut row = vec![kind.name().to_string()];
            row.extend(reports.iter().map(|(_, r)| r.count(kind).to_string()));
            t.push_row(row)?;
        }
        let mut total = vec!["failed / played".to_string()];
        total.extend(
            reports
                .iter()
                .map(|(_, r)| format!("{} / {}", r.failed(), r.played)),
        );
        t.push_row(total)?;
        Ok(t)
    }

    /// Failures per kind, one bar series per report (e.g. one per stage).
    pub fn chart(reports: &[(&str, &ErrorReport)]) -> Result<crate::plot::Svg> {
        let mut chart = crate::plot::BarChart::new("failed episodes by cause")
            .y_label("episodes")
            .categories(FailureKind::ALL.iter().map(|k| k.name()));
        for (label, report) in reports {
            chart = chart.series(
                label.to_string(),
                FailureKind::ALL.iter().map(|&k| report.count(k) as f64),
            );
        }
        chart.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening(text: &str) -> Vec<Message> {
        vec![
            Message::user(text),
            Message::assistant("Ok."),
            Message::user("Q"),
        ]
    }

    fn db(replies: &[(&str, &str)], modification: bool, end: EpisodeEnd) -> FailureKind {
        let mut m = opening("rules");
        for (reply, obs) in replies {
            m.push(Message::assistant(*reply));
            if !obs.is_empty() {
                m.push(Message::user(*obs));
            }
        }
        classify(TaskShape::Db { modification }, Protocol::Text, &m, 3, end)
    }

    const OP: &str = "Let me look.\nAction: Operation\n```sql\nSELECT 1;\n```";
    const ANSWER: &str = "So.\nAction: Answer\nFinal Answer: [\"x\"]";

    #[test]
    fn db_failures() {
        use FailureKind::*;
        let done = EpisodeEnd::Done;
        assert_eq!(
            db(&[("I think it is 3.", "")], false, done),
            FormatViolation
        );
        assert_eq!(
            db(&[("Action: Operation\nno block", "")], false, done),
            FormatViolation
        );
        assert_eq!(
            db(
                &[(OP, "1064 (42000): syntax error"), (ANSWER, "")],
                false,
                done
            ),
            SqlErrorNotRepaired
        );
        // An error that was repaired does not count.
        assert_eq!(
            db(
                &[(OP, "no such column: x"), (OP, "[('a',)]"), (ANSWER, "")],
                false,
                done
            ),
            WrongAnswer
        );
        assert_eq!(
            db(&[(OP, "[]"), (ANSWER, "")], true, done),
            WrongModification
        );
        assert_eq!(
            db(
                &[(OP, "[(1,)]"), (OP, "[(1,)]")],
                false,
                EpisodeEnd::MaxTurns
            ),
            RoundLimit
        );
        assert_eq!(
            db(
                &[(OP, "[(1,)]"), (OP, "near \"SELEC\": syntax error")],
                false,
                EpisodeEnd::ContextFull
            ),
            SqlErrorNotRepaired
        );
    }

    fn house(replies: &[(&str, &str)], end: EpisodeEnd) -> FailureKind {
        let mut m = opening("rules");
        m[2] = Message::user(
            "Here is your task. You see a cabinet 1 and a countertop 1. Your task is to: put an apple in cabinet. AVAILABLE ACTIONS: go to cabinet 1\ngo to countertop 1",
        );
        for (reply, obs) in replies {
            m.push(Message::assistant(*reply));
            if !obs.is_empty() {
                m.push(Message::user(*obs));
            }
        }
        classify(TaskShape::Household, Protocol::Text, &m, 3, end)
    }

    #[test]
    fn household_failures() {
        use FailureKind::*;
        let go = "THOUGHT: look.\nACTION: go to countertop 1";
        let seen = "On the countertop 1, you see an apple 1.";
        assert_eq!(
            house(&[(go, seen), (go, seen), (go, "")], EpisodeEnd::Done),
            RepetitionLoop
        );
        assert_eq!(
            house(&[(go, seen), ("I am not sure.", "")], EpisodeEnd::Done),
            FormatViolation
        );
        // apple 1 was seen before it was taken; apple 2 never was.
        assert_eq!(
            house(
                &[
                    (go, seen),
                    (
                        "ACTION: take apple 1 from countertop 1",
                        "You pick up the apple 1."
                    )
                ],
                EpisodeEnd::MaxTurns
            ),
            RoundLimit
        );
        assert_eq!(
            house(
                &[
                    (go, seen),
                    (
                        "ACTION: take apple 2 from countertop 1",
                        "Nothing happened."
                    )
                ],
                EpisodeEnd::MaxTurns
            ),
            HallucinatedObject
        );
        assert_eq!(
            house(
                &[
                    (go, seen),
                    ("ACTION: open countertop 1", "Nothing happened."),
                    (go, seen)
                ],
                EpisodeEnd::MaxTurns
            ),
            InvalidAction
        );
    }

    #[test]
    fn reports_count_and_chart() {
        let r = ErrorReport::of(
            5,
            [
                (0, FailureKind::WrongAnswer),
                (3, FailureKind::WrongAnswer),
                (4, FailureKind::RoundLimit),
            ],
        );
        assert_eq!(r.failed(), 3);
        assert_eq!(r.count(FailureKind::WrongAnswer), 2);
        let t = r.table("errors").unwrap().to_string();
        assert!(t.contains("wrong answer") && t.contains("0, 3"), "{t}");
        assert!(ErrorReport::chart(&[("sft", &r)]).is_ok());
        let both = ErrorReport::comparison_table(&[("sft", &r), ("dpo", &ErrorReport::of(5, []))])
            .unwrap()
            .to_string();
        assert!(both.contains("3 / 5") && both.contains("0 / 5"), "{both}");
    }
}
