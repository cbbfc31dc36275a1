//! Rejection-sampling fine-tuning (RFT, expert iteration: RAFT, ReST-EM): the policy's own
//! successful episodes, a few per prompt, mixed with SFT records and trained on with the SFT
//! trainer; in rounds, each sampling the policy the round before trained.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::sft::SftConfig;
use crate::data::{SftRecord, evenly_spaced, freeze_opening};
use crate::error::{Error, Result};
use crate::pairs::{Sample, reply_text};
use crate::table::Table;

/// The `source` of a record made from a kept episode.
pub const RFT_SOURCE: &str = "rft";

/// Everything an RFT run is configured by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RftConfig {
    /// The SFT trainer's settings, for the kept episodes and the SFT records mixed in.
    #[serde(flatten)]
    pub sft: SftConfig,
    /// Successful episodes kept per prompt at most (distinct replies only).
    pub per_prompt: usize,
    /// SFT records mixed in per kept episode (1 is RAFT's and ReST-EM's 1 : 1).
    pub sft_mix: f64,
    /// Rounds of sample → keep → train: the first keeps phase 04's samples, each later one
    /// samples the latest policy with phase 04's settings.
    pub rounds: usize,
}

impl RftConfig {
    /// Checks the settings that have no natural reading outside their range.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                source_name: "[rft]".into(),
                reason: reason.into(),
            })
        };
        if self.per_prompt == 0 {
            return invalid("per_prompt must be at least 1");
        }
        if !(self.sft_mix.is_finite() && self.sft_mix >= 0.0) {
            return invalid("sft_mix must be a number ≥ 0");
        }
        if self.rounds == 0 {
            return invalid("rounds must be at least 1");
        }
        Ok(())
    }
}

/// What one round kept from its samples (`<phase>/report.json`, a round's `round-N/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RftReport {
    /// The round (1 keeps phase 04's samples).
    pub round: usize,
    /// Episodes sampled.
    pub samples: usize,
    /// Of them, those that solved their task.
    pub solved: usize,
    /// Prompts sampled.
    pub prompts: usize,
    /// Prompts with at least one success.
    pub prompts_solved: usize,
    /// Successful episodes kept (at most `per_prompt` per prompt, distinct replies).
    pub kept: usize,
    /// SFT records mixed in.
    pub sft_mixed: usize,
    /// Kept episodes per task (`db/synthetic`, `household`).
    pub kept_by_task: BTreeMap<String, usize>,
}

impl RftReport {
    /// The report as a two-column table.
    pub fn table(&self) -> Table {
        let share = |n: usize, of: usize| format!("{n} of {of}");
        let mut rows = vec![
            ("round", self.round.to_string()),
            ("episodes solved", share(self.solved, self.samples)),
            ("prompts solved", share(self.prompts_solved, self.prompts)),
            ("episodes kept", self.kept.to_string()),
            ("SFT records mixed in", self.sft_mixed.to_string()),
        ];
        for (task, n) in &self.kept_by_task {
            rows.push(("kept", format!("{n} {task}")));
        }
        Table::settings("rejection sampling", rows)
    }
}

/// The successful samples kept for training: per prompt, in sample order, at most
/// `per_prompt` whose replies differ from those already kept.
pub fn keep_successes(samples: &[Sample], per_prompt: usize) -> Vec<&Sample> {
    let mut kept: BTreeMap<usize, Vec<&Sample>> = BTreeMap::new();
    let mut seen: BTreeSet<(usize, String)> = BTreeSet::new();
    for s in samples.iter().filter(|s| s.score.success) {
        let group = kept.entry(s.prompt).or_default();
        if group.len() >= per_prompt {
            continue;
        }
        let replies = reply_text(
            s.conversation
                .messages
                .get(s.prompt_messages..)
                .unwrap_or(&[]),
        );
        if seen.insert((s.prompt, replies)) {
            group.push(s);
        }
    }
    kept.into_values().flatten().collect()
}

/// A kept episode as an SFT record: the opening (the task as the agent first saw it) not
/// trained, the agent's replies trained.
pub fn sample_record(sample: &Sample) -> SftRecord {
    let mut conversation = sample.conversation.clone();
    freeze_opening(&mut conversation, sample.prompt_messages);
    SftRecord {
        conversation,
        source: RFT_SOURCE.into(),
        kind: sample.kind.clone(),
        protocol: Some(sample.protocol),
    }
}

/// One round's training records: the successes [`keep_successes`] keeps, each as
/// [`sample_record`], then `sft_mix` SFT records per kept episode, evenly spaced over `sft` (so
/// each source keeps its share). An error when nothing solved its task: there is nothing to
/// reinforce.
pub fn rft_records(
    samples: &[Sample],
    sft: &[SftRecord],
    config: &RftConfig,
    round: usize,
) -> Result<(Vec<SftRecord>, RftReport)> {
    config.validate()?;
    let kept = keep_successes(samples, config.per_prompt);
    let prompts: BTreeSet<usize> = samples.iter().map(|s| s.prompt).collect();
    let solved: BTreeSet<usize> = samples
        .iter()
        .filter(|s| s.score.success)
        .map(|s| s.prompt)
        .collect();
    if kept.is_empty() {
        return Err(Error::Batch(format!(
            "RFT round {round}: none of the {} sampled episodes solved its task, so there is \
             nothing to reinforce; train SFT further or sample more (phase 04's `samples`, \
             `max_prompts`)",
            samples.len()
        )));
    }
    let mixed = (config.sft_mix * kept.len() as f64).round() as usize;
    let mut records: Vec<SftRecord> = kept.iter().map(|s| sample_record(s)).collect();
    records.extend(evenly_spaced(sft, Some(mixed)).into_iter().cloned());
    let mut kept_by_task = BTreeMap::new();
    for s in &kept {
        *kept_by_task.entry(s.task.clone()).or_insert(0) += 1;
    }
    let report = RftReport {
        round,
        samples: samples.len(),
        solved: samples.iter().filter(|s| s.score.success).count(),
        prompts: prompts.len(),
        prompts_solved: solved.len(),
        kept: kept.len(),
        sft_mixed: records.len() - kept.len(),
        kept_by_task,
    };
    Ok((records, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Conversation, Message};
    use crate::env::{Protocol, TaskScore};
    use crate::generate::EpisodeEnd;

    fn sample(prompt: usize, sample: usize, success: bool, reply: &str) -> Sample {
        Sample {
            prompt,
            sample,
            task: "db/synthetic".into(),
            kind: "count".into(),
            protocol: Protocol::Text,
            score: TaskScore {
                success,
                score: if success { 1.0 } else { 0.0 },
                valid: true,
            },
            turns: 1,
            end: EpisodeEnd::Done,
            conversation: Conversation::new(vec![
                Message::system("rules"),
                Message::user("task"),
                Message::assistant(reply),
            ]),
            prompt_messages: 2,
        }
    }

    fn config(per_prompt: usize, sft_mix: f64) -> RftConfig {
        RftConfig {
            sft: crate::presets::Presets::resolve(
                crate::config::Profile::Tiny,
                crate::config::Scale::Smoke,
            )
            .unwrap()
            .sft,
            per_prompt,
            sft_mix,
            rounds: 1,
        }
    }

    #[test]
    fn keeps_distinct_successes_up_to_the_cap_per_prompt() {
        let samples = vec![
            sample(0, 0, true, "a"),
            sample(0, 1, true, "a"),
            sample(0, 2, false, "b"),
            sample(0, 3, true, "c"),
            sample(0, 4, true, "d"),
            sample(1, 0, false, "a"),
            sample(2, 0, true, "a"),
        ];
        let kept: Vec<(usize, usize)> = keep_successes(&samples, 2)
            .iter()
            .map(|s| (s.prompt, s.sample))
            .collect();
        assert_eq!(kept, vec![(0, 0), (0, 3), (2, 0)]);
    }

    #[test]
    fn records_train_only_the_replies_and_mix_in_sft_records() {
        let samples = vec![sample(0, 0, true, "a"), sample(1, 0, true, "b")];
        let sft: Vec<SftRecord> = (0..10)
            .map(|i| SftRecord {
                conversation: Conversation::new(vec![
                    Message::user(format!("q{i}")),
                    Message::assistant("x"),
                ]),
                source: "synthetic_sql".into(),
                kind: "count".into(),
                protocol: None,
            })
            .collect();
        let (records, report) = rft_records(&samples, &sft, &config(2, 1.5), 1).unwrap();
        assert_eq!(report.kept, 2);
        assert_eq!(report.sft_mixed, 3);
        assert_eq!(report.prompts_solved, 2);
        assert_eq!(records.len(), 5);
        let trained: Vec<bool> = records[0]
            .conversation
            .messages
            .iter()
            .map(|m| m.train)
            .collect();
        assert_eq!(trained, vec![false, false, true]);
        assert_eq!(records[0].source, RFT_SOURCE);
        assert_eq!(records[2].source, "synthetic_sql");
    }

    #[test]
    fn no_success_is_a_clear_error() {
        let samples = vec![sample(0, 0, false, "a")];
        let e = rft_records(&samples, &[], &config(2, 1.0), 3).unwrap_err();
        assert!(e.to_string().contains("round 3"), "{e}");
        assert!(e.to_string().contains("nothing to reinforce"), "{e}");
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(config(0, 1.0).validate().is_err());
        assert!(config(1, -1.0).validate().is_err());
        assert!(config(1, f64::NAN).validate().is_err());
        assert!(config(1, 1.0).validate().is_ok());
    }
}
