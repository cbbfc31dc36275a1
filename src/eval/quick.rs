//! The quick held-out score: a model plays a fixed set of held-out tasks — synthetic DB Bench
//! items and household games of one [`Split`] (seeds no phase trains on: the dev split for
//! choosing settings, the test split for final comparisons) — with greedy decoding, and the share
//! it solves is reported per environment and task kind, with the mean graded reward.
//!
//! Two models scored on the same tasks are compared pair by pair ([`compare`]): the tasks only
//! one of them solves decide, and an exact two-sided sign test on them (McNemar's exact test)
//! says how likely a gap that large is when neither model is better.
//!
//! A run saves each score in parts as they are played ([`saved_quick_score`]), so an evaluation
//! that is killed keeps what it scored and the next call plays only the rest.
//!
//! ```ignore
//! let tasks = config.tasks()?;
//! let base = quick_score("base", &decoder, &tokenizer, &tasks, &config, Mode::Reference)?;
//! let sft = quick_score("sft", &decoder, &tokenizer, &tasks, &config, Mode::Eval)?;
//! compare(&base, &sft)?
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{Fingerprint, reuse_json_in, shared_dir};
use crate::chat::{Conversation, Tokenizer};
use crate::config::RunContext;
use crate::display::Show;
use crate::env::Protocol;
use crate::error::{Error, Result};
use crate::generate::{EpisodeEnd, PlayOptions, Sampling, play_tasks, task_parts};
use crate::model::{Decoder, Mode};
use crate::prompts::{Difficulty, Prompt, Split};
use crate::table::Table;

/// What a quick score plays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickConfig {
    /// Which held-out tasks: `dev` (choosing settings) or `test` (final comparisons).
    #[serde(default)]
    pub split: Split,
    /// Held-out DB tasks (balanced over the three difficulties).
    pub db: usize,
    /// Held-out household games (balanced over the six task types).
    pub household: usize,
    /// The protocol both speak.
    pub protocol: Protocol,
    /// Whether household games open with a solved example (as AgentBench's ALFWorld prompt).
    pub household_example: bool,
    /// Episodes played together (one generation batch).
    pub batch: usize,
    /// Most new tokens per reply.
    pub max_new_tokens: usize,
    /// Most replies per DB episode.
    pub db_turns: usize,
    /// Most replies per household episode.
    pub household_turns: usize,
    /// Most tokens per episode, prompt included.
    pub max_context: usize,
}

impl QuickConfig {
    /// The held-out tasks: the split's first `db` DB tasks and `household` games.
    pub fn tasks(&self) -> Result<Vec<Prompt>> {
        self.split.prompts(
            self.db,
            self.household,
            self.protocol,
            self.household_example,
        )
    }

    /// Where a run keeps the score labelled `label` (see [`quick_score_path`]).
    pub fn score_path(&self, run_dir: &Path, label: &str) -> PathBuf {
        quick_score_path(run_dir, self.split, label)
    }
}

/// Where a run keeps the score labelled `label` on `split`'s tasks:
/// `<run>/eval/quick_<label>.json` for the dev split, `<run>/eval/heldout_<label>.json` for the
/// test split.
pub fn quick_score_path(run_dir: &Path, split: Split, label: &str) -> PathBuf {
    let stem = match split {
        Split::Dev => "quick",
        Split::Test => "heldout",
    };
    run_dir.join("eval").join(format!("{stem}_{label}.json"))
}

/// How one task went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// `db/<source>` or `household`.
    pub source: String,
    /// The task kind.
    pub kind: String,
    /// Its difficulty.
    pub difficulty: Difficulty,
    /// Whether the environment scored it solved.
    pub success: bool,
    /// The episode's total environment reward.
    pub reward: f64,
    /// The graded score ([`crate::reward::TaskScore::score`]: 1 solved, partial credit for a
    /// wrong answer or household progress, negative for an episode out of rounds or a broken
    /// reply); absent from scores saved before it was recorded.
    #[serde(default)]
    pub score: Option<f64>,
    /// Replies given.
    pub turns: usize,
    /// Why the episode ended.
    pub end: EpisodeEnd,
    /// The whole conversation.
    pub conversation: Conversation,
    /// Messages of the opening (folded when shown).
    pub prompt_messages: usize,
}

/// A model's results on a task set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickScore {
    /// Which model (`base`, `sft`, …).
    pub label: String,
    /// One result per task, in task order.
    pub results: Vec<TaskResult>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The protocol played (scores saved before it was recorded read as `text`).
    #[serde(default)]
    pub protocol: Protocol,
    /// The split played (scores saved before it was recorded played the test split).
    #[serde(default)]
    pub split: Split,
}

impl QuickScore {
    /// Share of tasks solved, over every task or over one source (`db/…`, `household`; a
    /// prefix such as `db` matches every DB source).
    pub fn success_rate(&self, source: Option<&str>) -> f64 {
        match self.solved_of(source.unwrap_or("")) {
            (_, 0) => f64::NAN,
            (solved, played) => solved as f64 / played as f64,
        }
    }

    /// Tasks solved.
    pub fn solved(&self) -> usize {
        self.results.iter().filter(|r| r.success).count()
    }

    /// Solved and played tasks whose source starts with `source` (`db`, `household`; `""`:
    /// every task).
    pub fn solved_of(&self, source: &str) -> (usize, usize) {
        let picked = self.results.iter().filter(|r| r.source.starts_with(source));
        picked.fold((0, 0), |(solved, played), r| {
            (solved + usize::from(r.success), played + 1)
        })
    }

    /// The mean graded score of the episodes (NaN when there are none, or when a result saved
    /// before scores were recorded lacks one).
    pub fn mean_reward(&self) -> f64 {
        let sum: Option<f64> = self.results.iter().map(|r| r.score).sum();
        sum.map_or(f64::NAN, |sum| sum / self.results.len() as f64)
    }

    /// Solved / played per source and kind.
    pub fn by_kind(&self) -> BTreeMap<(String, String), (usize, usize)> {
        let mut out: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for r in &self.results {
            let e = out.entry((r.source.clone(), r.kind.clone())).or_default();
            e.0 += usize::from(r.success);
            e.1 += 1;
        }
        out
    }

    /// How the episodes ended: (end, count).
    pub fn ends(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in &self.results {
            *out.entry(format!("{:?}", r.end)).or_default() += 1;
        }
        out
    }

    /// Solved, played and mean replies per kind of the tasks whose source starts with
    /// `source` (`household`: success per household task type and mean steps).
    pub fn kind_table(&self, source: &str) -> Result<Table> {
        let mut t = Table::new(["kind", "played", "solved", "success", "mean replies"])
            .with_title(format!("{} · {source} by kind", self.label));
        let mut rows: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for r in self.results.iter().filter(|r| r.source.starts_with(source)) {
            let e = rows.entry(r.kind.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(r.success);
            e.2 += r.turns;
        }
        for (kind, (played, solved, turns)) in rows {
            t.push_row([
                kind.to_string(),
                played.to_string(),
                solved.to_string(),
                percent(solved, played),
                format!("{:.1}", turns as f64 / played as f64),
            ])?;
        }
        Ok(t)
    }

    /// Why the failed tasks failed (indices into `results`).
    pub fn errors(&self) -> crate::eval::ErrorReport {
        let failed = self.results.iter().enumerate().filter(|(_, r)| !r.success);
        crate::eval::ErrorReport::classify_all(
            self.protocol,
            self.results.len(),
            failed.map(|(i, r)| {
                let task = if r.source.starts_with("db") {
                    crate::eval::TaskShape::db_kind(&r.kind)
                } else {
                    crate::eval::TaskShape::Household
                };
                (
                    i,
                    task,
                    &r.conversation.messages[..],
                    r.prompt_messages,
                    r.end,
                )
            }),
        )
    }

    /// The transcript of task `i`.
    pub fn transcript(&self, i: usize) -> Option<crate::transcript::Transcript> {
        let r = self.results.get(i)?;
        Some(
            crate::transcript::Transcript::new(&r.conversation)
                .fold_first(r.prompt_messages.saturating_sub(1))
                .with_title(format!("{} · {} · {}", self.label, r.source, r.kind))
                .with_fact("solved", r.success)
                .with_fact("turns", r.turns)
                .with_fact("end", format!("{:?}", r.end)),
        )
    }

    /// Solved / played per source, one row each and a total.
    pub fn table(&self) -> Result<Table> {
        let mut t = Table::new(["tasks", "played", "solved", "success"])
            .with_title(format!("quick score · {}", self.label));
        let mut sources: Vec<String> = self.results.iter().map(|r| r.source.clone()).collect();
        sources.dedup();
        sources.sort();
        sources.dedup();
        for s in sources.iter().map(Some).chain([None]) {
            let picked: Vec<&TaskResult> = self
                .results
                .iter()
                .filter(|r| s.is_none_or(|s| &r.source == s))
                .collect();
            let solved = picked.iter().filter(|r| r.success).count();
            t.push_row([
                s.cloned().unwrap_or_else(|| "all".into()),
                picked.len().to_string(),
                solved.to_string(),
                percent(solved, picked.len()),
            ])?;
        }
        Ok(t)
    }
}

impl Show for QuickScore {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        match self.table() {
            Ok(t) => t.mime_bundle(),
            Err(e) => vec![("text/plain", e.to_string())],
        }
    }
}

fn percent(k: usize, n: usize) -> String {
    if n == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * k as f64 / n as f64)
    }
}

/// Where the parts of the score saved at `path` are kept while it is played:
/// `<dir>/parts/<stem>-<part>.json`.
fn part_path(path: &Path, part: usize) -> PathBuf {
    path.with_file_name("parts")
        .join(format!("{}{part:03}.json", part_prefix(path)))
}

/// What the names of the parts of the score saved at `path` start with: `<stem>-`.
fn part_prefix(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "score".into(), |s| s.to_string_lossy().into_owned());
    format!("{stem}-")
}

/// A stage's quick score in a run (at [`QuickConfig::score_path`]): the saved one if the same
/// model (base model and `adapter` files) played the same tasks with the same settings, else
/// played now, `play` being called on each part of the tasks in turn, and saved with its
/// fingerprint (see [`crate::cache`]). Each part is saved as soon as it is played, so a call
/// that is killed keeps what it scored and the next one plays only the parts still missing.
pub fn saved_quick_score(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    config: &QuickConfig,
    play: impl FnMut(&[Prompt]) -> Result<QuickScore>,
) -> Result<QuickScore> {
    let fingerprint = Fingerprint::new()
        .value("quick config", config)?
        .model(ctx.profile.base_model(), adapter)?;
    let path = config.score_path(&ctx.run_dir, label);
    played_in_parts(&shared_dir(), &path, &fingerprint, label, config, play)
}

/// [`saved_quick_score`] of the score at `path` with `fingerprint`, the machine's copies in
/// `shared`.
fn played_in_parts(
    shared: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    label: &str,
    config: &QuickConfig,
    mut play: impl FnMut(&[Prompt]) -> Result<QuickScore>,
) -> Result<QuickScore> {
    let score = reuse_json_in(shared, path, fingerprint, || {
        let tasks = config.tasks()?;
        let parts: Vec<Vec<usize>> = task_parts(&tasks, config.batch)
            .into_iter()
            .map(|p| p.tasks)
            .collect();
        let mut slots: Vec<Option<TaskResult>> = vec![None; tasks.len()];
        let mut seconds = 0.0;
        for (p, indices) in parts.iter().enumerate() {
            let part_tasks: Vec<Prompt> = indices.iter().map(|&i| tasks[i].clone()).collect();
            let part_fingerprint = fingerprint.clone().value("part", &(p, parts.len()))?;
            let part_file = part_path(path, p);
            let part: QuickScore = reuse_json_in(shared, &part_file, &part_fingerprint, || {
                println!(
                    "{label}: part {} of {} ({} tasks)",
                    p + 1,
                    parts.len(),
                    indices.len()
                );
                play(&part_tasks)
            })?;
            if part.results.len() != indices.len() {
                return Err(Error::Batch(format!(
                    "{} holds {} results for {} tasks",
                    part_file.display(),
                    part.results.len(),
                    indices.len()
                )));
            }
            seconds += part.seconds;
            for (&i, result) in indices.iter().zip(part.results) {
                slots[i] = Some(result);
            }
        }
        Ok(QuickScore {
            label: label.into(),
            results: slots.into_iter().flatten().collect(),
            seconds,
            protocol: config.protocol,
            split: config.split,
        })
    })?;
    remove_parts(path)?;
    Ok(score)
}

/// Removes the parts of the score saved at `path` (and their fingerprints) once it is whole.
fn remove_parts(path: &Path) -> Result<()> {
    let prefix = part_prefix(path);
    let Ok(entries) = std::fs::read_dir(path.with_file_name("parts")) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let file = entry.path();
            std::fs::remove_file(&file).map_err(|e| Error::io("removing", &file, e))?;
        }
    }
    Ok(())
}

/// Plays every task once with greedy decoding, `config.batch` episodes at a time, with the
/// decoder's adapters on (`Mode::Eval`) or off (`Mode::Reference`, the base model).
pub fn quick_score(
    label: &str,
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    tasks: &[Prompt],
    config: &QuickConfig,
    mode: Mode,
) -> Result<QuickScore> {
    let start = Instant::now();
    let options = PlayOptions {
        batch: config.batch,
        max_new_tokens: config.max_new_tokens,
        db_turns: config.db_turns,
        household_turns: config.household_turns,
        max_context: config.max_context,
        sampling: Sampling::greedy(),
        seed: 0,
        mode,
    };
    let played = play_tasks(
        decoder,
        tokenizer,
        tasks,
        &options,
        &format!("quick score · {label}"),
    )?;
    let results = tasks
        .iter()
        .zip(played)
        .map(|(task, p)| TaskResult {
            source: task.source(),
            kind: task.kind(),
            difficulty: task.difficulty(),
            success: p.score.success,
            reward: p.episode.reward(),
            score: Some(p.score.score),
            turns: p.episode.turns(),
            end: p.episode.end,
            prompt_messages: p.episode.prompt_messages,
            conversation: p.episode.conversation,
        })
        .collect();
    Ok(QuickScore {
        label: label.into(),
        results,
        seconds: start.elapsed().as_secs_f64(),
        protocol: config.protocol,
        split: config.split,
    })
}

/// Success per task kind, one bar series per score (`db/…` kinds first, then household).
pub fn kind_chart(scores: &[&QuickScore]) -> Result<crate::plot::Svg> {
    let mut keys: Vec<(String, String)> = scores
        .iter()
        .flat_map(|s| s.by_kind().into_keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut chart = crate::plot::BarChart::new("quick score: solved per task kind (%)")
        .y_label("solved (%)")
        .categories(keys.iter().map(|(_, kind)| kind.clone()));
    for score in scores {
        let by_kind = score.by_kind();
        chart = chart.series(
            score.label.clone(),
            keys.iter().map(|k| match by_kind.get(k) {
                Some(&(solved, played)) if played > 0 => 100.0 * solved as f64 / played as f64,
                _ => 0.0,
            }),
        );
    }
    chart.render()
}

/// Solved / played per task kind, one column per score (`db/…` kinds first, then household).
pub fn kind_table(scores: &[&QuickScore]) -> Result<Table> {
    let by_kind: Vec<_> = scores.iter().map(|s| s.by_kind()).collect();
    let mut keys: Vec<&(String, String)> = by_kind.iter().flat_map(BTreeMap::keys).collect();
    keys.sort();
    keys.dedup();
    let mut header = vec!["tasks".to_string(), "kind".to_string()];
    header.extend(scores.iter().map(|s| s.label.clone()));
    let mut t = Table::new(header).with_title("solved per task kind");
    for key in keys {
        let mut row = vec![key.0.clone(), key.1.clone()];
        row.extend(by_kind.iter().map(|b| {
            b.get(key).map_or_else(
                || "–".into(),
                |(solved, played)| format!("{solved} / {played}"),
            )
        }));
        t.push_row(row)?;
    }
    Ok(t)
}

/// Two models on the same tasks, pair by pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// The first model's label.
    pub a: String,
    /// The second model's label.
    pub b: String,
    /// Tasks played.
    pub tasks: usize,
    /// Solved by both.
    pub both: usize,
    /// Solved by `a` only.
    pub only_a: usize,
    /// Solved by `b` only.
    pub only_b: usize,
    /// Success rate of `b` minus that of `a`.
    pub gap: f64,
    /// The mean graded reward of `a`'s episodes.
    pub reward_a: f64,
    /// The mean graded reward of `b`'s episodes.
    pub reward_b: f64,
    /// Exact two-sided sign test on the discordant tasks: the probability of a split at
    /// least this uneven if each were a fair coin (1 when there are none).
    pub p_value: f64,
}

impl PairedComparison {
    /// A one-row-per-fact table.
    pub fn table(&self) -> Table {
        let rate = |k: usize| percent(k, self.tasks);
        Table::settings(
            format!("{} vs {}, task by task", self.b, self.a),
            [
                ("tasks".to_string(), self.tasks.to_string()),
                (format!("{} solved", self.a), rate(self.both + self.only_a)),
                (format!("{} solved", self.b), rate(self.both + self.only_b)),
                ("gap".into(), format!("{:+.1} points", 100.0 * self.gap)),
                (
                    format!("{} mean reward", self.a),
                    format!("{:.3}", self.reward_a),
                ),
                (
                    format!("{} mean reward", self.b),
                    format!("{:.3}", self.reward_b),
                ),
                ("solved by both".into(), self.both.to_string()),
                (format!("only {}", self.a), self.only_a.to_string()),
                (format!("only {}", self.b), self.only_b.to_string()),
                ("sign test p".into(), format!("{:.2e}", self.p_value)),
            ],
        )
    }
}

impl Show for PairedComparison {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        self.table().mime_bundle()
    }
}

/// Compares two scores of the same tasks.
pub fn compare(a: &QuickScore, b: &QuickScore) -> Result<PairedComparison> {
    if a.results.len() != b.results.len()
        || a.results
            .iter()
            .zip(&b.results)
            .any(|(x, y)| x.source != y.source || x.kind != y.kind)
    {
        return Err(Error::InvalidConfig {
            source_name: "compare".into(),
            reason: format!(
                "{} and {} were not scored on the same tasks",
                a.label, b.label
            ),
        });
    }
    let (mut both, mut only_a, mut only_b) = (0, 0, 0);
    for (x, y) in a.results.iter().zip(&b.results) {
        match (x.success, y.success) {
            (true, true) => both += 1,
            (true, false) => only_a += 1,
            (false, true) => only_b += 1,
            (false, false) => {}
        }
    }
    let tasks = a.results.len();
    let gap = if tasks == 0 {
        0.0
    } else {
        (only_b as f64 - only_a as f64) / tasks as f64
    };
    Ok(PairedComparison {
        a: a.label.clone(),
        b: b.label.clone(),
        tasks,
        both,
        only_a,
        only_b,
        gap,
        reward_a: a.mean_reward(),
        reward_b: b.mean_reward(),
        p_value: sign_test(only_a, only_b),
    })
}

/// Exact two-sided binomial test of `k` against `n - k` successes at p = ½:
/// `min(1, 2 · P[X ≤ min(k, n−k)])`.
pub fn sign_test(k: usize, l: usize) -> f64 {
    let n = k + l;
    if n == 0 {
        return 1.0;
    }
    let m = k.min(l);
    // Σ_{i ≤ m} C(n, i) / 2ⁿ, in log space so that large n does not overflow.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=m {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_c + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Conversation;

    /// A score of `tasks` without a model: a task counts as solved when its kind's name has an
    /// even length.
    fn fake(tasks: &[Prompt]) -> QuickScore {
        let results = tasks
            .iter()
            .map(|t| TaskResult {
                source: t.source(),
                kind: t.kind(),
                difficulty: t.difficulty(),
                success: t.kind().len() % 2 == 0,
                reward: t.kind().len() as f64,
                score: Some(t.kind().len() as f64),
                turns: 1,
                end: EpisodeEnd::Done,
                conversation: Conversation::new(vec![]),
                prompt_messages: 0,
            })
            .collect();
        QuickScore {
            label: "x".into(),
            results,
            seconds: 1.0,
            protocol: Protocol::Text,
            split: Split::Dev,
        }
    }

    #[test]
    fn a_score_cut_off_mid_way_resumes_from_its_saved_parts() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let path = dir.path().join("eval").join("quick_x.json");
        let tiny = crate::presets::Presets::resolve(
            crate::config::Profile::Tiny,
            crate::config::Scale::Full,
        )
        .unwrap();
        // Parts of four tasks of one environment: DB 4 + 3, household 3.
        let config = QuickConfig {
            db: 7,
            household: 3,
            batch: 1,
            ..tiny.quick
        };
        let fingerprint = Fingerprint::new().value("test", "parts").unwrap();
        let mut calls = Vec::new();
        let cut = played_in_parts(&shared, &path, &fingerprint, "x", &config, |tasks| {
            calls.push(tasks.len());
            if calls.len() == 2 {
                Err(Error::Batch("killed".into()))
            } else {
                Ok(fake(tasks))
            }
        });
        assert!(cut.is_err());
        assert_eq!(calls, [4, 3]);
        assert!(!path.exists() && part_path(&path, 0).is_file());

        let mut calls = Vec::new();
        let score = played_in_parts(&shared, &path, &fingerprint, "x", &config, |tasks| {
            calls.push(tasks.len());
            Ok(fake(tasks))
        })
        .unwrap();
        assert_eq!(calls, [3, 3], "only the parts still missing are played");
        let whole = fake(&config.tasks().unwrap());
        assert_eq!(score.results, whole.results, "the same as one played whole");
        assert_eq!(score.seconds, 3.0);
        assert!(
            !part_path(&path, 0).exists(),
            "parts are removed once whole"
        );
        // The whole score is reused.
        let again = played_in_parts(&shared, &path, &fingerprint, "x", &config, |_| {
            Err(Error::Batch("played again".into()))
        })
        .unwrap();
        assert_eq!(again, score);
    }

    #[test]
    fn the_mean_reward_is_the_mean_graded_score() {
        let tasks = Split::Dev.prompts(3, 1, Protocol::Text, false).unwrap();
        let mut score = fake(&tasks);
        for (r, graded) in score.results.iter_mut().zip([1.0, -0.5, 0.25, -0.25]) {
            r.score = Some(graded);
        }
        assert_eq!(score.mean_reward(), 0.125);
        // A score saved before graded scores were recorded has no mean.
        score.results[2].score = None;
        assert!(score.mean_reward().is_nan());
    }

    #[test]
    fn sign_test_matches_hand_computed_values() {
        // n = 10, k = 1: 2 · (1 + 10) / 1024.
        assert!((sign_test(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((sign_test(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        // n = 5, k = 0: 2 / 32.
        assert!((sign_test(0, 5) - 2.0 / 32.0).abs() < 1e-12);
        // A balanced split is no evidence at all.
        assert_eq!(sign_test(4, 4), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
        // n = 20, k = 5: 2 · (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20.
        let expected = 2.0 * 21700.0 / 1_048_576.0;
        assert!((sign_test(5, 15) - expected).abs() < 1e-12);
        // Large n stays finite.
        assert!(sign_test(400, 600) < 1e-9);
    }
}
