#!/usr/bin/env bash
# bench-save.sh — time `layerfs save` of an image, per format and layer compression,
# against `skopeo copy` (and `docker save` when a Docker engine is given), median of N
# runs, each into a new output.
#
# Usage (as root):
#   scripts/bench-save.sh [OCI_LAYOUT[:TAG]] [RUNS]
# Default image: the Debian layout that ../shared/scripts/make-fixtures.sh builds
# (STEPS="deps debian" make-fixtures.sh -> /var/tmp/layerfs-fixtures/out/debian/oci), tag latest.
# Environment: LAYERFS=path to the binary (default: target/release/layerfs, built if
#   missing); WORK=scratch dir (default: a temp dir under /var/tmp); DOCKER_HOST=a
#   running Docker engine (unix://…) to include `docker save` (the image is docker-loaded
#   first; none is started here).
# The image is loaded into a scratch store once; the page cache is warm for every tool
# alike (one untimed warm-up run each); `sync` (untimed) before each run. Besides the
# time: the output's size, and the rate in MB/s of uncompressed layer data.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SRC=${1:-/var/tmp/layerfs-fixtures/out/debian/oci}
RUNS=${2:-3}
case $SRC in *:*) LAYOUT=${SRC%:*}; TAG=${SRC##*:} ;; *) LAYOUT=$SRC; TAG=latest ;; esac
[ -f "$LAYOUT/index.json" ] || { echo "no OCI layout at $LAYOUT (build it: STEPS=\"deps debian\" ../shared/scripts/make-fixtures.sh)" >&2; exit 1; }
for t in skopeo jq bc; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done

LAYERFS=${LAYERFS:-$REPO/target/release/layerfs}
[ -x "$LAYERFS" ] || (cd "$REPO" && cargo build --release --quiet)
WORK=$(mktemp -d "${WORK:-/var/tmp}/layerfs-bench-save.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export LAYERFS_ROOT=$WORK/store

id=$("$LAYERFS" load -q "oci:$LAYOUT:$TAG" | tail -1)
raw=$("$LAYERFS" save "$id" --format oci --compress none -o "$WORK/raw" && du -sb "$WORK/raw/blobs" | cut -f1)
rm -rf "$WORK/raw"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
n=0
out() { n=$((n + 1)); echo "$WORK/out-$n"; }

# bench NAME CMD… (CMD writes to $OUT): warm-up, then RUNS timed runs.
printf '%-46s %9s %10s %9s\n' "what" "median s" "output MB" "MB/s"
bench() {
  local name=$1 i t0 t1 times="" o size
  shift
  OUT=$(out); "$@" >/dev/null 2>&1; rm -rf "$OUT"
  for i in $(seq "$RUNS"); do
    OUT=$(out)
    sync
    t0=$(now)
    "$@" >/dev/null 2>&1 || { echo "$name: failed" >&2; return; }
    t1=$(now)
    times+="$(echo "$t1 - $t0" | bc -l)"$'\n'
    size=$(du -sb "$OUT" | cut -f1)
    rm -rf "$OUT"
  done
  local med
  med=$(printf '%s' "$times" | median)
  printf '%-46s %9.2f %10.1f %9.0f\n' "$name" "$med" "$(echo "$size / 1000000" | bc -l)" \
    "$(echo "$raw / 1000000 / $med" | bc -l)"
}

lf() { "$LAYERFS" save "$id" -o "$OUT" "$@"; }
bench "layerfs save (docker-archive, none)" lf
bench "layerfs save --compress gzip (docker-archive)" lf --compress gzip
bench "layerfs save --format oci (as loaded: gzip)" lf --format oci
bench "layerfs save --format oci --compress zstd" lf --format oci --compress zstd
bench "layerfs save --format oci --compress none" lf --format oci --compress none
bench "layerfs save --format oci-archive (gzip)" lf --format oci-archive
sk_oci() { skopeo copy --quiet "oci:$LAYOUT:$TAG" "oci:$OUT:x"; }
sk_docker() { skopeo copy --quiet "oci:$LAYOUT:$TAG" "docker-archive:$OUT"; }
sk_zstd() { skopeo copy --quiet --dest-compress-format zstd "oci:$LAYOUT:$TAG" "oci:$OUT:x"; }
bench "skopeo copy oci: -> oci: (blobs as they are)" sk_oci
bench "skopeo copy oci: -> docker-archive: (gunzip)" sk_docker
bench "skopeo copy oci: -> oci: --dest-compress zstd" sk_zstd
if [ -n "${DOCKER_HOST:-}" ]; then
  "$LAYERFS" save "$id" -o "$WORK/d.tar" && docker load -q -i "$WORK/d.tar" >/dev/null && rm -f "$WORK/d.tar"
  dk() { docker save -o "$OUT" "$id"; }
  bench "docker save (Engine $(docker version -f '{{.Server.Version}}'))" dk
fi
echo "(uncompressed layer data: $(echo "$raw / 1000000" | bc -l | xargs printf '%.0f') MB; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
