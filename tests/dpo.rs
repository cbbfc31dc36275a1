//! The DPO trainer on a small random Qwen2-shaped model: it starts exactly at the reference
//! (loss ln 2), sequence log-probs are the sums of the trained tokens' log-probs, training
//! ranks held-out pairs right, and an interrupted run resumes exactly.

mod common;

use common::{echo_pairs as pairs, small_model as model};

use agentbench_tuning::model::{LoraConfig, Mode, Padding, TokenBatch};
use agentbench_tuning::train::{
    DpoConfig, DpoExample, DpoLoss, DpoParams, DpoTrainer, TrainArgs, pair_logprobs,
};
use candle_core::Device;

fn dpo_config() -> DpoConfig {
    DpoConfig {
        train: TrainArgs {
            lora: LoraConfig {
                r: 8,
                alpha: 16.0,
                dropout: 0.0,
                ..LoraConfig::default()
            },
            learning_rate: 1e-2,
            micro_batch: 2,
            warmup_ratio: 0.1,
            eval_every: 5,
            save_every: 3,
            checkpointing: false,
            ..common::tiny().dpo.train
        },
        grad_accum: 2,
        max_len: 40,
        epochs: 1,
        max_steps: Some(10),
        ..common::tiny().dpo
    }
}

#[test]
fn sequence_logprobs_sum_the_trained_tokens_of_each_side() {
    let model = model();
    let examples = pairs(3, 1);
    let refs: Vec<&DpoExample> = examples.iter().collect();
    let (chosen, rejected) = pair_logprobs(&model, &refs, 0, Mode::Reference, false).unwrap();
    let (chosen_mean, _) = pair_logprobs(&model, &refs, 0, Mode::Reference, true).unwrap();
    for (i, e) in examples.iter().enumerate() {
        for (side, got, mean) in [
            (&e.chosen, &chosen, Some(&chosen_mean)),
            (&e.rejected, &rejected, None),
        ] {
            // One sequence alone, every next-token log-prob, masked by hand.
            let batch = TokenBatch::pad(
                std::slice::from_ref(&side.ids),
                0,
                Padding::Right,
                &Device::Cpu,
            )
            .unwrap();
            let lp = model
                .token_logprobs(&batch, Mode::Reference)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let trained: Vec<f32> = (1..side.ids.len())
                .filter(|&k| side.mask[k] == 1)
                .map(|k| lp[k - 1])
                .collect();
            let want: f32 = trained.iter().sum();
            let have = got.get(i).unwrap().to_scalar::<f32>().unwrap();
            assert!((want - have).abs() < 1e-4, "pair {i}: {want} vs {have}");
            if let Some(mean) = mean {
                let have = mean.get(i).unwrap().to_scalar::<f32>().unwrap();
                assert!((want / trained.len() as f32 - have).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn training_starts_at_the_reference_and_learns_to_rank_held_out_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = DpoTrainer::new(
        model(),
        pairs(24, 2),
        pairs(8, 3),
        dpo_config(),
        0,
        dir.path(),
    )
    .unwrap();
    // Fresh adapters change nothing: the policy is the reference, h = 0, loss = ln 2.
    let start = trainer.evaluate().unwrap();
    assert!(
        (start.loss - std::f64::consts::LN_2).abs() < 1e-5,
        "{start:?}"
    );
    assert!(start.margin.abs() < 1e-5, "{start:?}");
    assert!(dir.path().join("reference.json").is_file());
    let metrics = trainer.train(None, |_| {}).unwrap();
    assert_eq!(metrics.len(), 10);
    assert!((metrics[0].loss - std::f64::consts::LN_2).abs() < 1e-4);
    let end = metrics.last().unwrap().eval.expect("eval at the end");
    assert!(end.loss < 0.9 * std::f64::consts::LN_2, "{end:?}");
    assert!(end.accuracy > 0.99 && end.margin > 0.0, "{end:?}");
    // The reference itself has not moved.
    let reference = trainer.evaluate_mode(Mode::Reference).unwrap();
    assert!((reference.loss - std::f64::consts::LN_2).abs() < 1e-5);
}

#[test]
fn rpo_adds_the_chosen_nll_per_token_and_raises_the_chosen_likelihood() {
    // At the start the policy is the reference: the loss is ln 2 plus α times the chosen
    // sides' NLL per trained token, computed here by hand from the sequence log-probs.
    let eval = pairs(8, 3);
    let refs: Vec<&DpoExample> = eval.iter().collect();
    let (chosen, _) = pair_logprobs(&model(), &refs, 0, Mode::Reference, false).unwrap();
    let sum: f32 = chosen.to_vec1::<f32>().unwrap().iter().sum();
    let tokens: usize = eval
        .iter()
        .map(|e| e.chosen.mask.iter().skip(1).filter(|&&m| m == 1).count())
        .sum();
    let nll = -(sum as f64) / tokens as f64;
    let rpo = |alpha: f64| DpoConfig {
        loss: DpoParams {
            rpo_alpha: alpha,
            ..DpoParams::default()
        },
        eval_share: 0.0,
        // One micro-batch holds every held-out pair, so the per-token mean is the batch's.
        train: TrainArgs {
            micro_batch: 8,
            ..dpo_config().train
        },
        ..dpo_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let trainer =
        DpoTrainer::new(model(), pairs(24, 2), pairs(8, 3), rpo(0.5), 0, dir.path()).unwrap();
    let start = trainer.evaluate().unwrap();
    let want = std::f64::consts::LN_2 + 0.5 * nll;
    assert!((start.loss - want).abs() < 1e-4, "{} vs {want}", start.loss);

    // Trained with the NLL term, the chosen sides end more likely than with plain DPO.
    let chosen_after = |alpha: f64| {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = DpoTrainer::new(
            model(),
            pairs(24, 2),
            pairs(8, 3),
            rpo(alpha),
            0,
            dir.path(),
        )
        .unwrap();
        trainer.train(None, |_| {}).unwrap();
        let (chosen, _) = pair_logprobs(trainer.model(), &refs, 0, Mode::Eval, false).unwrap();
        chosen.to_vec1::<f32>().unwrap().iter().sum::<f32>()
    };
    let (plain, with_nll) = (chosen_after(0.0), chosen_after(1.0));
    assert!(with_nll > plain, "{with_nll} vs {plain}");
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let whole_dir = tempfile::tempdir().unwrap();
    let mut whole = DpoTrainer::new(
        model(),
        pairs(16, 4),
        pairs(4, 5),
        dpo_config(),
        0,
        whole_dir.path(),
    )
    .unwrap();
    let all = whole.train(Some(6), |_| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = DpoTrainer::new(
        model(),
        pairs(16, 4),
        pairs(4, 5),
        dpo_config(),
        0,
        dir.path(),
    )
    .unwrap();
    first.train(Some(4), |_| {}).unwrap(); // checkpoint at 3, step 4 is lost
    drop(first);
    let mut second = DpoTrainer::new(
        model(),
        pairs(16, 4),
        pairs(4, 5),
        dpo_config(),
        0,
        dir.path(),
    )
    .unwrap();
    assert!(second.resume().unwrap());
    assert_eq!(second.step_count(), 3);
    let rest = second.train(Some(3), |_| {}).unwrap();
    for (a, b) in all[3..6].iter().zip(&rest) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-6,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    assert_eq!(second.read_metrics().unwrap().len(), 6);
}

#[test]
fn ipo_and_hinge_train_too_and_a_model_with_adapters_is_refused() {
    for loss in [DpoLoss::Ipo, DpoLoss::Hinge] {
        let dir = tempfile::tempdir().unwrap();
        let config = DpoConfig {
            loss: DpoParams {
                loss,
                ..DpoParams::default()
            },
            max_steps: Some(6),
            ..dpo_config()
        };
        let mut trainer =
            DpoTrainer::new(model(), pairs(16, 6), pairs(6, 7), config, 0, dir.path()).unwrap();
        let before = trainer.evaluate().unwrap();
        trainer.train(None, |_| {}).unwrap();
        let after = trainer.evaluate().unwrap();
        assert!(
            after.loss < before.loss,
            "{loss:?}: {before:?} -> {after:?}"
        );
    }
    let mut with_adapters = model();
    with_adapters.add_lora(&LoraConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = DpoTrainer::new(
        with_adapters,
        pairs(4, 8),
        vec![],
        dpo_config(),
        0,
        dir.path(),
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("merge"), "{err}");
}
