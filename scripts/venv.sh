# Sourced by scripts/setup.sh and scripts/setup_ref.sh: one way to make a Python venv.
#
#   ensure_venv <tag> <venv dir> <requirements file> <what>
#
# Creates the venv (installing Debian's python3-venv when root and venv is missing), then
# pip-installs the requirements only when their sha256 differs from the last install.

ensure_venv() {
  local tag=$1 venv=$2 req=$3 what=$4
  local base
  base=$(basename "$req" .txt)
  local stamp="$venv/.$base.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "$tag: python3 -m venv failed; installing Debian's python3-venv"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
      else
        echo "$tag: python3 -m venv failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
        exit 1
      fi
    fi
  fi
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "$tag: installing $what into $(basename "$venv")"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  else
    echo "$tag: $(basename "$venv") is up to date"
  fi
}
