//! The source loaders on the real Spider dev set and FireAct trajectories kept in `data/`.

use agentbench_tuning::chat::Role;
use agentbench_tuning::data::{load_react, load_schemas, load_spider};
use agentbench_tuning::paths;

#[test]
fn spider_dev_loads_972_examples_over_19_databases() {
    let dir = paths::spider_dev_dir();
    let examples = load_spider(&dir, "dev.json", None).unwrap();
    assert_eq!(examples.len(), 972);
    let mut dbs: Vec<&str> = examples.iter().map(|e| e.db_id.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    assert_eq!(dbs.len(), 19);
    assert!(
        examples
            .iter()
            .all(|e| e.db_path.is_file() && !e.sql.is_empty())
    );
    let schemas = load_schemas(&dir.join("tables.json")).unwrap();
    for db in &dbs {
        let schema = schemas.iter().find(|s| s.db_id == *db).expect("schema");
        assert!(schema.tables.iter().all(|t| !t.columns.is_empty()), "{db}");
    }
}

#[test]
fn fireact_sample_loads_168_react_conversations() {
    let conversations = load_react(paths::fireact_sample()).unwrap();
    assert_eq!(conversations.len(), 168);
    let first = &conversations[0];
    assert_eq!(first.messages[0].role, Role::User);
    assert!(first.messages[1].content.starts_with("Thought: "));
}

/// Every Spider dev example becomes a replayed episode in both protocols, or is skipped for a
/// stated reason; repaired episodes contain the error observation.
#[test]
fn spider_dev_examples_become_replayed_db_episodes() {
    use agentbench_tuning::data::{DbEpisodeOptions, db_episode};
    use agentbench_tuning::env::Protocol;
    use agentbench_tuning::rng::Rng;
    use std::collections::BTreeMap;
    let dir = paths::spider_dev_dir();
    let examples = load_spider(&dir, "dev.json", None).unwrap();
    for protocol in [Protocol::Text, Protocol::Tools] {
        let options = DbEpisodeOptions {
            protocol,
            ..DbEpisodeOptions::default()
        };
        let mut rng = Rng::new(1);
        let (mut kept, mut repaired, mut negatives) = (0, 0, 0);
        let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
        for example in &examples {
            match db_episode(example, &options, &mut rng).unwrap() {
                Ok(episode) => {
                    kept += 1;
                    let m = &episode.conversation.messages;
                    assert!(
                        !m[1].train || protocol == Protocol::Tools,
                        "the opening is frozen"
                    );
                    assert!(m.last().unwrap().train);
                    if episode.negative {
                        negatives += 1;
                        assert!(!m[2].train, "the negative sample is masked: {:?}", m[2]);
                        let complaint = &m[3].content;
                        assert!(
                            complaint.starts_with("Invalid function call")
                                || complaint.starts_with("Internal error: No tool calls"),
                            "{complaint}"
                        );
                    }
                    if episode.repaired {
                        repaired += 1;
                        let frozen = m
                            .iter()
                            .filter(|m| {
                                m.role == agentbench_tuning::chat::Role::Assistant && !m.train
                            })
                            .count();
                        let expected = 1
                            + usize::from(protocol == Protocol::Text)
                            + usize::from(episode.negative);
                        assert_eq!(frozen, expected, "the mistake is masked");
                        let observed = episode
                            .conversation
                            .messages
                            .iter()
                            .any(|m| m.content.contains("no such column"));
                        assert!(observed, "{:?}", episode.conversation);
                    }
                }
                Err(skip) => *skipped.entry(format!("{skip:?}")).or_default() += 1,
            }
        }
        println!(
            "{protocol:?}: {kept} of {} kept ({repaired} repaired, {negatives} negative samples); skipped {skipped:?}",
            examples.len()
        );
        assert!(!skipped.contains_key("NotReplayed"), "{skipped:?}");
        assert!(kept > 700, "{kept}");
        assert!(repaired > kept / 10, "{repaired}");
        match protocol {
            Protocol::Text => assert_eq!(negatives, 0),
            Protocol::Tools => assert!(negatives > kept / 20, "{negatives}"),
        }
    }
}

/// The guard catches every planted DB Bench dev item (its question re-cased, or its table) and
/// reports what it finds among Spider-derived and household records.
#[test]
fn the_contamination_guard_catches_planted_dev_items() {
    use agentbench_tuning::chat::{Conversation, Message};
    use agentbench_tuning::data::{
        ContaminationGuard, DbEpisodeOptions, SftRecord, db_episode, household_records,
    };
    use agentbench_tuning::env::Protocol;
    use agentbench_tuning::env::db::DbItem;
    use agentbench_tuning::env::household::ExpertOptions;
    use agentbench_tuning::rng::Rng;
    let dev = paths::dbbench_dev_items();
    let guard = ContaminationGuard::new(8).with_dbbench(&dev).unwrap();
    let items = DbItem::read_jsonl(&dev).unwrap();
    let record = |text: String| SftRecord {
        conversation: Conversation::new(vec![Message::user(text), Message::assistant("ok")]),
        source: "planted".into(),
        kind: "select".into(),
        protocol: None,
    };
    let mut planted = Vec::new();
    for (i, item) in items.iter().enumerate().step_by(6) {
        planted.push(match i % 3 {
            0 => record(format!(
                "Please answer: {}",
                item.description.to_uppercase()
            )),
            1 => record(item.description.replace(['?', ','], " ")),
            _ => record(format!(
                "The name of this table is {}, and the headers are whatever.",
                item.table.table_name
            )),
        });
    }
    let n = planted.len();
    let (clean, flagged) = guard.filter(planted);
    assert!(
        clean.is_empty(),
        "missed: {:?}",
        clean[0].conversation.messages[0].content
    );
    assert_eq!(flagged.len(), n);

    let spider = paths::spider_dev_dir();
    let mut rng = Rng::new(0);
    let mut records = Vec::new();
    for example in load_spider(&spider, "dev.json", None)
        .unwrap()
        .iter()
        .take(300)
    {
        if let Ok(e) = db_episode(example, &DbEpisodeOptions::default(), &mut rng).unwrap() {
            records.push(e.into_record("spider", "select", Protocol::Text));
        }
    }
    records
        .extend(household_records(60, 0, Protocol::Text, true, ExpertOptions::default()).unwrap());
    let total = records.len();
    let (_, hits) = guard.filter(records);
    println!(
        "contamination: {n}/{n} planted dev items caught; {} of {total} Spider/household records flagged",
        hits.len()
    );
    for (r, hit) in &hits {
        println!("  {} {}: {:?}", r.source, hit.signal, hit.evidence);
    }
}

#[test]
fn a_sparc_style_interaction_keeps_its_turns_and_each_turn_replays() {
    use agentbench_tuning::data::{DbEpisodeOptions, SqlInteraction, interaction_episode};
    use agentbench_tuning::env::Protocol;
    use agentbench_tuning::rng::Rng;
    let dir = paths::spider_dev_dir();
    let interaction = SqlInteraction {
        db_id: "concert_singer".into(),
        db_path: dir.join("database/concert_singer/concert_singer.sqlite"),
        turns: vec![
            (
                "How many singers are there?".into(),
                "SELECT count(*) FROM singer".into(),
            ),
            (
                "Which of them are from the Netherlands?".into(),
                "SELECT name FROM singer WHERE country = 'Netherlands'".into(),
            ),
            (
                "And how old is that singer?".into(),
                "SELECT age FROM singer WHERE country = 'Netherlands'".into(),
            ),
            // Fails on this database: the episode keeps the first three turns.
            (
                "What is their label?".into(),
                "SELECT label FROM singer".into(),
            ),
        ],
    };
    for protocol in [Protocol::Text, Protocol::Tools] {
        let options = DbEpisodeOptions {
            protocol,
            repair_share: 0.0,
            negative_share: 0.0,
            ..Default::default()
        };
        let (episode, turns) = interaction_episode(&interaction, &options, &mut Rng::new(1))
            .unwrap()
            .unwrap();
        assert_eq!(turns, 3);
        let follow_ups: Vec<&str> = episode
            .conversation
            .messages
            .iter()
            .filter(|m| m.role == Role::User && m.content.starts_with("Follow-up question:"))
            .map(|m| m.content.as_str())
            .collect();
        assert_eq!(follow_ups.len(), 2, "{protocol:?}");
        let text = serde_json::to_string(&episode.conversation).unwrap();
        assert!(
            text.contains("Joe Sharp"),
            "the second turn's observation is there"
        );
        if protocol == Protocol::Tools {
            // Every tool call has its reply before the next user turn.
            let calls = text.matches("\"tool_call_id\"").count();
            assert_eq!(calls, 5, "{text}");
        }
    }
}
