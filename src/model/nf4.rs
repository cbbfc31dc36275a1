//! NF4 base weights for QLoRA: bitsandbytes' 4-bit NormalFloat code book and layout, quantised
//! once at load on the host and dequantised on the weight's device each time it is used.
//!
//! A weight `[out, in]` is read row-major in blocks of [`BLOCK`] values; each block keeps its
//! absolute maximum (the scale) and each value the index of the nearest code of [`NF4_CODE`] to
//! `value / scale`, two indices per byte (the first in the high nibble), exactly as
//! `bitsandbytes.functional.quantize_4bit(blocksize=64, quant_type="nf4")` stores them. With
//! double quantisation the scales themselves are stored as 8-bit codes of bitsandbytes' signed
//! dynamic map around their mean, in blocks of [`SCALE_BLOCK`] (`compress_statistics=True`):
//! 4.127 bits per weight instead of 4.5.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::host;
use crate::error::Result;

/// bitsandbytes' NF4 code book: the quantiles of a standard normal, scaled to `[-1, 1]`.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928,
    -0.52507305,
    -0.3949175,
    -0.28444138,
    -0.18477343,
    -0.091050036,
    0.0,
    0.0795803,
    0.1609302,
    0.2461123,
    0.33791524,
    0.44070983,
    0.562617,
    0.72295684,
    1.0,
];

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map()`), the code book of the
/// quantised scales.
pub const DYNAMIC_CODE: [f32; 256] = [
    -0.99296874,
    -0.9789063,
    -0.96484375,
    -0.9507812,
    -0.93671876,
    -0.92265624,
    -0.9085938,
    -0.89453125,
    -0.8804687,
    -0.86640626,
    -0.85234374,
    -0.8382813,
    -0.82421875,
    -0.8101562,
    -0.79609376,
    -0.78203124,
    -0.7679688,
    -0.75390625,
    -0.7398437,
    -0.72578126,
    -0.7117188,
    -0.6976563,
    -0.68359375,
    -0.6695312,
    -0.65546876,
    -0.6414063,
    -0.6273438,
    -0.61328125,
    -0.5992187,
    -0.58515626,
    -0.5710938,
    -0.5570313,
    -0.54296875,
    -0.5289062,
    -0.5148437,
    -0.50078124,
    -0.4867187,
    -0.47265625,
    -0.45859373,
    -0.44453126,
    -0.43046874,
    -0.41640624,
    -0.40234375,
    -0.38828123,
    -0.37421876,
    -0.36015624,
    -0.34609374,
    -0.33203125,
    -0.31796873,
    -0.30390626,
    -0.28984374,
    -0.27578127,
    -0.26171875,
    -0.24765624,
    -0.23359375,
    -0.21953125,
    -0.20546874,
    -0.19140625,
    -0.17734376,
    -0.16328125,
    -0.14921875,
    -0.13515624,
    -0.12109375,
    -0.107031256,
    -0.09859375,
    -0.09578126,
    -0.092968754,
    -0.09015625,
    -0.08734375,
    -0.08453125,
    -0.08171876,
    -0.07890625,
    -0.07609375,
    -0.07328125,
    -0.070468746,
    -0.067656256,
    -0.06484375,
    -0.06203125,
    -0.059218753,
    -0.05640625,
    -0.05359375,
    -0.05078125,
    -0.04796875,
    -0.04515625,
    -0.042343747,
    -0.03953125,
    -0.036718752,
    -0.03390625,
    -0.03109375,
    -0.028281251,
    -0.02546875,
    -0.02265625,
    -0.019843752,
    -0.01703125,
    -0.01421875,
    -0.01140625,
    -0.00971875,
    -0.009156249,
    -0.00859375,
    -0.00803125,
    -0.00746875,
    -0.00690625,
    -0.00634375,
    -0.00578125,
    -0.0052187503,
    -0.0046562497,
    -0.00409375,
    -0.0035312497,
    -0.00296875,
    -0.00240625,
    -0.00184375,
    -0.0012812499,
    -9.437501e-04,
    -8.3125e-04,
    -7.1875006e-04,
    -6.062501e-04,
    -4.9375003e-04,
    -3.8125002e-04,
    -2.6875004e-04,
    -1.5625001e-04,
    -8.875e-05,
    -6.625e-05,
    -4.375e-05,
    -2.1249998e-05,
    -7.75e-06,
    -3.2500002e-06,
    -5.5000004e-07,
    0.0,
    5.5000004e-07,
    3.2500002e-06,
    7.75e-06,
    2.1249998e-05,
    4.375e-05,
    6.625e-05,
    8.875e-05,
    1.5625001e-04,
    2.6875004e-04,
    3.8125002e-04,
    4.9375003e-04,
    6.062501e-04,
    7.1875006e-04,
    8.3125e-04,
    9.437501e-04,
    0.0012812499,
    0.00184375,
    0.00240625,
    0.00296875,
    0.0035312497,
    0.00409375,
    0.0046562497,
    0.0052187503,
    0.00578125,
    0.00634375,
    0.00690625,
    0.00746875,
    0.00803125,
    0.00859375,
    0.009156249,
    0.00971875,
    0.01140625,
    0.01421875,
    0.01703125,
    0.019843752,
    0.02265625,
    0.02546875,
    0.028281251,
    0.03109375,
    0.03390625,
    0.036718752,
    0.03953125,
    0.042343747,
    0.04515625,
    0.04796875,
    0.05078125,
    0.05359375,
    0.05640625,
    0.059218753,
    0.06203125,
    0.06484375,
    0.067656256,
    0.070468746,
    0.07328125,
    0.07609375,
    0.07890625,
    0.08171876,
    0.08453125,
    0.08734375,
    0.09015625,
    0.092968754,
    0.09578126,
    0.09859375,
    0.107031256,
    0.12109375,
    0.13515624,
    0.14921875,
    0.16328125,
    0.17734376,
    0.19140625,
    0.20546874,
    0.21953125,
    0.23359375,
    0.24765624,
    0.26171875,
    0.27578127,
    0.28984374,
    0.30390626,
    0.31796873,
    0.33203125,
    0.34609374,
    0.36015624,
    0.37421876,
    0.38828123,
    0.40234375,
    0.41640624,
    0.43046874,
    0.44453126,
    0.45859373,
    0.47265625,
    0.4867187,
    0.50078124,
    0.5148437,
    0.5289062,
    0.54296875,
    0.5570313,
    0.5710938,
    0.58515626,
    0.5992187,
    0.61328125,
    0.6273438,
    0.6414063,
    0.65546876,
    0.6695312,
    0.68359375,
    0.6976563,
    0.7117188,
    0.72578126,
    0.7398437,
    0.75390625,
    0.7679688,
    0.78203124,
    0.79609376,
    0.8101562,
    0.82421875,
    0.8382813,
    0.85234374,
    0.86640626,
    0.8804687,
    0.89453125,
    0.9085938,
    0.92265624,
    0.93671876,
    0.9507812,
    0.96484375,
    0.9789063,
    0.99296874,
    1.0,
];

/// Weights per block sharing one scale.
pub const BLOCK: usize = 64;

/// Scales per block of the second quantisation level (double quantisation).
pub const SCALE_BLOCK: usize = 256;

/// How the base weights of the projections are quantised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nf4Config {
    /// Also quantise the block scales to 8 bits (bitsandbytes' `bnb_4bit_use_double_quant`).
    #[serde(default)]
    pub double_quant: bool,
}

/// How a run stores the base model's projections: the `[model]` section of the presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// `none` (the model's dtype), `nf4` (QLoRA: 4-bit NormalFloat, adapters in bf16/f32) or
    /// `gguf` (a `.gguf` model's own quantisation, kept).
    pub quantize: Quantize,
    /// With `nf4`, also quantise the block scales to 8 bits (saves ~0.37 bits per weight).
    pub double_quant: bool,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            quantize: Quantize::None,
            double_quant: true,
        }
    }
}

impl ModelSettings {
    /// The NF4 configuration to load the base with, if the projections are quantised to NF4.
    pub fn nf4(&self) -> Option<Nf4Config> {
        (self.quantize == Quantize::Nf4).then_some(Nf4Config {
            double_quant: self.double_quant,
        })
    }

    /// How the base's projections are to be stored, if quantised.
    pub fn quantization(&self) -> Option<Quantization> {
        match self.quantize {
            Quantize::None => None,
            Quantize::Nf4 => self.nf4().map(Quantization::Nf4),
            Quantize::Gguf => Some(Quantization::Gguf),
        }
    }
}

/// How a loaded model stores its projections' base weights, when not in its dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// Quantised to NF4 as they are read (QLoRA).
    Nf4(Nf4Config),
    /// Kept in the GGUF file's own block quantisation (a `.gguf` source only; tensors the file
    /// stores unquantised stay dense).
    Gguf,
}

/// Whether the base model's projections are quantised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// Stored in the model's dtype.
    None,
    /// Stored as NF4 (QLoRA).
    Nf4,
    /// Stored as the `.gguf` file stores them (Q4_0, Q4_1, Q8_0, K-quants …).
    Gguf,
}

/// The index of the code nearest to `x` in an ascending code book given by its midpoints; a value
/// on a midpoint takes the lower code (as `torch.bucketize`, and the CUDA kernels' `>` tests).
fn nearest(midpoints: &[f32], x: f32) -> u8 {
    midpoints.partition_point(|&m| m < x) as u8
}

/// The midpoints between consecutive codes, rounded as bitsandbytes rounds them (f32).
fn midpoints<const N: usize>(code: &[f32; N]) -> Vec<f32> {
    code.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect()
}

/// Quantises `values` (a weight read row-major) to packed NF4 codes and block scales, as
/// bitsandbytes does: `(packed [ceil(n/2)], absmax [ceil(n/64)])`.
pub fn quantize(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mids = midpoints(&NF4_CODE);
    let blocks: Vec<(Vec<u8>, f32)> = values
        .par_chunks(BLOCK)
        .map(|block| {
            let absmax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            // bitsandbytes multiplies full blocks by the reciprocal and divides the last,
            // partial one; both clamp the scale away from zero.
            let scale = absmax.max(1e-38);
            let codes = if block.len() == BLOCK {
                let inv = 1.0 / scale;
                block
                    .iter()
                    .map(|&v| nearest(&mids, (v * inv).clamp(-1.0, 1.0)))
                    .collect()
            } else {
                block
                    .iter()
                    .map(|&v| nearest(&mids, (v / scale).clamp(-1.0, 1.0)))
                    .collect()
            };
            (codes, absmax)
        })
        .collect();
    let zero = nearest(&mids, 0.0);
    let mut codes = Vec::with_capacity(values.len() + 1);
    let mut absmax = Vec::with_capacity(blocks.len());
    for (c, a) in blocks {
        codes.extend(c);
        absmax.push(a);
    }
    if codes.len() % 2 == 1 {
        codes.push(zero);
    }
    let packed = codes.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    (packed, absmax)
}

/// Dequantises packed NF4 codes with their block scales to `n` values (the host reference of
/// [`Nf4Weight::dequantize`]).
pub fn dequantize(packed: &[u8], absmax: &[f32], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let byte = packed[i / 2];
            let code = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
            NF4_CODE[code as usize] * absmax[i / BLOCK]
        })
        .collect()
}

/// Block scales quantised to 8 bits: `code[codes[i]] · absmax[i / 256] + offset`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleCodes {
    /// One index into [`DYNAMIC_CODE`] per scale.
    pub codes: Vec<u8>,
    /// The absolute maximum of each block of [`SCALE_BLOCK`] centred scales.
    pub absmax: Vec<f32>,
    /// The mean of the scales, subtracted before quantising.
    pub offset: f32,
}

/// Quantises block scales to 8 bits around their mean (bitsandbytes' double quantisation, with
/// exact nearest-code rounding as its CUDA kernel; its CPU kernel rounds through a 65536-entry
/// table and picks a neighbouring code for a few scales).
pub fn quantize_scales(absmax: &[f32]) -> ScaleCodes {
    let mids = midpoints(&DYNAMIC_CODE);
    let offset =
        (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
    let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let mut codes = Vec::with_capacity(centred.len());
    let mut maxima = Vec::with_capacity(centred.len().div_ceil(SCALE_BLOCK));
    for block in centred.chunks(SCALE_BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        maxima.push(max);
        if max == 0.0 {
            codes.extend(std::iter::repeat_n(0, block.len()));
            continue;
        }
        let inv = 1.0 / max;
        codes.extend(block.iter().map(|&v| nearest(&mids, v * inv)));
    }
    ScaleCodes {
        codes,
        absmax: maxima,
        offset,
    }
}

/// The scales encoded by [`quantize_scales`] (host reference).
pub fn dequantize_scales(scales: &ScaleCodes) -> Vec<f32> {
    scales
        .codes
        .iter()
        .enumerate()
        .map(|(i, &c)| DYNAMIC_CODE[c as usize] * scales.absmax[i / SCALE_BLOCK] + scales.offset)
        .collect()
}

/// The code books on one device, shared by every quantised weight there.
#[derive(Debug, Clone)]
pub struct Nf4Tables {
    /// `[256, 2]` f32: the two NF4 values a packed byte holds.
    pairs: Tensor,
    /// `[256]` f32: [`DYNAMIC_CODE`].
    dynamic: Tensor,
}

impl Nf4Tables {
    /// Copies the code books to `device`.
    pub fn new(device: &Device) -> Result<Self> {
        let pairs: Vec<f32> = (0..256)
            .flat_map(|b| [NF4_CODE[b >> 4], NF4_CODE[b & 15]])
            .collect();
        Ok(Self {
            pairs: host::tensor(pairs, (256, 2), device)?,
            dynamic: host::tensor_from_slice(&DYNAMIC_CODE, 256, device)?,
        })
    }
}

/// The block scales of a quantised weight on its device.
#[derive(Debug, Clone)]
enum Scales {
    /// f32 `[blocks]`.
    Full(Tensor),
    /// Double quantisation: u8 codes `[blocks]`, f32 maxima `[ceil(blocks / 256)]`, the mean.
    Double {
        codes: Tensor,
        absmax: Tensor,
        offset: f32,
    },
}

/// A frozen weight `[out, in]` stored as NF4 on its device: about a quarter of its bf16 size.
#[derive(Debug, Clone)]
pub struct Nf4Weight {
    /// u8 `[ceil(n / 2)]`.
    packed: Tensor,
    scales: Scales,
    dims: (usize, usize),
    tables: Nf4Tables,
}

impl Nf4Weight {
    /// Quantises `weight` `[out, in]` (any dtype, any device) on the host and stores the codes
    /// on the device of `tables`.
    pub fn quantize(weight: &Tensor, config: Nf4Config, tables: &Nf4Tables) -> Result<Self> {
        let dims = weight.dims2()?;
        let values = weight
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec1::<f32>()?;
        let (packed, absmax) = quantize(&values);
        let device = tables.pairs.device();
        let blocks = absmax.len();
        let scales = if config.double_quant {
            let s = quantize_scales(&absmax);
            Scales::Double {
                codes: host::tensor(s.codes, blocks, device)?,
                absmax: host::tensor(s.absmax.clone(), s.absmax.len(), device)?,
                offset: s.offset,
            }
        } else {
            Scales::Full(host::tensor(absmax, blocks, device)?)
        };
        let n = packed.len();
        Ok(Self {
            packed: host::tensor(packed, n, device)?,
            scales,
            dims,
            tables: tables.clone(),
        })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        self.dims
    }

    /// Bytes held on the device (codes and scales).
    pub fn size_in_bytes(&self) -> usize {
        let scales = match &self.scales {
            Scales::Full(s) => s.elem_count() * 4,
            Scales::Double { codes, absmax, .. } => codes.elem_count() + absmax.elem_count() * 4,
        };
        self.packed.elem_count() + scales
    }

    /// The block scales as f32 `[blocks]`.
    fn block_scales(&self) -> candle_core::Result<Tensor> {
        match &self.scales {
            Scales::Full(s) => Ok(s.clone()),
            Scales::Double {
                codes,
                absmax,
                offset,
            } => {
                let centred = self.tables.dynamic.index_select(&as_ids(codes)?, 0)?;
                let scaled = per_block(&centred, absmax, SCALE_BLOCK)?;
                scaled.affine(1.0, *offset as f64)
            }
        }
    }

    /// The weight `[out, in]` in `dtype`, computed on its device (`code · scale` in f32, then
    /// cast, as bitsandbytes computes it). The result is a fresh tensor outside any graph.
    pub fn dequantize(&self, dtype: DType) -> candle_core::Result<Tensor> {
        let (out, inp) = self.dims;
        let n = out * inp;
        let codes = self
            .tables
            .pairs
            .index_select(&as_ids(&self.packed)?, 0)?
            .flatten_all()?;
        let codes = if codes.elem_count() == n {
            codes
        } else {
            codes.narrow(0, 0, n)?
        };
        let w = per_block(&codes, &self.block_scales()?, BLOCK)?;
        // At most two weight-sized f32 buffers at a time (the planner counts 8 bytes a weight).
        drop(codes);
        w.reshape((out, inp))?.to_dtype(dtype)
    }
}

/// Byte codes as `index_select` ids: u32, because candle reads a u8 id of 255 as "no row" (zeros).
fn as_ids(codes: &Tensor) -> candle_core::Result<Tensor> {
    codes.to_dtype(DType::U32)
}

/// `values[i] · scales[i / block]` for `values` `[n]` and `scales` `[ceil(n / block)]`.
fn per_block(values: &Tensor, scales: &Tensor, block: usize) -> candle_core::Result<Tensor> {
    let n = values.elem_count();
    let full = n / block;
    let head = values
        .narrow(0, 0, full * block)?
        .reshape((full, block))?
        .broadcast_mul(&scales.narrow(0, 0, full)?.unsqueeze(1)?)?
        .flatten_all()?;
    if full * block == n {
        return Ok(head);
    }
    let tail = values
        .narrow(0, full * block, n - full * block)?
        .broadcast_mul(&scales.narrow(0, full, 1)?)?;
    Tensor::cat(&[head, tail], 0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn fixtures() -> HashMap<String, Tensor> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nf4/nf4.safetensors"
        );
        candle_core::safetensors::load(path, &Device::Cpu).expect("NF4 fixtures")
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    const CASES: [&str; 4] = ["a", "big", "bf16", "odd"];

    /// `values` rounded to `dtype` (bitsandbytes dequantises to the input's dtype).
    fn rounded(values: Vec<f32>, dtype: DType) -> Vec<f32> {
        let n = values.len();
        f32s(
            &Tensor::from_vec(values, n, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
    }

    /// Asserts `got == expected` bit for bit, naming the first difference.
    fn assert_same(got: &[f32], expected: &[f32], what: &str) {
        assert_eq!(got.len(), expected.len(), "{what}: lengths");
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != expected[i].to_bits()) {
            panic!("{what}: [{i}] {} vs {}", got[i], expected[i]);
        }
    }

    #[test]
    fn code_books_are_bitsandbytes_bit_for_bit() {
        let f = fixtures();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&NF4_CODE), bits(&f32s(&f["code.nf4"])));
        assert_eq!(bits(&DYNAMIC_CODE), bits(&f32s(&f["code.dynamic"])));
    }

    #[test]
    fn quantisation_and_dequantisation_equal_bitsandbytes() {
        let f = fixtures();
        let tables = Nf4Tables::new(&Device::Cpu).unwrap();
        for name in CASES {
            let w = &f[name];
            let values = f32s(w);
            let (packed, absmax) = quantize(&values);
            assert_eq!(packed, bytes(&f[&format!("{name}.packed")]), "{name} codes");
            assert_eq!(absmax, f32s(&f[&format!("{name}.absmax")]), "{name} scales");
            let Some(expected) = f.get(&format!("{name}.dequant")) else {
                continue;
            };
            let expected = f32s(expected);
            let host = rounded(dequantize(&packed, &absmax, values.len()), w.dtype());
            assert_same(&host, &expected, name);
            let weight = Nf4Weight::quantize(w, Nf4Config::default(), &tables).unwrap();
            assert_eq!(weight.dims(), w.dims2().unwrap());
            let on_device = weight.dequantize(w.dtype()).unwrap();
            assert_eq!(on_device.dims(), w.dims());
            assert_same(
                &f32s(&on_device),
                &expected,
                &format!("{name} on the device"),
            );
        }
    }

    #[test]
    fn double_quantisation_matches_bitsandbytes_up_to_its_cpu_rounding_table() {
        let f = fixtures();
        let tables = Nf4Tables::new(&Device::Cpu).unwrap();
        for name in CASES {
            let key = |k: &str| format!("{name}.{k}");
            let absmax = f32s(&f[&key("absmax")]);
            let ours = quantize_scales(&absmax);
            let offset = f32s(&f[&key("dq.offset")])[0];
            assert!(
                (ours.offset - offset).abs() <= offset.abs() * 2.0 * f32::EPSILON,
                "{name}: offset {} vs {offset}",
                ours.offset
            );
            assert_eq!(ours.absmax, f32s(&f[&key("dq.absmax2")]), "{name} maxima");
            // Exact nearest-code rounding, as the fixture script computes it.
            assert_eq!(ours.codes, bytes(&f[&key("dq.nearest")]), "{name} codes");
            // bitsandbytes' CPU table picks a neighbouring code for a few scales.
            let theirs = bytes(&f[&key("dq.codes")]);
            let differ = ours
                .codes
                .iter()
                .zip(&theirs)
                .filter(|(a, b)| a != b)
                .count();
            assert!(
                ours.codes
                    .iter()
                    .zip(&theirs)
                    .all(|(&a, &b)| a.abs_diff(b) <= 1)
                    && differ * 50 <= theirs.len().max(50),
                "{name}: {differ} of {} codes differ",
                theirs.len()
            );
            // With bitsandbytes' own codes, the dequantised weight is bitsandbytes' exactly.
            let Some(expected) = f.get(&key("dq.dequant")) else {
                continue;
            };
            let state = ScaleCodes {
                codes: theirs,
                absmax: ours.absmax.clone(),
                offset,
            };
            let packed = bytes(&f[&key("packed")]);
            let n = f[name].elem_count();
            let expected = f32s(expected);
            let host = dequantize(&packed, &dequantize_scales(&state), n);
            assert_same(&rounded(host, f[name].dtype()), &expected, name);
            // On the device, with our codes: equal wherever the codes agree, and the scales
            // within one step of the 8-bit code book elsewhere.
            let config = Nf4Config { double_quant: true };
            let weight = Nf4Weight::quantize(&f[name], config, &tables).unwrap();
            let got = f32s(&weight.dequantize(DType::F32).unwrap());
            let host = dequantize(&packed, &dequantize_scales(&ours), n);
            let gap = got
                .iter()
                .zip(&host)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(gap <= 1e-7, "{name}: device vs host {gap}");
            let step = ours.absmax.iter().fold(0f32, |m, &a| m.max(a)) * 0.015;
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert!((g - e).abs() <= step, "{name}[{i}]: {g} vs {e}");
            }
        }
    }

    #[test]
    fn a_quantised_weight_takes_about_a_quarter_of_its_bf16_size() {
        let tables = Nf4Tables::new(&Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.02, (256, 512), &Device::Cpu).unwrap();
        let single = Nf4Weight::quantize(&w, Nf4Config::default(), &tables).unwrap();
        let double = Nf4Weight::quantize(&w, Nf4Config { double_quant: true }, &tables).unwrap();
        let n = 256 * 512;
        assert_eq!(single.size_in_bytes(), n / 2 + n / 64 * 4);
        assert_eq!(
            double.size_in_bytes(),
            n / 2 + n / 64 + (n / 64).div_ceil(256) * 4
        );
        let rel = |q: &Nf4Weight| {
            let d = q.dequantize(DType::F32).unwrap();
            ((d - &w)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                / w.sqr()
                    .unwrap()
                    .mean_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap())
            .sqrt()
        };
        // NF4 of a normal weight: about 10 % relative RMS error, a little more with 8-bit scales.
        assert!(rel(&single) < 0.12, "{}", rel(&single));
        assert!(rel(&double) < 0.125, "{}", rel(&double));
    }
}
