#!/usr/bin/env bash
# Generates layerfs's man pages from its command-line definition (clap_mangen, through
# `examples/man.rs`): layerfs.1 and layerfs-COMMAND.1 for each subcommand.
#   scripts/man.sh [OUTDIR]          (default: target/man)
#   man -l target/man/layerfs-save.1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-target/man}
cargo run --quiet --release --example man -- "$out"
ls "$out"
