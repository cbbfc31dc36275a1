//! Step-level pairs: the same history, two different next turns, each judged by rollouts from
//! that point on.
//!
//! Best-of-N pairs compare whole episodes, so a good first turn followed by a bad third one
//! teaches little about either. Here an episode of the student is cut at a middle turn; the
//! environment is replayed to that point ([`Replay`]); the policy samples `candidates`
//! continuations from there, and each candidate next turn is valued by the mean final score
//! of `rollouts` episodes that start with it. The best and the worst candidate make a pair
//! whose prompt is the shared history and whose sides are the single next turn.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::best_of_n::{PairFilter, PairsConfig, Sample};
use super::{Pair, PairSource, PairsReport};
use crate::chat::{Conversation, Message, Role, Tokenizer};
use crate::env::{Environment, Step, TaskEnv, TaskScore};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, RolloutOptions, Sampling, rollout};
use crate::model::{Decoder, Mode};
use crate::progress::Progress;
use crate::prompts::Prompt;

/// How step-level pairs are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLevelConfig {
    /// Next turns sampled from each history.
    pub candidates: usize,
    /// Episodes that value each candidate (the first is the one that sampled it).
    pub rollouts: usize,
    /// Where the student's episode is cut, as a share of its replies (0.5: the middle one).
    pub branch_at: f64,
}

impl Default for StepLevelConfig {
    fn default() -> Self {
        Self {
            candidates: 4,
            rollouts: 2,
            branch_at: 0.5,
        }
    }
}

/// An environment replayed through a recorded history: `reset` starts the inner environment
/// and steps it with the history's replies, checking that it answers as it did then, and
/// returns the whole conversation so far; the agent continues from there.
#[derive(Debug)]
pub struct Replay<E> {
    /// The environment.
    pub env: E,
    /// The replies and observations after the opening, ending with an observation.
    pub history: Vec<Message>,
}

impl<E: Environment> Environment for Replay<E> {
    fn reset(&mut self) -> Result<Conversation> {
        let mut conversation = self.env.reset()?;
        let mut i = 0;
        while i < self.history.len() {
            let reply = &self.history[i];
            if reply.role != Role::Assistant {
                return Err(Error::Batch(format!(
                    "replay: message {i} of the history is a {:?} message where a reply belongs",
                    reply.role
                )));
            }
            let step = self.env.step(reply)?;
            if step.done {
                return Err(Error::Batch(format!(
                    "replay: the episode ended at reply {i} of the history"
                )));
            }
            conversation.push(reply.clone());
            i += 1;
            for observed in &step.observation {
                let recorded = self.history.get(i);
                if recorded.map(|m| (&m.role, &m.content))
                    != Some((&observed.role, &observed.content))
                {
                    return Err(Error::Batch(format!(
                        "replay: the environment answered reply {} differently than recorded \
                         (it is not deterministic, or the history belongs to another task)",
                        i - 1
                    )));
                }
                conversation.push(observed.clone());
                i += 1;
            }
        }
        Ok(conversation)
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        self.env.step(reply)
    }
}

/// One candidate next turn and its value.
#[derive(Debug, Clone)]
struct Candidate {
    turn: Message,
    scores: Vec<TaskScore>,
}

impl Candidate {
    fn value(&self) -> f64 {
        self.scores.iter().map(|s| s.score).sum::<f64>() / self.scores.len().max(1) as f64
    }
}

/// Where a sample is cut: the messages after the opening up to (not including) reply `t`,
/// with `t` the `branch_at` share of its replies, at least 1; `None` for an episode of one
/// reply.
fn history_of(sample: &Sample, branch_at: f64) -> Option<Vec<Message>> {
    let tail = &sample.conversation.messages[sample.prompt_messages..];
    let replies: Vec<usize> = tail
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::Assistant)
        .map(|(i, _)| i)
        .collect();
    if replies.len() < 2 {
        return None;
    }
    let t = ((replies.len() as f64 * branch_at).round() as usize).clamp(1, replies.len() - 1);
    Some(tail[..replies[t]].to_vec())
}

/// A point to branch from: a history of `prompt` and how many more episodes to play there.
struct Branch<'a> {
    prompt: &'a Prompt,
    history: Vec<Message>,
    episodes: usize,
}

impl Branch<'_> {
    /// Replies left to an episode continued from the history.
    fn turns_left(&self, config: &PairsConfig) -> usize {
        let turns = match self.prompt {
            Prompt::Household(_) => config.household_turns,
            Prompt::Db(_) => config.db_turns,
        };
        let replies = self
            .history
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        turns.saturating_sub(replies).max(1)
    }
}

/// An environment that ends after `left` more replies, so that episodes with different turn
/// limits share a generation batch.
struct Budget<E> {
    env: E,
    left: usize,
}

impl<E: Environment> Environment for Budget<E> {
    fn reset(&mut self) -> Result<Conversation> {
        self.env.reset()
    }

    fn step(&mut self, reply: &Message) -> Result<Step> {
        let mut step = self.env.step(reply)?;
        self.left = self.left.saturating_sub(1);
        if self.left == 0 && !step.done {
            step.done = true;
            step.observation.clear();
        }
        Ok(step)
    }
}

/// Plays each branch's episodes from its history with the policy, sampling, up to
/// `config.batch` episodes at a time (whole branches), counting them on `progress`; returns,
/// per branch, each episode's first new reply and final score.
fn continue_from(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    branches: &[Branch],
    config: &PairsConfig,
    seed: u64,
    progress: &mut Progress,
) -> Result<Vec<Vec<(Message, TaskScore)>>> {
    let mut out = Vec::with_capacity(branches.len());
    let mut rest = branches;
    while !rest.is_empty() {
        // At least one branch per batch, then as many whole branches as fit.
        let mut take = 1;
        let mut size = rest[0].episodes;
        while take < rest.len() && size + rest[take].episodes <= config.batch.max(1) {
            size += rest[take].episodes;
            take += 1;
        }
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let mut envs: Vec<Budget<Replay<TaskEnv>>> = chunk
            .iter()
            .flat_map(|b| {
                (0..b.episodes).map(|_| Budget {
                    env: Replay {
                        env: b.prompt.env(),
                        history: b.history.clone(),
                    },
                    left: b.turns_left(config),
                })
            })
            .collect();
        let options = RolloutOptions {
            generate: GenerateOptions {
                max_new_tokens: config.max_new_tokens,
                sampling: Sampling {
                    temperature: config.temperature,
                    top_p: config.top_p,
                    ..Sampling::greedy()
                },
                seed: seed.wrapping_add(out.len() as u64 * 7919),
                mode: Mode::Eval,
                progress: false,
                ..GenerateOptions::default()
            },
            max_turns: chunk
                .iter()
                .map(|b| b.turns_left(config))
                .max()
                .unwrap_or(1),
            max_context: config.max_context,
            ..RolloutOptions::default()
        };
        let episodes = rollout(decoder, tokenizer, &mut envs, &options)?;
        progress.inc(envs.len() as u64);
        let mut played = episodes.into_iter().zip(&envs);
        for branch in chunk {
            out.push(
                played
                    .by_ref()
                    .take(branch.episodes)
                    .filter_map(|(e, env)| {
                        e.conversation.messages[e.prompt_messages..]
                            .first()
                            .cloned()
                            .map(|turn| (turn, env.env.env.score()))
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Step-level pairs from the student's samples (groups of K per prompt, as
/// [`super::sample_prompts`] writes them): for each prompt, its longest sample is cut at
/// `branch_at`, `candidates` next turns are sampled there and valued by `rollouts` episodes
/// each, and the best and worst candidate make a pair where the filters allow.
pub fn step_level_pairs(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    prompts: &[&Prompt],
    samples: &[Sample],
    pairs_config: &PairsConfig,
    config: &StepLevelConfig,
    filter: &PairFilter,
) -> Result<(Vec<Pair>, PairsReport)> {
    if config.candidates < 2 || config.rollouts == 0 {
        return Err(Error::InvalidConfig {
            source_name: "StepLevelConfig".into(),
            reason: "at least 2 candidates and 1 rollout each are needed".into(),
        });
    }
    let start = Instant::now();
    let mut report = PairsReport::default();
    let mut pairs = Vec::new();
    let groups: Vec<&[Sample]> = samples.chunk_by(|a, b| a.prompt == b.prompt).collect();
    // Where each prompt branches: its longest sample, cut at `branch_at`.
    let mut cuts = Vec::new();
    for group in groups {
        let longest = group.iter().max_by_key(|s| s.turns).unwrap_or(&group[0]);
        let prompt = longest.prompt_in(prompts)?;
        report
            .sources
            .entry(longest.task.clone())
            .or_default()
            .prompts += 1;
        if let Some(history) = history_of(longest, config.branch_at) {
            cuts.push((longest, prompt, history));
        }
    }
    let seed = pairs_config.seed.wrapping_add(0x5eed_0000);
    // Episodes: the candidates, then (with more than one rollout each) the valuing ones.
    let episodes = cuts.len() * config.candidates * config.rollouts;
    let mut progress =
        Progress::new("04 pairs · step-level", Some(episodes as u64)).with_unit("episodes");
    // The candidates of every prompt, batched across prompts.
    let branches: Vec<Branch> = cuts
        .iter()
        .map(|(_, prompt, history)| Branch {
            prompt,
            history: history.clone(),
            episodes: config.candidates,
        })
        .collect();
    let first = continue_from(
        decoder,
        tokenizer,
        &branches,
        pairs_config,
        seed,
        &mut progress,
    )?;
    let mut candidates: Vec<Vec<Candidate>> = first
        .into_iter()
        .map(|played| {
            played
                .into_iter()
                .map(|(turn, score)| Candidate {
                    turn,
                    scores: vec![score],
                })
                .collect()
        })
        .collect();
    // More episodes from each candidate's turn value it (a turn that ended the episode has
    // its final score already), again batched across prompts.
    if config.rollouts > 1 {
        let mut later = Vec::new();
        let mut owners = Vec::new();
        for (i, (_, prompt, history)) in cuts.iter().enumerate() {
            for (c, candidate) in candidates[i].iter_mut().enumerate() {
                let mut probe = Replay {
                    env: prompt.env(),
                    history: history.clone(),
                };
                probe.reset()?;
                let step = probe.step(&candidate.turn)?;
                if step.done {
                    candidate.scores = vec![probe.env.score(); config.rollouts];
                    progress.inc(config.rollouts as u64 - 1);
                    continue;
                }
                let mut with_turn = history.clone();
                with_turn.push(candidate.turn.clone());
                with_turn.extend(step.observation);
                later.push(Branch {
                    prompt,
                    history: with_turn,
                    episodes: config.rollouts - 1,
                });
                owners.push((i, c));
            }
        }
        let more = continue_from(
            decoder,
            tokenizer,
            &later,
            pairs_config,
            seed.wrapping_add(1),
            &mut progress,
        )?;
        for ((i, c), played) in owners.into_iter().zip(more) {
            candidates[i][c]
                .scores
                .extend(played.into_iter().map(|(_, s)| s));
        }
    }
    for ((longest, _, history), candidates) in cuts.iter().zip(&candidates) {
        let entry = report.sources.entry(longest.task.clone()).or_default();
        entry.samples += candidates.iter().map(|c| c.scores.len()).sum::<usize>();
        entry.solved += candidates
            .iter()
            .flat_map(|c| &c.scores)
            .filter(|s| s.success)
            .count();
        let best = candidates
            .iter()
            .max_by(|a, b| a.value().total_cmp(&b.value()));
        let worst = candidates
            .iter()
            .min_by(|a, b| a.value().total_cmp(&b.value()));
        let (Some(best), Some(worst)) = (best, worst) else {
            continue;
        };
        let mut opening = longest.conversation.clone();
        opening
            .messages
            .truncate(longest.prompt_messages + history.len());
        let pair = Pair {
            task: longest.task.clone(),
            kind: longest.kind.clone(),
            protocol: longest.protocol,
            source: PairSource::StepLevel,
            prompt: opening,
            chosen: vec![best.turn.clone()],
            rejected: vec![worst.turn.clone()],
            chosen_score: best.value(),
            rejected_score: worst.value(),
        };
        let valid = best.scores.iter().all(|s| s.valid);
        filter.judge(pair, valid, &mut report, &mut pairs);
    }
    progress.set_message(format!("{} pairs", pairs.len()));
    progress.finish();
    report.seconds = start.elapsed().as_secs_f64();
    Ok((pairs, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Protocol;
    use crate::prompts::held_out_prompts;

    #[test]
    fn a_replayed_environment_continues_where_the_history_left_off() {
        let prompt = held_out_prompts(0, 1, Protocol::Text, false)
            .unwrap()
            .remove(0);
        // Two replies the household world answers without ending the game.
        let mut env = prompt.env();
        let opening = env.reset().unwrap();
        let mut history = Vec::new();
        for reply in ["THOUGHT: I look first.\nACTION: look", "ACTION: inventory"] {
            let reply = Message::assistant(reply);
            let step = env.step(&reply).unwrap();
            assert!(!step.done);
            history.push(reply);
            history.extend(step.observation);
        }
        let mut replay = Replay {
            env: prompt.env(),
            history: history.clone(),
        };
        let conversation = replay.reset().unwrap();
        assert_eq!(
            conversation.messages.len(),
            opening.messages.len() + history.len()
        );
        assert_eq!(
            &conversation.messages[opening.messages.len()..],
            &history[..]
        );
        // The replayed world is in the same state: the next step answers the same.
        let next = Message::assistant("ACTION: look");
        assert_eq!(replay.step(&next).unwrap(), env.step(&next).unwrap());

        // A history from another task is refused.
        let mut wrong = history.clone();
        wrong[1].content = "You see nothing at all.".into();
        let err = Replay {
            env: prompt.env(),
            history: wrong,
        }
        .reset()
        .unwrap_err()
        .to_string();
        assert!(err.contains("differently than recorded"), "{err}");
    }

    #[test]
    fn a_budget_ends_the_episode_after_its_replies_and_not_before() {
        let prompt = held_out_prompts(0, 1, Protocol::Text, false)
            .unwrap()
            .remove(0);
        let mut env = Budget {
            env: prompt.env(),
            left: 2,
        };
        env.reset().unwrap();
        let look = Message::assistant("THOUGHT: I look first.\nACTION: look");
        let first = env.step(&look).unwrap();
        assert!(!first.done && !first.observation.is_empty());
        let second = env.step(&look).unwrap();
        assert!(second.done && second.observation.is_empty());
        // The world underneath took both replies and still scores the unfinished game.
        assert!(!env.env.score().success);
    }
}
