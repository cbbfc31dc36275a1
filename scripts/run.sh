#!/usr/bin/env bash
# The main job: run the notebooks in notebooks/ in order, headless, on the embedded default
# (profile tiny unless ABT_PROFILE says otherwise), into runs/<timestamp>/.
#
#   bash scripts/run.sh                    # everything
#   bash scripts/run.sh notebooks/00_*.ipynb   # a subset, in the order given
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
bash scripts/fetch_default_model.sh
run_dir=${ABT_RUN_DIR:-$root/runs/$(date +%Y%m%d-%H%M%S)}
if [ $# -eq 0 ]; then
  set -- notebooks/*.ipynb
fi
exec "$root/.venv/bin/python" scripts/run_notebooks.py --run-dir "$run_dir" \
  --profile "${ABT_PROFILE:-tiny}" "$@"
