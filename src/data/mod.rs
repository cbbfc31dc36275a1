//! Data for the SFT phase (01 data); phase 02's prompts are [`crate::prompts`].
//!
//! - [`build`]: phase 01 as a function: `sft.jsonl` + `report.json`.
//! - [`sources`]: loaders for Spider, SParC/CoSQL, BIRD, ReAct trajectories and ShareGPT chat.
//! - [`episodes`]: text-to-SQL examples as DB Bench episodes, replayed in `env::db`.
//! - [`record`]: the SFT record of `sft.jsonl`; expert household episodes and negatives.
//! - [`contamination`]: the guard against evaluation items in training data.
//! - [`synthetic`]: generated SQL worlds in 48 domains with tasks of every DB Bench kind.
//! - [`summary`]: composition frames and report tables for the notebooks.
//! - [`mix`]: exact and near-duplicate removal, the token-length filter, agent : general mixing.
//!

pub mod build;
pub mod contamination;
pub mod episodes;
pub mod location;
pub mod mix;
pub mod plan;
pub mod record;
pub mod sources;
pub mod summary;
pub mod synthetic;

pub use build::{
    DEV_SEED, DataConfig, DataReport, HELD_OUT_SEED, PROMPT_SEED, SourceReport, build_sft,
    read_sft, write_sft,
};
pub use contamination::{ContaminationGuard, Hit};
pub use episodes::{DbEpisode, DbEpisodeOptions, Skip, db_episode, interaction_episode};
pub use location::{Corpus, DataSource, OpenSource};
pub use mix::{
    DedupReport, MixOptions, dedup, evenly_spaced, length_filter, mix, take_evenly, token_count,
};
pub use plan::{PlannedFile, PlannedSource, plan_sources, plan_table};
pub use record::{SftRecord, freeze_opening, household_negative_record, household_records};

pub use sources::{
    Schema, SchemaTable, SqlExample, SqlInteraction, load_bird, load_chat, load_interactions,
    load_react, load_schemas, load_spider,
};
