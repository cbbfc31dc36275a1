//! SFT examples (token ids with the assistant-only loss mask) and their batches: packed rows
//! (several examples per row, attention and positions kept apart) or one example per row.

use candle_core::Device;

use crate::chat::{EncodeOptions, Tokenizer, Truncation};
use crate::data::SftRecord;
use crate::error::{Error, Result};
use crate::model::{Padding, TokenBatch};
use crate::rng::Rng;

/// One training sequence: token ids and 1 where the token is a trained assistant token.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 on tokens the loss is taken on (same length as `ids`).
    pub mask: Vec<u8>,
}

impl SftExample {
    /// Tokens with loss.
    pub fn trained(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Encodes records with the chat template, truncated to `max_len` tokens (later turns are
/// dropped whole); records left without any trained token are skipped. Returns the examples
/// and how many records were skipped.
pub fn encode_records(
    records: &[SftRecord],
    tokenizer: &Tokenizer,
    max_len: usize,
) -> Result<(Vec<SftExample>, usize)> {
    let options = EncodeOptions {
        max_len: Some(max_len),
        truncation: Truncation::DropTurns,
        ..EncodeOptions::default()
    };
    let mut out = Vec::with_capacity(records.len());
    let mut skipped = 0;
    for r in records {
        let e = tokenizer.encode_conversation(&r.conversation, &options)?;
        if e.num_trained() == 0 || e.ids.len() < 2 {
            skipped += 1;
            continue;
        }
        out.push(SftExample {
            ids: e.ids,
            mask: e.mask,
        });
    }
    Ok((out, skipped))
}

/// A micro-batch: which examples go in which row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MicroBatch {
    /// Example indices per row (one per row unless packed).
    pub rows: Vec<Vec<usize>>,
}

impl MicroBatch {
    /// The token batch and its trained targets: indices into the flattened next-token targets
    /// `[rows · (seq - 1)]` whose predicted token is trained and in the same example (what
    /// [`crate::model::Decoder::token_logprobs_at`] takes), in increasing order.
    pub fn tensors(
        &self,
        examples: &[SftExample],
        pad_id: u32,
        device: &Device,
    ) -> Result<(TokenBatch, Vec<u32>)> {
        let rows: Vec<Vec<Vec<u32>>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|&i| examples[i].ids.clone()).collect())
            .collect();
        let batch = if rows.iter().all(|r| r.len() == 1) {
            let flat: Vec<Vec<u32>> = rows.into_iter().flatten().collect();
            TokenBatch::pad(&flat, pad_id, Padding::Right, device)?
        } else {
            TokenBatch::packed(&rows, pad_id, device)?
        };
        let (_, t) = batch.dims();
        let mut positions = Vec::new();
        for (r, row) in self.rows.iter().enumerate() {
            let mut at = 0;
            for &i in row {
                let m = &examples[i].mask;
                // Target position p predicts token p + 1; only within the example.
                positions.extend(
                    m.iter()
                        .enumerate()
                        .skip(1)
                        .filter(|&(_, &trained)| trained == 1)
                        .map(|(k, _)| (r * (t - 1) + at + k - 1) as u32),
                );
                at += m.len();
            }
        }
        Ok((batch, positions))
    }

    /// Tokens with loss in this micro-batch.
    pub fn trained(&self, examples: &[SftExample]) -> usize {
        self.rows
            .iter()
            .flatten()
            .map(|&i| examples[i].mask.iter().skip(1).filter(|&&m| m == 1).count())
            .sum()
    }
}

/// The micro-batches of one epoch: examples in a seeded shuffled order, then either packed
/// greedily into rows of at most `max_len` tokens or one per row, `rows` rows per batch.
pub fn epoch_batches(
    examples: &[SftExample],
    seed: u64,
    epoch: usize,
    rows: usize,
    max_len: usize,
    packing: bool,
) -> Result<Vec<MicroBatch>> {
    if rows == 0 {
        return Err(Error::Batch("micro_batch must be at least 1".into()));
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    Rng::new(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).shuffle(&mut order);
    let mut packed_rows: Vec<Vec<usize>> = Vec::new();
    if packing {
        let mut row = Vec::new();
        let mut len = 0;
        for i in order {
            let n = examples[i].ids.len();
            if !row.is_empty() && (len + n > max_len || row.len() == usize::from(u8::MAX)) {
                packed_rows.push(std::mem::take(&mut row));
                len = 0;
            }
            row.push(i);
            len += n;
        }
        if !row.is_empty() {
            packed_rows.push(row);
        }
    } else {
        packed_rows = order.into_iter().map(|i| vec![i]).collect();
    }
    Ok(packed_rows
        .chunks(rows)
        .map(|c| MicroBatch { rows: c.to_vec() })
        .collect())
}
