//! Phase 02's prompts: the tasks pairs are sampled on and RL trains on (`prompts.jsonl`), and
//! the held-out tasks the evaluation plays. Each prompt carries what its environment needs: a
//! DB Bench item with its gold SQL, or a household game's seed and type.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::{DataFrame, NamedFrom, Series};
use serde::{Deserialize, Serialize};

use crate::data::build::yes;
use crate::data::synthetic::{SqlTaskKind, SyntheticOptions, Vocabulary, sql_task};
use crate::data::{DEV_SEED, HELD_OUT_SEED, PROMPT_SEED};
use crate::env::db::{DbEnv, DbItem};
use crate::env::household::{HouseholdEnv, TaskKind};
use crate::env::{Protocol, TaskEnv};
use crate::error::{Error, Result};

/// How hard a prompt is, for balancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    /// One step: a lookup, a count, an insert, a put.
    Easy,
    /// A condition or an aggregate; a household task with an appliance.
    Medium,
    /// Ordering, averages, group updates; two objects.
    Hard,
}

impl Difficulty {
    /// The difficulty of a synthetic SQL kind.
    pub fn of_sql(kind: SqlTaskKind) -> Self {
        match kind {
            SqlTaskKind::Lookup | SqlTaskKind::Counting | SqlTaskKind::Insert => Difficulty::Easy,
            SqlTaskKind::Update
            | SqlTaskKind::Delete
            | SqlTaskKind::Sum
            | SqlTaskKind::Min
            | SqlTaskKind::Max => Difficulty::Medium,
            SqlTaskKind::Comparison | SqlTaskKind::Ranking | SqlTaskKind::Avg => Difficulty::Hard,
        }
    }

    /// The difficulty of a household task type.
    pub fn of_household(kind: TaskKind) -> Self {
        match kind {
            TaskKind::Put | TaskKind::Examine => Difficulty::Easy,
            TaskKind::PutTwo => Difficulty::Hard,
            _ => Difficulty::Medium,
        }
    }
}

/// A DB prompt of `prompts.jsonl`: a DB Bench item (table or database file, question, label or
/// table hash) with its gold SQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbPrompt {
    /// `synthetic_sql` or `spider`.
    pub source: String,
    /// Task kind (`lookup`, `insert`, …, `select` for Spider).
    pub kind: String,
    /// For balancing.
    pub difficulty: Difficulty,
    /// The protocol the rollouts speak.
    pub protocol: Protocol,
    /// The gold statement.
    pub gold_sql: String,
    /// The item itself (DB Bench's fields, readable by `DbItem`).
    #[serde(flatten)]
    pub item: DbItem,
}

/// A household prompt: a seed and a task type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HouseholdPrompt {
    /// The world's seed.
    pub seed: u64,
    /// The task type.
    pub kind: TaskKind,
    /// For balancing.
    pub difficulty: Difficulty,
    /// The protocol the rollouts speak.
    pub protocol: Protocol,
    /// Whether the game opens with a solved example (see [`crate::data::DataConfig::household_example`]).
    #[serde(default = "yes")]
    pub example: bool,
}

/// One line of `prompts.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "env", rename_all = "lowercase")]
pub enum Prompt {
    /// A DB Bench task (boxed: it carries a whole table).
    Db(Box<DbPrompt>),
    /// A household game.
    Household(HouseholdPrompt),
}

impl Prompt {
    /// `db/<source>` or `household`.
    pub fn source(&self) -> String {
        match self {
            Prompt::Db(p) => format!("db/{}", p.source),
            Prompt::Household(_) => "household".into(),
        }
    }

    /// The task kind.
    pub fn kind(&self) -> String {
        match self {
            Prompt::Db(p) => p.kind.clone(),
            Prompt::Household(p) => p.kind.name().into(),
        }
    }

    /// The difficulty.
    pub fn difficulty(&self) -> Difficulty {
        match self {
            Prompt::Db(p) => p.difficulty,
            Prompt::Household(p) => p.difficulty,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        match self {
            Prompt::Db(p) => p.protocol,
            Prompt::Household(p) => p.protocol,
        }
    }

    /// A fresh environment playing this prompt.
    pub fn env(&self) -> TaskEnv {
        match self {
            Prompt::Db(p) => TaskEnv::Db(Box::new(
                DbEnv::new(p.item.clone()).with_protocol(p.protocol),
            )),
            Prompt::Household(p) => TaskEnv::Household(Box::new(
                HouseholdEnv::with_kind(p.seed, p.kind)
                    .with_protocol(p.protocol)
                    .with_example(p.example),
            )),
        }
    }
}

/// What phase 02 builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// DB prompts per protocol (balanced over the three difficulties).
    pub db: usize,
    /// Household prompts per protocol (balanced over the six types).
    pub household: usize,
    /// Protocols.
    pub protocols: Vec<Protocol>,
    /// Whether household games open with a solved example (as the SFT data's).
    #[serde(default = "yes")]
    pub household_example: bool,
    /// First seed ([`PROMPT_SEED`] by default, away from SFT and evaluation seeds).
    pub seed: u64,
}

/// Builds the prompts: DB tasks balanced by difficulty (kinds in turn within each), household
/// games balanced by type, in every protocol.
pub fn build_prompts(config: &PromptConfig) -> Result<Vec<Prompt>> {
    if config.seed < PROMPT_SEED
        || config.seed + 4 * (config.db + config.household) as u64 >= HELD_OUT_SEED
    {
        return Err(Error::InvalidConfig {
            source_name: "PromptConfig".into(),
            reason: format!("prompt seeds must lie in {PROMPT_SEED}..{HELD_OUT_SEED}"),
        });
    }
    prompt_set(config)
}

/// Which held-out tasks an evaluation plays; both come from seeds no phase trains on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// For choosing settings (the quick scores of notebooks 03–05, GRPO's in-training
    /// evaluation): seeds from [`DEV_SEED`].
    Dev,
    /// For final comparisons (notebook 06, `abt heldout`): seeds from [`HELD_OUT_SEED`].
    #[default]
    Test,
}

impl Split {
    /// Most tasks a split holds: the seeds between the test split's first and the dev split's.
    pub const MAX_TASKS: u64 = DEV_SEED - HELD_OUT_SEED;

    /// `dev` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// The split's first seed.
    pub fn first_seed(self) -> u64 {
        match self {
            Split::Dev => DEV_SEED,
            Split::Test => HELD_OUT_SEED,
        }
    }

    /// The split's first `db` DB tasks (balanced by difficulty) and `household` games
    /// (balanced by type).
    pub fn prompts(
        self,
        db: usize,
        household: usize,
        protocol: Protocol,
        household_example: bool,
    ) -> Result<Vec<Prompt>> {
        if (db + household) as u64 > Self::MAX_TASKS {
            return Err(Error::InvalidConfig {
                source_name: format!("the {} split", self.name()),
                reason: format!(
                    "{} tasks asked for; a split holds at most {}",
                    db + household,
                    Self::MAX_TASKS
                ),
            });
        }
        prompt_set(&PromptConfig {
            db,
            household,
            protocols: vec![protocol],
            household_example,
            seed: self.first_seed(),
        })
    }
}

/// Held-out tasks of the test split ([`Split::Test`], from [`HELD_OUT_SEED`]): `db` DB tasks
/// balanced by difficulty and `household` games balanced by type.
pub fn held_out_prompts(
    db: usize,
    household: usize,
    protocol: Protocol,
    household_example: bool,
) -> Result<Vec<Prompt>> {
    Split::Test.prompts(db, household, protocol, household_example)
}

fn prompt_set(config: &PromptConfig) -> Result<Vec<Prompt>> {
    let vocab = Vocabulary::embedded();
    let options = SyntheticOptions::default();
    let by_difficulty: Vec<Vec<SqlTaskKind>> =
        [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard]
            .iter()
            .map(|d| {
                SqlTaskKind::ALL
                    .into_iter()
                    .filter(|k| Difficulty::of_sql(*k) == *d)
                    .collect()
            })
            .collect();
    let mut prompts = Vec::new();
    let mut seed = config.seed;
    for &protocol in &config.protocols {
        for i in 0..config.db {
            let group = &by_difficulty[i % 3];
            let kind = group[(i / 3) % group.len()];
            let task = sql_task(vocab, kind, seed, &options)?;
            seed += 1;
            prompts.push(Prompt::Db(Box::new(DbPrompt {
                source: "synthetic_sql".into(),
                kind: kind.name().into(),
                difficulty: Difficulty::of_sql(kind),
                protocol,
                gold_sql: task.sql,
                item: task.item,
            })));
        }
        for i in 0..config.household {
            let kind = TaskKind::ALL[i % TaskKind::ALL.len()];
            prompts.push(Prompt::Household(HouseholdPrompt {
                seed,
                kind,
                difficulty: Difficulty::of_household(kind),
                protocol,
                example: config.household_example,
            }));
            seed += 1;
        }
    }
    Ok(prompts)
}

/// Writes `prompts.jsonl` into the phase directory, atomically.
pub fn write_prompts(phase_dir: &Path, prompts: &[Prompt]) -> Result<()> {
    crate::io::write_jsonl(&phase_dir.join("prompts.jsonl"), prompts)
}

/// Reads the `prompts.jsonl` of a phase directory.
pub fn read_prompts(phase_dir: &Path) -> Result<Vec<Prompt>> {
    let path = phase_dir.join("prompts.jsonl");
    if !path.exists() {
        return Err(Error::MissingFile {
            path,
            hint: "run notebook 02_prompts (or `abt prompts`) first".into(),
        });
    }
    crate::io::read_jsonl(&path)
}

/// Prompts per environment source, kind, difficulty and protocol.
pub fn prompts_frame(prompts: &[Prompt]) -> Result<DataFrame> {
    let mut counts: BTreeMap<(String, String, String, String), u32> = BTreeMap::new();
    for p in prompts {
        let key = (
            p.source(),
            p.kind(),
            format!("{:?}", p.difficulty()).to_lowercase(),
            format!("{:?}", p.protocol()).to_lowercase(),
        );
        *counts.entry(key).or_default() += 1;
    }
    let keys: Vec<_> = counts.keys().cloned().collect();
    crate::data::summary::frame(vec![
        Series::new(
            "source".into(),
            keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>(),
        ),
        Series::new(
            "kind".into(),
            keys.iter().map(|k| k.1.clone()).collect::<Vec<_>>(),
        ),
        Series::new(
            "difficulty".into(),
            keys.iter().map(|k| k.2.clone()).collect::<Vec<_>>(),
        ),
        Series::new(
            "protocol".into(),
            keys.iter().map(|k| k.3.clone()).collect::<Vec<_>>(),
        ),
        Series::new(
            "prompts".into(),
            counts.values().copied().collect::<Vec<_>>(),
        ),
    ])
}
