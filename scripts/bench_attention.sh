#!/usr/bin/env bash
# Attention forward + backward alone: the tiled kernel and the plain composition
# (benches/attention.rs) against PyTorch's scaled_dot_product_attention
# (scripts/bench_attention.py), causal, interleaved length by length on the same machine, each
# in its own process (so its peak RSS is its own).
#
#   bash scripts/bench_attention.sh [lengths...]     (default: 512 1024 2048 4096)
#
# Env: HEADS (14), KV_HEADS (2), HEAD_DIM (64) — Qwen2.5-0.5B's attention —, BATCH (1),
# REPS (5), THREADS (all cores), COMPOSITION_MAX (4096: longest length the composition runs at).
# Needs .venv-ref (bash scripts/setup_ref.sh). Prints a markdown table and records the rows in
# docs/results/speed.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
heads=${HEADS:-14} kv=${KV_HEADS:-2} dim=${HEAD_DIM:-64} batch=${BATCH:-1} reps=${REPS:-5}
threads=${THREADS:-$(nproc)} composition_max=${COMPOSITION_MAX:-4096}
lengths=("$@")
[ ${#lengths[@]} -gt 0 ] || lengths=(512 1024 2048 4096)
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }

cargo bench --bench attention --no-run --locked 2>/dev/null
out=$(mktemp -d)
shape=(--heads "$heads" --kv-heads "$kv" --head-dim "$dim" --batch "$batch" --reps "$reps")
for t in "${lengths[@]}"; do
  paths=(fused)
  [ "$t" -le "$composition_max" ] && paths+=(composition)
  for p in "${paths[@]}"; do
    echo "bench: attention $t ($p)" >&2
    RAYON_NUM_THREADS=$threads cargo bench --bench attention --locked -q -- --path "$p" --seq "$t" \
      "${shape[@]}" --json 2>/dev/null | tail -1 > "$out/$t.$p.json"
  done
  echo "bench: attention $t (pytorch sdpa)" >&2
  (cd scripts && ../.venv-ref/bin/python bench_attention.py --seq "$t" "${shape[@]}" --threads "$threads" --json) \
    | tail -1 > "$out/$t.sdpa.json"
done
python3 - "$out" "${lengths[@]}" <<'PY'
import json, os, sys
sys.path.insert(0, "scripts")
from speed_json import cpu_description, record
out, lengths = sys.argv[1], sys.argv[2:]
def load(t, p):
    path = f"{out}/{t}.{p}.json"
    return json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else None
print("| tokens | tiled kernel fwd / fwd+bwd ms | composition fwd / fwd+bwd ms | SDPA fwd / fwd+bwd ms | kernel vs SDPA | kernel vs composition | peak RSS kernel / composition / SDPA |")
print("|---|---|---|---|---|---|---|")
rows = []
for t in lengths:
    f, c, s = load(t, "fused"), load(t, "composition"), load(t, "sdpa")
    fmt = lambda r: f"{r['forward_ms']:.1f} / {r['forward_backward_ms']:.1f}" if r else "–"
    mem = lambda r: f"{r['peak_rss_mb']:.0f}" if r else "–"
    vs = lambda r: f"**{r['forward_backward_ms'] / f['forward_backward_ms']:.2f}×**" if r else "–"
    print(f"| {t} | {fmt(f)} | {fmt(c)} | {fmt(s)} | {vs(s)} | {vs(c)} | {mem(f)} / {mem(c)} / {mem(s)} MB |")
    settings = (f"causal, batch {f['batch']}, {f['heads']} heads / {f['kv_heads']} KV heads, head dim {f['head_dim']}, "
                f"f32, {f['threads']} threads, median of {os.environ.get('REPS', 5)}; torch {s['torch']}")
    rows.append(dict(name=f"attention fwd+bwd {t}", candle=round(f["forward_backward_ms"], 2),
                     reference=round(s["forward_backward_ms"], 2), unit="ms", settings=settings))
print(f"\n{cpu_description()}; " + rows[-1]["settings"])
record(rows)
PY
