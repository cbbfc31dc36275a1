//! The SFT trainer on a small random Qwen2-shaped model: packing is exact, masked tokens do
//! not matter, the loss falls, an interrupted run resumes exactly, and the saved adapter
//! reproduces the trained model.

mod common;

use common::{echo_examples as examples, small_model as model};

use agentbench_tuning::model::host::tensors_made;
use agentbench_tuning::model::{LoraConfig, Mode, Padding, TokenBatch};
use agentbench_tuning::train::run::LossScale;
use agentbench_tuning::train::{SftConfig, SftTrainer, TrainArgs, epoch_batches};
use candle_core::{DType, Device, Tensor};

fn sft_config() -> SftConfig {
    SftConfig {
        train: TrainArgs {
            lora: LoraConfig {
                r: 8,
                alpha: 16.0,
                dropout: 0.1,
                ..LoraConfig::default()
            },
            learning_rate: 5e-3,
            micro_batch: 2,
            warmup_ratio: 0.1,
            eval_every: 4,
            save_every: 4,
            checkpointing: false,
            ..common::tiny().sft.train
        },
        grad_accum: 2,
        max_len: 40,
        packing: true,
        max_steps: Some(12),
        ..common::tiny().sft
    }
}

#[test]
fn a_packed_row_gives_each_example_the_loss_it_has_alone() {
    let mut m = model();
    m.add_lora(&LoraConfig {
        seed: 1,
        dropout: 0.0,
        ..LoraConfig::default()
    })
    .unwrap();
    let ex = examples(3, 7);
    let alone: Vec<Vec<f32>> = ex
        .iter()
        .map(|e| {
            let b = TokenBatch::pad(
                std::slice::from_ref(&e.ids),
                0,
                Padding::Right,
                &Device::Cpu,
            )
            .unwrap();
            m.token_logprobs(&b, Mode::Eval)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect();
    let rows = vec![ex.iter().map(|e| e.ids.clone()).collect::<Vec<_>>()];
    let packed = TokenBatch::packed(&rows, 0, &Device::Cpu).unwrap();
    let lp: Vec<f32> = m
        .token_logprobs(&packed, Mode::Eval)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut at = 0;
    for (e, a) in ex.iter().zip(&alone) {
        for (k, want) in a.iter().enumerate() {
            assert!(
                (lp[at + k] - want).abs() < 1e-5,
                "token {k}: {} vs {want}",
                lp[at + k]
            );
        }
        // The target across the boundary (last token → next example's first) is masked.
        if at + e.ids.len() - 1 < lp.len() {
            assert_eq!(lp[at + e.ids.len() - 1], 0.0);
        }
        at += e.ids.len();
    }
}

#[test]
fn logprobs_at_chosen_positions_equal_the_full_computation_and_its_gradient() {
    let mut m = model();
    m.add_lora(&LoraConfig {
        seed: 2,
        dropout: 0.0,
        ..LoraConfig::default()
    })
    .unwrap();
    // Make B non-zero so that the adapter's gradients depend on the loss positions.
    for v in m.trainable_vars() {
        let r = v.as_tensor().randn_like(0.0, 0.1).unwrap();
        v.set(&r).unwrap();
    }
    let ex = examples(4, 11);
    let ids: Vec<Vec<u32>> = ex.iter().map(|e| e.ids.clone()).collect();
    let batch = TokenBatch::pad(&ids, 0, Padding::Right, &Device::Cpu).unwrap();
    let (b, t) = batch.dims();
    let positions: Vec<u32> = (0..(b * (t - 1)) as u32).filter(|p| p % 3 != 1).collect();
    let full = m.token_logprobs(&batch, Mode::Train).unwrap();
    let flat: Vec<f32> = full.flatten_all().unwrap().to_vec1().unwrap();
    let at = m
        .token_logprobs_at(&batch, &positions, Mode::Train, 1.0)
        .unwrap();
    let got: Vec<f32> = at.to_vec1().unwrap();
    assert_eq!(got.len(), positions.len());
    for (&p, g) in positions.iter().zip(&got) {
        // Padded targets are zeroed in the full computation only.
        if flat[p as usize] != 0.0 {
            assert!((flat[p as usize] - g).abs() < 1e-5, "{p}: {g}");
        }
    }
    // Gradients: Σ over the chosen, non-padded positions, both ways.
    let mask: Vec<f32> = (0..b * (t - 1))
        .map(|p| f32::from(positions.contains(&(p as u32)) && flat[p] != 0.0))
        .collect();
    let keep: Vec<u32> = positions
        .iter()
        .copied()
        .filter(|&p| flat[p as usize] != 0.0)
        .collect();
    let mask = candle_core::Tensor::from_vec(mask, (b, t - 1), &Device::Cpu).unwrap();
    let loss_full = (full * mask).unwrap().sum_all().unwrap();
    let loss_at = m
        .token_logprobs_at(&batch, &keep, Mode::Train, 1.0)
        .unwrap()
        .sum_all()
        .unwrap();
    let g_full = m.backward(&loss_full).unwrap();
    let g_at = m.backward(&loss_at).unwrap();
    let mut checked = 0;
    for v in m.trainable_vars() {
        let a: Vec<f32> = g_full
            .get(&v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let c: Vec<f32> = g_at
            .get(&v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, y) in a.iter().zip(&c) {
            assert!((x - y).abs() < 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
            checked += 1;
        }
    }
    assert!(checked > 0);
    // Only training passes build a graph (an eval pass would hold every activation).
    assert!(loss_at.track_op());
    assert!(!m.token_logprobs(&batch, Mode::Eval).unwrap().track_op());
    // A position past the batch is an error, not a panic.
    assert!(
        m.token_logprobs_at(&batch, &[(b * (t - 1)) as u32], Mode::Eval, 1.0)
            .is_err()
    );
}

#[test]
fn changing_a_masked_token_label_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(4, 1);
    let trainer =
        SftTrainer::new(model(), ex.clone(), vec![], sft_config(), 0, dir.path()).unwrap();
    let base = trainer.loss_on(&ex, Mode::Eval).unwrap();
    // The trailing token is a target of the loss computation but masked, and no trained token
    // sees it: whatever it is, the loss is the same.
    let mut changed = ex.clone();
    for e in &mut changed {
        let last = e.ids.len() - 1;
        e.ids[last] = (e.ids[last] + 17) % 97;
    }
    let same = trainer.loss_on(&changed, Mode::Eval).unwrap();
    assert!((base - same).abs() < 1e-9, "{base} vs {same}");
    let mut trained = ex.clone();
    let t = trained[0].mask.iter().position(|&m| m == 1).unwrap();
    trained[0].ids[t] = (trained[0].ids[t] + 1) % 97;
    assert!((base - trainer.loss_on(&trained, Mode::Eval).unwrap()).abs() > 1e-6);
}

#[test]
fn training_lowers_the_held_out_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SftConfig {
        train: TrainArgs {
            eval_every: 10,
            learning_rate: 1e-2,
            ..sft_config().train
        },
        max_steps: Some(30),
        ..sft_config()
    };
    let mut trainer = SftTrainer::new(
        model(),
        examples(64, 2),
        examples(16, 99),
        cfg,
        0,
        dir.path(),
    )
    .unwrap();
    let before = trainer.eval_loss().unwrap();
    let metrics = trainer.train(None, |_| {}).unwrap();
    let after = trainer.eval_loss().unwrap();
    // B starts at zero, so the untrained adapter is the base model; training leaves the base alone.
    let base = trainer.base_eval_loss().unwrap();
    assert!(
        (base - before).abs() < 1e-6,
        "base {base} vs untrained {before}"
    );
    assert_eq!(metrics.len(), 30);
    // The random model's frozen output head is small, so no adapter can make it confident:
    // the reachable drop is about half a nat (ln 97 = 4.57 is uniform).
    assert!(after < before - 0.3, "eval loss {before} -> {after}");
    let logged = trainer.read_metrics().unwrap();
    assert_eq!(logged.len(), 30);
    assert!(logged.iter().filter(|m| m.eval_loss.is_some()).count() >= 3);
    assert!(
        logged
            .iter()
            .all(|m| m.lr >= 0.0 && m.grad_norm.is_finite() && m.tokens_per_s > 0.0)
    );
}

#[test]
fn an_f16_model_trains_under_a_dynamic_loss_scale_that_skips_overflowed_updates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SftConfig {
        max_steps: Some(4),
        ..sft_config()
    };
    let mut trainer = SftTrainer::new(
        common::small_model_in(DType::F16),
        examples(16, 2),
        examples(4, 99),
        cfg,
        0,
        dir.path(),
    )
    .unwrap();
    let fresh = |t: &SftTrainer| t.state().loss_scale.clone().expect("an f16 run scales");
    assert_eq!(fresh(&trainer).scale, LossScale::INITIAL);
    let before: Vec<Tensor> = trainer
        .model()
        .trainable_vars()
        .iter()
        .map(|v| v.as_tensor().copy().unwrap())
        .collect();
    // A scale that overflows f32: the step's update is skipped and nothing moves.
    trainer.state_mut().loss_scale.as_mut().unwrap().scale = 1e300;
    let m = trainer.step().unwrap();
    let s = fresh(&trainer);
    assert_eq!((s.skipped, s.scale), (1, 0.5e300));
    assert_eq!(m.grad_norm, 0.0);
    for (v, b) in trainer.model().trainable_vars().iter().zip(&before) {
        let diff = (v.as_tensor() - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
    // At a usable scale the f16 model trains, with f32 adapters and finite losses.
    trainer.state_mut().loss_scale.as_mut().unwrap().scale = 1024.0;
    let rest = trainer.train(None, |_| {}).unwrap();
    assert_eq!(fresh(&trainer).skipped, 1);
    assert!(rest.iter().all(|m| m.loss.is_finite() && m.grad_norm > 0.0));
    let moved = trainer
        .model()
        .trainable_vars()
        .iter()
        .zip(&before)
        .any(|(v, b)| {
            let d = (v.as_tensor() - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            d.to_scalar::<f32>().unwrap() > 0.0
        });
    assert!(moved, "the adapters trained");
}

#[test]
fn a_training_step_makes_the_same_few_host_tensors_however_deep_the_model() {
    // On a GPU every tensor made from host data is a copy to the device: a step may upload its
    // batch, but nothing per layer or per projection (dropout masks, positions, masks).
    let made_by_one_step = |layers: usize| {
        let base = model();
        let config = agentbench_tuning::model::ModelConfig {
            num_layers: layers,
            ..base.config().clone()
        };
        let deep =
            agentbench_tuning::model::Decoder::random(config, 3, &Device::Cpu, DType::F32).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = SftConfig {
            train: TrainArgs {
                checkpointing: true,
                ..sft_config().train
            },
            ..sft_config()
        };
        let mut trainer =
            SftTrainer::new(deep, examples(16, 2), examples(4, 99), cfg, 0, dir.path()).unwrap();
        let before = tensors_made();
        trainer.step().unwrap();
        tensors_made() - before
    };
    let (shallow, deep) = (made_by_one_step(2), made_by_one_step(6));
    assert_eq!(shallow, deep, "host tensors per step grow with depth");
    // Two micro-batches (gradient accumulation 2), each a handful of batch tensors.
    assert!(shallow <= 2 * 8, "{shallow} host tensors in one step");
}

#[test]
fn an_interrupted_run_resumes_exactly() {
    let full = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let data = examples(40, 5);
    let mut a =
        SftTrainer::new(model(), data.clone(), vec![], sft_config(), 0, full.path()).unwrap();
    let straight: Vec<f64> = a
        .train(None, |_| {})
        .unwrap()
        .iter()
        .map(|m| m.loss)
        .collect();

    let mut b =
        SftTrainer::new(model(), data.clone(), vec![], sft_config(), 0, cut.path()).unwrap();
    b.train(Some(6), |_| {}).unwrap(); // a checkpoint at step 4, then 2 more steps are lost
    drop(b);
    let mut c = SftTrainer::new(model(), data, vec![], sft_config(), 0, cut.path()).unwrap();
    assert!(c.resume().unwrap());
    assert_eq!(c.step_count(), 4);
    c.train(None, |_| {}).unwrap();
    let resumed: Vec<f64> = c.read_metrics().unwrap().iter().map(|m| m.loss).collect();
    assert_eq!(resumed.len(), straight.len());
    for (i, (x, y)) in straight.iter().zip(&resumed).enumerate() {
        assert!((x - y).abs() < 1e-6, "step {}: {x} vs {y}", i + 1);
    }
    // Only the newest checkpoints are kept, and `latest` names a complete one.
    let latest = std::fs::read_to_string(cut.path().join("checkpoints/latest")).unwrap();
    assert_eq!(latest, "step-000012");
    assert!(
        cut.path()
            .join("checkpoints/step-000012/optimizer.safetensors")
            .is_file()
    );
    assert!(!cut.path().join("checkpoints/step-000004").exists());
}

#[test]
fn the_saved_adapter_reproduces_the_trained_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = SftTrainer::new(
        model(),
        examples(16, 8),
        vec![],
        SftConfig {
            max_steps: Some(4),
            ..sft_config()
        },
        0,
        dir.path(),
    )
    .unwrap();
    trainer.train(None, |_| {}).unwrap();
    trainer
        .save_adapter(&dir.path().join("adapter"), "random")
        .unwrap();
    let batch = TokenBatch::pad(&[vec![5, 9, 11, 40, 2]], 0, Padding::Right, &Device::Cpu).unwrap();
    let want = trainer.model().forward(&batch, Mode::Eval).unwrap();
    let mut fresh = model();
    fresh.load_adapter(&dir.path().join("adapter")).unwrap();
    let got = fresh.forward(&batch, Mode::Eval).unwrap();
    let diff = (want - got)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "max |Δlogit| {diff}");
    let base = model().forward(&batch, Mode::Eval).unwrap();
    let moved = (trainer.model().forward(&batch, Mode::Eval).unwrap() - base)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(moved > 1e-4, "training changed the model");
}

#[test]
fn epochs_are_reshuffled_and_packed_within_the_limit() {
    let ex = examples(30, 4);
    let a = epoch_batches(&ex, 1, 0, 2, 40, true).unwrap();
    let b = epoch_batches(&ex, 1, 1, 2, 40, true).unwrap();
    assert_ne!(a, b);
    for mb in &a {
        for row in &mb.rows {
            let len: usize = row.iter().map(|&i| ex[i].ids.len()).sum();
            assert!(len <= 40 || row.len() == 1, "{len}");
        }
    }
    let mut seen: Vec<usize> = a
        .iter()
        .flat_map(|m| m.rows.iter().flatten().copied())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
}

#[test]
fn the_loss_view_marks_exactly_the_trained_tokens() {
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = agentbench_tuning::chat::Tokenizer::from_gguf(&path).unwrap();
    use agentbench_tuning::chat::{Conversation, Message};
    let record = agentbench_tuning::data::SftRecord {
        conversation: Conversation::new(vec![
            Message::user("How many rows?"),
            Message::assistant("Action: Operation\n```sql\nSELECT COUNT(*) FROM t\n```"),
            Message::user("[(3,)]"),
            Message::assistant("Action: Answer\nFinal Answer: [\"3\"]"),
        ]),
        source: "test".into(),
        kind: "counting".into(),
        protocol: None,
    };
    let (ex, skipped) =
        agentbench_tuning::train::encode_records(std::slice::from_ref(&record), &tokenizer, 512)
            .unwrap();
    assert_eq!(skipped, 0);
    let view = ex[0].view(&tokenizer).unwrap();
    assert_eq!(
        (view.tokens, view.trained),
        (ex[0].ids.len(), ex[0].trained())
    );
    // Spans alternate, and together they are the whole text.
    assert!(view.spans.windows(2).all(|w| w[0].0 != w[1].0));
    let whole: String = view.spans.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(whole, tokenizer.decode(&ex[0].ids, false).unwrap());
    let trained: String = view
        .spans
        .iter()
        .filter(|(t, _)| *t)
        .map(|(_, t)| t.as_str())
        .collect();
    assert!(trained.contains("SELECT COUNT(*) FROM t"), "{trained}");
    assert!(trained.contains("Final Answer"));
    assert!(!trained.contains("How many rows") && !trained.contains("[(3,)]"));
    assert!(view.to_text().contains("⟦"));
}

#[test]
fn records_are_truncated_at_turn_ends_and_skipped_when_no_reply_fits() {
    let Some(path) = common::default_model() else {
        return;
    };
    let tokenizer = agentbench_tuning::chat::Tokenizer::from_gguf(&path).unwrap();
    use agentbench_tuning::chat::{Conversation, Message};
    let record = |first_reply: &str| agentbench_tuning::data::SftRecord {
        conversation: Conversation::new(vec![
            Message::user("How many rows?"),
            Message::assistant(first_reply),
            Message::user("[(3,)]"),
            Message::assistant("Action: Answer\nFinal Answer: [\"3\"]"),
        ]),
        source: "test".into(),
        kind: "counting".into(),
        protocol: None,
    };
    let short = record("Action: Operation\n```sql\nSELECT COUNT(*) FROM t\n```");
    let long = record(&"SELECT 1; ".repeat(200));
    let encode = |r: &[agentbench_tuning::data::SftRecord], max| {
        agentbench_tuning::train::encode_records(r, &tokenizer, max).unwrap()
    };
    let (whole, _) = encode(std::slice::from_ref(&short), 512);
    let full = whole[0].ids.len();
    // A limit inside the last reply keeps the first exchange only; one inside the first reply
    // skips the record instead of failing the run.
    let (cut, skipped) = encode(&[short.clone(), long], full - 3);
    assert_eq!(skipped, 1);
    assert_eq!(cut.len(), 1);
    assert!(cut[0].ids.len() < full - 3 && cut[0].trained() > 0);
    assert_eq!(cut[0].ids[..], whole[0].ids[..cut[0].ids.len()]);
}
