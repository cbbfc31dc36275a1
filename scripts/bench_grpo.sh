#!/usr/bin/env bash
# GRPO benchmark: real steps of the tiny profile's multi-turn GRPO trainer (benches/grpo_step.rs:
# sampled rollouts in the environments, then the update) against PyTorch + PEFT making the same
# updates on the same episodes (scripts/bench_grpo.py), same machine, same thread count, with the
# embedded default model (SmolLM2-135M-Instruct, f32).
#
#   bash scripts/bench_grpo.sh [ADAPTER]     (ADAPTER: e.g. runs/<name>/03_sft/adapter; the
#                                             base model when absent, whose groups are often flat)
#
# Env: STEPS (2 timed), WARMUP (1), PROMPTS (2 per step), THREADS (all cores).
# Needs the reference environment: bash scripts/setup_ref.sh. Prints a markdown table.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
steps=${STEPS:-2} warmup=${WARMUP:-1} prompts=${PROMPTS:-2}
threads=${THREADS:-$(nproc)}
adapter=${1:-}
[ -x .venv-ref/bin/python ] || { echo "bench: run 'bash scripts/setup_ref.sh' first" >&2; exit 1; }
[ -z "$adapter" ] || [ -f "$adapter/adapter_config.json" ] \
  || { echo "bench: $adapter is not an adapter directory (no adapter_config.json)" >&2; exit 1; }

cargo bench --bench grpo_step --no-run --locked 2>/dev/null
out=$(mktemp -d)
adapter_args=()
[ -z "$adapter" ] || adapter_args=(--adapter "$adapter")
echo "bench: grpo (candle), files in $out" >&2
RAYON_NUM_THREADS=$threads cargo bench --bench grpo_step --locked -q -- --steps "$steps" \
  --warmup "$warmup" --prompts "$prompts" "${adapter_args[@]}" --export "$out/episodes.json" --json \
  2>/dev/null | tail -1 > "$out/candle.json"
echo "bench: grpo (pytorch)" >&2
.venv-ref/bin/python scripts/bench_grpo.py --episodes "$out/episodes.json" "${adapter_args[@]}" \
  --threads "$threads" --json | tail -1 > "$out/torch.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
c = json.load(open(f"{out}/candle.json")); t = json.load(open(f"{out}/torch.json"))
tokens = c["trained_tokens"][c["warmup"]:]
def steps(r):
    return " / ".join(f"{s:.1f}" for s in r["update_s_steps"])
print("| trainer | update s per timed step | update tokens/s (all timed steps) | peak RSS | loss step 1 | KL last step |")
print("|---|---|---|---|---|---|")
for name, r in (("candle (`abt grpo`)", c), (f"PyTorch {t['torch']} + PEFT {t['peft']}", t)):
    print(f"| {name} | {steps(r)} | {r['update_tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} MB "
          f"| {r['losses'][0]:+.4f} | {r['kl'][-1]:.5f} |")
print(f"\nupdate speed ratio candle / PyTorch: **{c['update_tokens_per_s'] / t['update_tokens_per_s']:.2f}×** "
      f"({c['steps']} timed steps after {c['warmup']} warm-up, threads {c['threads']}, "
      f"{c['prompts_per_step']} prompts × {c['group_size']} episodes per step, micro-batch {c['micro_batch']}, "
      f"checkpointing {c['checkpointing']}, trained tokens per timed step {tokens}, "
      f"skipped groups {c['skipped_groups']}); candle rollouts: {c['rollout_tokens_per_s']:.1f} policy tokens/s "
      f"({c['rollout_s']:.0f} s per step)")
PY
