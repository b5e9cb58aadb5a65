#!/usr/bin/env python3
"""Print the paths of the merged view of overlay-format layer directories, without
mounting anything: whiteouts are char devices 0/0, opaque directories carry
`trusted.overlay.opaque=y`.

    merged-paths.py [--sample N] LOWER_TOP:...:LOWER_BOTTOM

One relative path per line (no "."). With --sample, N paths picked deterministically
(all of them when there are fewer), in a shuffled order, so that a `stat` of the list
does not walk directories in order.
"""
import argparse
import os
import random
import stat


def is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path):
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def walk(layers, rel, out):
    """Merged entries of directory `rel`, present in `layers` (top first)."""
    seen = {}  # name -> the layers where it is a directory (top first), or None
    hidden = set()
    for layer in layers:
        d = os.path.join(layer, rel)
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name in hidden:
                continue
            st = os.lstat(os.path.join(d, name))
            if name in seen:
                # A directory merges with the directories below it (the recursion stops
                # below an opaque one).
                if seen[name] is not None and stat.S_ISDIR(st.st_mode):
                    seen[name].append(layer)
                continue
            if is_whiteout(st):
                hidden.add(name)
                continue
            seen[name] = [layer] if stat.S_ISDIR(st.st_mode) else None
        if rel and is_opaque(d):
            break
    for name in sorted(seen):
        p = os.path.join(rel, name) if rel else name
        out.append(p)
        if seen[name] is not None:
            walk(seen[name], p, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int)
    ap.add_argument("lowerdir")
    args = ap.parse_args()
    out = []
    walk(args.lowerdir.split(":"), "", out)
    if args.sample is not None:
        random.Random(10).shuffle(out)
        out = out[: args.sample]
    for p in out:
        print(p)


if __name__ == "__main__":
    main()
