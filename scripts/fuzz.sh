#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30) on seeds made from the shared
# fixtures, and fails on the first crash (the input is then in fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain, cargo-fuzz (`cargo install cargo-fuzz`), python3, zstd.
# FUZZ_TARGETS picks targets (default: all); LAYERFS_FIXTURES points at the fixtures
# (default ../shared/fixtures). Corpora grow in fuzz/corpus/ (not in git) across runs.
# The unpack and tarsplit targets write below $TMPDIR and needs root to exercise chown and mknod.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-30}
targets=${FUZZ_TARGETS:-unpack tarsplit image_readers overlay_opts}
fixtures=${LAYERFS_FIXTURES:-../shared/fixtures}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

python3 scripts/fuzz-seeds.py "$fixtures" fuzz/corpus

cd fuzz
cargo +nightly fuzz build
for t in $targets; do
  case $t in
    unpack|tarsplit) max_len=1048576 ;;
    *) max_len=65536 ;;
  esac
  echo "== fuzz $t for ${secs}s" >&2
  cargo +nightly fuzz run "$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
    -print_final_stats=1
done
echo "fuzz.sh: no crash in $targets (${secs}s each)" >&2
