//! A preallocated key/value cache for incremental decoding, written in place.

use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::host;
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

    /// Rearranges the sequences: row `i` becomes old row `rows[i]`, or an empty one for `None`.
    pub fn gather_rows(&mut self, rows: &[Option<u32>]) -> Result<()> {
        if rows.iter().all(Option::is_some) {
            let rows: Vec<u32> = rows.iter().flatten().copied().collect();
            if rows.iter().enumerate().all(|(i, &r)| i as u32 == r) && rows.len() == self.batch {
                return Ok(());
            }
            return self.force_select(&rows);
        }
        // An empty row appended after the last one stands for every `None`.
        let empty = self.batch as u32;
        let index: Vec<u32> = rows.iter().map(|r| r.unwrap_or(empty)).collect();
        for (k, v) in &mut self.layers {
            let (_, heads, cap, dim) = k.dims4()?;
            let zeros = Tensor::zeros((1, heads, cap, dim), k.dtype(), k.device())?;
            *k = Tensor::cat(&[&*k, &zeros], 0)?;
            *v = Tensor::cat(&[&*v, &zeros], 0)?;
        }
        self.batch += 1;
        self.force_select(&index)
    }

    /// Makes room for `extra` more positions, reallocating (with headroom) when full.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let need = self.len + extra;
        if need <= self.capacity {
            return Ok(());
        }
        let capacity = need.max(self.capacity + self.capacity / 2);
        for (k, v) in &mut self.layers {
            let (b, heads, _, dim) = k.dims4()?;
            for t in [k, v] {
                let grown = Tensor::zeros((b, heads, capacity, dim), t.dtype(), t.device())?;
                grown.slice_set(&t.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                *t = grown;
            }
        }
        self.capacity = capacity;
        Ok(())
    }

    /// A cache of its own holding a copy of the sequences `rows` (same capacity and length).
    pub fn copy_rows(&self, rows: &[u32]) -> Result<Self> {
        let mut part = Self {
            layers: self.layers.clone(),
            capacity: self.capacity,
            len: self.len,
            batch: self.batch,
        };
        part.force_select(rows)?;
        Ok(part)
    }

    /// Stacks caches of one capacity along the batch, in order. The result is as long as the
    /// longest part: a shorter part's sequences hold nothing in the positions after its own
    /// length, which their attention masks must exclude.
    pub fn stack(parts: Vec<Self>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Generate("no caches to stack".into()));
        };
        let capacity = first.capacity;
        if parts.iter().any(|p| p.capacity != capacity) {
            return Err(Error::Generate("stacked caches differ in capacity".into()));
        }
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let len = parts.iter().map(|p| p.len).max().unwrap_or(0);
        let batch = parts.iter().map(|p| p.batch).sum();
        let layers = (0..first.layers.len())
            .map(|l| {
                let keys: Vec<&Tensor> = parts.iter().map(|p| &p.layers[l].0).collect();
                let values: Vec<&Tensor> = parts.iter().map(|p| &p.layers[l].1).collect();
                Ok((Tensor::cat(&keys, 0)?, Tensor::cat(&values, 0)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            capacity,
            len,
            batch,
        })
    }

    /// Keeps only the sequences `rows` (in that order), e.g. to drop finished ones.
    pub fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        if rows.len() == self.batch {
            return Ok(());
        }
        self.force_select(rows)
    }

    fn force_select(&mut self, rows: &[u32]) -> Result<()> {
        let device = self.layers.first().map(|(k, _)| k.device().clone());
        let Some(device) = device else {
            self.batch = rows.len();
            return Ok(());
        };
        let index = host::tensor_from_slice(rows, rows.len(), &device)?;
        for (k, v) in &mut self.layers {
            *k = k.index_select(&index, 0)?;
            *v = v.index_select(&index, 0)?;
        }
        self.batch = rows.len();
        Ok(())
    }
}
