"""Reward throughput, the Python side of benches/rewards.rs: the SQL execution reward and the
DB Bench format reward, written as a TRL user would write them (stdlib only: sqlite3, re, json).

    python3 scripts/bench_rewards.py [--n 10000] [--data data/spider-dev]

Prints one JSON line with the Rust bench's keys: completions, sql_rewards_per_s,
sql_mean_reward, format_rewards_per_s, format_mean_reward. scripts/bench_rewards.sh runs both
sides alternately and tabulates them.

Same completions as the Rust bench: for i in 0..n, Spider dev item i % 972 in form
(i + i // 972) % 5 -- the gold SQL in the v0.2 text protocol, a wrong `LIMIT 1` variant, the
gold as a `<tool_call>`, a syntax error, prose without SQL. Same warm-up: every database is
opened and all 972 gold results are cached before the timed loop.

Same semantics as src/reward/sql.rs and src/reward/format.rs:
  * SQL is taken from (1) an `Action: Operation` reply's first ```sql block (AgentBench's
    `Action: (.*?)\\n`; an empty block means no SQL), (2) the first `execute_sql`
    `<tool_call>` (first argument value, when a string), (3) the first ``` fenced block,
    (4) the whole text when it starts with SELECT/WITH/INSERT/UPDATE/DELETE.
  * 1.0 when the rows match (lists when the gold contains `order by`, else multisets);
    0.5 x Jaccard of the row sets otherwise; -0.25 when it fails to execute (or is blank);
    -0.5 without SQL.
  * Databases are read-only (`file:...?mode=ro`), at most 10,000 rows are read per result,
    and a statement is interrupted after 5 s (a progress handler, as the Rust sandbox has).
  * Format reward: 0.4 for a well-formed `Action: Operation` + SQL block or `Action: Answer` +
    `Final Answer:`, 0.3 for a non-empty SQL / answer, 0.3 x min(words before `Action:`, 8) / 8.

Rows are compared as Python tuples: 1 == 1.0 and they hash alike, which is the equivalence the
Rust side gets by keying numbers as floats (they would differ only for integers above 2**53
compared with floats; Spider dev has none).
"""

import argparse
import json
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path

MATCH, PARTIAL_WEIGHT, EXEC_ERROR, NO_SQL = 1.0, 0.5, -0.25, -0.5
FORMAT_WEIGHT, VALIDITY_WEIGHT, REASONING_WEIGHT, REASONING_WORDS = 0.4, 0.3, 0.3, 8
MAX_ROWS, TIMEOUT_S = 10_000, 5.0

# AgentBench's v0.2 patterns.
ACTION_RE = re.compile(r"Action: (.*?)\n")
SQL_BLOCK_RE = re.compile(r"```sql\n([\s\S]*?)\n```")
FINAL_ANSWER_RE = re.compile(r"\nFinal Answer:(.*)")
SQL_HEADS = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE"}


def parse_reply(reply):
    """('operation', sql) | ('missing_sql', None) | ('answer', text) | ('invalid', None)."""
    m = ACTION_RE.search(reply)
    if m and m.group(1) == "Operation":
        block = SQL_BLOCK_RE.search(reply)
        if block is None:
            return "missing_sql", None
        return "operation", block.group(1).strip().replace("\n", " ")
    m = FINAL_ANSWER_RE.search(reply)
    if m:
        return "answer", m.group(1)
    return "invalid", None


def tool_calls(text):
    """The `<tool_call>{json}</tool_call>` blocks that parse (an unclosed last block counts)."""
    calls, rest = [], text
    while True:
        at = rest.find("<tool_call>")
        if at < 0:
            return calls
        body = rest[at + len("<tool_call>"):]
        end = body.find("</tool_call>")
        body, rest = (body, "") if end < 0 else (body[:end], body[end + len("</tool_call>"):])
        try:
            call = json.loads(body.strip())
        except ValueError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            args = call.get("arguments", call.get("parameters", {}))
            calls.append((call["name"], args))


def extract_sql(completion):
    kind, sql = parse_reply(completion)
    if kind == "operation":
        return sql if sql.strip() else None
    for name, args in tool_calls(completion):
        if name == "execute_sql":
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    args = None
            if isinstance(args, dict) and args:
                query = next(iter(args.values()))
                if isinstance(query, str):
                    return query
            break
    start = completion.find("```")
    if start >= 0:
        body = completion[start + 3:]
        if body.startswith("sql"):
            body = body[3:]
        end = body.find("```")
        if end >= 0:
            sql = body[:end].strip()
            if sql:
                return sql.replace("\n", " ")
    text = completion.strip()
    words = text.split(None, 1)
    if words and words[0].upper() in SQL_HEADS:
        return text.replace("\n", " ")
    return None


class SqlReward:
    """Read-only connections per database (opened once) and cached gold rows."""

    def __init__(self, db_dir):
        self.db_dir = Path(db_dir)
        self.conns = {}
        self.gold = {}
        self.deadline = float("inf")

    def conn(self, db_id):
        conn = self.conns.get(db_id)
        if conn is None:
            path = (self.db_dir / db_id / f"{db_id}.sqlite").resolve()
            conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.set_progress_handler(lambda: time.monotonic() > self.deadline, 1000)
            self.conns[db_id] = conn
        return conn

    def rows(self, db_id, sql):
        """The result rows (at most MAX_ROWS), or raises sqlite3.Error / sqlite3.Warning."""
        if not sql.strip():
            raise sqlite3.OperationalError("Query was empty")
        self.deadline = time.monotonic() + TIMEOUT_S
        try:
            cur = self.conn(db_id).execute(sql)
            return cur.fetchmany(MAX_ROWS) if cur.description is not None else []
        finally:
            self.deadline = float("inf")

    def score(self, db_id, gold_sql, completion):
        sql = extract_sql(completion)
        if sql is None:
            return NO_SQL
        key = (db_id, gold_sql)
        gold = self.gold.get(key)
        if gold is None:
            gold = self.gold[key] = self.rows(db_id, gold_sql)
        try:
            pred = self.rows(db_id, sql)
        except (sqlite3.Error, sqlite3.Warning):
            return EXEC_ERROR
        if "order by" in gold_sql.lower():
            same = pred == gold
        else:
            same = Counter(pred) == Counter(gold)
        if same:
            return MATCH
        a, b = set(pred), set(gold)
        union = len(a | b)
        return PARTIAL_WEIGHT * (len(a & b) / union if union else 1.0)


def reasoning_score(thought):
    return REASONING_WEIGHT * min(len(thought.split()), REASONING_WORDS) / REASONING_WORDS


def db_format_reward(reply):
    kind, value = parse_reply(reply)
    if kind == "operation":
        well_formed, valid = True, bool(value.strip())
    elif kind == "answer":
        well_formed, valid = "Action: Answer" in reply, bool(value.strip())
    else:
        well_formed = valid = False
    thought = reply.split("Action:", 1)[0]
    return (FORMAT_WEIGHT if well_formed else 0.0) + (VALIDITY_WEIGHT if valid else 0.0) \
        + reasoning_score(thought)


def completion(kind, gold):
    one_line = gold.replace("\n", " ")
    if kind == 0:
        return f"I look it up.\nAction: Operation\n```sql\n{one_line}\n```"
    if kind == 1:
        return f"```sql\n{one_line.rstrip(';')} LIMIT 1\n```"
    if kind == 2:
        args = json.dumps(one_line, ensure_ascii=False)
        return f'<tool_call>\n{{"name": "execute_sql", "arguments": {{"query": {args}}}}}\n</tool_call>'
    if kind == 3:
        return f"```sql\nSELEC {one_line}\n```"
    return "I am not sure how to answer that."


def main():
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--data", default=str(root / "data/spider-dev"))
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "dev.json").is_file():
        print(f"rewards: skipped, {data} is absent")
        return
    items = json.loads((data / "dev.json").read_text())
    n = args.n
    tasks = []
    for i in range(n):
        item = items[i % len(items)]
        tasks.append((item["db_id"], item["query"], completion((i + i // len(items)) % 5, item["query"])))

    reward = SqlReward(data / "database")
    # Open every database and cache every gold result before the timed loop, as the Rust side
    # does: the steady state of a training run.
    for item in items:
        reward.gold[(item["db_id"], item["query"])] = reward.rows(item["db_id"], item["query"])

    start = time.perf_counter()
    total = 0.0
    for db_id, gold_sql, c in tasks:
        total += reward.score(db_id, gold_sql, c)
    sql_s = time.perf_counter() - start

    start = time.perf_counter()
    format_total = 0.0  # a plain loop: sum() compensates float rounding from Python 3.12 on
    for _, _, c in tasks:
        format_total += db_format_reward(c)
    format_s = time.perf_counter() - start

    print(json.dumps({
        "completions": n,
        "sql_rewards_per_s": n / sql_s,
        "sql_mean_reward": total / n,
        "format_rewards_per_s": n / format_s,
        "format_mean_reward": format_total / n,
    }))


if __name__ == "__main__":
    main()
