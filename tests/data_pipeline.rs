//! Phases 01 and 02 end to end: the SFT set with its report, the guard on planted evaluation
//! items, and balanced prompts whose gold SQL replays correct.

use std::collections::BTreeMap;

use agentbench_tuning::data::{
    DEV_SEED, DataConfig, HELD_OUT_SEED, PROMPT_SEED, build_sft, read_sft, write_sft,
};
use agentbench_tuning::env::db::{DbEnv, DbItem};
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::prelude::{Message, Profile};
use agentbench_tuning::prompts::{
    Difficulty, HouseholdPrompt, Prompt, PromptConfig, Split, build_prompts, held_out_prompts,
    read_prompts, write_prompts,
};

fn small() -> DataConfig {
    DataConfig {
        synthetic_sql: 60,
        household: 12,
        household_negatives: 6,
        protocols: vec![Protocol::Text, Protocol::Tools],
        ..agentbench_tuning::presets::Presets::resolve(
            Profile::Tiny,
            agentbench_tuning::config::Scale::Full,
        )
        .unwrap()
        .data
    }
}

#[test]
fn the_sft_set_is_written_with_its_report_and_reads_back() {
    let config = small();
    let (records, report) = build_sft(&config, None).unwrap();
    assert_eq!(records.len(), report.agent_records);
    for s in report
        .sources
        .iter()
        .filter(|s| s.source == "synthetic_sql")
    {
        assert_eq!(s.kept, 60, "every synthetic episode replays correct");
    }
    assert!(report.contaminated.is_empty(), "{:?}", report.contaminated);
    let kinds: BTreeMap<&str, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.kind.as_str()).or_default() += 1;
        m
    });
    for kind in ["insert", "update", "lookup", "put", "puttwo"] {
        assert!(kinds.contains_key(kind), "{kind} missing: {kinds:?}");
    }
    assert!(
        records
            .iter()
            .all(|r| r.protocol.is_some() && r.trained_turns() > 0)
    );
    let dir = tempfile::tempdir().unwrap();
    write_sft(dir.path(), &records, &report).unwrap();
    assert_eq!(read_sft(dir.path()).unwrap(), records);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["agent_records"], records.len());
    let err = read_sft(&dir.path().join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("01_data"), "{err}");
}

/// The default configuration guards against AgentBench's dev items, kept in the tree.
#[test]
fn planted_evaluation_items_are_all_caught() {
    let items = DbItem::read_jsonl(&agentbench_tuning::paths::dbbench_dev_items()).unwrap();
    assert_eq!(items.len(), 60);
    let dir = tempfile::tempdir().unwrap();
    let react = dir.path().join("planted.jsonl");
    let lines: Vec<String> = items
        .iter()
        .step_by(6)
        .map(|item| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Please help. {}", item.description)},
                {"role": "assistant", "content": "Let me look."}
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(&react, lines.join("\n")).unwrap();
    let config = DataConfig {
        react: vec![react.into()],
        ..small()
    };
    let (records, report) = build_sft(&config, None).unwrap();
    assert_eq!(
        report.contaminated.len(),
        lines.len(),
        "{:?}",
        report.contaminated
    );
    assert!(report.contaminated.iter().all(|d| d.source == "react"));
    assert!(records.iter().all(|r| r.source != "react"));
}

#[test]
fn prompts_are_balanced_and_their_gold_sql_replays_correct() {
    let config = PromptConfig {
        db: 30,
        household: 12,
        protocols: vec![Protocol::Text, Protocol::Tools],
        ..agentbench_tuning::presets::Presets::resolve(
            Profile::Tiny,
            agentbench_tuning::config::Scale::Full,
        )
        .unwrap()
        .prompts
    };
    let prompts = build_prompts(&config).unwrap();
    assert_eq!(prompts.len(), 2 * (30 + 12));
    let mut per: BTreeMap<(String, Difficulty), usize> = BTreeMap::new();
    for p in &prompts {
        *per.entry((p.source(), p.difficulty())).or_default() += 1;
    }
    for d in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard] {
        assert_eq!(per[&("db/synthetic_sql".to_string(), d)], 20, "{per:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    write_prompts(dir.path(), &prompts).unwrap();
    let back = read_prompts(dir.path()).unwrap();
    assert_eq!(back.len(), prompts.len());
    for p in back {
        let Prompt::Db(db) = p else { continue };
        let mut env = DbEnv::new(db.item.clone());
        env.reset().unwrap();
        env.step(&Message::assistant(format!(
            "Action: Operation\n```sql\n{}\n```",
            db.gold_sql
        )))
        .unwrap();
        let answer = if db.item.is_modification() {
            "[\"none\"]".to_string()
        } else {
            serde_json::to_string(&db.item.label).unwrap()
        };
        env.step(&Message::assistant(format!(
            "Action: Answer\nFinal Answer: {answer}"
        )))
        .unwrap();
        assert!(env.outcome().unwrap().correct, "{}", db.gold_sql);
    }
    let bad = PromptConfig { seed: 3, ..config };
    assert!(
        build_prompts(&bad).is_err(),
        "prompt seeds must stay out of the SFT range"
    );
}

/// The household games' seeds.
fn seeds(prompts: &[Prompt]) -> Vec<u64> {
    prompts
        .iter()
        .filter_map(|p| match p {
            Prompt::Household(h) => Some(h.seed),
            Prompt::Db(_) => None,
        })
        .collect()
}

#[test]
fn the_dev_and_test_splits_share_no_task() {
    let test = Split::Test.prompts(60, 12, Protocol::Text, false).unwrap();
    let dev = Split::Dev.prompts(60, 12, Protocol::Text, false).unwrap();
    assert_eq!(
        serde_json::to_string(&test).unwrap(),
        serde_json::to_string(&held_out_prompts(60, 12, Protocol::Text, false).unwrap()).unwrap()
    );
    assert!(seeds(&dev).iter().all(|&s| s >= DEV_SEED));
    assert!(
        seeds(&test)
            .iter()
            .all(|s| (HELD_OUT_SEED..DEV_SEED).contains(s))
    );
    let items = |ps: &[Prompt]| -> Vec<String> {
        ps.iter()
            .filter_map(|p| match p {
                Prompt::Db(d) => Some(serde_json::to_string(&d.item).unwrap()),
                Prompt::Household(_) => None,
            })
            .collect()
    };
    let test_items = items(&test);
    let shared = items(&dev)
        .iter()
        .filter(|i| test_items.contains(i))
        .count();
    assert_eq!(shared, 0, "{shared} DB tasks are in both splits");
    // A split cannot run into the next one's seeds.
    let too_many = Split::MAX_TASKS as usize + 1;
    assert!(
        Split::Test
            .prompts(too_many, 0, Protocol::Text, false)
            .is_err()
    );
}

#[test]
fn held_out_tasks_are_disjoint_from_prompts_and_play_through_task_env() {
    let prompts = build_prompts(&PromptConfig {
        db: 24,
        household: 12,
        ..agentbench_tuning::presets::Presets::resolve(
            Profile::Tiny,
            agentbench_tuning::config::Scale::Full,
        )
        .unwrap()
        .prompts
    })
    .unwrap();
    let held = held_out_prompts(24, 12, Protocol::Text, false).unwrap();
    assert_eq!(held.len(), 36);
    let again = held_out_prompts(24, 12, Protocol::Text, false).unwrap();
    assert_eq!(
        serde_json::to_string(&held).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    assert!(seeds(&held).iter().all(|&s| s >= HELD_OUT_SEED));
    assert!(
        seeds(&prompts)
            .iter()
            .all(|s| (PROMPT_SEED..HELD_OUT_SEED).contains(s))
    );
    let questions: Vec<&str> = prompts
        .iter()
        .filter_map(|p| match p {
            Prompt::Db(d) => Some(d.item.description.as_str()),
            Prompt::Household(_) => None,
        })
        .collect();
    let mut fresh = 0;
    for p in &held {
        let mut env = p.env();
        let opening = env.reset().unwrap();
        match p {
            Prompt::Db(d) => {
                fresh += usize::from(!questions.contains(&d.item.description.as_str()));
                let step = env
                    .step(&Message::assistant(format!(
                        "Action: Operation\n```sql\n{}\n```",
                        d.gold_sql
                    )))
                    .unwrap();
                assert!(!step.done);
            }
            Prompt::Household(h) => {
                assert!(!h.example);
                // Without the worked example the opening is the rules and the task alone.
                let with = Prompt::Household(HouseholdPrompt {
                    example: true,
                    ..h.clone()
                })
                .env()
                .reset()
                .unwrap();
                assert!(with.messages.len() > opening.messages.len());
            }
        }
    }
    assert!(fresh >= 20, "only {fresh} of 24 held-out questions are new");
}

#[test]
fn a_template_without_tool_calls_refuses_the_tools_protocol() {
    let source = agentbench_tuning::model::ModelSource::default_model();
    let Ok(tokenizer) = agentbench_tuning::chat::Tokenizer::load(&source) else {
        println!("skipped: the default model is not fetched");
        return;
    };
    let config = DataConfig {
        synthetic_sql: 2,
        household: 0,
        household_negatives: 0,
        ..small()
    };
    let err = build_sft(&config, Some(&tokenizer))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tool calls"), "{err}");
    let text_only = DataConfig {
        protocols: vec![Protocol::Text],
        ..config
    };
    let (records, report) = build_sft(&text_only, Some(&tokenizer)).unwrap();
    assert!(report.length_checked && !records.is_empty());
}

/// General chat is read only as far as the 1 : 4 mix needs (with a margin), not whole, and
/// the mix keeps the ratio.
#[test]
fn general_chat_is_read_as_far_as_the_mix_needs() {
    let dir = tempfile::tempdir().unwrap();
    let chat = dir.path().join("chat.jsonl");
    let lines: Vec<String> = (0..20_000)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("Tell me about topic number {i}, please.")},
                {"role": "assistant", "content": format!("Topic {i} is {} and more.", i * 7)}
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(&chat, lines.join("\n")).unwrap();
    let config = DataConfig {
        chat: Some(chat.as_path().into()),
        ..small()
    };
    let (records, report) = build_sft(&config, None).unwrap();
    let read = report
        .sources
        .iter()
        .find(|s| s.source == "chat")
        .unwrap()
        .attempted;
    let agent: usize = report
        .sources
        .iter()
        .filter(|s| s.source != "chat")
        .map(|s| s.kept)
        .sum();
    assert_eq!(read, (agent as f64 * 4.0 * 1.25).ceil() as usize, "{agent}");
    assert!(read < 20_000);
    assert_eq!(report.general_records, records.len() - report.agent_records);
    let ratio = report.general_records as f64 / report.agent_records as f64;
    assert!((ratio - 4.0).abs() < 0.05, "{ratio}");
}

/// Several trajectory files read as one source, capped by `max_examples`, with the licence of
/// their folder's card; a source listed in `optional` that cannot be read is skipped with a
/// note, and one that is not stops the build naming it.
#[test]
fn sources_are_capped_licensed_and_optional_ones_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let trajectories = |name: &str, n: usize| {
        let path = dir.path().join(name);
        let lines: Vec<String> = (0..n)
            .map(|i| {
                serde_json::json!({"conversations": [
                    {"from": "human", "value": format!("Task {name} {i}: find the red mug.")},
                    {"from": "gpt", "value": format!("Thought: look around {i}.\nAction: look")}
                ]})
                .to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    };
    std::fs::write(
        dir.path().join("README.md"),
        "---\nlicense: apache-2.0\n---\n# Trajectories\n",
    )
    .unwrap();
    let config = DataConfig {
        react: vec![
            trajectories("webshop.jsonl", 30).into(),
            trajectories("sciworld.jsonl", 10).into(),
        ],
        max_examples: [("react".to_string(), 20)].into(),
        chat: Some(dir.path().join("missing-chat").into()),
        optional: vec!["chat".into()],
        ..small()
    };
    let (_, report) = build_sft(&config, None).unwrap();
    let react = report.sources.iter().find(|s| s.source == "react").unwrap();
    assert_eq!(react.attempted, 20);
    assert_eq!(react.licence.as_deref(), Some("apache-2.0"));
    assert!(report.sources.iter().all(|s| s.source != "chat"));
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("chat skipped (optional)") && n.contains("missing-chat")),
        "{:?}",
        report.notes
    );
    let required = DataConfig {
        optional: Vec::new(),
        ..config
    };
    let err = build_sft(&required, None).unwrap_err().to_string();
    assert!(err.contains("missing-chat"), "{err}");
}
