//! A preallocated key/value cache for incremental decoding, written in place.

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use crate::error::{Error, Result};

/// Keys and values of every layer for a batch of sequences, `[batch, kv_heads, capacity,
/// head_dim]` each, allocated once; a step writes its new positions in place and attention
/// reads the filled prefix as a view, so decoding never copies or reallocates the cache.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
    len: usize,
    batch: usize,
}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` tokens.
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        capacity: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let shape = (batch, config.num_kv_heads, capacity, config.head_dim);
        let layers = (0..config.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape, dtype, device)?,
                    Tensor::zeros(shape, dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            capacity,
            len: 0,
            batch,
        })
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Checks that `t` more positions fit for a batch of `batch`.
    pub(crate) fn check_room(&self, batch: usize, t: usize) -> Result<()> {
        if batch != self.batch {
            return Err(Error::Generate(format!(
                "the cache holds {} sequences, the step has {batch}",
                self.batch
            )));
        }
        if self.len + t > self.capacity {
            return Err(Error::Generate(format!(
                "the cache is full: {} + {t} positions exceed its capacity of {}",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Writes layer `l`'s new keys/values `[batch, kv_heads, t, head_dim]` after the filled
    /// prefix and returns views of everything filled, new positions included.
    pub(crate) fn append(&self, l: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (ck, cv) = &self.layers[l];
        let t = k.dim(2)?;
        ck.slice_set(&k.contiguous()?, 2, self.len)?;
        cv.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((
            ck.narrow(2, 0, self.len + t)?,
            cv.narrow(2, 0, self.len + t)?,
        ))
    }

    /// Marks `t` more positions as filled (after every layer has appended).
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps only the sequences `rows` (in that order), e.g. to drop finished ones.
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        if rows.len() == self.batch {
            return Ok(());
        }
        let device = self.layers.first().map(|(k, _)| k.device().clone());
        let Some(device) = device else {
            self.batch = rows.len();
            return Ok(());
        };
        let index = Tensor::new(rows, &device)?;
        for (k, v) in &mut self.layers {
            *k = k.index_select(&index, 0)?;
            *v = v.index_select(&index, 0)?;
        }
        self.batch = rows.len();
        Ok(())
    }
}
