#!/usr/bin/env bash
# Writes an nvcc wrapper that skips candle-kernels' static MoE/MMQ library:
#
#   bash kernel/nvcc_skip_moe.sh TOOLKIT DEST     # then NVCC=DEST/bin/nvcc
#
# candle-kernels' build script compiles 15 CUDA files of machine code for quantized
# mixture-of-experts and GGUF matmul kernels into a static library (40-60 min on 2 cores), which
# this project never calls. The wrapper turns those 15 sources into empty objects (a link drops
# the unused code that refers to them: the GPU check's binaries link without them) and passes
# every other call to TOOLKIT/bin/nvcc. It sits in a toolkit-shaped directory (bin/, include/,
# lib64/ linked to TOOLKIT's), because the kernel builder finds headers and libraries next to the
# nvcc it is given. scripts/cuda_toolkit.sh (the CUDA build check) and kernel/install.sh --cuda
# (the notebook kernel) use it.
set -euo pipefail
toolkit=$1
dest=$2
if [ ! -x "$toolkit/bin/nvcc" ]; then
  echo "nvcc_skip_moe.sh: no nvcc in $toolkit/bin" >&2
  exit 1
fi
mkdir -p "$dest/bin"
ln -sfn "$toolkit/include" "$dest/include"
ln -sfn "$toolkit/lib64" "$dest/lib64"
cat >"$dest/bin/nvcc.tmp" <<WRAPPER
#!/usr/bin/env bash
# nvcc without candle-kernels' MoE/MMQ library (written by kernel/nvcc_skip_moe.sh).
real="$toolkit/bin/nvcc"
out=""
stub=""
lib=""
prev=""
for a in "\$@"; do
  case "\$a" in
    *moe/*.cu|*mmq_gguf/*.cu|*mmvq_gguf.cu) stub=1 ;;
    --lib) lib=1 ;;
  esac
  if [ "\$prev" = "-o" ]; then out="\$a"; fi
  prev="\$a"
done
if [ -n "\$stub" ] && [ -n "\$out" ]; then
  exec cc -c -x c /dev/null -o "\$out"
fi
if [ -n "\$lib" ] && [ -n "\$out" ] && [[ "\$out" == */libmoe.a ]]; then
  rm -f "\$out"
  objs=()
  for a in "\$@"; do case "\$a" in *.o) objs+=("\$a") ;; esac; done
  exec ar rcs "\$out" "\${objs[@]}"
fi
exec "\$real" "\$@"
WRAPPER
chmod +x "$dest/bin/nvcc.tmp"
mv "$dest/bin/nvcc.tmp" "$dest/bin/nvcc"
