//! Decoder building blocks written with differentiable candle ops.
//!
//! candle_nn's fused `rms_norm`, `softmax_last_dim` and `rotary_emb::rope*` have no backward:
//! they silently cut the graph and the LoRA vars before them get no gradient. Everything here is
//! composed from ops that candle differentiates, and is computed in f32 whatever the model dtype.

use super::gguf_weight::GgufWeight;
use super::kernels;
use super::nf4::Nf4Weight;
use candle_core::{CustomOp1, CustomOp2, D, DType, Layout, Result, Shape, Tensor};

/// The dtype reductions run in: f64 stays f64 (for gradient checks), everything else is f32.
pub fn accumulation_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Whether the fused CPU kernels apply: f32 tensors on the CPU.
fn fused(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight`, computed in f32.
///
/// The weight is frozen: it gets no gradient (the fused CPU kernel computes only `∂x`).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused(&[x, weight]) {
        return rms_norm_unfused(x, weight, eps);
    }
    x.contiguous()?.apply_op1(kernels::RmsNorm {
        weight: weight.clone(),
        eps: eps as f32,
    })
}

/// The reference composition behind [`rms_norm`].
pub fn rms_norm_unfused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
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
    if !fused(&[x, cos, sin]) || x.rank() != 4 {
        return apply_rope_unfused(x, cos, sin);
    }
    x.contiguous()?.apply_op1(kernels::Rope {
        cos: cos.clone(),
        sin: sin.clone(),
    })
}

/// The reference composition behind [`apply_rope`].
pub fn apply_rope_unfused(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let cos = cos.unsqueeze(1)?;
    let sin = sin.unsqueeze(1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// The frozen base weight `[out, in]` of a projection.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// In the model's dtype.
    Dense(Tensor),
    /// 4-bit NormalFloat (QLoRA), dequantised each time it is used.
    Nf4(Nf4Weight),
    /// A GGUF file's own block quantisation, dequantised each time it is used.
    Gguf(GgufWeight),
}

impl BaseWeight {
    /// `(out, in)`.
    pub fn dims(&self) -> Result<(usize, usize)> {
        match self {
            BaseWeight::Dense(w) => w.dims2(),
            BaseWeight::Nf4(q) => Ok(q.dims()),
            BaseWeight::Gguf(q) => Ok(q.dims()),
        }
    }

    /// The weight as a dense tensor in `dtype`.
    pub fn to_dense(&self, dtype: DType) -> Result<Tensor> {
        match self {
            BaseWeight::Dense(w) => w.to_dtype(dtype),
            BaseWeight::Nf4(q) => q.dequantize(dtype),
            BaseWeight::Gguf(q) => q.dequantize(dtype),
        }
    }

    /// Bytes it holds on its device.
    pub fn size_in_bytes(&self) -> usize {
        match self {
            BaseWeight::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            BaseWeight::Nf4(q) => q.size_in_bytes(),
            BaseWeight::Gguf(q) => q.size_in_bytes(),
        }
    }

    /// Whether it is stored quantised (and dequantised each time it is used).
    pub fn is_quantized(&self) -> bool {
        !matches!(self, BaseWeight::Dense(_))
    }
}

/// `x Wᵀ (+ b)` for a frozen `W` `[out, in]`, `x` `[.., in]`: the backward pass computes the
/// gradient of `x` only.
///
/// candle's matmul backward always computes both operand gradients, so a plain `x.matmul(&w.t())`
/// spends a full extra matmul per projection (and keeps a weight-sized gradient) on tensors that
/// never train. Here the product is computed on a detached `x` and re-attached to the graph by
/// [`GradFromWeight`], whose backward is `grad · W`.
pub fn frozen_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_to_input(x, weight, bias, &|| BaseWeight::Dense(weight.clone()))
}

/// [`frozen_linear`] for any base weight: a quantised one (NF4, GGUF) is dequantised to `x`'s
/// dtype for the product and again in the backward pass, so no dense copy of it outlives the
/// call.
pub fn weight_linear(x: &Tensor, weight: &BaseWeight, bias: Option<&Tensor>) -> Result<Tensor> {
    match weight {
        BaseWeight::Dense(w) => frozen_linear(x, w, bias),
        quantized => {
            let dense = quantized.to_dense(x.dtype())?;
            linear_to_input(x, &dense, bias, &|| quantized.clone())
        }
    }
}

/// `x Wᵀ (+ b)` with the gradient routed to `x` only; `backward` names the weight the backward
/// pass multiplies by.
fn linear_to_input(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    backward: &dyn Fn() -> BaseWeight,
) -> Result<Tensor> {
    if x.rank() != 2 {
        return on_rows(x, weight.dim(0)?, |x| {
            linear_to_input(x, weight, bias, backward)
        });
    }
    let skinny = x.dim(0)? <= kernels::SKINNY_ROWS
        && !x.track_op()
        && weight.is_contiguous()
        && fused(&[x, weight]);
    let mut y = if skinny {
        x.contiguous()?
            .apply_op2_no_bwd(weight, &kernels::SkinnyLinear)?
    } else {
        x.detach().matmul(&weight.t()?)?
    };
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    if !x.track_op() {
        return Ok(y);
    }
    x.apply_op1(GradFromWeight {
        y: Precomputed::new(y),
        weight: backward(),
    })
}

/// `f` applied to `x` `[.., in]` as rows `[n, in]`, its `[n, out]` result shaped `[.., out]`.
fn on_rows(x: &Tensor, out: usize, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let in_dim = dims.pop().unwrap_or(0);
    dims.push(out);
    f(&x.reshape(((), in_dim))?)?.reshape(dims)
}

/// A projection's frozen part: `x Wᵀ (+ b) (+ x Aₘᵀ Bₘᵀ)` for a dense or NF4 `W` and optional
/// merged adapters `merged` = (Aₘ `[m, in]`, scale·Bₘ `[out, m]`) kept beside an NF4 weight; the
/// backward pass computes the gradient of `x` only.
pub fn base_linear(
    x: &Tensor,
    weight: &BaseWeight,
    bias: Option<&Tensor>,
    merged: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let y = weight_linear(x, weight, bias)?;
    match merged {
        Some((ma, mb)) => {
            let (ma, mb) = (ma.to_dtype(x.dtype())?, mb.to_dtype(x.dtype())?);
            y + frozen_linear(&frozen_linear(x, &ma, None)?, &mb, None)?
        }
        None => Ok(y),
    }
}

/// The adapter of [`adapted_linear`]: `scale · dropout(x) Aᵀ Bᵀ`, A `[r, in]` and B `[out, r]`
/// (trained, f32), dropout drawn from `seed` with probability `p` when given.
#[derive(Debug, Clone, Copy)]
pub struct Adapter<'a> {
    /// A `[r, in]`.
    pub a: &'a Tensor,
    /// B `[out, r]`.
    pub b: &'a Tensor,
    /// The multiplier of `B A`.
    pub scale: f64,
    /// `(seed, p)` of the dropout on the adapter's input, in training.
    pub dropout: Option<(u64, f32)>,
}

/// A projection with an adapter being trained, as one op of the graph: `x Wᵀ (+ b)
/// (+ x Aₘᵀ Bₘᵀ) + scale · dropout(x) Aᵀ Bᵀ` for a frozen `W` (dense or NF4), optional merged
/// adapters `merged` = (Aₘ `[m, in]`, scale·Bₘ `[out, m]`) and `adapter`; `x` `[.., in]`.
///
/// Composed of candle ops, the adapter's path keeps its f32 input, its dropout mask and product,
/// `x Aᵀ`, the `[.., out]` f32 update, its scaling and its cast for the backward pass, the base
/// path its product: several output-sized tensors per projection, the largest part of a layer's
/// activations. Here the result is computed without a graph and re-attached by one pass-through
/// op whose backward recomputes `dropout(x) Aᵀ` (`[.., r]`) from `x` and forms `∂x`, `∂A`, `∂B`
/// itself: the graph keeps the result alone. The values are those of the composition
/// (adapter in f32, f64 for f64 models, as PEFT computes it).
pub fn adapted_linear(
    x: &Tensor,
    weight: &BaseWeight,
    bias: Option<&Tensor>,
    merged: Option<(&Tensor, &Tensor)>,
    adapter: Adapter,
) -> Result<Tensor> {
    if x.rank() != 2 {
        let out = adapter.b.dim(0)?;
        return on_rows(x, out, |x| adapted_linear(x, weight, bias, merged, adapter));
    }
    let dtype = x.dtype();
    let acc = accumulation_dtype(dtype);
    let xd = x.detach();
    let y = base_linear(&xd, weight, bias, merged)?;
    let (a, b) = (adapter.a.detach(), adapter.b.detach());
    let xl = adapter_input(&xd, adapter.dropout)?.to_dtype(acc)?;
    let update = (xl
        .matmul(&a.to_dtype(acc)?.t()?)?
        .matmul(&b.to_dtype(acc)?.t()?)?
        * adapter.scale)?
        .to_dtype(dtype)?;
    let y = (y + update)?;
    if !x.track_op() && !adapter.a.track_op() {
        return Ok(y);
    }
    // A and Bᵀ side by side, [r, in + out]: one argument carries both gradients.
    let ab = Tensor::cat(
        &[adapter.a.to_dtype(acc)?, adapter.b.to_dtype(acc)?.t()?],
        1,
    )?;
    x.apply_op2(
        &ab,
        AdaptedGrad {
            y: Precomputed::new(y),
            weight: weight.clone(),
            merged: merged.map(|(a, b)| (a.clone(), b.clone())),
            scale: adapter.scale,
            dropout: adapter.dropout,
        },
    )
}

/// The adapter's input: `x`, with dropout when training asks for it.
fn adapter_input(x: &Tensor, dropout: Option<(u64, f32)>) -> Result<Tensor> {
    match dropout {
        Some((seed, p)) if p > 0.0 => super::dropout::dropout(x, seed, p),
        _ => Ok(x.clone()),
    }
}

/// Passes [`adapted_linear`]'s result through and forms the gradients of `x` and of `[A, Bᵀ]`.
struct AdaptedGrad {
    y: Precomputed,
    weight: BaseWeight,
    merged: Option<(Tensor, Tensor)>,
    scale: f64,
    dropout: Option<(u64, f32)>,
}

impl CustomOp2 for AdaptedGrad {
    fn name(&self) -> &'static str {
        "adapted-linear"
    }

    super::ops::pass_through_forwards!(x, ab);

    fn bwd(
        &self,
        x: &Tensor,
        ab: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dtype = x.dtype();
        let acc = ab.dtype();
        let in_dim = x.dim(1)?;
        let out_dim = grad.dim(1)?;
        // The base: ∂x = g W (+ g Bₘ Aₘ).
        let mut dx = grad.matmul(&self.weight.to_dense(dtype)?)?;
        if let Some((ma, mb)) = &self.merged {
            let (ma, mb) = (ma.to_dtype(dtype)?, mb.to_dtype(dtype)?);
            dx = (dx + grad.matmul(&mb)?.matmul(&ma)?)?;
        }
        // The adapter, from its recomputed input and `x Aᵀ`.
        let a = ab.narrow(1, 0, in_dim)?;
        let bt = ab.narrow(1, in_dim, out_dim)?;
        let x = x.detach();
        let xl = adapter_input(&x, self.dropout)?.to_dtype(acc)?;
        let xa = xl.matmul(&a.t()?)?;
        let g = grad.to_dtype(acc)?;
        let dxa = (g.matmul(&bt.t()?)? * self.scale)?;
        let dbt = (xa.t()?.matmul(&g)? * self.scale)?;
        let da = dxa.t()?.matmul(&xl)?;
        let dxl = dxa.matmul(&a)?.to_dtype(dtype)?;
        let dxl = match self.dropout {
            Some((seed, p)) if p > 0.0 => {
                let mask = super::dropout::dropout_mask(&x, seed, p)?.to_dtype(dtype)?;
                (dxl * mask)?
            }
            _ => dxl,
        };
        let dab = Tensor::cat(&[da, dbt], 1)?;
        Ok((Some((dx + dxl)?), Some(dab)))
    }
}

/// A tensor computed without a graph, handed to the pass-through op that attaches its backward
/// pass. The op's forward moves it out: a copy of its buffer becomes the op's output and the
/// tensor itself is released, so the graph holds the result once (holding it as an argument of
/// the op kept it twice).
pub(crate) struct Precomputed(std::sync::Mutex<Option<Tensor>>);

impl Precomputed {
    /// Hands `y` over; it must be contiguous from offset 0 (the output of the op before).
    pub(crate) fn new(y: Tensor) -> Self {
        Self(std::sync::Mutex::new(Some(y)))
    }

    /// The tensor's buffer as the backend `pick` reads it, and its shape; the tensor is released.
    pub(crate) fn take<S>(
        &self,
        op: &str,
        pick: impl FnOnce(&candle_core::Storage, &Layout) -> Option<Result<S>>,
    ) -> Result<(S, Shape)> {
        let y = self
            .0
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{op}: poisoned")))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{op}: its forward ran twice")))?;
        let (storage, layout) = y.storage_and_layout();
        if !layout.is_contiguous() || layout.start_offset() != 0 {
            candle_core::bail!("{op} expects a fresh contiguous tensor");
        }
        let copy = pick(&storage, layout).ok_or_else(|| {
            candle_core::Error::Msg(format!("{op}: the tensor is on another device"))
        })??;
        Ok((copy, layout.shape().clone()))
    }
}

/// The forward passes, on every backend, of a pass-through custom op: its output is the
/// [`Precomputed`] tensor in its field `y`; the op supplies `name` and `bwd`. The identifiers
/// name the arguments' storages (one for a `CustomOp1`, two for a `CustomOp2`).
macro_rules! pass_through_forwards {
    ($($arg:ident),+) => {
        fn cpu_fwd(
            &self,
            $($arg: &candle_core::CpuStorage, _: &candle_core::Layout),+
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $(let _ = $arg;)+
            self.y.take(self.name(), |s, _| match s {
                candle_core::Storage::Cpu(s) => Some(Ok(s.clone())),
                _ => None,
            })
        }

        fn cuda_fwd(
            &self,
            $($arg: &candle_core::CudaStorage, _: &candle_core::Layout),+
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            $(let _ = $arg;)+
            self.y.take(self.name(), |s, l| match s {
                candle_core::Storage::Cuda(s) => {
                    Some(candle_core::backend::BackendStorage::try_clone(s, l))
                }
                _ => None,
            })
        }

        fn metal_fwd(
            &self,
            $($arg: &candle_core::MetalStorage, _: &candle_core::Layout),+
        ) -> candle_core::Result<(candle_core::MetalStorage, candle_core::Shape)> {
            $(let _ = $arg;)+
            self.y.take(self.name(), |s, l| match s {
                candle_core::Storage::Metal(s) => {
                    Some(candle_core::backend::BackendStorage::try_clone(s, l))
                }
                _ => None,
            })
        }
    };
}
pub(crate) use pass_through_forwards;

/// Passes a precomputed `y = x Wᵀ` through and routes `∂L/∂y · W` to `x` in the backward pass.
struct GradFromWeight {
    y: Precomputed,
    weight: BaseWeight,
}

impl CustomOp1 for GradFromWeight {
    fn name(&self) -> &'static str {
        "grad-from-frozen-weight"
    }

    super::ops::pass_through_forwards!(x);

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight.to_dense(grad.dtype())?)?))
    }
}

/// `log softmax(hidden · headᵀ)[targets]` per row, `[n]`, for `hidden` `[n, h]` and a frozen
/// output head `[vocab, h]`.
///
/// The logits are never materialised whole: rows are processed in chunks of about 64 MB of f32
/// logits, and the backward pass recomputes each chunk's softmax to form `∂/∂hidden`. With a
/// 152k vocabulary that replaces several `[n, vocab]` tensors (600 MB each at 4 × 256 tokens,
/// 2.5 GB at 4096 tokens) by one chunk. On CPU in f32 this is a fused kernel; elsewhere (GPU,
/// half precision) [`linear_logprobs_chunked`] does it with candle ops. Both give the values and
/// gradients of the plain composition, [`linear_logprobs_unfused`].
pub fn linear_logprobs(hidden: &Tensor, head: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let fused =
        hidden.device().is_cpu() && hidden.dtype() == DType::F32 && head.dtype() == DType::F32;
    if !fused {
        let rows = kernels::LOGIT_CHUNK_ELEMS / head.dim(0)?.max(1);
        return linear_logprobs_chunked(hidden, head, targets, rows);
    }
    let op = kernels::LinearLogprobs {
        head: head.contiguous()?,
        targets: targets.to_dtype(DType::U32)?.to_vec1::<u32>()?,
    };
    hidden.contiguous()?.apply_op1(op)
}

/// `log softmax(hidden · headᵀ)[targets]` computed `rows` rows at a time with candle ops (any
/// device and dtype): the logits of all rows are never held at once, and the backward pass
/// recomputes each chunk's softmax from the saved log-sum-exp.
pub fn linear_logprobs_chunked(
    hidden: &Tensor,
    head: &Tensor,
    targets: &Tensor,
    rows: usize,
) -> Result<Tensor> {
    let n = hidden.dim(0)?;
    let rows = rows.clamp(1, n.max(1));
    let targets = targets.to_dtype(DType::U32)?;
    let detached = hidden.detach();
    let (mut values, mut lses) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let logits = chunk_logits(&detached, head, start, len)?;
        let max = logits.max_keepdim(1)?;
        let lse = (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + &max)?;
        let picked = logits.gather(&targets.narrow(0, start, len)?.unsqueeze(1)?, 1)?;
        values.push((picked - &lse)?.squeeze(1)?);
        lses.push(lse.squeeze(1)?);
    }
    let values = Tensor::cat(&values, 0)?;
    if !hidden.track_op() {
        return Ok(values);
    }
    hidden.apply_op1(HeadGrad {
        y: Precomputed::new(values),
        head: head.clone(),
        targets,
        lse: Tensor::cat(&lses, 0)?,
        rows,
    })
}

/// Logits `[len, vocab]` of rows `[start, start + len)`, in the accumulation dtype.
fn chunk_logits(hidden: &Tensor, head: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let h = hidden.narrow(0, start, len)?;
    h.matmul(&head.t()?)?
        .to_dtype(accumulation_dtype(h.dtype()))
}

/// Passes [`linear_logprobs_chunked`]'s values through; its backward is
/// `∂hidden = (g ⊙ (onehot(target) − softmax)) · head`, chunk by chunk.
struct HeadGrad {
    y: Precomputed,
    head: Tensor,
    targets: Tensor,
    lse: Tensor,
    rows: usize,
}

impl CustomOp1 for HeadGrad {
    fn name(&self) -> &'static str {
        "chunked-head-grad"
    }

    super::ops::pass_through_forwards!(hidden);

    fn bwd(&self, hidden: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let hidden = hidden.detach();
        let n = hidden.dim(0)?;
        let mut parts = Vec::with_capacity(n.div_ceil(self.rows));
        for start in (0..n).step_by(self.rows) {
            let len = self.rows.min(n - start);
            let logits = chunk_logits(&hidden, &self.head, start, len)?;
            let lse = self.lse.narrow(0, start, len)?.unsqueeze(1)?;
            let probs = logits.broadcast_sub(&lse)?.exp()?;
            let g = grad
                .narrow(0, start, len)?
                .to_dtype(probs.dtype())?
                .unsqueeze(1)?;
            let targets = self.targets.narrow(0, start, len)?.unsqueeze(1)?;
            let dlogits = probs
                .broadcast_mul(&g)?
                .neg()?
                .scatter_add(&targets, &g, 1)?;
            parts.push(dlogits.to_dtype(hidden.dtype())?.matmul(&self.head)?);
        }
        Ok(Some(Tensor::cat(&parts, 0)?))
    }
}

/// The reference composition behind [`linear_logprobs`].
pub fn linear_logprobs_unfused(hidden: &Tensor, head: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logits = frozen_linear(hidden, head, None)?;
    log_softmax_last_dim(&logits)?
        .gather(&targets.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?
        .squeeze(1)
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
    fn skinny_products_equal_matmul() {
        let dev = Device::Cpu;
        // k not a multiple of the 16 lanes, n not a multiple of the 32-column blocks
        for (m, k, n) in [(1, 37, 70), (3, 64, 33), (16, 5, 1), (17, 20, 9)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let got = frozen_linear(&x, &w, Some(&b)).unwrap();
            let want = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "{m}x{k}x{n}");
        }
    }

    #[test]
    fn fused_and_chunked_linear_logprobs_match_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        let hidden = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let head = Tensor::randn(0f32, 1.0, (11, 8), &dev).unwrap();
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7], &dev).unwrap();
        let w = Tensor::new(&[1f32, -2.0, 0.5, 3.0, 1.5], &dev).unwrap();
        // (path, dtype, tolerance): the fused kernel, 2-row chunks, and half precision (which
        // `linear_logprobs` sends to the chunked path)
        for (path, dtype, tolerance) in [
            (0, DType::F32, 1e-5),
            (1, DType::F32, 1e-5),
            (1, DType::F64, 1e-12),
            (0, DType::BF16, 1e-2),
        ] {
            let hidden = Var::from_tensor(&hidden.to_dtype(dtype).unwrap()).unwrap();
            let head = head.to_dtype(dtype).unwrap();
            let h = hidden.as_tensor();
            let got = match path {
                0 => linear_logprobs(h, &head, &targets),
                _ => linear_logprobs_chunked(h, &head, &targets, 2),
            }
            .unwrap();
            let plain = linear_logprobs_unfused(h, &head, &targets).unwrap();
            let to64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let gap = |a: &Tensor, b: &Tensor| {
                let d = (to64(a) - to64(b)).unwrap().abs().unwrap();
                d.max_all().unwrap().to_scalar::<f64>().unwrap()
            };
            assert!(gap(&got, &plain) < tolerance, "{path} {dtype:?} values");
            let w = w.to_dtype(got.dtype()).unwrap();
            let g_got = (got * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g_plain = (plain * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (g_got.get(h).unwrap(), g_plain.get(h).unwrap());
            assert!(
                gap(a, b) < tolerance * 10.0,
                "{path} {dtype:?} gradients {}",
                gap(a, b)
            );
        }
    }

    /// Value and input-gradient of a fused op against its reference composition.
    fn assert_same(
        shape: &[usize],
        fused: impl Fn(&Tensor) -> Result<Tensor>,
        plain: impl Fn(&Tensor) -> Result<Tensor>,
    ) {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
        let a = fused(x.as_tensor()).unwrap();
        let b = plain(x.as_tensor()).unwrap();
        let max = |t: Tensor| {
            t.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max((&a - &b).unwrap()) < 1e-5);
        let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (ga, gb) = (ga.get(&x).unwrap(), gb.get(&x).unwrap());
        assert!(max(ga.clone()) > 0.0);
        assert!(max((ga - gb).unwrap()) < 1e-5);
    }

    #[test]
    fn fused_rms_norm_and_rope_match_the_composition_in_value_and_gradient() {
        let dev = Device::Cpu;
        let w = (Tensor::randn(0f32, 0.1, 16, &dev).unwrap() + 1.0).unwrap();
        assert_same(
            &[3, 5, 16],
            |x| rms_norm(x, &w, 1e-6),
            |x| rms_norm_unfused(x, &w, 1e-6),
        );
        let pos = Tensor::new(&[[0u32, 1, 2, 3, 4], [0, 0, 1, 2, 3]], &dev).unwrap();
        let inv = Tensor::new(&[1f32, 0.3, 0.1, 0.01], &dev).unwrap();
        let (cos, sin) = rope_tables(&pos, &inv, DType::F32).unwrap();
        assert_same(
            &[2, 3, 5, 8],
            |x| apply_rope(x, &cos, &sin),
            |x| apply_rope_unfused(x, &cos, &sin),
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

    /// `adapted_linear` against the composition it replaces (`base_linear` and the adapter's
    /// `LoraPair::forward`), in value and in the gradients of x, A and B.
    #[test]
    fn the_adapted_projection_equals_its_composition_in_value_and_gradients() {
        use crate::model::lora::{LoraConfig, LoraPair};
        use crate::model::nf4::{Nf4Config, Nf4Tables, Nf4Weight};
        let dev = Device::Cpu;
        let (n, inp, out, r) = (6, 64, 48, 4);
        let w = Tensor::randn(0f32, 0.1, (out, inp), &dev).unwrap();
        let nf4 =
            Nf4Weight::quantize(&w, Nf4Config::default(), &Nf4Tables::new(&dev).unwrap()).unwrap();
        let q4 =
            candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q4_1)
                .unwrap();
        let gguf = GgufWeight::new(q4).unwrap();
        let bias = Tensor::randn(0f32, 0.1, out, &dev).unwrap();
        let merged = (
            Tensor::randn(0f32, 0.1, (3, inp), &dev).unwrap(),
            Tensor::randn(0f32, 0.1, (out, 3), &dev).unwrap(),
        );
        for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::F64, 1e-12), (DType::BF16, 2e-2)] {
            for (weight, with_merged) in [
                (BaseWeight::Dense(w.to_dtype(dtype).unwrap()), false),
                (BaseWeight::Nf4(nf4.clone()), true),
                (BaseWeight::Gguf(gguf.clone()), true),
            ] {
                for dropout in [None, Some((7u64, 0.3f32))] {
                    let x = Var::from_tensor(
                        &Tensor::randn(0f32, 1.0, (2, n / 2, inp), &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap(),
                    )
                    .unwrap();
                    let config = LoraConfig {
                        r,
                        alpha: 6.0,
                        dropout: dropout.map_or(0.0, |(_, p)| p),
                        ..LoraConfig::default()
                    };
                    let pair = LoraPair::from_tensors(
                        Tensor::randn(0f32, 0.2, (r, inp), &dev).unwrap(),
                        Tensor::randn(0f32, 0.2, (out, r), &dev).unwrap(),
                        &config,
                    )
                    .unwrap();
                    let (a, b) = (&pair.a, &pair.b);
                    let bias = bias.to_dtype(dtype).unwrap();
                    let merged = with_merged.then_some((&merged.0, &merged.1));
                    let adapter = Adapter {
                        a: a.as_tensor(),
                        b: b.as_tensor(),
                        scale: pair.scale(),
                        dropout,
                    };
                    let fused =
                        adapted_linear(x.as_tensor(), &weight, Some(&bias), merged, adapter)
                            .unwrap();
                    // The composition: the frozen part and the adapter's own update.
                    let xs = x.as_tensor();
                    let seed = dropout.map(|(seed, _)| seed);
                    let plain = (base_linear(xs, &weight, Some(&bias), merged).unwrap()
                        + pair.forward(xs, seed, true).unwrap())
                    .unwrap();
                    let gap = |p: &Tensor, q: &Tensor| {
                        (p.to_dtype(DType::F64).unwrap() - q.to_dtype(DType::F64).unwrap())
                            .unwrap()
                            .abs()
                            .unwrap()
                            .max_all()
                            .unwrap()
                            .to_scalar::<f64>()
                            .unwrap()
                    };
                    let case = format!("{dtype:?} nf4 {with_merged} dropout {dropout:?}");
                    assert!(gap(&fused, &plain) < tolerance, "{case}: values");
                    // A loss that weighs every output differently.
                    let weights = Tensor::randn(0f32, 1.0, fused.dims(), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let loss = |y: &Tensor| (y * &weights).unwrap().sum_all().unwrap();
                    let (g1, g2) = (
                        loss(&fused).backward().unwrap(),
                        loss(&plain).backward().unwrap(),
                    );
                    for (name, var) in [("x", &x), ("A", a), ("B", b)] {
                        let (p, q) = (
                            g1.get(var.as_tensor()).expect("fused gradient"),
                            g2.get(var.as_tensor()).expect("composed gradient"),
                        );
                        let scale = gap(q, &q.zeros_like().unwrap()).max(1.0);
                        assert!(
                            gap(p, q) < tolerance * scale,
                            "{case}: ∂{name} differs by {}",
                            gap(p, q)
                        );
                    }
                }
            }
        }
    }
}
