//! candle side of the greedy-generation benchmark (CPU unless built with `cuda`).
//!
//! One rep = `generate` of `batch` prompts of `prompt` LCG token ids (the same ids as the
//! Python side) for exactly `new` tokens (stop ids disabled), prefill included.
//! `scripts/bench_generate.sh` runs this and `scripts/bench_generate.py` (transformers
//! `generate`) on the same machine and prints the ratios.
//!
//! ```text
//! cargo bench --bench generate -- --model smollm2 --batch 8 --prompt 128 --new 64 --reps 3 --json
//! ```

mod common;

use std::time::Instant;

use agentbench_tuning::chat::Tokenizer;
use agentbench_tuning::generate::{GenerateOptions, generate};
use agentbench_tuning::{paths, system};
use candle_core::DType;

struct Args {
    model: String,
    batch: usize,
    prompt: usize,
    new: usize,
    reps: usize,
    warmup: usize,
    json: bool,
    dtype: DType,
    /// Set by `cargo bench`; without it (`cargo test --all-targets`) a tiny run checks that the
    /// benchmark works.
    bench: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: "smollm2".into(),
        batch: 1,
        prompt: 128,
        new: 64,
        reps: 3,
        warmup: 1,
        json: false,
        dtype: DType::F32,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value(),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--prompt" => args.prompt = value().parse().expect("--prompt N"),
            "--new" => args.new = value().parse().expect("--new N"),
            "--reps" => args.reps = value().parse().expect("--reps N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--dtype" => args.dtype = common::parse_dtype(&value()),
            "--json" => args.json = true,
            "--bench" => args.bench = true, // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A tokenizer for decoding: the model's own for smollm2, Qwen2.5's (when fetched) for the
/// 152k-vocabulary Qwen shapes, SmolLM2's (whose ids cover the 32k range) otherwise. Only text
/// decoding uses it.
fn tokenizer(model: &str) -> Tokenizer {
    let qwen = paths::cache_dir().join("tokenizers/qwen2.5");
    if (model.starts_with("qwen2.5") || model.starts_with("qwen3"))
        && qwen.join("tokenizer.json").is_file()
    {
        return Tokenizer::from_json_files(&qwen.join("tokenizer.json"), None).unwrap();
    }
    Tokenizer::from_gguf(&paths::default_model_path())
        .unwrap_or_else(|e| panic!("{e} (bash scripts/fetch_default_model.sh)"))
}

fn main() {
    let mut args = parse_args();
    if !args.bench {
        args = Args {
            model: "qwen2-tiny".into(),
            batch: 2,
            prompt: 8,
            new: 4,
            reps: 1,
            warmup: 0,
            json: true,
            dtype: DType::F32,
            bench: false,
        };
    }
    let device = system::device().expect("device");
    let model = common::build(&args.model, &device, args.dtype);
    let vocab = model.config().vocab_size;
    let prompts = common::token_ids(args.batch, args.prompt, vocab);
    let tok = if args.bench || paths::default_model_path().is_file() {
        tokenizer(&args.model)
    } else {
        println!("generate smoke run skipped: no tokenizer (bash scripts/fetch_default_model.sh)");
        return;
    };
    let options = GenerateOptions {
        stop_token_ids: vec![u32::MAX],
        ..GenerateOptions::greedy(args.new)
    };
    let prefill_only = GenerateOptions {
        max_new_tokens: 1,
        ..options.clone()
    };
    let (mut seconds, mut prefill_ms) = (Vec::new(), Vec::new());
    let mut first_ids = Vec::new();
    for rep in 0..args.warmup + args.reps {
        let t0 = Instant::now();
        let out = generate(&model, &tok, &prompts, &options).unwrap();
        device.synchronize().unwrap();
        let t1 = Instant::now();
        generate(&model, &tok, &prompts, &prefill_only).unwrap();
        device.synchronize().unwrap();
        let t2 = Instant::now();
        assert!(out.iter().all(|g| g.ids.len() == args.new));
        first_ids = out[0].ids.iter().take(16).copied().collect();
        if rep >= args.warmup {
            seconds.push((t1 - t0).as_secs_f64());
            prefill_ms.push((t2 - t1).as_secs_f64() * 1e3);
        }
        if !args.json {
            eprintln!("rep {rep}: {:.3} s", (t1 - t0).as_secs_f64());
        }
    }
    let median = common::median(seconds.clone());
    let report = serde_json::json!({
        "impl": "candle",
        "model": args.model,
        "device": system::device_name(&device),
        "threads": candle_core::utils::get_num_threads(),
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "batch": args.batch,
        "prompt": args.prompt,
        "new": args.new,
        "seconds_median": median,
        "seconds_all": seconds,
        "tokens_per_s": (args.batch * args.new) as f64 / median,
        "prefill_ms": common::median(prefill_ms),
        "peak_rss_mb": common::peak_rss_mb(),
        "first_ids": first_ids,
    });
    if !args.bench {
        println!("generate smoke run: {report}");
        return;
    }
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
}
