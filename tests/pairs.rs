//! Phase 04's multi-turn pair makers and iterative DPO on the embedded default model and real
//! environment episodes: step-level pairs branch after a shared history, and `dpo_rounds`
//! folds each round into the weights, trains on the round's pairs and stops when a round finds
//! none.

mod common;

use agentbench_tuning::chat::{Conversation, Message, Role, Tokenizer};
use agentbench_tuning::config::Profile;
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::generate::EpisodeEnd;
use agentbench_tuning::model::{Decoder, LoraConfig, Target};
use agentbench_tuning::pairs::{
    Pair, PairFilter, PairSource, PairsConfig, PairsReport, Sample, StepLevelConfig, read_pairs,
    step_level_pairs, write_pairs,
};
use agentbench_tuning::prompts::{Prompt, held_out_prompts};
use agentbench_tuning::train::{DpoConfig, TrainArgs, dpo_rounds};

fn default_model() -> Option<(Decoder, Tokenizer)> {
    common::default_decoder()
}

/// Short household episodes: 2 samples of at most 3 replies of 24 tokens, every pair kept
/// whatever its gap or length (the filters have their own unit tests).
fn pairs_config() -> PairsConfig {
    PairsConfig {
        samples: 2,
        temperature: 1.0,
        max_prompts: None,
        batch: 4,
        max_new_tokens: 24,
        db_turns: 3,
        household_turns: 3,
        max_context: 1536,
        min_gap: -1.0,
        min_chars: 0,
        ..common::tiny().pairs
    }
}

fn household_prompts() -> Vec<Prompt> {
    held_out_prompts(0, 2, Protocol::Text, false).unwrap()
}

/// A household episode of `prompt` with scripted replies that do not end the game (a policy
/// that plays several turns, as a trained one does).
fn scripted(index: usize, prompt: &Prompt, replies: &[&str]) -> Sample {
    let mut env = prompt.env();
    let mut conversation = env.reset().unwrap();
    let prompt_messages = conversation.messages.len();
    for reply in replies {
        let reply = Message::assistant(*reply);
        let step = env.step(&reply).unwrap();
        assert!(!step.done, "the script ended the game");
        conversation.push(reply);
        conversation.messages.extend(step.observation);
    }
    Sample {
        prompt: index,
        sample: 0,
        task: prompt.source(),
        kind: prompt.kind(),
        protocol: prompt.protocol(),
        score: env.score(),
        turns: replies.len(),
        end: EpisodeEnd::MaxTurns,
        conversation,
        prompt_messages,
    }
}

#[test]
fn step_level_pairs_branch_one_turn_after_a_shared_history() {
    let Some((model, tok)) = default_model() else {
        return;
    };
    let prompts = household_prompts();
    let picked: Vec<&Prompt> = prompts.iter().collect();
    let look = "THOUGHT: I look around first.\nACTION: look";
    let samples = vec![
        scripted(0, &prompts[0], &[look, "ACTION: inventory", look, look]),
        scripted(0, &prompts[0], &[look]),
        // A prompt whose samples have one reply each has no history to branch from.
        scripted(1, &prompts[1], &[look]),
    ];
    let config = pairs_config();
    let step = StepLevelConfig {
        candidates: 3,
        rollouts: 2,
        branch_at: 0.5,
    };
    let filter = PairFilter::new(&config).unwrap();
    let (pairs, report) =
        step_level_pairs(&model, &tok, &picked, &samples, &config, &step, &filter).unwrap();

    // Prompt 0 is branched once, from its longest sample: 3 candidates valued by 2 episodes.
    let dropped: usize = report.dropped.values().sum();
    assert_eq!(pairs.len() + dropped, 1);
    let household = &report.sources["household"];
    assert_eq!((household.prompts, household.samples), (2, 3 * 2));
    let pair = pairs
        .first()
        .expect("the filters accept any gap and length here");
    assert_eq!(pair.source, PairSource::StepLevel);
    // The shared history is the longest sample cut before its third reply (4 × 0.5 → reply 2).
    let cut = samples[0].prompt_messages + 4;
    assert_eq!(
        pair.prompt.messages[..],
        samples[0].conversation.messages[..cut]
    );
    assert_eq!(pair.prompt.messages.last().unwrap().role, Role::User);
    // Each side is a single next turn of the policy's, and the chosen one is worth more.
    for side in [&pair.chosen, &pair.rejected] {
        assert_eq!(side.len(), 1);
        assert_eq!(side[0].role, Role::Assistant);
        assert_ne!(
            side[0].content, look,
            "a candidate is the policy's, not the script's"
        );
    }
    assert!(pair.chosen_score >= pair.rejected_score);
}

/// A stand-in pair for a round: the household opening and two one-reply continuations.
fn pair(prompt: &Prompt, chosen: &str, rejected: &str) -> Pair {
    let opening: Conversation = prompt.env().reset().unwrap();
    Pair {
        task: "household".into(),
        kind: "pick".into(),
        protocol: Protocol::Text,
        source: PairSource::BestOfN,
        prompt: opening,
        chosen: vec![Message::assistant(chosen)],
        rejected: vec![Message::assistant(rejected)],
        chosen_score: 1.0,
        rejected_score: 0.0,
    }
}

#[test]
fn dpo_rounds_fold_each_round_in_and_stop_when_a_round_finds_no_pair() {
    let Some((mut model, tok)) = default_model() else {
        return;
    };
    // Round 1's adapters (as `abt dpo` leaves them after training on phase 04's pairs).
    let first = LoraConfig {
        r: 4,
        alpha: 8.0,
        targets: vec![Target::Q, Target::V],
        ..LoraConfig::default()
    };
    model.add_lora(&first).unwrap();
    let prompts = household_prompts();
    let dir = tempfile::tempdir().unwrap();
    let (pairs_dir, dpo_dir) = (dir.path().join("04_pairs"), dir.path().join("05_dpo"));
    // Round 2's pairs are already on disk (a rerun reuses them); round 3 samples its own.
    let round2 = vec![
        pair(
            &prompts[0],
            "THOUGHT: I look around first.\nACTION: look",
            "ACTION: fly away",
        ),
        pair(&prompts[1], "ACTION: inventory", "I do not know."),
    ];
    write_pairs(
        &pairs_dir.join("round-2"),
        &round2,
        &[],
        &PairsReport::default(),
    )
    .unwrap();
    let config = DpoConfig {
        train: TrainArgs {
            lora: LoraConfig {
                r: 2,
                alpha: 4.0,
                targets: vec![Target::Q, Target::K],
                ..LoraConfig::default()
            },
            learning_rate: 1e-3,
            micro_batch: 1,
            eval_every: 0,
            save_every: 0,
            checkpointing: false,
            ..common::tiny().dpo.train
        },
        grad_accum: 2,
        max_len: 1024,
        epochs: 1,
        rounds: 3,
        max_steps: Some(1),
        eval_share: 0.0,
        ..common::tiny().dpo
    };
    // Round 3 samples greedy-like, identical episodes: no pair passes a positive gap.
    let sampling = PairsConfig {
        temperature: 0.0,
        min_gap: 0.1,
        max_new_tokens: 8,
        household_turns: 1,
        ..pairs_config()
    };
    let mut steps = Vec::new();
    let (model, rounds) = dpo_rounds(
        model,
        &tok,
        &prompts,
        &sampling,
        &config,
        &pairs_dir,
        &dpo_dir,
        |round, total, m| steps.push((round, total, m.step)),
    )
    .unwrap();

    assert_eq!(steps, vec![(2, 1, 1)]);
    assert_eq!(rounds.len(), 2);
    assert_eq!((rounds[0].round, rounds[0].pairs), (2, 2));
    assert_eq!(
        rounds[0].solved, None,
        "round 2's pairs were read, not sampled"
    );
    assert_eq!((rounds[1].round, rounds[1].pairs), (3, 0));
    assert!(rounds[1].solved.is_some());
    // Round 3 sampled and wrote its (empty) pairs with the samples they came from.
    assert!(read_pairs(&pairs_dir.join("round-3")).unwrap().is_empty());
    assert!(dpo_dir.join("round-2").is_dir());
    assert!(!dpo_dir.join("round-3").exists());
    // Rounds 1 and 2 are folded into the weights; the saved adapter stacks both.
    assert!(model.lora_config().is_none());
    assert_eq!(model.merged_lora().map(|(r, _)| r), Some(4 + 2));
    let out = dir.path().join("adapter");
    model
        .save_adapter(&out, Profile::Tiny.base_model())
        .unwrap();
    let (mut reloaded, _) = default_model().unwrap();
    let loaded = reloaded.load_adapter(&out).unwrap();
    assert_eq!(loaded.r, 6);
    assert_eq!(loaded.targets, vec![Target::Q, Target::K, Target::V]);
}

#[test]
fn sampling_in_parts_equals_one_play_and_resumes_from_the_parts_it_kept() {
    use agentbench_tuning::cache::Fingerprint;
    use agentbench_tuning::generate::play_tasks;
    use agentbench_tuning::pairs::{SavedParts, sample_prompts};
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    // Four DB tasks, two samples each, one episode per batch: two parts of four.
    let config = PairsConfig {
        batch: 1,
        max_new_tokens: 16,
        db_turns: 1,
        ..pairs_config()
    };
    let prompts = held_out_prompts(4, 0, Protocol::Text, false).unwrap();
    let picked: Vec<&Prompt> = prompts.iter().collect();
    let tasks: Vec<Prompt> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), 2))
        .collect();
    let options = config.play_options();
    let whole = play_tasks(&model, &tokenizer, &tasks, &options, "whole").unwrap();
    let replies = |samples: &[Sample]| -> Vec<Conversation> {
        samples.iter().map(|s| s.conversation.clone()).collect()
    };
    let in_parts = sample_prompts(&model, &tokenizer, &picked, &config, None).unwrap();
    assert_eq!(
        replies(&in_parts),
        whole
            .iter()
            .map(|p| p.episode.conversation.clone())
            .collect::<Vec<_>>()
    );

    let dir = tempfile::tempdir().unwrap();
    let saved = SavedParts {
        dir: dir.path().join("parts"),
        // Unique to this run, so that no machine-wide copy of an earlier run's parts answers.
        fingerprint: Fingerprint::new().value("run", dir.path()).unwrap(),
    };
    let first = sample_prompts(&model, &tokenizer, &picked, &config, Some(&saved)).unwrap();
    assert_eq!(replies(&first), replies(&in_parts));
    let part = |p: usize| saved.dir.join(format!("samples-{p:03}.json"));
    let written = |p: usize| std::fs::metadata(part(p)).unwrap().modified().unwrap();
    assert!((0..2).all(|p| part(p).is_file()));
    // A sampling cut off after its first part: the next call plays only the one missing.
    let kept = written(0);
    std::fs::remove_file(part(1)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = sample_prompts(&model, &tokenizer, &picked, &config, Some(&saved)).unwrap();
    assert_eq!(replies(&again), replies(&in_parts));
    assert_eq!(written(0), kept);
    assert!(part(1).is_file());
    saved.remove().unwrap();
    assert!(!saved.dir.exists());
}
