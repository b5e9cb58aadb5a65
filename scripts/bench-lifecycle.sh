#!/usr/bin/env bash
# bench-lifecycle.sh — time `layerfs diff` and `layerfs commit` against `docker diff` and
# `docker commit` of the same changes, median of N runs.
#
# Usage (as root): scripts/bench-lifecycle.sh [--no-build] [--no-docker] [OCI_LAYOUT[:TAG]] [RUNS]
# Default image: the Debian layout that ../shared/scripts/make-fixtures.sh builds
# (STEPS="deps debian" make-fixtures.sh → /var/tmp/layerfs-fixtures/out/debian/oci), tag latest.
#
# Workloads, each a container of the image (a layerfs container through its mount, a
# Docker container with `docker run … sh -c`):
#   10 files     5 files of /etc appended to, 5 new files in /root
#   20k files    20 000 new small files in 100 directories under /srv/bench
#   3 of 100k    3 files touched in a synthetic 100k-file image (scripts/bench/gen-image.py),
#                layerfs only: diff must not depend on the image's size
# `commit` is timed with its layer unpacked into the store each run (the committed image
# is removed and the store pruned between runs, untimed); Docker's the same (rmi).
# Docker: the engine DOCKER_HOST (or the default socket) names when it answers; else a
# private dockerd is started (and stopped) when installed; else the Docker columns say
# "n/a". LAYERFS=path to the binary (default target/release/layerfs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BUILD=1
DOCKER=1
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) BUILD=0; shift ;;
    --no-docker) DOCKER=0; shift ;;
    *) break ;;
  esac
done
SRC=${1:-/var/tmp/layerfs-fixtures/out/debian/oci}
RUNS=${2:-5}
case $SRC in *:*) LAYOUT=${SRC%:*}; TAG=${SRC##*:} ;; *) LAYOUT=$SRC; TAG=latest ;; esac
[ -f "$LAYOUT/index.json" ] || { echo "no OCI layout at $LAYOUT (build it: STEPS=\"deps debian\" ../shared/scripts/make-fixtures.sh)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (the mounts keep file owners)" >&2; exit 1; }

LAYERFS=${LAYERFS:-$REPO/target/release/layerfs}
if [ "$BUILD" = 1 ]; then (cd "$REPO" && cargo build --release --quiet); fi
WORK=$(mktemp -d /var/tmp/layerfs-bench-lc.XXXXXX)
STORE=$WORK/store
MOUNTS=()
DOCKERD_PID=
cleanup() {
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    grep -o " $WORK/docker[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
lfs() { "$LAYERFS" --root "$STORE" -q "$@"; }

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2] + a[NR/2+1]) / 2)}'; }
# ms N: nanoseconds → "12.3 ms" / "1.23 s"
fmt() { awk -v n="$1" 'BEGIN { if (n == "") print "n/a"; else if (n >= 1e9) printf "%.2f s", n/1e9; else printf "%.1f ms", n/1e6 }'; }
# timed CMD...: runs once, prints nanoseconds
timed() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); echo $((t1 - t0)); }

SMALL='for f in passwd group shells issue debian_version; do echo bench >> /etc/$f; done; for i in 1 2 3 4 5; do echo $i > /root/new-$i; done'
BIG='for d in $(seq 0 99); do mkdir -p /srv/bench/d$d; i=0; while [ $i -lt 200 ]; do echo $d-$i > /srv/bench/d$d/f$i; i=$((i+1)); done; done'

echo "loading $LAYOUT:$TAG …" >&2
IMAGE=$(lfs load "oci:$LAYOUT:$TAG" | tail -1)

# container NAME SCRIPT: a mounted layerfs container changed by SCRIPT (paths made
# relative to the mount point)
container() {
  local m=$WORK/mnt-$1
  mkdir -p "$m"
  lfs mount "$IMAGE" "$m" --name "$1" >/dev/null
  MOUNTS+=("$m")
  (cd "$m" && sh -ec "$(printf '%s' "$2" | sed 's#/etc/#etc/#g; s#/root/#root/#g; s#/srv/#srv/#g')")
}

# bench_layerfs NAME → "diff_ns commit_ns"
bench_layerfs() {
  local name=$1 d=() c=() r id
  lfs diff "$name" >/dev/null
  for r in $(seq "$RUNS"); do d+=("$(timed lfs diff "$name")"); done
  for r in $(seq "$RUNS"); do
    t0=$(now); id=$(lfs commit "$name"); t1=$(now)
    c+=($((t1 - t0)))
    lfs rmi "$id" >/dev/null; lfs prune >/dev/null
  done
  echo "$(printf '%s\n' "${d[@]}" | median) $(printf '%s\n' "${c[@]}" | median)"
}

# Docker: an engine to talk to, if any.
DOCKER_OK=0
if [ "$DOCKER" = 1 ] && command -v docker >/dev/null; then
  if docker info >/dev/null 2>&1; then
    DOCKER_OK=1
  elif command -v dockerd >/dev/null; then
    echo "starting a private dockerd …" >&2
    mkdir -p "$WORK/docker"
    dockerd --data-root "$WORK/docker/data" --exec-root "$WORK/docker/exec" --pidfile "$WORK/docker/pid" \
      -H "unix://$WORK/docker/sock" --iptables=false --bridge=none \
      --containerd-namespace "lfs-bench-$$" --containerd-plugins-namespace "lfs-bench-$$-p" \
      >"$WORK/docker/log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST="unix://$WORK/docker/sock"
    for _ in $(seq 300); do docker info >/dev/null 2>&1 && { DOCKER_OK=1; break; }; sleep 0.2; done
  fi
fi
if [ "$DOCKER_OK" = 1 ]; then
  echo "loading the image into Docker …" >&2
  command -v skopeo >/dev/null || { echo "missing skopeo (to hand the image to Docker)" >&2; exit 1; }
  skopeo copy -q "oci:$LAYOUT:$TAG" "docker-archive:$WORK/image.tar:layerfs-bench/image:latest"
  docker load -q -i "$WORK/image.tar" >/dev/null
  rm -f "$WORK/image.tar"
fi

# bench_docker NAME SCRIPT → "diff_ns commit_ns" (or "n/a n/a")
bench_docker() {
  [ "$DOCKER_OK" = 1 ] || { echo " "; return; }
  local name=$1 d=() c=() r id
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run --network=none --user 0:0 --name "$name" layerfs-bench/image:latest sh -ec "$2" >/dev/null
  docker diff "$name" >/dev/null
  for r in $(seq "$RUNS"); do d+=("$(timed docker diff "$name")"); done
  for r in $(seq "$RUNS"); do
    t0=$(now); id=$(docker commit "$name"); t1=$(now)
    c+=($((t1 - t0)))
    docker rmi "$id" >/dev/null
  done
  docker rm -f "$name" >/dev/null
  echo "$(printf '%s\n' "${d[@]}" | median) $(printf '%s\n' "${c[@]}" | median)"
}

rows=()
for w in small big; do
  case $w in
    small) label="10 files"; script=$SMALL ;;
    big) label="20k files"; script=$BIG ;;
  esac
  echo "workload: $label …" >&2
  container "lc-$w" "$script"
  read -r ld lc < <(bench_layerfs "lc-$w")
  read -r dd dc < <(bench_docker "lc-$w" "$script")
  rows+=("| $label | $(fmt "$ld") | $(fmt "$dd") | $(fmt "$lc") | $(fmt "$dc") |")
done

# 3 files touched in a 100k-file image: layerfs diff only.
if command -v python3 >/dev/null; then
  echo "workload: 3 of 100k …" >&2
  python3 "$HERE/bench/gen-image.py" "$WORK/big-oci" --dirs 500 --files 200 --big-mib 1 --victims 1 --mv-dirs 1 >/dev/null
  big_id=$(lfs load "oci:$WORK/big-oci:latest" | tail -1)
  files=$(lfs inspect "$big_id" | jq -r '.[0].layers[].path' | xargs -I{} find {} -type f | wc -l)
  m=$WORK/mnt-hundredk
  mkdir -p "$m"
  lfs mount "$big_id" "$m" --name hundredk >/dev/null
  MOUNTS+=("$m")
  (cd "$m" && echo x >> tree/d0000/f000 && echo y >> tree/d0250/f100 && echo z > tree/d0499/new)
  read -r ld lc < <(bench_layerfs hundredk)
  rows+=("| 3 of $files files | $(fmt "$ld") | | $(fmt "$lc") | |")
fi

echo
echo "layerfs $(lfs --version | awk '{print $2}'), $(nproc) cores, medians of $RUNS runs$([ "$DOCKER_OK" = 1 ] && echo ", Docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) ($(docker info --format '{{.Driver}}' 2>/dev/null))")"
echo
echo "| changed | layerfs diff | docker diff | layerfs commit | docker commit |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
