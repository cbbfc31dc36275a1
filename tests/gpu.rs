//! The model on a GPU: logits against the transformers/PEFT fixtures, LoRA gradients against the
//! CPU, and dropout masks drawn on the device, in f32, in the GPU's own dtype (bf16 on sm_80+)
//! and in the T4's (f16).
//!
//! They run on a CUDA build (`--features cuda`) with a GPU present; anywhere else each test
//! prints why it skipped and passes. `scripts/gpu_check.sh` runs them on a lent GPU machine.

mod common;

use agentbench_tuning::model::dropout::dropout_mask;
use agentbench_tuning::model::{Decoder, Mode};
use agentbench_tuning::system::{self, compute_dtype, gpu_info};
use candle_core::{DType, Device, Tensor};
use common::parity::{
    adapted_qwen3, expected_on, load_on, max_abs, max_abs_diff, max_diff_on_real_tokens,
};

/// The first GPU, or `None` after saying why the test is skipped.
fn gpu() -> Option<Device> {
    if !cfg!(abt_cuda) {
        eprintln!("skipped: built without CUDA (build with --features cuda to run the GPU tests)");
        return None;
    }
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("skipped: no GPU ({e})");
            None
        }
    }
}

/// The dtypes to test on `device`, each with its tolerance on the fixtures' logits: f32, the
/// device's own dtype, and f16 (a T4's) where the GPU has f16 kernels.
fn dtypes(device: &Device) -> Vec<(DType, f32)> {
    let info = gpu_info(device).unwrap().expect("a GPU");
    println!(
        "GPU: {}, default dtype {:?}",
        info.describe(),
        compute_dtype(device).unwrap()
    );
    let mut out = vec![(DType::F32, 1e-3)];
    if info.has_bf16() {
        out.push((DType::BF16, 0.2));
    }
    if info.has_f16() {
        out.push((DType::F16, 0.05));
    }
    out
}

#[test]
fn logits_on_the_gpu_match_transformers_and_peft() {
    let Some(device) = gpu() else { return };
    for (dtype, tolerance) in dtypes(&device) {
        for (base, adapter) in [
            ("llama", None),
            ("qwen2", None),
            ("qwen3", None),
            ("llama", Some("llama_lora")),
            ("qwen2", Some("qwen2_rslora")),
        ] {
            let mut model = load_on(base, &device, dtype);
            let name = adapter.unwrap_or(base);
            if let Some(adapter) = adapter {
                model
                    .load_adapter(&common::parity::model_fixture(adapter))
                    .unwrap();
            }
            let exp = expected_on(name, &device);
            let logits = model.forward(&exp.batch, Mode::Eval).unwrap();
            assert!(logits.device().is_cuda());
            let diff = max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask);
            println!("{name} in {dtype:?} on the GPU: max |logits - transformers| = {diff:.2e}");
            assert!(
                diff < tolerance,
                "{name} in {dtype:?}: {diff} > {tolerance}"
            );
        }
    }
}

/// The loss of the fixture batch and every LoRA gradient, on the CPU.
fn loss_and_grads(model: &Decoder, device: &Device) -> (f32, Vec<Tensor>) {
    let batch = expected_on("qwen3", device).batch;
    let lp = model.token_logprobs(&batch, Mode::Train).unwrap();
    let loss = (lp.sum_all().unwrap().neg().unwrap() / 10.0).unwrap();
    let grads = model.backward(&loss).unwrap();
    let value = loss
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let grads = model
        .trainable_vars()
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("every LoRA var gets a gradient")
                .to_device(&Device::Cpu)
                .unwrap()
        })
        .collect();
    (value, grads)
}

#[test]
fn lora_gradients_on_the_gpu_match_the_cpu() {
    let Some(device) = gpu() else { return };
    let (cpu_loss, cpu_grads) =
        loss_and_grads(&adapted_qwen3(&Device::Cpu, DType::F32, 0.0), &Device::Cpu);
    for (dtype, _) in dtypes(&device) {
        // Relative to the largest gradient: f32 differs in summation order only.
        let tolerance = if dtype == DType::F32 { 1e-3 } else { 0.1 };
        let (loss, grads) = loss_and_grads(&adapted_qwen3(&device, dtype, 0.0), &device);
        println!("{dtype:?}: loss {loss} on the GPU, {cpu_loss} on the CPU");
        assert!((loss - cpu_loss).abs() <= tolerance * cpu_loss.abs().max(1.0));
        for (g, c) in grads.iter().zip(&cpu_grads) {
            assert_eq!(g.dtype(), DType::F32, "adapter gradients are f32");
            let (diff, scale) = (max_abs_diff(g, c), max_abs(c));
            assert!(
                scale > 0.0 && diff <= tolerance * scale,
                "{dtype:?}: gradient off by {diff} (scale {scale})"
            );
        }
    }
}

#[test]
fn dropout_masks_are_drawn_on_the_gpu_equal_the_cpu_and_repeat_in_the_recomputation() {
    let Some(device) = gpu() else { return };
    for dtype in [DType::F32, DType::F16] {
        let x = Tensor::zeros((3, 257, 129), dtype, &device).unwrap();
        let mask = dropout_mask(&x, 0x5EED, 0.1).unwrap();
        assert!(mask.device().is_cuda(), "drawn on the tensor's own device");
        let on_cpu = dropout_mask(&x.to_device(&Device::Cpu).unwrap(), 0x5EED, 0.1).unwrap();
        assert_eq!(
            max_abs_diff(&mask.to_device(&Device::Cpu).unwrap(), &on_cpu),
            0.0,
            "the GPU's mask is the CPU's, bit for bit"
        );
    }
    // Activation checkpointing recomputes each layer with the masks of its first pass: loss and
    // gradients equal those of the plain pass (two models loaded alike draw the same masks).
    let plain = adapted_qwen3(&device, DType::F32, 0.3);
    let mut ckpt = adapted_qwen3(&device, DType::F32, 0.3);
    ckpt.set_checkpointing(true);
    let (l1, g1) = loss_and_grads(&plain, &device);
    let (l2, g2) = loss_and_grads(&ckpt, &device);
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    for (a, b) in g1.iter().zip(&g2) {
        assert!(max_abs_diff(a, b) <= 1e-4 * max_abs(a).max(1.0));
    }
}

#[test]
fn the_device_and_dtype_are_reported() {
    let Some(device) = gpu() else { return };
    let info = gpu_info(&device).unwrap().expect("a GPU");
    assert!(info.capability >= (5, 0), "{info:?}");
    assert_eq!(system::device_name(&device), "cuda:0");
    let dtype = compute_dtype(&device).unwrap();
    assert_eq!(
        dtype == DType::BF16,
        info.has_bf16(),
        "{info:?} → {dtype:?}"
    );
}
