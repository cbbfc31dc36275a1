//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use agentbench_tuning::paths;

pub mod parity;

/// A committed fixture under `tests/fixtures/`.
pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// A file fetched at set-up (the default model, the Qwen tokenizers), or `None` when it is
/// absent on a developer machine; under CI or `ABT_REQUIRE_DEFAULT_MODEL` absence fails.
pub fn fetched(path: PathBuf, script: &str) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("ABT_REQUIRE_DEFAULT_MODEL").is_none(),
        "CI must fetch {} (bash scripts/{script})",
        path.display()
    );
    eprintln!(
        "skipped: {} is absent (bash scripts/{script})",
        path.display()
    );
    None
}

/// The embedded default model (SmolLM2-135M-Instruct GGUF), if fetched.
pub fn default_model() -> Option<PathBuf> {
    fetched(paths::default_model_path(), "fetch_default_model.sh")
}

/// The default model (f32, CPU) and its tokenizer, or `None` as for [`default_model`].
pub fn default_decoder() -> Option<(
    agentbench_tuning::model::Decoder,
    agentbench_tuning::chat::Tokenizer,
)> {
    use agentbench_tuning::model::{Decoder, ModelSource};
    let path = default_model()?;
    let source = ModelSource::Gguf(path.clone());
    let model = Decoder::load(&source, &candle_core::Device::Cpu, candle_core::DType::F32).unwrap();
    let tokenizer = agentbench_tuning::chat::Tokenizer::from_gguf(&path).unwrap();
    Some((model, tokenizer))
}

/// A Qwen tokenizer directory fetched by `scripts/fetch_tokenizers.sh` (`qwen3`, `qwen2.5`).
pub fn qwen_tokenizer(name: &str) -> Option<PathBuf> {
    let dir = paths::cache_dir().join("tokenizers").join(name);
    fetched(dir.join("tokenizer.json"), "fetch_tokenizers.sh").map(|_| dir)
}

/// AgentBench's DB Bench dev items (`data/agentbench-dbbench/dev.jsonl`; evaluation data, never
/// trained on).
pub fn dbbench_dev() -> PathBuf {
    paths::dbbench_dev_items()
}

/// A small random Qwen2-shaped model (vocabulary 97, 2 layers, width 32), for the trainers'
/// tests.
pub fn small_model() -> agentbench_tuning::model::Decoder {
    small_model_in(candle_core::DType::F32)
}

/// [`small_model`] with its weights and activations in `dtype`.
#[allow(dead_code)]
pub fn small_model_in(dtype: candle_core::DType) -> agentbench_tuning::model::Decoder {
    let config = agentbench_tuning::model::ModelConfig {
        architecture: agentbench_tuning::model::Architecture::Qwen2,
        vocab_size: 97,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        qkv_bias: true,
        qk_norm: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    agentbench_tuning::model::Decoder::random(config, 3, &candle_core::Device::Cpu, dtype).unwrap()
}

/// A masked random prompt, then a trained answer that echoes its first token and a fixed
/// phrase, then one untrained token.
pub fn echo_examples(n: usize, seed: u64) -> Vec<agentbench_tuning::train::SftExample> {
    let mut rng = agentbench_tuning::rng::Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 4 + rng.below(6);
            let prompt: Vec<u32> = (0..len).map(|_| 3 + rng.below(90) as u32).collect();
            let mut ids = prompt.clone();
            ids.push(1);
            ids.extend([prompt[0], 10, 11, 12, 2]);
            ids.push(3 + rng.below(90) as u32);
            let mut mask = vec![0u8; len + 1];
            mask.extend([1u8; 5]);
            mask.push(0);
            agentbench_tuning::train::SftExample { ids, mask }
        })
        .collect()
}

/// Pairs whose chosen side is such an answer and whose rejected side is random tokens.
pub fn echo_pairs(n: usize, seed: u64) -> Vec<agentbench_tuning::train::DpoExample> {
    let mut rng = agentbench_tuning::rng::Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 4 + rng.below(5);
            let prompt: Vec<u32> = (0..len).map(|_| 3 + rng.below(90) as u32).collect();
            let side = |answer: Vec<u32>, rng: &mut agentbench_tuning::rng::Rng| {
                let mut ids = prompt.clone();
                ids.push(1);
                ids.extend(&answer);
                ids.push(3 + rng.below(90) as u32);
                let mut mask = vec![0u8; len + 1];
                mask.extend(vec![1u8; answer.len()]);
                mask.push(0);
                agentbench_tuning::train::SftExample { ids, mask }
            };
            let chosen = side(vec![prompt[0], 10, 11, 12, 2], &mut rng);
            let random: Vec<u32> = (0..4).map(|_| 3 + rng.below(90) as u32).collect();
            let rejected = side([random, vec![2]].concat(), &mut rng);
            agentbench_tuning::train::DpoExample { chosen, rejected }
        })
        .collect()
}

/// The `tiny` profile's settings at the full scale (`configs/profiles/tiny.toml`).
pub fn tiny() -> agentbench_tuning::presets::Presets {
    agentbench_tuning::presets::Presets::resolve(
        agentbench_tuning::config::Profile::Tiny,
        agentbench_tuning::config::Scale::Full,
    )
    .expect("the tiny profile resolves")
}

/// Files this process holds open in a temporary directory, less those in `before` (SQLite's
/// spilled temp databases are unlinked at once but stay open, as `/var/tmp/… (deleted)`).
pub fn open_temp_files(before: &[String]) -> Vec<String> {
    let temp = std::env::temp_dir().display().to_string();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|t| {
            t.contains("etilqs")
                || t.starts_with("/var/tmp")
                || t.starts_with("/usr/tmp")
                || t.starts_with(&temp)
        })
        .filter(|t| !before.contains(t))
        .collect()
}
