//! DB Bench episodes on SQLite: scripted agents against AgentBench's dev items, the sandbox
//! against hostile SQL (the committed corpus in tests/fixtures/db/), and parser fuzzing.

mod common;

use std::time::{Duration, Instant};

use agentbench_tuning::chat::{Message, Role, ToolCall};
use agentbench_tuning::env::db::{
    DbEnv, DbItem, DbStatus, MAX_ROUNDS, Sandbox, SandboxLimits, SqlResult, parse_reply,
};
use agentbench_tuning::env::{Environment, Protocol};
use agentbench_tuning::rng::Rng;
use serde_json::json;

fn dev_items() -> Option<Vec<DbItem>> {
    let path = common::dbbench_dev();
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

fn call(name: &str, arguments: serde_json::Value) -> Message {
    Message::assistant("").with_tool_calls(vec![ToolCall::new(name, arguments)])
}

#[test]
fn function_calling_episodes_run_tools_and_score_commits() {
    let Some(items) = dev_items() else {
        return;
    };
    // A modification through tool calls.
    let item = items.iter().find(|i| i.is_modification()).unwrap().clone();
    let gold = item.label[0].as_str().unwrap().to_string();
    let mut env = DbEnv::new(item).with_protocol(Protocol::Tools);
    let opening = env.reset().unwrap();
    assert_eq!(opening.messages[0].role, Role::System);
    assert!(
        opening.messages[1]
            .content
            .starts_with("Additional table information")
    );
    assert_eq!(opening.tools.len(), 2);
    let step = env
        .step(&call("execute_sql", json!({"query": gold})))
        .unwrap();
    assert_eq!(step.observation[0].role, Role::Tool);
    let end = env
        .step(&call("commit_final_answer", json!({"answers": ["done"]})))
        .unwrap();
    assert!(end.done && end.reward == 1.0);

    // A query, with the calls written as Qwen's <tool_call> text.
    let item = items.iter().find(|i| !i.is_modification()).unwrap().clone();
    let label = item.label[0].as_str().unwrap().to_string();
    let mut env = DbEnv::new(item).with_protocol(Protocol::Tools);
    env.reset().unwrap();
    let text = "Counting.\n<tool_call>\n{\"name\": \"execute_sql\", \"arguments\": {\"query\": \"SELECT COUNT(*) FROM `US Ambassadors and Envoy Extraordinary to Colombia`\"}}\n</tool_call>";
    let step = env.step(&Message::assistant(text)).unwrap();
    assert!(
        step.observation[0].content.starts_with("[("),
        "{:?}",
        step.observation
    );
    let commit = format!(
        "<tool_call>\n{{\"name\": \"commit_final_answer\", \"arguments\": {{\"answers\": [\"{label}\"]}}}}\n</tool_call>"
    );
    let end = env.step(&Message::assistant(commit)).unwrap();
    assert!(end.done && end.reward == 1.0);

    // No tool call: told so, and the round counts; unknown tools are refused.
    let item = items[0].clone();
    let mut env = DbEnv::new(item).with_protocol(Protocol::Tools);
    env.reset().unwrap();
    let step = env.step(&Message::assistant("The answer is 3.")).unwrap();
    assert!(step.observation[0].content.starts_with("Internal error"));
    let step = env.step(&call("drop_everything", json!({"x": 1}))).unwrap();
    assert!(
        step.observation[0]
            .content
            .starts_with("Invalid function call")
    );
    for _ in 2..MAX_ROUNDS - 1 {
        assert!(!env.step(&Message::assistant("hmm")).unwrap().done);
    }
    let end = env.step(&Message::assistant("hmm")).unwrap();
    assert!(end.done && end.reward == 0.0);
    assert_eq!(env.outcome().unwrap().status, DbStatus::TaskLimitReached);
}

#[test]
fn the_default_model_plays_db_episodes_in_a_rollout() {
    use agentbench_tuning::chat::Tokenizer;
    use agentbench_tuning::generate::{GenerateOptions, RolloutOptions, rollout};
    use agentbench_tuning::model::{Decoder, ModelSource};
    let (Some(items), Some(path)) = (dev_items(), common::default_model()) else {
        return;
    };
    let model = Decoder::load(
        &ModelSource::Gguf(path.clone()),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
    )
    .unwrap();
    let tokenizer = Tokenizer::from_gguf(&path).unwrap();
    let mut envs: Vec<DbEnv> = items.into_iter().take(2).map(DbEnv::new).collect();
    let options = RolloutOptions {
        generate: GenerateOptions::greedy(40),
        max_turns: 2,
        ..RolloutOptions::default()
    };
    let episodes = rollout(&model, &tokenizer, &mut envs, &options).unwrap();
    for (ep, env) in episodes.iter().zip(&envs) {
        assert!(ep.turns() >= 1 && ep.turns() <= 2);
        assert!(ep.policy_mask.contains(&1));
        // A 135M model does not solve DB Bench: whatever it wrote was read and judged.
        if let Some(outcome) = env.outcome() {
            assert_eq!(ep.reward(), if outcome.correct { 1.0 } else { 0.0 });
        }
    }
}

/// A modification item over a table whose declared types are numeric (as some AgentBench items
/// declare them), with values whose text a numeric column would change.
fn numeric_item() -> DbItem {
    serde_json::from_value(json!({
        "description": "Add the row 011, 0.50, c.",
        "add_description": "The name of this table is t, and the headers of this table are id,score,name.",
        "table": {"table_name": "t", "table_info": {
            "columns": [{"name": "id", "type": "INT"}, {"name": "score", "type": "FLOAT"},
                        {"name": "name", "type": "TEXT"}],
            "rows": [["007", "1.50", "a"], [10, "2.0", "b"], ["9", "10.25", null]]}},
        "type": ["INSERT"],
        "label": ["INSERT INTO t VALUES ('011', '0.50', 'c')"],
        // By hand, MySQL's hash over TEXT columns: rows "007,1.50,a", "10,2.0,b", "9,10.25"
        // (NULL skipped by CONCAT_WS), "011,0.50,c"; MD5 of the sorted 5-digit row prefixes.
        // With numeric columns (7, 1.5, 2, 11, 0.5) it would be de45515548e88020940fcddb8fdae1ca.
        "answer_md5": "[('b19bcaf267b34003bb964223465fc32c',)]"
    }))
    .unwrap()
}

#[test]
fn numeric_declared_columns_keep_mysql_text_semantics() {
    let item = numeric_item();
    let gold = item.label[0].as_str().unwrap().to_string();
    for protocol in [Protocol::Text, Protocol::Tools] {
        let mut env = DbEnv::new(item.clone()).with_protocol(protocol);
        env.reset().unwrap();
        let observe = |env: &mut DbEnv, sql: &str| match protocol {
            Protocol::Text => env.step(&operation(sql)).unwrap().observation[0]
                .content
                .clone(),
            Protocol::Tools => env
                .step(&call("execute_sql", json!({ "query": sql })))
                .unwrap()
                .observation[0]
                .content
                .clone(),
        };
        // Strings as stored, text order and text comparison, as AgentBench's MySQL shows them.
        assert_eq!(
            observe(&mut env, "SELECT id FROM t ORDER BY id"),
            "[('007',), ('10',), ('9',)]"
        );
        assert_eq!(
            observe(&mut env, "SELECT MAX(id), MIN(score) FROM t"),
            "[('9', '1.50')]"
        );
        assert_eq!(observe(&mut env, &gold), "[]");
        let end = match protocol {
            Protocol::Text => env.step(&answer("[\"done\"]")).unwrap(),
            Protocol::Tools => env
                .step(&call("commit_final_answer", json!({"answers": ["done"]})))
                .unwrap(),
        };
        assert_eq!(end.reward, 1.0, "{protocol:?}");
    }
}

/// Plays `replies` through a fresh episode in a thread and returns the last step's reward and
/// the time it took; panics when the episode takes past `limit` (a hang) or returns an error.
fn play_bounded(
    item: DbItem,
    protocol: Protocol,
    limits: SandboxLimits,
    replies: Vec<Message>,
    limit: Duration,
) -> (f64, Duration) {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut env = DbEnv::new(item).with_protocol(protocol).with_limits(limits);
        env.reset().unwrap();
        let start = Instant::now();
        let mut reward = None;
        for reply in &replies {
            let step = env.step(reply).map_err(|e| e.to_string());
            let step = match step {
                Ok(step) => step,
                Err(e) => {
                    let _ = send.send(Err(e));
                    return;
                }
            };
            reward = Some(step.reward);
        }
        let _ = send.send(Ok((reward.unwrap_or(f64::NAN), start.elapsed())));
    });
    match receive.recv_timeout(limit) {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => panic!("the episode returned an error: {e}"),
        Err(_) => panic!("the episode did not finish within {limit:?}"),
    }
}

fn short_limits() -> SandboxLimits {
    SandboxLimits {
        timeout: Duration::from_millis(300),
        reply_timeout: Duration::from_millis(300),
        ..SandboxLimits::default()
    }
}

fn text_and_tools(sql: &[&str], answer_text: &str) -> [(Protocol, Vec<Message>); 2] {
    let mut text: Vec<Message> = sql.iter().map(|s| operation(s)).collect();
    text.push(answer(answer_text));
    let mut tools: Vec<Message> = sql
        .iter()
        .map(|s| call("execute_sql", json!({ "query": s })))
        .collect();
    tools.push(call(
        "commit_final_answer",
        json!({ "answers": [answer_text] }),
    ));
    [(Protocol::Text, text), (Protocol::Tools, tools)]
}

#[test]
fn scoring_a_table_replaced_by_an_endless_view_is_bounded_and_wrong() {
    let endless = "CREATE VIEW t AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, x, x FROM c";
    for (protocol, replies) in text_and_tools(&["DROP TABLE t", endless], "done") {
        let (reward, took) = play_bounded(
            numeric_item(),
            protocol,
            short_limits(),
            replies,
            Duration::from_secs(60),
        );
        assert_eq!(reward, 0.0, "{protocol:?}");
        // The statements and the hash each stop at 0.3 s; slack for a loaded machine.
        assert!(took < Duration::from_secs(10), "{protocol:?}: {took:?}");
    }
}

#[test]
fn a_dropped_or_renamed_table_scores_wrong_instead_of_failing_the_run() {
    for sql in ["DROP TABLE t", "ALTER TABLE t RENAME TO u"] {
        for (protocol, replies) in text_and_tools(&[sql], "done") {
            let (reward, _) = play_bounded(
                numeric_item(),
                protocol,
                short_limits(),
                replies,
                Duration::from_secs(60),
            );
            assert_eq!(reward, 0.0, "{sql} ({protocol:?})");
        }
    }
}

#[test]
fn temporary_tables_live_in_memory_under_their_cap() {
    let limits = SandboxLimits {
        timeout: Duration::from_secs(20),
        ..SandboxLimits::default()
    };
    let cap = u64::from(limits.max_temp_pages) * 4096;
    let open_before = common::open_temp_files(&[]);
    let sb = Sandbox::new(limits, |conn| {
        conn.execute_batch("CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('x');")?;
        Ok(())
    })
    .unwrap();
    assert!(matches!(
        sb.execute("CREATE TEMP TABLE big (b BLOB)"),
        SqlResult::Done(_)
    ));
    // 200 MB asked for, 1 MB a row: the temp database must stop at its cap.
    let bomb = "INSERT INTO big WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200) SELECT randomblob(1000000) FROM c";
    let result = sb.execute(bomb);
    assert!(
        matches!(&result, SqlResult::Error(e) if e.contains("full")),
        "{result:?}"
    );
    let SqlResult::Rows { rows, .. } =
        sb.execute("SELECT COALESCE(SUM(length(b)), 0) FROM temp.big")
    else {
        panic!("the temp table is readable")
    };
    let stored = match rows[0][0] {
        agentbench_tuning::python::PyValue::Int(n) => n as u64,
        ref other => panic!("{other:?}"),
    };
    assert!(stored <= cap, "{stored} bytes in temp tables, cap {cap}");
    // Nothing was spilled to a file.
    assert_eq!(common::open_temp_files(&open_before), Vec::<String>::new());
    // The cap cannot be lifted, nor temp storage moved to a file.
    for pragma in [
        "PRAGMA temp.max_page_count = 1000000",
        "PRAGMA temp_store = FILE",
    ] {
        assert!(
            matches!(sb.execute(pragma), SqlResult::Error(_)),
            "{pragma}"
        );
    }
}

#[test]
fn one_reply_runs_its_statements_within_one_time_budget() {
    let endless =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c";
    let limits = SandboxLimits {
        timeout: Duration::from_secs(1),
        reply_timeout: Duration::from_secs(1),
        ..SandboxLimits::default()
    };
    let mut env = DbEnv::new(numeric_item())
        .with_protocol(Protocol::Tools)
        .with_limits(limits);
    env.reset().unwrap();
    let five = Message::assistant("").with_tool_calls(
        (0..5)
            .map(|_| ToolCall::new("execute_sql", json!({ "query": endless })))
            .collect(),
    );
    let start = Instant::now();
    let step = env.step(&five).unwrap();
    let took = start.elapsed();
    // Five statements of 1 s each would take 5 s; the reply's budget is 1 s in all.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(step.observation.len(), 5);
    for message in &step.observation[1..] {
        assert!(
            message.content.contains("1 s in all"),
            "{}",
            message.content
        );
    }
    // The next reply has its own budget.
    let next = env
        .step(&call(
            "execute_sql",
            json!({"query": "SELECT COUNT(*) FROM t"}),
        ))
        .unwrap();
    assert_eq!(next.observation[0].content, "[(3,)]");
}
