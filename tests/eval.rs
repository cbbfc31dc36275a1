//! The quick held-out score on the embedded default model: one result per task in task
//! order, the same results whatever the batch size, and paired comparisons that refuse
//! different task sets.

mod common;

use agentbench_tuning::chat::Tokenizer;
use agentbench_tuning::eval::{QuickConfig, compare, quick_score};
use agentbench_tuning::model::{Decoder, Mode};

fn default_model() -> Option<(Decoder, Tokenizer)> {
    common::default_decoder()
}

#[test]
fn quick_score_plays_every_task_once_in_order() {
    let Some((model, tokenizer)) = default_model() else {
        return;
    };
    let config = QuickConfig {
        db: 3,
        household: 2,
        batch: 2,
        max_new_tokens: 24,
        db_turns: 2,
        household_turns: 2,
        ..common::tiny().quick
    };
    let tasks = config.tasks().unwrap();
    assert_eq!(tasks.len(), 5);
    let a = quick_score("a", &model, &tokenizer, &tasks, &config, Mode::Reference).unwrap();
    assert_eq!(a.results.len(), tasks.len());
    for (r, t) in a.results.iter().zip(&tasks) {
        assert_eq!((&r.source, &r.kind), (&t.source(), &t.kind()));
        assert!(r.turns >= 1 && r.turns <= 2, "{} turns", r.turns);
        // The conversation holds the opening and the replies.
        assert!(r.conversation.messages.len() > r.prompt_messages);
    }
    assert!(a.success_rate(Some("db")).is_finite());
    // Every episode carries its graded score, in the scale's range [−0.5, 1].
    assert!(
        a.results
            .iter()
            .all(|r| r.score.is_some_and(|s| (-0.5..=1.0).contains(&s)))
    );
    assert!((-0.5..=1.0).contains(&a.mean_reward()));
    assert!(a.success_rate(Some("nothing")).is_nan());
    assert_eq!(
        a.table().unwrap().rows().len(),
        3,
        "two sources and the total"
    );

    // Every failed task gets one cause; household games are tabled per type with their steps.
    let failed = a.results.iter().filter(|r| !r.success).count();
    assert_eq!(a.errors().failed(), failed);
    let household = a.kind_table("household").unwrap();
    let played: usize = household
        .rows()
        .iter()
        .map(|row| row[1].parse::<usize>().unwrap())
        .sum();
    assert_eq!(played, 2);

    // Greedy decoding does not depend on which episodes share a batch.
    let b = quick_score(
        "b",
        &model,
        &tokenizer,
        &tasks,
        &QuickConfig { batch: 5, ..config },
        Mode::Reference,
    )
    .unwrap();
    for (x, y) in a.results.iter().zip(&b.results) {
        assert_eq!(x.conversation, y.conversation);
    }
    let same = compare(&a, &b).unwrap();
    assert_eq!((same.only_a, same.only_b, same.gap), (0, 0, 0.0));
    assert_eq!(same.p_value, 1.0);
    assert_eq!(same.both, a.solved());

    let mut fewer = b.clone();
    fewer.results.pop();
    assert!(compare(&a, &fewer).is_err());
}
