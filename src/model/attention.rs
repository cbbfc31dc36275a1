//! Scaled dot-product attention with grouped KV heads, and its tiled CPU kernel.
//!
//! On CPU in f32, [`attention`] is FlashAttention-2's algorithm: queries in tiles meet keys
//! in tiles with an online softmax, so no `[queries, keys]` matrix is ever held; tiles the mask
//! hides entirely (above the causal diagonal, before a packed sequence's start, left padding)
//! are skipped; the query heads that share a KV head read the same K/V tile; the backward pass
//! recomputes the probabilities from the saved log-sum-exp. Elsewhere (GPU, half precision) it
//! runs the same way in chunks of queries with candle ops ([`attention_chunked`]), so no
//! `[t, keys]` matrix of all queries is kept for the backward there either.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::mask::AttentionMask;
use super::ops;

/// Query rows per tile.
const QUERY_TILE: usize = 64;
/// Key rows per tile.
const KEY_TILE: usize = 64;

/// `softmax(q kᵀ · scale + mask) v` for `q` `[b, heads, t, d]` and `k`, `v`
/// `[b, kv_heads, keys, d]` (`heads` a multiple of `kv_heads`; query head `h` reads KV head
/// `h / (heads / kv_heads)`), returned as `[b, heads, t, d]` in `q`'s dtype.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Arc<AttentionMask>,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kb, kvh, keys, kd) = k.dims4()?;
    if kb != b || kd != d || v.dims() != k.dims() || kvh == 0 || h % kvh != 0 {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit together",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    if mask.dims() != (b, t, keys) {
        candle_core::bail!(
            "attention: a mask for {:?} (batch, queries, keys) used on {b} × {t} queries over {keys} keys",
            mask.dims()
        );
    }
    let fused = [q, k, v]
        .iter()
        .all(|x| x.device().is_cpu() && x.dtype() == DType::F32);
    if !fused {
        let rows = chunk_rows(b, h, t, keys);
        return attention_chunked(q, k, v, mask, scale, rows);
    }
    q.apply_op3(
        k,
        v,
        FlashAttention {
            mask: mask.clone(),
            scale: scale as f32,
            lse: Mutex::new(Vec::new()),
        },
    )
}

/// The reference composition behind [`attention`]: scores, the masked softmax in f32, and
/// the weighted sum, with grouped heads stacked against their KV head (no K/V copies).
pub fn attention_unfused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, kvh, keys, _) = k.dims4()?;
    let g = h / kvh;
    let q = q.contiguous()?.reshape((b, kvh, g * t, d))?;
    let scores = q.matmul(&k.t()?)?.reshape((b, kvh, g, t, keys))?;
    let dtype = scores.dtype();
    let acc = ops::accumulation_dtype(dtype);
    let logits = (scores.to_dtype(acc)? * scale)?.broadcast_add(&mask.bias()?.to_dtype(acc)?)?;
    let probs = ops::softmax_last_dim(&logits)?.to_dtype(dtype)?;
    probs
        .reshape((b, kvh, g * t, keys))?
        .matmul(v)?
        .reshape((b, h, t, d))
}

/// Elements of one query chunk's `[b, heads, chunk, keys]` scores in [`attention_chunked`]:
/// 64 M (256 MB in f32).
const CHUNK_SCORES: usize = 64 << 20;

/// Query rows per chunk of [`attention_chunked`] for these sizes.
fn chunk_rows(b: usize, h: usize, t: usize, keys: usize) -> usize {
    (CHUNK_SCORES / (b * h * keys).max(1)).clamp(1, t.max(1))
}

/// Attention in chunks of queries with plain candle ops, for every device and dtype: no
/// `[t, keys]` matrix of all queries is held, in the forward pass or for the backward, which
/// recomputes each chunk's probabilities (the same algorithm as the tiled kernel, at the
/// granularity of whole query chunks). Grouped heads read their KV head without copies.
pub fn attention_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Arc<AttentionMask>,
    scale: f64,
    rows: usize,
) -> Result<Tensor> {
    let out = chunked_forward(&q.detach(), &k.detach(), &v.detach(), mask, scale, rows)?;
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(out);
    }
    // The keys and values travel as one argument; `stack` routes their gradients apart.
    let kv = Tensor::stack(&[k, v], 0)?;
    q.apply_op2(
        &kv,
        ChunkedAttentionGrad {
            y: ops::Precomputed::new(out),
            mask: mask.clone(),
            scale,
            rows,
        },
    )
}

/// Grouped queries of chunk `[i0, i0 + len)`: `[b, kvh, g·len, d]`.
fn query_chunk(q: &Tensor, kvh: usize, i0: usize, len: usize) -> Result<Tensor> {
    let (b, h, _, d) = q.dims4()?;
    q.narrow(2, i0, len)?
        .contiguous()?
        .reshape((b, kvh, h / kvh * len, d))
}

/// The probabilities `[b, kvh, g·len, keys]` (accumulation dtype) of a query chunk.
fn chunk_probs(
    qc: &Tensor,
    k: &Tensor,
    mask: &AttentionMask,
    scale: f64,
    (i0, len, g): (usize, usize, usize),
) -> Result<Tensor> {
    let (b, kvh, _, _) = qc.dims4()?;
    let keys = k.dim(2)?;
    let acc = ops::accumulation_dtype(qc.dtype());
    let scores = qc.matmul(&k.t()?)?.reshape((b, kvh, g, len, keys))?;
    let bias = mask.bias()?.narrow(3, i0, len)?.to_dtype(acc)?;
    let logits = (scores.to_dtype(acc)? * scale)?.broadcast_add(&bias)?;
    ops::softmax_last_dim(&logits)?.reshape((b, kvh, g * len, keys))
}

fn chunked_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    scale: f64,
    rows: usize,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let kvh = k.dim(1)?;
    let g = h / kvh;
    let mut parts = Vec::with_capacity(t.div_ceil(rows));
    for i0 in (0..t).step_by(rows) {
        let len = rows.min(t - i0);
        let qc = query_chunk(q, kvh, i0, len)?;
        let probs = chunk_probs(&qc, k, mask, scale, (i0, len, g))?.to_dtype(q.dtype())?;
        parts.push(probs.matmul(v)?.reshape((b, h, len, d))?);
    }
    Tensor::cat(&parts, 2)
}

/// Passes the chunked forward's output through and computes `∂q` and `∂[k; v]` chunk by chunk.
struct ChunkedAttentionGrad {
    y: ops::Precomputed,
    mask: Arc<AttentionMask>,
    scale: f64,
    rows: usize,
}

impl CustomOp2 for ChunkedAttentionGrad {
    fn name(&self) -> &'static str {
        "chunked-attention"
    }

    super::ops::pass_through_forwards!(q, kv);

    fn bwd(
        &self,
        q: &Tensor,
        kv: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (q, out, grad) = (q.detach(), out.detach(), grad.detach());
        let (k, v) = (kv.get(0)?.detach(), kv.get(1)?.detach());
        let (b, h, t, d) = q.dims4()?;
        let kvh = k.dim(1)?;
        let g = h / kvh;
        let acc = ops::accumulation_dtype(q.dtype());
        let (ka, va) = (k.to_dtype(acc)?, v.to_dtype(acc)?);
        let mut dk = ka.zeros_like()?;
        let mut dv = va.zeros_like()?;
        let mut dq = Vec::with_capacity(t.div_ceil(self.rows));
        for i0 in (0..t).step_by(self.rows) {
            let len = self.rows.min(t - i0);
            let qc = query_chunk(&q, kvh, i0, len)?;
            let p = chunk_probs(&qc, &k, &self.mask, self.scale, (i0, len, g))?;
            let go = query_chunk(&grad, kvh, i0, len)?.to_dtype(acc)?;
            let oc = query_chunk(&out, kvh, i0, len)?.to_dtype(acc)?;
            dv = (dv + p.t()?.matmul(&go)?)?;
            let delta = (&go * &oc)?.sum_keepdim(3)?;
            let ds = (&p * go.matmul(&va.t()?)?.broadcast_sub(&delta)?)?;
            dk = (dk + (ds.t()?.matmul(&qc.to_dtype(acc)?)? * self.scale)?)?;
            let dqc = (ds.matmul(&ka)? * self.scale)?;
            dq.push(dqc.reshape((b, h, len, d))?);
        }
        let dq = Tensor::cat(&dq, 2)?.to_dtype(q.dtype())?;
        let dkv = Tensor::stack(&[dk, dv], 0)?.to_dtype(kv.dtype())?;
        Ok((Some(dq), Some(dkv)))
    }
}

/// The tiled CPU kernel; keeps each query's log-sum-exp from the forward for the backward.
struct FlashAttention {
    mask: Arc<AttentionMask>,
    scale: f32,
    /// `[b, heads, t]`, written by the forward pass.
    lse: Mutex<Vec<f32>>,
}

/// A strided `[b, heads, rows, d]` f32 array whose rows are contiguous.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    batch_stride: usize,
    head_stride: usize,
    row_stride: usize,
}

impl<'a> View<'a> {
    fn new(s: &'a CpuStorage, l: &Layout) -> Result<Self> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("flash-attention expects f32 tensors");
        };
        let (dims, stride) = (l.dims(), l.stride());
        if dims.len() != 4 || stride[3] != 1 {
            candle_core::bail!("flash-attention expects [b, heads, rows, d] with contiguous rows");
        }
        let data = &data[l.start_offset()..];
        let last: usize = (0..3)
            .map(|a| (dims[a].max(1) - 1) * stride[a])
            .sum::<usize>()
            + dims[3];
        if last > data.len() {
            candle_core::bail!("flash-attention: layout {l:?} reaches past its storage");
        }
        Ok(Self {
            data,
            batch_stride: stride[0],
            head_stride: stride[1],
            row_stride: stride[2],
        })
    }

    fn offset(&self, r: usize, h: usize, i: usize) -> usize {
        r * self.batch_stride + h * self.head_stride + i * self.row_stride
    }

    fn row(&self, r: usize, h: usize, i: usize, d: usize) -> &[f32] {
        let at = self.offset(r, h, i);
        &self.data[at..at + d]
    }

    fn ptr(&self, r: usize, h: usize, i: usize) -> *const f32 {
        self.data[self.offset(r, h, i)..].as_ptr()
    }
}

/// `(j0, ∂k, ∂v)` of the key tile starting at `j0`, each `[tile rows, d]`.
type KeyTileGrads = (usize, Vec<f32>, Vec<f32>);

/// The sizes of one attention call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    kvh: usize,
    g: usize,
    t: usize,
    keys: usize,
    d: usize,
}

impl Dims {
    fn of(q: &Layout, k: &Layout) -> Result<Self> {
        let (b, h, t, d) = q.shape().dims4()?;
        let (_, kvh, keys, _) = k.shape().dims4()?;
        Ok(Self {
            b,
            h,
            kvh,
            g: h / kvh,
            t,
            keys,
            d,
        })
    }

    fn query_tiles(&self) -> usize {
        self.t.div_ceil(QUERY_TILE)
    }

    fn key_tiles(&self) -> usize {
        self.keys.div_ceil(KEY_TILE)
    }

    /// Query rows in tile `qt` (the last may be short).
    fn tile_rows(&self, qt: usize) -> usize {
        QUERY_TILE.min(self.t - qt * QUERY_TILE)
    }

    /// Where tile `qt` of (row `r`, KV head `kh`) starts in a [`Packed`] array of `width`.
    fn packed_offset(&self, r: usize, kh: usize, qt: usize, width: usize) -> usize {
        ((r * self.kvh + kh) * self.t + qt * QUERY_TILE) * self.g * width
    }
}

/// Query-side rows (`q`, the output, its gradient, per-row statistics) rearranged so that each
/// (row, KV head, query tile) is one contiguous `[g · rows, width]` block, head-major: the `g`
/// query heads that share a KV head meet each K/V tile in one matrix product.
struct Packed {
    data: Vec<f32>,
    width: usize,
}

impl Packed {
    /// The rows of a `[b, heads, t, width]` view, packed.
    fn pack(view: View, dims: &Dims) -> Self {
        let Dims { g, t, d, kvh, .. } = *dims;
        let mut data = vec![0f32; dims.b * kvh * t * g * d];
        data.par_chunks_mut(t * g * d)
            .enumerate()
            .for_each(|(region, out)| {
                let (r, kh) = (region / kvh, region % kvh);
                for qt in 0..dims.query_tiles() {
                    let (i0, rows) = (qt * QUERY_TILE, dims.tile_rows(qt));
                    let tile = &mut out[i0 * g * d..(i0 + rows) * g * d];
                    for (n, row) in tile.chunks_exact_mut(d).enumerate() {
                        row.copy_from_slice(view.row(r, kh * g + n / rows, i0 + n % rows, d));
                    }
                }
            });
        Self { data, width: d }
    }

    /// Zeros in the packed layout, `width` values per query row.
    fn zeros(dims: &Dims, width: usize) -> Self {
        Self {
            data: vec![0f32; dims.b * dims.kvh * dims.t * dims.g * width],
            width,
        }
    }

    fn tile(&self, dims: &Dims, r: usize, kh: usize, qt: usize) -> &[f32] {
        let at = dims.packed_offset(r, kh, qt, self.width);
        &self.data[at..at + dims.g * dims.tile_rows(qt) * self.width]
    }

    fn tile_mut(&mut self, dims: &Dims, r: usize, kh: usize, qt: usize) -> &mut [f32] {
        let at = dims.packed_offset(r, kh, qt, self.width);
        &mut self.data[at..at + dims.g * dims.tile_rows(qt) * self.width]
    }

    /// Back to `[b, heads, t, width]`.
    fn unpack(&self, dims: &Dims) -> Vec<f32> {
        let Dims { g, t, h, .. } = *dims;
        let w = self.width;
        let mut out = vec![0f32; dims.b * h * t * w];
        out.par_chunks_mut(t * w).enumerate().for_each(|(rh, out)| {
            let (r, hh) = (rh / h, rh % h);
            let (kh, hj) = (hh / g, hh % g);
            for qt in 0..dims.query_tiles() {
                let (i0, rows) = (qt * QUERY_TILE, dims.tile_rows(qt));
                let tile = self.tile(dims, r, kh, qt);
                out[i0 * w..(i0 + rows) * w]
                    .copy_from_slice(&tile[hj * rows * w..(hj + 1) * rows * w]);
            }
        });
        out
    }
}

/// A matrix operand of [`product`]: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// Row-major rows `stride` apart.
    fn rows(ptr: *const f32, stride: usize) -> Self {
        Self {
            ptr,
            rs: stride as isize,
            cs: 1,
        }
    }

    /// The transpose of row-major rows `stride` apart.
    fn transposed(ptr: *const f32, stride: usize) -> Self {
        Self {
            ptr,
            rs: 1,
            cs: stride as isize,
        }
    }
}

/// `dst = beta · lhs · rhs`, or `dst += beta · lhs · rhs` when `accumulate`; `dst` is
/// row-major `[m, n]`, `lhs` `[m, k]`, `rhs` `[k, n]`, on the calling thread.
///
/// # Safety
/// Each operand must hold its elements at the offsets its strides give.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
) {
    // SAFETY: the caller guarantees the operands' extents.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            if accumulate { 1.0 } else { 0.0 },
            beta,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

impl FlashAttention {
    /// The union `[lo, hi)` of the spans of query tile `qt` in row `r`.
    fn tile_span(&self, dims: &Dims, r: usize, qt: usize) -> (usize, usize) {
        let rows = qt * QUERY_TILE..qt * QUERY_TILE + dims.tile_rows(qt);
        rows.map(|i| self.mask.span(r, i))
            .fold((usize::MAX, 0), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)))
    }

    /// Turns the scores of a packed tile `[g · rows, kt]` (keys `j0..`) into
    /// `exp(score − shift(n))` where query row `n` sees the key and 0 elsewhere; `shift`
    /// gives each row's subtrahend from its masked maximum (`-∞` when it sees no key here,
    /// which leaves the row 0). Returns whether any row saw a key.
    fn exp_tile(
        &self,
        s: &mut [f32],
        (r, i0, rows, j0, kt): (usize, usize, usize, usize, usize),
        mut shift: impl FnMut(usize, f32) -> f32,
    ) -> bool {
        let mut any = false;
        for (n, line) in s.chunks_exact_mut(kt).enumerate() {
            let i = i0 + n % rows;
            let (lo, hi) = self.mask.span(r, i);
            let (a, e) = (lo.max(j0), hi.min(j0 + kt));
            if a >= e {
                line.fill(0.0);
                shift(n, f32::NEG_INFINITY);
                continue;
            }
            let (a, e) = (a - j0, e - j0);
            let live = self.mask.live_keys(r, i).map(|l| &l[j0..j0 + kt]);
            if let Some(live) = live {
                for (x, &l) in line.iter_mut().zip(live) {
                    if !l {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let sub = shift(n, row_max(&line[a..e]));
            if sub == f32::NEG_INFINITY {
                line.fill(0.0);
                continue;
            }
            any = true;
            line[..a].fill(0.0);
            line[e..].fill(0.0);
            exp_minus(&mut line[a..e], sub);
            if let Some(live) = live {
                for (x, &l) in line.iter_mut().zip(live) {
                    if !l {
                        *x = 0.0;
                    }
                }
            }
        }
        any
    }

    /// Forward pass of the query heads sharing KV head `kh` over query tile `qt` of row `r`:
    /// the packed outputs `[g · rows, d]` and log-sum-exps `[g · rows]`.
    fn forward_tile(
        &self,
        dims: &Dims,
        q: &Packed,
        (k, v): (View, View),
        (r, kh, qt): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let Dims { g, d, keys, .. } = *dims;
        let (i0, rows) = (qt * QUERY_TILE, dims.tile_rows(qt));
        let n_rows = g * rows;
        let qs = q.tile(dims, r, kh, qt);
        let (lo, hi) = self.tile_span(dims, r, qt);
        let mut acc = vec![0f32; n_rows * d];
        let mut max = vec![f32::NEG_INFINITY; n_rows];
        let mut sum = vec![0f32; n_rows];
        let mut correction = vec![1f32; n_rows];
        let mut s = vec![0f32; n_rows * KEY_TILE];
        for j0 in (lo / KEY_TILE * KEY_TILE..hi).step_by(KEY_TILE) {
            let kt = KEY_TILE.min(keys - j0);
            let s = &mut s[..n_rows * kt];
            // SAFETY: `qs` is [n_rows, d], the K/V views hold kt rows of d from j0, `s` is
            // [n_rows, kt] and `acc` [n_rows, d].
            unsafe {
                product(
                    (n_rows, kt, d),
                    s.as_mut_ptr(),
                    false,
                    Mat::rows(qs.as_ptr(), d),
                    Mat::transposed(k.ptr(r, kh, j0), k.row_stride),
                    self.scale,
                );
            }
            self.exp_tile(s, (r, i0, rows, j0, kt), |n, tile_max| {
                if tile_max == f32::NEG_INFINITY {
                    correction[n] = 1.0;
                    return f32::NEG_INFINITY;
                }
                let new_max = max[n].max(tile_max);
                correction[n] = if max[n] == f32::NEG_INFINITY {
                    0.0
                } else {
                    exp(max[n] - new_max)
                };
                max[n] = new_max;
                new_max
            });
            for (n, line) in s.chunks_exact(kt).enumerate() {
                sum[n] = sum[n] * correction[n] + row_sum(line);
                if correction[n] != 1.0 {
                    let c = correction[n];
                    acc[n * d..(n + 1) * d].iter_mut().for_each(|x| *x *= c);
                }
            }
            unsafe {
                product(
                    (n_rows, d, kt),
                    acc.as_mut_ptr(),
                    true,
                    Mat::rows(s.as_ptr(), kt),
                    Mat::rows(v.ptr(r, kh, j0), v.row_stride),
                    1.0,
                );
            }
        }
        let mut lse = vec![0f32; n_rows];
        for (n, out) in acc.chunks_exact_mut(d).enumerate() {
            let inv = 1.0 / sum[n];
            out.iter_mut().for_each(|x| *x *= inv);
            lse[n] = max[n] + sum[n].ln();
        }
        (acc, lse)
    }

    /// Backward pass over the key tiles `first, first + step, …` of KV head `kh` in row `r`:
    /// this share of `∂q` for the KV head's query rows (packed, `[t · g, d]`) and `∂k`, `∂v`
    /// per key tile.
    #[allow(clippy::too_many_arguments)]
    fn backward_keys(
        &self,
        dims: &Dims,
        (q, go, lse, delta): (&Packed, &Packed, &Packed, &Packed),
        (k, v): (View, View),
        spans: &[(usize, usize)],
        (r, kh): (usize, usize),
        (first, step): (usize, usize),
    ) -> (Vec<f32>, Vec<KeyTileGrads>) {
        let Dims { g, d, t, keys, .. } = *dims;
        let region = dims.packed_offset(r, kh, 0, d);
        let mut dq = vec![0f32; t * g * d];
        let mut tiles = Vec::new();
        let mut p = vec![0f32; g * QUERY_TILE * KEY_TILE];
        let mut ds = vec![0f32; g * QUERY_TILE * KEY_TILE];
        for jt in (first..dims.key_tiles()).step_by(step) {
            let j0 = jt * KEY_TILE;
            let kt = KEY_TILE.min(keys - j0);
            let mut dk = vec![0f32; kt * d];
            let mut dv = vec![0f32; kt * d];
            for (qt, &(lo, hi)) in spans.iter().enumerate() {
                if lo >= j0 + kt || hi <= j0 {
                    continue;
                }
                let (i0, rows) = (qt * QUERY_TILE, dims.tile_rows(qt));
                let n_rows = g * rows;
                let (qs, gos) = (q.tile(dims, r, kh, qt), go.tile(dims, r, kh, qt));
                let (lses, deltas) = (lse.tile(dims, r, kh, qt), delta.tile(dims, r, kh, qt));
                let (p, ds) = (&mut p[..n_rows * kt], &mut ds[..n_rows * kt]);
                let dq_at = dims.packed_offset(r, kh, qt, d) - region;
                // SAFETY (every product below): the packed tiles are [n_rows, d], the K/V
                // views hold kt rows of d from j0, `p`/`ds` are [n_rows, kt], `dk`/`dv`
                // [kt, d], and `dq` holds the tile's [n_rows, d] from `dq_at`.
                unsafe {
                    product(
                        (n_rows, kt, d),
                        p.as_mut_ptr(),
                        false,
                        Mat::rows(qs.as_ptr(), d),
                        Mat::transposed(k.ptr(r, kh, j0), k.row_stride),
                        self.scale,
                    );
                }
                if !self.exp_tile(p, (r, i0, rows, j0, kt), |n, _| lses[n]) {
                    continue;
                }
                unsafe {
                    // dv += pᵀ dO
                    product(
                        (kt, d, n_rows),
                        dv.as_mut_ptr(),
                        true,
                        Mat::transposed(p.as_ptr(), kt),
                        Mat::rows(gos.as_ptr(), d),
                        1.0,
                    );
                    // ds = dO vᵀ
                    product(
                        (n_rows, kt, d),
                        ds.as_mut_ptr(),
                        false,
                        Mat::rows(gos.as_ptr(), d),
                        Mat::transposed(v.ptr(r, kh, j0), v.row_stride),
                        1.0,
                    );
                }
                // ds = p ⊙ (dO vᵀ − Σ dO ⊙ O)
                for ((dsl, pl), &dl) in ds.chunks_exact_mut(kt).zip(p.chunks_exact(kt)).zip(deltas)
                {
                    for (x, &pv) in dsl.iter_mut().zip(pl) {
                        *x = pv * (*x - dl);
                    }
                }
                unsafe {
                    // dk += scale · dsᵀ q
                    product(
                        (kt, d, n_rows),
                        dk.as_mut_ptr(),
                        true,
                        Mat::transposed(ds.as_ptr(), kt),
                        Mat::rows(qs.as_ptr(), d),
                        self.scale,
                    );
                    // dq += scale · ds k
                    product(
                        (n_rows, d, kt),
                        dq[dq_at..].as_mut_ptr(),
                        true,
                        Mat::rows(ds.as_ptr(), kt),
                        Mat::rows(k.ptr(r, kh, j0), k.row_stride),
                        self.scale,
                    );
                }
            }
            tiles.push((j0, dk, dv));
        }
        (dq, tiles)
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "flash-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims = Dims::of(ql, kl)?;
        let q = Packed::pack(View::new(qs, ql)?, &dims);
        let kv = (View::new(ks, kl)?, View::new(vs, vl)?);
        let Dims {
            b, h, kvh, t, d, ..
        } = dims;
        let tasks: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|r| {
                (0..kvh).flat_map(move |kh| (0..dims.query_tiles()).map(move |qt| (r, kh, qt)))
            })
            .collect();
        let done: Vec<_> = tasks
            .par_iter()
            .map(|&task| self.forward_tile(&dims, &q, kv, task))
            .collect();
        let mut out = Packed::zeros(&dims, d);
        let mut lse = Packed::zeros(&dims, 1);
        for (&(r, kh, qt), (o, l)) in tasks.iter().zip(done) {
            out.tile_mut(&dims, r, kh, qt).copy_from_slice(&o);
            lse.tile_mut(&dims, r, kh, qt).copy_from_slice(&l);
        }
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("flash-attention state poisoned".into()))? =
            lse.data;
        Ok((
            CpuStorage::F32(out.unpack(&dims)),
            Shape::from((b, h, t, d)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = Packed {
            data: self
                .lse
                .lock()
                .map_err(|_| candle_core::Error::Msg("flash-attention state poisoned".into()))?
                .clone(),
            width: 1,
        };
        let (out, grad) = (out.contiguous()?, grad.contiguous()?);
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (os, ol) = out.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let dims = Dims::of(ql, kl)?;
        let Dims {
            b,
            h,
            kvh,
            t,
            keys,
            d,
            ..
        } = dims;
        if lse.data.len() != b * h * t {
            candle_core::bail!("flash-attention: backward without its forward");
        }
        let qp = Packed::pack(View::new(cpu(&qs)?, ql)?, &dims);
        let gop = Packed::pack(View::new(cpu(&gs)?, gl)?, &dims);
        let op = Packed::pack(View::new(cpu(&os)?, ol)?, &dims);
        let kv = (View::new(cpu(&ks)?, kl)?, View::new(cpu(&vs)?, vl)?);
        // delta = Σ dO ⊙ O per query row
        let delta = Packed {
            data: op
                .data
                .par_chunks_exact(d)
                .zip(gop.data.par_chunks_exact(d))
                .map(|(o, g)| o.iter().zip(g).map(|(a, b)| a * b).sum())
                .collect(),
            width: 1,
        };
        drop(op);
        // Key tiles of each (row, KV head) are split round-robin into enough tasks to fill
        // the threads (causal work is uneven along the keys).
        let threads = rayon::current_num_threads();
        let split = threads.div_ceil(b * kvh).clamp(1, dims.key_tiles().max(1));
        let spans: Vec<Vec<(usize, usize)>> = (0..b)
            .map(|r| {
                (0..dims.query_tiles())
                    .map(|qt| self.tile_span(&dims, r, qt))
                    .collect()
            })
            .collect();
        let tasks: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|r| (0..kvh).flat_map(move |kh| (0..split).map(move |c| (r, kh, c))))
            .collect();
        let done: Vec<_> = tasks
            .par_iter()
            .map(|&(r, kh, c)| {
                self.backward_keys(
                    &dims,
                    (&qp, &gop, &lse, &delta),
                    kv,
                    &spans[r],
                    (r, kh),
                    (c, split),
                )
            })
            .collect();
        let mut dq = Packed::zeros(&dims, d);
        let mut dk = vec![0f32; b * kvh * keys * d];
        let mut dv = vec![0f32; b * kvh * keys * d];
        for (&(r, kh, _), (part, tiles)) in tasks.iter().zip(done) {
            let at = dims.packed_offset(r, kh, 0, d);
            for (x, y) in dq.data[at..at + part.len()].iter_mut().zip(&part) {
                *x += y;
            }
            for (j0, tk, tv) in tiles {
                let at = ((r * kvh + kh) * keys + j0) * d;
                dk[at..at + tk.len()].copy_from_slice(&tk);
                dv[at..at + tv.len()].copy_from_slice(&tv);
            }
        }
        let cpu = Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dq.unpack(&dims), (b, h, t, d), &cpu)?),
            Some(Tensor::from_vec(dk, (b, kvh, keys, d), &cpu)?),
            Some(Tensor::from_vec(dv, (b, kvh, keys, d), &cpu)?),
        ))
    }
}

/// The largest value of a slice (`-∞` for an empty one), in 16 independent lanes.
fn row_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in chunks.by_ref() {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes
        .into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// The sum of a slice, in 16 independent lanes.
fn row_sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in chunks.by_ref() {
        for (s, &x) in lanes.iter_mut().zip(c) {
            *s += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// The CPU storage behind a tensor.
fn cpu(s: &candle_core::Storage) -> Result<&CpuStorage> {
    match s {
        candle_core::Storage::Cpu(s) => Ok(s),
        _ => candle_core::bail!("flash-attention runs on the CPU"),
    }
}

/// `x ← exp(x − shift)` over a slice, vectorised with the widest registers the CPU has.
fn exp_minus(xs: &mut [f32], shift: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { exp_minus_avx512(xs, shift) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { exp_minus_avx2(xs, shift) };
        }
    }
    exp_minus_portable(xs, shift);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn exp_minus_avx512(xs: &mut [f32], shift: f32) {
    exp_minus_portable(xs, shift);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_minus_avx2(xs: &mut [f32], shift: f32) {
    exp_minus_portable(xs, shift);
}

#[inline(always)]
fn exp_minus_portable(xs: &mut [f32], shift: f32) {
    xs.iter_mut().for_each(|x| *x = exp(*x - shift));
}

/// `eˣ` in f32 without branches (so loops over it vectorise): Cephes' `expf` — `x = n ln 2 +
/// r`, a degree-6 polynomial for `eʳ`, `2ⁿ` from the exponent bits. Arguments are clamped to
/// `[−87, 88]`, where it is within 2 ulp of `f32::exp`; below, it returns `e⁻⁸⁷` (≈ 1.6e−38)
/// rather than 0, which no attention sum notices.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    // SAFETY: the clamp keeps n finite in [−126, 127]. (`as i32` would saturate, which
    // keeps the loop from vectorising.)
    let n = unsafe { n.to_int_unchecked::<i32>() };
    y * f32::from_bits(((n + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn the_branch_free_exp_is_within_two_ulp_of_the_library_one() {
        let mut worst = 0f32;
        for n in 0..200_000 {
            let x = -87.0 + 175.0 * n as f32 / 200_000.0;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        let mut xs = vec![0.0, -1.0, 1.0, f32::NEG_INFINITY];
        exp_minus(&mut xs, 1.0);
        assert!((xs[0] - (-1f32).exp()).abs() < 1e-7 && xs[2] == 1.0 && xs[3] < 1e-37);
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// Runs `path` (0 the tiled kernel, 1 query chunks of 7 rows, 2 the composition) in
    /// `dtype` and returns the output and the gradients of q, k, v of a weighted sum.
    fn run(
        path: usize,
        (q, k, v, w): (&Tensor, &Tensor, &Tensor, &Tensor),
        mask: &Arc<AttentionMask>,
        dtype: DType,
    ) -> [Tensor; 4] {
        let vars = [q, k, v].map(|x| Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap());
        let (q, k, v) = (
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
        );
        let scale = 1.0 / (q.dim(3).unwrap() as f64).sqrt();
        let y = match path {
            0 => attention(q, k, v, mask, scale),
            1 => attention_chunked(q, k, v, mask, scale, 7),
            _ => attention_unfused(q, k, v, mask, scale),
        }
        .unwrap();
        let loss = (&y * w.to_dtype(dtype).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let grad = |x: &Var| {
            grads
                .get(x.as_tensor())
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        [
            y.to_dtype(DType::F32).unwrap(),
            grad(&vars[0]),
            grad(&vars[1]),
            grad(&vars[2]),
        ]
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Compares the tiled kernel and the query-chunked path with the composition, in value and
    /// in the gradients of q, k, v.
    fn compare(q: &[usize; 4], kvh: usize, mask: AttentionMask) {
        let (b, h, t, d) = (q[0], q[1], q[2], q[3]);
        let keys = mask.dims().2;
        let mask = Arc::new(mask);
        let inputs = (
            &random(&[b, h, t, d], 1),
            &random(&[b, kvh, keys, d], 2),
            &random(&[b, kvh, keys, d], 3),
            &random(&[b, h, t, d], 4),
        );
        let reference = run(2, inputs, &mask, DType::F32);
        for path in [0, 1] {
            let got = run(path, inputs, &mask, DType::F32);
            for (name, a, b) in ["out", "dq", "dk", "dv"]
                .iter()
                .zip(&got)
                .zip(&reference)
                .map(|((n, a), b)| (n, a, b))
            {
                let err = max_diff(a, b);
                assert!(err < 2e-5, "path {path}, {name}: max difference {err}");
            }
        }
    }

    #[test]
    fn the_chunked_path_runs_every_dtype_like_the_composition() {
        let (b, h, kvh, t, d) = (2, 4, 2, 30, 8);
        let mask = Arc::new(causal(b, t));
        let inputs = (
            &random(&[b, h, t, d], 11),
            &random(&[b, kvh, t, d], 12),
            &random(&[b, kvh, t, d], 13),
            &random(&[b, h, t, d], 14),
        );
        for (dtype, tolerance) in [(DType::F64, 1e-6), (DType::BF16, 0.05), (DType::F16, 0.01)] {
            // in these dtypes `attention` itself takes the chunked path
            let got = run(0, inputs, &mask, dtype);
            let reference = run(2, inputs, &mask, dtype);
            for (a, b) in got.iter().zip(&reference) {
                let err = max_diff(a, b);
                assert!(err < tolerance, "{dtype:?}: max difference {err}");
            }
        }
    }

    #[test]
    fn the_kernel_gradients_equal_finite_differences() {
        let (b, h, kvh, t, d) = (1, 2, 1, 70, 4);
        let mask = Arc::new(causal(b, t));
        let q = random(&[b, h, t, d], 7);
        let k = random(&[b, kvh, t, d], 8);
        let v = random(&[b, kvh, t, d], 9);
        let weights = random(&[b, h, t, d], 10);
        let loss = |q: &Tensor, k: &Tensor, v: &Tensor| -> f64 {
            let y = attention(q, k, v, &mask, 0.7).unwrap();
            let y = (y * &weights).unwrap().to_dtype(DType::F64).unwrap();
            y.sum_all().unwrap().to_scalar::<f64>().unwrap()
        };
        let vars = [&q, &k, &v].map(|x| Var::from_tensor(x).unwrap());
        let y = attention(
            vars[0].as_tensor(),
            vars[1].as_tensor(),
            vars[2].as_tensor(),
            &mask,
            0.7,
        )
        .unwrap();
        let grads = (y * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let eps = 1e-2;
        for (which, var) in vars.iter().enumerate() {
            let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
            let analytic = analytic.to_vec1::<f32>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            // coordinates in the first, a middle and the last key/query tile
            for &n in &[0, 3, 130, base.len() - 1] {
                let nudged = |delta: f32| {
                    let mut x = base.clone();
                    x[n] += delta;
                    Tensor::from_vec(x, var.as_tensor().dims(), &Device::Cpu).unwrap()
                };
                let mut inputs = [q.clone(), k.clone(), v.clone()];
                inputs[which] = nudged(eps);
                let up = loss(&inputs[0], &inputs[1], &inputs[2]);
                inputs[which] = nudged(-eps);
                let down = loss(&inputs[0], &inputs[1], &inputs[2]);
                let numeric = (up - down) / (2.0 * f64::from(eps));
                let err = (numeric - f64::from(analytic[n])).abs();
                assert!(
                    err < 2e-3,
                    "input {which}, element {n}: {numeric} vs {}",
                    analytic[n]
                );
            }
        }
    }

    fn causal(b: usize, t: usize) -> AttentionMask {
        let spans = (0..b)
            .flat_map(|_| (0..t).map(|i| (0, i as u32 + 1)))
            .collect();
        AttentionMask::from_spans(b, t, t, spans, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_tiled_kernel_equals_the_composition_on_causal_grouped_heads() {
        // 150 queries: three query tiles (the last partial), three key tiles
        compare(&[2, 6, 150, 16], 2, causal(2, 150));
        compare(&[1, 3, 70, 8], 3, causal(1, 70));
    }

    #[test]
    fn the_tiled_kernel_equals_the_composition_on_packed_and_padded_rows() {
        // row 0: sequences [0, 40) and [40, 130), pads after; row 1: left padding to 100
        let t = 140;
        let mut spans = Vec::new();
        for i in 0..t {
            spans.push(match i {
                0..40 => (0, i as u32 + 1),
                40..130 => (40, i as u32 + 1),
                _ => (i as u32, i as u32),
            });
        }
        for i in 0..t {
            spans.push(if i < 100 {
                (i as u32, i as u32)
            } else {
                (100, i as u32 + 1)
            });
        }
        let mask = AttentionMask::from_spans(2, t, t, spans, &Device::Cpu).unwrap();
        compare(&[2, 4, t, 16], 2, mask);
    }

    #[test]
    fn the_tiled_kernel_equals_the_composition_with_cached_keys_and_dead_slots() {
        // 3 new queries after 97 cached keys, some of them padding slots
        let (b, t, keys) = (2, 3, 100);
        let live: Vec<bool> = (0..b * keys)
            .map(|n| n % 7 != 3 && n % keys >= 5 * (n / keys))
            .collect();
        let spans = (0..b)
            .flat_map(|_| (0..t).map(|i| (0, (keys - t + i + 1) as u32)))
            .collect();
        let mask = AttentionMask::with_live_keys(b, t, keys, spans, live, &Device::Cpu).unwrap();
        compare(&[b, 4, t, 8], 2, mask);
    }

    #[test]
    fn the_kernel_reads_keys_and_values_from_a_strided_cache_view() {
        let (b, kvh, cap, keys, d) = (1, 2, 90, 70, 8);
        let cache = random(&[b, kvh, cap, d], 5);
        let k = cache.narrow(2, 0, keys).unwrap();
        let v = (cache.narrow(2, 0, keys).unwrap() * 0.5).unwrap();
        let q = random(&[b, 4, 2, d], 6);
        let spans = vec![(0, 69), (0, 70)];
        let mask = Arc::new(AttentionMask::from_spans(b, 2, keys, spans, &Device::Cpu).unwrap());
        assert!(!k.is_contiguous());
        let fast = attention(&q, &k, &v, &mask, 0.3).unwrap();
        let slow = attention_unfused(&q, &k, &v, &mask, 0.3).unwrap();
        let err = (fast - slow)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
