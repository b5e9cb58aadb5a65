#!/usr/bin/env bash
# bench.sh — layerfs beside kernel overlayfs and fuse-overlayfs (2.0 and 1.10).
#
# Usage (as root):  scripts/bench.sh [--quick] [--rounds N] [--only REGEX] [--fs LIST]
#                                    [--out FILE] [--report RAW] [--no-build] [--yes]
#
#   --quick       one round on small generated data, no Debian image; well under a minute
#                 (what .ci/run runs, so that the harness never rots)
#   --rounds N    rounds (default 5, or 1 with --quick)
#   --only REGEX  only the cells whose name matches (e.g. 'gen:find|copy-up')
#   --fs LIST     only these filesystems, comma separated (ids below)
#   --out FILE    also write the table to FILE (markdown, with the machine and date);
#                 `--out docs/performance.md` after a full run is how that page is made
#   --report RAW  measure nothing: print (and with --out, write) the tables of an earlier
#                 run from its raw results (BENCH_DIR/results/*.tsv)
#   --no-build    do not run `cargo build --release` first
#   --yes         do not wait before a full run (it says how long it will take first)
#
# Filesystems (ids): kernel (kernel overlayfs), fo2 (fuse-overlayfs 2.0), fo1
# (fuse-overlayfs 1.10), lfs (layerfs-overlay on the layer directories), lfsm (`layerfs
# mount` of the same image from a layer store). One that is not installed or cannot mount
# is reported as missing in its column; a workload that fails shows its error in its cell.
#
# Each cell is: a fresh mount (new upper and work directories), caches dropped, the timed
# steps (cold, then warm where it matters), the daemon's peak RSS (VmHWM), unmount. Rounds
# go workload by workload, all filesystems in turn, in an order that rotates every round;
# the table shows medians over rounds.
#
# Environment: BENCH_DIR (scratch, default /var/tmp/layerfs-bench), FIXTURES (default
# /var/tmp/layerfs-fixtures/out, for debian/oci), SHARED_SCRIPTS (default
# REPO/../shared/scripts), FUSE_OVERLAYFS2 / FUSE_OVERLAYFS1 (binaries), LAYERFS_BIN_DIR
# (default REPO/target/release), LAYERFS_BASE_BIN_DIR (a second build, e.g. of the last
# release or of main before a change: measured as "layerfs-overlay baseline" (id base),
# interleaved with the others, with a "layerfs-overlay / baseline" column), KERNEL_OVL_OPTS (extra kernel overlay options, e.g.
# redirect_dir=on,index=on,metacopy=on), STEP_TIMEOUT (seconds, default 600), PYTHON
# (default /usr/bin/python3).
#
# Exit status: 0, or 1 when layerfs-overlay is missing or fails a workload (or the harness
# itself fails), 2 on bad usage.
set -euo pipefail
export LC_ALL=C TZ=UTC

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
LIB=$HERE/bench

QUICK=0 ROUNDS='' ONLY='' FS_LIST='' OUT='' BUILD=1 YES=0 REPORT=''
usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --only) ONLY=${2:?}; shift ;;
    --fs) FS_LIST=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --report) REPORT=${2:?}; shift ;;
    --no-build) BUILD=0 ;;
    --yes|-y) YES=1 ;;
    -h|--help) usage 0 ;;
    *) echo "bench.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
  shift
done
[ -z "$OUT" ] || OUT=$(realpath -m "$OUT")
if [ -n "$REPORT" ]; then   # tables of an earlier run, nothing measured
  PY=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
  [ -f "$REPORT" ] && [ -f "${REPORT%.tsv}.meta.tsv" ] || { echo "bench.sh: no $REPORT or its .meta.tsv" >&2; exit 2; }
  "$PY" "$LIB/report.py" table "$REPORT" "${REPORT%.tsv}.meta.tsv"
  if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    "$PY" "$LIB/report.py" page "$REPORT" "${REPORT%.tsv}.meta.tsv" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  fi
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "bench.sh: must run as root (device whiteouts, drop_caches, kernel overlayfs)" >&2; exit 1; }

# ---------------------------------------------------------------- parameters
if [ "$QUICK" = 1 ]; then
  MODE=quick DIRS=16 FILES=10 BIG_MIB=8 VICTIMS=3 MV_DIRS=2 CREATE_N=300 STAT_N=10000 DEBIAN=0
  DEEP=(10)
  ROUNDS=${ROUNDS:-1}
else
  MODE=full DIRS=300 FILES=40 BIG_MIB=256 VICTIMS=40 MV_DIRS=20 CREATE_N=2500 STAT_N=10000 DEBIAN=1
  DEEP=(10 50 200 1000)
  ROUNDS=${ROUNDS:-5}
fi
BENCH_DIR=$(mkdir -p "${BENCH_DIR:-/var/tmp/layerfs-bench}" && cd "${BENCH_DIR:-/var/tmp/layerfs-bench}" && pwd)
FIXTURES=${FIXTURES:-/var/tmp/layerfs-fixtures/out}
SHARED_SCRIPTS=${SHARED_SCRIPTS:-$REPO/../shared/scripts}
LAYERFS_BIN_DIR_SET=${LAYERFS_BIN_DIR:+1}
LAYERFS_BIN_DIR=${LAYERFS_BIN_DIR:-$REPO/target/release}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
# The system's python3, not a pyenv shim (which costs 0.25 s a start).
PY=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
KERNEL_OVL_OPTS=${KERNEL_OVL_OPTS:-}
RUN=$BENCH_DIR/run                     # mounts, uppers, stores of this run
RESULTS=$BENCH_DIR/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$RESULTS/$STAMP-$MODE.tsv          # kind round fs row value status detail
META=$RESULTS/$STAMP-$MODE.meta.tsv    # key value
LOG=$RESULTS/$STAMP-$MODE.log          # stderr of everything that failed

ALL_FS=(kernel fo2 fo1 lfs lfsm)
[ -z "${LAYERFS_BASE_BIN_DIR:-}" ] || ALL_FS+=(base)
declare -A FS_LABEL=([kernel]="kernel overlayfs" [fo2]="fuse-overlayfs 2.0" [fo1]="fuse-overlayfs 1.10"
                     [lfs]="layerfs-overlay" [lfsm]="layerfs mount" [lfs-load]="layerfs load"
                     [base]="layerfs-overlay baseline")
declare -A MISSING=()                  # fs id -> why it is not measured
mkdir -p "$RESULTS"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- mounts and cleanup
# Every live mount is in ACTIVE ("mountpoint pid"); cleanup unmounts them all, on any exit.
declare -A ACTIVE=()

mounted() { awk -v m="$1" '$5 == m {f=1} END {exit !f}' /proc/self/mountinfo; }

# The process serving FUSE mount MNT: holds /dev/fuse and names MNT on its command line,
# else the one process holding /dev/fuse that was not there before (BEFORE, a pid list).
fuse_pids() { find /proc/[0-9]*/fd -lname /dev/fuse 2>/dev/null | cut -d/ -f3 | sort -un; }
daemon_pid() {
  local mnt=$1 before=$2 p new=()
  for p in $(fuse_pids); do
    if tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | grep -qxF -- "$mnt"; then echo "$p"; return; fi
    grep -qxF -- "$p" <<< "$before" || new+=("$p")
  done
  [ ${#new[@]} -eq 1 ] && echo "${new[0]}"
  return 0
}

# A process that exited but is not reaped yet (a zombie: daemons are reparented to PID 1,
# which may take a second or two to reap them) counts as gone.
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Unmounts MNT; aborts a hung FUSE connection and detaches as a last resort, then waits
# for the daemon PID (if any) to exit, and kills it if it does not.
unmount() {
  local mnt=$1 pid=${2:-} i dev
  if mounted "$mnt"; then
    umount "$mnt" 2>>"$LOG" || { sleep 0.5; umount "$mnt" 2>>"$LOG"; } || {
      log "umount $mnt failed; aborting the connection and detaching"
      dev=$(awk -v m="$mnt" '$5 == m {split($3, d, ":"); print d[2]}' /proc/self/mountinfo)
      [ -n "$dev" ] && [ -e "/sys/fs/fuse/connections/$dev/abort" ] && echo 1 > "/sys/fs/fuse/connections/$dev/abort"
      umount -l "$mnt" 2>>"$LOG" || true
    }
  fi
  if [ -n "$pid" ]; then
    for i in $(seq 200); do alive "$pid" || break; sleep 0.02; done
    if alive "$pid"; then
      log "daemon $pid of $mnt still alive after unmount; killing it"
      kill "$pid" 2>/dev/null; sleep 1; kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  unset 'ACTIVE[$mnt]'
}

cleanup() {
  local m
  for m in "${!ACTIVE[@]}"; do unmount "$m" "${ACTIVE[$m]}"; done
  # anything else of ours still mounted (e.g. a mount that came up after a timeout)
  for m in $(awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r); do unmount "$m"; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# ---------------------------------------------------------------- the filesystems
# mount_FS MNT UPPER WORK DATASET: mount, return once live (0) or fail with a message.
lowerdir_of() { cat "$BENCH_DIR/data/${DATA_DIR[$1]}/dirs/lowerdir"; }
mount_kernel() {
  mount -t overlay overlay -o "lowerdir=$(lowerdir_of "$4"),upperdir=$2,workdir=$3${KERNEL_OVL_OPTS:+,$KERNEL_OVL_OPTS}" "$1"
}
mount_fo2() { "$FO2" -o "lowerdir=$(lowerdir_of "$4"),upperdir=$2,workdir=$3" "$1"; }
mount_fo1() { "$FO1" -o "lowerdir=$(lowerdir_of "$4"),upperdir=$2,workdir=$3" "$1"; }
mount_lfs() { "$LFS_OVERLAY" -o "lowerdir=$(lowerdir_of "$4"),upperdir=$2,workdir=$3" "$1"; }
mount_base() { "$LAYERFS_BASE_BIN_DIR/layerfs-overlay" -o "lowerdir=$(lowerdir_of "$4"),upperdir=$2,workdir=$3" "$1"; }
mount_lfsm() { "$LAYERFS" --root "$RUN/store-$4" -q mount "${STORE_IMAGE[$4]}" "$1"; }

# do_mount FS DATASET CELLDIR: mounts FS at CELLDIR/mnt; sets MNT, PID, MOUNT_SECONDS.
do_mount() {
  local fs=$1 ds=$2 c=$3 before t0 i
  rm -rf "$c"; mkdir -p "$c/mnt" "$c/upper" "$c/work"
  MNT=$c/mnt PID=
  before=$(fuse_pids)
  t0=${EPOCHREALTIME/./}
  "mount_$fs" "$MNT" "$c/upper" "$c/work" "$ds" > "$c/mount.out" 2>&1 || return 1
  for i in $(seq 200); do mounted "$MNT" && break; sleep 0.05; done
  mounted "$MNT" || { echo "not mounted 10 s after the mount command returned" >> "$c/mount.out"; return 1; }
  MOUNT_SECONDS=$(usecs_to_s $(( ${EPOCHREALTIME/./} - t0 )))
  [ "$fs" = kernel ] || PID=$(daemon_pid "$MNT" "$before")
  ACTIVE[$MNT]=$PID
}

usecs_to_s() { printf '%d.%06d' $(( $1 / 1000000 )) $(( $1 % 1000000 )); }
vmhwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# Drops the page, dentry and inode caches, then reads the tools the steps run back in, so
# that a cold step measures the filesystem under test, not the loading of tar or python3
# (0.4 s from a cold cache; only when a step of STEPS uses it).
drop_caches() { # [STEP_FUNCTION...]
  sync; echo 3 > /proc/sys/vm/drop_caches
  local fn
  for fn in "$@"; do
    if declare -f "$fn" | grep -q '"$PY"'; then "$PY" -c 'import os, sys'; break; fi
  done
  { find /dev/null; ls -lR /dev/null; du -s /dev/null; stat / ; xargs true < /dev/null
    tar -cf - /dev/null | cat; dd if=/dev/null of=/dev/null status=none; chmod --help; mv --help; rm --help
    timeout 1 true; wc -l < /dev/null; bash -c true; } > /dev/null 2>&1 || true
}

# ---------------------------------------------------------------- workloads
# A step runs with the mount point as its current directory; it fails (non-zero) when the
# filesystem fails it or the result is wrong (checked cheaply afterwards).
step_find() {
  local n; n=$(find . | wc -l)
  [ "$n" -eq $(( EXPECT_ENTRIES + 1 )) ] || { echo "wrong: find saw $n entries, expected $(( EXPECT_ENTRIES + 1 ))" >&2; return 1; }
}
step_lslR() { ls -lR . > /dev/null; }
step_du() { du -s . > /dev/null; }
step_stat() { xargs -d '\n' -a "$STAT_LIST" stat --printf='' --; }
# GNU tar reads nothing when it writes to /dev/null itself: pipe it.
step_tar() { tar -cf - --exclude=./big . | cat > /dev/null; }
step_read_seq() { dd if=big/big1 of=/dev/null bs=1M status=none; }
step_read_par() {
  local q=$(( BIG_MIB / 4 )) i pids=() rc=0
  for i in 0 1 2 3; do dd if=big/big2 of=/dev/null bs=1M skip=$(( i * q )) count=$q status=none & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  return $rc
}
step_copy_up() {
  printf x >> big/big1
  [ "$(stat -c %s big/big1)" -eq $(( (BIG_MIB << 20) + 1 )) ] || { echo "wrong size after append" >&2; return 1; }
}
step_chmod() { chmod 600 big/big2; [ "$(stat -c %a big/big2)" = 600 ] || { echo "wrong: mode not changed" >&2; return 1; }; }
step_create() {
  "$PY" - "$CREATE_N" <<'EOF'
import os, sys
n = int(sys.argv[1]); per = 50; data = b"x" * 1024
for i in range(n):
    d = "new/d%03d" % (i // per)
    if i % per == 0:
        os.makedirs(d)
    with open("%s/f%03d" % (d, i % per), "wb") as f:
        f.write(data)
EOF
}
step_rm_created() { rm -rf new; [ ! -e new ] || { echo "wrong: new/ still there" >&2; return 1; }; }
step_rm_lower() { rm -rf victims; [ ! -e victims ] || { echo "wrong: victims/ still there" >&2; return 1; }; }
step_rename() {
  "$PY" -c 'import os; os.rename("mvsrc", "mvdst")' || return 1
  [ -d mvdst/m00 ] && [ ! -e mvsrc ] || { echo "wrong: mvdst/ or mvsrc/ after rename" >&2; return 1; }
}
# What PATH searches, the dynamic linker and Python imports do: names that are not there,
# in a directory every layer adds to (after it has been listed once).
step_miss() {
  "$PY" - <<'EOF'
import os
d = "usr/lib/python3"
n = len(os.listdir(d))
for i in range(2000):
    try:
        os.stat(f"{d}/missing_{i}.py")
        raise SystemExit(f"wrong: {d}/missing_{i}.py exists")
    except FileNotFoundError:
        pass
EOF
}
step_mv() {
  mv mvsrc mvdst
  [ -d mvdst/m00 ] && [ ! -e mvsrc ] || { echo "wrong: mvdst/ or mvsrc/ after mv" >&2; return 1; }
}

# Cells: NAME|DATASET|STEP;STEP... A step is FUNCTION:ROW LABEL, all on one mount, in
# order (the warm step repeats the cold one). Dataset "gen" is the generated image,
# "debian" the Debian one. In labels, N_STAT, N_CREATE, N_VICTIMS and N_MV are replaced.
CELLS=()
for ds in gen debian; do
  CELLS+=("$ds:find|$ds|step_find:find (cold);step_find:find (warm)"
          "$ds:ls-lR|$ds|step_lslR:ls -lR (cold);step_lslR:ls -lR (warm)"
          "$ds:du|$ds|step_du:du -s (cold);step_du:du -s (warm)"
          "$ds:stat|$ds|step_stat:stat of N_STAT paths (cold);step_stat:stat of N_STAT paths (warm)"
          "$ds:tar|$ds|step_tar:tar c (cold);step_tar:tar c (warm)")
done
CELLS+=("read-seq|gen|step_read_seq:read a big file, dd bs=1M (cold);step_read_seq:read a big file, dd bs=1M (warm)"
        "read-par|gen|step_read_par:4 parallel readers of a big file (cold)"
        "copy-up|gen|step_copy_up:copy-up: append 1 byte to a big file"
        "chmod|gen|step_chmod:chmod of another big file"
        "create-rm|gen|step_create:create N_CREATE small files;step_rm_created:rm -rf those N_CREATE files"
        "rm-lower|gen|step_rm_lower:rm -rf lower dirs (N_VICTIMS files)"
        "rename|gen|step_rename:rename(2) of a lower dir (N_MV files)"
        "mv|gen|step_mv:mv of a lower dir (N_MV files)")
for n in "${DEEP[@]}"; do
  CELLS+=("deep$n:miss|deep$n|step_miss:2000 lookups of missing names ($n layers)")
done

expand_label() { # DATASET LABEL
  local s=$2
  s=${s//N_STAT/${STAT_COUNT[$1]:-$STAT_N}}; s=${s//N_CREATE/$CREATE_N}
  s=${s//N_VICTIMS/$(( VICTIMS * FILES ))}; s=${s//N_MV/$(( MV_DIRS * FILES ))}
  printf '%s: %s' "$1" "$s"
}
export -f step_find step_lslR step_du step_stat step_tar step_read_seq step_read_par \
  step_copy_up step_chmod step_create step_rm_created step_rm_lower step_rename step_mv step_miss
export BIG_MIB CREATE_N PY

record() { local IFS=$'\t'; printf '%s\n' "$*" >> "$RAW"; }

# One failed step's cell text, from its stderr.
failure_text() {
  local rc=$1 err=$2
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "timeout"; return; fi
  if grep -q 'Invalid cross-device link' "$err"; then echo "EXDEV"; return; fi
  if grep -q '^wrong:' "$err"; then grep -m1 '^wrong:' "$err" | cut -c1-70; return; fi
  local first; first=$(grep -m1 . "$err" | sed 's/^[a-z0-9_-]*: //' | cut -c1-60 | tr '\t|' '  ')
  echo "${first:-exit $rc}"
}

# run_cell ROUND FS CELL: one fresh mount, the cell's steps, RSS, unmount. Every step gets
# a record, also when the filesystem is missing or cannot mount.
run_cell() {
  local round=$1 fs=$2 name ds steps c step fn row rc secs hwm t0 cell_t0 why summary='' skip=''
  local -a step_list
  IFS='|' read -r name ds steps <<< "$3"
  IFS=';' read -ra step_list <<< "$steps"
  c=$RUN/$fs
  cell_t0=${EPOCHREALTIME/./}
  if [ -n "${MISSING[$fs]:-}" ]; then
    skip="missing missing"
  elif [ -n "${DATA_MISSING[$ds]:-}" ]; then
    skip="nodata no data"
  elif ! do_mount "$fs" "$ds" "$c"; then
    skip="fail mount: $(grep -m1 . "$c/mount.out" | sed 's/^layerfs: error: //' | cut -c1-60 | tr '\t|' '  ')"
    { echo "== $fs $name: mount failed"; cat "$c/mount.out"; } >> "$LOG"
  fi
  if [ -n "$skip" ]; then
    for step in "${step_list[@]}"; do
      record time "$round" "$fs" "$(expand_label "$ds" "${step#*:}")" "" "${skip%% *}" "${skip#* }"
    done
    CELL_SUMMARY="$fs:${skip#* }"
    rm -rf "$c"
    return
  fi
  record mount "$round" "$fs" "$name" "$MOUNT_SECONDS" ok ""
  export EXPECT_ENTRIES=${ENTRIES[$ds]} STAT_LIST=$BENCH_DIR/data/${DATA_DIR[$ds]}/stat-list
  drop_caches "${step_list[@]%%:*}"
  for step in "${step_list[@]}"; do
    fn=${step%%:*} row=$(expand_label "$ds" "${step#*:}")
    t0=${EPOCHREALTIME/./}
    if (cd "$MNT" && timeout -k 5 "$STEP_TIMEOUT" bash -eo pipefail -c "$fn") > /dev/null 2> "$c/step.err"; then
      rc=0
    else
      rc=$?
    fi
    secs=$(usecs_to_s $(( ${EPOCHREALTIME/./} - t0 )))
    if [ "$rc" -eq 0 ]; then
      record time "$round" "$fs" "$row" "$secs" ok ""
      summary+=" $(printf '%.3g' "$secs")"
    else
      why=$(failure_text "$rc" "$c/step.err")
      record time "$round" "$fs" "$row" "$secs" fail "$why"
      { echo "== $fs $row: exit $rc"; cat "$c/step.err"; } >> "$LOG"
      summary+=" [$why]"
    fi
  done
  if [ -n "$PID" ]; then
    hwm=$(vmhwm_kib "$PID")
    [ -z "$hwm" ] || record rss "$round" "$fs" "$name" "$hwm" ok ""
  fi
  sync
  unmount "$MNT" "$PID"
  record cell "$round" "$fs" "$name" "$(usecs_to_s $(( ${EPOCHREALTIME/./} - cell_t0 )))" ok ""
  rm -rf "$c"
  CELL_SUMMARY="$fs:${summary# }"
}

# ---------------------------------------------------------------- image import
# Tools that turn an OCI image into layer directories / a rootfs, cold cache each time.
import_lfs_load() { "$LAYERFS" --root "$1" -q load "oci:$IMPORT_OCI:latest" > /dev/null; }
import_umoci() { umoci unpack --image "$IMPORT_OCI:latest" "$1" > /dev/null; }
import_tar() { # every layer into its own directory, as a layer store does (no whiteout work)
  local m digest mtype n=0 z
  m=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$IMPORT_OCI/index.json")
  while IFS=$'\t' read -r digest mtype; do
    n=$((n + 1)); mkdir -p "$1/$n"
    case $mtype in *+gzip|*tar.gzip) z=-z ;; *+zstd) z=--zstd ;; *) z= ;; esac
    tar $z --numeric-owner --same-owner --xattrs --xattrs-include='*' -xpf "$IMPORT_OCI/blobs/${digest/://}" -C "$1/$n"
  done < <(jq -r '.layers[] | [.digest, .mediaType] | @tsv' "$IMPORT_OCI/blobs/${m/://}")
}
IMPORT_TOOLS=(lfs-load umoci tar)
declare -A IMPORT_FN=([lfs-load]=import_lfs_load [umoci]=import_umoci [tar]=import_tar)
export -f import_lfs_load import_umoci import_tar

run_import() {
  local round=$1 tool=$2 d=$RUN/import t0 rc secs
  rm -rf "$d"
  if [ "$tool" = lfs-load ] && [ -n "${MISSING[lfs-load]:-}" ]; then
    CELL_SUMMARY="$tool:missing"; return
  fi
  drop_caches
  case $tool in   # the tool's own binary back in the cache, as for the steps
    lfs-load) "$LAYERFS" --version ;; umoci) umoci --version ;; tar) tar --version; jq --version ;;
  esac > /dev/null 2>&1 || true
  t0=${EPOCHREALTIME/./}
  if timeout -k 5 "$STEP_TIMEOUT" bash -eo pipefail -c "${IMPORT_FN[$tool]} \"\$0\"" "$d" 2> "$RUN/import.err"; then
    rc=0
  else
    rc=$?
  fi
  secs=$(usecs_to_s $(( ${EPOCHREALTIME/./} - t0 )))
  if [ "$rc" -eq 0 ]; then
    record import "$round" "$tool" "$IMPORT_NAME" "$secs" ok ""
    CELL_SUMMARY="$tool:$(printf '%.3g' "$secs")"
  else
    record import "$round" "$tool" "$IMPORT_NAME" "$secs" fail "$(failure_text "$rc" "$RUN/import.err")"
    { echo "== import $tool: exit $rc"; cat "$RUN/import.err"; } >> "$LOG"
    CELL_SUMMARY="$tool:fail"
  fi
  rm -rf "$d"
}

# ---------------------------------------------------------------- setup
: > "$RAW"; : > "$LOG"
cleanup                                   # leftovers of an interrupted earlier run
rm -rf "$RUN"; mkdir -p "$RUN"
T_START=$(date +%s)

if [ "$BUILD" = 1 ] && [ -z "$LAYERFS_BIN_DIR_SET" ] && [ -f "$REPO/Cargo.toml" ]; then
  log "cargo build --release (layerfs, layerfs-overlay)"
  (cd "$REPO" && cargo build --release --bins --quiet) || die "cargo build --release failed"
fi
LAYERFS=$LAYERFS_BIN_DIR/layerfs LFS_OVERLAY=$LAYERFS_BIN_DIR/layerfs-overlay

# fuse-overlayfs: 2.0 from cargo install, 1.10 from Debian; check the versions, not the names.
fo_version() { "$1" --version 2>/dev/null | sed -n 's/^fuse-overlayfs: version //p' | head -1; }
find_fo() { # MAJOR CANDIDATES...
  local major=$1 b; shift
  for b in "$@"; do
    [ -n "$b" ] && [ -x "$b" ] || continue
    case $(fo_version "$b") in "$major".*) echo "$b"; return ;; esac
  done
  return 0
}
FO2=$(find_fo 2 "${FUSE_OVERLAYFS2:-}" "$HOME/.cargo/bin/fuse-overlayfs" "$(command -v fuse-overlayfs || true)" /usr/local/bin/fuse-overlayfs)
FO1=$(find_fo 1 "${FUSE_OVERLAYFS1:-}" /usr/bin/fuse-overlayfs "$(command -v fuse-overlayfs || true)")
[ -n "$FO2" ] || MISSING[fo2]="not installed (cargo install fuse-overlayfs --version 2.0.0)"
[ -n "$FO1" ] || MISSING[fo1]="not installed (apt-get install fuse-overlayfs)"
[ -x "$LFS_OVERLAY" ] || MISSING[lfs]="no $LFS_OVERLAY"
[ -x "$LAYERFS" ] || MISSING[lfsm]="no $LAYERFS"
if [ -n "${LAYERFS_BASE_BIN_DIR:-}" ] && [ ! -x "$LAYERFS_BASE_BIN_DIR/layerfs-overlay" ]; then
  MISSING[base]="no $LAYERFS_BASE_BIN_DIR/layerfs-overlay"
fi
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || MISSING[kernel]="no overlay in /proc/filesystems"
if [ -n "$FS_LIST" ]; then
  for fs in "${ALL_FS[@]}"; do
    [[ ",$FS_LIST," == *",$fs,"* ]] || MISSING[$fs]="not selected (--fs)"
  done
fi

# ---- data: the generated image and the Debian one, each as an OCI layout, its layers
# unpacked into overlay-format directories, and the merged path list (for stat and find).
declare -A DATA_DIR=() ENTRIES=() STAT_COUNT=() DATA_MISSING=() DATA_OCI=() STORE_IMAGE=()
prepare_dirs() { # DATASET OCI: unpack the layers (cached by manifest digest)
  local ds=$1 oci=$2 digest dir
  digest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$oci/index.json")
  dir=$ds-${digest#sha256:}; dir=${dir:0:24}
  DATA_DIR[$ds]=$dir DATA_OCI[$ds]=$oci
  local d=$BENCH_DIR/data/$dir
  if [ ! -f "$d/ready" ] || [ "$d/ready" -ot "$LIB/merged-paths.py" ]; then
    log "unpacking the $ds layers into $d/dirs"
    rm -rf "$d"; mkdir -p "$d"
    "$SHARED_SCRIPTS/lib/oci-layers-to-dirs.sh" "$oci" latest "$d/dirs" overlay > /dev/null
    "$PY" "$LIB/merged-paths.py" "$(cat "$d/dirs/lowerdir")" > "$d/paths"
    "$PY" "$LIB/merged-paths.py" --sample "$STAT_N" "$(cat "$d/dirs/lowerdir")" > "$d/stat-list"
    touch "$d/ready"
  fi
  ENTRIES[$ds]=$(wc -l < "$d/paths") STAT_COUNT[$ds]=$(wc -l < "$d/stat-list")
}

GEN_KEY=d$DIRS-f$FILES-b$BIG_MIB-v$VICTIMS-m$MV_DIRS
GEN_OCI=$BENCH_DIR/data/gen-oci-$GEN_KEY
if [ ! -f "$GEN_OCI/ready" ] || [ "$GEN_OCI/ready" -ot "$LIB/gen-image.py" ]; then
  log "generating the synthetic image ($DIRS dirs x $FILES files, 2 x $BIG_MIB MiB) in $GEN_OCI"
  log "(once for these parameters; about $([ "$MODE" = full ] && echo "half a minute" || echo "a second") with the unpacking)"
  "$PY" "$LIB/gen-image.py" "$GEN_OCI" --dirs "$DIRS" --files "$FILES" --big-mib "$BIG_MIB" \
    --victims "$VICTIMS" --mv-dirs "$MV_DIRS"
  touch "$GEN_OCI/ready"
fi
prepare_dirs gen "$GEN_OCI"
for n in "${DEEP[@]}"; do   # N small layers each: cheap, cached like the generated image
  DEEP_OCI=$BENCH_DIR/data/deep-oci-$n
  if [ ! -f "$DEEP_OCI/ready" ] || [ "$DEEP_OCI/ready" -ot "$LIB/gen-image.py" ]; then
    log "generating an image of $n layers in $DEEP_OCI"
    "$PY" "$LIB/gen-image.py" "$DEEP_OCI" --deep "$n"
    touch "$DEEP_OCI/ready"
  fi
  prepare_dirs "deep$n" "$DEEP_OCI"
done
DEBIAN_OCI=$FIXTURES/debian/oci
if [ "$DEBIAN" = 1 ]; then
  if [ -f "$DEBIAN_OCI/index.json" ]; then
    prepare_dirs debian "$DEBIAN_OCI"
  else
    DATA_MISSING[debian]="no $DEBIAN_OCI (run STEPS=\"deps debian\" ../shared/scripts/make-fixtures.sh)"
  fi
else
  DATA_MISSING[debian]="not in --quick"
fi

# ---- the VM's disk is cached by its host: read everything once, so that the first "cold"
# cell of round 1 does not pay host cache misses that the others do not.
log "reading the data once (host cache)"
for ds in "${!DATA_DIR[@]}"; do
  find "$BENCH_DIR/data/${DATA_DIR[$ds]}/dirs" "${DATA_OCI[$ds]}" -type f -print0 | xargs -0 cat -- | wc -c > /dev/null
done

# ---- layerfs load / mount: they light up once the subcommands work.
# The first line of an error output, without "layerfs: error:" and without what clap quotes
# after "unexpected argument" (a long path).
first_error() { grep -m1 . "$1" | sed -e 's/^layerfs: error: //' -e "s/ '.*//" | cut -c1-80; }
load_store() { # DATASET: a fresh store holding the dataset's image; sets STORE_IMAGE
  local ds=$1 out
  rm -rf "$RUN/store-$ds"
  if out=$("$LAYERFS" --root "$RUN/store-$ds" -q load "oci:${DATA_OCI[$ds]}:latest" 2> "$RUN/load.err"); then
    STORE_IMAGE[$ds]=$(tail -n1 <<< "$out")
    [ -n "${STORE_IMAGE[$ds]}" ] || { echo "printed no image id" > "$RUN/load.err"; return 1; }
  else
    return 1
  fi
}
if [ -x "$LAYERFS" ]; then
  if load_store gen; then
    if [ "$DEBIAN" = 1 ] && [ -z "${DATA_MISSING[debian]:-}" ]; then
      load_store debian || MISSING[lfsm]="layerfs load of the Debian image: $(first_error "$RUN/load.err")"
    fi
    for n in "${DEEP[@]}"; do
      load_store "deep$n" || MISSING[lfsm]="layerfs load of the $n-layer image: $(first_error "$RUN/load.err")"
    done
  else
    MISSING[lfs-load]="layerfs load: $(first_error "$RUN/load.err")"
    [ -n "${MISSING[lfsm]:-}" ] || MISSING[lfsm]=${MISSING[lfs-load]}
  fi
else
  MISSING[lfs-load]="no $LAYERFS"
fi

# ---- a trial mount of each filesystem on the generated data: what cannot mount is missing.
for fs in "${ALL_FS[@]}"; do
  [ -z "${MISSING[$fs]:-}" ] || continue
  if do_mount "$fs" gen "$RUN/trial-$fs" && ls "$MNT" > /dev/null 2>> "$RUN/trial-$fs/mount.out"; then
    unmount "$MNT" "$PID"
  else
    MISSING[$fs]="cannot mount: $(first_error "$RUN/trial-$fs/mount.out")"
    { echo "== trial mount $fs"; cat "$RUN/trial-$fs/mount.out"; } >> "$LOG"
    [ -z "${MNT:-}" ] || unmount "$MNT" "${PID:-}"
  fi
  rm -rf "$RUN/trial-$fs"
done
for fs in "${ALL_FS[@]}" lfs-load; do
  [ -z "${MISSING[$fs]:-}" ] || log "${FS_LABEL[$fs]:-$fs}: missing: ${MISSING[$fs]}"
done

# ---- which cells run, and how long that takes
SEL=()
for spec in "${CELLS[@]}"; do
  name=${spec%%|*}
  [ -z "$ONLY" ] || [[ $name =~ $ONLY ]] || continue
  [ "$DEBIAN" = 1 ] || [[ $name != debian:* ]] || continue   # --quick: said in a note
  SEL+=("$spec")
done
DO_IMPORT=1
[ -z "$ONLY" ] || [[ import =~ $ONLY ]] || DO_IMPORT=0
if [ "$DEBIAN" = 1 ] && [ -z "${DATA_MISSING[debian]:-}" ]; then
  IMPORT_OCI=$DEBIAN_OCI IMPORT_NAME="Debian image ($(jq '.layers | length' "$DEBIAN_OCI/blobs/$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="latest") | .digest' "$DEBIAN_OCI/index.json" | tr : /)") layers, gzip)"
else
  IMPORT_OCI=$GEN_OCI IMPORT_NAME="generated image (3 layers, plain tar)"
fi
[ ${#SEL[@]} -gt 0 ] || [ "$DO_IMPORT" = 1 ] || die "--only '$ONLY' selects nothing"
export IMPORT_OCI LAYERFS

# The estimate: each cell's time in the latest earlier run of this mode that has it.
estimate() {
  local f fs active='' earlier=() cells=("${SEL[@]%%|*}")
  for f in "$RESULTS"/*-"$MODE".tsv; do   # named by time: the glob's order is the runs' order
    [ -f "$f" ] && [[ $f != */$STAMP-* ]] && earlier+=("$f")
  done
  for fs in "${ALL_FS[@]}"; do [ -n "${MISSING[$fs]:-}" ] || active+=$fs,; done
  [ "$DO_IMPORT" = 0 ] || cells+=(import)
  "$PY" "$LIB/report.py" estimate "$ROUNDS" "$MODE" "$active" "${cells[@]}" -- "${earlier[@]}"
}
EST=$(estimate)
log "$MODE run: ${#SEL[@]} cells x ${#ALL_FS[@]} filesystems x $ROUNDS round(s)$([ "$DO_IMPORT" = 1 ] && echo " + image import"); $EST"
if [ "$MODE" = full ] && [ "$YES" = 0 ] && [ -t 0 ]; then
  log "starting in 10 s (Ctrl-C to stop; --yes skips this wait)"; sleep 10
fi

# ---- metadata for the report
meta() { printf '%s\t%s\n' "$1" "$2" >> "$META"; }
: > "$META"
meta mode "$MODE"; meta rounds "$ROUNDS"; meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta nproc "$(nproc)"; meta ram "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
meta kernel "$(uname -r)"; meta cpu "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
meta fs_disk "$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2}')"
meta layerfs "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') ($(git -C "$REPO" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?'))"
meta fo2 "${FO2:+$FO2 ($(fo_version "$FO2"))}"; meta fo1 "${FO1:+$FO1 ($(fo_version "$FO1"))}"
meta kernel_opts "$(for p in redirect_dir index metacopy xino_auto; do printf '%s=%s ' "$p" "$(cat /sys/module/overlay/parameters/$p 2>/dev/null)"; done)${KERNEL_OVL_OPTS:+ + $KERNEL_OVL_OPTS}"
meta gen "$DIRS dirs x $FILES files (+5 in a subdir each) in 3 layers, 2 x $BIG_MIB MiB, ${ENTRIES[gen]} merged entries"
[ -n "${DATA_MISSING[debian]:-}" ] || meta debian "$(wc -l < "$BENCH_DIR/data/${DATA_DIR[debian]}/dirs/layers.tsv") layers, ${ENTRIES[debian]} merged entries"
meta import "$IMPORT_NAME"
for fs in "${ALL_FS[@]}" lfs-load; do [ -z "${MISSING[$fs]:-}" ] || meta "missing:$fs" "${MISSING[$fs]}"; done
for ds in "${!DATA_MISSING[@]}"; do meta "nodata:$ds" "${DATA_MISSING[$ds]}"; done
for spec in "${SEL[@]}"; do meta "cell" "${spec%%|*}"; done

# ---------------------------------------------------------------- the run
n_fs=${#ALL_FS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
  order=()
  for ((i = 0; i < n_fs; i++)); do order+=("${ALL_FS[(i + r - 1) % n_fs]}"); done
  for spec in "${SEL[@]}"; do
    line=()
    for fs in "${order[@]}"; do
      run_cell "$r" "$fs" "$spec"
      line+=("$CELL_SUMMARY")
    done
    log "round $r/$ROUNDS ${spec%%|*}: ${line[*]}"
  done
  if [ "$DO_IMPORT" = 1 ]; then
    line=()
    for ((i = 0; i < 3; i++)); do
      run_import "$r" "${IMPORT_TOOLS[(i + r - 1) % 3]}"
      line+=("$CELL_SUMMARY")
    done
    log "round $r/$ROUNDS import: ${line[*]}"
  fi
done
meta duration "$(( $(date +%s) - T_START ))"

# ---------------------------------------------------------------- report
"$PY" "$LIB/report.py" table "$RAW" "$META"
if [ -n "$OUT" ]; then
  mkdir -p "$(dirname "$OUT")"
  "$PY" "$LIB/report.py" page "$RAW" "$META" > "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  log "wrote $OUT"
fi
log "raw results: $RAW; errors: $LOG; took $(( $(date +%s) - T_START )) s"
rm -rf "$RUN"                             # uppers and stores of this run

status=0
if [ -n "${MISSING[lfs]:-}" ]; then
  log "layerfs-overlay is missing: ${MISSING[lfs]}"; status=1
elif awk -F'\t' '$3 == "lfs" && $6 == "fail" {f=1} END {exit !f}' "$RAW"; then
  log "layerfs-overlay failed a workload (see the table and $LOG)"; status=1
fi
exit $status
