//! candle side of the LoRA training-step benchmark (CPU unless built with `cuda`).
//!
//! One step = forward + causal-LM cross-entropy + backward + AdamW over the LoRA vars, with
//! r 16, alpha 32, dropout 0 on all seven projections. `scripts/bench_lora_step.sh` runs this
//! and `scripts/bench_lora_step.py` (PyTorch + PEFT) on the same machine and prints the ratios.
//!
//! ```text
//! cargo bench --bench lora_step -- --model qwen2-55m --steps 8 --warmup 2 [--checkpoint] [--dtype bf16] --json
//! ```

use std::time::Instant;

use agentbench_tuning::model::{
    Architecture, Decoder, LoraConfig, Mode, ModelConfig, ModelSource, Padding, TokenBatch,
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
            "--dtype" => {
                args.dtype = match value().as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    "f16" => DType::F16,
                    other => panic!("--dtype {other}: use f32, bf16 or f16"),
                }
            }
            "--bench" => args.bench = true, // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn qwen2_shape(
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

fn build(name: &str, device: &candle_core::Device, dtype: DType) -> Decoder {
    match name {
        "qwen2-55m" => Decoder::random(
            qwen2_shape(512, 8, 8, 2, 1408, 32000, false),
            0,
            device,
            DType::F32,
        ),
        "qwen2.5-0.5b" => Decoder::random(
            qwen2_shape(896, 24, 14, 2, 4864, 151_936, true),
            0,
            device,
            DType::F32,
        ),
        "qwen2-tiny" => Decoder::random(
            qwen2_shape(64, 2, 4, 2, 128, 512, false),
            0,
            device,
            DType::F32,
        ),
        "smollm2" => Decoder::load(&ModelSource::default_model(), device, dtype),
        other => panic!("unknown model {other}; use qwen2-55m, smollm2 or qwen2.5-0.5b"),
    }
    .unwrap_or_else(|e| panic!("building {name}: {e}"))
}

/// The benchmark's token ids, reproducible in Python: an LCG over the vocabulary.
fn token_ids(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
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

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
            bench: false,
        };
    }
    let device = system::device().expect("device");
    let mut model = build(&args.model, &device, args.dtype);
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
        &token_ids(args.batch, args.seq, vocab),
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
    let ms = median(step_ms);
    let tokens_per_s = (args.batch * args.seq) as f64 / (ms / 1e3);
    let report = serde_json::json!({
        "impl": "candle",
        "model": args.model,
        "device": system::device_name(&device),
        "threads": candle_core::utils::get_num_threads(),
        "checkpointing": args.checkpoint,
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "batch": args.batch,
        "seq": args.seq,
        "params": model.config().num_parameters(),
        "trainable": model.num_trainable(),
        "ms_per_step": ms,
        "forward_ms": median(fwd_ms),
        "backward_ms": median(bwd_ms),
        "optimizer_ms": median(opt_ms),
        "tokens_per_s": tokens_per_s,
        "peak_rss_mb": peak_rss_mb(),
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
