#!/usr/bin/env python3
"""Seed corpora of the fuzz targets, made at run time (no binaries in git).

usage: fuzz-seeds.py FIXTURES OUT

OUT/unpack/         layer tars: the fixtures' layers (decompressed; big ones cut short)
                    and crafted ones (GNU and PAX sparse, long names, PAX xattrs, base-256
                    owners, whiteouts, devices, symlinks and hard links aiming out of the
                    destination at the `../canary` directory the target watches)
OUT/tarsplit/       the same tars
OUT/image_readers/  a mode byte + a document: OCI index (0), manifest (1), config (2),
                    docker manifest.json (3), docker config (4), references (5); +8 asks
                    for a tag (see fuzz/fuzz_targets/image_readers.rs)
OUT/overlay_opts/   layerfs-overlay argument lists, NUL-separated
"""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

BIG = 256 << 10  # fixture layers over this are cut to this (still a fine seed)


def put(out, target, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def decompress(blob):
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        try:
            return subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
    return blob


def is_tar(data):
    return len(data) >= 512 and data[257:262] == b"ustar"


# ----------------------------------------------------------------------------- raw tars

def octal(n, width):
    return (b"%0*o" % (width - 1, n)) + b"\0"


def header(name, typeflag=b"0", size=0, mode=0o644, uid=0, gid=0, link=b"", gnu=True, extra=None):
    h = bytearray(512)
    h[0:len(name)] = name[:100]
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8) if uid < 0o7777777 else b"\x80" + uid.to_bytes(7, "big")
    h[116:124] = octal(gid, 8)
    h[124:136] = octal(size, 12)
    h[136:148] = octal(1700000000, 12)
    h[156:157] = typeflag
    h[157:157 + len(link)] = link[:100]
    h[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    if extra:
        extra(h)
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def member(name, data=b"", **kw):
    return header(name, size=len(data), **kw) + pad(data)


def pax_record(key, value):
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while n != len(body) + len(str(n)):
        n = len(body) + len(str(n))
    return str(n).encode() + body


def pax(records):
    data = b"".join(pax_record(k, v) for k, v in records)
    return member(b"PaxHeaders/x", data, typeflag=b"x")


def end():
    return b"\0" * 1024


def gnu_sparse(name, real, segments, data):
    def extra(h):
        off = 386
        for o, l in segments[:4]:
            h[off:off + 12] = octal(o, 12)
            h[off + 12:off + 24] = octal(l, 12)
            off += 24
        h[482] = 0
        h[483:495] = octal(real, 12)
    return header(name, typeflag=b"S", size=len(data), extra=extra) + pad(data)


def crafted():
    t = []
    t.append(member(b"d/", typeflag=b"5", mode=0o755) + member(b"d/f", b"hello") + end())
    t.append(gnu_sparse(b"sparse", 1 << 20, [(4096, 512), (1 << 19, 512)], b"a" * 1024) + end())
    t.append(gnu_sparse(b"hole", 1 << 30, [(1 << 30, 0)], b"") + end())
    sp_map = pad(b"2\n0\n3\n100\n2\n")
    t.append(pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
                  (b"GNU.sparse.name", b"real"), (b"GNU.sparse.realsize", b"200")])
             + member(b"GNUSparseFile.0/real", sp_map + b"abcde") + end())
    t.append(pax([(b"GNU.sparse.map", b"0,3,100,2"), (b"GNU.sparse.size", b"200"),
                  (b"GNU.sparse.name", b"v01")]) + member(b"x", b"abcde") + end())
    long = b"l/" * 80 + b"name"
    t.append(member(b"././@LongLink", long + b"\0", typeflag=b"L") + member(b"short", b"x") + end())
    t.append(member(b"././@LongLink", long + b"\0", typeflag=b"K")
             + member(b"sym", typeflag=b"2", mode=0o777) + end())
    t.append(pax([(b"path", long), (b"SCHILY.xattr.user.a", b"v\nw"), (b"mtime", b"1700000000.5"),
                  (b"uid", b"1000"), (b"gid", b"1000")]) + member(b"p", b"x") + end())
    t.append(member(b"suid", b"x", mode=0o4755, uid=1 << 32) + end())
    t.append(pax([(b"uid", b"4294967296")]) + member(b"suid", b"x", mode=0o4755) + end())
    t.append(member(b"d/", typeflag=b"5") + member(b"d/.wh..wh..opq") + member(b".wh.gone")
             + member(b"d/.wh.x") + end())
    t.append(member(b"c", typeflag=b"3") + member(b"b", typeflag=b"4") + member(b"p", typeflag=b"6") + end())
    t.append(member(b"l", typeflag=b"2", link=b"../canary", mode=0o777) + member(b"l/x", b"escaped") + end())
    t.append(member(b"l", typeflag=b"2", link=b"../canary", mode=0o777) + member(b"l/", typeflag=b"5") + end())
    t.append(member(b"../canary/x", b"escaped") + member(b"a/../../canary/y", b"y") + end())
    t.append(member(b"f", b"x") + member(b"h", typeflag=b"1", link=b"../canary/x") + end())
    t.append(member(b"f", b"x") + member(b"h", typeflag=b"1", link=b"f") + member(b"h", typeflag=b"1", link=b"h") + end())
    t.append(member(b"abs", typeflag=b"2", link=b"/tmp", mode=0o777) + member(b"abs/x", b"x") + end())
    t.append(member(b"x", b"1") + member(b"x/", typeflag=b"5") + member(b"x", b"2") + end())
    t.append(pax([(b"size", b"3")]) + member(b"sized", b"abc") + end())
    t.append(member(b"v7dir/", typeflag=b"\0", gnu=False) + end())
    return t


def gnu_tar_sparse():
    """Sparse archives made by GNU tar itself, in each of its formats (when tar is here)."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "f")
        with open(f, "wb") as fh:
            fh.truncate(1 << 20)
            fh.seek(4096)
            fh.write(b"middle")
            fh.seek((1 << 20) - 3)
            fh.write(b"end")
        for args in (["--format=gnu"], ["--format=posix", "--sparse-version=0.0"],
                     ["--format=posix", "--sparse-version=0.1"],
                     ["--format=posix", "--sparse-version=1.0"]):
            try:
                out.append(subprocess.run(["tar", *args, "--sparse", "-cf", "-", "-C", d, "f"],
                                          capture_output=True, check=True).stdout)
            except (OSError, subprocess.CalledProcessError):
                pass
    return out


# ----------------------------------------------------------------------------- main

def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    layouts = []
    for root, dirs, files in os.walk(fixtures):
        if "index.json" in files and "blobs" in dirs:
            layouts.append(root)
    layouts.sort()

    # unpack
    seen = set()
    for lay in layouts:
        bdir = os.path.join(lay, "blobs", "sha256")
        for name in sorted(os.listdir(bdir)):
            with open(os.path.join(bdir, name), "rb") as f:
                blob = f.read()
            data = decompress(blob)
            if data is None or not is_tar(data):
                continue
            key = hashlib.sha256(data).digest()
            if key in seen:
                continue
            seen.add(key)
            for target in ("unpack", "tarsplit"):
                put(out, target, data[:BIG])
    for t in crafted() + gnu_tar_sparse():
        for target in ("unpack", "tarsplit"):
            put(out, target, t)

    # image_readers
    for lay in layouts:
        with open(os.path.join(lay, "index.json"), "rb") as f:
            idx = f.read()
        put(out, "image_readers", b"\x00" + idx)
        put(out, "image_readers", b"\x08" + idx)
        bdir = os.path.join(lay, "blobs", "sha256")
        for name in sorted(os.listdir(bdir)):
            path = os.path.join(bdir, name)
            if os.path.getsize(path) > 64 << 10:
                continue
            with open(path, "rb") as f:
                doc = f.read()
            try:
                v = json.loads(doc)
            except ValueError:
                continue
            if not isinstance(v, dict):
                continue
            if "layers" in v and "config" in v:
                put(out, "image_readers", b"\x01" + doc)
            elif "rootfs" in v:
                put(out, "image_readers", b"\x02" + doc)
                put(out, "image_readers", b"\x04" + doc)
            elif "manifests" in v:
                put(out, "image_readers", b"\x00" + doc)
    for root, _, files in os.walk(fixtures):
        for fn in sorted(files):
            if not fn.endswith(".docker.tar"):
                continue
            with tarfile.open(os.path.join(root, fn)) as tf:
                for m in tf.getmembers():
                    if not m.isfile() or m.size > 64 << 10:
                        continue
                    doc = tf.extractfile(m).read()
                    if m.name == "manifest.json":
                        put(out, "image_readers", b"\x03" + doc)
                        put(out, "image_readers", b"\x0b" + doc)
                    elif m.name.endswith(".json"):
                        put(out, "image_readers", b"\x04" + doc)
    for r in [b"busybox", b"docker.io/library/busybox:latest", b"localhost:5000/a/b:c",
              b"ubuntu@sha256:" + b"a" * 64, b"UPPER", b"a:b:c", b"sha256:" + b"0" * 64]:
        put(out, "image_readers", b"\x05" + r)

    # overlay_opts
    for args in [
        [b"-o", b"lowerdir=l/AAA:l/B\\:B,upperdir=diff,workdir=work,uidmapping=0:0:4294967295,fsync=0", b"merged"],
        [b"-o", b"lowerdir=/a:/b", b"/mnt"],
        [b"-f", b"-o", b"rw,lowerdir=/l,upperdir=/u,workdir=/w,dev,suid", b"overlay", b"/mnt"],
        [b"-olowerdir=a\\,b:c,ro,timeout=1.5,threaded=0", b"-d", b"m"],
        [b"-o", b"upperdir=/u,workdir=/w,lowerdir=", b"/m"],
        [b"-s", b"-o", b"lowerdir=x,fsname=src,subtype=layerfs,allow_other,nodev,nosuid", b"/m"],
    ]:
        put(out, "overlay_opts", b"\0".join(args))


if __name__ == "__main__":
    main()
