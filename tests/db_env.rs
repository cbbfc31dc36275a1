//! DB Bench episodes on SQLite: scripted agents against AgentBench's dev items, the sandbox
//! against hostile SQL (the committed corpus in tests/fixtures/db/), and parser fuzzing.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentbench_tuning::chat::Message;
use agentbench_tuning::env::Environment;
use agentbench_tuning::env::db::{
    DbEnv, DbItem, DbStatus, MAX_ROUNDS, Sandbox, SandboxLimits, SqlResult, parse_reply,
};
use agentbench_tuning::rng::Rng;

fn dev_items() -> Option<Vec<DbItem>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/agentbench-dbbench/dev.jsonl");
    if !path.is_file() {
        eprintln!("skipped: {} is absent", path.display());
        return None;
    }
    Some(DbItem::read_jsonl(&path).unwrap())
}

fn operation(sql: &str) -> Message {
    Message::assistant(format!(
        "Let me look.\nAction: Operation\n```sql\n{sql}\n```"
    ))
}

fn answer(text: &str) -> Message {
    Message::assistant(format!("I know it.\nAction: Answer\nFinal Answer: {text}"))
}

#[test]
fn gold_statements_score_every_modification_item() {
    let Some(items) = dev_items() else {
        return;
    };
    let mut checked = 0;
    for item in items.into_iter().filter(DbItem::is_modification) {
        let gold = item.label[0].as_str().unwrap().to_string();
        let mut env = DbEnv::new(item);
        let opening = env.reset().unwrap();
        assert_eq!(opening.messages.len(), 3);
        let step = env.step(&operation(&gold)).unwrap();
        assert!(!step.done);
        let end = env.step(&answer("[\"done\"]")).unwrap();
        assert!(end.done);
        assert_eq!(end.reward, 1.0, "{gold}");
        checked += 1;
    }
    assert_eq!(checked, 40);
}

#[test]
fn a_query_episode_observes_python_rows_and_scores_the_answer() {
    let Some(items) = dev_items() else {
        return;
    };
    let item = items.into_iter().find(|i| !i.is_modification()).unwrap();
    let label = item.label[0].as_str().unwrap().to_string();
    let table = item.table.table_name.clone();
    let mut env = DbEnv::new(item.clone());
    env.reset().unwrap();
    // Backticks around names with spaces, MySQL style.
    let sql =
        format!("SELECT `Representative`, `Presentation of Credentials` FROM `{table}` LIMIT 1;");
    let step = env.step(&operation(&sql)).unwrap();
    assert_eq!(
        step.observation[0].content,
        "[('Dabney H. Maury', 'January 20, 1887')]"
    );
    let end = env.step(&answer(&format!("[\"{label}\"]"))).unwrap();
    assert_eq!(end.reward, 1.0);
    assert_eq!(env.outcome().unwrap().status, DbStatus::Completed);

    // A wrong answer scores 0; a reply with no pattern fails validation.
    let mut env = DbEnv::new(item.clone());
    env.reset().unwrap();
    assert_eq!(env.step(&answer("[\"1999\"]")).unwrap().reward, 0.0);
    let mut env = DbEnv::new(item);
    env.reset().unwrap();
    let end = env.step(&Message::assistant("")).unwrap();
    assert!(end.done && end.reward == 0.0);
    assert_eq!(
        env.outcome().unwrap().status,
        DbStatus::AgentValidationFailed
    );
}

#[test]
fn rounds_are_limited_and_long_results_truncated() {
    let Some(items) = dev_items() else {
        return;
    };
    let item = items.into_iter().next().unwrap();
    let mut env = DbEnv::new(item);
    env.reset().unwrap();
    let big = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, 'padding' FROM c";
    for round in 0..MAX_ROUNDS {
        let step = env.step(&operation(big)).unwrap();
        assert!(!step.done, "round {round}");
        let obs = &step.observation[0].content;
        assert!(
            obs.ends_with("[TRUNCATED]") && obs.chars().count() == 800 + 11,
            "{obs}"
        );
        assert!(obs.starts_with("[(1, 'padding'), (2, 'padding')"));
    }
    let end = env.step(&operation("SELECT 1")).unwrap();
    assert!(end.done);
    assert_eq!(env.outcome().unwrap().status, DbStatus::TaskLimitReached);
    assert_eq!(env.outcome().unwrap().rounds, MAX_ROUNDS);
}

fn sandbox(timeout_ms: u64) -> Sandbox {
    let limits = SandboxLimits {
        timeout: Duration::from_millis(timeout_ms),
        ..SandboxLimits::default()
    };
    Sandbox::new(limits, |conn| {
        conn.execute_batch(
            "CREATE TABLE t (name TEXT, `my col` TEXT, n TEXT);
             INSERT INTO t VALUES ('a', 'x', '1'), ('b', NULL, '2'), ('c', 'z', '3');",
        )?;
        Ok(())
    })
    .unwrap()
}

#[test]
fn mysql_isms_work() {
    let sb = sandbox(1000);
    let obs = |sql: &str| sb.execute(sql).observation();
    assert_eq!(obs("SELECT `my col` FROM `t` LIMIT 1, 1"), "[(None,)]");
    assert_eq!(
        obs("SELECT IFNULL(`my col`, 'none'), CONCAT(name, '-', n) FROM t WHERE name = 'b'"),
        "[('none', 'b-2')]"
    );
    // SQLite's typing: SUM of integer-like text is an integer (MySQL would say 6.0).
    assert_eq!(
        obs("SELECT COUNT(*), SUM(n), AVG(n) FROM t"),
        "[(3, 6, 2.0)]"
    );
    assert_eq!(obs("PRAGMA table_info(t)").matches("TEXT").count(), 3);
    assert_eq!(obs("UPDATE t SET n = '9' WHERE name = 'a'"), "[]");
    assert_eq!(obs("SELECT n FROM t WHERE name = 'a'"), "[('9',)]");
    assert_eq!(obs("   "), "Query was empty");
}

#[test]
fn hostile_sql_ends_as_a_clean_observation() {
    let corpus = common::fixture("db/nasty_sql.txt");
    let text = std::fs::read_to_string(corpus).unwrap();
    let sb = sandbox(300);
    let mut errors = 0;
    for sql in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let start = Instant::now();
        let result = sb.execute(sql);
        let took = start.elapsed();
        // The time limit, plus slack for a loaded machine: never a hang.
        assert!(took < Duration::from_secs(5), "{sql}: {took:?}");
        let obs = result.observation();
        assert!(obs.chars().count() <= 811, "{sql}");
        if matches!(result, SqlResult::Error(_)) {
            errors += 1;
        }
    }
    assert!(errors >= 25, "only {errors} statements were refused");
    // Nothing escaped to the file system, and the database still answers (the corpus may
    // drop its own table: that is the episode's copy).
    assert!(!std::path::Path::new("/tmp/abt-escape.db").exists());
    assert!(!std::path::Path::new("/tmp/abt-escape-vacuum.db").exists());
    assert_eq!(sb.execute("SELECT 1").observation(), "[(1,)]");
    for refused in [
        "ATTACH ':memory:' AS m",
        "VACUUM INTO '/tmp/abt-escape-vacuum.db'",
        "SELECT load_extension('x')",
        "PRAGMA writable_schema = ON",
        "SELECT randomblob(100000000)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c",
        "SELECT 1; DROP TABLE t",
    ] {
        assert!(
            matches!(sb.execute(refused), SqlResult::Error(_)),
            "{refused} was allowed"
        );
    }
}

#[test]
fn random_replies_never_panic_the_parser_or_the_sandbox() {
    const PIECES: [&str; 24] = [
        "Action: ",
        "Operation",
        "Answer",
        "\n",
        "```sql\n",
        "\n```",
        "```",
        "Final Answer:",
        " [\"",
        "\"]",
        "SELECT ",
        "* ",
        "FROM t",
        " WHERE ",
        "name = 'a'",
        "'",
        "\"",
        "\\",
        "(",
        ")",
        ";",
        "é😀",
        "\u{0}",
        "\r\n",
    ];
    let sb = sandbox(200);
    let mut rng = Rng::new(42);
    for _ in 0..3000 {
        let n = rng.below(12);
        let reply: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
        let action = parse_reply(&reply, rng.below(2) == 0);
        if let agentbench_tuning::env::db::TextAction::Operation(sql) = action {
            let _ = sb.execute(&sql).observation();
        }
        let _ = agentbench_tuning::env::db::answer_matches(&reply, &[serde_json::json!("a")]);
    }
}
