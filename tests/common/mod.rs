//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use agentbench_tuning::paths;

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
