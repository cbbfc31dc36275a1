//! Batched generation with a KV cache: one batched prefill, then one token per step for every
//! unfinished sequence; finished sequences leave the batch.

use std::sync::Arc;

use candle_core::DType;
use serde::{Deserialize, Serialize};

use super::sampling::{Sampling, logprob_at};
use crate::chat::Tokenizer;
use crate::error::{Error, Result};
use crate::model::host;
use crate::model::{AttentionMask, Decoder, KvCache, Mode};
use crate::progress::Progress;
use crate::rng::Rng;

/// What a generation call does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// Most tokens generated per sequence.
    pub max_new_tokens: usize,
    /// How each token is picked.
    pub sampling: Sampling,
    /// Seed of sequence 0; sequence `i` of a batch uses `seed + i`, so a batch equals its
    /// sequences run one by one with those seeds.
    pub seed: u64,
    /// Ids that end a sequence (kept as its last token); empty means the tokenizer's eos ids.
    pub stop_token_ids: Vec<u32>,
    /// Texts that end a sequence; the text is cut before the first one found.
    pub stop_strings: Vec<String>,
    /// Adapters on ([`Mode::Eval`]) or off ([`Mode::Reference`]).
    pub mode: Mode,
    /// Print a progress line (to stdout) when generation takes more than a few seconds.
    pub progress: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: Sampling::greedy(),
            seed: 0,
            stop_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            mode: Mode::Eval,
            progress: true,
        }
    }
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It produced a stop token (kept as its last id).
    StopToken,
    /// Its text reached a stop string.
    StopString,
    /// It reached `max_new_tokens`.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The new token ids (a final stop token included).
    pub ids: Vec<u32>,
    /// `log p(id | everything before)` of each new id under the model's distribution at the
    /// sampling temperature (1 for greedy decoding; no repetition penalty, top-k or top-p): the
    /// same numbers teacher forcing at that temperature gives, which GRPO's ratios need.
    pub logprobs: Vec<f32>,
    /// The text of the new ids without a final stop token, cut before a stop string.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Per-sequence state while generating.
struct Row {
    /// Index in the caller's batch.
    index: usize,
    /// The sequence: prompt, then the tokens generated so far.
    history: Vec<u32>,
    /// Cache position of each of the first `slots.len()` tokens of `history` (those whose
    /// keys and values are in the cache).
    slots: Vec<usize>,
    /// Per cache position: whether it holds a live token of this sequence.
    keys: Vec<bool>,
    rng: Rng,
    out: Generation,
    done: bool,
}

/// The attention mask of a step: each query sees the live keys (real tokens) of its row at or
/// before its own position.
fn step_mask(rows: &[&Row], t: usize, device: &candle_core::Device) -> Result<Arc<AttentionMask>> {
    let keys = rows.first().map_or(0, |r| r.keys.len());
    let past = keys - t;
    let spans = rows
        .iter()
        .flat_map(|_| (0..t).map(|q| (0, (past + q + 1) as u32)))
        .collect();
    let live = rows.iter().flat_map(|r| r.keys.iter().copied()).collect();
    Ok(Arc::new(AttentionMask::with_live_keys(
        rows.len(),
        t,
        keys,
        spans,
        live,
        device,
    )?))
}

/// Generates a continuation of every prompt (token ids) in one batch.
///
/// Prompts are left-padded and prefilled together; then each step feeds one token per
/// unfinished sequence through the KV cache. A sequence that stops leaves the batch (its
/// cache rows are dropped), so the remaining ones run at their own size. With
/// [`Sampling::greedy`] the result is deterministic and equals running the prompts one by one.
pub fn generate(
    decoder: &Decoder,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> Result<Vec<Generation>> {
    let requests: Vec<(usize, &[u32])> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.as_slice()))
        .collect();
    GenerationSession::new(decoder).run(tokenizer, &requests, options, false)
}

/// Sequences whose KV cache outlives one generation call, for multi-turn rollouts: each call
/// prefills only what a sequence gained since its previous call (the end of its reply, the
/// observation, the next header) instead of the whole conversation again.
///
/// Sequences are named by the caller's ids. A call's prompt for a known id is compared with
/// the tokens cached for it: the common prefix is reused, cached tokens after it are masked
/// out, and the rest is prefilled. Ids absent from a call leave the session. A sequence that
/// finishes leaves the batch as in [`generate`], its cache rows parked until the call ends. With
/// [`Sampling::greedy`] the result equals [`generate`] on the whole prompts.
pub struct GenerationSession<'a> {
    decoder: &'a Decoder,
    cache: Option<KvCache>,
    /// One per cache row, in cache order, keyed by the caller's id.
    rows: Vec<(usize, Row)>,
}

impl<'a> GenerationSession<'a> {
    /// An empty session on `decoder`.
    pub fn new(decoder: &'a Decoder) -> Self {
        Self {
            decoder,
            cache: None,
            rows: Vec::new(),
        }
    }

    /// Cache positions held per sequence (live tokens plus the masked gaps between turns).
    pub fn cached_positions(&self) -> usize {
        self.cache.as_ref().map_or(0, KvCache::len)
    }

    /// Generates a continuation of each `(id, prompt)`, reusing what is cached for `id`.
    /// Sequence `i` of the call samples with seed `options.seed + i`.
    pub fn generate(
        &mut self,
        tokenizer: &Tokenizer,
        requests: &[(usize, &[u32])],
        options: &GenerateOptions,
    ) -> Result<Vec<Generation>> {
        self.run(tokenizer, requests, options, true)
    }

    fn run(
        &mut self,
        tokenizer: &Tokenizer,
        requests: &[(usize, &[u32])],
        options: &GenerateOptions,
        keep: bool,
    ) -> Result<Vec<Generation>> {
        options.sampling.validate()?;
        if requests.is_empty() {
            if keep {
                self.rows.clear();
                self.cache = None;
            }
            return Ok(Vec::new());
        }
        let decoder = self.decoder;
        if let Some(i) = requests.iter().position(|(_, p)| p.is_empty()) {
            return Err(Error::Generate(format!("prompt {i} is empty")));
        }
        let vocab = decoder.config().vocab_size;
        if let Some(bad) = requests
            .iter()
            .flat_map(|(_, p)| p.iter())
            .find(|&&id| id as usize >= vocab)
        {
            return Err(Error::Generate(format!(
                "prompt token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let stop_ids: Vec<u32> = if options.stop_token_ids.is_empty() {
            tokenizer.eos_token_ids().to_vec()
        } else {
            options.stop_token_ids.clone()
        };
        let device = decoder.device().clone();
        let pad = tokenizer.pad_token_id();
        let n = requests.len();

        // Line the cache rows up with the requests: known ids keep their row, new ids get an
        // empty one, ids not asked for are dropped.
        let mut old: Vec<Option<(usize, Row)>> = self.rows.drain(..).map(Some).collect();
        let mut gather = Vec::with_capacity(n);
        let mut rows: Vec<Row> = Vec::with_capacity(n);
        let cached_len = self.cache.as_ref().map_or(0, KvCache::len);
        for (i, &(id, prompt)) in requests.iter().enumerate() {
            let found = old
                .iter()
                .position(|r| r.as_ref().is_some_and(|(rid, _)| *rid == id));
            let mut row = match found.and_then(|at| old[at].take().map(|r| (at, r))) {
                Some((at, (_, row))) => {
                    gather.push(Some(at as u32));
                    row
                }
                None => {
                    gather.push(None);
                    Row {
                        index: 0,
                        history: Vec::new(),
                        slots: Vec::new(),
                        keys: vec![false; cached_len],
                        rng: Rng::new(0),
                        out: Generation::empty(),
                        done: false,
                    }
                }
            };
            // Reuse the longest cached prefix (at least one token is fed, for the logits).
            let common = row
                .history
                .iter()
                .zip(prompt)
                .take(row.slots.len())
                .take_while(|(a, b)| a == b)
                .count()
                .min(prompt.len() - 1);
            for &slot in &row.slots[common..] {
                row.keys[slot] = false;
            }
            row.slots.truncate(common);
            row.history = prompt.to_vec();
            row.index = i;
            row.rng = Rng::new(options.seed.wrapping_add(i as u64));
            row.out = Generation::empty();
            row.done = options.max_new_tokens == 0;
            rows.push(row);
        }
        if options.max_new_tokens == 0 {
            return Ok(rows.into_iter().map(|r| r.out).collect());
        }
        let fresh = rows.iter().map(|r| r.history.len() - r.slots.len());
        let block = fresh.max().unwrap_or(0);
        let mut cache = match self.cache.take() {
            Some(mut cache) if gather.iter().any(Option::is_some) => {
                cache.gather_rows(&gather)?;
                cache.reserve(block + options.max_new_tokens)?;
                cache
            }
            _ => {
                for row in &mut rows {
                    row.keys.clear();
                }
                KvCache::new(
                    decoder.config(),
                    n,
                    block + options.max_new_tokens,
                    &device,
                    decoder.dtype(),
                )?
            }
        };
        // Prefill: each sequence's new tokens, left-padded to a common block; positions count
        // the sequence's own tokens.
        let start = cache.len();
        let mut ids = Vec::with_capacity(n * block);
        let mut positions = Vec::with_capacity(n * block);
        for row in &mut rows {
            let new = &row.history[row.slots.len()..];
            let padding = block - new.len();
            let first = row.slots.len();
            ids.extend(std::iter::repeat_n(pad, padding).chain(new.iter().copied()));
            positions.extend((0..block).map(|j| (first + j.saturating_sub(padding)) as u32));
            row.keys.extend((0..block).map(|j| j >= padding));
            row.slots.extend((padding..block).map(|j| start + j));
        }
        let mut ids = host::tensor(ids, (n, block), &device)?;
        let mut positions = host::tensor(positions, (n, block), &device)?;
        let mut mask = step_mask(&rows.iter().collect::<Vec<_>>(), block, &device)?;
        let mut progress =
            Progress::new("generate", Some((n * options.max_new_tokens) as u64)).with_unit("tok");
        // `active[i]` is the index in `rows` of cache row i.
        let mut active: Vec<usize> = (0..n).collect();
        // Cache rows of sequences that finished before the others: (their `rows` indices, rows).
        let mut parked: Vec<(Vec<usize>, KvCache)> = Vec::new();
        for _step in 0..options.max_new_tokens {
            let t = ids.dim(1)?;
            let hidden =
                decoder.forward_cached(&ids, &positions, &mask, &mut cache, options.mode)?;
            let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
            let logits = decoder
                .logits_from_hidden(&last)?
                .to_dtype(DType::F32)?
                .to_vec2::<f32>()?;
            let mut stepped = 0;
            for (mut row_logits, &r) in logits.into_iter().zip(&active) {
                let row = &mut rows[r];
                if row.done {
                    continue;
                }
                stepped += 1;
                // Only the repetition penalty edits logits in place; keep the model's own then.
                let id = if options.sampling.repetition_penalty == 1.0 {
                    options
                        .sampling
                        .pick(&mut row_logits, &row.history, &mut row.rng)
                } else {
                    options
                        .sampling
                        .pick(&mut row_logits.clone(), &row.history, &mut row.rng)
                };
                row.out.logprobs.push(logprob_at(
                    &row_logits,
                    id,
                    options.sampling.logprob_temperature(),
                ));
                row.out.ids.push(id);
                row.history.push(id);
                if stop_ids.contains(&id) {
                    row.out.finish = FinishReason::StopToken;
                    row.done = true;
                } else if !options.stop_strings.is_empty() {
                    let text = tokenizer.decode(&row.out.ids, false)?;
                    if let Some(cut) = first_stop(&text, &options.stop_strings) {
                        row.out.text = text[..cut].to_string();
                        row.out.finish = FinishReason::StopString;
                        row.done = true;
                    }
                }
                if row.out.ids.len() == options.max_new_tokens {
                    row.done = true;
                }
            }
            if options.progress {
                progress.inc(stepped);
            }
            if active.iter().all(|&r| rows[r].done) {
                break;
            }
            // Finished sequences leave the batch; a session parks their cache rows.
            let (stay, leave): (Vec<u32>, Vec<u32>) =
                (0..active.len() as u32).partition(|&i| !rows[active[i as usize]].done);
            if keep && !leave.is_empty() {
                let ids = leave.iter().map(|&i| active[i as usize]).collect();
                parked.push((ids, cache.copy_rows(&leave)?));
            }
            cache.select_rows(&stay)?;
            active = stay.iter().map(|&i| active[i as usize]).collect();
            let at = cache.len();
            let (mut next, mut pos) = (Vec::new(), Vec::new());
            for &r in &active {
                let row = &mut rows[r];
                next.push(row.history[row.history.len() - 1]);
                pos.push(row.slots.len() as u32);
                row.slots.push(at);
                row.keys.push(true);
            }
            let step_rows: Vec<&Row> = active.iter().map(|&r| &rows[r]).collect();
            mask = step_mask(&step_rows, 1, &device)?;
            ids = host::tensor(next, (active.len(), 1), &device)?;
            positions = host::tensor(pos, (active.len(), 1), &device)?;
        }
        if progress.shown() {
            progress.finish();
        }
        let mut out = Vec::with_capacity(n);
        for row in &mut rows {
            let mut g = std::mem::replace(&mut row.out, Generation::empty());
            if g.finish != FinishReason::StopString {
                let body = match g.finish {
                    FinishReason::StopToken => &g.ids[..g.ids.len() - 1],
                    _ => &g.ids[..],
                };
                g.text = tokenizer.decode(body, false)?;
            }
            out.push(g);
        }
        if keep {
            // Put the parked rows back, in request order; their keys end where they stopped.
            let mut order = active;
            let mut parts = vec![cache];
            for (ids, part) in parked {
                order.extend(ids);
                parts.push(part);
            }
            let mut cache = KvCache::stack(parts)?;
            let mut at = vec![0u32; n];
            for (i, &r) in order.iter().enumerate() {
                at[r] = i as u32;
            }
            cache.gather_rows(&at.into_iter().map(Some).collect::<Vec<_>>())?;
            for row in &mut rows {
                row.keys.resize(cache.len(), false);
            }
            self.rows = requests.iter().map(|&(id, _)| id).zip(rows).collect();
            self.cache = Some(cache);
        }
        Ok(out)
    }
}

impl Generation {
    fn empty() -> Self {
        Self {
            ids: Vec::new(),
            logprobs: Vec::new(),
            text: String::new(),
            finish: FinishReason::Length,
        }
    }
}

/// Byte offset of the earliest stop string in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}
