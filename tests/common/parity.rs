//! The transformers/PEFT model fixtures and the comparisons the model tests make with them, on
//! any device (the CPU tests in `model.rs`, the GPU tests in `gpu.rs`).
#![allow(dead_code)]

use std::path::PathBuf;

use agentbench_tuning::model::{Decoder, LoraConfig, ModelSource, TokenBatch};
use candle_core::{DType, Device, Tensor};

/// A model fixture directory (`llama`, `qwen3`, `llama_lora`, ...).
pub fn model_fixture(name: &str) -> PathBuf {
    super::fixture("model").join(name)
}

/// A fixture model loaded on `device` in `dtype`.
pub fn load_on(name: &str, device: &Device, dtype: DType) -> Decoder {
    Decoder::load(&ModelSource::Dir(model_fixture(name)), device, dtype).unwrap()
}

/// The qwen3 fixture on `device` in `dtype` with a rank-4 adapter (all seven projections) whose
/// values are offset from their initialisation, so that B is not zero and every adapter value
/// changes the output.
pub fn adapted_qwen3(device: &Device, dtype: DType, dropout: f32) -> Decoder {
    let mut model = load_on("qwen3", device, dtype);
    model
        .add_lora(&LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout,
            seed: 5,
            ..LoraConfig::default()
        })
        .unwrap();
    for (i, var) in model.trainable_vars().iter().enumerate() {
        let v = (var.as_tensor().ones_like().unwrap() * (0.01 * (i % 7 + 1) as f64)).unwrap();
        var.set(&(var.as_tensor() + v).unwrap()).unwrap();
    }
    model
}

/// Largest |x| of a tensor, as f32.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest |a - b|.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}

/// A fixture's batch, its padding mask and transformers' logits (on the CPU).
pub struct Expected {
    /// The fixture's token ids and mask as a batch on the requested device.
    pub batch: TokenBatch,
    /// 1 for real tokens, 0 for padding, per row.
    pub mask: Vec<Vec<i64>>,
    /// transformers' f32 logits `[batch, seq, vocab]`.
    pub logits: Tensor,
}

/// The expected outputs of fixture `name`, with the batch on `device`.
pub fn expected_on(name: &str, device: &Device) -> Expected {
    let t = candle_core::safetensors::load(
        model_fixture(name).join("expected.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = t["input_ids"].to_vec2::<i64>().unwrap();
    let mask = t["attention_mask"].to_vec2::<i64>().unwrap();
    let batch = TokenBatch::from_parts(
        ids.iter().flatten().map(|&i| i as u32).collect(),
        mask.iter().flatten().map(|&m| m as u8).collect(),
        ids.len(),
        device,
    )
    .unwrap();
    // The fixture's explicit position ids are what TokenBatch derives from the mask.
    let positions = t["position_ids"].to_vec2::<i64>().unwrap();
    let ours = batch.positions().unwrap().to_vec2::<u32>().unwrap();
    for (p, o) in positions.iter().flatten().zip(ours.iter().flatten()) {
        assert_eq!(*p as u32, *o);
    }
    Expected {
        batch,
        mask,
        logits: t["logits"].clone(),
    }
}

/// Largest |a - b| over the real (non-pad) positions of `[batch, seq, vocab]` logits, compared
/// on the CPU in f32.
pub fn max_diff_on_real_tokens(a: &Tensor, b: &Tensor, mask: &[Vec<i64>]) -> f32 {
    let to_cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let (a, b) = (to_cpu(a), to_cpu(b));
    let mut worst = 0f32;
    for (row, m) in mask.iter().enumerate() {
        for (pos, &real) in m.iter().enumerate() {
            if real == 1 {
                let x = a.get(row).unwrap().get(pos).unwrap();
                let y = b.get(row).unwrap().get(pos).unwrap();
                worst = worst.max(max_abs_diff(&x, &y));
            }
        }
    }
    worst
}
