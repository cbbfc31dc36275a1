//! The quick held-out score: a model plays a fixed set of held-out tasks — synthetic DB Bench
//! items and household games from [`crate::data::HELD_OUT_SEED`], which no phase trains on — with greedy
//! decoding, and the share it solves is reported per environment and task kind.
//!
//! Two models scored on the same tasks are compared pair by pair ([`compare`]): the tasks only
//! one of them solves decide, and an exact two-sided sign test on them says how likely a gap
//! that large is when neither model is better.
//!
//! ```ignore
//! let tasks = held_out_prompts(&config)?;
//! let base = quick_score("base", &decoder, &tokenizer, &tasks, &config, Mode::Reference)?;
//! let sft = quick_score("sft", &decoder, &tokenizer, &tasks, &config, Mode::Eval)?;
//! compare(&base, &sft)?
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::{Fingerprint, reuse_or};
use crate::chat::{Conversation, Tokenizer};
use crate::config::RunContext;
use crate::display::Show;
use crate::env::Protocol;
use crate::error::{Error, Result};
use crate::generate::{EpisodeEnd, PlayOptions, Sampling, play_tasks};
use crate::model::{Decoder, Mode};
use crate::prompts::{Difficulty, Prompt};
use crate::table::Table;

/// What a quick score plays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickConfig {
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
    /// The held-out tasks: DB tasks and household games from [`crate::data::HELD_OUT_SEED`] on.
    pub fn tasks(&self) -> Result<Vec<Prompt>> {
        crate::prompts::held_out_prompts(
            self.db,
            self.household,
            self.protocol,
            self.household_example,
        )
    }
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
    /// The episode's total reward.
    pub reward: f64,
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
}

impl QuickScore {
    /// Share of tasks solved, over every task or over one source (`db/…`, `household`; a
    /// prefix such as `db` matches every DB source).
    pub fn success_rate(&self, source: Option<&str>) -> f64 {
        let picked: Vec<&TaskResult> = self
            .results
            .iter()
            .filter(|r| source.is_none_or(|s| r.source.starts_with(s)))
            .collect();
        if picked.is_empty() {
            return f64::NAN;
        }
        picked.iter().filter(|r| r.success).count() as f64 / picked.len() as f64
    }

    /// Tasks solved.
    pub fn solved(&self) -> usize {
        self.results.iter().filter(|r| r.success).count()
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

/// A stage's quick score in a run (`<run>/eval/quick_<label>.json`): the saved one if the same
/// model (base model and `adapter` files) played the same tasks with the same settings, else
/// `play`ed now and saved with its fingerprint (see [`crate::cache`]).
pub fn saved_quick_score(
    ctx: &RunContext,
    label: &str,
    adapter: Option<&Path>,
    config: &QuickConfig,
    play: impl FnOnce() -> Result<QuickScore>,
) -> Result<QuickScore> {
    let fingerprint = Fingerprint::new()
        .value("quick config", config)?
        .model(ctx.profile.base_model(), adapter)?;
    reuse_or(
        &crate::eval::quick_score_path(&ctx.run_dir, label),
        &fingerprint,
        play,
    )
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
