//! Synthetic SQL worlds: every kind is generated, answers come from executing the gold SQL,
//! and every episode replays correct in `DbEnv` in both protocols.

use std::collections::{BTreeMap, BTreeSet};

use agentbench_tuning::data::DbEpisodeOptions;
use agentbench_tuning::data::synthetic::{
    SqlTaskKind, SyntheticOptions, Vocabulary, sql_task, sql_tasks, synthetic_episode,
};
use agentbench_tuning::env::db::{DbEnv, Sandbox, SandboxLimits, table_hash};
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::prelude::*;
use agentbench_tuning::rng::Rng;

#[test]
fn every_kind_has_ten_phrasings_and_tasks_have_dbbench_shape() {
    let vocab = Vocabulary::embedded();
    let options = SyntheticOptions::default();
    for kind in SqlTaskKind::ALL {
        let phrasings: BTreeSet<_> = kind.phrasings().into_iter().collect();
        assert!(
            phrasings.len() >= 10,
            "{}: {}",
            kind.name(),
            phrasings.len()
        );
        let mut questions = BTreeSet::new();
        for seed in 0..40 {
            let task = sql_task(vocab, kind, seed, &options).unwrap();
            let rows = &task.item.table.table_info.rows;
            assert!((5..=100).contains(&rows.len()), "{} rows", rows.len());
            assert!(
                task.item
                    .table
                    .table_info
                    .columns
                    .iter()
                    .all(|c| c.kind == "TEXT")
            );
            assert!(rows.iter().flatten().all(|v| v.is_string()));
            assert!(
                !task.item.description.contains('{'),
                "{}",
                task.item.description
            );
            assert_eq!(task.item.kind, vec![kind.dbbench_type().to_string()]);
            assert_eq!(task.item.is_modification(), kind.is_modification());
            questions.insert(task.item.description.clone());
        }
        assert!(questions.len() >= 38, "{}: questions repeat", kind.name());
    }
}

#[test]
fn tasks_are_deterministic_and_cover_the_domains() {
    let vocab = Vocabulary::embedded();
    let options = SyntheticOptions::default();
    let a = sql_tasks(vocab, 1500, 11, &options).unwrap();
    let b = sql_tasks(vocab, 5, 11, &options).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.item.description, y.item.description);
        assert_eq!(x.sql, y.sql);
    }
    let domains: BTreeSet<_> = a.iter().map(|t| t.domain.as_str()).collect();
    assert!(domains.len() >= 40, "{} domains drawn", domains.len());
    let mut kinds: BTreeMap<SqlTaskKind, usize> = BTreeMap::new();
    for t in &a {
        *kinds.entry(t.kind).or_default() += 1;
    }
    let modifications: usize = kinds
        .iter()
        .filter(|(k, _)| k.is_modification())
        .map(|(_, n)| n)
        .sum();
    let share = modifications as f64 / a.len() as f64;
    assert!((0.45..0.65).contains(&share), "modification share {share}");
    assert_eq!(kinds.len(), SqlTaskKind::ALL.len(), "{kinds:?}");
}

#[test]
fn answers_and_hashes_come_from_executing_the_gold_sql() {
    let vocab = Vocabulary::embedded();
    for task in sql_tasks(vocab, 200, 3, &SyntheticOptions::default()).unwrap() {
        let spec = task.item.table.clone();
        let sandbox = Sandbox::new(SandboxLimits::default(), |c| spec.materialise(c)).unwrap();
        let before = table_hash(sandbox.connection(), &spec.table_name).unwrap();
        let result = sandbox.execute(&task.sql);
        if task.kind.is_modification() {
            let after = table_hash(sandbox.connection(), &spec.table_name).unwrap();
            assert_ne!(before, after, "{} changed nothing", task.sql);
            assert_eq!(task.item.answer_md5.as_deref(), Some(after.as_str()));
        } else {
            let obs = result.observation();
            for v in &task.answer {
                assert!(obs.contains(&v.repr()), "{obs} lacks {}", v.repr());
            }
        }
    }
}

/// Plays one text-protocol reply sequence against the item.
fn score(item: &agentbench_tuning::env::db::DbItem, replies: &[&str]) -> bool {
    let mut env = DbEnv::new(item.clone());
    env.reset().unwrap();
    for r in replies {
        if env.step(&Message::assistant(*r)).unwrap().done {
            break;
        }
    }
    env.outcome().is_some_and(|o| o.correct)
}

#[test]
fn the_scorer_tells_gold_from_wrong() {
    let vocab = Vocabulary::embedded();
    let options = SyntheticOptions::default();
    let mut checked = 0;
    for seed in 0..60 {
        let update = sql_task(vocab, SqlTaskKind::Update, seed, &options).unwrap();
        let op = format!("Action: Operation\n```sql\n{}\n```", update.sql);
        assert!(score(
            &update.item,
            &[&op, "Action: Answer\nFinal Answer: [\"none\"]"]
        ));
        assert!(!score(
            &update.item,
            &["Action: Answer\nFinal Answer: [\"none\"]"]
        ));
        let count = sql_task(vocab, SqlTaskKind::Counting, seed, &options).unwrap();
        let right = format!("Action: Answer\nFinal Answer: [{}]", count.answer[0].repr());
        assert!(score(&count.item, &[&right]));
        let wrong = format!(
            "Action: Answer\nFinal Answer: [{}]",
            count.answer[0].repr() + "1"
        );
        assert!(!score(&count.item, &[&wrong]));
        checked += 1;
    }
    assert_eq!(checked, 60);
}

#[test]
fn every_episode_replays_correct_in_both_protocols() {
    let vocab = Vocabulary::embedded();
    let tasks = sql_tasks(vocab, 300, 5, &SyntheticOptions::default()).unwrap();
    let mut repaired = 0;
    let mut negatives = 0;
    for protocol in [Protocol::Text, Protocol::Tools] {
        let options = DbEpisodeOptions {
            protocol,
            ..Default::default()
        };
        let mut rng = Rng::new(1);
        for task in &tasks {
            let episode = synthetic_episode(task, &options, &mut rng)
                .unwrap()
                .unwrap_or_else(|| panic!("{} did not replay", task.sql));
            repaired += usize::from(episode.repaired);
            negatives += usize::from(episode.negative);
            let last = episode.conversation.messages.last().unwrap();
            assert!(last.train, "the answer turn is trained on");
        }
    }
    assert!(
        repaired > 60 && negatives > 10,
        "{repaired} repaired, {negatives} negatives"
    );
}

#[test]
fn no_generated_table_is_named_like_an_evaluation_table() {
    let guard = agentbench_tuning::data::ContaminationGuard::new(8)
        .with_dbbench(&agentbench_tuning::paths::dbbench_dev_items())
        .unwrap();
    for (_, table) in Vocabulary::embedded().tables() {
        let sentence = format!("The name of this table is {}.", table.name);
        assert!(guard.check_text(&sentence).is_none(), "{}", table.name);
    }
}
