#!/usr/bin/env bash
# The main job: run the notebooks in notebooks/ in order, headless, on the embedded default
# (profile tiny unless ABT_PROFILE says otherwise) at the short scale (ABT_SCALE=short: every
# phase trains and is scored, with fewer steps and tasks; ABT_SCALE=full for the profile's
# settings), into runs/<timestamp>/, then print the stage comparison of notebook 06.
#
#   bash scripts/run.sh                        # everything
#   bash scripts/run.sh notebooks/00_*.ipynb   # a subset, in the order given
#   bash scripts/run.sh --resume               # go on with the newest run in runs/
#
# A new run reuses the set-up, the kernel's build, the model and every result an earlier run
# computed from the same inputs (see src/cache.rs); a resumed run also resumes training from its
# checkpoints and reuses its own results.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
bash scripts/fetch_default_model.sh
newest=$( (ls -1d "$root"/runs/*/ 2>/dev/null || true) | sort | tail -n 1)
newest=${newest%/}
if [ "${1:-}" = "--resume" ]; then
  shift
  [ -n "$newest" ] || { echo "run: nothing to resume in $root/runs/" >&2; exit 1; }
  run_dir=${ABT_RUN_DIR:-$newest}
  echo "run: resuming $run_dir"
else
  if [ -n "$newest" ] && [ -z "${ABT_RUN_DIR:-}" ] && [ ! -f "$newest/06_eval/summary.txt" ]; then
    echo "run: $newest did not finish; \`bash scripts/run.sh --resume\` goes on with it. Starting a new run."
  fi
  run_dir=${ABT_RUN_DIR:-$root/runs/$(date +%Y%m%d-%H%M%S)}
fi
if [ $# -eq 0 ]; then
  set -- notebooks/*.ipynb
fi
start=$(date +%s)
"$root/.venv/bin/python" scripts/run_notebooks.py --run-dir "$run_dir" \
  --profile "${ABT_PROFILE:-tiny}" --scale "${ABT_SCALE:-short}" "$@"
summary="$run_dir/06_eval/summary.txt"
if [ -f "$summary" ]; then
  echo
  cat "$summary"
fi
echo "run: $run_dir ($(( ($(date +%s) - start) / 60 )) min; executed notebooks in $run_dir/notebooks/)"
