//! Dropout masks drawn on the tensor's own device from a counter-based generator.
//!
//! Element `i` of the mask for `seed` is decided by the `i`-th output of the SplitMix64 stream
//! `seed` (the stream of [`crate::rng::Rng::new`]`(seed)`): SplitMix64's state after `i + 1`
//! steps is `seed + (i + 1)·γ`, so every element is computed independently, on the CPU (in
//! parallel) or by a CUDA kernel, with the same bits on both. A recomputed forward pass that
//! passes the same seed sees the same mask, and nothing is built on the host and copied over.

use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// SplitMix64's increment γ.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Output `i` (from 0) of the SplitMix64 stream seeded with `seed`.
fn splitmix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mask element `i`: 0 with probability `p`, else `keep`.
///
/// The uniform draw is [`crate::rng::Rng::uniform`] rounded to f32, as the CUDA kernel computes
/// it: 53 bits scaled by 2⁻⁵³ in f64 (exact), then one round-to-nearest conversion.
fn mask_value(seed: u64, i: u64, p: f32, keep: f32) -> f32 {
    let u = ((splitmix(seed, i) >> 11) as f64 / (1u64 << 53) as f64) as f32;
    if u < p { 0.0 } else { keep }
}

/// The CUDA twin of [`mask_value`], one element per thread in a grid-stride loop.
#[cfg_attr(not(abt_cuda), allow(dead_code))]
const CUDA_SOURCE: &str = r#"
extern "C" __global__ void abt_dropout_mask(float *out, unsigned long long seed, float p,
                                            float keep, unsigned long long n) {
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        unsigned long long z = seed + (i + 1ULL) * 0x9E3779B97F4A7C15ULL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z = z ^ (z >> 31);
        float u = (float)((double)(z >> 11) * (1.0 / 9007199254740992.0));
        out[i] = u < p ? 0.0f : keep;
    }
}
"#;

/// The f32 dropout mask `[same shape as the input]` for `seed`: 0 with probability `p`, else
/// `1 / (1 - p)`. Only the input's shape and device are used.
struct DropoutMask {
    seed: u64,
    p: f32,
    keep: f32,
}

impl CustomOp1 for DropoutMask {
    fn name(&self) -> &'static str {
        "dropout-mask"
    }

    fn cpu_fwd(&self, _: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let n = layout.shape().elem_count() as u64;
        let mask: Vec<f32> = (0..n)
            .into_par_iter()
            .map(|i| mask_value(self.seed, i, self.p, self.keep))
            .collect();
        Ok((CpuStorage::F32(mask), layout.shape().clone()))
    }

    #[cfg(abt_cuda)]
    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};

        static PTX: std::sync::OnceLock<std::result::Result<String, String>> =
            std::sync::OnceLock::new();
        let ptx = PTX
            .get_or_init(|| {
                candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(CUDA_SOURCE)
                    .map(|ptx| ptx.to_src())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| candle_core::Error::Msg(format!("compiling the dropout kernel: {e}")))?;
        let dev = storage.device().clone();
        let n = layout.shape().elem_count();
        let func = dev.get_or_load_custom_func("abt_dropout_mask", "abt_dropout", ptx)?;
        // SAFETY: the kernel writes every one of the n elements.
        let out = unsafe { dev.alloc::<f32>(n)? };
        let n64 = n as u64;
        let mut builder = func.builder();
        builder.arg(&out);
        builder.arg(&self.seed);
        builder.arg(&self.p);
        builder.arg(&self.keep);
        builder.arg(&n64);
        let blocks = n.div_ceil(256).clamp(1, 1 << 20) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's signature and `out` holds n floats.
        unsafe { builder.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev),
            layout.shape().clone(),
        ))
    }

    #[cfg(not(abt_cuda))]
    fn cuda_fwd(&self, _: &CudaStorage, _: &Layout) -> Result<(CudaStorage, Shape)> {
        candle_core::bail!("dropout-mask: this build has no CUDA support")
    }
}

/// The dropout mask for a tensor shaped like `x`, f32 on `x`'s device: element `i` is 0 with
/// probability `p` and `1 / (1 - p)` otherwise, decided by `(seed, i)` alone.
pub fn dropout_mask(x: &Tensor, seed: u64, p: f32) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability {p} must be in [0, 1)");
    }
    let keep = 1.0 / (1.0 - p);
    x.apply_op1_no_bwd(&DropoutMask { seed, p, keep })
}

/// `x · mask` with the mask of [`dropout_mask`] in `x`'s dtype; differentiable in `x` (the
/// mask is a constant of the graph).
pub fn dropout(x: &Tensor, seed: u64, p: f32) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(x.clone());
    }
    let mask = dropout_mask(x, seed, p)?;
    let mask = if x.dtype() == DType::F32 {
        mask
    } else {
        mask.to_dtype(x.dtype())?
    };
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    #[test]
    fn the_mask_is_the_seeded_stream_element_by_element() {
        let x = Tensor::zeros((3, 5, 7), DType::F32, &Device::Cpu).unwrap();
        let (p, seed) = (0.3f32, 0xDEAD_BEEF);
        let mask = dropout_mask(&x, seed, p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let keep = 1.0 / (1.0 - p);
        let expected: Vec<f32> = Rng::new(seed)
            .uniform_vec(x.elem_count(), 0.0, 1.0)
            .into_iter()
            .map(|u| if u < p { 0.0 } else { keep })
            .collect();
        assert_eq!(mask, expected);
        assert!(mask.contains(&0.0) && mask.contains(&keep));
    }

    #[test]
    fn the_mask_depends_on_seed_and_shape_only_and_drops_about_p() {
        let a = Tensor::zeros((400, 250), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::ones((400, 250), DType::BF16, &Device::Cpu).unwrap();
        let ma = dropout_mask(&a, 9, 0.1).unwrap();
        let mb = dropout_mask(&b, 9, 0.1).unwrap();
        assert_eq!(ma.device().location(), a.device().location());
        let (va, vb) = (
            ma.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            mb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(va, vb);
        let other = dropout_mask(&a, 10, 0.1).unwrap();
        assert_ne!(va, other.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let dropped = va.iter().filter(|&&v| v == 0.0).count() as f64 / va.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
        assert!(dropout_mask(&a, 9, 1.0).is_err());
    }

    #[test]
    fn dropout_scales_what_it_keeps_and_passes_the_mask_to_the_gradient() {
        let x =
            candle_core::Var::new(&[[1f32, 2., 3., 4.], [5., 6., 7., 8.]], &Device::Cpu).unwrap();
        let y = dropout(x.as_tensor(), 3, 0.5).unwrap();
        let mask = dropout_mask(x.as_tensor(), 3, 0.5).unwrap();
        let expected = (x.as_tensor() * &mask).unwrap();
        assert_eq!(
            y.to_vec2::<f32>().unwrap(),
            expected.to_vec2::<f32>().unwrap()
        );
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            grads.get(&x).unwrap().to_vec2::<f32>().unwrap(),
            mask.to_vec2::<f32>().unwrap()
        );
        let same = dropout(x.as_tensor(), 0, 0.0).unwrap();
        assert_eq!(
            same.to_vec2::<f32>().unwrap(),
            x.as_tensor().to_vec2::<f32>().unwrap()
        );
    }
}
