#!/usr/bin/env bash
# Greedy-generation benchmark: candle (benches/generate.rs) against transformers
# (scripts/bench_generate.py) on the same machine, same thread count, same LCG prompt ids.
#
#   bash scripts/bench_generate.sh [models...]     (default: smollm2 qwen2-55m qwen2.5-0.5b)
#
# Env: BATCHES ("1 8"), PROMPT (128), NEW (64), REPS (3), WARMUP (1), THREADS (all cores).
# CANDLE_RESULTS=dir skips cargo and reads the candle side from dir/<model>.b<batch>.candle.json
# (one JSON line each, e.g. kept from an earlier run; the run's files are kept in the directory it names on stderr).
# Needs the reference environment: bash scripts/setup_ref.sh. Prints a markdown table and records
# the rows in docs/results/speed.json (named `generate greedy ...`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
batches=${BATCHES:-"1 8"} prompt=${PROMPT:-128} new=${NEW:-64} reps=${REPS:-3} warmup=${WARMUP:-1}
threads=${THREADS:-$(nproc)}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2 qwen2-55m qwen2.5-0.5b)
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }

[ -n "${CANDLE_RESULTS:-}" ] || cargo bench --bench generate --no-run --locked
out=$(mktemp -d)
echo "bench: results in $out" >&2
for m in "${models[@]}"; do
  for b in $batches; do
    if [ -n "${CANDLE_RESULTS:-}" ]; then
      cp "$CANDLE_RESULTS/$m.b$b.candle.json" "$out/$m.b$b.candle.json"
    else
      echo "bench: $m batch $b (candle)" >&2
      RAYON_NUM_THREADS=$threads cargo bench --bench generate --locked -q -- --model "$m" --batch "$b" \
        --prompt "$prompt" --new "$new" --reps "$reps" --warmup "$warmup" --json 2>/dev/null | tail -1 > "$out/$m.b$b.candle.json"
    fi
    echo "bench: $m batch $b (transformers)" >&2
    .venv-ref/bin/python scripts/bench_generate.py --model "$m" --batch "$b" --prompt "$prompt" --new "$new" \
      --reps "$reps" --warmup "$warmup" --threads "$threads" --json | tail -1 > "$out/$m.b$b.torch.json"
  done
done
python3 - "$out" "$batches" "${models[@]}" <<'PY'
import json, sys
out, batches, models = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
print("| model | batch | candle tok/s | transformers tok/s | ratio (candle/transformers) | candle prefill ms "
      "| transformers prefill ms | candle peak RSS | transformers peak RSS | first ids equal |")
print("|---|---|---|---|---|---|---|---|---|---|")
cand_threads = set()
for m in models:
    for b in batches:
        c = json.load(open(f"{out}/{m}.b{b}.candle.json")); t = json.load(open(f"{out}/{m}.b{b}.torch.json"))
        cand_threads.add(c["threads"])
        ci, ti = c["first_ids"][:16], t["first_ids"][:16]
        same = 0
        while same < min(len(ci), len(ti)) and ci[same] == ti[same]:
            same += 1
        if m != "smollm2":
            equal = "n/a (random weights differ)"
        else:
            equal = "yes" if ci == ti else f"no ({same}/{max(len(ci), len(ti))} leading ids match)"
        print(f"| {m} | {b} | {c['tokens_per_s']:.1f} | {t['tokens_per_s']:.1f} | **{c['tokens_per_s'] / t['tokens_per_s']:.2f}×** "
              f"| {c['prefill_ms']:.0f} | {t['prefill_ms']:.0f} | {c['peak_rss_mb']:.0f} MB | {t['peak_rss_mb']:.0f} MB | {equal} |")
threads = f"threads {t['threads']}"
if cand_threads != {t["threads"]}:
    threads += f" (candle reported {', '.join(map(str, sorted(cand_threads)))})"
settings = (f"{threads}, prompt {t['prompt']} tokens + {t['new']} new (greedy, KV cache, prefill included in tok/s), f32; "
            f"torch {t['torch']}, transformers {t['transformers']}")
print(f"\n{settings}")
sys.path.insert(0, "scripts")
from speed_json import record
rows = []
for m in models:
    for b in batches:
        c = json.load(open(f"{out}/{m}.b{b}.candle.json")); t = json.load(open(f"{out}/{m}.b{b}.torch.json"))
        rows.append(dict(name=f"generate greedy {m} batch {b}", candle=round(c["tokens_per_s"], 2),
                         reference=round(t["tokens_per_s"], 2), unit="tokens/s", settings=settings))
record(rows)
PY
