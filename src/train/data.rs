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

    /// The example as the trainer sees it: its text cut into spans with and without loss.
    pub fn view(&self, tokenizer: &Tokenizer) -> Result<LossView> {
        let mut spans: Vec<(bool, String)> = Vec::new();
        let mut start = 0;
        for end in 1..=self.ids.len() {
            if end == self.ids.len() || self.mask[end] != self.mask[start] {
                let text = tokenizer.decode(&self.ids[start..end], false)?;
                spans.push((self.mask[start] == 1, text));
                start = end;
            }
        }
        Ok(LossView {
            spans,
            tokens: self.ids.len(),
            trained: self.trained(),
        })
    }
}

/// An example's text with the tokens that carry loss marked (shown green in notebooks).
#[derive(Debug, Clone, PartialEq)]
pub struct LossView {
    /// Consecutive spans: (trained, text).
    pub spans: Vec<(bool, String)>,
    /// Tokens in the example.
    pub tokens: usize,
    /// Tokens with loss.
    pub trained: usize,
}

impl LossView {
    /// Plain text with trained spans between `⟦` and `⟧`.
    pub fn to_text(&self) -> String {
        let mut out = format!("{} tokens, {} with loss\n", self.tokens, self.trained);
        for (trained, text) in &self.spans {
            if *trained {
                out.push('⟦');
                out.push_str(text);
                out.push('⟧');
            } else {
                out.push_str(text);
            }
        }
        out
    }
}

impl crate::display::Show for LossView {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        use crate::display::escape_html;
        let mut html = format!(
            "<div style=\"font-size:13px\"><b>{} tokens, {} with loss</b> \
             (<span style=\"background:#c8f0c8\">green</span>: trained; grey: context)</div>\
             <pre style=\"white-space:pre-wrap;max-height:420px;overflow:auto;\
             font-size:12px;color:#777\">",
            self.tokens, self.trained
        );
        for (trained, text) in &self.spans {
            if *trained {
                html.push_str("<span style=\"background:#c8f0c8;color:#111\">");
                html.push_str(&escape_html(text));
                html.push_str("</span>");
            } else {
                html.push_str(&escape_html(text));
            }
        }
        html.push_str("</pre>");
        vec![("text/html", html), ("text/plain", self.to_text())]
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
    let whole = EncodeOptions::default();
    let truncated = EncodeOptions {
        max_len: Some(max_len),
        truncation: Truncation::DropTurns,
        ..EncodeOptions::default()
    };
    let mut out = Vec::with_capacity(records.len());
    let mut skipped = 0;
    for r in records {
        let mut e = tokenizer.encode_conversation(&r.conversation, &whole)?;
        if e.ids.len() > max_len {
            // Truncation keeps whole turns; a record whose first reply does not fit keeps none.
            if e.turns.first().is_none_or(|t| t.tokens.1 > max_len) {
                skipped += 1;
                continue;
            }
            e = tokenizer.encode_conversation(&r.conversation, &truncated)?;
        }
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

    /// One line per row: the examples packed in it, its tokens, its trained tokens and the
    /// padding it gets in a batch as long as its longest row.
    pub fn table(&self, examples: &[SftExample]) -> Result<crate::table::Table> {
        let len = |row: &Vec<usize>| row.iter().map(|&i| examples[i].ids.len()).sum::<usize>();
        let longest = self.rows.iter().map(len).max().unwrap_or(0);
        let mut t = crate::table::Table::new(["row", "examples", "tokens", "trained", "padding"])
            .with_title("a micro-batch");
        for (r, row) in self.rows.iter().enumerate() {
            let trained: usize = row.iter().map(|&i| examples[i].trained()).sum();
            t.push_row([
                r.to_string(),
                format!("{row:?}"),
                len(row).to_string(),
                trained.to_string(),
                (longest - len(row)).to_string(),
            ])?;
        }
        Ok(t)
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
