//! candle side of the GRPO benchmark: real steps of the `tiny` profile's multi-turn GRPO trainer
//! with the embedded default model (SmolLM2-135M-Instruct), optionally on top of an SFT adapter.
//!
//! Each step plays `--prompts` phase-02 prompts `group_size` times in their environments
//! (sampled, batched: the rollout tokens/s) and then learns from them (advantages, reference
//! pass, policy pass, clipped loss with k3 KL, backward, clipping, AdamW: the update time).
//! `--export FILE` writes every step's episodes (token ids, policy masks, scores) and the
//! configuration, so that `scripts/bench_grpo.py` (PyTorch + PEFT) makes the same updates on the
//! same tokens; `scripts/bench_grpo.sh` runs both and prints the ratio.
//!
//! ```text
//! cargo bench --bench grpo_step -- --steps 2 --warmup 1 --adapter runs/x/03_sft/adapter \
//!     --export /tmp/grpo.json --json
//! ```

mod common;

use agentbench_tuning::chat::Tokenizer;
use agentbench_tuning::config::{Profile, Scale};
use agentbench_tuning::model::Decoder;
use agentbench_tuning::presets::Presets;
use agentbench_tuning::prompts::build_prompts;
use agentbench_tuning::system;
use agentbench_tuning::train::{GrpoConfig, GrpoTrainer, group_advantages};

struct Args {
    steps: usize,
    warmup: usize,
    prompts: usize,
    adapter: Option<std::path::PathBuf>,
    export: Option<std::path::PathBuf>,
    json: bool,
    /// Set by `cargo bench`; without it (`cargo test --all-targets`) one short step checks that
    /// the benchmark runs.
    bench: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        steps: 2,
        warmup: 1,
        prompts: 2,
        adapter: None,
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
            "--prompts" => args.prompts = value().parse().expect("--prompts N"),
            "--adapter" => args.adapter = Some(value().into()),
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
    let Some(source) = common::default_model_or_skip("grpo_step", args.bench) else {
        return;
    };
    let tokenizer = Tokenizer::load(&source).expect("tokenizer");
    let mut config = Presets::resolve(Profile::Tiny, Scale::Full)
        .expect("tiny presets")
        .grpo;
    let (steps, per_step) = if args.bench {
        (args.warmup + args.steps, args.prompts)
    } else {
        // The smoke run: one step of one prompt played twice, short turns.
        config.group_size = 2;
        config.max_new_tokens = 24;
        config.db_turns = 1;
        config.household_turns = 2;
        (1, 1)
    };
    config.steps = steps;
    config.prompts_per_step = per_step;
    config.train.eval_every = 0;
    config.train.save_every = 0;

    // Prompts spread evenly over the tiny prompt set (DB difficulties and household types).
    let all = build_prompts(
        &Presets::resolve(Profile::Tiny, Scale::Full)
            .expect("tiny presets")
            .prompts,
    )
    .expect("tiny prompts");
    let wanted = steps * per_step;
    let picked: Vec<_> = (0..wanted)
        .map(|k| all[k * all.len() / wanted].clone())
        .collect();

    let device = system::device().expect("device");
    let mut model = Decoder::load(
        &source,
        &device,
        system::compute_dtype(&device).expect("dtype"),
    )
    .expect("model");
    if let Some(adapter) = &args.adapter {
        model.merge_adapter(adapter).expect("merging the adapter");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut trainer = GrpoTrainer::new(
        model,
        picked.clone(),
        Vec::new(),
        config.clone(),
        &tokenizer,
        dir.path(),
    )
    .expect("trainer");

    let mut exported = Vec::new();
    let mut metrics = Vec::new();
    for prompts in picked.chunks(per_step) {
        let start = std::time::Instant::now();
        let played = trainer.rollouts(prompts).expect("rollouts");
        let rollout_s = start.elapsed().as_secs_f64();
        exported.push(
            played
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "tokens": p.episode.tokens,
                        "mask": p.episode.policy_mask,
                        "score": p.score.score,
                    })
                })
                .collect::<Vec<_>>(),
        );
        let m = trainer
            .learn(prompts, &played, rollout_s)
            .expect("GRPO update");
        if args.bench && !args.json {
            println!("{}", m.line(steps));
        }
        metrics.push(m);
    }
    if !args.bench {
        let m = &metrics[0];
        assert!(m.loss.is_finite() && m.kl.is_finite(), "{m:?}");
        println!("grpo_step smoke run: {}", m.line(1));
        return;
    }
    if let Some(file) = &args.export {
        let export = serde_json::json!({
            "config": config,
            "pad_id": tokenizer.pad_token_id(),
            "warmup": args.warmup,
            "steps": exported,
        });
        agentbench_tuning::io::write_json(file, &export).expect("writing the export");
    }
    // Tokens through the update: the whole length of every trained episode.
    let trained_tokens: Vec<f64> = exported
        .iter()
        .map(|episodes| trained_sequence_tokens(episodes, &config))
        .collect();
    let timed = args.warmup..steps;
    // The timed steps differ several-fold in size, so the rate is over all of them together,
    // not a median of per-step rates.
    let update_s: Vec<f64> = metrics[timed.clone()].iter().map(|m| m.train_s).collect();
    let update_tokens_per_s =
        trained_tokens[timed.clone()].iter().sum::<f64>() / update_s.iter().sum::<f64>().max(1e-9);
    let report = serde_json::json!({
        "impl": "candle",
        "device": system::device_name(&device),
        "threads": candle_core::utils::get_num_threads(),
        "checkpointing": config.train.checkpointing,
        "micro_batch": config.train.micro_batch,
        "group_size": config.group_size,
        "prompts_per_step": per_step,
        "adapter": args.adapter.as_ref().map(|a| a.display().to_string()),
        "steps": args.steps,
        "warmup": args.warmup,
        "rollout_tokens_per_s": common::median(
            metrics[timed.clone()].iter().map(|m| m.rollout_tokens_per_s).collect()
        ),
        "rollout_s": common::median(metrics[timed.clone()].iter().map(|m| m.rollout_s).collect()),
        "update_s_steps": update_s,
        "update_tokens_per_s": update_tokens_per_s,
        "trained_tokens": trained_tokens,
        "skipped_groups": metrics.iter().map(|m| m.skipped_groups).collect::<Vec<_>>(),
        "losses": metrics.iter().map(|m| m.loss).collect::<Vec<_>>(),
        "kl": metrics.iter().map(|m| m.kl).collect::<Vec<_>>(),
        "peak_rss_mb": common::peak_rss_mb(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    }
}

/// Tokens of the episodes an update trained on: the whole length of those in groups whose
/// scores differ and that hold a token of the policy (as [`GrpoTrainer::learn`] keeps them).
fn trained_sequence_tokens(episodes: &[serde_json::Value], config: &GrpoConfig) -> f64 {
    let scores: Vec<f64> = episodes
        .iter()
        .filter_map(|e| e["score"].as_f64())
        .collect();
    let groups =
        group_advantages(&scores, config.group_size, config.advantage).expect("advantages");
    let count = |e: &serde_json::Value, key: &str, one: bool| {
        e[key].as_array().map_or(0, |v| {
            v.iter().filter(|x| !one || x.as_u64() == Some(1)).count()
        })
    };
    episodes
        .iter()
        .enumerate()
        .filter(|&(i, e)| !groups.skipped[i / config.group_size] && count(e, "mask", true) > 0)
        .map(|(_, e)| count(e, "tokens", false))
        .sum::<usize>() as f64
}
