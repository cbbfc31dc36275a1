#!/usr/bin/env bash
# The CUDA build check: `cargo check --features cuda --all-targets` with a real CUDA compiler, on
# a machine without a GPU or a CUDA toolkit.
#
#   bash scripts/check_cuda.sh
#
# 1. nvcc comes from PyPI's CUDA 13 wheels (the cu12 wheels hold only ptxas), unpacked once into
#    a cache ($ABT_CUDA_CACHE, default ~/.cache/agentbench-tuning/cuda13; ~100 MB download).
# 2. candle-kernels' build script compiles its kernels to PTX with that nvcc: checked for real.
# 3. It also compiles a static MoE/MMQ library of GPU machine code (15 files, 40–60 min on
#    2 cores) that only a link uses, and `cargo check` never links. An nvcc wrapper (the NVCC
#    variable, which candle's kernel builder honours) gives empty objects for those 15 sources
#    only; every other nvcc call goes to the real compiler.
# 4. Builds go to a target directory inside the cache, so a second run only re-checks what
#    changed.
#
# Linking (and running) needs libcuda, cuBLAS, cuRAND and NVRTC, which only a GPU machine has:
# see scripts/gpu_check.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

started=$(date +%s)
# shellcheck source=scripts/cuda_toolkit.sh
source "$root/scripts/cuda_toolkit.sh"
export CARGO_TARGET_DIR="$cache/target"

echo "== cargo check --features cuda --all-targets (compute capability $CUDA_COMPUTE_CAP)"
cargo check --locked --features cuda --all-targets
echo "== cargo clippy --features cuda --all-targets -- -D warnings"
cargo clippy --locked --features cuda --all-targets -- -D warnings
echo "== the notebook kernel's CUDA build (kernel/install.sh --cuda): candle's CUDA backend is on"
# The kernel asks for no feature: its rustflags' `--cfg abt_cuda` turns candle's CUDA backend on
# through Cargo.toml's target table (and build.rs maps the `cuda` feature checked above to the
# same cfg). cargo tree resolves the features under exactly those rustflags.
flags=$(bash kernel/install.sh --print-spec --cuda |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["env"]["CARGO_ENCODED_RUSTFLAGS"])')
host=$(rustc -vV | sed -n 's/^host: //p')
features() {
  cargo tree --locked -e features -i candle-core --target "$host" --prefix none --format '{f}' |
    tr ',' '\n' | sort -u
}
if ! CARGO_ENCODED_RUSTFLAGS="$flags" features | grep -qx cuda; then
  echo "check_cuda: the kernel's rustflags ($flags) do not turn on candle-core's cuda feature" >&2
  exit 1
fi
if features | grep -qx cuda; then
  echo "check_cuda: candle-core's cuda feature is on in the plain CPU build" >&2
  exit 1
fi
echo "check_cuda: passed in $(( $(date +%s) - started )) s"
