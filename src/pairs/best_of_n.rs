//! Best-of-N self-play pairs: K episodes per prompt sampled from the policy at temperature
//! 0.8, scored by the environment; chosen = best, rejected = worst, kept when the filters
//! allow (gap ≥ 0.1, both sides longer than 10 characters, the chosen side keeps to the
//! protocol, no overlap with an evaluation set).

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Pair, PairDrop, PairSource, PairsReport, reply_text};
use crate::cache::{Fingerprint, reuse_or};
use crate::chat::{Conversation, Tokenizer};
use crate::data::contamination::ContaminationGuard;
use crate::env::{Protocol, TaskScore};
use crate::error::{Error, Result};
use crate::generate::{EpisodeEnd, PlayOptions, Sampling, play_part, task_parts};
use crate::model::{Decoder, Mode};
use crate::prompts::Prompt;

/// How pairs are sampled and filtered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairsConfig {
    /// Episodes sampled per prompt (K).
    pub samples: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling threshold (1 = off).
    pub top_p: f32,
    /// Prompts used at most (an evenly spaced subset of phase 02's; `None`: all).
    pub max_prompts: Option<usize>,
    /// Episodes played together.
    pub batch: usize,
    /// Most new tokens per reply.
    pub max_new_tokens: usize,
    /// Most replies per DB episode.
    pub db_turns: usize,
    /// Most replies per household episode.
    pub household_turns: usize,
    /// Most tokens per episode, prompt included.
    pub max_context: usize,
    /// Smallest score gap kept.
    pub min_gap: f64,
    /// Each side's replies must be longer than this many characters.
    pub min_chars: usize,
    /// DB Bench-format evaluation files the contamination guard checks against.
    pub eval_files: Vec<PathBuf>,
    /// Seed of the sampling.
    pub seed: u64,
}

impl PairsConfig {
    /// How the episodes are played: the policy (adapters on), sampling at the configured
    /// temperature and nucleus threshold, within the reply and context limits.
    pub fn play_options(&self) -> PlayOptions {
        PlayOptions {
            batch: self.batch,
            max_new_tokens: self.max_new_tokens,
            db_turns: self.db_turns,
            household_turns: self.household_turns,
            max_context: self.max_context,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                ..Sampling::greedy()
            },
            seed: self.seed,
            mode: Mode::Eval,
        }
    }

    /// The settings of an iterated method's round `round` (DPO, RFT): the same, with a
    /// sampling seed of the round's own.
    pub fn for_round(&self, round: usize) -> Self {
        Self {
            seed: self.seed.wrapping_add(round as u64 * 1_000_003),
            ..self.clone()
        }
    }

    /// The prompts used: all, or `max_prompts` evenly spaced ones (so every kind keeps its
    /// share).
    pub fn pick<'a>(&self, prompts: &'a [Prompt]) -> Vec<&'a Prompt> {
        crate::data::evenly_spaced(prompts, self.max_prompts)
    }
}

/// One sampled episode (a line of `samples.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Index of the prompt among those sampled.
    pub prompt: usize,
    /// Which of its K samples.
    pub sample: usize,
    /// The prompt's source.
    pub task: String,
    /// The task kind.
    pub kind: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The environment's verdict.
    pub score: TaskScore,
    /// Replies given.
    pub turns: usize,
    /// Why the episode ended.
    pub end: EpisodeEnd,
    /// The whole episode.
    pub conversation: Conversation,
    /// Messages of the opening.
    pub prompt_messages: usize,
}

impl Sample {
    /// The prompt this sample was played from, among the `prompts` that were sampled.
    pub fn prompt_in<'a>(&self, prompts: &[&'a Prompt]) -> Result<&'a Prompt> {
        prompts.get(self.prompt).copied().ok_or_else(|| {
            Error::Batch(format!(
                "sample of prompt {} but only {} prompts",
                self.prompt,
                prompts.len()
            ))
        })
    }
}

/// Where sampled parts are kept as they finish: `<dir>/samples-NNN.json`, each with the
/// fingerprint of what it was sampled from and which part it is.
#[derive(Debug, Clone)]
pub struct SavedParts {
    /// The folder of the parts.
    pub dir: PathBuf,
    /// What the samples depend on (policy, prompts, settings).
    pub fingerprint: Fingerprint,
}

impl SavedParts {
    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("samples-{part:03}.json"))
    }

    /// Removes the parts (once the whole sampling is saved).
    pub fn remove(&self) -> Result<()> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(|e| Error::io("removing", &self.dir, e))?;
        }
        Ok(())
    }
}

/// Plays `config.samples` episodes of every prompt with the policy (adapters on), sampling at
/// the configured temperature, in parts of a few generation batches ([`task_parts`]); a part
/// plays exactly as it would among all the tasks, so the parts make the same samples as one
/// whole play. With `saved`, each part is kept as it finishes and a later call with the same
/// fingerprint plays only the parts still missing.
pub fn sample_prompts(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    prompts: &[&Prompt],
    config: &PairsConfig,
    saved: Option<&SavedParts>,
) -> Result<Vec<Sample>> {
    if config.samples < 2 {
        return Err(Error::InvalidConfig {
            source_name: "PairsConfig".into(),
            reason: "best-of-N needs at least 2 samples per prompt".into(),
        });
    }
    let tasks: Vec<Prompt> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n((*p).clone(), config.samples))
        .collect();
    let options = config.play_options();
    let parts = task_parts(&tasks, config.batch);
    let mut slots: Vec<Option<Sample>> = vec![None; tasks.len()];
    for (p, part) in parts.iter().enumerate() {
        let label = if parts.len() == 1 {
            "04 pairs · sampling".to_string()
        } else {
            format!("04 pairs · sampling, part {} of {}", p + 1, parts.len())
        };
        let play = || -> Result<Vec<Sample>> {
            let played = play_part(decoder, tokenizer, &tasks, part, &options, &label)?;
            Ok(part
                .tasks
                .iter()
                .zip(played)
                .map(|(&i, played)| {
                    let prompt = &tasks[i];
                    Sample {
                        prompt: i / config.samples,
                        sample: i % config.samples,
                        task: prompt.source(),
                        kind: prompt.kind(),
                        protocol: prompt.protocol(),
                        score: played.score,
                        turns: played.episode.turns(),
                        end: played.episode.end,
                        prompt_messages: played.episode.prompt_messages,
                        conversation: played.episode.conversation,
                    }
                })
                .collect())
        };
        let samples = match saved {
            Some(saved) => {
                let fingerprint = saved.fingerprint.clone().value("part", &(p, parts.len()))?;
                reuse_or(&saved.path(p), &fingerprint, play)?
            }
            None => play()?,
        };
        if samples.len() != part.tasks.len() {
            return Err(Error::Batch(format!(
                "sampling part {p} holds {} samples for {} tasks",
                samples.len(),
                part.tasks.len()
            )));
        }
        for s in samples {
            let i = s.prompt * config.samples + s.sample;
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(s);
            }
        }
    }
    let samples: Vec<Sample> = slots.into_iter().flatten().collect();
    if samples.len() != tasks.len() {
        return Err(Error::Batch(format!(
            "sampling made {} samples for {} tasks",
            samples.len(),
            tasks.len()
        )));
    }
    Ok(samples)
}

/// The filters a candidate pair must pass (gap, length, protocol, contamination), and the
/// bookkeeping of what they kept and dropped.
#[derive(Debug)]
pub struct PairFilter {
    min_gap: f64,
    min_chars: usize,
    guard: ContaminationGuard,
}

impl PairFilter {
    /// The filters of `config`, the contamination guard loaded from its evaluation files.
    pub fn new(config: &PairsConfig) -> Result<Self> {
        let mut guard = ContaminationGuard::new(8);
        for path in &config.eval_files {
            guard = guard.with_dbbench(path)?;
        }
        Ok(Self {
            min_gap: config.min_gap,
            min_chars: config.min_chars,
            guard,
        })
    }

    /// Why `pair` must be dropped, if it must (`chosen_valid`: whether the chosen episode kept
    /// to its protocol).
    pub fn check(&self, pair: &Pair, chosen_valid: bool) -> Option<PairDrop> {
        if pair.gap() < self.min_gap - 1e-12 {
            return Some(PairDrop::NoGap);
        }
        if reply_text(&pair.chosen).chars().count() <= self.min_chars
            || reply_text(&pair.rejected).chars().count() <= self.min_chars
        {
            return Some(PairDrop::TooShort);
        }
        if !chosen_valid {
            return Some(PairDrop::ChosenInvalid);
        }
        let (chosen, rejected) = pair.conversations();
        let text: Vec<&str> = chosen
            .messages
            .iter()
            .chain(&rejected.messages[pair.prompt.messages.len()..])
            .map(|m| m.content.as_str())
            .collect();
        self.guard
            .check_text(&text.join("\n"))
            .map(|_| PairDrop::Contaminated)
    }

    /// Checks `pair` and records the outcome: kept pairs go to `pairs` with their gap in the
    /// report, dropped ones are counted by reason.
    pub fn judge(
        &self,
        pair: Pair,
        chosen_valid: bool,
        report: &mut PairsReport,
        pairs: &mut Vec<Pair>,
    ) {
        match self.check(&pair, chosen_valid) {
            Some(reason) => *report.dropped.entry(reason).or_default() += 1,
            None => {
                report.gaps.push(pair.gap());
                if let Some(e) = report.sources.get_mut(&pair.task) {
                    e.pairs += 1;
                }
                pairs.push(pair);
            }
        }
    }
}

impl Pair {
    /// A pair of two episodes of the same prompt.
    pub fn of(chosen: &Sample, rejected: &Sample, source: PairSource) -> Self {
        let continuation = |s: &Sample| s.conversation.messages[s.prompt_messages..].to_vec();
        Pair {
            task: chosen.task.clone(),
            kind: chosen.kind.clone(),
            protocol: chosen.protocol,
            source,
            prompt: Conversation {
                messages: chosen.conversation.messages[..chosen.prompt_messages].to_vec(),
                tools: chosen.conversation.tools.clone(),
            },
            chosen: continuation(chosen),
            rejected: continuation(rejected),
            chosen_score: chosen.score.score,
            rejected_score: rejected.score.score,
        }
    }
}

/// Best and worst sample of each prompt as a pair, where the filters allow; with the report of
/// yields and drops. `seconds` (the sampling time) is recorded in the report.
pub fn best_of_n_pairs(
    samples: &[Sample],
    config: &PairsConfig,
    seconds: f64,
) -> Result<(Vec<Pair>, PairsReport)> {
    let start = Instant::now();
    let filter = PairFilter::new(config)?;
    let mut report = PairsReport::default();
    let mut pairs = Vec::new();
    for group in samples.chunk_by(|a, b| a.prompt == b.prompt) {
        let first = &group[0];
        let entry = report.sources.entry(first.task.clone()).or_default();
        entry.prompts += 1;
        entry.samples += group.len();
        entry.solved += group.iter().filter(|s| s.score.success).count();
        // Best: highest score, the shorter episode on ties; worst: lowest score.
        let best = group
            .iter()
            .max_by(|a, b| {
                a.score
                    .score
                    .total_cmp(&b.score.score)
                    .then(b.turns.cmp(&a.turns))
            })
            .unwrap_or(first);
        let worst = group
            .iter()
            .min_by(|a, b| a.score.score.total_cmp(&b.score.score))
            .unwrap_or(first);
        let pair = Pair::of(best, worst, PairSource::BestOfN);
        filter.judge(pair, best.score.valid, &mut report, &mut pairs);
    }
    report.seconds = seconds + start.elapsed().as_secs_f64();
    Ok((pairs, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Message;
    use crate::config::{Profile, Scale};
    use crate::presets::Presets;

    fn sample(prompt: usize, i: usize, score: f64, valid: bool, reply: &str) -> Sample {
        Sample {
            prompt,
            sample: i,
            task: "db/synthetic".into(),
            kind: "counting".into(),
            protocol: Protocol::Text,
            score: TaskScore {
                success: score >= 1.0,
                score,
                valid,
            },
            turns: 1,
            end: EpisodeEnd::Done,
            conversation: Conversation::new(vec![
                Message::system("You are a SQL agent."),
                Message::user(format!("question {prompt}")),
                Message::assistant(reply),
            ]),
            prompt_messages: 2,
        }
    }

    fn config() -> PairsConfig {
        PairsConfig {
            eval_files: vec![],
            ..Presets::resolve(Profile::Tiny, Scale::Full).unwrap().pairs
        }
    }

    #[test]
    fn best_and_worst_become_a_pair_and_each_filter_drops_its_case() {
        let long = "Action: Answer\nFinal Answer: [\"12\"]";
        let samples = vec![
            // Prompt 0: scores 0.25, 1, -0.5 → chosen 1, rejected -0.5.
            sample(0, 0, 0.25, true, long),
            sample(0, 1, 1.0, true, "Action: Answer\nFinal Answer: [\"3\"]"),
            sample(0, 2, -0.5, false, "I think the answer is 3"),
            // Prompt 1: every sample failed alike.
            sample(1, 0, 0.0, true, long),
            sample(1, 1, 0.05, true, long),
            // Prompt 2: the worse side wrote almost nothing.
            sample(2, 0, 1.0, true, long),
            sample(2, 1, -0.5, false, "ok"),
            // Prompt 3: the best side broke the protocol.
            sample(3, 0, 0.5, false, long),
            sample(3, 1, -0.25, true, long),
        ];
        let (pairs, report) = best_of_n_pairs(&samples, &config(), 1.5).unwrap();
        assert_eq!(pairs.len(), 1);
        let p = &pairs[0];
        assert_eq!((p.chosen_score, p.rejected_score), (1.0, -0.5));
        assert_eq!(p.prompt.messages.len(), 2);
        assert_eq!(p.chosen[0].content, "Action: Answer\nFinal Answer: [\"3\"]");
        assert_eq!(p.rejected[0].content, "I think the answer is 3");
        assert_eq!(report.gaps, vec![1.5]);
        assert_eq!(report.dropped[&PairDrop::NoGap], 1);
        assert_eq!(report.dropped[&PairDrop::TooShort], 1);
        assert_eq!(report.dropped[&PairDrop::ChosenInvalid], 1);
        let db = &report.sources["db/synthetic"];
        assert_eq!((db.prompts, db.samples, db.solved, db.pairs), (4, 9, 2, 1));
        assert!((report.pair_yield() - 0.25).abs() < 1e-12);
        assert!(report.seconds >= 1.5);
        // Only the continuation is trained: the shared opening is marked.
        let (chosen, rejected) = p.conversations();
        assert!(chosen.messages[..2].iter().all(|m| !m.train));
        assert!(chosen.messages[2].train && rejected.messages[2].train);
        assert_eq!(report.table().unwrap().rows().len(), 2);
    }

    #[test]
    fn a_pair_says_in_a_line_what_it_teaches() {
        let solved = sample(0, 0, 1.0, true, "Action: Answer\nFinal Answer: [\"3\"]");
        let wrong = sample(0, 1, 0.2, true, "Action: Answer\nFinal Answer: [\"4\"]");
        let pair = Pair::of(&solved, &wrong, PairSource::BestOfN);
        assert_eq!(
            pair.why(),
            "the best and the worst of the policy's samples: solved (1.00) over a wrong answer \
             sharing 40% of the gold rows (0.20), a gap of 0.80"
        );
        let broken = sample(0, 2, -0.5, false, "SELECT");
        let out_of_rounds = sample(0, 3, -0.25, true, "Action: Operation");
        let both_failed = Pair::of(&out_of_rounds, &broken, PairSource::BestOfN);
        assert!(
            both_failed
                .why()
                .contains("out of rounds (-0.25) over a reply that broke the protocol (-0.50)"),
            "{}",
            both_failed.why()
        );
        let transcript = pair.transcript(true).to_text();
        assert!(
            transcript.contains("kept because: the best and the worst"),
            "{transcript}"
        );
    }

    #[test]
    fn pairs_that_quote_an_evaluation_question_are_dropped() {
        let dev = crate::paths::dbbench_dev_items();
        let items = crate::env::db::DbItem::read_jsonl(&dev).unwrap();
        let leaked = format!("Action: Answer\nFinal Answer: {}", items[0].description);
        let samples = vec![
            sample(0, 0, 1.0, true, &leaked),
            sample(0, 1, -0.5, false, "Action: nothing useful"),
        ];
        let config = PairsConfig {
            eval_files: vec![dev],
            ..config()
        };
        let (pairs, report) = best_of_n_pairs(&samples, &config, 0.0).unwrap();
        assert!(pairs.is_empty());
        assert_eq!(report.dropped[&PairDrop::Contaminated], 1);
    }

    #[test]
    fn an_evenly_spaced_subset_keeps_every_part_of_the_prompt_list() {
        let prompts = crate::prompts::held_out_prompts(12, 6, Protocol::Text, true).unwrap();
        let config = PairsConfig {
            max_prompts: Some(6),
            ..config()
        };
        let picked = config.pick(&prompts);
        assert_eq!(picked.len(), 6);
        assert!(picked.iter().any(|p| matches!(p, Prompt::Household(_))));
        assert!(picked.iter().any(|p| matches!(p, Prompt::Db(_))));
    }
}
