//! Phase 04: preference pairs for DPO (method.md, 04).
//!
//! A [`Pair`] is a shared opening (the task as the agent first sees it) and two continuations,
//! each a whole multi-turn episode — replies and the observations they drew — scored by the
//! environment ([`crate::env::TaskScore`]). [`best_of_n`] samples K episodes per prompt from the
//! current policy and keeps the best and the worst where the filters allow; [`teacher`] pairs a
//! teacher model's episode (any OpenAI-compatible endpoint) with the student's worst;
//! [`step_level`] pairs two next turns after the same history, valued by rollouts; the result is
//! `runs/<name>/04_pairs/pairs.jsonl`, with every sample in `samples.jsonl` and the yield in
//! `report.json`.

pub mod best_of_n;
pub mod step_level;
pub mod teacher;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::{Fingerprint, reuse_or};
use crate::chat::{Conversation, Message, Role};
use crate::display::Show;
use crate::env::Protocol;
use crate::error::Result;
use crate::table::Table;

pub use best_of_n::{PairFilter, PairsConfig, Sample, SavedParts, best_of_n_pairs, sample_prompts};
pub use step_level::{Replay, StepLevelConfig, step_level_pairs};
pub use teacher::{
    TEACHER_MODELS, TeacherClient, TeacherConfig, TeacherStats, is_teacher_model, teacher_pairs,
};

/// How a pair was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairSource {
    /// Best and worst of K samples from the policy.
    BestOfN,
    /// A teacher model's episode (chosen) against the student's worst sample (rejected).
    Teacher,
    /// Two next turns after the same history, valued by rollouts from there.
    StepLevel,
}

/// One preference pair: a shared opening and a better and a worse continuation of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// The prompt's source (`db/synthetic`, `household`).
    pub task: String,
    /// The task kind.
    pub kind: String,
    /// The protocol both sides speak.
    pub protocol: Protocol,
    /// How the pair was made.
    pub source: PairSource,
    /// What both sides share: the opening messages (and tools) of the episode.
    pub prompt: Conversation,
    /// The better continuation: the agent's replies with the observations between them.
    pub chosen: Vec<Message>,
    /// The worse continuation.
    pub rejected: Vec<Message>,
    /// The chosen side's score.
    pub chosen_score: f64,
    /// The rejected side's score.
    pub rejected_score: f64,
}

impl Pair {
    /// `chosen_score − rejected_score`.
    pub fn gap(&self) -> f64 {
        self.chosen_score - self.rejected_score
    }

    /// The two sides as whole conversations (chosen, rejected), the shared opening marked not
    /// for training, so that only the continuation's replies carry log-probs.
    pub fn conversations(&self) -> (Conversation, Conversation) {
        let side = |continuation: &[Message]| {
            let mut c = self.prompt.clone();
            for m in &mut c.messages {
                m.train = false;
            }
            c.messages.extend(continuation.iter().cloned());
            c
        };
        (side(&self.chosen), side(&self.rejected))
    }
}

impl Pair {
    /// One side as a transcript (`chosen` or the rejected one), the shared opening folded.
    pub fn transcript(&self, chosen: bool) -> crate::transcript::Transcript {
        let (c, r) = self.conversations();
        let (conversation, score, name) = if chosen {
            (c, self.chosen_score, "chosen")
        } else {
            (r, self.rejected_score, "rejected")
        };
        crate::transcript::Transcript::new(&conversation)
            .fold_first(self.prompt.messages.len().saturating_sub(1))
            .with_title(format!("{name} · {} · {}", self.task, self.kind))
            .with_fact("score", format!("{score:.2}"))
            .with_fact("kept because", self.why())
    }

    /// One line on what the pair teaches: what each side did, by its score.
    pub fn why(&self) -> String {
        use crate::reward::grade::describe;
        let household = self.task.starts_with("household");
        let (better, worse) = (
            describe(self.chosen_score, household),
            describe(self.rejected_score, household),
        );
        let how = match self.source {
            PairSource::BestOfN => "the best and the worst of the policy's samples",
            PairSource::Teacher => "the teacher's episode against the student's worst sample",
            PairSource::StepLevel => "two next turns valued by rollouts from the same point",
        };
        format!(
            "{how}: {better} ({:.2}) over {worse} ({:.2}), a gap of {:.2}",
            self.chosen_score,
            self.rejected_score,
            self.gap()
        )
    }
}

/// The text the agent wrote in a continuation (replies and tool-call arguments).
pub fn reply_text(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages.iter().filter(|m| m.role == Role::Assistant) {
        out.push_str(&m.content);
        for call in &m.tool_calls {
            out.push_str(&call.arguments_json());
        }
    }
    out
}

/// Why a prompt gave no pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairDrop {
    /// Best and worst differ by less than the minimum gap (often: all samples failed alike).
    NoGap,
    /// A side wrote no more than the minimum number of characters.
    TooShort,
    /// The best sample broke the protocol.
    ChosenInvalid,
    /// The pair's text overlaps an evaluation set.
    Contaminated,
}

/// Pairs and samples per task source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceYield {
    /// Prompts sampled.
    pub prompts: usize,
    /// Samples the environment scored solved.
    pub solved: usize,
    /// Samples played.
    pub samples: usize,
    /// Pairs kept.
    pub pairs: usize,
}

/// What phase 04 made of its prompts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairsReport {
    /// Per task source (`db/synthetic`, `household`).
    pub sources: BTreeMap<String, SourceYield>,
    /// Prompts without a pair, by reason.
    pub dropped: BTreeMap<PairDrop, usize>,
    /// Score gap of every pair kept.
    pub gaps: Vec<f64>,
    /// Seconds spent sampling.
    pub seconds: f64,
}

impl PairsReport {
    /// Pairs kept over prompts sampled.
    pub fn pair_yield(&self) -> f64 {
        let prompts: usize = self.sources.values().map(|s| s.prompts).sum();
        let pairs: usize = self.sources.values().map(|s| s.pairs).sum();
        pairs as f64 / prompts.max(1) as f64
    }

    /// One row per source and a total: prompts, samples, solved share, pairs, yield.
    pub fn table(&self) -> Result<Table> {
        let mut t = Table::new(["source", "prompts", "samples", "solved", "pairs", "yield"])
            .with_title("04 pairs · yield");
        let mut total = SourceYield::default();
        let rows = self
            .sources
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>();
        for (_, v) in &rows {
            total.prompts += v.prompts;
            total.samples += v.samples;
            total.solved += v.solved;
            total.pairs += v.pairs;
        }
        for (name, v) in rows.into_iter().chain([("all", total)]) {
            t.push_row([
                name.to_string(),
                v.prompts.to_string(),
                v.samples.to_string(),
                format!("{:.1} %", 100.0 * v.solved as f64 / v.samples.max(1) as f64),
                v.pairs.to_string(),
                format!("{:.0} %", 100.0 * v.pairs as f64 / v.prompts.max(1) as f64),
            ])?;
        }
        Ok(t)
    }

    /// Prompts without a pair, by reason.
    pub fn dropped_table(&self) -> Result<Table> {
        let mut t = Table::new(["reason", "prompts"]).with_title("04 pairs · no pair");
        for (reason, n) in &self.dropped {
            t.push_row([format!("{reason:?}"), n.to_string()])?;
        }
        Ok(t)
    }

    /// Histogram of the score gaps of the pairs kept.
    pub fn gap_chart(&self) -> Result<crate::plot::Svg> {
        crate::plot::Histogram::new("score gap, chosen − rejected")
            .x_label("gap")
            .bins(12)
            .series("pairs", self.gaps.iter().copied())
            .render()
    }
}

impl Show for PairsReport {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        match self.table() {
            Ok(t) => t.mime_bundle(),
            Err(e) => vec![("text/plain", e.to_string())],
        }
    }
}

/// `04_pairs/pairs.jsonl` in a phase directory.
pub fn pairs_path(phase_dir: &Path) -> PathBuf {
    phase_dir.join("pairs.jsonl")
}

/// What phase 04 samples from: the pairs settings, the prompts and the policy (base model and
/// the adapter's files) — the fingerprint of its saved samples (see [`crate::cache`]).
pub fn sampling_fingerprint<P: Serialize>(
    base_model: &str,
    adapter: &Path,
    config: &PairsConfig,
    prompts: &[P],
) -> Result<Fingerprint> {
    Fingerprint::new()
        .value("pairs config", config)?
        .value("prompts", prompts)?
        .model(base_model, Some(adapter))
}

/// Phase 04's best-of-N episodes (`<phase>/cache/samples.json`) and the seconds sampling took:
/// the saved ones if they were sampled with the same `fingerprint`
/// ([`sampling_fingerprint`]), else `sample`d now, its parts kept as they finish in
/// `<phase>/cache/parts/` (so a sampling cut off resumes), and saved whole.
pub fn saved_samples(
    phase_dir: &Path,
    fingerprint: &Fingerprint,
    sample: impl FnOnce(&SavedParts) -> Result<Vec<Sample>>,
) -> Result<(Vec<Sample>, f64)> {
    let parts = SavedParts {
        dir: phase_dir.join("cache/parts"),
        fingerprint: fingerprint.clone(),
    };
    let saved = reuse_or(&phase_dir.join("cache/samples.json"), fingerprint, || {
        let started = std::time::Instant::now();
        let samples = sample(&parts)?;
        Ok((samples, started.elapsed().as_secs_f64()))
    })?;
    parts.remove()?;
    Ok(saved)
}

/// Phase 04's step-level pairs and their report (`<phase>/cache/step_level.json`): the saved
/// ones if they were made from the same samples with the same settings and policy, else `make`d
/// now and saved.
pub fn saved_step_level_pairs(
    phase_dir: &Path,
    fingerprint: &Fingerprint,
    config: &StepLevelConfig,
    samples: &[Sample],
    make: impl FnOnce() -> Result<(Vec<Pair>, PairsReport)>,
) -> Result<(Vec<Pair>, PairsReport)> {
    let fingerprint = fingerprint
        .clone()
        .value("step-level config", config)?
        .value("samples", samples)?;
    reuse_or(&phase_dir.join("cache/step_level.json"), &fingerprint, make)
}

/// `samples.jsonl` in a phase directory: every episode sampled, one per line.
pub fn samples_path(phase_dir: &Path) -> PathBuf {
    phase_dir.join("samples.jsonl")
}

/// Writes `pairs.jsonl`, `samples.jsonl` and `report.json` into the phase directory.
pub fn write_pairs(
    phase_dir: &Path,
    pairs: &[Pair],
    samples: &[Sample],
    report: &PairsReport,
) -> Result<()> {
    crate::io::create_dir_all(phase_dir)?;
    crate::io::write_jsonl(&samples_path(phase_dir), samples)?;
    crate::io::write_json(&phase_dir.join("report.json"), report)?;
    crate::io::write_jsonl(&pairs_path(phase_dir), pairs)
}

/// Reads `samples.jsonl` (every episode phase 04 sampled) of a phase directory; a missing file
/// names the phase that writes it.
pub fn read_samples(phase_dir: &Path) -> Result<Vec<Sample>> {
    read_phase_file(samples_path(phase_dir))
}

/// Reads `pairs.jsonl` of a phase directory; a missing file names the phase that writes it.
pub fn read_pairs(phase_dir: &Path) -> Result<Vec<Pair>> {
    read_phase_file(pairs_path(phase_dir))
}

/// Reads a JSON-lines file phase 04 writes; a missing one names the phase.
fn read_phase_file<T: serde::de::DeserializeOwned>(path: PathBuf) -> Result<Vec<T>> {
    if !path.is_file() {
        return Err(crate::error::Error::MissingFile {
            path,
            hint: "run phase 04 first (notebooks/04_pairs.ipynb or `abt pairs`)".into(),
        });
    }
    crate::io::read_jsonl(&path)
}
