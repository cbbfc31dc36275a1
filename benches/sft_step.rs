//! candle side of the SFT benchmark: real optimizer steps of the `tiny` profile's trainer on the
//! `tiny` data of phase 01, with the embedded default model (SmolLM2-135M-Instruct).
//!
//! Unlike `lora_step` (one fixed random batch), this times what `abt sft` does: packed rows of
//! real episodes, assistant-only loss, gradient accumulation, clipping, the scheduled AdamW
//! update, activation checkpointing as configured. `--export FILE` writes the exact rows of every
//! step (ids and loss masks) and the configuration, so that `scripts/bench_sft.py` (PyTorch +
//! PEFT) trains on the same tokens; `scripts/bench_sft.sh` runs both and prints the ratio.
//!
//! ```text
//! cargo bench --bench sft_step -- --steps 6 --warmup 1 --export /tmp/rows.json --json
//! ```

mod common;

use agentbench_tuning::chat::Tokenizer;
use agentbench_tuning::config::{Profile, Scale};
use agentbench_tuning::data::build_sft;
use agentbench_tuning::model::Decoder;
use agentbench_tuning::presets::Presets;
use agentbench_tuning::system;
use agentbench_tuning::train::sft_trainer;

struct Args {
    steps: usize,
    warmup: usize,
    export: Option<std::path::PathBuf>,
    json: bool,
    /// Set by `cargo bench`; without it (`cargo test --all-targets`) two short steps check that
    /// the benchmark runs.
    bench: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        steps: 6,
        warmup: 1,
        export: None,
        json: false,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => args.steps = value().parse().expect("--steps N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--export" => args.export = Some(value().into()),
            "--json" => args.json = true,
            "--bench" => args.bench = true, // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let Some(source) = common::default_model_or_skip("sft_step", args.bench) else {
        return;
    };
    let tokenizer = Tokenizer::load(&source).expect("tokenizer");
    let mut data = Presets::resolve(Profile::Tiny, Scale::Full)
        .expect("tiny presets")
        .data;
    let mut config = Presets::resolve(Profile::Tiny, Scale::Full)
        .expect("tiny presets")
        .sft;
    if !args.bench {
        // The smoke run: a handful of short records, two steps.
        data.synthetic_sql = 8;
        data.household = 2;
        data.household_negatives = 0;
        config.max_len = 640;
        config.train.micro_batch = 1;
        config.grad_accum = 1;
    }
    let steps = if args.bench {
        args.warmup + args.steps
    } else {
        2
    };
    config.max_steps = Some(steps);
    config.train.eval_every = 0;
    config.train.save_every = 0;
    let (records, _) = build_sft(&data, Some(&tokenizer)).expect("tiny data");
    let device = system::device().expect("device");
    let model = Decoder::load(
        &source,
        &device,
        system::compute_dtype(&device).expect("dtype"),
    )
    .expect("model");
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut trainer, _) = sft_trainer(
        model,
        &records,
        &tokenizer,
        config.clone(),
        dir.path(),
        true,
    )
    .expect("trainer");
    let per_step = config.grad_accum;
    assert!(
        trainer.batches().len() >= steps * per_step,
        "the tiny data has {} micro-batches, fewer than {steps} steps need",
        trainer.batches().len()
    );
    if let Some(file) = &args.export {
        let examples = trainer.train_examples();
        let rows: Vec<_> = trainer.batches()[..steps * per_step]
            .chunks(per_step)
            .map(|micro| {
                micro
                    .iter()
                    .map(|m| {
                        m.rows
                            .iter()
                            .map(|row| {
                                row.iter()
                                    .map(|&i| {
                                        serde_json::json!({
                                            "ids": examples[i].ids,
                                            "mask": examples[i].mask,
                                        })
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let export = serde_json::json!({
            "config": config,
            "pad_id": tokenizer.pad_token_id(),
            "warmup": args.warmup,
            "steps": rows,
        });
        agentbench_tuning::io::write_json(file, &export).expect("writing the export");
    }
    let metrics = trainer.train(None, |_| {}).expect("training");
    let losses: Vec<f64> = metrics.iter().map(|m| m.loss).collect();
    if !args.bench {
        assert!(losses.iter().all(|l| l.is_finite()), "losses {losses:?}");
        println!("sft_step smoke run: losses {losses:?}");
        return;
    }
    let timed = &metrics[args.warmup..];
    let tokens_per_s = common::median(timed.iter().map(|m| m.tokens_per_s).collect());
    let report = serde_json::json!({
        "impl": "candle",
        "device": system::device_name(&device),
        "threads": candle_core::utils::get_num_threads(),
        "checkpointing": config.train.checkpointing,
        "micro_batch": config.train.micro_batch,
        "grad_accum": config.grad_accum,
        "max_len": config.max_len,
        "records": records.len(),
        "steps": args.steps,
        "warmup": args.warmup,
        "tokens_per_s": tokens_per_s,
        "trained_tokens_per_step": timed.iter().map(|m| m.trained_tokens).sum::<usize>() as f64
            / timed.len() as f64,
        "peak_rss_mb": common::peak_rss_mb(),
        "losses": losses,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
}
