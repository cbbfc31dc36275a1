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
