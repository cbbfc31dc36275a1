//! What phase 01 would read, before it reads it (`abt data --dry-run`): every corpus the
//! configuration names, the licence its dataset card states, the files its loader needs and
//! their sizes, and which of them are here already. Only small index files are fetched (a DB
//! corpus's split file, to learn which databases its examples use; a hub card, for the
//! licence); sizes of files not yet cached come from the hub's listing.

use serde::Serialize;

use super::build::DataConfig;
use super::location::{DataSource, OpenSource};
use super::sources::{DbCorpus, db_corpus_files};
use crate::error::Result;
use crate::table::Table;

/// One file a corpus's loader needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedFile {
    /// Its path inside the corpus (or the hub repo).
    pub path: String,
    /// Its size in bytes, when known.
    pub bytes: Option<u64>,
    /// Whether it is here already (a local file, or in the hub cache).
    pub cached: bool,
}

/// One corpus of the configuration and what reading it takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedSource {
    /// The configuration's name for it (`spider`, `react`, `chat`, …).
    pub source: String,
    /// Where it is (a path or `hf://datasets/…`).
    pub location: String,
    /// The licence its dataset card states.
    pub licence: Option<String>,
    /// Whether the build may skip it (`optional`).
    pub optional: bool,
    /// The files its loader needs (a chat set: every shard, read only as far as the mix needs).
    pub files: Vec<PlannedFile>,
    /// Why the files could not be listed (the build would stop here, or skip an optional one).
    pub error: Option<String>,
}

impl PlannedSource {
    /// Bytes still to fetch, and how many files' sizes are unknown.
    pub fn to_fetch(&self) -> (u64, usize) {
        let missing = self.files.iter().filter(|f| !f.cached);
        let unknown = missing.clone().filter(|f| f.bytes.is_none()).count();
        (missing.filter_map(|f| f.bytes).sum(), unknown)
    }

    /// Bytes here already.
    pub fn cached_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.cached)
            .filter_map(|f| f.bytes)
            .sum()
    }
}

/// Every corpus `config` names, with what reading it takes.
pub fn plan_sources(config: &DataConfig) -> Vec<PlannedSource> {
    let max = |name: &str| config.max_examples.get(name).copied();
    let mut planned = Vec::new();
    let db_sources = [
        (
            "spider",
            &config.spider,
            DbCorpus::Spider,
            config.spider_split.as_str(),
        ),
        (
            "interactions",
            &config.interactions,
            DbCorpus::Interactions,
            config.interactions_split.as_str(),
        ),
        ("bird", &config.bird, DbCorpus::Bird, "train"),
    ];
    for (name, source, corpus, split) in db_sources {
        if let Some(source) = source {
            planned.push(plan(config, name, source, |open| {
                db_corpus_files(open, corpus, split, max(name))?
                    .into_iter()
                    .map(|path| planned_file(open.file_size(&path)?, path))
                    .collect()
            }));
        }
    }
    let records = |open: &OpenSource| -> Result<Vec<PlannedFile>> {
        open.record_files()?
            .into_iter()
            .map(|name| planned_file(open.record_file_size(&name)?, name))
            .collect()
    };
    for source in &config.react {
        planned.push(plan(config, "react", source, records));
    }
    if let Some(source) = &config.chat {
        planned.push(plan(config, "chat", source, records));
    }
    planned
}

fn planned_file(size: Option<(u64, bool)>, path: String) -> Result<PlannedFile> {
    Ok(PlannedFile {
        path,
        bytes: size.map(|(bytes, _)| bytes),
        cached: size.is_some_and(|(_, cached)| cached),
    })
}

fn plan(
    config: &DataConfig,
    name: &str,
    source: &DataSource,
    files: impl FnOnce(&OpenSource) -> Result<Vec<PlannedFile>>,
) -> PlannedSource {
    let opened = source.open();
    let licence = opened.as_ref().ok().and_then(OpenSource::licence);
    let (files, error) = match opened.and_then(|open| files(&open)) {
        Ok(files) => (files, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    PlannedSource {
        source: name.to_string(),
        location: source.to_string(),
        licence,
        optional: config.optional.iter().any(|o| o == name),
        files,
        error,
    }
}

/// A byte count for people (`1.4 GB`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The plan as a table: one row per corpus.
pub fn plan_table(planned: &[PlannedSource]) -> Result<Table> {
    let mut table = Table::new([
        "source", "location", "licence", "files", "to fetch", "cached", "status",
    ])
    .with_title("01 data: what the build would read");
    for p in planned {
        let (fetch, unknown) = p.to_fetch();
        let fetch = if unknown > 0 {
            format!("{} + {unknown} of unknown size", human_bytes(fetch))
        } else {
            human_bytes(fetch)
        };
        let status = match (&p.error, p.optional) {
            (None, _) => "ready".to_string(),
            (Some(e), true) => format!("would be skipped (optional): {e}"),
            (Some(e), false) => format!("would stop the build: {e}"),
        };
        table.push_row([
            p.source.clone(),
            p.location.clone(),
            p.licence
                .clone()
                .unwrap_or_else(|| "not stated on its card".into()),
            p.files.len().to_string(),
            fetch,
            human_bytes(p.cached_bytes()),
            status,
        ])?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(24_900_000), "24.9 MB");
        assert_eq!(human_bytes(1_400_000_000), "1.4 GB");
    }
}
