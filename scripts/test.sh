#!/usr/bin/env bash
# The README's test command: installs what the tests need (scripts/deps.sh), makes the
# real images they read when missing (scripts/fixtures-env.sh: the Debian one takes a few
# minutes the first time), then runs `cargo test --release` (the build takes minutes).
# As root with /dev/fuse: the tests mount for real and act as other users too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/deps.sh
# shellcheck source=scripts/fixtures-env.sh
. scripts/fixtures-env.sh
cargo test --release "$@"
