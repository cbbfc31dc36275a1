#!/usr/bin/env bash
# The test command: set-up (idempotent), formatting, lints, the CUDA build check, then every
# test — unit, integration and the headless notebook tests. `.ci/run` calls exactly this.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
# The model and chat tests compare the embedded default model and the real Qwen tokenizers with
# transformers: fetch them (idempotent) and make their tests fail rather than skip if missing.
bash scripts/fetch_default_model.sh
bash scripts/fetch_tokenizers.sh
export ABT_REQUIRE_DEFAULT_MODEL=1
# The notebook test opens the smoke run's report in headless Chromium: install it where this
# script can (Debian, as root) and then require it; elsewhere that check is skipped, and said.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== apt-get install chromium (the report's browser check)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } ||
    echo "test: could not install chromium; the report's browser check is skipped"
fi
if command -v chromium >/dev/null; then
  export ABT_REQUIRE_BROWSER=1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
# The GPU build cannot run here, but it can compile: nvcc from PyPI, candle's CUDA kernels to
# PTX, `cargo check` and clippy with `--features cuda` (about 5 min the first time, cached after;
# ABT_SKIP_CUDA_CHECK=1 skips it).
if [ "${ABT_SKIP_CUDA_CHECK:-0}" != "1" ]; then
  echo "== scripts/check_cuda.sh"
  bash scripts/check_cuda.sh
fi
echo "== cargo test"
cargo test --all-targets --locked
