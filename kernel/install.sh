#!/usr/bin/env bash
# Install the evcxr Jupyter kernel for Rust and register it as kernel "rust". Idempotent: does
# nothing when the right version is installed and registered.
#
#   bash kernel/install.sh            # install / register (what scripts/setup.sh calls)
#   bash kernel/install.sh --cwd DIR  # kernels start in DIR (Colab: the checkout's notebooks/)
#   bash kernel/install.sh --force    # re-register even if already registered
#   bash kernel/install.sh --cuda     # the kernel builds the crate for CUDA (a GPU machine)
#   bash kernel/install.sh --env NAME=VALUE  # a variable for every kernel (repeatable), e.g.
#                                     # HF_HOME on Drive, ABT_PROFILE, ABT_RUN_DIR
#   bash kernel/install.sh --print-spec [--cuda]  # print the kernelspec, install nothing
#
# The kernelspec it writes sets EVCXR_TMPDIR to a persistent build directory
# ($ABT_CACHE_DIR/evcxr, default ~/.cache/agentbench-tuning/evcxr) so that a new kernel reuses the
# compiled crate: measured here, ~15-20 s to load the crate warm instead of minutes cold. It also
# switches off the debug assertions, overflow checks and incremental builds that evcxr's generated
# profile turns on (they halved the speed of training in the kernel).
#
# With --cuda the kernel's cargo gets `--cfg abt_cuda` in its rustflags, which turns on candle's
# CUDA backend (Cargo.toml's target table): every notebook's plain `:dep` line then builds the GPU
# build, with no notebook rewritten. evcxr passes its own flags in RUSTFLAGS (-Cprefer-dynamic, the
# only one it sets without an lld linker); CARGO_ENCODED_RUSTFLAGS, which cargo prefers, repeats
# it with the cfg added. When a CUDA toolkit is found ($CUDA_HOME, $CUDA_PATH, the nvcc on PATH or
# /usr/local/cuda), its bin/ goes in front of the kernel's PATH, CUDA_HOME names it (where cudarc
# looks for the libraries to link) and NVCC is kernel/nvcc_skip_moe.sh's
# wrapper (written under the cache), which skips candle's MoE/MMQ library: 40-60 minutes less for
# the first cell on a 2-core VM.
set -euo pipefail

EVCXR_VERSION=0.22.0
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${ABT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbench-tuning}
build_dir=${EVCXR_TMPDIR:-$cache/evcxr}
kernel_cwd=""
force=0
cuda=0
print_spec=0
extra_env=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cwd) kernel_cwd=$(cd "$2" && pwd); shift 2 ;;
    --force) force=1; shift ;;
    --cuda) cuda=1; shift ;;
    --print-spec) print_spec=1; shift ;;
    --env)
      case "${2:-}" in
        [A-Za-z_]*=*) extra_env+=("$2"); shift 2 ;;
        *) echo "kernel/install.sh: --env wants NAME=VALUE, got '${2:-}'" >&2; exit 2 ;;
      esac ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "kernel/install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "kernel/install.sh: cargo not found. Install Rust first: https://rustup.rs" >&2
  exit 1
fi

# 1. The kernel binary.
# (evcxr_jupyter has no --version; cargo's own record of installed packages says which one.)
installed=$(cargo install --list | sed -n 's/^evcxr_jupyter v\([0-9.]*\):$/\1/p')
if [ "$print_spec" = 1 ]; then
  :
elif [ "$installed" = "$EVCXR_VERSION" ] && command -v evcxr_jupyter >/dev/null; then
  echo "evcxr_jupyter $EVCXR_VERSION already installed"
else
  echo "installing evcxr_jupyter $EVCXR_VERSION (found: ${installed:-none}); this compiles for a few minutes"
  cargo install --locked evcxr_jupyter --version "$EVCXR_VERSION"
fi
exe=$(command -v evcxr_jupyter || echo "$HOME/.cargo/bin/evcxr_jupyter")

# 2. The kernelspec, pointing at the binary, with the persistent build directory.
data_dir=${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}
spec="$data_dir/kernels/rust/kernel.json"
# evcxr links each cell's library in target/.../deps with a RUNPATH to libstd relative to that
# directory, then moves it one level up; when the build directory shares a prefix with the
# toolchain (both under $HOME) the relative path no longer resolves and dlopen fails. The
# toolchain's library directory on LD_LIBRARY_PATH makes the lookup independent of the RUNPATH.
# It is put in front of the LD_LIBRARY_PATH the kernel is started with, not in its place: Colab
# keeps its CUDA driver libraries there (/usr/lib64-nvidia). A kernelspec's env replaces a
# variable, so the kernel starts through a shell that extends it.
libdir=$(rustc --print target-libdir)
toolkit=""
nvcc_wrapper=""
if [ "$cuda" = 1 ]; then
  for candidate in "${CUDA_HOME:-}" "${CUDA_PATH:-}" \
      "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /nonexistent/bin/nvcc)")")" \
      /usr/local/cuda; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ]; then
      toolkit=$(cd "$candidate" && pwd)
      break
    fi
  done
  if [ -n "$toolkit" ]; then
    nvcc_wrapper="$cache/nvcc-skip-moe/bin/nvcc"
    if [ "$print_spec" = 0 ]; then
      bash "$here/nvcc_skip_moe.sh" "$toolkit" "$cache/nvcc-skip-moe"
    fi
  else
    echo "kernel/install.sh: warning: no CUDA toolkit found (nvcc, CUDA_HOME, /usr/local/cuda); the kernel's CUDA build needs one" >&2
  fi
fi
want=$(python3 - "$exe" "$build_dir" "$kernel_cwd" "$here/evcxr" "$libdir" "$cuda" "$toolkit" "$nvcc_wrapper" ${extra_env[@]+"${extra_env[@]}"} <<'PY'
import json, shlex, sys
exe, build_dir, cwd, config_dir, libdir, cuda, toolkit, nvcc_wrapper = sys.argv[1:9]
extra = dict(item.split("=", 1) for item in sys.argv[9:])
script = f'LD_LIBRARY_PATH={shlex.quote(libdir)}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}; export LD_LIBRARY_PATH; '
if toolkit:
    script += (f'PATH={shlex.quote(toolkit + "/bin")}:$PATH; '
               f'CUDA_HOME=${{CUDA_HOME:-{shlex.quote(toolkit)}}}; export PATH CUDA_HOME; ')
if cwd:
    script += f"cd {shlex.quote(cwd)} && "
script += f'exec {shlex.quote(exe)} --control_file "$0"'
argv = ["/bin/sh", "-c", script, "{connection_file}"]
env = dict(extra)
if cuda == "1":
    env["CARGO_ENCODED_RUSTFLAGS"] = "\x1f".join(["-Cprefer-dynamic", "--cfg", "abt_cuda"])
if nvcc_wrapper:
    env["NVCC"] = nvcc_wrapper
print(json.dumps({
    "argv": argv,
    "display_name": "Rust (CUDA)" if cuda == "1" else "Rust",
    "language": "rust",
    "interrupt_mode": "message",
    "env": env | {
        "EVCXR_TMPDIR": build_dir,
        "EVCXR_CONFIG_DIR": config_dir,
        # evcxr's generated [profile.dev] turns on debug assertions, overflow checks and
        # incremental builds; cargo's environment overrides them. Measured on an SFT step of
        # SmolLM2: 25 s per step with evcxr's settings, 13.5 s without (the release CLI's speed).
        "CARGO_PROFILE_DEV_DEBUG_ASSERTIONS": "false",
        "CARGO_PROFILE_DEV_OVERFLOW_CHECKS": "false",
        "CARGO_INCREMENTAL": "0",
    },
}, indent=1, sort_keys=True))
PY
)
if [ "$print_spec" = 1 ]; then
  printf '%s\n' "$want"
  exit 0
fi
if [ "$force" = 0 ] && [ -f "$spec" ] && [ "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=1, sort_keys=True))' "$spec")" = "$want" ]; then
  echo "kernel \"rust\" already registered at $spec"
else
  # evcxr writes its resources (logo, kernel.js, version.txt) into the standard user kernel
  # directory; JUPYTER_PATH makes it write under $data_dir when that is set differently.
  JUPYTER_PATH="$data_dir" "$exe" --install >/dev/null
  printf '%s\n' "$want" > "$spec.tmp" && mv "$spec.tmp" "$spec"
  echo "registered kernel \"rust\" at $spec (build dir $build_dir)"
fi
mkdir -p "$build_dir"
