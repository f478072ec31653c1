#!/usr/bin/env bash
# Rewrite requirements/image.txt: the image's runtime dependencies (pyproject.toml's
# [project] dependencies, no extras) resolved for CPython 3.11 on Linux, each pinned with the
# sha256 of every file PyPI serves for it. The Dockerfile installs it with --require-hashes.
# Run after changing those dependencies (`make lock`); tests/deploy/test_image.py fails until then.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
tools="$cache/pip-tools-7"
py="${PYTHON:-python3}"
# PyPI itself, not a local mirror or a machine's pip constraints: the hashes are PyPI's files.
pypi=(env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null)
if [ ! -x "$tools/bin/pip-compile" ]; then
  "$py" -m venv "$tools"
  "${pypi[@]}" "$tools/bin/pip" install --quiet 'pip-tools>=7.4,<8' >&2
fi
cd "$root"
"${pypi[@]}" "$tools/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-index-url \
  --index-url https://pypi.org/simple --output-file requirements/image.txt pyproject.toml
