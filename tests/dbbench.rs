//! DB Bench evaluation: AgentBench's scoring of the 60 dev items played through `env::db` with
//! scripted gold and shuffled answers, and a model evaluated end to end.

mod common;

use agentbench_tuning::chat::Message;
use agentbench_tuning::env::db::DbItem;
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::eval::{DbBenchConfig, DbBenchMetrics, dbbench_prompts, evaluate_dbbench};
use agentbench_tuning::model::Mode;
use agentbench_tuning::python::str_repr;
use serde_json::Value;

fn dev_items() -> Vec<DbItem> {
    let path = common::dbbench_dev();
    DbItem::read_jsonl(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A label list as the Python literal an agent writes after `Final Answer:`.
fn python_list(label: &[Value]) -> String {
    let items: Vec<String> = label
        .iter()
        .map(|v| match v {
            Value::String(s) => str_repr(s),
            other => other.to_string(),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Plays each item with a scripted agent: `statement` (if any) as one SQL operation, then
/// `answer` as the final answer; returns (type, correct) per item.
fn play(items: &[DbItem], replies: &[(Option<String>, String)]) -> Vec<(String, bool)> {
    let prompts = dbbench_prompts(items, Protocol::Text).unwrap();
    prompts
        .iter()
        .zip(replies)
        .map(|(prompt, (statement, answer))| {
            let mut env = prompt.env();
            env.reset().unwrap();
            if let Some(sql) = statement {
                let step = env
                    .step(&Message::assistant(format!(
                        "I will change it.\nAction: Operation\n```sql\n{sql}\n```"
                    )))
                    .unwrap();
                assert!(!step.done, "{sql}");
            }
            let end = env
                .step(&Message::assistant(format!(
                    "Done.\nAction: Answer\nFinal Answer: {answer}"
                )))
                .unwrap();
            assert!(end.done);
            (prompt.kind(), env.score().success)
        })
        .collect()
}

fn gold_replies(items: &[DbItem]) -> Vec<(Option<String>, String)> {
    items
        .iter()
        .map(|item| {
            if item.is_modification() {
                let sql = item.label[0]
                    .as_str()
                    .expect("a gold statement")
                    .to_string();
                (Some(sql), "[\"done\"]".to_string())
            } else {
                (None, python_list(&item.label))
            }
        })
        .collect()
}

fn metrics(played: &[(String, bool)]) -> DbBenchMetrics {
    DbBenchMetrics::of(played.iter().map(|(k, c)| (k.as_str(), *c)))
}

#[test]
fn gold_answers_score_every_dev_item_correct() {
    let items = dev_items();
    assert_eq!(items.len(), 60);
    let played = play(&items, &gold_replies(&items));
    let wrong: Vec<usize> = (0..played.len()).filter(|&i| !played[i].1).collect();
    assert!(
        wrong.is_empty(),
        "gold answers scored wrong: items {wrong:?}"
    );
    let m = metrics(&played);
    assert_eq!(m.overall_cat_accuracy(), 1.0);
    for t in &m.types {
        assert!(
            t.total > 0,
            "dev.jsonl has every AgentBench type ({})",
            t.name
        );
        assert_eq!(t.correct, t.total, "{}", t.name);
    }
    let select = m.types.iter().find(|t| t.name == "SELECT").unwrap();
    assert_eq!(select.total, 20);
}

#[test]
fn shuffled_answers_score_wrong() {
    let items = dev_items();
    let gold = gold_replies(&items);
    // Each query gets the next query's answer, each modification the next one's statement.
    let rotate = |modification: bool| -> Vec<usize> {
        let idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].is_modification() == modification)
            .collect();
        (0..idx.len()).map(|k| idx[(k + 1) % idx.len()]).collect()
    };
    let mut shuffled = gold.clone();
    for modification in [false, true] {
        let idx: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].is_modification() == modification)
            .collect();
        for (&to, from) in idx.iter().zip(rotate(modification)) {
            shuffled[to] = gold[from].clone();
        }
    }
    let played = play(&items, &shuffled);
    let m = metrics(&played);
    let correct: usize = played.iter().filter(|p| p.1).count();
    // A few statements may fail on another table and leave it as is; none can hit the hash.
    assert!(
        correct <= 2,
        "{correct} shuffled answers scored correct: {:?}",
        m.types
    );
    assert!(m.overall_cat_accuracy() < 0.05, "{:?}", m.types);
}

#[test]
fn a_model_is_evaluated_end_to_end() {
    let Some((decoder, tokenizer)) = common::default_decoder() else {
        return;
    };
    let items: Vec<DbItem> = dev_items().into_iter().step_by(20).collect();
    let config = DbBenchConfig {
        batch: 3,
        max_new_tokens: 48,
        turns: 2,
        max_context: 2048,
        ..DbBenchConfig::default()
    };
    let score = evaluate_dbbench(
        "base",
        &decoder,
        &tokenizer,
        &items,
        &config,
        Mode::Reference,
    )
    .unwrap();
    assert_eq!(score.results.len(), 3);
    for (result, item) in score.results.iter().zip(&items) {
        assert_eq!(result.kind, item.kind[0]);
        assert!(result.turns >= 1 && result.turns <= 2);
        assert!(result.conversation.messages.len() > result.prompt_messages);
    }
    let m = score.metrics();
    let total: usize = m
        .types
        .iter()
        .filter(|t| ["SELECT", "INSERT", "UPDATE"].contains(&t.name.as_str()))
        .map(|t| t.total)
        .sum();
    assert_eq!(total, 3);
    assert!(score.table().is_ok());
    let failed = score.results.iter().filter(|r| !r.correct).count();
    let errors = score.errors();
    assert_eq!(errors.failed(), failed);
    assert_eq!(errors.played, 3);
    assert!(evaluate_dbbench("base", &decoder, &tokenizer, &[], &config, Mode::Reference).is_err());
}
