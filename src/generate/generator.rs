//! Batched generation with a KV cache: one batched prefill, then one token per step for every
//! unfinished sequence; finished sequences leave the batch.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::sampling::{Sampling, log_sum_exp};
use crate::chat::Tokenizer;
use crate::error::{Error, Result};
use crate::model::{Decoder, KvCache, Mode};
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
    /// `log p(id | everything before)` of each new id under the model itself (temperature 1,
    /// no top-k/top-p): the same numbers teacher forcing gives, which GRPO's ratios need.
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
    history: Vec<u32>,
    keys: Vec<bool>,
    next_position: u32,
    rng: Rng,
    out: Generation,
    done: bool,
}

/// The additive attention bias `[rows, 1, 1, t, keys]` of a step: 0 where a query may see a
/// key (a real token at or before it), −∞ elsewhere; a query with nothing to see (padding)
/// sees itself, so no softmax row is empty.
fn step_bias(rows: &[&Row], t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let keys = rows.first().map_or(0, |r| r.keys.len());
    let past = keys - t;
    let mut bias = vec![f32::NEG_INFINITY; rows.len() * t * keys];
    for (r, row) in rows.iter().enumerate() {
        for q in 0..t {
            let line = &mut bias[(r * t + q) * keys..(r * t + q + 1) * keys];
            let mut any = false;
            for (k, b) in line.iter_mut().enumerate().take(past + q + 1) {
                if row.keys[k] {
                    *b = 0.0;
                    any = true;
                }
            }
            if !any {
                line[past + q] = 0.0;
            }
        }
    }
    Ok(Tensor::from_vec(bias, (rows.len(), 1, 1, t, keys), device)?)
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
    options.sampling.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::Generate(format!("prompt {i} is empty")));
    }
    let vocab = decoder.config().vocab_size;
    if let Some(bad) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
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
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pad = tokenizer.pad_token_id();
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Row {
            index: i,
            history: p.clone(),
            keys: (0..longest).map(|j| j >= longest - p.len()).collect(),
            next_position: p.len() as u32,
            rng: Rng::new(options.seed.wrapping_add(i as u64)),
            out: Generation {
                ids: Vec::new(),
                logprobs: Vec::new(),
                text: String::new(),
                finish: FinishReason::Length,
            },
            done: options.max_new_tokens == 0,
        })
        .collect();
    if options.max_new_tokens == 0 {
        return Ok(rows.into_iter().map(|r| r.out).collect());
    }
    let mut cache = KvCache::new(
        decoder.config(),
        rows.len(),
        longest + options.max_new_tokens,
        &device,
        decoder.dtype(),
    )?;
    // Prefill: left-padded prompts, positions counted over real tokens only.
    let mut ids = Vec::with_capacity(rows.len() * longest);
    let mut positions = Vec::with_capacity(rows.len() * longest);
    for p in prompts {
        let padding = longest - p.len();
        ids.extend(std::iter::repeat_n(pad, padding).chain(p.iter().copied()));
        positions.extend((0..longest).map(|j| j.saturating_sub(padding) as u32));
    }
    let n = rows.len();
    let mut ids = Tensor::from_vec(ids, (n, longest), &device)?;
    let mut positions = Tensor::from_vec(positions, (n, longest), &device)?;
    let mut bias = step_bias(&rows.iter().collect::<Vec<_>>(), longest, &device)?;
    let mut progress = Progress::new(
        "generate",
        Some((prompts.len() * options.max_new_tokens) as u64),
    )
    .with_unit("tok");
    // `active[i]` is the index in `rows` of cache row i.
    let mut active: Vec<usize> = (0..n).collect();
    for _step in 0..options.max_new_tokens {
        let t = ids.dim(1)?;
        let hidden = decoder.forward_cached(&ids, &positions, &bias, &mut cache, options.mode)?;
        let last = hidden.narrow(1, t - 1, 1)?.squeeze(1)?;
        let logits = decoder
            .logits_from_hidden(&last)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (mut row_logits, &r) in logits.into_iter().zip(&active) {
            let row = &mut rows[r];
            let lse = log_sum_exp(&row_logits);
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
            row.out.logprobs.push(row_logits[id as usize] - lse);
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
            progress.inc(active.len() as u64);
        }
        let keep: Vec<u32> = (0..active.len())
            .filter(|&i| !rows[active[i]].done)
            .map(|i| i as u32)
            .collect();
        if keep.is_empty() {
            break;
        }
        cache.select_rows(&keep)?;
        active = keep.iter().map(|&i| active[i as usize]).collect();
        let step_rows: Vec<&Row> = active.iter().map(|&r| &rows[r]).collect();
        let next: Vec<u32> = step_rows
            .iter()
            .map(|r| r.history[r.history.len() - 1])
            .collect();
        let pos: Vec<u32> = step_rows.iter().map(|r| r.next_position).collect();
        drop(step_rows);
        for &r in &active {
            rows[r].keys.push(true);
            rows[r].next_position += 1;
        }
        let step_rows: Vec<&Row> = active.iter().map(|&r| &rows[r]).collect();
        bias = step_bias(&step_rows, 1, &device)?;
        ids = Tensor::from_vec(next, (active.len(), 1), &device)?;
        positions = Tensor::from_vec(pos, (active.len(), 1), &device)?;
    }
    if progress.shown() {
        progress.finish();
    }
    rows.sort_by_key(|r| r.index);
    rows.into_iter()
        .map(|mut r| {
            if r.out.finish != FinishReason::StopString {
                let body = match r.out.finish {
                    FinishReason::StopToken => &r.out.ids[..r.out.ids.len() - 1],
                    _ => &r.out.ids[..],
                };
                r.out.text = tokenizer.decode(body, false)?;
            }
            Ok(r.out)
        })
        .collect()
}

/// Byte offset of the earliest stop string in `text`.
fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}
