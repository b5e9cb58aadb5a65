#!/usr/bin/env bash
# bench-load.sh — time `layerfs load` of an OCI image against `umoci unpack` and
# `tar -xzf` of each layer, median of N runs, fresh store/destination each run.
#
# Usage (as root, so all three keep owners, devices and xattrs alike):
#   scripts/bench-load.sh [OCI_LAYOUT[:TAG]] [RUNS]
# Default image: the Debian layout that ../shared/scripts/make-fixtures.sh builds
# (STEPS="deps debian" make-fixtures.sh → /var/tmp/layerfs-fixtures/out/debian/oci), tag latest.
# Environment: LAYERFS=path to the binary (default: target/release/layerfs, built if missing);
#   WORK=scratch dir on the filesystem to measure (default: a temp dir under /var/tmp).
# Every run starts from an empty destination and runs `sync` (untimed) first, so dirty
# pages of the previous run do not bill the next one; disk needed: RUNS+1 copies of the
# unpacked image per tool. Page cache for the source is warm
# (one untimed warm-up run of each), as it is for every tool alike.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SRC=${1:-/var/tmp/layerfs-fixtures/out/debian/oci}
RUNS=${2:-5}
case $SRC in *:*) LAYOUT=${SRC%:*}; TAG=${SRC##*:} ;; *) LAYOUT=$SRC; TAG=latest ;; esac
[ -f "$LAYOUT/index.json" ] || { echo "no OCI layout at $LAYOUT (build it: STEPS=\"deps debian\" ../shared/scripts/make-fixtures.sh)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (tar -p and umoci keep owners only as root)" >&2; exit 1; }
for t in umoci jq tar; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done

LAYERFS=${LAYERFS:-$REPO/target/release/layerfs}
[ -x "$LAYERFS" ] || (cd "$REPO" && cargo build --release --quiet)
WORK=$(mktemp -d "${WORK:-/var/tmp}/layerfs-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The layer blobs of the image, bottom first, with their media types.
manifest_digest=$(jq -r --arg t "$TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$LAYOUT/index.json" | head -1)
[ -n "$manifest_digest" ] || { echo "no tag $TAG in $LAYOUT" >&2; exit 1; }
manifest=$LAYOUT/blobs/${manifest_digest/://}
mapfile -t LAYERS < <(jq -r '.layers[] | .digest + " " + .mediaType' "$manifest")

now() { date +%s.%N; }
# time_one NAME CMD... : one timed run; prints seconds
time_one() {
  local t0 t1
  sync
  t0=$(now)
  "$@" >/dev/null 2>&1
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }

# Each run writes into a new directory and nothing is deleted until the end: deleting
# hundreds of MB of small files between runs slows ext4's inode allocation for the next
# run ("recently deleted" scans) and would be measured instead of the tools.
# (A fresh name inside a fresh directory: runs happen in subshells, so no counter.)
next_dest() { echo "$(mktemp -d "$WORK/run.XXXXXX")/dest"; }
run_layerfs() { "$LAYERFS" --root "$(next_dest)" load -q "oci:$LAYOUT:$TAG"; }
run_umoci() { umoci unpack --image "$LAYOUT:$TAG" "$(next_dest)"; }
run_tar() {
  local dest i=0 l digest mt flag
  dest=$(next_dest)
  for l in "${LAYERS[@]}"; do
    digest=${l%% *}; mt=${l#* }; i=$((i + 1))
    case $mt in *+zstd) flag=--zstd ;; *gzip) flag=-z ;; *) flag= ;; esac
    mkdir -p "$dest/$i"
    tar $flag -x -p --numeric-owner --xattrs --xattrs-include='*' -f "$LAYOUT/blobs/${digest/://}" -C "$dest/$i"
  done
}
clean() { sync; }

echo "image: $LAYOUT:$TAG (${#LAYERS[@]} layers), $RUNS runs each, scratch $WORK" >&2
declare -A MED
for tool in layerfs umoci tar; do
  "run_$tool" >/dev/null 2>&1 || { echo "$tool failed" >&2; exit 1; }   # warm-up, also a check
  clean
  times=()
  for _ in $(seq "$RUNS"); do
    times+=("$(time_one "run_$tool")")
    clean
  done
  MED[$tool]=$(printf '%s\n' "${times[@]}" | median)
  printf '%-8s runs: %s\n' "$tool" "$(printf '%.3f ' "${times[@]}")" >&2
done

printf '\n%-36s %10s %8s\n' "tool (median of $RUNS)" "seconds" "ratio"
printf '%-36s %10.3f %8s\n' "layerfs load (all layers, parallel)" "${MED[layerfs]}" "1.00"
printf '%-36s %10.3f %8.2f\n' "umoci unpack" "${MED[umoci]}" "$(echo "${MED[umoci]} / ${MED[layerfs]}" | bc -l)"
printf '%-36s %10.3f %8.2f\n' "tar -x of each layer (sequential)" "${MED[tar]}" "$(echo "${MED[tar]} / ${MED[layerfs]}" | bc -l)"
echo "(ratio = other tool's time / layerfs time; > 1 means layerfs is faster)"
