//! Golden curves: a few steps of SFT, DPO and GRPO on fixed seeds give the numbers recorded in
//! `tests/golden/*.json` (every metric but timings and memory, and a checksum of the trained
//! values). They pin the trainers' behaviour across refactors.
//!
//! The tolerance is 1e-5 relative: the sums inside matrix products run in f32, and a different
//! thread count or instruction set (AVX2 against AVX-512) orders them differently. On the
//! machine and thread count that wrote the files the numbers agree bit for bit; the test prints
//! the largest deviation it saw. `ABT_BLESS_GOLDEN=1` rewrites the files.

mod common;

use std::path::PathBuf;

use agentbench_tuning::env::Protocol;
use agentbench_tuning::model::{Decoder, LoraConfig};
use agentbench_tuning::prompts::held_out_prompts;
use agentbench_tuning::train::{
    DpoConfig, DpoTrainer, GrpoConfig, GrpoTrainer, SftConfig, SftTrainer, TrainArgs,
};
use candle_core::DType;
use serde_json::Value;

/// Fields that measure the machine, not the method.
const TIMINGS: [&str; 5] = [
    "tokens_per_s",
    "memory_mb",
    "rollout_s",
    "rollout_tokens_per_s",
    "train_s",
];

/// The trained values, summed and squared-summed var by var in f64.
fn checksum(model: &Decoder) -> Value {
    let sums: Vec<[f64; 2]> = model
        .trainable_vars()
        .iter()
        .map(|v| {
            let values = v
                .as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            [
                values.iter().sum::<f64>(),
                values.iter().map(|x| x * x).sum::<f64>(),
            ]
        })
        .collect();
    serde_json::to_value(sums).unwrap()
}

/// Metrics lines without their timings (and without the `skip` fields).
fn lines<M: serde::Serialize>(metrics: &[M], skip: &[&str]) -> Value {
    Value::Array(
        metrics
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).unwrap();
                if let Some(object) = v.as_object_mut() {
                    for key in TIMINGS.iter().chain(skip) {
                        object.remove(*key);
                    }
                }
                v
            })
            .collect(),
    )
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

/// Compares `got` with the recorded values within the relative tolerance, naming the first
/// place they differ; returns the largest relative deviation.
fn compare(path: &str, got: &Value, want: &Value) -> f64 {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let deviation = (a - b).abs() / b.abs().max(1.0);
            assert!(
                deviation <= 1e-5,
                "{path}: {a} where the golden file has {b}"
            );
            deviation
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            a.iter()
                .zip(b)
                .enumerate()
                .map(|(i, (a, b))| compare(&format!("{path}[{i}]"), a, b))
                .fold(0.0, f64::max)
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys().cloned().collect::<std::collections::BTreeSet<_>>()
            };
            assert_eq!(keys(a), keys(b), "{path}: fields");
            a.iter()
                .map(|(k, v)| compare(&format!("{path}.{k}"), v, &b[k]))
                .fold(0.0, f64::max)
        }
        _ => {
            assert_eq!(got, want, "{path}");
            0.0
        }
    }
}

fn check(name: &str, got: Value) {
    let path = golden_path(name);
    if std::env::var_os("ABT_BLESS_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let deviation = compare(name, &got, &want);
    println!("{name}: largest relative deviation from the golden file {deviation:e}");
}

#[test]
fn sft_follows_its_golden_curve() {
    let config = SftConfig {
        train: TrainArgs {
            lora: LoraConfig {
                r: 8,
                alpha: 16.0,
                dropout: 0.1,
                ..LoraConfig::default()
            },
            learning_rate: 5e-3,
            micro_batch: 2,
            warmup_ratio: 0.2,
            eval_every: 2,
            save_every: 3,
            checkpointing: false,
            ..common::tiny().sft.train
        },
        grad_accum: 2,
        max_len: 40,
        max_steps: Some(6),
        ..common::tiny().sft
    };
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = SftTrainer::new(
        common::small_model(),
        common::echo_examples(24, 1),
        common::echo_examples(4, 2),
        config,
        0,
        dir.path(),
    )
    .unwrap();
    let metrics = trainer.train(None, |_| {}).unwrap();
    assert_eq!(metrics.len(), 6);
    check(
        "sft",
        serde_json::json!({
            "metrics": lines(&metrics, &[]),
            "trained": checksum(trainer.model()),
        }),
    );
}

#[test]
fn dpo_follows_its_golden_curve() {
    let config = DpoConfig {
        train: TrainArgs {
            lora: LoraConfig {
                r: 8,
                alpha: 16.0,
                dropout: 0.1,
                ..LoraConfig::default()
            },
            learning_rate: 1e-2,
            micro_batch: 2,
            warmup_ratio: 0.2,
            eval_every: 2,
            save_every: 3,
            checkpointing: false,
            ..common::tiny().dpo.train
        },
        grad_accum: 2,
        max_len: 40,
        epochs: 1,
        max_steps: Some(6),
        ..common::tiny().dpo
    };
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = DpoTrainer::new(
        common::small_model(),
        common::echo_pairs(12, 5),
        common::echo_pairs(4, 6),
        config,
        0,
        dir.path(),
    )
    .unwrap();
    let metrics = trainer.train(None, |_| {}).unwrap();
    assert_eq!(metrics.len(), 6);
    check(
        "dpo",
        serde_json::json!({
            "metrics": lines(&metrics, &[]),
            "trained": checksum(trainer.model()),
        }),
    );
}

/// Two GRPO steps on real rollouts of the default model, whose grades are overridden so that
/// each group has a winner (the untrained model solves nothing): two updates a step, so the
/// ratio, its clipping and the KL all move.
#[test]
fn grpo_follows_its_golden_curve() {
    let Some((model, tokenizer)) = common::default_decoder() else {
        return;
    };
    let config = GrpoConfig {
        train: TrainArgs {
            micro_batch: 2,
            learning_rate: 2e-4,
            eval_every: 1,
            save_every: 1,
            ..common::tiny().grpo.train
        },
        group_size: 2,
        prompts_per_step: 1,
        rollout_batch: 2,
        max_new_tokens: 16,
        db_turns: 2,
        household_turns: 2,
        max_context: 1536,
        steps: 2,
        iterations: 2,
        held_out_eval: true,
        temperature: 1.0,
        ..common::tiny().grpo
    };
    let prompts = held_out_prompts(0, 1, Protocol::Text, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = GrpoTrainer::new(
        model,
        prompts.clone(),
        held_out_prompts(0, 1, Protocol::Text, false).unwrap(),
        config,
        &tokenizer,
        dir.path(),
    )
    .unwrap();
    let mut metrics = Vec::new();
    trainer.evaluate().unwrap();
    for _ in 0..2 {
        let mut played = trainer.rollouts(&prompts).unwrap();
        for (i, p) in played.iter_mut().enumerate() {
            p.score.score = [1.0, -0.5][i % 2];
            p.score.success = i % 2 == 0;
        }
        // With eval_every 1 each step plays the held-out tasks after its update (its metrics
        // carry a copy, left out below: the evaluations are compared from eval.jsonl).
        metrics.push(trainer.learn(&prompts, &played, 0.0).unwrap());
    }
    let evals = trainer.read_evals().unwrap();
    assert_eq!(evals.len(), 3);
    assert!(
        metrics
            .iter()
            .all(|m| m.skipped_groups == 0 && m.grad_norm > 0.0)
    );
    check(
        "grpo",
        serde_json::json!({
            "metrics": lines(&metrics, &["eval"]),
            "evals": lines(&evals, &[]),
            "trained": checksum(trainer.model()),
        }),
    );
}
