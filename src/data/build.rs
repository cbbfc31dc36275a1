//! Phase 01 as a function: the SFT set (every source, negatives, contamination guard, dedup,
//! length filter, mixing) with its report.
//!
//! Seeds are split so phases never overlap: SFT data draws from seed `config.seed` upwards,
//! prompts (phase 02, [`crate::prompts`]) from [`PROMPT_SEED`], the held-out test split from
//! [`HELD_OUT_SEED`] and the dev split from [`DEV_SEED`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::contamination::{ContaminationGuard, Hit};
use super::episodes::{DbEpisodeOptions, Skip, db_episode, interaction_episode};
use super::location::DataSource;
use super::mix::{DedupReport, MixOptions, dedup, length_filter, mix};
use super::record::{SftRecord, household_negative_record, household_records};
use super::sources::{load_chat, load_interactions, load_react, load_spider};
use super::synthetic::{SqlTaskKind, SyntheticOptions, Vocabulary, sql_task, synthetic_episode};
use crate::chat::{Conversation, Tokenizer};
use crate::env::Protocol;
use crate::env::household::{ExpertOptions, TaskKind};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::Rng;

/// First seed of the RL / pair prompts (phase 02); SFT data stays below it.
pub const PROMPT_SEED: u64 = 500_000;
/// First seed of the held-out test split (evaluation tasks and household games for final
/// comparisons); nothing trains on them.
pub const HELD_OUT_SEED: u64 = 1_000_000;
/// First seed of the held-out dev split (for choosing settings); nothing trains on it either.
pub const DEV_SEED: u64 = 1_500_000;

pub(crate) fn yes() -> bool {
    true
}

/// How many more general records than the mix asks for are read (the guard, dedup and length
/// filter drop some).
const GENERAL_MARGIN: f64 = 1.25;

/// What phase 01 builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// Seed of every draw.
    pub seed: u64,
    /// Protocols to write agent episodes in (each source is written in each).
    pub protocols: Vec<Protocol>,
    /// Synthetic SQL episodes per protocol.
    pub synthetic_sql: usize,
    /// Expert household episodes per protocol (balanced over the six types).
    pub household: usize,
    /// Household negative samples per protocol.
    pub household_negatives: usize,
    /// Whether household episodes open with a solved example of their task type (AgentBench's
    /// ALFWorld prompt does; it costs ~900 tokens per episode, too many for `tiny`).
    #[serde(default = "yes")]
    pub household_example: bool,
    /// Share of household episodes whose thoughts carry explicit state notes.
    pub state_notes_share: f64,
    /// Share of DB episodes with a mistake and its repair.
    pub repair_share: f64,
    /// Share of function-calling DB episodes opening with a negative sample.
    pub negative_share: f64,
    /// A Spider-format folder (`dev.json`/`train_spider.json`, `database/`), local or
    /// `hf://datasets/...`.
    pub spider: Option<DataSource>,
    /// The Spider split file inside it.
    pub spider_split: String,
    /// A BIRD-format folder (`train.json`, `train_databases/`), local or on the hub.
    pub bird: Option<DataSource>,
    /// A SParC- or CoSQL-format folder (interactions, `database/`), local or on the hub.
    pub interactions: Option<DataSource>,
    /// The interaction file inside it (`train.json`).
    pub interactions_split: String,
    /// Agent trajectories (ReAct: FireAct's `multitask.jsonl`, ETO's WebShop/ScienceWorld
    /// sets), in OpenAI `messages` or ShareGPT form, local or on the hub; one source or several.
    #[serde(default, deserialize_with = "one_or_many")]
    pub react: Vec<DataSource>,
    /// General chat (OpenAI `messages` or ShareGPT records), local or on the hub; only as
    /// many records as the mix needs are read.
    pub chat: Option<DataSource>,
    /// General records per agent record (the method's 1 : 4); needs `chat`.
    pub general_per_agent: f64,
    /// Longest record in tokens of the target tokenizer.
    pub max_tokens: usize,
    /// Jaccard similarity above which two records are near duplicates.
    pub dedup_threshold: f64,
    /// DB Bench-format evaluation files the guard checks against (by default AgentBench's dev
    /// items, kept in the tree).
    pub eval_files: Vec<PathBuf>,
    /// Most examples read from a source (`spider`, `bird`, `interactions`, `react`), evenly
    /// spaced over it; a source not named is read whole.
    #[serde(default)]
    pub max_examples: BTreeMap<String, usize>,
    /// Sources (`spider`, `bird`, `interactions`, `react`, `chat`) the build may go without:
    /// when one cannot be fetched or read, it is skipped with a note in the report. Any other
    /// source's failure stops the build with its error.
    #[serde(default)]
    pub optional: Vec<String>,
}

/// A field that holds one value (or none) or a list of them, read as a list.
fn one_or_many<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
        None(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(items) => items,
        OneOrMany::One(item) => vec![item],
        OneOrMany::None(()) => Vec::new(),
    })
}

impl DataConfig {
    /// Runs `load` for `source`: its value, or, when it fails and the source is optional,
    /// `None` with a note (the source is then left out of every later protocol too).
    fn load_source<T>(
        &self,
        source: &str,
        skipped: &mut Vec<String>,
        notes: &mut Vec<String>,
        load: impl FnOnce() -> Result<T>,
    ) -> Result<Option<T>> {
        if skipped.iter().any(|s| s == source) {
            return Ok(None);
        }
        match load() {
            Ok(value) => Ok(Some(value)),
            Err(e) if self.optional.iter().any(|o| o == source) => {
                notes.push(format!("{source} skipped (optional): {e}"));
                skipped.push(source.to_string());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn episode_options(&self, protocol: Protocol) -> DbEpisodeOptions {
        DbEpisodeOptions {
            protocol,
            repair_share: self.repair_share,
            negative_share: self.negative_share,
            ..DbEpisodeOptions::default()
        }
    }
}

/// What one source gave in one protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// Source name.
    pub source: String,
    /// Protocol (`None` for general chat and ReAct).
    pub protocol: Option<Protocol>,
    /// Examples tried.
    pub attempted: usize,
    /// Records kept.
    pub kept: usize,
    /// Of those, with a mistake and its repair.
    pub repaired: usize,
    /// Of those, opening with a negative sample.
    pub negatives: usize,
    /// Examples skipped, by reason.
    pub skipped: BTreeMap<String, usize>,
    /// The licence its dataset card states (`license:` in the card's front matter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

impl SourceReport {
    /// Share of attempted examples kept (DB sources: episodes that replay correct).
    pub fn kept_share(&self) -> f64 {
        if self.attempted == 0 {
            0.0
        } else {
            self.kept as f64 / self.attempted as f64
        }
    }
}

/// A record the contamination guard dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedRecord {
    /// The record's source.
    pub source: String,
    /// The record's kind.
    pub kind: String,
    /// Why.
    pub hit: Hit,
}

/// The report of phase 01 (`report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    /// The configuration it was built with.
    pub config: DataConfig,
    /// Per source and protocol.
    pub sources: Vec<SourceReport>,
    /// Evaluation items the guard knew.
    pub guard_entries: usize,
    /// Records the guard dropped.
    pub contaminated: Vec<DroppedRecord>,
    /// Duplicates removed.
    pub dedup: DedupReport,
    /// Records over `max_tokens` (0 when no tokenizer was given).
    pub too_long: usize,
    /// Whether the length filter ran.
    pub length_checked: bool,
    /// Agent and general records in the final set.
    pub agent_records: usize,
    /// General chat records in the final set.
    pub general_records: usize,
    /// Final records per `source/kind`.
    pub composition: BTreeMap<String, usize>,
    /// Notes for the reader (a missing general source, …).
    pub notes: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Final records per second of wall time.
    pub records_per_s: f64,
}

/// The phase-01 output paths inside a phase directory.
pub fn sft_path(phase_dir: &Path) -> PathBuf {
    phase_dir.join("sft.jsonl")
}

fn skip_name(skip: Skip) -> String {
    serde_json::to_value(skip)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn synthetic_records(
    config: &DataConfig,
    protocol: Protocol,
    offset: u64,
) -> Result<(Vec<SftRecord>, SourceReport)> {
    let vocab = Vocabulary::embedded();
    let options = SyntheticOptions::default();
    let episode_options = config.episode_options(protocol);
    let mut report = SourceReport {
        source: "synthetic_sql".into(),
        protocol: Some(protocol),
        ..Default::default()
    };
    let mut records = Vec::new();
    let mut progress = Progress::new(
        format!("synthetic SQL ({protocol:?})"),
        Some(config.synthetic_sql as u64),
    );
    let mut kind_rng = Rng::new(config.seed ^ 0x5157_u64 ^ offset);
    for i in 0..config.synthetic_sql as u64 {
        let seed = config.seed + offset + i;
        let kind = pick_kind(&options, &mut kind_rng);
        let task = sql_task(vocab, kind, seed, &options)?;
        let mut rng = Rng::new(seed);
        report.attempted += 1;
        match synthetic_episode(&task, &episode_options, &mut rng)? {
            Some(e) => {
                report.kept += 1;
                report.repaired += usize::from(e.repaired);
                report.negatives += usize::from(e.negative);
                records.push(e.into_record("synthetic_sql", kind.name(), protocol));
            }
            None => *report.skipped.entry("not_replayed".into()).or_default() += 1,
        }
        progress.inc(1);
    }
    progress.finish();
    Ok((records, report))
}

/// A kind drawn by the default weights.
fn pick_kind(options: &SyntheticOptions, rng: &mut Rng) -> SqlTaskKind {
    let total: f64 = options.weights.iter().map(|(_, w)| w).sum();
    let mut x = rng.uniform() * total;
    for (k, w) in &options.weights {
        x -= w;
        if x < 0.0 {
            return *k;
        }
    }
    SqlTaskKind::Lookup
}

fn spider_records(
    config: &DataConfig,
    dir: &DataSource,
    split: &str,
    source: &str,
    protocol: Protocol,
) -> Result<(Vec<SftRecord>, SourceReport)> {
    let max = config.max_examples.get(source).copied();
    let examples = if source == "bird" {
        super::sources::load_bird(dir, split, max)?
    } else {
        load_spider(dir, split, max)?
    };
    let options = config.episode_options(protocol);
    let mut rng = Rng::new(config.seed ^ 0xb12d);
    let mut report = SourceReport {
        source: source.into(),
        protocol: Some(protocol),
        licence: card_licence(dir),
        ..Default::default()
    };
    let mut records = Vec::new();
    let mut progress = Progress::new(
        format!("{source} ({protocol:?})"),
        Some(examples.len() as u64),
    );
    for example in &examples {
        report.attempted += 1;
        match db_episode(example, &options, &mut rng)? {
            Ok(e) => {
                report.kept += 1;
                report.repaired += usize::from(e.repaired);
                report.negatives += usize::from(e.negative);
                records.push(e.into_record(source, "select", protocol));
            }
            Err(skip) => *report.skipped.entry(skip_name(skip)).or_default() += 1,
        }
        progress.inc(1);
    }
    progress.finish();
    Ok((records, report))
}

fn interaction_records(
    config: &DataConfig,
    dir: &DataSource,
    protocol: Protocol,
) -> Result<(Vec<SftRecord>, SourceReport)> {
    let max = config.max_examples.get("interactions").copied();
    let interactions = load_interactions(dir, &config.interactions_split, max)?;
    let options = config.episode_options(protocol);
    let mut rng = Rng::new(config.seed ^ 0x5a2c);
    let mut report = SourceReport {
        source: "interactions".into(),
        protocol: Some(protocol),
        licence: card_licence(dir),
        ..Default::default()
    };
    let mut records = Vec::new();
    let mut progress = Progress::new(
        format!("interactions ({protocol:?})"),
        Some(interactions.len() as u64),
    );
    for interaction in &interactions {
        report.attempted += 1;
        match interaction_episode(interaction, &options, &mut rng)? {
            Ok((e, _turns)) => {
                report.kept += 1;
                report.repaired += usize::from(e.repaired);
                report.negatives += usize::from(e.negative);
                records.push(e.into_record("interactions", "multi_turn", protocol));
            }
            Err(skip) => *report.skipped.entry(skip_name(skip)).or_default() += 1,
        }
        progress.inc(1);
    }
    progress.finish();
    Ok((records, report))
}

fn household_source(
    config: &DataConfig,
    protocol: Protocol,
) -> Result<(Vec<SftRecord>, SourceReport)> {
    let with_notes = (config.household as f64 * config.state_notes_share).round() as usize;
    let mut records = household_records(
        with_notes,
        config.seed,
        protocol,
        config.household_example,
        ExpertOptions {
            state_notes: true,
            ..ExpertOptions::default()
        },
    )?;
    records.extend(household_records(
        config.household - with_notes,
        config.seed + with_notes as u64,
        protocol,
        config.household_example,
        ExpertOptions::default(),
    )?);
    let mut rng = Rng::new(config.seed ^ 0x40u64);
    let mut negatives = 0;
    for i in 0..config.household_negatives as u64 {
        let kind = TaskKind::ALL[i as usize % TaskKind::ALL.len()];
        let seed = config.seed + config.household as u64 + i;
        if let Some(r) =
            household_negative_record(seed, kind, protocol, config.household_example, &mut rng)?
        {
            records.push(r);
            negatives += 1;
        }
    }
    let report = SourceReport {
        source: "household".into(),
        protocol: Some(protocol),
        attempted: config.household + config.household_negatives,
        kept: records.len(),
        repaired: 0,
        negatives,
        skipped: BTreeMap::new(),
        licence: None,
    };
    Ok((records, report))
}

fn conversations(
    source: &str,
    kind: &str,
    conversations: Vec<crate::chat::Conversation>,
) -> (Vec<SftRecord>, SourceReport) {
    let records: Vec<SftRecord> = conversations
        .into_iter()
        .map(|conversation| SftRecord {
            conversation,
            source: source.into(),
            kind: kind.into(),
            protocol: None,
        })
        .collect();
    let report = SourceReport {
        source: source.into(),
        attempted: records.len(),
        kept: records.len(),
        ..Default::default()
    };
    (records, report)
}

/// The licence a source's dataset card states, if it can be read.
fn card_licence(source: &DataSource) -> Option<String> {
    source.open().ok()?.licence()
}

/// The licences of several sources, each once, in order.
fn licences(sources: &[DataSource]) -> Option<String> {
    let mut found: Vec<String> = Vec::new();
    for licence in sources.iter().filter_map(card_licence) {
        if !found.contains(&licence) {
            found.push(licence);
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// Whether the chat template writes an assistant's tool calls into the text.
fn renders_tool_calls(tokenizer: &Tokenizer) -> Result<bool> {
    use crate::chat::{Conversation, Message, RenderOptions, ToolCall};
    let call = ToolCall::new("execute_sql", serde_json::json!({"query": "SELECT 1"}));
    let conversation = Conversation::new(vec![
        Message::user("q"),
        Message::assistant("").with_tool_calls(vec![call]),
    ])
    .with_tools(crate::env::db::protocol::fc_tools());
    Ok(tokenizer
        .render(&conversation, &RenderOptions::default())?
        .contains("SELECT 1"))
}

/// Builds the SFT set: every configured source in every protocol, the contamination guard,
/// dedup, the length filter (when a tokenizer is given) and agent : general mixing.
pub fn build_sft(
    config: &DataConfig,
    tokenizer: Option<&Tokenizer>,
) -> Result<(Vec<SftRecord>, DataReport)> {
    let start = Instant::now();
    let budget = (config.synthetic_sql + config.household + config.household_negatives) as u64 * 2;
    if config.seed + budget >= PROMPT_SEED {
        return Err(Error::InvalidConfig {
            source_name: "DataConfig".into(),
            reason: format!(
                "seed {} and sizes reach the prompt seeds ({PROMPT_SEED})",
                config.seed
            ),
        });
    }
    if let Some(tok) = tokenizer
        && config.protocols.contains(&Protocol::Tools)
        && !renders_tool_calls(tok)?
    {
        return Err(Error::InvalidConfig {
            source_name: "DataConfig".into(),
            reason: "the tokenizer's chat template does not render tool calls, so \
                     function-calling records would train without their calls; set \
                     `protocols` to [\"text\"] for this model"
                .into(),
        });
    }
    let mut agent = Vec::new();
    let mut sources = Vec::new();
    let mut notes = Vec::new();
    let mut skipped = Vec::new();
    for (i, &protocol) in config.protocols.iter().enumerate() {
        // Each protocol gets its own tasks so the two halves do not repeat each other.
        let offset = i as u64 * config.synthetic_sql as u64;
        let (records, report) = synthetic_records(config, protocol, offset)?;
        agent.extend(records);
        sources.push(report);
        let (records, report) = household_source(config, protocol)?;
        agent.extend(records);
        sources.push(report);
        if let Some(dir) = &config.spider {
            let load = || spider_records(config, dir, &config.spider_split, "spider", protocol);
            if let Some((records, report)) =
                config.load_source("spider", &mut skipped, &mut notes, load)?
            {
                agent.extend(records);
                sources.push(report);
            }
        }
        if let Some(dir) = &config.interactions {
            let load = || interaction_records(config, dir, protocol);
            if let Some((records, report)) =
                config.load_source("interactions", &mut skipped, &mut notes, load)?
            {
                agent.extend(records);
                sources.push(report);
            }
        }
        if let Some(dir) = &config.bird {
            let load = || spider_records(config, dir, "train", "bird", protocol);
            if let Some((records, report)) =
                config.load_source("bird", &mut skipped, &mut notes, load)?
            {
                agent.extend(records);
                sources.push(report);
            }
        }
    }
    if !config.react.is_empty() {
        let load = || -> Result<Vec<Conversation>> {
            let mut all = Vec::new();
            for source in &config.react {
                all.extend(load_react(source)?);
            }
            Ok(super::take_evenly(
                all,
                config.max_examples.get("react").copied(),
            ))
        };
        if let Some(trajectories) = config.load_source("react", &mut skipped, &mut notes, load)? {
            let (records, mut report) = conversations("react", "react", trajectories);
            report.licence = licences(&config.react);
            agent.extend(records);
            sources.push(report);
        }
    }
    let mut general = Vec::new();
    if let Some(source) = &config.chat {
        // Read only what the mix can use, with a margin for the guard, dedup and length
        // filter: a large chat set is never read whole.
        let wanted = agent.len() as f64 * config.general_per_agent * GENERAL_MARGIN;
        let limit = wanted.ceil() as usize;
        let load = || load_chat(source, Some(limit));
        if let Some(chats) = config.load_source("chat", &mut skipped, &mut notes, load)? {
            let (records, mut report) = conversations("chat", "chat", chats);
            report.licence = card_licence(source);
            general = records;
            sources.push(report);
        }
    }

    let mut guard = ContaminationGuard::new(8);
    for path in &config.eval_files {
        guard = guard.with_dbbench(path)?;
    }
    let (agent, hits) = guard.filter(agent);
    let (general, general_hits) = guard.filter(general);
    let contaminated = hits
        .into_iter()
        .chain(general_hits)
        .map(|(r, hit)| DroppedRecord {
            source: r.source,
            kind: r.kind,
            hit,
        })
        .collect();

    let (agent, mut dedup_report) = dedup(agent, config.dedup_threshold);
    let (general, general_dedup) = dedup(general, config.dedup_threshold);
    dedup_report.exact += general_dedup.exact;
    dedup_report.near += general_dedup.near;

    let (agent, general, too_long) = match tokenizer {
        Some(tok) => {
            let (agent, a) = length_filter(agent, tok, config.max_tokens)?;
            let (general, g) = length_filter(general, tok, config.max_tokens)?;
            (agent, general, a + g)
        }
        None => {
            notes.push("no tokenizer given: the length filter did not run".into());
            (agent, general, 0)
        }
    };
    let ratio = if general.is_empty() {
        if config.general_per_agent > 0.0 {
            notes.push(format!(
                "no general chat source (`chat`): agent records only instead of 1 : {}",
                config.general_per_agent
            ));
        }
        0.0
    } else {
        config.general_per_agent
    };
    let records = mix(
        agent,
        general,
        &MixOptions {
            general_per_agent: ratio,
            target: None,
            seed: config.seed,
        },
    );
    let mut composition = BTreeMap::new();
    for r in &records {
        *composition
            .entry(format!("{}/{}", r.source, r.kind))
            .or_insert(0) += 1;
    }
    let general_records = records.iter().filter(|r| r.source == "chat").count();
    let seconds = start.elapsed().as_secs_f64();
    let report = DataReport {
        config: config.clone(),
        sources,
        guard_entries: guard.len(),
        contaminated,
        dedup: dedup_report,
        too_long,
        length_checked: tokenizer.is_some(),
        agent_records: records.len() - general_records,
        general_records,
        composition,
        notes,
        seconds,
        records_per_s: records.len() as f64 / seconds.max(1e-9),
    };
    Ok((records, report))
}

/// Writes `sft.jsonl` and `report.json` into the phase directory, atomically.
pub fn write_sft(phase_dir: &Path, records: &[SftRecord], report: &DataReport) -> Result<()> {
    crate::io::write_jsonl(&sft_path(phase_dir), records)?;
    crate::io::write_json(&phase_dir.join("report.json"), report)
}

/// Reads the `sft.jsonl` of a phase directory.
pub fn read_sft(phase_dir: &Path) -> Result<Vec<SftRecord>> {
    let path = sft_path(phase_dir);
    if !path.exists() {
        return Err(Error::MissingFile {
            path,
            hint: "run notebook 01_data (or `abt data`) first".into(),
        });
    }
    crate::io::read_jsonl(&path)
}
