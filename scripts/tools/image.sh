#!/usr/bin/env bash
# Build the production Dockerfile with no container registry and no daemon.
#   image.sh build          builds (cached) and prints the image ID
#   image.sh podman ARGS    podman on the same image store: how the tests run the image
#                           (`image.sh podman system reset --force` empties the store)
# The pinned python base cannot be pulled without a registry, so a stand-in base is made from
# Debian's packages (debootstrap: the same bookworm, Debian's python 3.11) and the two FROM lines
# of a temporary copy of the Dockerfile name it; every other instruction runs as written, with
# the repository as the context (the real .dockerignore applies). Needs root.
# STREAMPROC_DEBIAN_MIRROR: the mirror debootstrap reads (default deb.debian.org).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${STREAMPROC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamproc}"
dir="$cache/image"
# A new base whenever this script changes: the base's packages and configuration live here.
base="localhost/streamproc-base:$(sha256sum "$0" | cut -c1-12)"
# One tag per checkout: builds from two checkouts at once do not untag each other's image.
tag="test-$(printf %s "$root" | sha256sum | cut -c1-8)"

# CI starts bare: install what is missing, quietly. runc, not crun: crun 1.8 refuses hosts whose
# cgroup v2 hierarchy holds a controller next to v1 (hybrid mode).
missing=()
for tool in buildah debootstrap podman runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image.sh: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The store survives between runs, so the lock's dependency layer is reused when only the source
# changes. overlay where the kernel mounts it on the cache's filesystem (not on overlayfs itself,
# as in a container): a cached step or a new container then copies nothing; vfs copies the tree.
mkdir -p "$dir"
if [ ! -f "$dir/driver" ]; then
  probe=$(mktemp -d "$dir/probe.XXXXXX")
  mkdir "$probe"/{l,u,w,m}
  driver=vfs
  if mount -t overlay overlay -o "lowerdir=$probe/l,upperdir=$probe/u,workdir=$probe/w" "$probe/m" 2>/dev/null; then
    umount "$probe/m"
    driver=overlay
  fi
  echo "$driver" >"$probe.driver" && mv "$probe.driver" "$dir/driver"
  rm -rf "$probe"
fi
driver=$(cat "$dir/driver")
store=(--root "$dir/storage-$driver" --runroot "$dir/run-$driver" --storage-driver "$driver")

if [ "${1:-}" = podman ]; then
  # No systemd or journald here. Fixed modest limits: podman's default raises them to its own
  # maxima, which a runtime without CAP_SYS_RESOURCE (VM sandboxes, some CI runners) cannot set.
  cat >"$dir/containers.conf.$$" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  mv "$dir/containers.conf.$$" "$dir/containers.conf"
  CONTAINERS_CONF="$dir/containers.conf" exec podman "${store[@]}" "${@:2}"
fi
[ "${1:-}" = build ] || { echo "usage: image.sh build | image.sh podman ARGS..." >&2; exit 2; }

exec 9>"$dir/lock"
flock 9
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! podman "${store[@]}" image exists "$base"; then
  echo "image.sh: making the stand-in base $base with debootstrap (once per version of this script)" >&2
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,passwd,ca-certificates \
    bookworm "$work/rootfs" "${STREAMPROC_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/log" 2>&1 \
    || { tail -30 "$work/log" >&2; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  # pip in the build reaches PyPI through whatever TLS proxy this host trusts: the host's bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  # What the official image's configuration sets: the Dockerfile's `ENV PATH=...:$PATH` needs it.
  tar -C "$work/rootfs" -c . | podman "${store[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    - "$base" >/dev/null
  rm -rf "$work/rootfs"
  # Bases of earlier versions of this script go; the prune below takes their layers.
  podman "${store[@]}" images --format '{{.Repository}}:{{.Tag}}' localhost/streamproc-base \
    | grep -vxF "$base" | xargs -r podman "${store[@]}" rmi -f >/dev/null || true
fi

# A digest reference cannot be tagged locally: replace the base in both FROM lines, nothing else.
sed -E "s|^FROM python:[^ ]+ AS |FROM $base AS |" "$root/Dockerfile" >"$work/Dockerfile"
[ "$(grep -c "^FROM $base AS " "$work/Dockerfile")" = 2 ] \
  || { echo "image.sh: expected two 'FROM python:... AS' lines in the Dockerfile" >&2; exit 1; }
# --layers keeps each step's result for the next build; --format docker keeps the HEALTHCHECK.
# The builder stage is tagged too, so that the prune keeps its last step (a rebuilt wheel differs
# byte for byte and would invalidate the runtime stage's cached layers).
bud=(buildah "${store[@]}" bud --isolation chroot --pull=never --layers --format docker -f "$work/Dockerfile")
"${bud[@]}" --target builder -t "localhost/streamproc-builder:$tag" "$root" >&2
"${bud[@]}" --iidfile "$work/iid" -t "localhost/streamproc:$tag" "$root" >&2
# Untagged images of earlier builds go, with the layers only they use (not the cached steps of
# this build: each is the parent of the next, up to the two tags).
podman "${store[@]}" image prune -f >/dev/null || echo "image.sh: could not prune old images" >&2
cat "$work/iid"
echo
