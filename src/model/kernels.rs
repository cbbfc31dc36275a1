//! Fused CPU f32 kernels with hand-written backward passes, behind the functions of [`super::ops`].
//!
//! Each replaces a chain of candle ops (each allocating and sweeping its tensor) by one parallel
//! pass. The public functions in `ops` pick these on CPU in f32 and the plain composition
//! elsewhere; unit tests there check both agree in value and gradient.

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Rows of logits computed at once by [`LinearLogprobs`]: about 64 MB of f32 per chunk.
pub(crate) const LOGIT_CHUNK_ELEMS: usize = 16 << 20;

/// The contiguous f32 CPU data of a layout, or an error naming the kernel.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, kernel: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{kernel} expects contiguous f32 CPU data"),
    }
}

/// Runs `f` on the contiguous f32 CPU data of a tensor.
fn with_f32<R>(t: &Tensor, kernel: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(f32_data(s, layout, kernel)?),
        _ => candle_core::bail!("{kernel} expects a CPU tensor"),
    }
}

/// `log softmax(hidden · headᵀ)[target]` per row, chunked; see `ops::linear_logprobs`.
pub(crate) struct LinearLogprobs {
    pub head: Tensor,
    pub targets: Vec<u32>,
}

impl LinearLogprobs {
    fn chunk_rows(&self) -> Result<usize> {
        Ok((LOGIT_CHUNK_ELEMS / self.head.dim(0)?).max(1))
    }

    /// Logits of rows `[start, start + rows)` of `hidden` (`[n, h]` row-major) as a flat vector.
    fn chunk_logits(
        &self,
        hidden: &[f32],
        h: usize,
        start: usize,
        rows: usize,
    ) -> Result<Vec<f32>> {
        let chunk = Tensor::from_slice(
            &hidden[start * h..(start + rows) * h],
            (rows, h),
            self.head.device(),
        )?;
        chunk
            .matmul(&self.head.t()?)?
            .flatten_all()?
            .to_vec1::<f32>()
    }
}

/// `log Σ exp(x)` of a row: f32 exponentials of `x - max`, summed in f64.
fn row_logsumexp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| f64::from((v - max).exp())).sum();
    max + sum.ln() as f32
}

impl candle_core::CustomOp1 for LinearLogprobs {
    fn name(&self) -> &'static str {
        "linear-logprobs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, h) = l.shape().dims2()?;
        let (Some((start, end)), CpuStorage::F32(data)) = (l.contiguous_offsets(), s) else {
            candle_core::bail!("linear-logprobs expects contiguous f32 hidden states");
        };
        if self.targets.len() != n {
            candle_core::bail!(
                "linear-logprobs: {} targets for {n} rows",
                self.targets.len()
            );
        }
        let hidden = &data[start..end];
        let vocab = self.head.dim(0)?;
        let mut out = Vec::with_capacity(n);
        let step = self.chunk_rows()?;
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let logits = self.chunk_logits(hidden, h, r0, rows)?;
            for (i, row) in logits.chunks(vocab).enumerate() {
                out.push(row[self.targets[r0 + i] as usize] - row_logsumexp(row));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, hidden: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, h) = hidden.dims2()?;
        let vocab = self.head.dim(0)?;
        let hidden_v = hidden.detach().flatten_all()?.to_vec1::<f32>()?;
        let grad_v = grad.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let step = self.chunk_rows()?;
        let mut parts = Vec::new();
        for r0 in (0..n).step_by(step) {
            let rows = step.min(n - r0);
            let mut logits = self.chunk_logits(&hidden_v, h, r0, rows)?;
            // ∂ logp[target] / ∂ logits = onehot(target) - softmax(logits), times the row's grad.
            for (i, row) in logits.chunks_mut(vocab).enumerate() {
                let g = grad_v[r0 + i];
                let lse = row_logsumexp(row);
                for v in row.iter_mut() {
                    *v = -g * (*v - lse).exp();
                }
                row[self.targets[r0 + i] as usize] += g;
            }
            let g_logits = Tensor::from_vec(logits, (rows, vocab), hidden.device())?;
            parts.push(g_logits.matmul(&self.head)?);
        }
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

/// RMSNorm over the last dimension with a frozen weight; see `ops::rms_norm`.
pub(crate) struct RmsNorm {
    pub weight: Tensor,
    pub eps: f32,
}

impl candle_core::CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        with_f32(&self.weight, self.name(), |w| {
            let n = w.len();
            out.par_chunks_mut(n)
                .zip(x.par_chunks(n))
                .for_each(|(y, x)| {
                    let ms = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
                    let r = 1.0 / (ms + self.eps).sqrt();
                    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * r * w;
                    }
                });
            Ok(())
        })?;
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// `∂x = r·(g⊙w) − x·r³·mean(g⊙w⊙x)` with `r = 1/√(mean(x²)+ε)`; the weight gets none.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let out = with_f32(x, self.name(), |x| {
            with_f32(grad, self.name(), |g| {
                with_f32(&self.weight, self.name(), |w| {
                    let n = w.len();
                    let mut dx = vec![0f32; x.len()];
                    dx.par_chunks_mut(n)
                        .zip(x.par_chunks(n).zip(g.par_chunks(n)))
                        .for_each(|(dx, (x, g))| {
                            let ms = x.iter().map(|v| v * v).sum::<f32>() / n as f32;
                            let r = 1.0 / (ms + self.eps).sqrt();
                            let dot = x
                                .iter()
                                .zip(g)
                                .zip(w)
                                .map(|((x, g), w)| x * g * w)
                                .sum::<f32>()
                                / n as f32;
                            let c = r * r * r * dot;
                            for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                                *dx = r * g * w - x * c;
                            }
                        });
                    Ok(dx)
                })
            })
        })?;
        Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
    }
}

/// Half-split RoPE on `[batch, heads, seq, head_dim]` with `[batch, seq, head_dim]` tables.
pub(crate) struct Rope {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl Rope {
    /// Applies the rotation (or, with `inverse`, its transpose, for the backward pass).
    fn rotate(&self, x: &[f32], dims: &[usize], inverse: bool) -> Result<Vec<f32>> {
        let (b, h, t, d) = (dims[0], dims[1], dims[2], dims[3]);
        let half = d / 2;
        let mut out = vec![0f32; x.len()];
        with_f32(&self.cos, "rope", |cos| {
            with_f32(&self.sin, "rope", |sin| {
                if cos.len() != b * t * d {
                    candle_core::bail!("rope tables do not match x {dims:?}");
                }
                let sign = if inverse { -1.0 } else { 1.0 };
                out.par_chunks_mut(d)
                    .zip(x.par_chunks(d))
                    .enumerate()
                    .for_each(|(row, (y, x))| {
                        let (bi, ti) = (row / (h * t), row % t);
                        let c = &cos[(bi * t + ti) * d..(bi * t + ti + 1) * d];
                        let s = &sin[(bi * t + ti) * d..(bi * t + ti + 1) * d];
                        for i in 0..half {
                            let (x1, x2) = (x[i], x[i + half]);
                            y[i] = x1 * c[i] - sign * x2 * s[i];
                            y[i + half] = x2 * c[i + half] + sign * x1 * s[i + half];
                        }
                    });
                Ok(())
            })
        })?;
        Ok(out)
    }
}

impl candle_core::CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let out = self.rotate(x, l.shape().dims(), false)?;
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// A rotation's transpose is the rotation by the opposite angle.
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_f32(grad, self.name(), |g| self.rotate(g, x.dims(), true))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Rows up to which [`SkinnyLinear`] beats a general matrix product: decoding steps, where a
/// few token rows meet each weight once.
pub(crate) const SKINNY_ROWS: usize = 16;

/// Output columns per parallel task of [`SkinnyLinear`].
const SKINNY_COLUMNS: usize = 32;

/// `x Wᵀ` for a few rows `x` `[m, k]` and a weight `[n, k]`, forward only (generation).
///
/// A general product packs the whole weight into its blocked layout on every call, which
/// costs more than the product itself when `m` is small; here each weight row is read once,
/// straight from memory, and dotted with every row of `x` (which stays in L1).
pub(crate) struct SkinnyLinear;

impl candle_core::CustomOp2 for SkinnyLinear {
    fn name(&self) -> &'static str {
        "skinny-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(xs, xl, self.name())?;
        let w = f32_data(ws, wl, self.name())?;
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("skinny-linear: x is [{m}, {k}], the weight [{n}, {k2}]");
        }
        // out is computed transposed ([n, m]: one weight row's results together), then
        // written back as [m, n].
        let mut out_t = vec![0f32; n * m];
        out_t
            .par_chunks_mut(SKINNY_COLUMNS * m)
            .zip(w.par_chunks(SKINNY_COLUMNS * k))
            .for_each(|(out, w)| skinny_block(x, w, k, m, out));
        let mut out = vec![0f32; m * n];
        for (j, col) in out_t.chunks_exact(m).enumerate() {
            for (i, v) in col.iter().enumerate() {
                out[i * n + j] = *v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `out[j·m + i] = x[i] · w[j]` for the weight rows `w` of one block.
fn skinny_block(x: &[f32], w: &[f32], k: usize, m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { skinny_block_avx512(x, w, k, m, out) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected on this CPU.
            return unsafe { skinny_block_avx2(x, w, k, m, out) };
        }
    }
    skinny_block_portable(x, w, k, m, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn skinny_block_avx512(x: &[f32], w: &[f32], k: usize, m: usize, out: &mut [f32]) {
    skinny_block_portable(x, w, k, m, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn skinny_block_avx2(x: &[f32], w: &[f32], k: usize, m: usize, out: &mut [f32]) {
    skinny_block_portable(x, w, k, m, out);
}

/// The block loop, inlined into each feature-specific copy so the compiler vectorises the
/// lane loops with the widest registers the CPU has. Four token rows go together: each
/// loaded weight vector feeds four independent multiply-add chains, so neither loads nor
/// the multiply-add latency bound the loop.
#[inline(always)]
fn skinny_block_portable(x: &[f32], w: &[f32], k: usize, m: usize, out: &mut [f32]) {
    let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
    for (w_row, out) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        let mut quads = rows.chunks_exact(4);
        let mut i = 0;
        for quad in quads.by_ref() {
            let dots = dot4([quad[0], quad[1], quad[2], quad[3]], w_row);
            out[i..i + 4].copy_from_slice(&dots);
            i += 4;
        }
        for row in quads.remainder() {
            out[i] = dot1(row, w_row);
            i += 1;
        }
    }
}

/// `[x₀·w, x₁·w, x₂·w, x₃·w]`, 16 lanes at a time (named accumulators: LLVM keeps each in a
/// vector register, where an array of them would live on the stack).
#[inline(always)]
fn dot4(x: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    const LANES: usize = 16;
    let whole = w.len() / LANES * LANES;
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    fn chunks(v: &[f32], whole: usize) -> std::slice::ChunksExact<'_, f32> {
        v[..whole].chunks_exact(LANES)
    }
    for ((((b, x0), x1), x2), x3) in chunks(w, whole)
        .zip(chunks(x[0], whole))
        .zip(chunks(x[1], whole))
        .zip(chunks(x[2], whole))
        .zip(chunks(x[3], whole))
    {
        for l in 0..LANES {
            a0[l] = x0[l].mul_add(b[l], a0[l]);
            a1[l] = x1[l].mul_add(b[l], a1[l]);
            a2[l] = x2[l].mul_add(b[l], a2[l]);
            a3[l] = x3[l].mul_add(b[l], a3[l]);
        }
    }
    let mut out = [a0, a1, a2, a3].map(|a| a.iter().sum::<f32>());
    for (o, x) in out.iter_mut().zip(x) {
        for (a, b) in x[whole..].iter().zip(&w[whole..]) {
            *o = a.mul_add(*b, *o);
        }
    }
    out
}

/// `x·w` with four independent chains over consecutive 16-lane chunks.
#[inline(always)]
fn dot1(x: &[f32], w: &[f32]) -> f32 {
    const LANES: usize = 16;
    const STEP: usize = 4 * LANES;
    let whole = w.len() / STEP * STEP;
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    for (a, b) in x[..whole]
        .chunks_exact(STEP)
        .zip(w[..whole].chunks_exact(STEP))
    {
        for l in 0..LANES {
            a0[l] = a[l].mul_add(b[l], a0[l]);
            a1[l] = a[LANES + l].mul_add(b[LANES + l], a1[l]);
            a2[l] = a[2 * LANES + l].mul_add(b[2 * LANES + l], a2[l]);
            a3[l] = a[3 * LANES + l].mul_add(b[3 * LANES + l], a3[l]);
        }
    }
    let mut sum: f32 = [a0, a1, a2, a3].iter().flatten().sum();
    for (a, b) in x[whole..].iter().zip(&w[whole..]) {
        sum = a.mul_add(*b, sum);
    }
    sum
}
