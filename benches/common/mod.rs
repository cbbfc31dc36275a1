//! What the benchmarks share: the benchmark models, reproducible token ids, measurements.
#![allow(dead_code)]

use agentbench_tuning::model::{Architecture, Decoder, ModelConfig, ModelSource};
use candle_core::DType;

/// A Qwen2-shaped configuration (q/k/v bias, rope theta 1e6).
pub fn qwen2_shape(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    ffn: usize,
    vocab: usize,
    tied: bool,
) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen2,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: None,
        max_position_embeddings: 4096,
        tie_word_embeddings: tied,
        qkv_bias: true,
        qk_norm: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// `shape` as Qwen3 has it: q/k norms, no q/k/v bias, an explicit head size.
pub fn as_qwen3(shape: ModelConfig, head_dim: usize) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen3,
        head_dim,
        qkv_bias: false,
        qk_norm: true,
        ..shape
    }
}

/// The benchmark models' names, for `--model`.
pub const MODELS: &str = "qwen2-tiny, qwen2-55m, smollm2, qwen2.5-0.5b, qwen3-4b, qwen2.5-7b, \
                          qwen2.5-7b-4l (the 7B shape with 4 layers)";

/// A benchmark model by name, in `dtype`: random Qwen shapes, or the embedded default model.
///
/// The small shapes draw their weights from the seeded host generator (the same model every
/// run); the full-size ones (`qwen3-4b`, `qwen2.5-7b`, `qwen2.5-7b-4l`: Qwen3-4B-Instruct-2507
/// and Qwen2.5-7B-Instruct's shapes) on the device, where drawing billions of values is fast.
pub fn build(name: &str, device: &candle_core::Device, dtype: DType) -> Decoder {
    let small = |config| Decoder::random(config, 0, device, dtype);
    let large = |config| Decoder::random_on_device(config, device, dtype);
    let qwen25_7b = |layers| qwen2_shape(3584, layers, 28, 4, 18944, 152_064, false);
    match name {
        "qwen2-55m" => small(qwen2_shape(512, 8, 8, 2, 1408, 32000, false)),
        "qwen2.5-0.5b" => small(qwen2_shape(896, 24, 14, 2, 4864, 151_936, true)),
        "qwen2-tiny" => small(qwen2_shape(64, 2, 4, 2, 128, 512, false)),
        "qwen3-4b" => large(as_qwen3(
            qwen2_shape(2560, 36, 32, 8, 9728, 151_936, true),
            128,
        )),
        "qwen2.5-7b" => large(qwen25_7b(28)),
        "qwen2.5-7b-4l" => large(qwen25_7b(4)),
        "smollm2" => Decoder::load(&ModelSource::default_model(), device, dtype),
        other => panic!("unknown model {other}; use one of {MODELS}"),
    }
    .unwrap_or_else(|e| panic!("building {name}: {e}"))
}

/// The benchmark's token ids, reproducible in Python: an LCG over the vocabulary.
pub fn token_ids(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut state: u64 = 12345;
    (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                    (state % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

/// Peak resident memory of this process (VmHWM), MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak resident memory (VmHWM) to the current one (Linux: `/proc/self/clear_refs`),
/// so that [`peak_rss_mb`] then measures what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`), so the resident size
/// is what is live.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The CPU model and its SIMD flags, as `/proc/cpuinfo` says (benchmarks record it beside
/// their numbers: gemm's speed depends on AVX2 against AVX-512).
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = [
        "avx512f",
        "avx512bw",
        "avx512_bf16",
        "avx2",
        "fma",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    format!(
        "{} ({})",
        field("model name").unwrap_or_else(|| "unknown CPU".into()),
        if have.is_empty() {
            "no AVX".to_string()
        } else {
            have.join(", ")
        }
    )
}

/// The median (upper middle for even lengths).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A dtype from its name: `f32`, `bf16` or `f16`.
pub fn parse_dtype(name: &str) -> DType {
    match name {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => panic!("--dtype {other}: use f32, bf16 or f16"),
    }
}

/// The embedded default model's source, or `None` (after saying so) when a smoke run (`bench`
/// false: `cargo test --all-targets`) finds it absent; a real benchmark run needs it.
pub fn default_model_or_skip(bench_name: &str, bench: bool) -> Option<ModelSource> {
    let source = ModelSource::default_model();
    let ModelSource::Gguf(path) = &source else {
        unreachable!("the default model is a GGUF file")
    };
    if !bench && !path.exists() {
        println!(
            "{bench_name} smoke run skipped: no default model (bash scripts/fetch_default_model.sh)"
        );
        return None;
    }
    Some(source)
}
