//! candle side of the LoRA training-step benchmark (CPU unless built with `cuda`).
//!
//! One step = forward + causal-LM cross-entropy + backward + AdamW over the LoRA vars, with
//! r 16, alpha 32, dropout 0 on all seven projections. `scripts/bench_lora_step.sh` runs this
//! and `scripts/bench_lora_step.py` (PyTorch + PEFT) on the same machine and prints the ratios.
//!
//! ```text
//! cargo bench --bench lora_step -- --model qwen2-55m --steps 8 --warmup 2 [--checkpoint] [--dtype bf16] [--nf4 | --gguf] --json
//! ```
//!
//! `--nf4` quantises the base projections to NF4 (QLoRA, double quantisation); `--gguf` (smollm2
//! only) keeps them in the GGUF file's own Q4_1 instead of dequantising at load. The JSON reports
//! the peak resident memory of the whole process and of the training steps alone (the peak is
//! reset after the model is built), and the base model's bytes.

use std::time::Instant;

mod common;

use agentbench_tuning::model::{
    Decoder, LoraConfig, Mode, ModelSource, Nf4Config, Padding, Quantization, TokenBatch,
};
use agentbench_tuning::system;
use candle_core::DType;
use candle_nn::Optimizer;

struct Args {
    model: String,
    steps: usize,
    warmup: usize,
    batch: usize,
    seq: usize,
    json: bool,
    /// Weight and activation dtype (`f32`, or `bf16`/`f16` on a GPU).
    dtype: DType,
    /// Activation checkpointing (recompute each layer in the backward pass).
    checkpoint: bool,
    /// NF4 base projections (QLoRA).
    nf4: bool,
    /// Base projections kept in the GGUF file's quantisation (smollm2).
    gguf: bool,
    /// Set by `cargo bench`; without it (`cargo test --all-targets`) a few tiny steps check that
    /// the benchmark runs and the loss falls.
    bench: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: "qwen2-55m".into(),
        steps: 8,
        warmup: 2,
        batch: 4,
        seq: 256,
        json: false,
        dtype: DType::F32,
        checkpoint: false,
        nf4: false,
        gguf: false,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value(),
            "--steps" => args.steps = value().parse().expect("--steps N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--seq" => args.seq = value().parse().expect("--seq N"),
            "--json" => args.json = true,
            "--checkpoint" => args.checkpoint = true,
            "--nf4" => args.nf4 = true,
            "--gguf" => args.gguf = true,
            "--dtype" => args.dtype = common::parse_dtype(&value()),
            "--bench" => args.bench = true, // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let mut args = parse_args();
    if !args.bench {
        args = Args {
            model: "qwen2-tiny".into(),
            steps: 3,
            warmup: 0,
            batch: 2,
            seq: 16,
            json: true,
            dtype: DType::F32,
            checkpoint: true,
            nf4: true,
            gguf: false,
            bench: false,
        };
    }
    let device = system::device().expect("device");
    let mut model = if args.gguf {
        assert_eq!(
            args.model, "smollm2",
            "--gguf needs the GGUF model, smollm2"
        );
        let kept = Some(Quantization::Gguf);
        Decoder::load_with(&ModelSource::default_model(), &device, args.dtype, kept)
            .expect("loading the default model with its Q4_1 projections kept")
    } else {
        common::build(&args.model, &device, args.dtype)
    };
    if args.nf4 {
        model
            .quantize(Nf4Config { double_quant: true })
            .expect("quantising the base");
    }
    let load_peak_mb = common::peak_rss_mb();
    // The heap a quantised model freed stays resident (see `system::tune_allocator`): give it
    // back, as loading with quantisation (`Decoder::load_with`) never holds it, then measure.
    common::trim_heap();
    common::reset_peak_rss();
    model
        .add_lora(&LoraConfig {
            r: 16,
            alpha: 32.0,
            dropout: 0.0,
            ..LoraConfig::default()
        })
        .unwrap();
    model.set_checkpointing(args.checkpoint);
    let vocab = model.config().vocab_size;
    let batch = TokenBatch::pad(
        &common::token_ids(args.batch, args.seq, vocab),
        0,
        Padding::Right,
        &device,
    )
    .unwrap();
    let params = candle_nn::ParamsAdamW {
        lr: 1e-4,
        ..Default::default()
    };
    let mut opt = candle_nn::AdamW::new(model.trainable_vars(), params).unwrap();
    let n_targets = (args.batch * (args.seq - 1)) as f64;
    let (mut losses, mut step_ms, mut fwd_ms, mut bwd_ms, mut opt_ms) =
        (vec![], vec![], vec![], vec![], vec![]);
    for step in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let lp = model.token_logprobs(&batch, Mode::Train).unwrap();
        let loss = (lp.sum_all().unwrap().neg().unwrap() / n_targets).unwrap();
        let loss_value = loss
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let t1 = Instant::now();
        let grads = model.backward(&loss).unwrap();
        device.synchronize().unwrap();
        let t2 = Instant::now();
        opt.step(&grads).unwrap();
        drop(grads);
        device.synchronize().unwrap();
        let t3 = Instant::now();
        losses.push(loss_value);
        if step >= args.warmup {
            fwd_ms.push((t1 - t0).as_secs_f64() * 1e3);
            bwd_ms.push((t2 - t1).as_secs_f64() * 1e3);
            opt_ms.push((t3 - t2).as_secs_f64() * 1e3);
            step_ms.push((t3 - t0).as_secs_f64() * 1e3);
        }
        if !args.json {
            eprintln!(
                "step {step}: loss {loss_value:.5} in {:.0} ms",
                (t3 - t0).as_secs_f64() * 1e3
            );
        }
    }
    let ms = common::median(step_ms);
    let tokens_per_s = (args.batch * args.seq) as f64 / (ms / 1e3);
    let report = serde_json::json!({
        "impl": "candle",
        "model": args.model,
        "device": system::device_name(&device),
        "threads": candle_core::utils::get_num_threads(),
        "checkpointing": args.checkpoint,
        "nf4": args.nf4,
        "gguf": args.gguf,
        "base_mb": model.base_size_in_bytes() as f64 / (1 << 20) as f64,
        "load_peak_rss_mb": load_peak_mb,
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "batch": args.batch,
        "seq": args.seq,
        "params": model.config().num_parameters(),
        "trainable": model.num_trainable(),
        "ms_per_step": ms,
        "forward_ms": common::median(fwd_ms),
        "backward_ms": common::median(bwd_ms),
        "optimizer_ms": common::median(opt_ms),
        "tokens_per_s": tokens_per_s,
        "peak_rss_mb": common::peak_rss_mb(),
        "losses": losses, // every step, warm-up first
    });
    if !args.bench {
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        assert!(
            last < first,
            "the smoke run's loss did not fall: {losses:?}"
        );
        println!("lora_step smoke run: loss {first:.4} -> {last:.4}");
        return;
    }
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    }
}
