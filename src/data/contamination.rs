//! The contamination guard: every training record is checked against evaluation corpora, and
//! a hit is dropped and reported.
//!
//! Three signals, any of which is a hit:
//! - a word n-gram (default 8) of an evaluation question appears in the record;
//! - an n-gram of an evaluation table's contents (its rows' text) appears in the record;
//! - an evaluation table's name or its exact header list appears in the record.
//!
//! Text is compared lower-cased with punctuation turned into spaces, so re-punctuated or
//! re-cased copies are caught. Questions shorter than n words are matched whole.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::SftRecord;
use crate::env::db::DbItem;
use crate::error::Result;

/// Why a record was flagged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The evaluation corpus it overlaps.
    pub corpus: String,
    /// Which signal fired: `question`, `table_contents`, `table_name` or `headers`.
    pub signal: String,
    /// The overlapping text.
    pub evidence: String,
}

/// Normalised words: lower case, letters and digits only.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn gram_hash(words: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    words.hash(&mut h);
    h.finish()
}

/// Evaluation corpora indexed for fast checks.
#[derive(Debug, Clone, Default)]
pub struct ContaminationGuard {
    n: usize,
    /// n-gram hash → (corpus, signal, text it came from).
    grams: HashMap<u64, (String, &'static str, String)>,
    /// Short questions matched whole: normalised text → corpus.
    short: HashMap<String, String>,
    /// Normalised table names and header lists → (corpus, signal, original).
    names: Vec<(String, String, &'static str, String)>,
}

impl ContaminationGuard {
    /// An empty guard using word `n`-grams (8 is the default).
    pub fn new(n: usize) -> Self {
        Self {
            n: n.max(1),
            ..Self::default()
        }
    }

    /// The guard loaded with AgentBench's DB Bench file (`dev.jsonl` / `standard.jsonl`).
    pub fn with_dbbench(mut self, path: &Path) -> Result<Self> {
        let items = DbItem::read_jsonl(path)?;
        let corpus = path.file_name().map_or("dbbench".to_string(), |f| {
            format!("dbbench/{}", f.to_string_lossy())
        });
        self.register_db_items(&corpus, &items);
        Ok(self)
    }

    /// Registers DB Bench-format items of an evaluation corpus.
    pub fn register_db_items(&mut self, corpus: &str, items: &[DbItem]) {
        for item in items {
            self.register_question(corpus, &item.description);
            let table = &item.table;
            if !table.table_name.trim().is_empty() {
                self.register_name(corpus, "table_name", &table.table_name);
            }
            let headers: Vec<&str> = table
                .table_info
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            if headers.len() >= 2 {
                self.register_name(corpus, "headers", &headers.join(", "));
            }
            for row in &table.table_info.rows {
                let text: Vec<String> = row
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                self.register_text(corpus, "table_contents", &text.join(" "));
            }
        }
    }

    /// Registers an evaluation question.
    pub fn register_question(&mut self, corpus: &str, question: &str) {
        let w = words(question);
        if w.is_empty() {
            return;
        }
        if w.len() < self.n {
            self.short.insert(w.join(" "), corpus.to_string());
        } else {
            self.register_text(corpus, "question", question);
        }
    }

    fn register_text(&mut self, corpus: &str, signal: &'static str, text: &str) {
        let w = words(text);
        for gram in w.windows(self.n) {
            self.grams
                .entry(gram_hash(gram))
                .or_insert_with(|| (corpus.to_string(), signal, gram.join(" ")));
        }
    }

    fn register_name(&mut self, corpus: &str, signal: &'static str, name: &str) {
        let w = words(name);
        let normalised = format!(" {} ", w.join(" "));
        // A name of one ordinary word ("Statistics", "Users") is a word any text may hold and
        // says nothing; several words, or one long compound ("SeasonStatistics"), do.
        let distinctive = match w.as_slice() {
            [] => false,
            [one] => one.len() >= 14,
            _ => normalised.trim().len() >= 8,
        };
        if distinctive {
            self.names
                .push((normalised, corpus.to_string(), signal, name.to_string()));
        }
    }

    /// Number of indexed n-grams, short questions and names.
    pub fn len(&self) -> usize {
        self.grams.len() + self.short.len() + self.names.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first overlap of `text` with the evaluation corpora.
    pub fn check_text(&self, text: &str) -> Option<Hit> {
        let w = words(text);
        for gram in w.windows(self.n) {
            if let Some((corpus, signal, evidence)) = self.grams.get(&gram_hash(gram))
                && gram.join(" ") == *evidence
            {
                return Some(Hit {
                    corpus: corpus.clone(),
                    signal: (*signal).to_string(),
                    evidence: evidence.clone(),
                });
            }
        }
        let joined = format!(" {} ", w.join(" "));
        for (question, corpus) in &self.short {
            if joined.contains(&format!(" {question} ")) {
                return Some(Hit {
                    corpus: corpus.clone(),
                    signal: "question".into(),
                    evidence: question.clone(),
                });
            }
        }
        self.names
            .iter()
            .find(|(name, ..)| joined.contains(name.as_str()))
            .map(|(_, corpus, signal, original)| Hit {
                corpus: corpus.clone(),
                signal: (*signal).to_string(),
                evidence: original.clone(),
            })
    }

    /// The first overlap of a record's messages with the evaluation corpora.
    pub fn check(&self, record: &SftRecord) -> Option<Hit> {
        let text: Vec<&str> = record
            .conversation
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        self.check_text(&text.join("\n"))
    }

    /// Splits records into the clean ones and the flagged ones with their hits.
    pub fn filter(&self, records: Vec<SftRecord>) -> (Vec<SftRecord>, Vec<(SftRecord, Hit)>) {
        let mut clean = Vec::with_capacity(records.len());
        let mut flagged = Vec::new();
        for r in records {
            match self.check(&r) {
                Some(hit) => flagged.push((r, hit)),
                None => clean.push(r),
            }
        }
        (clean, flagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_recased_and_repunctuated_copies_and_short_questions() {
        let mut guard = ContaminationGuard::new(8);
        guard.register_question("eval", "What is the Presentation of Credentials has a Termination of Mission listed as August 15, 2000?");
        guard.register_question("eval", "How many wins?");
        guard.register_name("eval", "table_name", "US Ambassadors to Colombia");
        let hit = guard
            .check_text("Question: what is the presentation of credentials HAS a termination of mission -- listed as August 15 2000")
            .unwrap();
        assert_eq!(hit.signal, "question");
        assert!(guard.check_text("so, how many wins? tell me").is_some());
        assert!(guard.check_text("how many winners are there").is_none());
        let hit = guard
            .check_text("The name of this table is US Ambassadors to Colombia.")
            .unwrap();
        assert_eq!(hit.signal, "table_name");
        guard.register_name("eval", "table_name", "Statistics");
        guard.register_name("eval", "table_name", "SeasonStatistics");
        assert!(
            guard
                .check_text("summary statistics of the parks")
                .is_none()
        );
        assert!(guard.check_text("the seasonstatistics table").is_some());
        assert!(
            guard
                .check_text("A question about credentials and missions in general.")
                .is_none()
        );
    }
}
