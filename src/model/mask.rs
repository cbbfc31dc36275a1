//! Which keys each query may attend to, kept as spans rather than a `[t, keys]` matrix.
//!
//! Every mask the decoder meets is a span of key positions per query (causal, left padding,
//! packed sequences), optionally thinned by per-row key liveness (a generation cache with
//! padded slots). The tiled attention kernel reads the spans to skip whole tiles; other
//! devices get the equivalent additive bias, built once per forward.

use std::sync::OnceLock;

use candle_core::{Device, Result, Tensor};

use super::host;

/// The keys each query of a `[batch, queries]` block may see among `keys` positions.
///
/// Query `i` of row `r` sees key `j` when `lo ≤ j < hi` (its span) and, if the mask has key
/// liveness, key `j` of row `r` is live. A query that would see nothing (padding) sees only
/// its own position `keys − queries + i`, so no softmax row is empty; its output is never used.
#[derive(Debug, Clone)]
pub struct AttentionMask {
    batch: usize,
    queries: usize,
    keys: usize,
    /// `[lo, hi)` per (row, query).
    spans: Vec<(u32, u32)>,
    /// Per (row, key): whether it holds a real token; `None` when every key in a span does.
    live: Option<Vec<bool>>,
    /// Per (row, query): whether the query sees only its own position (ignoring liveness).
    alone: Vec<bool>,
    device: Device,
    bias: OnceLock<Tensor>,
}

impl AttentionMask {
    /// A mask from spans alone: every key inside a query's span is visible.
    ///
    /// An empty span is replaced by the query's own position.
    pub fn from_spans(
        batch: usize,
        queries: usize,
        keys: usize,
        spans: Vec<(u32, u32)>,
        device: &Device,
    ) -> Result<Self> {
        Self::build(batch, queries, keys, spans, None, device)
    }

    /// A mask from spans thinned by per-row key liveness (`live` is `[batch, keys]`).
    pub fn with_live_keys(
        batch: usize,
        queries: usize,
        keys: usize,
        spans: Vec<(u32, u32)>,
        live: Vec<bool>,
        device: &Device,
    ) -> Result<Self> {
        if live.len() != batch * keys {
            candle_core::bail!(
                "attention mask: {} key flags for {batch} rows of {keys} keys",
                live.len()
            );
        }
        Self::build(batch, queries, keys, spans, Some(live), device)
    }

    fn build(
        batch: usize,
        queries: usize,
        keys: usize,
        mut spans: Vec<(u32, u32)>,
        live: Option<Vec<bool>>,
        device: &Device,
    ) -> Result<Self> {
        if spans.len() != batch * queries || queries > keys {
            candle_core::bail!(
                "attention mask: {} spans for {batch} rows of {queries} queries over {keys} keys",
                spans.len()
            );
        }
        let mut alone = vec![false; spans.len()];
        for (n, span) in spans.iter_mut().enumerate() {
            let (r, i) = (n / queries, n % queries);
            if span.0 > span.1 || span.1 as usize > keys {
                candle_core::bail!(
                    "attention mask: query {i} of row {r} has span {span:?} over {keys} keys"
                );
            }
            let sees_any = match &live {
                Some(live) => live[r * keys + span.0 as usize..r * keys + span.1 as usize]
                    .iter()
                    .any(|&l| l),
                None => span.0 < span.1,
            };
            if !sees_any {
                let own = (keys - queries + i) as u32;
                *span = (own, own + 1);
                alone[n] = true;
            }
        }
        Ok(Self {
            batch,
            queries,
            keys,
            spans,
            live,
            alone,
            device: device.clone(),
            bias: OnceLock::new(),
        })
    }

    /// `(batch, queries, keys)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.batch, self.queries, self.keys)
    }

    /// The span `[lo, hi)` of query `i` in row `r`.
    pub fn span(&self, r: usize, i: usize) -> (usize, usize) {
        let (lo, hi) = self.spans[r * self.queries + i];
        (lo as usize, hi as usize)
    }

    /// The liveness of row `r`'s keys that applies to query `i`: `None` when every key in its
    /// span is visible.
    pub fn live_keys(&self, r: usize, i: usize) -> Option<&[bool]> {
        match &self.live {
            Some(live) if !self.alone[r * self.queries + i] => {
                Some(&live[r * self.keys..(r + 1) * self.keys])
            }
            _ => None,
        }
    }

    /// Whether query `i` of row `r` sees key `j`.
    pub fn sees(&self, r: usize, i: usize, j: usize) -> bool {
        let (lo, hi) = self.span(r, i);
        lo <= j && j < hi && self.live_keys(r, i).is_none_or(|live| live[j])
    }

    /// The additive bias `[batch, 1, 1, queries, keys]` (f32, 0 where a key is seen, −∞
    /// elsewhere), made once on the mask's device and kept.
    pub fn bias(&self) -> Result<Tensor> {
        if let Some(bias) = self.bias.get() {
            return Ok(bias.clone());
        }
        let (b, t, keys) = self.dims();
        let mut values = vec![f32::NEG_INFINITY; b * t * keys];
        for (n, line) in values.chunks_mut(keys).enumerate() {
            let (r, i) = (n / t, n % t);
            let (lo, hi) = self.span(r, i);
            for (j, v) in line.iter_mut().enumerate().take(hi).skip(lo) {
                if self.sees(r, i, j) {
                    *v = 0.0;
                }
            }
        }
        let bias = host::tensor(values, (b, 1, 1, t, keys), &self.device)?;
        Ok(self.bias.get_or_init(|| bias).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_span_or_one_without_live_keys_sees_the_query_itself() {
        let m = AttentionMask::with_live_keys(
            1,
            2,
            4,
            vec![(0, 3), (0, 2)],
            vec![false, false, true, true],
            &Device::Cpu,
        )
        .unwrap();
        assert!(m.sees(0, 0, 2) && !m.sees(0, 0, 0) && !m.sees(0, 0, 3));
        // query 1 (position 3) has only dead keys in its span: it sees itself
        assert_eq!(m.span(0, 1), (3, 4));
        assert!(m.sees(0, 1, 3) && m.live_keys(0, 1).is_none());
        let bias = m
            .bias()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(bias, [inf, inf, 0.0, inf, inf, inf, inf, 0.0]);
    }

    #[test]
    fn spans_outside_the_keys_are_errors() {
        let spans = vec![(0, 5)];
        assert!(AttentionMask::from_spans(1, 1, 4, spans, &Device::Cpu).is_err());
        assert!(AttentionMask::from_spans(1, 2, 4, vec![(0, 1)], &Device::Cpu).is_err());
    }
}
