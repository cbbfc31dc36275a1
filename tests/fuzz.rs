//! Property tests of both environments against a hostile agent.
//!
//! DB Bench: random SQL built from a grammar of risky constructs (DDL on the episode's table,
//! views, triggers, temporary objects, endless and exploding recursive CTEs, huge literals,
//! PRAGMAs, ATTACH/DETACH/VACUUM INTO, transactions left open) is played through `DbEnv::step`
//! in both protocols, over inline tables and a copied SQLite file. After every reply:
//! - `step` returned a step, never an error, and the episode ends within its rounds with a
//!   graded score;
//! - the reply took no longer than its budget (statements, plus the scorer's read at the end);
//! - the process holds no file in a temporary directory (nothing spilled to disk), no
//!   `ATTACH`/`VACUUM INTO` target exists, and its resident memory stays under a bound set by
//!   the database caps.
//!
//! After every episode the next one starts from pristine data (the table's first rows and the
//! schema as on the first reset; a modification's gold statement still scores 1), and at the
//! end the data files read (AgentBench's items, the Spider database) are byte-identical.
//!
//! Household: random replies (unicode, huge, empty, tool calls of every shape) through
//! `HouseholdEnv::step`: never an error, every step within its budget, every episode over
//! within its step limit.
//!
//! `ABT_FUZZ_CASES` sets the number of episodes of each (default 1,000, the slice CI runs);
//! `ABT_FUZZ_SEED` the first seed. The dedicated run and its counts: docs/environments.md.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use agentbench_tuning::chat::{Message, ToolCall};
use agentbench_tuning::env::db::{DbEnv, DbItem, SandboxLimits};
use agentbench_tuning::env::household::HouseholdEnv;
use agentbench_tuning::env::{Environment, Protocol, TaskEnv};
use agentbench_tuning::rng::Rng;
use serde_json::{Value, json};

fn cases() -> usize {
    std::env::var("ABT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn first_seed() -> u64 {
    std::env::var("ABT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn file_digest(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in &bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    (bytes.len() as u64, h)
}

/// One playable DB item and what the grammar may name in it.
struct Target {
    item: DbItem,
    /// The table statements aim at (backtick-quoted).
    table: String,
    columns: Vec<String>,
    /// Statements whose observations fingerprint the pristine data.
    probes: Vec<String>,
}

fn targets(spider_db: &Path) -> Vec<Target> {
    let items = DbItem::read_jsonl(&common::dbbench_dev()).unwrap();
    let mut out = Vec::new();
    let modification = items.iter().find(|i| i.is_modification()).unwrap();
    let query = items.iter().find(|i| !i.is_modification()).unwrap();
    for item in [modification, query] {
        let table = format!("`{}`", item.table.table_name.replace('`', "``"));
        let columns = item
            .table
            .table_info
            .columns
            .iter()
            .map(|c| format!("`{}`", c.name.replace('`', "``")))
            .collect();
        out.push(Target {
            item: item.clone(),
            probes: vec![
                format!("SELECT * FROM {table}"),
                format!("SELECT COUNT(*) FROM {table}"),
                "SELECT type, name, sql FROM sqlite_master".into(),
                "SELECT type, name FROM sqlite_temp_master".into(),
            ],
            table,
            columns,
        });
    }
    let file_item = DbItem::over_file(
        spider_db.to_path_buf(),
        "How many singers do we have?".into(),
        "The database has tables stadium, singer, concert and singer_in_concert.".into(),
        vec![json!("6")],
    );
    out.push(Target {
        item: file_item,
        table: "`singer`".into(),
        columns: vec!["`Name`".into(), "`Country`".into(), "`Age`".into()],
        probes: vec![
            "SELECT * FROM singer".into(),
            "SELECT COUNT(*) FROM concert".into(),
            "SELECT type, name, sql FROM sqlite_master".into(),
            "SELECT type, name FROM sqlite_temp_master".into(),
        ],
    });
    out
}

const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, x FROM c";

/// One statement from the grammar of risky constructs.
fn risky_sql(rng: &mut Rng, target: &Target, escape: &Path) -> String {
    let t = &target.table;
    let col = &target.columns[rng.below(target.columns.len())];
    let n = [1, 7, 100, 10_000, 1_000_000, 100_000_000, 2_000_000_000][rng.below(7)];
    let k = rng.below(4);
    let escape_file = escape.join(format!("x{k}.db")).display().to_string();
    match rng.below(34) {
        0 => format!("SELECT * FROM {t}"),
        1 => format!("SELECT COUNT(*), MAX({col}) FROM {t}"),
        2 => format!("DROP TABLE {t}"),
        3 => format!("ALTER TABLE {t} RENAME TO `renamed{k}`"),
        4 => format!("ALTER TABLE {t} ADD COLUMN extra{k} TEXT DEFAULT 'x'"),
        5 => format!("DELETE FROM {t}"),
        6 => format!("INSERT INTO {t} SELECT * FROM {t}"),
        7 => format!("UPDATE {t} SET {col} = '{n}'"),
        8 => format!("CREATE VIEW {t} AS {ENDLESS}"),
        9 => format!("CREATE VIEW v{k} AS SELECT * FROM {t} a, {t} b, {t} c"),
        10 => format!("CREATE TEMP VIEW {t} AS {ENDLESS}"),
        11 => format!(
            "CREATE TRIGGER tr{k} AFTER INSERT ON {t} BEGIN INSERT INTO {t} SELECT * FROM {t}; END"
        ),
        12 => format!(
            "CREATE TEMP TRIGGER tt{k} BEFORE DELETE ON {t} BEGIN SELECT RAISE(IGNORE); END"
        ),
        13 => format!("CREATE TEMP TABLE tmp{k} AS SELECT * FROM {t}"),
        14 => "CREATE TEMP TABLE IF NOT EXISTS bomb (b BLOB)".into(),
        15 => format!(
            "INSERT INTO bomb WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {}) SELECT randomblob({}) FROM c",
            [10, 100, 1000][rng.below(3)],
            n.min(1_000_000)
        ),
        16 => ENDLESS.into(),
        17 => "WITH RECURSIVE c(x, s) AS (SELECT 1, 'ab' UNION ALL SELECT x + 1, s || s FROM c) SELECT x, length(s) FROM c".into(),
        18 => format!("SELECT '{}'", "x".repeat([10, 50_000, 99_990, 200_000][rng.below(4)])),
        19 => format!(
            "SELECT {}({n})",
            ["randomblob", "zeroblob", "hex"][rng.below(3)]
        ),
        20 => format!("SELECT printf('%.*c', {n}, 'x')"),
        21 => format!(
            "PRAGMA {}",
            [
                "writable_schema = ON",
                "temp_store = FILE",
                "journal_mode = WAL",
                "max_page_count = 1000000000",
                "temp.max_page_count = 1000000000",
                "cache_size = -1000000",
                "mmap_size = 1000000000",
                "query_only = OFF",
                "recursive_triggers = ON",
                "page_count",
                "integrity_check",
                "table_info(singer)",
                "temp.table_list",
            ][rng.below(13)]
        ),
        22 => format!("ATTACH '{escape_file}' AS x{k}"),
        23 => "ATTACH ':memory:' AS m".into(),
        24 => ["DETACH main", "DETACH temp", "VACUUM", "VACUUM temp"][rng.below(4)].into(),
        25 => format!("VACUUM INTO '{escape_file}'"),
        26 => [
            "BEGIN",
            "BEGIN IMMEDIATE",
            "SAVEPOINT s",
            "COMMIT",
            "ROLLBACK",
            "RELEASE s",
            "ROLLBACK TO s",
        ][rng.below(7)]
            .into(),
        27 => "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')".into(),
        28 => format!("CREATE INDEX i{k} ON {t} ({col})"),
        29 => format!("SELECT 1; DROP TABLE {t}"),
        30 => format!("SELECT * FROM {t} a, {t} b, {t} c, {t} d ORDER BY random()"),
        31 => [
            "UPDATE sqlite_master SET sql = 'x'",
            "DELETE FROM sqlite_temp_master",
            "CREATE VIRTUAL TABLE vt USING fts5(a)",
            "CREATE VIRTUAL TABLE st USING dbstat",
            "ANALYZE",
            "REINDEX",
        ][rng.below(6)]
            .into(),
        32 => format!(
            "SELECT * FROM {t} WHERE {}1{}",
            "(".repeat(n.min(400)),
            ")".repeat(n.min(400))
        ),
        _ => format!("CREATE TABLE big{k} AS SELECT * FROM {t} a, {t} b"),
    }
}

/// A text-protocol reply: an operation, an answer, or junk.
fn text_reply(rng: &mut Rng, sql: String) -> Message {
    match rng.below(20) {
        0 => Message::assistant(format!(
            "Done.\nAction: Answer\nFinal Answer: [\"{}\"]",
            rng.below(9)
        )),
        1 => Message::assistant(
            ["", "Action: Operation\n", "\u{0}😀", "Final Answer: x"][rng.below(4)],
        ),
        _ => Message::assistant(format!(
            "I will look.\nAction: Operation\n```sql\n{sql}\n```"
        )),
    }
}

/// A function-calling reply: up to four calls, mostly SQL, sometimes a commit or a malformed call.
fn tools_reply(rng: &mut Rng, target: &Target, escape: &Path) -> Message {
    let calls = (0..1 + rng.below(4))
        .map(|_| match rng.below(30) {
            0 => ToolCall::new(
                "commit_final_answer",
                json!({"answers": [rng.below(9).to_string()]}),
            ),
            1 => ToolCall::new("execute_sql", json!({"query": 42})),
            2 => ToolCall::new("execute_sql", Value::String("{not json".into())),
            3 => ToolCall::new("drop_everything", json!({})),
            _ => ToolCall::new(
                "execute_sql",
                json!({"query": risky_sql(rng, target, escape)}),
            ),
        })
        .collect();
    match rng.below(8) {
        0 => Message::assistant(format!(
            "<tool_call>\n{{\"name\": \"execute_sql\", \"arguments\": {{\"query\": {}}}}}\n</tool_call>",
            json!(risky_sql(rng, target, escape))
        )),
        1 => {
            Message::assistant("<tool_call>\n{\"name\": \"execute_sql\", \"arguments\n</tool_call>")
        }
        _ => Message::assistant("").with_tool_calls(calls),
    }
}

/// What the fuzz run counted.
#[derive(Default)]
struct Counts {
    episodes: usize,
    replies: usize,
    statements: usize,
    by_protocol: BTreeMap<&'static str, usize>,
    ended_by_agent: usize,
    slowest_reply: Duration,
    peak_resident_growth: u64,
    violations: Vec<String>,
}

#[test]
fn db_sandbox_invariants_hold_under_random_risky_sql() {
    let spider_db = agentbench_tuning::paths::spider_dev_dir()
        .join("database/concert_singer/concert_singer.sqlite");
    let dev = common::dbbench_dev();
    let digests_before = [file_digest(&dev), file_digest(&spider_db)];
    let escape = tempfile::tempdir().unwrap();
    let targets = targets(&spider_db);
    let limits = SandboxLimits {
        timeout: Duration::from_millis(30),
        reply_timeout: Duration::from_millis(60),
        max_pages: 2_560,
        max_temp_pages: 512,
        ..SandboxLimits::default()
    };
    // A reply runs its statements within `reply_timeout`, and an ending one the table hash
    // within `timeout`; the slack covers a loaded two-core machine.
    let reply_budget = limits.reply_timeout + limits.timeout + Duration::from_millis(1500);
    // Caps of 10 MB (database) and 2 MB (temp) per episode; generous room for SQLite's caches.
    let memory_bound = 512 << 20;

    // The pristine observations of each target, from a first reset.
    let probe = |target: &Target| -> Vec<String> {
        let mut env = DbEnv::new(target.item.clone())
            .with_protocol(Protocol::Tools)
            .with_limits(SandboxLimits::default());
        env.reset().unwrap();
        let calls = target
            .probes
            .iter()
            .map(|sql| ToolCall::new("execute_sql", json!({ "query": sql })))
            .collect();
        let step = env
            .step(&Message::assistant("").with_tool_calls(calls))
            .unwrap();
        step.observation.into_iter().map(|m| m.content).collect()
    };
    let pristine: Vec<Vec<String>> = targets.iter().map(probe).collect();
    let resident_start = resident_bytes();
    // Files open before the episodes (say, a redirected stdout in /tmp) are not theirs.
    let open_before = common::open_temp_files(&[]);

    let mut counts = Counts::default();
    let start = Instant::now();
    let seed0 = first_seed();
    for case in 0..cases() {
        let seed = seed0 + case as u64;
        let mut rng = Rng::new(seed);
        let which = rng.below(targets.len());
        let target = &targets[which];
        let protocol = if rng.below(2) == 0 {
            Protocol::Text
        } else {
            Protocol::Tools
        };
        let env = DbEnv::new(target.item.clone())
            .with_protocol(protocol)
            .with_limits(limits);
        let mut env = TaskEnv::Db(Box::new(env));
        env.reset().unwrap();
        counts.episodes += 1;
        *counts
            .by_protocol
            .entry(if protocol == Protocol::Text {
                "text"
            } else {
                "tools"
            })
            .or_default() += 1;
        let mut done = false;
        for round in 0..=agentbench_tuning::env::db::MAX_ROUNDS {
            let reply = match protocol {
                Protocol::Text => {
                    let sql = risky_sql(&mut rng, target, escape.path());
                    text_reply(&mut rng, sql)
                }
                Protocol::Tools => tools_reply(&mut rng, target, escape.path()),
            };
            counts.statements += reply.tool_calls.len().max(1);
            let began = Instant::now();
            let step = env.step(&reply);
            let took = began.elapsed();
            counts.replies += 1;
            counts.slowest_reply = counts.slowest_reply.max(took);
            let mut violation = |what: String| {
                counts
                    .violations
                    .push(format!("seed {seed}, round {round}: {what}"))
            };
            if took > reply_budget {
                violation(format!("the reply took {took:?}"));
            }
            let open = common::open_temp_files(&open_before);
            if !open.is_empty() {
                violation(format!("files open in a temp dir: {open:?}"));
            }
            let growth = resident_bytes().saturating_sub(resident_start);
            counts.peak_resident_growth = counts.peak_resident_growth.max(growth);
            if growth > memory_bound {
                violation(format!("resident memory grew by {} MB", growth >> 20));
            }
            match step {
                Err(e) => {
                    violation(format!("step failed: {e}"));
                    break;
                }
                Ok(step) if step.done => {
                    done = true;
                    if !(step.reward == 0.0 || step.reward == 1.0) {
                        violation(format!("reward {}", step.reward));
                    }
                    break;
                }
                Ok(_) => {}
            }
        }
        if !done {
            counts
                .violations
                .push(format!("seed {seed}: the episode outlived its rounds"));
        }
        let score = env.score();
        if !(-0.5..=1.0).contains(&score.score) {
            counts
                .violations
                .push(format!("seed {seed}: score {}", score.score));
        }
        if let TaskEnv::Db(db) = &env
            && db
                .outcome()
                .is_some_and(|o| o.status != agentbench_tuning::env::db::DbStatus::TaskLimitReached)
        {
            counts.ended_by_agent += 1;
        }
        // The next episode starts from pristine data (every 10th case: the probes cost a reply).
        if case % 10 == 0 && probe(target) != pristine[which] {
            counts
                .violations
                .push(format!("seed {seed}: the next episode saw changed data"));
        }
        if escape.path().read_dir().unwrap().next().is_some() {
            counts.violations.push(format!(
                "seed {seed}: a file was written outside the episode"
            ));
        }
    }
    // Gold statements still score 1 after all that.
    let gold_item = targets[0].item.clone();
    let gold = gold_item.label[0].as_str().unwrap().to_string();
    let mut env = DbEnv::new(gold_item);
    env.reset().unwrap();
    env.step(&Message::assistant(format!(
        "Action: Operation\n```sql\n{gold}\n```"
    )))
    .unwrap();
    let end = env
        .step(&Message::assistant(
            "ok\nAction: Answer\nFinal Answer: [\"x\"]",
        ))
        .unwrap();
    if end.reward != 1.0 {
        counts
            .violations
            .push("the gold statement no longer scores 1".into());
    }
    if [file_digest(&dev), file_digest(&spider_db)] != digests_before {
        counts.violations.push("a data file changed".into());
    }
    println!(
        "DB sandbox fuzz: {} episodes ({:?}), {} replies, {} statements or calls, {} ended by the agent, seeds {seed0}..{}, in {:.1} s; slowest reply {:?} (budget {reply_budget:?}); peak resident growth {} MB; {} violations",
        counts.episodes,
        counts.by_protocol,
        counts.replies,
        counts.statements,
        counts.ended_by_agent,
        seed0 + counts.episodes as u64,
        start.elapsed().as_secs_f64(),
        counts.slowest_reply,
        counts.peak_resident_growth >> 20,
        counts.violations.len()
    );
    assert!(
        counts.violations.is_empty(),
        "{} violations, the first: {:#?}",
        counts.violations.len(),
        &counts.violations[..counts.violations.len().min(10)]
    );
}

/// A random string of `len` characters drawn from every plane's troublemakers.
fn random_text(rng: &mut Rng, len: usize) -> String {
    const POOL: [&str; 16] = [
        "a",
        "Z",
        " ",
        "\n",
        "\t",
        "\u{0}",
        "\u{1b}[31m",
        "é",
        "\u{301}",
        "\u{202e}",
        "中",
        "😀",
        "\u{feff}",
        "ACTION:",
        "go to ",
        "take ",
    ];
    (0..len).map(|_| POOL[rng.below(POOL.len())]).collect()
}

#[test]
fn household_parser_invariants_hold_under_random_replies() {
    let step_budget = Duration::from_millis(1500);
    let mut slowest = Duration::ZERO;
    let mut replies = 0;
    let mut violations = Vec::new();
    let start = Instant::now();
    let seed0 = first_seed();
    for case in 0..cases() {
        let seed = seed0 + case as u64;
        let mut rng = Rng::new(seed ^ 0x5eed);
        let protocol = if rng.below(2) == 0 {
            Protocol::Text
        } else {
            Protocol::Tools
        };
        let mut env = HouseholdEnv::new(seed)
            .with_protocol(protocol)
            .with_example(false);
        env.reset().unwrap();
        let limit = env.max_steps();
        let mut done = false;
        for turn in 0..=limit {
            let len = [0, 1, 10, 100, 20_000, 200_000][rng.below(6)];
            let text = random_text(&mut rng, len);
            let commands = env.world().admissible_commands();
            let command = commands[rng.below(commands.len())].clone();
            let action = if rng.below(3) == 0 {
                command
            } else {
                text.clone()
            };
            let reply = match (protocol, rng.below(6)) {
                (Protocol::Text, 0) => Message::assistant(text),
                (Protocol::Text, _) => Message::assistant(format!(
                    "THOUGHT: {}\nACTION: {action}",
                    text.chars().take(50).collect::<String>()
                )),
                (Protocol::Tools, 0) => Message::assistant(format!(
                    "<tool_call>\n{{\"name\": \"take_action\", \"arguments\": {}}}\n</tool_call>",
                    json!({ "action": action })
                )),
                (Protocol::Tools, 1) => {
                    Message::assistant("").with_tool_calls(vec![ToolCall::new(
                        "take_action",
                        [
                            json!(null),
                            json!(42),
                            json!([action]),
                            json!({"action": {"nested": 1}}),
                            Value::String(action.clone()),
                        ][rng.below(5)]
                        .clone(),
                    )])
                }
                (Protocol::Tools, 2) => Message::assistant("").with_tool_calls(vec![
                    ToolCall::new("take_action", json!({ "action": action })),
                    ToolCall::new("take_action", json!({ "action": "look" })),
                ]),
                (Protocol::Tools, 3) => Message::assistant("")
                    .with_tool_calls(vec![ToolCall::new("other", json!({ "action": action }))]),
                (Protocol::Tools, _) => {
                    Message::assistant("").with_tool_calls(vec![ToolCall::new(
                        "take_action",
                        json!({ "action": action }),
                    )])
                }
            };
            let began = Instant::now();
            let step = env.step(&reply);
            let took = began.elapsed();
            replies += 1;
            slowest = slowest.max(took);
            if took > step_budget {
                violations.push(format!("seed {seed}, turn {turn}: the step took {took:?}"));
            }
            match step {
                Err(e) => {
                    violations.push(format!("seed {seed}, turn {turn}: step failed: {e}"));
                    break;
                }
                Ok(step) => {
                    let longest = step
                        .observation
                        .iter()
                        .map(|m| m.content.len())
                        .max()
                        .unwrap_or(0);
                    if longest > 16_384 {
                        violations.push(format!(
                            "seed {seed}, turn {turn}: a {longest}-byte observation"
                        ));
                    }
                    if step.done {
                        done = true;
                        break;
                    }
                }
            }
        }
        if !done {
            violations.push(format!(
                "seed {seed}: the episode outlived its {limit} steps"
            ));
        }
    }
    println!(
        "household fuzz: {} episodes, {replies} replies, seeds {seed0}..{}, in {:.1} s; slowest step {slowest:?} (budget {step_budget:?}); {} violations",
        cases(),
        seed0 + cases() as u64,
        start.elapsed().as_secs_f64(),
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
}
