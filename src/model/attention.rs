//! Scaled dot-product attention with grouped KV heads, and its tiled CPU kernel.
//!
//! On CPU in f32, [`attention`] is FlashAttention-2's algorithm: queries in tiles meet keys
//! in tiles with an online softmax, so no `[queries, keys]` matrix is ever held; tiles the mask
//! hides entirely (above the causal diagonal, before a packed sequence's start, left padding)
//! are skipped; the query heads that share a KV head read the same K/V tile; the backward pass
//! recomputes the probabilities from the saved log-sum-exp. Elsewhere it is the plain
//! composition of candle ops over the mask's additive bias.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
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
        return attention_unfused(q, k, v, mask, scale);
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
}

impl FlashAttention {
    /// The union `[lo, hi)` of the spans of query tile `qt` in row `r`.
    fn tile_span(&self, dims: &Dims, r: usize, qt: usize) -> (usize, usize) {
        let rows = qt * QUERY_TILE..((qt + 1) * QUERY_TILE).min(dims.t);
        rows.map(|i| self.mask.span(r, i))
            .fold((usize::MAX, 0), |(lo, hi), (a, b)| (lo.min(a), hi.max(b)))
    }

    /// The visible part `[a, e)` of key tile `[j0, j1)` for query `i` of row `r`.
    fn visible(&self, r: usize, i: usize, j0: usize, j1: usize) -> (usize, usize) {
        let (lo, hi) = self.mask.span(r, i);
        (lo.max(j0), hi.min(j1))
    }

    /// Forward pass of the query heads sharing KV head `kh` over query tile `qt` of row `r`:
    /// the outputs `[g, rows, d]` and log-sum-exps `[g, rows]`.
    fn forward_tile(
        &self,
        dims: &Dims,
        (q, k, v): (View, View, View),
        (r, kh, qt): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let Dims { g, d, keys, .. } = *dims;
        let i0 = qt * QUERY_TILE;
        let rows = QUERY_TILE.min(dims.t - i0);
        let (lo, hi) = self.tile_span(dims, r, qt);
        let mut acc = vec![0f32; g * rows * d];
        let mut max = vec![f32::NEG_INFINITY; g * rows];
        let mut sum = vec![0f32; g * rows];
        let mut s = vec![0f32; rows * KEY_TILE];
        for j0 in (lo / KEY_TILE * KEY_TILE..hi).step_by(KEY_TILE) {
            let j1 = (j0 + KEY_TILE).min(keys);
            let kt = j1 - j0;
            for hj in 0..g {
                let hh = kh * g + hj;
                // s = scale · q kᵀ, [rows, kt]
                // SAFETY: the views were checked to hold `rows`/`kt` rows of `d` from these
                // offsets, and `s` holds rows × kt.
                unsafe {
                    gemm(
                        rows,
                        kt,
                        d,
                        s.as_mut_ptr(),
                        1,
                        kt as isize,
                        false,
                        q.ptr(r, hh, i0),
                        1,
                        q.row_stride as isize,
                        k.ptr(r, kh, j0),
                        k.row_stride as isize,
                        1,
                        0.0,
                        self.scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for ii in 0..rows {
                    let n = hj * rows + ii;
                    let line = &mut s[ii * kt..(ii + 1) * kt];
                    let (a, e) = self.visible(r, i0 + ii, j0, j1);
                    let live = self.mask.live_keys(r, i0 + ii);
                    let seen = |j: usize| live.is_none_or(|l| l[j]);
                    let tile_max = (a..e)
                        .filter(|&j| seen(j))
                        .map(|j| line[j - j0])
                        .fold(f32::NEG_INFINITY, f32::max);
                    if tile_max == f32::NEG_INFINITY {
                        line.fill(0.0);
                        continue;
                    }
                    let new_max = max[n].max(tile_max);
                    let correction = if max[n] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        exp(max[n] - new_max)
                    };
                    line[..a - j0].fill(0.0);
                    line[e - j0..].fill(0.0);
                    exp_minus(&mut line[a - j0..e - j0], new_max);
                    if let Some(live) = live {
                        for j in a..e {
                            if !live[j] {
                                line[j - j0] = 0.0;
                            }
                        }
                    }
                    sum[n] = sum[n] * correction + line[a - j0..e - j0].iter().sum::<f32>();
                    max[n] = new_max;
                    if correction != 1.0 {
                        acc[n * d..(n + 1) * d]
                            .iter_mut()
                            .for_each(|x| *x *= correction);
                    }
                }
                // acc += p v, [rows, d]
                // SAFETY: as above; `acc` holds g × rows × d.
                unsafe {
                    gemm(
                        rows,
                        d,
                        kt,
                        acc[hj * rows * d..].as_mut_ptr(),
                        1,
                        d as isize,
                        true,
                        s.as_ptr(),
                        1,
                        kt as isize,
                        v.ptr(r, kh, j0),
                        1,
                        v.row_stride as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
        }
        let mut lse = vec![0f32; g * rows];
        for (n, out) in acc.chunks_exact_mut(d).enumerate() {
            let inv = 1.0 / sum[n];
            out.iter_mut().for_each(|x| *x *= inv);
            lse[n] = max[n] + sum[n].ln();
        }
        (acc, lse)
    }

    /// Backward pass over the key tiles `first, first + step, …` of KV head `kh` in row `r`:
    /// `∂q` of its `g` query heads `[g, t, d]` (partial: these keys' share) and `(j0, ∂k, ∂v)`
    /// per key tile.
    #[allow(clippy::too_many_arguments)]
    fn backward_keys(
        &self,
        dims: &Dims,
        (q, k, v, go): (View, View, View, View),
        lse: &[f32],
        delta: &[f32],
        spans: &[(usize, usize)],
        (r, kh): (usize, usize),
        (first, step): (usize, usize),
    ) -> (Vec<f32>, Vec<KeyTileGrads>) {
        let Dims {
            g, d, t, h, keys, ..
        } = *dims;
        let mut dq = vec![0f32; g * t * d];
        let mut tiles = Vec::new();
        let mut p = vec![0f32; QUERY_TILE * KEY_TILE];
        let mut ds = vec![0f32; QUERY_TILE * KEY_TILE];
        for jt in (first..dims.key_tiles()).step_by(step) {
            let j0 = jt * KEY_TILE;
            let j1 = (j0 + KEY_TILE).min(keys);
            let kt = j1 - j0;
            let mut dk = vec![0f32; kt * d];
            let mut dv = vec![0f32; kt * d];
            for (qt, &(lo, hi)) in spans.iter().enumerate() {
                if lo >= j1 || hi <= j0 {
                    continue;
                }
                let i0 = qt * QUERY_TILE;
                let rows = QUERY_TILE.min(t - i0);
                for hj in 0..g {
                    let hh = kh * g + hj;
                    let base = (r * h + hh) * t + i0;
                    // SAFETY (all gemm calls below): the views hold `rows`/`kt` rows of `d`
                    // from these offsets; `p`, `ds` hold rows × kt, `dk`/`dv` kt × d, `dq`
                    // g × t × d.
                    unsafe {
                        gemm(
                            rows,
                            kt,
                            d,
                            p.as_mut_ptr(),
                            1,
                            kt as isize,
                            false,
                            q.ptr(r, hh, i0),
                            1,
                            q.row_stride as isize,
                            k.ptr(r, kh, j0),
                            k.row_stride as isize,
                            1,
                            0.0,
                            self.scale,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                    let mut any = false;
                    for ii in 0..rows {
                        let line = &mut p[ii * kt..(ii + 1) * kt];
                        let (a, e) = self.visible(r, i0 + ii, j0, j1);
                        if a >= e {
                            line.fill(0.0);
                            continue;
                        }
                        any = true;
                        line[..a - j0].fill(0.0);
                        line[e - j0..].fill(0.0);
                        exp_minus(&mut line[a - j0..e - j0], lse[base + ii]);
                        if let Some(live) = self.mask.live_keys(r, i0 + ii) {
                            for j in a..e {
                                if !live[j] {
                                    line[j - j0] = 0.0;
                                }
                            }
                        }
                    }
                    if !any {
                        continue;
                    }
                    unsafe {
                        // dv += pᵀ dO
                        gemm(
                            kt,
                            d,
                            rows,
                            dv.as_mut_ptr(),
                            1,
                            d as isize,
                            true,
                            p.as_ptr(),
                            kt as isize,
                            1,
                            go.ptr(r, hh, i0),
                            1,
                            go.row_stride as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                        // ds = dO vᵀ
                        gemm(
                            rows,
                            kt,
                            d,
                            ds.as_mut_ptr(),
                            1,
                            kt as isize,
                            false,
                            go.ptr(r, hh, i0),
                            1,
                            go.row_stride as isize,
                            v.ptr(r, kh, j0),
                            v.row_stride as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
                    // ds = p ⊙ (dO vᵀ − Σ dO ⊙ O)
                    for ii in 0..rows {
                        let dl = delta[base + ii];
                        let (pl, dsl) =
                            (&p[ii * kt..(ii + 1) * kt], &mut ds[ii * kt..(ii + 1) * kt]);
                        for (x, &pv) in dsl.iter_mut().zip(pl) {
                            *x = pv * (*x - dl);
                        }
                    }
                    unsafe {
                        // dk += scale · dsᵀ q
                        gemm(
                            kt,
                            d,
                            rows,
                            dk.as_mut_ptr(),
                            1,
                            d as isize,
                            true,
                            ds.as_ptr(),
                            kt as isize,
                            1,
                            q.ptr(r, hh, i0),
                            1,
                            q.row_stride as isize,
                            1.0,
                            self.scale,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                        // dq += scale · ds k
                        gemm(
                            rows,
                            d,
                            kt,
                            dq[(hj * t + i0) * d..].as_mut_ptr(),
                            1,
                            d as isize,
                            true,
                            ds.as_ptr(),
                            1,
                            kt as isize,
                            k.ptr(r, kh, j0),
                            1,
                            k.row_stride as isize,
                            1.0,
                            self.scale,
                            false,
                            false,
                            false,
                            Parallelism::None,
                        );
                    }
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
        let views = (View::new(qs, ql)?, View::new(ks, kl)?, View::new(vs, vl)?);
        let Dims {
            b, h, kvh, g, t, d, ..
        } = dims;
        let tasks: Vec<(usize, usize, usize)> = (0..b)
            .flat_map(|r| {
                (0..kvh).flat_map(move |kh| (0..dims.query_tiles()).map(move |qt| (r, kh, qt)))
            })
            .collect();
        let done: Vec<_> = tasks
            .par_iter()
            .map(|&task| self.forward_tile(&dims, views, task))
            .collect();
        let mut out = vec![0f32; b * h * t * d];
        let mut lse = vec![0f32; b * h * t];
        for (&(r, kh, qt), (o, l)) in tasks.iter().zip(done) {
            let i0 = qt * QUERY_TILE;
            let rows = QUERY_TILE.min(t - i0);
            for hj in 0..g {
                let base = (r * h + kh * g + hj) * t + i0;
                out[base * d..(base + rows) * d]
                    .copy_from_slice(&o[hj * rows * d..(hj + 1) * rows * d]);
                lse[base..base + rows].copy_from_slice(&l[hj * rows..(hj + 1) * rows]);
            }
        }
        *self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("flash-attention state poisoned".into()))? = lse;
        Ok((CpuStorage::F32(out), Shape::from((b, h, t, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self
            .lse
            .lock()
            .map_err(|_| candle_core::Error::Msg("flash-attention state poisoned".into()))?
            .clone();
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
            g,
            t,
            keys,
            d,
        } = dims;
        if lse.len() != b * h * t {
            candle_core::bail!("flash-attention: backward without its forward");
        }
        let (q, k, v) = (
            View::new(cpu(&qs)?, ql)?,
            View::new(cpu(&ks)?, kl)?,
            View::new(cpu(&vs)?, vl)?,
        );
        let (o, go) = (View::new(cpu(&os)?, ol)?, View::new(cpu(&gs)?, gl)?);
        // delta = Σ dO ⊙ O per query row
        let delta: Vec<f32> = (0..b * h * t)
            .into_par_iter()
            .map(|n| {
                let (r, hh, i) = (n / (h * t), n / t % h, n % t);
                o.row(r, hh, i, d)
                    .iter()
                    .zip(go.row(r, hh, i, d))
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect();
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
                    (q, k, v, go),
                    &lse,
                    &delta,
                    &spans[r],
                    (r, kh),
                    (c, split),
                )
            })
            .collect();
        let mut dq = vec![0f32; b * h * t * d];
        let mut dk = vec![0f32; b * kvh * keys * d];
        let mut dv = vec![0f32; b * kvh * keys * d];
        for (&(r, kh, _), (part, tiles)) in tasks.iter().zip(done) {
            let at = (r * h + kh * g) * t * d;
            for (x, y) in dq[at..at + g * t * d].iter_mut().zip(&part) {
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
            Some(Tensor::from_vec(dq, (b, h, t, d), &cpu)?),
            Some(Tensor::from_vec(dk, (b, kvh, keys, d), &cpu)?),
            Some(Tensor::from_vec(dv, (b, kvh, keys, d), &cpu)?),
        ))
    }
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
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
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

    /// Compares the kernel with the composition in value and in the gradients of q, k, v.
    fn compare(q: &[usize; 4], kvh: usize, mask: AttentionMask) {
        let (b, h, t, d) = (q[0], q[1], q[2], q[3]);
        let keys = mask.dims().2;
        let mask = Arc::new(mask);
        let qv = Var::from_tensor(&random(&[b, h, t, d], 1)).unwrap();
        let kv = Var::from_tensor(&random(&[b, kvh, keys, d], 2)).unwrap();
        let vv = Var::from_tensor(&random(&[b, kvh, keys, d], 3)).unwrap();
        let weights = random(&[b, h, t, d], 4);
        let scale = 1.0 / (d as f64).sqrt();
        let run = |fused: bool| {
            let (q, k, v) = (qv.as_tensor(), kv.as_tensor(), vv.as_tensor());
            let y = if fused {
                attention(q, k, v, &mask, scale).unwrap()
            } else {
                attention_unfused(q, k, v, &mask, scale).unwrap()
            };
            let grads = (&y * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let grad = |x: &Var| grads.get(x.as_tensor()).unwrap().clone();
            (y, grad(&qv), grad(&kv), grad(&vv))
        };
        let (fast, slow) = (run(true), run(false));
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        // pad queries (alone) differ only where the composition also sees just themselves
        for (name, a, b) in [
            ("out", &fast.0, &slow.0),
            ("dq", &fast.1, &slow.1),
            ("dk", &fast.2, &slow.2),
            ("dv", &fast.3, &slow.3),
        ] {
            let err = diff(a, b);
            assert!(err < 2e-5, "{name}: max difference {err}");
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
