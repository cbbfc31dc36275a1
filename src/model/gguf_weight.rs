//! Base weights kept in a GGUF file's own block quantisation (Q4_0, Q4_1, Q8_0, the K-quants …),
//! dequantised on their device each time they are used, as NF4 weights are: a quantised GGUF
//! model trains with about its file's size in weights instead of four bytes a parameter.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// A frozen weight `[out, in]` in one of GGUF's block quantisations, held on its device.
#[derive(Clone)]
pub struct GgufWeight {
    q: Arc<QTensor>,
    dims: (usize, usize),
}

impl fmt::Debug for GgufWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GgufWeight({:?} {:?})", self.q.dtype(), self.dims)
    }
}

impl GgufWeight {
    /// Wraps `q` `[out, in]` as stored.
    pub fn new(q: QTensor) -> Result<Self> {
        let dims = q.shape().dims2()?;
        Ok(Self {
            q: Arc::new(q),
            dims,
        })
    }

    /// Wraps a llama Q or K projection `q` of `heads` heads, undoing llama.cpp's row
    /// permutation on the stored rows (each row's blocks hold only that row's values).
    pub fn unpermuted(q: QTensor, heads: usize) -> Result<Self> {
        let (out, _) = q.shape().dims2()?;
        if heads == 0 || out % (2 * heads) != 0 {
            return Err(Error::InvalidConfig {
                source_name: "GGUF".into(),
                reason: format!("a Q/K weight of {out} rows cannot hold {heads} heads"),
            });
        }
        Self::new(reorder_rows(&q, &unpermuted_rows(out, heads))?)
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        self.dims
    }

    /// The file's quantisation of this weight.
    pub fn ggml_dtype(&self) -> GgmlDType {
        self.q.dtype()
    }

    /// Bytes held on the device.
    pub fn size_in_bytes(&self) -> usize {
        self.q.storage_size_in_bytes()
    }

    /// The weight `[out, in]` in `dtype`, computed on its device (in f32, then cast, as
    /// llama.cpp dequantises). The result is a fresh tensor outside any graph.
    pub fn dequantize(&self, dtype: DType) -> candle_core::Result<Tensor> {
        self.q.dequantize(&self.q.device())?.to_dtype(dtype)
    }
}

/// `q` `[out, in]` with its rows in `order` (a permutation of `0..out`), moved as stored bytes.
fn reorder_rows(q: &QTensor, order: &[usize]) -> Result<QTensor> {
    let (out, _) = q.shape().dims2()?;
    let data = q.data()?;
    let row = data.len() / out;
    let mut moved = Vec::with_capacity(data.len());
    for &r in order {
        moved.extend_from_slice(&data[r * row..(r + 1) * row]);
    }
    let device = q.device();
    let storage = QStorage::from_data(Cow::Owned(moved), &device, q.dtype())?;
    Ok(QTensor::new(storage, q.shape().clone())?)
}

/// The source row of each row after undoing llama.cpp's Q/K permutation of `rows` rows in
/// `heads` heads: GGUF stores each head's rows as `(d/2, 2)`, transformers as `(2, d/2)`.
pub fn unpermuted_rows(rows: usize, heads: usize) -> Vec<usize> {
    let half = rows / heads / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                order.push(h * 2 * half + i * 2 + j);
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn weight(out: usize, inp: usize) -> Tensor {
        let values: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        Tensor::from_vec(values, (out, inp), &Device::Cpu).unwrap()
    }

    #[test]
    fn dequantises_as_the_quantised_tensor_does() {
        let w = weight(8, 64);
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let expected = q.dequantize(&Device::Cpu).unwrap();
            let g = GgufWeight::new(q).unwrap();
            assert_eq!(g.dims(), (8, 64));
            assert_eq!(g.ggml_dtype(), dtype);
            let got = g.dequantize(DType::F32).unwrap();
            let diff = (got - &expected).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            // Quantised, not a copy of the dense weight: Q4_1 is 5 bits a weight.
            assert!(g.size_in_bytes() < 8 * 64 * 4 / 3, "{dtype:?}");
        }
    }

    #[test]
    fn reordered_rows_equal_the_rows_of_the_dequantised_weight() {
        let w = weight(8, 64);
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let dense = q.dequantize(&Device::Cpu).unwrap();
        let order = unpermuted_rows(8, 2);
        let g = GgufWeight::unpermuted(q, 2).unwrap();
        let ids = Tensor::new(
            order.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            &Device::Cpu,
        )
        .unwrap();
        let expected = dense.index_select(&ids, 0).unwrap();
        let got = g.dequantize(DType::F32).unwrap();
        assert_eq!(
            got.to_vec2::<f32>().unwrap(),
            expected.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn rows_that_cannot_hold_the_heads_are_refused() {
        let q = QTensor::quantize(&weight(6, 32), GgmlDType::Q8_0).unwrap();
        let err = GgufWeight::unpermuted(q, 2).unwrap_err();
        assert!(err.to_string().contains("cannot hold 2 heads"), "{err}");
    }
}
