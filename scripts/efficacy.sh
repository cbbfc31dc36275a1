#!/usr/bin/env bash
# The efficacy experiment on the embedded default model (`tiny` profile, full scale): the data,
# the prompts, SFT, then every stage the run holds on the 360 held-out test tasks, each compared
# with the one before it; the dated report goes to docs/results/ (efficacy-<date>.md, its JSON
# and chart, and efficacy.json).
#
# Every step is idempotent and resumes where an earlier call stopped (SFT from its checkpoints,
# the held-out scores from their saved parts), so a long experiment is several calls of the same
# command, each inside an hour:
#
#   timeout 3600 bash scripts/efficacy.sh                 # again until it prints the report
#   STAGES=base,sft bash scripts/efficacy.sh runs/my-run  # only these stages
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

run=${1:-runs/efficacy-tiny}
common=(--profile tiny --scale full --run-dir "$run")
cargo build --release --locked --quiet --bin abt
abt=target/release/abt

[ -f "$run/01_data/sft.jsonl" ] || "$abt" data "${common[@]}"
[ -f "$run/02_prompts/prompts.jsonl" ] || "$abt" prompts "${common[@]}"
"$abt" sft "${common[@]}"
"$abt" heldout "${common[@]}" ${STAGES:+--stages "$STAGES"} --report docs/results
