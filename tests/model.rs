//! The decoder against transformers/PEFT fixtures (see tests/fixtures/model/README.md).
//!
//! Tiny random Llama/Qwen2/Qwen3 models and PEFT adapters were run through transformers once by
//! `scripts/make_model_fixtures.py`; these tests need neither Python nor a network.

use std::collections::HashMap;
use std::path::PathBuf;

use agentbench_tuning::model::{
    BaseWeight, Decoder, LoraConfig, Mode, ModelFiles, ModelSource, Nf4Config, Padding,
    Quantization, Target, TokenBatch,
};
use candle_core::{D, DType, Device, Tensor};
use candle_nn::Optimizer;

/// Tolerance for f32 logits of the tiny models against transformers.
const TINY_TOL: f32 = 1e-4;

mod common;

use common::parity::{Expected, max_abs, max_abs_diff, max_diff_on_real_tokens};

fn fixture(name: &str) -> PathBuf {
    common::parity::model_fixture(name)
}

fn load(name: &str) -> Decoder {
    load_as(name, DType::F32)
}

fn load_as(name: &str, dtype: DType) -> Decoder {
    common::parity::load_on(name, &Device::Cpu, dtype)
}

fn expected(name: &str) -> Expected {
    common::parity::expected_on(name, &Device::Cpu)
}

fn check_architecture(name: &str) {
    let model = load(name);
    let exp = expected(name);
    let logits = model.forward(&exp.batch, Mode::Eval).unwrap();
    let diff = max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask);
    println!("{name}: max |logits - transformers| = {diff:.2e}");
    assert!(
        diff < TINY_TOL,
        "{name}: logits differ from transformers by {diff}"
    );
}

#[test]
fn llama_with_llama3_rope_scaling_matches_transformers() {
    check_architecture("llama");
}

#[test]
fn qwen2_with_qkv_bias_and_tied_embeddings_matches_transformers() {
    let model = load("qwen2");
    assert!(model.config().qkv_bias && model.config().tie_word_embeddings);
    check_architecture("qwen2");
}

#[test]
fn qwen3_with_qk_norm_and_wide_heads_matches_transformers() {
    let model = load("qwen3");
    assert!(model.config().qk_norm);
    assert_ne!(
        model.config().head_dim * model.config().num_heads,
        model.config().hidden_size
    );
    check_architecture("qwen3");
}

fn check_peft_adapter(base: &str, adapter: &str) -> Decoder {
    let mut model = load(base);
    let config = model.load_adapter(&fixture(adapter)).unwrap();
    let exp = expected(adapter);
    let logits = model.forward(&exp.batch, Mode::Eval).unwrap();
    let diff = max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask);
    println!(
        "{adapter}: r={} scale={} max |logits - PEFT| = {diff:.2e}",
        config.r,
        config.scale()
    );
    assert!(
        diff < TINY_TOL,
        "{adapter}: logits differ from PEFT by {diff}"
    );
    // Adapters off is exactly the base model.
    let base_logits = load(base).forward(&exp.batch, Mode::Eval).unwrap();
    let reference = model.forward(&exp.batch, Mode::Reference).unwrap();
    let off = max_diff_on_real_tokens(&reference, &base_logits, &exp.mask);
    assert_eq!(off, 0.0, "adapters off must give the base model's logits");
    assert!(max_diff_on_real_tokens(&logits, &base_logits, &exp.mask) > 1e-2);
    model
}

#[test]
fn peft_lora_adapter_on_all_projections_matches_peft() {
    let model = check_peft_adapter("llama", "llama_lora");
    assert_eq!(model.lora_config().unwrap().targets, Target::ALL.to_vec());
}

#[test]
fn peft_rslora_adapter_on_some_projections_matches_peft() {
    let model = check_peft_adapter("qwen2", "qwen2_rslora");
    let config = model.lora_config().unwrap();
    assert!(config.use_rslora);
    assert_eq!(config.targets, vec![Target::Q, Target::V, Target::Down]);
}

#[test]
fn adapters_round_trip_through_the_peft_layout() {
    let mut model = load("qwen3");
    model
        .add_lora(&LoraConfig {
            r: 4,
            alpha: 8.0,
            seed: 11,
            ..LoraConfig::default()
        })
        .unwrap();
    // Fresh B is zero; give it values so the round trip is meaningful.
    for (i, var) in model.trainable_vars().iter().enumerate() {
        let t = (var.as_tensor().randn_like(0.0, 0.1).unwrap() + i as f64 * 1e-3).unwrap();
        var.set(&t).unwrap();
    }
    let exp = expected("qwen3");
    let before = model.forward(&exp.batch, Mode::Eval).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model
        .save_adapter(dir.path(), "tests/fixtures/model/qwen3")
        .unwrap();
    let names: Vec<String> =
        candle_core::safetensors::load(dir.path().join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_keys()
            .collect();
    assert!(
        names.contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".to_string())
    );
    let mut reloaded = load("qwen3");
    let config = reloaded.load_adapter(dir.path()).unwrap();
    assert_eq!(&config.targets, &model.lora_config().unwrap().targets);
    let after = reloaded.forward(&exp.batch, Mode::Eval).unwrap();
    assert_eq!(max_diff_on_real_tokens(&before, &after, &exp.mask), 0.0);
}

/// Gives every adapter of `model` random values (fresh B is zero).
fn randomize_adapters(model: &Decoder, scale: f64) {
    for var in model.trainable_vars() {
        let t = var.as_tensor().randn_like(0.0, scale).unwrap();
        var.set(&t).unwrap();
    }
}

#[test]
fn merged_then_new_adapters_save_as_one_stacked_adapter_for_the_base() {
    merge_then_stack(None);
    // Merging with nothing attached is an error, not a silent no-op.
    let mut plain = load("qwen3");
    assert!(plain.merge_lora().is_err());
}

/// Merges one adapter, adds a second on top, saves both as one stacked adapter for the base and
/// reloads it on a fresh base: dense, or with `nf4` quantised, where the merged adapter stays
/// beside the NF4 weights. Returns the saved adapter's directory and the logits with both.
fn merge_then_stack(nf4: Option<Nf4Config>) -> (tempfile::TempDir, Tensor) {
    let base = || {
        let mut model = load("qwen3");
        if let Some(config) = nf4 {
            model.quantize(config).unwrap();
        }
        model
    };
    let exp = expected("qwen3");
    let mut model = base();
    let first = LoraConfig {
        r: 4,
        alpha: 8.0,
        seed: 3,
        targets: vec![Target::Q, Target::V, Target::Down],
        ..LoraConfig::default()
    };
    model.add_lora(&first).unwrap();
    randomize_adapters(&model, 0.1);
    let with_first = model.forward(&exp.batch, Mode::Eval).unwrap();
    let first_vars = model.trainable_vars();
    model.merge_lora().unwrap();
    assert!(model.lora_config().is_none());
    assert_eq!(model.merged_lora().map(|(r, _)| r), Some(4));
    // The merged model is the new reference.
    let merged = model.forward(&exp.batch, Mode::Reference).unwrap();
    let diff = max_diff_on_real_tokens(&with_first, &merged, &exp.mask);
    assert!(diff < 1e-4, "merging changed the logits by {diff}");
    // Merged weights are constants: no gradient reaches the old adapters. (If they kept their
    // graph, every later forward pass would record and hold all its activations.)
    let grads = merged.sum_all().unwrap().backward().unwrap();
    for var in &first_vars {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "merged weight tracks an adapter"
        );
    }

    let second = LoraConfig {
        r: 2,
        alpha: 6.0,
        seed: 5,
        targets: vec![Target::Q, Target::K, Target::Up],
        ..LoraConfig::default()
    };
    model.add_lora(&second).unwrap();
    randomize_adapters(&model, 0.1);
    let both = model.forward(&exp.batch, Mode::Eval).unwrap();
    assert!(max_diff_on_real_tokens(&both, &merged, &exp.mask) > 1e-3);

    let dir = tempfile::tempdir().unwrap();
    model
        .save_adapter(dir.path(), "tests/fixtures/model/qwen3")
        .unwrap();
    let mut reloaded = base();
    let config = reloaded.load_adapter(dir.path()).unwrap();
    assert_eq!((config.r, config.alpha), (6, 6.0));
    assert_eq!(
        config.targets,
        vec![Target::Q, Target::K, Target::V, Target::Up, Target::Down]
    );
    let after = reloaded.forward(&exp.batch, Mode::Eval).unwrap();
    let diff = max_diff_on_real_tokens(&both, &after, &exp.mask);
    assert!(diff < 1e-4, "stacked adapter differs by {diff}");
    (dir, both)
}

#[test]
fn merged_export_reloads_as_a_plain_model_with_the_same_logits() {
    let mut model = load("llama");
    model.load_adapter(&fixture("llama_lora")).unwrap();
    let exp = expected("llama_lora");
    let dir = tempfile::tempdir().unwrap();
    model.save_merged(dir.path()).unwrap();
    let merged = Decoder::load(
        &ModelSource::Dir(dir.path().to_path_buf()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert!(merged.lora_config().is_none());
    let logits = merged.forward(&exp.batch, Mode::Eval).unwrap();
    let diff = max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask);
    assert!(diff < TINY_TOL, "merged model differs from PEFT by {diff}");
}

/// Loss used by the gradient tests: a weighted sum of next-token log-probs (a training pass,
/// the one that builds a graph; the fixtures' adapters have no dropout).
fn weighted_logprob(model: &Decoder, batch: &TokenBatch) -> Tensor {
    let lp = model.token_logprobs(batch, Mode::Train).unwrap();
    let (b, t) = lp.dims2().unwrap();
    let w: Vec<f32> = (0..b * t).map(|i| 1.0 + (i % 5) as f32 * 0.25).collect();
    let w = Tensor::from_vec(w, (b, t), &Device::Cpu)
        .unwrap()
        .to_dtype(lp.dtype())
        .unwrap();
    (lp * w).unwrap().sum_all().unwrap()
}

#[test]
fn every_lora_var_gets_a_gradient_that_matches_finite_differences() {
    // f64 activations so central differences are accurate; adapters stay f32 as in training.
    let mut model = load_as("llama", DType::F64);
    model.load_adapter(&fixture("llama_lora")).unwrap();
    assert_lora_gradients_match_finite_differences(&model, &expected("llama_lora").batch);
}

/// Every LoRA var of `model` gets a nonzero gradient of [`weighted_logprob`], and sampled
/// entries equal central differences.
fn assert_lora_gradients_match_finite_differences(model: &Decoder, batch: &TokenBatch) {
    let loss = weighted_logprob(model, batch);
    let grads = loss.backward().unwrap();
    let vars = model.trainable_vars();
    assert_eq!(vars.len(), 2 * 7 * 2);
    for var in &vars {
        let g = grads
            .get(var.as_tensor())
            .expect("every LoRA var must receive a gradient");
        assert!(max_abs(g) > 0.0, "a LoRA var got an all-zero gradient");
    }
    // Entries of A and B are O(0.2); a step of 1e-3 is exact enough in f32 and small enough
    // that the O(eps²) error of central differences stays far below the tolerance.
    let eps = 1e-3f32;
    let mut checked = 0;
    for (vi, var) in vars.iter().enumerate().step_by(5) {
        let original = var.as_tensor().copy().unwrap();
        let flat = original.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let analytic = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for idx in [0, flat.len() / 2, flat.len() - 1] {
            let eval = |delta: f32| {
                let mut v = flat.clone();
                v[idx] += delta;
                var.set(&Tensor::from_vec(v, original.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                weighted_logprob(model, batch)
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            var.set(&original).unwrap();
            let a = analytic[idx] as f64;
            let err = (a - numeric).abs() / (1e-3 + a.abs().max(numeric.abs()));
            assert!(
                err < 1e-3,
                "var {vi} entry {idx}: autograd {a} vs finite difference {numeric}"
            );
            checked += 1;
        }
    }
    println!("{checked} LoRA gradient entries match central differences");
}

#[test]
fn an_adamw_step_moves_only_the_adapters() {
    let mut model = load("qwen2");
    model
        .add_lora(&LoraConfig {
            r: 2,
            alpha: 4.0,
            dropout: 0.0,
            ..LoraConfig::default()
        })
        .unwrap();
    let base_before: HashMap<String, Vec<f32>> = model
        .named_base_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    let vars = model.trainable_vars();
    let before: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().unwrap()).collect();
    // No weight decay: with decay AdamW would shrink A even where its gradient is zero.
    let params = candle_nn::ParamsAdamW {
        lr: 1e-2,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(vars.clone(), params).unwrap();
    let batch = expected("qwen2").batch;
    let loss = weighted_logprob(&model, &batch).neg().unwrap();
    let grads = loss.backward().unwrap();
    // With B = 0 only B has a gradient at the first step; PEFT behaves the same.
    for (i, var) in vars.iter().enumerate() {
        let g = max_abs(grads.get(var.as_tensor()).unwrap());
        assert_eq!(
            g > 0.0,
            i % 2 == 1,
            "var {i}: only B gets a gradient while B is zero"
        );
    }
    opt.step(&grads).unwrap();
    // Base weights did not move (B moved, so merged weights differ: compare with adapters removed).
    let mut base = model.clone();
    base.remove_lora();
    for (name, t) in base.named_base_tensors().unwrap() {
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            base_before[&name],
            "{name} moved"
        );
    }
    let moved = vars
        .iter()
        .zip(&before)
        .filter(|(v, b)| max_abs_diff(v.as_tensor(), b) > 0.0)
        .count();
    assert_eq!(
        moved,
        vars.len() / 2,
        "every B moved, no A yet (A's gradient is zero while B is zero)"
    );
    // After one step B is non-zero, so now every var receives a gradient.
    let grads = weighted_logprob(&model, &batch).backward().unwrap();
    for var in &vars {
        let g = max_abs(grads.get(var.as_tensor()).unwrap());
        assert!(g > 0.0);
    }
}

#[test]
fn train_mode_applies_lora_dropout_and_eval_is_deterministic() {
    let mut model = load("llama");
    model.load_adapter(&fixture("llama_lora")).unwrap();
    let mut config = model.lora_config().unwrap().clone();
    config.dropout = 0.5;
    let dir = tempfile::tempdir().unwrap();
    model.save_adapter(dir.path(), "llama").unwrap();
    let text = std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        text.replace("\"lora_dropout\": 0.0", "\"lora_dropout\": 0.5"),
    )
    .unwrap();
    model.load_adapter(dir.path()).unwrap();
    assert_eq!(model.lora_config().unwrap().dropout, 0.5);
    let batch = expected("llama").batch;
    let e1 = model.forward(&batch, Mode::Eval).unwrap();
    let e2 = model.forward(&batch, Mode::Eval).unwrap();
    let t1 = model.forward(&batch, Mode::Train).unwrap();
    assert_eq!(max_abs_diff(&e1, &e2), 0.0);
    assert!(max_abs_diff(&e1, &t1) > 1e-4);
}

#[test]
fn logprobs_are_log_softmax_of_logits_at_the_next_token() {
    let model = load("qwen3");
    let batch = TokenBatch::pad(
        &[vec![3, 9, 27, 81], vec![5, 7]],
        0,
        Padding::Right,
        &Device::Cpu,
    )
    .unwrap();
    let lp = model
        .token_logprobs(&batch, Mode::Eval)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let logits = model.forward(&batch, Mode::Eval).unwrap();
    let ids = [[3u32, 9, 27, 81], [5, 7, 0, 0]];
    for (row, len) in [(0usize, 4usize), (1, 2)] {
        for t in 0..3 {
            if t + 1 < len {
                let l = logits
                    .get(row)
                    .unwrap()
                    .get(t)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let max = l.iter().cloned().fold(f32::MIN, f32::max);
                let lse = max + l.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
                let expected = l[ids[row][t + 1] as usize] - lse;
                assert!((lp[row][t] - expected).abs() < 1e-5);
            } else {
                assert_eq!(lp[row][t], 0.0, "targets past the end are masked");
            }
        }
    }
    // Right padding does not change a row's log-probs.
    let alone = TokenBatch::pad(&[vec![5, 7]], 0, Padding::Right, &Device::Cpu).unwrap();
    let lp_alone = model
        .token_logprobs(&alone, Mode::Eval)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert!((lp_alone[0][0] - lp[1][0]).abs() < 1e-5);
    let mask = Tensor::new(&[[0f32, 1., 1.], [1., 0., 0.]], &Device::Cpu).unwrap();
    let seq = model
        .sequence_logprobs(&batch, &mask, Mode::Eval)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!((seq[0] - (lp[0][1] + lp[0][2])).abs() < 1e-5);
    assert!((seq[1] - lp[1][0]).abs() < 1e-6);
    let _ = D::Minus1;
}

#[test]
fn shape_mismatches_and_bad_ids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("llama/config.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut value = value;
    value["intermediate_size"] = 80.into();
    std::fs::write(dir.path().join("config.json"), value.to_string()).unwrap();
    std::fs::copy(
        fixture("llama/model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = Decoder::load(
        &ModelSource::Dir(dir.path().into()),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight")
            && err.contains("[80, 32]")
            && err.contains("[64, 32]"),
        "{err}"
    );
    let model = load("llama");
    let batch = TokenBatch::pad(&[vec![1, 500]], 0, Padding::Right, &Device::Cpu).unwrap();
    let err = model.forward(&batch, Mode::Eval).unwrap_err().to_string();
    assert!(err.contains("500") && err.contains("128"), "{err}");
    let err = ModelSource::Gguf("/nonexistent/m.gguf".into())
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/m.gguf") && err.contains("fetch_default_model.sh"),
        "{err}"
    );
}

#[test]
fn hub_models_load_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--tiny--llama");
    let snapshot = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama").join(f), snapshot.join(f)).unwrap();
    }
    let files = ModelFiles::from_hub_cache(cache.path(), "tiny/llama", "main", true).unwrap();
    assert_eq!(files.weights, vec![snapshot.join("model.safetensors")]);
    let model = Decoder::from_files(&files, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(model.config().num_layers, 2);
    let err = ModelFiles::from_hub_cache(cache.path(), "tiny/absent", "main", true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

/// A fixture's i64 token ids as a one-row batch.
fn one_row(ids: &Tensor) -> TokenBatch {
    let ids: Vec<u32> = ids
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    TokenBatch::pad(&[ids], 0, Padding::Right, &Device::Cpu).unwrap()
}

/// The embedded default model, dequantised from its Q4_1 GGUF, against transformers loading
/// the same file (`gguf_file=`, which also dequantises to f32).
#[test]
fn default_gguf_model_matches_transformers() {
    let Some(path) = common::default_model() else {
        return;
    };
    let model = Decoder::load(&ModelSource::Gguf(path), &Device::Cpu, DType::F32).unwrap();
    let c = model.config();
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.vocab_size
        ),
        (30, 576, 9, 3, 49152)
    );
    assert!(c.tie_word_embeddings);
    let t =
        candle_core::safetensors::load(fixture("smollm2_gguf/expected.safetensors"), &Device::Cpu)
            .unwrap();
    let batch = one_row(&t["input_ids"]);
    let n = batch.dims().1;
    let logits = model
        .forward(&batch, Mode::Eval)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let last_diff = max_abs_diff(&logits.get(n - 1).unwrap(), &t["logits_last"]);
    let probe_ids = t["probe_ids"].to_dtype(DType::U32).unwrap();
    let probe = logits.index_select(&probe_ids, 1).unwrap();
    let probe_diff = max_abs_diff(&probe, &t["logits_probe"]);
    let max = logits.max_keepdim(1).unwrap();
    let lse = ((logits
        .broadcast_sub(&max)
        .unwrap()
        .exp()
        .unwrap()
        .sum_keepdim(1)
        .unwrap()
        .log()
        .unwrap()
        + &max)
        .unwrap())
    .squeeze(1)
    .unwrap();
    let lse_diff = max_abs_diff(&lse, &t["logsumexp"]);
    let argmax: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
    let expected_argmax: Vec<u32> = t["argmax"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&i| i as u32)
        .collect();
    println!(
        "SmolLM2 GGUF vs transformers over {n} tokens: last-position logits {last_diff:.2e}, probe {probe_diff:.2e}, logsumexp {lse_diff:.2e}"
    );
    // Logits are O(10) after 30 layers of dequantised weights; f32 summation order differs.
    assert!(last_diff < 2e-3 && probe_diff < 2e-3 && lse_diff < 2e-3);
    assert_eq!(argmax, expected_argmax);
}

/// The default model with its projections kept in the file's own Q4_1 (llama's Q/K rows
/// un-permuted as stored) equals the model dequantised at load, in log-probs and in the
/// adapters' gradients, with its projections in a sixth of the memory.
#[test]
fn gguf_quantised_projections_equal_the_model_dequantised_at_load() {
    let Some(path) = common::default_model() else {
        return;
    };
    let source = ModelSource::Gguf(path);
    let kept = Some(Quantization::Gguf);
    let mut dense = Decoder::load(&source, &Device::Cpu, DType::F32).unwrap();
    let mut quantised = Decoder::load_with(&source, &Device::Cpu, DType::F32, kept).unwrap();
    assert_eq!(quantised.quantization(), kept);
    for target in [Target::Q, Target::K, Target::Down] {
        match quantised.projection(3, target).unwrap().weight() {
            BaseWeight::Gguf(w) => assert_eq!(
                format!("{:?}", w.ggml_dtype()),
                "Q4_1",
                "{target:?} is stored as the file stores it"
            ),
            other => panic!("{target:?} was not kept quantised: {other:?}"),
        }
    }
    let (full, small) = (dense.base_size_in_bytes(), quantised.base_size_in_bytes());
    println!(
        "SmolLM2 base: {} MB dense, {} MB kept as Q4_1",
        full >> 20,
        small >> 20
    );
    assert!(small < full * 2 / 3, "{small} vs {full}");
    let t =
        candle_core::safetensors::load(fixture("smollm2_gguf/expected.safetensors"), &Device::Cpu)
            .unwrap();
    let batch = one_row(&t["input_ids"]);
    let reference = dense.token_logprobs(&batch, Mode::Reference).unwrap();
    let got = quantised.token_logprobs(&batch, Mode::Reference).unwrap();
    let diff = max_abs_diff(&got, &reference);
    println!("log-probs of the Q4_1-kept model within {diff:.1e} of the dequantised one");
    assert!(diff < 1e-4, "{diff}");
    // The same adapter on both: the gradients through the quantised base are the dense ones.
    let config = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..LoraConfig::default()
    };
    dense.add_lora(&config).unwrap();
    quantised.add_lora(&config).unwrap();
    randomize_adapters(&dense, 0.05);
    for (from, to) in dense
        .trainable_vars()
        .iter()
        .zip(&quantised.trainable_vars())
    {
        to.set(from.as_tensor()).unwrap();
    }
    let (gd, gq) = (
        weighted_logprob(&dense, &batch).backward().unwrap(),
        weighted_logprob(&quantised, &batch).backward().unwrap(),
    );
    for (a, b) in dense
        .trainable_vars()
        .iter()
        .zip(&quantised.trainable_vars())
    {
        let (ga, gb) = (
            gd.get(a.as_tensor()).unwrap(),
            gq.get(b.as_tensor()).unwrap(),
        );
        let scale = max_abs(ga);
        assert!(scale > 0.0 && max_abs_diff(ga, gb) <= 1e-4 * scale.max(1.0));
    }
    // A model with safetensors weights has no GGUF quantisation to keep.
    let err = Decoder::load_with(
        &ModelSource::Dir(fixture("llama")),
        &Device::Cpu,
        DType::F32,
        kept,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nf4") && err.contains(".gguf"), "{err}");
}

#[test]
fn activation_checkpointing_gives_the_same_loss_and_lora_gradients() {
    // Dropout on: the recomputed layers must see the masks of the first pass. Two separately
    // loaded models start their pass counters together, so they draw the same masks.
    let load_with_dropout = || common::parity::adapted_qwen3(&Device::Cpu, DType::F32, 0.3);
    let plain = load_with_dropout();
    let mut ckpt = load_with_dropout();
    ckpt.set_checkpointing(true);
    let batch = expected("qwen3").batch;
    let loss = |m: &Decoder| {
        let lp = m.token_logprobs(&batch, Mode::Train).unwrap();
        (lp.sum_all().unwrap().neg().unwrap() / 10.0).unwrap()
    };
    let (l1, l2) = (loss(&plain), loss(&ckpt));
    let value = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    assert!(
        (value(&l1) - value(&l2)).abs() < 1e-6,
        "{} vs {}",
        value(&l1),
        value(&l2)
    );
    let g1 = plain.backward(&l1).unwrap();
    let g2 = ckpt.backward(&l2).unwrap();
    let (v1, v2) = (plain.trainable_vars(), ckpt.trainable_vars());
    for (a, b) in v1.iter().zip(&v2) {
        let ga = g1.get(a.as_tensor()).expect("plain gradient");
        let gb = g2
            .get(b.as_tensor())
            .expect("every LoRA var gets a gradient under checkpointing");
        let diff = max_abs_diff(ga, gb);
        let scale = max_abs(ga);
        assert!(
            scale > 0.0 && diff <= 1e-5 * scale.max(1.0),
            "gradient differs by {diff} (scale {scale})"
        );
    }
    // A second training pass draws new dropout masks.
    assert_ne!(value(&loss(&plain)), value(&l1));
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let tensors =
        candle_core::safetensors::load(fixture("llama/model.safetensors"), &Device::Cpu).unwrap();
    let (mut first, mut second) = (HashMap::new(), HashMap::new());
    let mut weight_map = serde_json::Map::new();
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let (shard, file) = if i % 2 == 0 {
            (&mut first, "model-00001-of-00002.safetensors")
        } else {
            (&mut second, "model-00002-of-00002.safetensors")
        };
        weight_map.insert(name.clone(), file.into());
        shard.insert(name, t);
    }
    candle_core::safetensors::save(&first, dir.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&second, dir.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::copy(fixture("llama/config.json"), dir.path().join("config.json")).unwrap();
    let files = ModelFiles::from_dir(dir.path()).unwrap();
    assert_eq!(files.weights.len(), 2);
    let model = Decoder::from_files(&files, &Device::Cpu, DType::F32).unwrap();
    let exp = expected("llama");
    let logits = model.forward(&exp.batch, Mode::Eval).unwrap();
    assert!(max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask) < TINY_TOL);
}

#[test]
fn half_precision_weights_and_activations_track_f32_and_train_f32_adapters() {
    // bf16 is the dtype of sm_80+ GPUs and f16 the T4's; on CPU they run the plain candle
    // compositions the GPU uses, so every op of a training step has a path in each.
    for (dtype, tolerance) in [(DType::BF16, 0.2), (DType::F16, 0.05)] {
        let mut model = load_as("llama", dtype);
        model.load_adapter(&fixture("llama_lora")).unwrap();
        let exp = expected("llama_lora");
        let logits = model
            .forward(&exp.batch, Mode::Eval)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let diff = max_diff_on_real_tokens(&logits, &exp.logits, &exp.mask);
        println!("{dtype:?} llama+LoRA: max |logits - PEFT f32| = {diff:.3}");
        // bf16 keeps 8 bits of mantissa (transformers + PEFT in bf16 on this fixture are 0.129
        // off), f16 11.
        assert!(
            diff < tolerance,
            "{dtype:?} logits differ from f32 by {diff}"
        );
        let loss = model
            .token_logprobs(&exp.batch, Mode::Train)
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(loss.dtype(), DType::F32, "the loss is computed in f32");
        let grads = model.backward(&loss).unwrap();
        for var in model.trainable_vars() {
            assert_eq!(
                var.dtype(),
                DType::F32,
                "adapters stay f32 under a {dtype:?} model"
            );
            let g = grads
                .get(var.as_tensor())
                .expect("gradient reaches every f32 adapter");
            assert!(max_abs(g) > 0.0);
        }
    }
}

/// The fixture model with its projections quantised to NF4 (QLoRA), and the same model with the
/// dequantised weights stored dense: the reference the quantised model must equal.
fn quantised_and_dequantised(name: &str, config: Nf4Config) -> (Decoder, Decoder) {
    let mut quantised = load(name);
    quantised.quantize(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    quantised.save_merged(dir.path()).unwrap();
    let source = ModelSource::Dir(dir.path().to_path_buf());
    let dense = Decoder::load(&source, &Device::Cpu, DType::F32).unwrap();
    (quantised, dense)
}

#[test]
fn qlora_logits_equal_the_model_with_dequantised_weights() {
    for (name, adapter, config) in [
        ("llama", Some("llama_lora"), Nf4Config::default()),
        ("qwen2", None, Nf4Config { double_quant: true }),
        ("qwen3", None, Nf4Config::default()),
    ] {
        let (mut quantised, mut dense) = quantised_and_dequantised(name, config);
        assert!(matches!(
            quantised.projection(0, Target::Q).unwrap().weight(),
            BaseWeight::Nf4(_)
        ));
        let mode = match adapter {
            Some(a) => {
                quantised.load_adapter(&fixture(a)).unwrap();
                dense.load_adapter(&fixture(a)).unwrap();
                Mode::Eval
            }
            None => Mode::Reference,
        };
        let exp = expected(adapter.unwrap_or(name));
        let got = quantised.forward(&exp.batch, mode).unwrap();
        let want = dense.forward(&exp.batch, mode).unwrap();
        let diff = max_diff_on_real_tokens(&got, &want, &exp.mask);
        let off = max_diff_on_real_tokens(&got, &exp.logits, &exp.mask);
        println!("{name}: NF4 vs dequantised {diff:.1e}; vs full precision {off:.1e}");
        assert!(diff < 1e-5, "{name}: NF4 model differs by {diff}");
        // The weights really are quantised (these tiny random models are not a measure of its
        // error: see `nf4_keeps_the_default_models_predictions`).
        assert!(off > 1e-3, "{name}: NF4 vs full precision {off}");
    }
}

#[test]
fn lora_gradients_through_an_nf4_base_equal_finite_differences() {
    let mut model = load_as("llama", DType::F64);
    model.quantize(Nf4Config::default()).unwrap();
    model.load_adapter(&fixture("llama_lora")).unwrap();
    assert_lora_gradients_match_finite_differences(&model, &expected("llama_lora").batch);
}

#[test]
fn checkpointed_qlora_gives_the_same_loss_and_gradients() {
    let quantised = || {
        let mut m = common::parity::adapted_qwen3(&Device::Cpu, DType::F32, 0.0);
        m.quantize(Nf4Config { double_quant: true }).unwrap();
        m
    };
    let plain = quantised();
    let mut ckpt = quantised();
    ckpt.set_checkpointing(true);
    let batch = expected("qwen3").batch;
    let loss = |m: &Decoder| {
        m.token_logprobs(&batch, Mode::Train)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let (l1, l2) = (loss(&plain), loss(&ckpt));
    let value = |t: &Tensor| t.to_scalar::<f32>().unwrap();
    assert!((value(&l1) - value(&l2)).abs() < 1e-5);
    let (g1, g2) = (plain.backward(&l1).unwrap(), ckpt.backward(&l2).unwrap());
    for (a, b) in plain.trainable_vars().iter().zip(&ckpt.trainable_vars()) {
        let (ga, gb) = (
            g1.get(a.as_tensor()).unwrap(),
            g2.get(b.as_tensor()).unwrap(),
        );
        let scale = max_abs(ga);
        assert!(scale > 0.0 && max_abs_diff(ga, gb) <= 1e-5 * scale.max(1.0));
    }
}

#[test]
fn an_nf4_model_merges_adapters_beside_its_weights_and_saves_them_for_the_full_base() {
    let mut model = load("qwen3");
    let full_size = model.base_size_in_bytes();
    model.quantize(Nf4Config::default()).unwrap();
    println!("base {full_size} → {} bytes", model.base_size_in_bytes());
    // Projections go from 32 to 4.5 bits per weight; embeddings and norms stay f32.
    assert!(model.base_size_in_bytes() < full_size * 3 / 4);
    assert!(model.quantize(Nf4Config::default()).is_err());
    let (dir, both) = merge_then_stack(Some(Nf4Config::default()));
    // The stacked adapter loads on the full-precision base like any adapter (PEFT's QLoRA
    // adapters too); its logits differ there by the quantisation.
    let mut full = load("qwen3");
    full.load_adapter(dir.path()).unwrap();
    let on_full = full.forward(&expected("qwen3").batch, Mode::Eval).unwrap();
    assert_eq!(on_full.dims(), both.dims());
}

/// The embedded default model with NF4 projections against transformers with bitsandbytes' NF4
/// round trip on every projection (`scripts/make_nf4_fixtures.py`).
#[test]
fn nf4_default_model_matches_bitsandbytes() {
    let Some(path) = common::default_model() else {
        return;
    };
    let source = ModelSource::Gguf(path);
    let t = candle_core::safetensors::load(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nf4/smollm2_nf4.safetensors"
        ),
        &Device::Cpu,
    )
    .unwrap();
    // With double quantisation bitsandbytes' CPU kernel rounds a few scales per tensor to a
    // neighbouring 8-bit code (see `model::nf4`), which this small, sensitive model amplifies.
    for (double_quant, key, tolerance) in [
        (false, "logprobs_nf4", 1e-3),
        (true, "logprobs_nf4_dq", 0.15),
    ] {
        let nf4 = Nf4Config { double_quant };
        let quantization = Some(Quantization::Nf4(nf4));
        let model = Decoder::load_with(&source, &Device::Cpu, DType::F32, quantization).unwrap();
        assert_eq!(model.quantization(), quantization);
        let batch = one_row(&t["input_ids"]);
        let got = model
            .token_logprobs(&batch, Mode::Reference)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let full = t["logprobs"]
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let mean = got.mean_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = max_abs_diff(&got, &t[key]);
        println!(
            "SmolLM2 with NF4 projections ({key}): next-token log-probs within {diff:.1e} of bitsandbytes \
         (mean {mean:.3}; f32 model {full:.3}); base {} MB",
            model.base_size_in_bytes() >> 20
        );
        assert!(
            diff < tolerance,
            "NF4 model differs from bitsandbytes by {diff}"
        );
        let theirs = t[key].mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(
            (mean - theirs).abs() < 0.02,
            "mean log-prob {mean} vs {theirs}"
        );
    }
}
