//! Deduplication (exact and near-duplicate), the token-length filter and the agent : general
//! mixing of the SFT set.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::record::SftRecord;
use crate::chat::{RenderOptions, Tokenizer};
use crate::error::Result;
use crate::rng::Rng;

/// Word shingles of this many words are compared for near-duplicates.
const SHINGLE: usize = 5;
/// MinHash signature length: `BANDS × ROWS`.
const BANDS: usize = 16;
const ROWS: usize = 4;

/// `n` items spread evenly through `items` (every kind in a sorted or interleaved list keeps
/// its share), or all of them when `n` is `None` or not smaller.
pub fn evenly_spaced<T>(items: &[T], n: Option<usize>) -> Vec<&T> {
    match n {
        Some(n) if n < items.len() => (0..n).map(|i| &items[i * items.len() / n]).collect(),
        _ => items.iter().collect(),
    }
}

/// [`evenly_spaced`] taking the items by value.
pub fn take_evenly<T>(items: Vec<T>, n: Option<usize>) -> Vec<T> {
    let len = items.len();
    match n {
        Some(n) if n < len => {
            let mut keep = (0..n).map(|i| i * len / n).peekable();
            items
                .into_iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    (keep.peek() == Some(&i)).then(|| {
                        keep.next();
                        item
                    })
                })
                .collect()
        }
        _ => items,
    }
}

fn hash_of<T: Hash + ?Sized>(value: &T, seed: u64) -> u64 {
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// The text a record is compared by, lower-cased and single-spaced: every message after the
/// environment's fixed opening (instructions, acknowledgement, worked example — the masked
/// assistant turns before the first trained one). Two episodes of the same environment share
/// that opening word for word; comparing it would make different episodes look alike.
fn record_text(record: &SftRecord) -> String {
    let messages = &record.conversation.messages;
    let first_trained = messages
        .iter()
        .position(|m| m.role == crate::chat::Role::Assistant && m.train)
        .unwrap_or(messages.len());
    let start = messages[..first_trained]
        .iter()
        .rposition(|m| m.role == crate::chat::Role::Assistant)
        .map_or(0, |i| i + 1);
    let mut text = String::new();
    for m in &messages[start..] {
        text.push_str(m.role.as_str());
        text.push(' ');
        text.push_str(&m.content.to_lowercase());
        for call in &m.tool_calls {
            text.push_str(&call.arguments_json());
        }
        text.push('\n');
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SplitMix64's finaliser: a fast, well-mixing 64-bit permutation.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per-row seeds of the MinHash signature.
const ROW_SEEDS: [u64; BANDS * ROWS] = {
    let mut seeds = [0u64; BANDS * ROWS];
    let mut i = 0;
    while i < seeds.len() {
        seeds[i] = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        i += 1;
    }
    seeds
};

fn shingles(text: &str) -> HashSet<u64> {
    let words: Vec<&str> = text.split(' ').collect();
    if words.len() < SHINGLE {
        return std::iter::once(hash_of(text, 0)).collect();
    }
    words.windows(SHINGLE).map(|w| hash_of(w, 0)).collect()
}

fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// What deduplication removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupReport {
    /// Records identical to an earlier one.
    pub exact: usize,
    /// Records whose word-shingle Jaccard similarity with an earlier one reaches the threshold.
    pub near: usize,
}

/// Removes exact duplicates and near-duplicates (word 5-gram Jaccard ≥ `threshold`, found
/// with MinHash LSH and then confirmed exactly), keeping the first of each group.
pub fn dedup(records: Vec<SftRecord>, threshold: f64) -> (Vec<SftRecord>, DedupReport) {
    let mut report = DedupReport::default();
    let mut seen_exact = HashSet::new();
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut kept_shingles: Vec<HashSet<u64>> = Vec::new();
    let mut kept_signatures: Vec<[u64; BANDS * ROWS]> = Vec::new();
    let mut kept = Vec::with_capacity(records.len());
    for record in records {
        let text = record_text(&record);
        if !seen_exact.insert(hash_of(&text, 1)) {
            report.exact += 1;
            continue;
        }
        let sh = shingles(&text);
        // One hash per shingle, re-mixed per signature row (cheap, and as good as fresh hashes).
        let mut signature = [u64::MAX; BANDS * ROWS];
        for &x in &sh {
            for (k, slot) in signature.iter_mut().enumerate() {
                *slot = (*slot).min(splitmix64(x ^ ROW_SEEDS[k]));
            }
        }
        let keys: Vec<(usize, u64)> = signature
            .chunks(ROWS)
            .enumerate()
            .map(|(band, rows)| (band, hash_of(rows, 0)))
            .collect();
        let candidates: HashSet<usize> = keys
            .iter()
            .filter_map(|k| buckets.get(k))
            .flatten()
            .copied()
            .collect();
        // The share of equal signature rows estimates the Jaccard similarity (standard error
        // about 0.06 with 64 rows); only plausible candidates get the exact, costly check.
        let plausible = |c: usize| {
            let equal = signature
                .iter()
                .zip(&kept_signatures[c])
                .filter(|(a, b)| a == b)
                .count();
            equal as f64 / signature.len() as f64 >= threshold - 0.25
        };
        if candidates
            .iter()
            .any(|&c| plausible(c) && jaccard(&sh, &kept_shingles[c]) >= threshold)
        {
            report.near += 1;
            continue;
        }
        let index = kept.len();
        for k in keys {
            buckets.entry(k).or_default().push(index);
        }
        kept_shingles.push(sh);
        kept_signatures.push(signature);
        kept.push(record);
    }
    (kept, report)
}

/// Number of tokens of a record rendered with the tokenizer's chat template.
pub fn token_count(record: &SftRecord, tokenizer: &Tokenizer) -> Result<usize> {
    let text = tokenizer.render(&record.conversation, &RenderOptions::default())?;
    Ok(tokenizer.encode(&text)?.len())
}

/// Keeps the records of at most `max_tokens` tokens; returns them and how many were dropped.
pub fn length_filter(
    records: Vec<SftRecord>,
    tokenizer: &Tokenizer,
    max_tokens: usize,
) -> Result<(Vec<SftRecord>, usize)> {
    let mut kept = Vec::with_capacity(records.len());
    let mut dropped = 0;
    for r in records {
        if token_count(&r, tokenizer)? <= max_tokens {
            kept.push(r);
        } else {
            dropped += 1;
        }
    }
    Ok((kept, dropped))
}

/// How agent and general records are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixOptions {
    /// General-chat records per agent record (the method's 1 : 4 is 4.0).
    pub general_per_agent: f64,
    /// Total records wanted (`None`: every agent record, with general ones at the ratio).
    pub target: Option<usize>,
    /// Seed of the sampling and the final shuffle.
    pub seed: u64,
}

impl Default for MixOptions {
    fn default() -> Self {
        Self {
            general_per_agent: 4.0,
            target: None,
            seed: 0,
        }
    }
}

/// Mixes agent and general records at the ratio (as closely as the available records allow),
/// samples without replacement and shuffles, all from the seed.
pub fn mix(
    mut agent: Vec<SftRecord>,
    mut general: Vec<SftRecord>,
    options: &MixOptions,
) -> Vec<SftRecord> {
    let mut rng = Rng::new(options.seed);
    rng.shuffle(&mut agent);
    rng.shuffle(&mut general);
    let share = 1.0 / (1.0 + options.general_per_agent.max(0.0));
    let (mut n_agent, mut n_general) = match options.target {
        Some(t) => {
            let a = (t as f64 * share).round() as usize;
            (a, t - a.min(t))
        }
        None => {
            let a = agent.len();
            (a, (a as f64 * options.general_per_agent).round() as usize)
        }
    };
    // Too few of one kind: shrink the other to keep the ratio.
    if n_general > general.len() {
        n_general = general.len();
        if options.general_per_agent > 0.0 {
            n_agent = n_agent.min((n_general as f64 / options.general_per_agent).round() as usize);
        }
    }
    if n_agent > agent.len() {
        n_agent = agent.len();
        n_general = n_general.min((n_agent as f64 * options.general_per_agent).round() as usize);
    }
    agent.truncate(n_agent);
    general.truncate(n_general);
    let mut out = agent;
    out.extend(general);
    rng.shuffle(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Conversation, Message};

    fn record(text: &str, source: &str) -> SftRecord {
        SftRecord {
            conversation: Conversation::new(vec![Message::user(text), Message::assistant("ok")]),
            source: source.into(),
            kind: "chat".into(),
            protocol: None,
        }
    }

    #[test]
    fn removes_exact_and_near_duplicates_only() {
        let long = "the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat \
                    all afternoon long and the farmer walks to the market to sell apples pears and \
                    plums before the rain begins to fall on the old stone bridge near the river bank \
                    where children play with small wooden boats every single summer day";
        let records = vec![
            record(long, "a"),
            record(long, "b"),
            record(&long.replace("afternoon", "evening"), "c"),
            record(
                "a completely different question about sql tables and counting rows",
                "d",
            ),
            record(&long.to_uppercase(), "e"),
        ];
        let (kept, report) = dedup(records, 0.7);
        let sources: Vec<&str> = kept.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["a", "d"]);
        assert_eq!(report, DedupReport { exact: 2, near: 1 });
    }

    #[test]
    fn mixes_at_the_ratio_deterministically() {
        let agent: Vec<SftRecord> = (0..10)
            .map(|i| record(&format!("agent {i}"), "agent"))
            .collect();
        let general: Vec<SftRecord> = (0..100)
            .map(|i| record(&format!("chat {i}"), "chat"))
            .collect();
        let mixed = mix(agent.clone(), general.clone(), &MixOptions::default());
        let n_agent = mixed.iter().filter(|r| r.source == "agent").count();
        assert_eq!((n_agent, mixed.len()), (10, 50));
        assert_eq!(
            mixed,
            mix(agent.clone(), general.clone(), &MixOptions::default())
        );
        let few = mix(agent.clone(), general[..8].to_vec(), &MixOptions::default());
        assert_eq!(few.iter().filter(|r| r.source == "agent").count(), 2);
        let target = mix(
            agent,
            general,
            &MixOptions {
                target: Some(25),
                ..MixOptions::default()
            },
        );
        assert_eq!(target.len(), 25);
        assert_eq!(target.iter().filter(|r| r.source == "agent").count(), 5);
    }
}
