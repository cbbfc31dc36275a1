//! candle side of the attention benchmark: causal attention forward + backward alone.
//!
//! `--path fused` is the tiled kernel (`model::attention::attention`), `--path composition`
//! the plain composition the decoder used before it (scores, masked softmax, weighted sum).
//! `scripts/bench_attention.sh` runs each length in its own process (so the peak RSS is that
//! configuration's) against PyTorch's `scaled_dot_product_attention`
//! (`scripts/bench_attention.py`) on the same shapes.
//!
//! ```text
//! cargo bench --bench attention -- --path fused --seq 2048 --heads 14 --kv-heads 2 --head-dim 64 --json
//! ```

use std::sync::Arc;
use std::time::Instant;

mod common;

use agentbench_tuning::model::AttentionMask;
use agentbench_tuning::model::attention::{attention, attention_unfused};
use candle_core::{Device, Tensor, Var};

struct Args {
    path: String,
    seq: usize,
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    reps: usize,
    warmup: usize,
    json: bool,
    bench: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        path: "fused".into(),
        seq: 2048,
        batch: 1,
        heads: 14,
        kv_heads: 2,
        head_dim: 64,
        reps: 5,
        warmup: 1,
        json: false,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--path" => args.path = value(),
            "--seq" => args.seq = value().parse().expect("--seq N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--heads" => args.heads = value().parse().expect("--heads N"),
            "--kv-heads" => args.kv_heads = value().parse().expect("--kv-heads N"),
            "--head-dim" => args.head_dim = value().parse().expect("--head-dim N"),
            "--reps" => args.reps = value().parse().expect("--reps N"),
            "--warmup" => args.warmup = value().parse().expect("--warmup N"),
            "--json" => args.json = true,
            "--bench" => args.bench = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if !args.bench {
        // smoke run under `cargo test --all-targets`
        (args.seq, args.reps, args.warmup) = (130, 1, 0);
    }
    args
}

/// Seeded values in [−1, 1): the inputs are the same every run.
fn values(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = agentbench_tuning::rng::Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 * 2.0 - 1.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("input tensor")
}

fn main() {
    let args = parse_args();
    // as when a model is built (the setting every training run has)
    agentbench_tuning::system::tune_allocator();
    let (b, t, d) = (args.batch, args.seq, args.head_dim);
    let q = Var::from_tensor(&values(&[b, args.heads, t, d], 1)).expect("q");
    let k = Var::from_tensor(&values(&[b, args.kv_heads, t, d], 2)).expect("k");
    let v = Var::from_tensor(&values(&[b, args.kv_heads, t, d], 3)).expect("v");
    let w = values(&[b, args.heads, t, d], 4);
    let spans = (0..b)
        .flat_map(|_| (0..t).map(|i| (0, i as u32 + 1)))
        .collect();
    let mask = Arc::new(AttentionMask::from_spans(b, t, t, spans, &Device::Cpu).expect("mask"));
    let scale = 1.0 / (d as f64).sqrt();
    let step = || {
        let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let start = Instant::now();
        let y = match args.path.as_str() {
            "fused" => attention(qt, kt, vt, &mask, scale),
            "composition" => attention_unfused(qt, kt, vt, &mask, scale),
            other => panic!("--path {other}: use fused or composition"),
        }
        .expect("attention forward");
        let loss = (&y * &w).and_then(|x| x.sum_all()).expect("loss");
        let forward = start.elapsed().as_secs_f64();
        let grads = loss.backward().expect("attention backward");
        let total = start.elapsed().as_secs_f64();
        assert!(grads.get(q.as_tensor()).is_some() && grads.get(k.as_tensor()).is_some());
        (
            forward * 1e3,
            total * 1e3,
            loss.to_scalar::<f32>().expect("loss value"),
        )
    };
    for _ in 0..args.warmup {
        step();
    }
    let runs: Vec<(f64, f64, f32)> = (0..args.reps.max(1)).map(|_| step()).collect();
    let forward = common::median(runs.iter().map(|r| r.0).collect());
    let total = common::median(runs.iter().map(|r| r.1).collect());
    let threads = candle_core::utils::get_num_threads();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "path": args.path, "seq": t, "batch": b, "heads": args.heads,
                "kv_heads": args.kv_heads, "head_dim": d, "forward_ms": forward,
                "forward_backward_ms": total, "peak_rss_mb": common::peak_rss_mb(),
                "loss": runs[0].2, "threads": threads, "cpu": common::cpu_description(),
            })
        );
    } else {
        println!(
            "attention {} b {b} t {t} heads {}/{} d {d}: forward {forward:.1} ms, forward+backward {total:.1} ms, peak RSS {:.0} MB ({threads} threads)",
            args.path,
            args.heads,
            args.kv_heads,
            common::peak_rss_mb()
        );
    }
}
