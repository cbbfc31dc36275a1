#!/usr/bin/env bash
# Reward-throughput benchmark: the SQL execution reward and the DB format reward in Rust
# (benches/rewards.rs) against the same rewards in plain Python (scripts/bench_rewards.py:
# stdlib sqlite3/re/json, as a TRL reward function would be), on the same machine, over the same
# N completions built from Spider dev (data/spider-dev).
#
#   bash scripts/bench_rewards.sh
#
# Env: N (10000 completions), REPS (3: Rust and Python run alternately, medians reported),
# PYTHON (python3; any Python 3.8+, stdlib only -- .venv-ref is not needed).
# Both sides open every database and cache every gold result before timing.
# Each run's JSON line is kept in the directory named on stderr. Prints a markdown table.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
n=${N:-10000} reps=${REPS:-3} py=${PYTHON:-python3}
command -v "$py" >/dev/null || { echo "bench: $py not found (set PYTHON)" >&2; exit 1; }

cargo bench --bench rewards --no-run --locked
out=$(mktemp -d)
echo "bench: results in $out" >&2
for r in $(seq 1 "$reps"); do
  echo "bench: rep $r/$reps (Rust)" >&2
  cargo bench --bench rewards --locked -q -- --n "$n" 2>/dev/null | tail -1 > "$out/rust.$r.json"
  echo "bench: rep $r/$reps (Python)" >&2
  "$py" scripts/bench_rewards.py --n "$n" | tail -1 > "$out/python.$r.json"
done
"$py" - "$out" "$reps" <<'PY'
import json, platform, sqlite3, statistics, sys
out, reps = sys.argv[1], int(sys.argv[2])
def load(side):
    runs = []
    for r in range(1, reps + 1):
        line = open(f"{out}/{side}.{r}.json").read().strip()
        if not line.startswith("{"):
            sys.exit(f"bench: {side} run {r} gave no result: {line!r}")
        runs.append(json.loads(line))
    return runs
rust, python = load("rust"), load("python")
print("| reward | Rust rewards/s | Python rewards/s | ratio | Rust mean | Python mean |")
print("|---|---|---|---|---|---|")
notes = []
for name in ("sql", "format"):
    rs = statistics.median(x[f"{name}_rewards_per_s"] for x in rust)
    ps = statistics.median(x[f"{name}_rewards_per_s"] for x in python)
    rm = {x[f"{name}_mean_reward"] for x in rust}
    pm = {x[f"{name}_mean_reward"] for x in python}
    if len(rm) > 1 or len(pm) > 1:
        notes.append(f"{name}: the mean varied between runs (Rust {sorted(rm)}, Python {sorted(pm)})")
    rm, pm = rust[0][f"{name}_mean_reward"], python[0][f"{name}_mean_reward"]
    if rm != pm:
        notes.append(f"{name}: means differ by {pm - rm:+.3g}")
    print(f"| {name} | {rs:,.0f} | {ps:,.0f} | **{rs / ps:.2f}×** | {rm:.6f} | {pm:.6f} |")
n = rust[0]["completions"]
print(f"\n{n} completions, median of {reps} alternating runs; ratio = Rust/Python; "
      f"Python {platform.python_version()} with SQLite {sqlite3.sqlite_version}.")
for note in notes or ["means are bit-identical"]:
    print(f"- {note}")
PY
