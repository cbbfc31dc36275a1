//! Reward throughput: the SQL execution reward on 10,000 completions over Spider dev's
//! databases (`data/spider-dev`), and the ReAct format reward.
//!
//! The completions cycle through the 972 dev questions in five forms: the gold SQL in the
//! v0.2 text protocol, a wrong `LIMIT 1` variant, the gold as a `<tool_call>`, a syntax
//! error, and prose without SQL.
//!
//! ```text
//! cargo bench --bench rewards -- [--n 10000]
//! ```

use std::time::Instant;

use agentbench_tuning::reward::{SqlReward, db_format_reward};
use serde::Deserialize;

#[derive(Deserialize)]
struct SpiderItem {
    db_id: String,
    query: String,
}

fn completion(kind: usize, gold: &str) -> String {
    let one_line = gold.replace('\n', " ");
    match kind {
        0 => format!("I look it up.\nAction: Operation\n```sql\n{one_line}\n```"),
        1 => format!("```sql\n{} LIMIT 1\n```", one_line.trim_end_matches(';')),
        2 => format!(
            "<tool_call>\n{{\"name\": \"execute_sql\", \"arguments\": {{\"query\": {}}}}}\n</tool_call>",
            serde_json::to_string(&one_line).unwrap()
        ),
        3 => format!("```sql\nSELEC {one_line}\n```"),
        _ => "I am not sure how to answer that.".to_string(),
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mut n: usize = if bench { 10_000 } else { 200 };
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--n") {
        n = args[i + 1].parse().expect("--n N");
    }
    let dir = agentbench_tuning::paths::spider_dev_dir();
    let text = std::fs::read_to_string(dir.join("dev.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("dev.json").display()));
    let items: Vec<SpiderItem> = serde_json::from_str(&text).expect("Spider dev.json");
    let tasks: Vec<(&SpiderItem, String)> = (0..n)
        .map(|i| {
            let item = &items[i % items.len()];
            (item, completion((i + i / items.len()) % 5, &item.query))
        })
        .collect();
    let mut reward = SqlReward::new(dir.join("database"));
    // Load every database and cache gold results first: the steady state of a training run.
    for item in &items {
        reward
            .score(&item.db_id, &item.query, &item.query)
            .expect("warm-up");
    }
    let start = Instant::now();
    let mut total = 0.0;
    for (item, c) in &tasks {
        total += reward
            .score(&item.db_id, &item.query, c)
            .expect("score")
            .value;
    }
    let sql_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let format_total: f64 = tasks.iter().map(|(_, c)| db_format_reward(c).value()).sum();
    let format_s = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "completions": n,
            "sql_rewards_per_s": n as f64 / sql_s,
            "sql_mean_reward": total / n as f64,
            "format_rewards_per_s": n as f64 / format_s,
            "format_mean_reward": format_total / n as f64,
        })
    );
}
