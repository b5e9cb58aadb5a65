#!/usr/bin/env python3
"""Write the synthetic benchmark image as an OCI layout (uncompressed tar layers).

    gen-image.py OUT_DIR --dirs N --files M --big-mib S --victims V --mv-dirs R
    gen-image.py OUT_DIR --deep N

Three layers, bottom first (OCI whiteouts: `.wh.NAME`, `.wh..wh..opq`):

  1 base     tree/dNNNN/fMMM (M files, 0..16 KiB), tree/dNNNN/s/gK (5 files), a symlink per
             dir; big/big1 and big/big2 (S MiB of random data each); victims/vNN/fMMM (for
             `rm -rf` of lower directories); mvsrc/mNN/fMMM (for renaming a lower directory)
  2 changes  per tree dir, by index: every 10th (i%10==3) whited out whole; every 10th
             (i%10==5) made opaque with 5 new files; the others lose every 7th file
             (whiteouts), get 3 new files and one file replaced
  3 top      every 4th dir gets 2 files, and one whited-out name comes back

With --deep N: N small layers instead, each adding usr/bin/tool-K and
usr/lib/python3/mod_K.py (so that those directories merge N layers, as in images built one
RUN step at a time), for the lookups of missing names.

The content is deterministic except for the big files (random, so that nothing can
compress or deduplicate them). The tag is `latest`.
"""
import argparse
import hashlib
import io
import json
import os
import random
import shutil
import tarfile

MTIME = 1700000000
SMALL_MAX = 16 * 1024


class RandomReader:
    """`size` bytes of os.urandom, read in whatever chunks tarfile asks for."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        self.left -= n
        return os.urandom(n)


class Layer:
    def __init__(self, path):
        self.path = path
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, kind, mode, size=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.size = size
        ti.mtime = MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    def dir(self, name):
        """A directory entry for `name` and its parents (once each)."""
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, 0o755))

    def file(self, name, data=b"", mode=0o644):
        self.dir(os.path.dirname(name))
        self.tar.addfile(self._info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))

    def big(self, name, size):
        self.dir(os.path.dirname(name))
        self.tar.addfile(self._info(name, tarfile.REGTYPE, 0o644, size), RandomReader(size))

    def symlink(self, name, target):
        self.dir(os.path.dirname(name))
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def whiteout(self, name):
        d, base = os.path.split(name)
        self.file(os.path.join(d, ".wh." + base))

    def opaque(self, dirname):
        self.file(os.path.join(dirname, ".wh..wh..opq"))

    def close(self):
        self.tar.close()


def content(rng, tag):
    """Deterministic small-file content of pseudo-random length."""
    n = rng.randrange(0, SMALL_MAX)
    line = (tag + "\n").encode()
    return (line * (n // len(line) + 1))[:n]


def build(args, tmp):
    rng = random.Random(10)
    paths = []

    base = Layer(os.path.join(tmp, "1.tar"))
    for i in range(args.dirs):
        d = f"tree/d{i:04d}"
        for m in range(args.files):
            base.file(f"{d}/f{m:03d}", content(rng, f"{d}/f{m:03d} base"))
        for k in range(5):
            base.file(f"{d}/s/g{k}", content(rng, f"{d}/s/g{k}"))
        base.symlink(f"{d}/link", "f000")
    base.big("big/big1", args.big_mib << 20)
    base.big("big/big2", args.big_mib << 20)
    for v in range(args.victims):
        for m in range(args.files):
            base.file(f"victims/v{v:02d}/f{m:03d}", content(rng, "victim"))
    for r in range(args.mv_dirs):
        for m in range(args.files):
            base.file(f"mvsrc/m{r:02d}/f{m:03d}", content(rng, "mv"))
    base.close()
    paths.append(base.path)

    changes = Layer(os.path.join(tmp, "2.tar"))
    for i in range(args.dirs):
        d = f"tree/d{i:04d}"
        if i % 10 == 3:
            changes.dir("tree")
            changes.whiteout(d)
        elif i % 10 == 5:
            changes.dir(d)
            changes.opaque(d)
            for k in range(5):
                changes.file(f"{d}/o{k}", content(rng, f"{d}/o{k} opaque"))
        else:
            changes.dir(d)
            for m in range(0, args.files, 7):
                changes.whiteout(f"{d}/f{m:03d}")
            for k in range(3):
                changes.file(f"{d}/n{k}", content(rng, f"{d}/n{k} new"))
            if args.files > 1:
                changes.file(f"{d}/f001", content(rng, f"{d}/f001 replaced"))
    changes.close()
    paths.append(changes.path)

    top = Layer(os.path.join(tmp, "3.tar"))
    for i in range(0, args.dirs, 4):
        d = f"tree/d{i:04d}"
        if i % 10 in (3, 5):
            continue
        top.file(f"{d}/t0", content(rng, f"{d}/t0 top"))
        top.file(f"{d}/t1", content(rng, f"{d}/t1 top"))
        top.file(f"{d}/f000", content(rng, f"{d}/f000 back"))
    top.file("etc/layer3-marker", b"layer 3\n")
    top.close()
    paths.append(top.path)
    return paths


def build_deep(n, tmp):
    paths = []
    for k in range(n):
        layer = Layer(os.path.join(tmp, f"{k + 1}.tar"))
        layer.file(f"usr/bin/tool-{k}", f"#!/bin/sh\necho {k}\n".encode(), mode=0o755)
        layer.file(f"usr/lib/python3/mod_{k}.py", f"X = {k}\n".encode())
        layer.close()
        paths.append(layer.path)
    return paths


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def put_blob(out, data):
    hexd = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", hexd), "wb") as f:
        f.write(data)
    return hexd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--deep", type=int)
    ap.add_argument("--dirs", type=int)
    ap.add_argument("--files", type=int)
    ap.add_argument("--big-mib", type=int)
    ap.add_argument("--victims", type=int)
    ap.add_argument("--mv-dirs", type=int)
    args = ap.parse_args()
    if args.deep is None and None in (args.dirs, args.files, args.big_mib, args.victims, args.mv_dirs):
        ap.error("--dirs, --files, --big-mib, --victims and --mv-dirs are required without --deep")

    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs)
    layers = []
    if args.deep is not None:
        built, whats = build_deep(args.deep, out), [f"layer {k + 1}" for k in range(args.deep)]
    else:
        built, whats = build(args, out), ["base", "changes", "top"]
    for p in built:
        hexd = sha256_file(p)
        size = os.path.getsize(p)
        os.rename(p, os.path.join(blobs, hexd))
        layers.append((hexd, size))

    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{h}" for h, _ in layers]},
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": f"layerfs bench: {what}"}
            for what in whats
        ],
    }
    cdata = json.dumps(config, sort_keys=True).encode()
    chex = put_blob(out, cdata)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{chex}",
            "size": len(cdata),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{h}",
                "size": s,
            }
            for h, s in layers
        ],
    }
    mdata = json.dumps(manifest, sort_keys=True).encode()
    mhex = put_blob(out, mdata)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{mhex}",
                "size": len(mdata),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
