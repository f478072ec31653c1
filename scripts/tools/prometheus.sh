#!/usr/bin/env bash
# Prints the paths of promtool and the Prometheus server, one per line (or only the one named:
# `prometheus.sh promtool`), installing Debian's prometheus package (2.42 on bookworm) when
# either is missing. The server is started by hand by the tests; no systemd is needed.
set -euo pipefail

want="${1:-both}"
case "$want" in
  both | promtool | prometheus) ;;
  *) echo "usage: $0 [promtool|prometheus]" >&2; exit 2 ;;
esac

find_tools() {
  promtool="$(command -v promtool || true)"
  server="$(command -v prometheus || true)"
  [ -n "$promtool" ] && [ -n "$server" ]
}

if ! find_tools; then
  if ! command -v apt-get >/dev/null; then
    echo "promtool/prometheus missing and apt-get is not available: install Prometheus 2.x so that promtool and prometheus are on PATH" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo -n); fi
  export DEBIAN_FRONTEND=noninteractive
  # Wait for a concurrent apt run instead of failing on its lock.
  lock=(-o DPkg::Lock::Timeout=600)
  {
    "${sudo[@]}" apt-get "${lock[@]}" update -q
    # The package's post-install script starts the server only under systemd; tests start their own.
    "${sudo[@]}" apt-get "${lock[@]}" install -y -q --no-install-recommends prometheus
  } >&2 || { echo "apt-get install prometheus failed (see above)" >&2; exit 1; }
  if ! find_tools; then
    echo "the prometheus package installed but promtool/prometheus are not on PATH" >&2
    exit 1
  fi
fi

case "$want" in
  both) printf '%s\n%s\n' "$promtool" "$server" ;;
  promtool) echo "$promtool" ;;
  prometheus) echo "$server" ;;
esac
