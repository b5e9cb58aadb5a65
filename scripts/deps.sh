#!/usr/bin/env bash
# Installs what layerfs, its tests and its benchmarks use (Debian 12 packages; as root).
# The README's first command and scripts/test.sh (hence .ci/run) run it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# fuse3 (fusermount3) and attr for the mounts; skopeo, umoci, podman, runc, crun,
# docker.io: the real clients the tests check layerfs against; uidmap (newuidmap) for the
# rootless tests; fuse-overlayfs and fio for the benchmarks; the rest for the scripts.
apt-get install -y -qq --no-install-recommends \
  fuse3 attr skopeo umoci jq python3 tar gzip zstd bc util-linux runc crun psmisc acl \
  fuse-overlayfs fio uidmap podman docker.io >/dev/null
