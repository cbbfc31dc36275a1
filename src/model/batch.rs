//! A padded batch of token sequences, with the masks and positions the decoder needs.

use candle_core::{DType, Device, Tensor};

use super::host;
use super::mask::AttentionMask;
use crate::error::{Error, Result};

/// Token ids `[batch, seq]` with a padding mask; positions count real tokens only.
///
/// Built right-padded for training (teacher forcing) and left-padded for generation. A pad
/// token never influences a real one: keys at padded positions are masked, and each row's
/// positions start at 0 at its first real token (as transformers does with
/// `position_ids = cumsum(mask) - 1`).
///
/// A row may also hold several sequences packed end to end ([`TokenBatch::packed`]): the mask
/// then numbers them 1, 2, … (0 is padding), attention never crosses from one to another,
/// positions restart at 0 for each, and no target spans two of them — each sequence is
/// computed exactly as if it were alone.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    ids: Vec<u32>,
    /// 0 for padding, else the 1-based number of the sequence within its row.
    mask: Vec<u8>,
    batch: usize,
    seq: usize,
    device: Device,
}

/// Which side of a sequence pads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pads after the tokens (training, log-probs).
    Right,
    /// Pads before the tokens (batched generation: every row ends at the same column).
    Left,
}

impl TokenBatch {
    /// Pads `sequences` to the longest with `pad_id` on the given side.
    pub fn pad(
        sequences: &[Vec<u32>],
        pad_id: u32,
        side: Padding,
        device: &Device,
    ) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::Batch("no sequences".into()));
        }
        let seq = sequences.iter().map(Vec::len).max().unwrap_or(0);
        if seq == 0 {
            return Err(Error::Batch("all sequences are empty".into()));
        }
        let mut ids = Vec::with_capacity(sequences.len() * seq);
        let mut mask = Vec::with_capacity(sequences.len() * seq);
        for s in sequences {
            let pads = seq - s.len();
            if side == Padding::Left {
                ids.extend(std::iter::repeat_n(pad_id, pads));
                mask.extend(std::iter::repeat_n(0u8, pads));
            }
            ids.extend_from_slice(s);
            mask.extend(std::iter::repeat_n(1u8, s.len()));
            if side == Padding::Right {
                ids.extend(std::iter::repeat_n(pad_id, pads));
                mask.extend(std::iter::repeat_n(0u8, pads));
            }
        }
        Ok(Self {
            ids,
            mask,
            batch: sequences.len(),
            seq,
            device: device.clone(),
        })
    }

    /// Packs several sequences into each row (right-padded to the longest row). At most 255
    /// sequences fit in a row.
    pub fn packed(rows: &[Vec<Vec<u32>>], pad_id: u32, device: &Device) -> Result<Self> {
        if rows.is_empty() {
            return Err(Error::Batch("no rows".into()));
        }
        let seq = rows
            .iter()
            .map(|r| r.iter().map(Vec::len).sum::<usize>())
            .max()
            .unwrap_or(0);
        if seq == 0 {
            return Err(Error::Batch("all rows are empty".into()));
        }
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut mask = Vec::with_capacity(rows.len() * seq);
        for row in rows {
            if row.len() > usize::from(u8::MAX) {
                return Err(Error::Batch(format!(
                    "{} sequences in one row; at most 255 can be packed",
                    row.len()
                )));
            }
            let mut len = 0;
            for (k, s) in row.iter().enumerate() {
                ids.extend_from_slice(s);
                mask.extend(std::iter::repeat_n(k as u8 + 1, s.len()));
                len += s.len();
            }
            ids.extend(std::iter::repeat_n(pad_id, seq - len));
            mask.extend(std::iter::repeat_n(0u8, seq - len));
        }
        Ok(Self {
            ids,
            mask,
            batch: rows.len(),
            seq,
            device: device.clone(),
        })
    }

    /// From row-major ids and a 0/1 mask (`[batch, seq]` each), e.g. read from a fixture.
    pub fn from_parts(ids: Vec<u32>, mask: Vec<u8>, batch: usize, device: &Device) -> Result<Self> {
        if batch == 0
            || ids.is_empty()
            || !ids.len().is_multiple_of(batch)
            || mask.len() != ids.len()
        {
            return Err(Error::Batch(format!(
                "{} ids and {} mask entries do not form {batch} equal rows",
                ids.len(),
                mask.len()
            )));
        }
        let seq = ids.len() / batch;
        Ok(Self {
            ids,
            mask,
            batch,
            seq,
            device: device.clone(),
        })
    }

    /// `(batch, seq)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.batch, self.seq)
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The largest token id in the batch (pads included), checked against the vocabulary.
    pub fn max_id(&self) -> Option<u32> {
        self.ids.iter().copied().max()
    }

    /// Number of real (non-pad) tokens.
    pub fn num_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }

    /// Token ids `[batch, seq]` (u32).
    pub fn input_ids(&self) -> Result<Tensor> {
        Ok(host::tensor_from_slice(
            &self.ids,
            (self.batch, self.seq),
            &self.device,
        )?)
    }

    /// The 0/1 padding mask `[batch, seq]` in `dtype`.
    pub fn mask(&self, dtype: DType) -> Result<Tensor> {
        let m: Vec<f32> = self
            .mask
            .iter()
            .map(|&m| f32::from(u8::from(m != 0)))
            .collect();
        Ok(host::tensor(m, (self.batch, self.seq), &self.device)?.to_dtype(dtype)?)
    }

    /// The mask over next-token targets `[batch, seq - 1]`: 1 where the context token and the
    /// predicted token are real and belong to the same sequence.
    pub fn target_mask(&self) -> Result<Tensor> {
        let mut m = Vec::with_capacity(self.batch * (self.seq - 1));
        for row in self.mask.chunks(self.seq) {
            m.extend(
                row.windows(2)
                    .map(|w| f32::from(u8::from(w[0] != 0 && w[0] == w[1]))),
            );
        }
        Ok(host::tensor(m, (self.batch, self.seq - 1), &self.device)?)
    }

    /// Positions `[batch, seq]` (u32): `cumsum(mask) - 1`, clamped at 0 on leading pads, and
    /// restarting at 0 with each packed sequence.
    pub fn positions(&self) -> Result<Tensor> {
        let mut pos = Vec::with_capacity(self.ids.len());
        for row in self.mask.chunks(self.seq) {
            let mut count = 0u32;
            let mut current = 0u8;
            for &m in row {
                if m != 0 && m != current {
                    current = m;
                    count = 0;
                }
                count += u32::from(m != 0);
                pos.push(count.saturating_sub(1));
            }
        }
        Ok(host::tensor(pos, (self.batch, self.seq), &self.device)?)
    }

    /// The attention mask: a real query sees the keys from the start of its own sequence up
    /// to itself (causal, never across packed sequences, never padding); a pad query sees only
    /// itself (its output is never used).
    pub fn attention_mask(&self) -> Result<AttentionMask> {
        let (b, t) = (self.batch, self.seq);
        let mut spans = Vec::with_capacity(b * t);
        for row in self.mask.chunks(t) {
            let mut start = 0;
            for i in 0..t {
                if i == 0 || row[i] != row[i - 1] {
                    start = i;
                }
                spans.push(if row[i] == 0 {
                    (i as u32, i as u32)
                } else {
                    (start as u32, i as u32 + 1)
                });
            }
        }
        Ok(AttentionMask::from_spans(b, t, t, spans, &self.device)?)
    }

    /// Per-row real tokens, without padding.
    pub fn rows(&self) -> Vec<Vec<u32>> {
        self.ids
            .chunks(self.seq)
            .zip(self.mask.chunks(self.seq))
            .map(|(ids, m)| {
                ids.iter()
                    .zip(m)
                    .filter(|(_, m)| **m != 0)
                    .map(|(i, _)| *i)
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_starts_positions_at_the_first_real_token() {
        let b = TokenBatch::pad(&[vec![5, 6, 7], vec![8]], 0, Padding::Left, &Device::Cpu).unwrap();
        assert_eq!(
            b.input_ids().unwrap().to_vec2::<u32>().unwrap(),
            [[5, 6, 7], [0, 0, 8]]
        );
        assert_eq!(
            b.positions().unwrap().to_vec2::<u32>().unwrap(),
            [[0, 1, 2], [0, 0, 0]]
        );
        assert_eq!(
            b.target_mask().unwrap().to_vec2::<f32>().unwrap(),
            [[1., 1.], [0., 0.]]
        );
        assert_eq!(b.rows(), vec![vec![5, 6, 7], vec![8]]);
        let bias = b
            .attention_mask()
            .unwrap()
            .bias()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // row 1, query 0 (a pad with no real key before it) sees only itself
        assert_eq!(&bias[9..12], &[0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        // row 1, query 2 sees only key 2
        assert_eq!(&bias[15..18], &[f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0]);
    }

    #[test]
    fn right_padding_masks_targets_after_the_end() {
        let b = TokenBatch::pad(
            &[vec![1, 2], vec![3, 4, 5]],
            9,
            Padding::Right,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            b.target_mask().unwrap().to_vec2::<f32>().unwrap(),
            [[1., 0.], [1., 1.]]
        );
        assert_eq!(b.num_tokens(), 5);
        assert!(TokenBatch::pad(&[], 0, Padding::Right, &Device::Cpu).is_err());
    }
}
