//! Rewards on real data: the SQL execution reward over Spider dev's SQLite databases
//! (`data/spider-dev`), and its verdicts on broken completions.

use std::path::PathBuf;

use agentbench_tuning::reward::{SqlReward, SqlVerdict};
use serde::Deserialize;

#[derive(Deserialize)]
struct SpiderItem {
    db_id: String,
    query: String,
}

fn spider() -> (PathBuf, Vec<SpiderItem>) {
    let dir = agentbench_tuning::paths::spider_dev_dir();
    let items =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dev.json")).unwrap()).unwrap();
    (dir.join("database"), items)
}

#[test]
fn every_gold_query_matches_itself() {
    let (db, items) = spider();
    let mut reward = SqlReward::new(db);
    for item in &items {
        let completion = format!("Action: Operation\n```sql\n{}\n```", item.query);
        let score = reward.score(&item.db_id, &item.query, &completion).unwrap();
        assert_eq!(score.verdict, SqlVerdict::Match, "{}", item.query);
    }
    assert_eq!(items.len(), 972);
}

#[test]
fn broken_completions_get_their_penalties() {
    let (db, _) = spider();
    let mut reward = SqlReward::new(db);
    let gold = "SELECT name FROM singer ORDER BY age DESC";
    let score = |r: &mut SqlReward, c: &str| r.score("concert_singer", gold, c).unwrap();
    assert_eq!(score(&mut reward, "I cannot help.").value, -0.5);
    assert_eq!(
        score(&mut reward, "```sql\nSELEC name FROM singer\n```").value,
        -0.25
    );
    // read-only: a model cannot change the database the next completion is scored on
    assert_eq!(
        score(&mut reward, "```sql\nDELETE FROM singer\n```").value,
        -0.25
    );
    assert_eq!(score(&mut reward, gold).value, 1.0);
    // same rows in another order: the gold orders, so this is only a partial match
    let unordered = score(&mut reward, "SELECT name FROM singer ORDER BY age ASC");
    assert_eq!(unordered.verdict, SqlVerdict::Partial);
    assert_eq!(unordered.value, 0.5);
    let part = score(&mut reward, "SELECT name FROM singer WHERE age > 40");
    assert!(part.value > 0.0 && part.value < 0.5, "{part:?}");
    let err = reward
        .score("no_such_db", gold, gold)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_db"), "{err}");
}
