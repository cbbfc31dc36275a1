//! candle side of the matmul benchmark: the f32 products a model's training step and prefill
//! make (projections forward and backward, LoRA A/B, an output-head chunk), timed one by one.
//!
//! `scripts/bench_matmul.sh` runs this and `scripts/bench_matmul.py` (PyTorch) on the same
//! shapes and reports GFLOP/s side by side with the CPU's SIMD flags.
//!
//! ```text
//! cargo bench --bench matmul -- --model smollm2 --tokens 1024 --reps 10 --json
//! ```

use std::time::Instant;

mod common;

use candle_core::{Device, Tensor};

/// `(name, m, n, k)` of `[m, k] · [n, k]ᵀ` (`x Wᵀ`), or of `[m, k] · [k, n]` when the name ends
/// in "backward" (`grad · W`), for a model of this shape at `tokens` rows.
fn shapes(model: &str, tokens: usize) -> Vec<(String, usize, usize, usize)> {
    // hidden, ffn, kv width, vocab
    let (h, f, kv, vocab) = match model {
        "smollm2" => (576, 1536, 192, 49_152),
        "qwen2.5-0.5b" => (896, 4864, 128, 151_936),
        other => panic!("--model {other}: use smollm2 or qwen2.5-0.5b"),
    };
    let r = 16;
    let head_rows = (16 << 20) / vocab;
    vec![
        ("q/o projection".into(), tokens, h, h),
        ("k/v projection".into(), tokens, kv, h),
        ("gate/up projection".into(), tokens, f, h),
        ("down projection".into(), tokens, h, f),
        ("gate/up backward".into(), tokens, h, f),
        ("down backward".into(), tokens, f, h),
        ("lora A r16".into(), tokens, r, h),
        ("lora B r16".into(), tokens, f, r),
        ("output head chunk".into(), head_rows, vocab, h),
    ]
}

fn main() {
    let mut model = "smollm2".to_string();
    let (mut tokens, mut reps, mut json, mut bench) = (1024, 10, false, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = value(),
            "--tokens" => tokens = value().parse().expect("--tokens N"),
            "--reps" => reps = value().parse().expect("--reps N"),
            "--json" => json = true,
            "--bench" => bench = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if !bench {
        // smoke run under `cargo test --all-targets`
        (tokens, reps) = (16, 1);
    }
    agentbench_tuning::system::tune_allocator();
    let dev = Device::Cpu;
    let mut rows = Vec::new();
    for (name, m, n, k) in shapes(&model, tokens) {
        let x = Tensor::ones((m, k), candle_core::DType::F32, &dev).expect("x");
        let backward = name.ends_with("backward");
        let w = if backward {
            Tensor::ones((k, n), candle_core::DType::F32, &dev)
        } else {
            Tensor::ones((n, k), candle_core::DType::F32, &dev)
        }
        .expect("w");
        let run = || {
            let start = Instant::now();
            let y = if backward {
                x.matmul(&w)
            } else {
                x.matmul(&w.t().expect("transpose"))
            }
            .expect("matmul");
            assert_eq!(y.dims(), [m, n]);
            start.elapsed().as_secs_f64()
        };
        run();
        let secs = common::median((0..reps.max(1)).map(|_| run()).collect());
        let gflops = 2.0 * (m * n * k) as f64 / secs / 1e9;
        if !json {
            println!(
                "{name:20} {m:5} x {n:6} x {k:5}: {:8.3} ms, {gflops:6.1} GFLOP/s",
                secs * 1e3
            );
        }
        rows.push(serde_json::json!({"name": name, "m": m, "n": n, "k": k,
                                     "ms": secs * 1e3, "gflops": gflops}));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"model": model, "tokens": tokens, "rows": rows,
                               "threads": candle_core::utils::get_num_threads(),
                               "cpu": common::cpu_description()})
        );
    }
}
