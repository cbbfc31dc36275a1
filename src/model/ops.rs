//! Decoder building blocks written with differentiable candle ops.
//!
//! candle_nn's fused `rms_norm`, `softmax_last_dim` and `rotary_emb::rope*` have no backward:
//! they silently cut the graph and the LoRA vars before them get no gradient. Everything here is
//! composed from ops that candle differentiates, and is computed in f32 whatever the model dtype.

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, D, DType, Layout, MetalStorage, Result, Shape, Tensor,
};

/// The dtype reductions run in: f64 stays f64 (for gradient checks), everything else is f32.
pub fn accumulation_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`, computed in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(accumulation_dtype(dtype))?;
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv_rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)
}

/// Softmax over the last dimension, computed in f32 and returned in the input's dtype.
///
/// The row maximum is subtracted for stability and detached: softmax does not depend on it,
/// so no gradient flows through it.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(accumulation_dtype(dtype))?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

/// `log_softmax` over the last dimension, in f32 (f64 for f64 input).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(accumulation_dtype(x.dtype()))?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Rotary tables for given positions: `(cos, sin)`, each `[batch, seq, head_dim]`.
///
/// `positions` is `[batch, seq]` (u32 or f32), `inv_freq` is `[head_dim / 2]` f32. Frequencies
/// are laid out as in transformers (`cat(freqs, freqs)`), pairing dimension `i` with `i + d/2`.
pub fn rope_tables(
    positions: &Tensor,
    inv_freq: &Tensor,
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let (b, t) = positions.dims2()?;
    let half = inv_freq.dim(0)?;
    let acc = accumulation_dtype(dtype);
    let freqs = positions
        .to_dtype(acc)?
        .reshape((b, t, 1))?
        .broadcast_mul(&inv_freq.to_dtype(acc)?.reshape((1, 1, half))?)?;
    let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
    Ok((emb.cos()?.to_dtype(dtype)?, emb.sin()?.to_dtype(dtype)?))
}

/// Applies RoPE to `x` `[batch, heads, seq, head_dim]` with tables from [`rope_tables`]:
/// `x * cos + rotate_half(x) * sin`, where `rotate_half(x) = cat(-x₂, x₁)`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let cos = cos.unsqueeze(1)?;
    let sin = sin.unsqueeze(1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// `x Wᵀ (+ b)` for a frozen `W` `[out, in]`, `x` `[n, in]`: the backward pass computes the
/// gradient of `x` only.
///
/// candle's matmul backward always computes both operand gradients, so a plain `x.matmul(&w.t())`
/// spends a full extra matmul per projection (and keeps a weight-sized gradient) on tensors that
/// never train. Here the product is computed on a detached `x` and re-attached to the graph by
/// [`GradFromWeight`], whose backward is `grad · W`.
pub fn frozen_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut y = x.detach().matmul(&weight.t()?)?;
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    if !x.track_op() {
        return Ok(y);
    }
    y.apply_op2(
        x,
        GradFromWeight {
            weight: weight.clone(),
        },
    )
}

/// Passes a precomputed `y = x Wᵀ` through and routes `∂L/∂y · W` to `x` in the backward pass.
struct GradFromWeight {
    weight: Tensor,
}

impl CustomOp2 for GradFromWeight {
    fn name(&self) -> &'static str {
        "grad-from-frozen-weight"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        l: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // The CPU clone copies the whole buffer: only valid for a fresh contiguous product.
        if !l.is_contiguous() || l.start_offset() != 0 {
            candle_core::bail!("grad-from-frozen-weight expects a fresh contiguous product");
        }
        Ok((y.try_clone(l)?, l.shape().clone()))
    }

    fn cuda_fwd(
        &self,
        y: &CudaStorage,
        l: &Layout,
        _: &CudaStorage,
        _: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((y.try_clone(l)?, l.shape().clone()))
    }

    fn metal_fwd(
        &self,
        y: &MetalStorage,
        l: &Layout,
        _: &MetalStorage,
        _: &Layout,
    ) -> Result<(MetalStorage, Shape)> {
        Ok((y.try_clone(l)?, l.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(grad.matmul(&self.weight)?)))
    }
}

/// Rows of logits computed at once by [`linear_logprobs`]: about 64 MB of f32 per chunk.
const LOGIT_CHUNK_ELEMS: usize = 16 << 20;

/// `log softmax(hidden · headᵀ)[targets]` per row, `[n]`, for `hidden` `[n, h]` and a frozen
/// output head `[vocab, h]`.
///
/// On CPU in f32 the logits are never materialised whole: rows are processed in chunks of about
/// 64 MB, and the backward pass recomputes each chunk's softmax to form `∂/∂hidden`. With a
/// 152k vocabulary that replaces several `[n, vocab]` tensors (600 MB each at 4 × 256 tokens)
/// by one chunk. Elsewhere it is the composition of [`frozen_linear`], [`log_softmax_last_dim`]
/// and a gather, which gives the same values and gradients.
pub fn linear_logprobs(hidden: &Tensor, head: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let fused =
        hidden.device().is_cpu() && hidden.dtype() == DType::F32 && head.dtype() == DType::F32;
    if !fused {
        return linear_logprobs_unfused(hidden, head, targets);
    }
    let op = LinearLogprobs {
        head: head.contiguous()?,
        targets: targets.to_dtype(DType::U32)?.to_vec1::<u32>()?,
    };
    hidden.contiguous()?.apply_op1(op)
}

/// The reference composition behind [`linear_logprobs`].
pub fn linear_logprobs_unfused(hidden: &Tensor, head: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = frozen_linear(hidden, head, None)?;
    log_softmax_last_dim(&logits)?
        .gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)
}

struct LinearLogprobs {
    head: Tensor,
    targets: Vec<u32>,
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

/// Attention probabilities `softmax(scores · scale + bias)` over the last dimension.
///
/// `scores` is `[batch, .., t, t]` (any number of head dims), `bias` the additive mask
/// `[batch, 1, .., 1, t, t]` (f32, 0 or −∞) from [`crate::model::TokenBatch::attention_bias`].
/// On CPU in f32 this is one parallel pass over the rows (masked keys are skipped) with a
/// hand-written backward `scale · y ⊙ (g − Σ g ⊙ y)`; elsewhere it is the composition of
/// candle ops, computed in f32.
pub fn masked_softmax(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let fused =
        scores.device().is_cpu() && scores.dtype() == DType::F32 && bias.dtype() == DType::F32;
    if !fused {
        return masked_softmax_unfused(scores, bias, scale);
    }
    let dims = scores.dims();
    let (b, t) = (dims[0], dims[dims.len() - 1]);
    if bias.elem_count() != b * t * t {
        candle_core::bail!(
            "masked_softmax: bias {:?} does not fit scores {:?}",
            bias.dims(),
            dims
        );
    }
    scores.contiguous()?.apply_op1(MaskedSoftmax {
        bias: bias.contiguous()?,
        scale,
    })
}

/// The reference composition behind [`masked_softmax`].
pub fn masked_softmax_unfused(scores: &Tensor, bias: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = scores.dtype();
    let acc = accumulation_dtype(dtype);
    let x = (scores.to_dtype(acc)? * scale)?.broadcast_add(&bias.to_dtype(acc)?)?;
    softmax_last_dim(&x)?.to_dtype(dtype)
}

struct MaskedSoftmax {
    bias: Tensor,
    scale: f64,
}

impl candle_core::CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let dims = l.shape().dims();
        let (b, t) = (dims[0], dims[dims.len() - 1]);
        let rows_per_batch = l.shape().elem_count() / (b * t);
        let (Some((start, end)), CpuStorage::F32(data)) = (l.contiguous_offsets(), s) else {
            candle_core::bail!("masked-softmax expects contiguous f32 scores");
        };
        let x = &data[start..end];
        let (bias_storage, bias_layout) = self.bias.storage_and_layout();
        let (candle_core::Storage::Cpu(CpuStorage::F32(bias)), Some((b0, b1))) =
            (&*bias_storage, bias_layout.contiguous_offsets())
        else {
            candle_core::bail!("masked-softmax expects a contiguous f32 CPU bias");
        };
        let bias = &bias[b0..b1];
        let scale = self.scale as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(t).enumerate().for_each(|(r, y)| {
            let batch = r / rows_per_batch;
            let query = r % t;
            let mask = &bias[(batch * t + query) * t..(batch * t + query + 1) * t];
            let xs = &x[r * t..(r + 1) * t];
            let mut max = f32::NEG_INFINITY;
            for (v, m) in xs.iter().zip(mask) {
                if *m == 0.0 {
                    max = max.max(v * scale);
                }
            }
            let mut sum = 0f32;
            for ((yv, v), m) in y.iter_mut().zip(xs).zip(mask) {
                if *m == 0.0 {
                    *yv = (v * scale - max).exp();
                    sum += *yv;
                }
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _scores: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let gy = (grad * y)?;
        let dot = gy.sum_keepdim(D::Minus1)?;
        Ok(Some(((gy - y.broadcast_mul(&dot)?)? * self.scale)?))
    }
}

/// SwiGLU: `silu(gate) * up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rms_norm_matches_its_formula() {
        let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[1f32, 1., 2., 0.5], &Device::Cpu).unwrap();
        let y = rms_norm(&x, &w, 0.0).unwrap().to_vec2::<f32>().unwrap();
        let rms = (30f32 / 4.0).sqrt();
        let expected = [1.0 / rms, 2.0 / rms, 6.0 / rms, 2.0 / rms];
        for (a, b) in y[0].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn softmax_and_log_softmax_agree_and_carry_gradients() {
        let x = Var::new(&[[0.5f32, -1.0, 2.0], [3.0, 3.0, 3.0]], &Device::Cpu).unwrap();
        let p = softmax_last_dim(x.as_tensor()).unwrap();
        let lp = log_softmax_last_dim(x.as_tensor()).unwrap();
        let diff = (p.log().unwrap() - &lp).unwrap().abs().unwrap();
        assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-6);
        // d/dx of log_softmax(x)[0] = onehot(0) - softmax(x)
        let loss = lp.narrow(1, 0, 1).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(&x).unwrap().to_vec2::<f32>().unwrap();
        let p = p.to_vec2::<f32>().unwrap();
        for row in 0..2 {
            for col in 0..3 {
                let expected = f32::from(col == 0) - p[row][col];
                assert!((g[row][col] - expected).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn fused_linear_logprobs_match_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        let hidden = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap()).unwrap();
        let head = Tensor::randn(0f32, 1.0, (11, 8), &dev).unwrap();
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7], &dev).unwrap();
        let w = Tensor::new(&[1f32, -2.0, 0.5, 3.0, 1.5], &dev).unwrap();
        let fused = linear_logprobs(hidden.as_tensor(), &head, &targets).unwrap();
        let plain = linear_logprobs_unfused(hidden.as_tensor(), &head, &targets).unwrap();
        let diff = (&fused - &plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let g_fused = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_plain = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let a = g_fused.get(&hidden).unwrap();
        let b = g_plain.get(&hidden).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn fused_masked_softmax_matches_the_composition_in_value_and_gradient() {
        use crate::model::{Padding, TokenBatch};
        let dev = Device::Cpu;
        let batch =
            TokenBatch::pad(&[vec![1, 2, 3, 4], vec![5, 6]], 0, Padding::Left, &dev).unwrap();
        let bias = batch.attention_bias().unwrap();
        let scores =
            Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 3, 2, 4, 4), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (2, 3, 2, 4, 4), &dev).unwrap();
        let fused = masked_softmax(scores.as_tensor(), &bias, 0.7).unwrap();
        let plain = masked_softmax_unfused(scores.as_tensor(), &bias, 0.7).unwrap();
        let diff = (&fused - &plain).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let g_fused = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_plain = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let diff = (g_fused.get(&scores).unwrap() - g_plain.get(&scores).unwrap()).unwrap();
        assert!(
            diff.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                < 1e-5
        );
    }

    #[test]
    fn rope_rotates_pairs_i_and_i_plus_half() {
        // One head of width 4, position 1, inv_freq [1, 0.5]: angles 1 and 0.5.
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let pos = Tensor::new(&[[1u32]], &Device::Cpu).unwrap();
        let inv = Tensor::new(&[1f32, 0.5], &Device::Cpu).unwrap();
        let (cos, sin) = rope_tables(&pos, &inv, DType::F32).unwrap();
        let y = apply_rope(&x, &cos, &sin).unwrap().flatten_all().unwrap();
        let y = y.to_vec1::<f32>().unwrap();
        let (c1, s1, c2, s2) = (1f32.cos(), 1f32.sin(), 0.5f32.cos(), 0.5f32.sin());
        let expected = [
            1.0 * c1 - 3.0 * s1,
            2.0 * c2 - 4.0 * s2,
            3.0 * c1 + 1.0 * s1,
            4.0 * c2 + 2.0 * s2,
        ];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {expected:?}");
        }
    }
}
