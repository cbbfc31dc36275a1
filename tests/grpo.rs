//! The GRPO trainer on the embedded default model and real environment episodes: the
//! compact log-probs are exactly the policy's own tokens (they equal the log-probs recorded
//! while sampling), the loss gives observation and prompt tokens zero gradient, the KL is 0
//! while policy = reference, and an interrupted run resumes exactly.

mod common;

use agentbench_tuning::chat::Tokenizer;
use agentbench_tuning::env::Protocol;
use agentbench_tuning::model::{Decoder, Mode, Padding, TokenBatch};
use agentbench_tuning::prompts::{Prompt, held_out_prompts};
use agentbench_tuning::train::{
    CurriculumConfig, GrpoConfig, GrpoParams, GrpoReward, GrpoTrainer, TrainArgs, episode_logprobs,
    grpo_loss, policy_targets,
};
use candle_core::{Device, Tensor, Var};

fn default_model() -> Option<(Decoder, Tokenizer)> {
    common::default_decoder()
}

/// Short episodes: two prompts (a DB task and a household game), two episodes each.
fn config() -> GrpoConfig {
    GrpoConfig {
        train: TrainArgs {
            micro_batch: 2,
            eval_every: 0,
            save_every: 1,
            ..common::tiny().grpo.train
        },
        group_size: 2,
        prompts_per_step: 2,
        rollout_batch: 4,
        max_new_tokens: 24,
        db_turns: 2,
        household_turns: 2,
        max_context: 1536,
        steps: 2,
        held_out_eval: true,
        temperature: 1.0,
        ..common::tiny().grpo
    }
}

fn prompts() -> Vec<Prompt> {
    held_out_prompts(1, 1, Protocol::Text, false).unwrap()
}

/// The resume test's cheaper run: one household game a step.
fn small_config() -> GrpoConfig {
    GrpoConfig {
        prompts_per_step: 1,
        max_new_tokens: 16,
        ..config()
    }
}

/// A pass-rate curriculum whose band every prompt starts in.
fn with_curriculum(config: GrpoConfig) -> GrpoConfig {
    GrpoConfig {
        curriculum: Some(CurriculumConfig {
            low: 0.1,
            high: 0.8,
            prior: [1.0, 1.0],
        }),
        ..config
    }
}

fn household_prompts() -> Vec<Prompt> {
    held_out_prompts(0, 2, Protocol::Text, false).unwrap()
}

#[test]
fn the_policys_tokens_and_only_they_are_trained() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Rollouts at the recipe's temperature, below 1.
    let config = GrpoConfig {
        temperature: 0.8,
        ..config()
    };
    let trainer = GrpoTrainer::new(
        model,
        prompts(),
        vec![],
        config.clone(),
        &tokenizer,
        dir.path(),
    )
    .unwrap();
    let played = trainer.rollouts(&prompts()).unwrap();
    assert_eq!(played.len(), 4);
    let episodes: Vec<_> = played.iter().map(|p| &p.episode).collect();
    assert!(
        episodes
            .iter()
            .all(|e| e.policy_mask.contains(&0) && e.turns() >= 1)
    );
    let model = trainer.model();

    // The compact log-probs, at the rollout temperature, are those the sampler recorded for the
    // same tokens (it drew them from the model's distribution at that temperature).
    let temperature = config.temperature;
    let (lp, mask) = episode_logprobs(model, &episodes, 0, Mode::Train, temperature).unwrap();
    let lp_rows = lp.to_vec2::<f32>().unwrap();
    let mask_rows = mask.to_vec2::<f32>().unwrap();
    for (i, e) in episodes.iter().enumerate() {
        let sampled: Vec<f32> = e
            .policy_mask
            .iter()
            .zip(&e.logprobs)
            .filter(|&(&m, _)| m == 1)
            .map(|(_, &l)| l)
            .collect();
        assert_eq!(
            mask_rows[i].iter().filter(|&&m| m == 1.0).count(),
            sampled.len()
        );
        for (j, s) in sampled.iter().enumerate() {
            assert!(
                (lp_rows[i][j] - s).abs() < 2e-3,
                "episode {i} token {j}: recomputed {} vs sampled {s}",
                lp_rows[i][j]
            );
        }
    }

    // Fresh adapters: the policy is the reference, so the k3 KL is 0 and the ratio 1.
    let (reference, _) =
        episode_logprobs(model, &episodes, 0, Mode::Reference, temperature).unwrap();
    let advantages = Tensor::new(&[1.0f32, -1.0, 0.5, -0.5], &Device::Cpu).unwrap();
    let params = GrpoParams::default();
    let out = grpo_loss(
        &lp,
        &lp.detach(),
        Some(&reference),
        &advantages,
        &mask,
        &params,
        None,
    )
    .unwrap();
    assert!(out.kl.abs() < 1e-6, "KL {} with policy = reference", out.kl);
    assert_eq!(out.clip_fraction, 0.0);

    // On the full next-token grid of the episodes, with the policy mask shifted onto the
    // predictions, the loss is the same and every prompt, observation, template and padding
    // position gets exactly zero gradient.
    let rows: Vec<Vec<u32>> = episodes.iter().map(|e| e.tokens.clone()).collect();
    let batch = TokenBatch::pad(&rows, 0, Padding::Right, &Device::Cpu).unwrap();
    let (n, t) = batch.dims();
    let full = model.token_logprobs(&batch, Mode::Train).unwrap();
    let full_ref = model.token_logprobs(&batch, Mode::Reference).unwrap();
    let leaf = Var::from_tensor(&full.detach()).unwrap();
    let mut grid = vec![0f32; n * (t - 1)];
    for (i, e) in episodes.iter().enumerate() {
        for k in policy_targets(e) {
            grid[i * (t - 1) + k] = 1.0;
        }
    }
    let grid = Tensor::from_vec(grid, (n, t - 1), &Device::Cpu).unwrap();
    let out_full = grpo_loss(
        leaf.as_tensor(),
        &full.detach(),
        Some(&full_ref),
        &advantages,
        &grid,
        &params,
        None,
    )
    .unwrap();
    let a = out.loss.to_scalar::<f32>().unwrap();
    let b = out_full.loss.to_scalar::<f32>().unwrap();
    assert!(
        (a - b).abs() < 1e-5,
        "compact loss {a} vs full-grid loss {b}"
    );
    let grads = out_full.loss.backward().unwrap();
    let g = grads
        .get(leaf.as_tensor())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let on = grid.to_vec2::<f32>().unwrap();
    let mut trained = 0;
    for i in 0..n {
        for k in 0..t - 1 {
            if on[i][k] == 0.0 {
                assert_eq!(
                    g[i][k], 0.0,
                    "masked position {k} of episode {i} has a gradient"
                );
            } else if g[i][k] != 0.0 {
                trained += 1;
            }
        }
    }
    assert!(trained > 0, "no policy token received a gradient");
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let whole = tempfile::tempdir().unwrap();
    let mut a = GrpoTrainer::new(
        model.clone(),
        household_prompts(),
        vec![],
        with_curriculum(small_config()),
        &tokenizer,
        whole.path(),
    )
    .unwrap();
    let straight = a.train(None, |_| {}).unwrap();
    assert_eq!(straight.len(), 2);
    for m in &straight {
        assert!(m.loss.is_finite() && m.kl.is_finite());
        assert_eq!(m.groups, 1);
        // Both games' estimates are in the pool's histogram; each step's group moved one.
        assert_eq!(m.pass_rates.as_ref().map(|h| h.iter().sum()), Some(2));
    }
    let seen: u32 = (0..2)
        .map(|i| a.pass_rates().counts(i).iter().sum::<u32>())
        .sum();
    assert_eq!(seen, 4, "two steps of one group of two episodes");

    let cut = tempfile::tempdir().unwrap();
    let mut b = GrpoTrainer::new(
        model.clone(),
        household_prompts(),
        vec![],
        with_curriculum(small_config()),
        &tokenizer,
        cut.path(),
    )
    .unwrap();
    b.train(Some(1), |_| {}).unwrap();
    let after_one = b.pass_rates().clone();
    drop(b);
    let mut c = GrpoTrainer::new(
        model,
        household_prompts(),
        vec![],
        with_curriculum(small_config()),
        &tokenizer,
        cut.path(),
    )
    .unwrap();
    assert!(c.resume().unwrap());
    assert_eq!(c.step_count(), 1);
    // The estimates come back with the checkpoint.
    assert_eq!(c.pass_rates(), &after_one);
    let rest = c.train(None, |_| {}).unwrap();
    let (x, y) = (&straight[1], &rest[0]);
    assert_eq!(x.reward_mean, y.reward_mean);
    assert_eq!(x.skipped_groups, y.skipped_groups);
    assert_eq!(x.pass_rates, y.pass_rates);
    assert_eq!(x.pool_in_band, y.pool_in_band);
    assert!((x.loss - y.loss).abs() < 1e-6, "{} vs {}", x.loss, y.loss);
    assert!((x.grad_norm - y.grad_norm).abs() < 1e-4);
    assert_eq!(c.read_metrics().unwrap().len(), 2);
}

#[test]
fn held_out_tasks_are_played_at_the_start_and_the_end_unless_turned_off() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let held_out = held_out_prompts(0, 1, Protocol::Text, false).unwrap();
    for on in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = GrpoConfig {
            steps: 1,
            held_out_eval: on,
            ..small_config()
        };
        let mut trainer = GrpoTrainer::new(
            model.clone(),
            household_prompts(),
            held_out.clone(),
            config,
            &tokenizer,
            dir.path(),
        )
        .unwrap();
        let mut seen = Vec::new();
        trainer
            .train(None, |m| seen.extend(m.eval.as_ref().map(|e| e.step)))
            .unwrap();
        let saved: Vec<usize> = trainer
            .read_evals()
            .unwrap()
            .iter()
            .map(|e| e.step)
            .collect();
        // The starting point is recorded in eval.jsonl; the one after the step also comes
        // with its metrics.
        let expected = if on { vec![0, 1] } else { vec![] };
        assert_eq!(
            seen,
            expected[expected.len().min(1)..],
            "held_out_eval {on}"
        );
        assert_eq!(saved, expected, "held_out_eval {on}");
        if on {
            assert_eq!(trainer.read_evals().unwrap()[0].tasks, 1);
        }
    }
}

/// One step with the success reward and no held-out evaluation.
fn one_step_config() -> GrpoConfig {
    GrpoConfig {
        steps: 1,
        held_out_eval: false,
        reward: GrpoReward::Success,
        ..small_config()
    }
}

/// The metrics of a run of `config` on `prompts`.
fn one_step(
    model: Decoder,
    tokenizer: &Tokenizer,
    prompts: Vec<Prompt>,
    config: GrpoConfig,
) -> agentbench_tuning::train::GrpoMetrics {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer =
        GrpoTrainer::new(model, prompts, vec![], config, tokenizer, dir.path()).unwrap();
    trainer.train(None, |_| {}).unwrap().remove(0)
}

#[test]
fn a_task_filter_and_the_success_reward_shape_the_steps() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let config = GrpoConfig {
        tasks: vec!["household".into()],
        ..one_step_config()
    };
    // One DB task and one household game: only the game is trained on.
    let m = &one_step(model, &tokenizer, prompts(), config);
    assert_eq!(m.groups, 1);
    assert!(
        m.success_by_kind
            .keys()
            .all(|k| k.starts_with("household/")),
        "{:?}",
        m.success_by_kind
    );
    // Rewards are 0 or 1: the mean of two is a multiple of 1/2, and it is the success rate.
    assert_eq!(m.reward_mean, m.success);
    assert_eq!((m.reward_mean * 2.0).fract(), 0.0);
}

#[test]
fn dynamic_sampling_plays_more_prompts_until_the_quota_or_the_cap() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let config = GrpoConfig {
        filter_groups: true,
        max_resamples: 1,
        ..one_step_config()
    };
    let m = &one_step(model, &tokenizer, household_prompts(), config);
    // One prompt a step: a second batch is played only when the first group taught nothing.
    if m.groups == 1 {
        assert_eq!(m.informative_groups, 1, "{m:?}");
    } else {
        assert_eq!(m.groups, 2, "one extra batch at most: {m:?}");
    }
    assert_eq!(
        m.dropped_groups,
        m.groups - m.informative_groups.min(1),
        "{m:?}"
    );
    if m.informative_groups == 0 {
        assert_eq!(m.grad_norm, 0.0, "nothing to train on: {m:?}");
    }
}
