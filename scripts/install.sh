#!/usr/bin/env bash
# Installs layerfs: the binaries, the mount helper link, man pages and shell completions.
#
#   scripts/install.sh                  # build, then install under /usr/local (as root)
#   PREFIX=/usr scripts/install.sh
#   DESTDIR=/tmp/pkg scripts/install.sh # staged (packaging)
#   scripts/install.sh --no-build       # install what target/release holds
#
# What goes where ($DESTDIR$PREFIX, PREFIX=/usr/local by default):
#   bin/layerfs, bin/layerfs-overlay
#   share/man/man1/layerfs*.1           (from the CLI definition: scripts/man.sh)
#   share/bash-completion/completions/layerfs, share/zsh/site-functions/_layerfs,
#   share/fish/vendor_completions.d/layerfs.fish
#   $SBINDIR/mount.fuse.layerfs, mount.fuse.layerfs-overlay -> mount.fuse3
#                                        (SBINDIR=/sbin by default)
# `mount -t fuse.layerfs SRC DIR -o lowerdir=…` (and fstab entries of that type) then
# work: mount(8) runs the mount.fuse.layerfs helper, that is mount.fuse3 (package fuse3),
# which runs `layerfs` from PATH with fuse-overlayfs's command line. The binaries must
# therefore be in a directory of root's PATH (/usr/local/bin, /usr/bin).
# Equivalent by hand: cargo install --path . --root /usr/local, then the two links.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SBINDIR=${SBINDIR:-/sbin}
BIN_DIR=${LAYERFS_BIN_DIR:-target/release}
build=1
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

if [ "$build" = 1 ]; then
  cargo build --release --locked
  cargo build --release --locked --example man
fi

root="$DESTDIR$PREFIX"
install -d "$root/bin" "$root/share/man/man1" "$DESTDIR$SBINDIR"
for b in layerfs layerfs-overlay; do
  [ -x "$BIN_DIR/$b" ] || { echo "install.sh: $BIN_DIR/$b missing (build first)" >&2; exit 1; }
  install -m 0755 "$BIN_DIR/$b" "$root/bin/$b"
done

# mount(8) looks for /sbin/mount.fuse.TYPE first; mount.fuse3 takes TYPE from that name.
helper=$(command -v mount.fuse3 || true)
if [ -z "$helper" ]; then
  echo "install.sh: warning: mount.fuse3 not found (install fuse3): mount -t fuse.layerfs will not work" >&2
  helper=/sbin/mount.fuse3
fi
for t in layerfs layerfs-overlay; do
  ln -sfn "$helper" "$DESTDIR$SBINDIR/mount.fuse.$t"
done

# Man pages, generated from the command-line definition.
man_gen="$BIN_DIR/examples/man"
if [ -x "$man_gen" ]; then
  "$man_gen" "$root/share/man/man1"
else
  echo "install.sh: note: $man_gen not built, no man pages (scripts/man.sh makes them)" >&2
fi

# Completions, from the installed binary itself.
install -d "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
  "$root/share/fish/vendor_completions.d"
"$root/bin/layerfs" completions bash > "$root/share/bash-completion/completions/layerfs"
"$root/bin/layerfs" completions zsh > "$root/share/zsh/site-functions/_layerfs"
"$root/bin/layerfs" completions fish > "$root/share/fish/vendor_completions.d/layerfs.fish"

echo "installed layerfs into $root (mount helpers in $DESTDIR$SBINDIR)"
