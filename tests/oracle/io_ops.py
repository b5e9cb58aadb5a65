"""File I/O beyond read and write, run the same way on a layerfs mount and on kernel
overlayfs: fallocate in every mode (on a lower file, so it is copied up first, and on a
new one), SEEK_DATA / SEEK_HOLE, O_DIRECT reads and writes (aligned, and misaligned ones
that must fail as the backing filesystem says). Prints one line per step: what a user
sees (errno, size, blocks, data digest, data/hole offsets); the caller compares the two.

Usage: io_ops.py MOUNTPOINT   (the mount's lower layer holds `lower` of LOWER_SIZE bytes)
"""
import ctypes
import errno
import hashlib
import mmap
import os
import sys

errno.errorcode[errno.EOPNOTSUPP] = 'EOPNOTSUPP'  # not its alias ENOTSUP
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
SEEK_DATA, SEEK_HOLE = 3, 4
BLOCK = 4096
root = sys.argv[1]


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        return errno.errorcode.get(e, str(e))
    return 'ok'


def layout(fd):
    """The data/hole segments as SEEK_DATA/SEEK_HOLE report them."""
    size = os.fstat(fd).st_size
    segs, off = [], 0
    while off < size:
        try:
            d = os.lseek(fd, off, SEEK_DATA)
        except OSError as e:
            segs.append(('end', errno.errorcode[e.errno]))
            break
        h = os.lseek(fd, d, SEEK_HOLE)
        segs.append((d, h))
        off = h
    return segs


def consistent(segs, data):
    """SEEK_HOLE/SEEK_DATA agree with the bytes: holes read as zeros."""
    pos = 0
    for seg in segs:
        if seg[0] == 'end':
            break
        d, h = seg
        if any(data[pos:d]):
            return False
        pos = h
    return not any(data[pos:])


def state(path, exact):
    """What a user sees of the file. `exact`: also its allocation (blocks, data/hole
    layout) — only for files made on the mount: a lower file's copy-up keeps its holes
    on layerfs and fills them on kernel overlayfs, so there only the answers' consistency
    with the data is compared."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        data = os.pread(fd, st.st_size + 1, 0)
        segs = layout(fd)
        out = f'size={st.st_size} sha={hashlib.sha1(data).hexdigest()[:10]} ' \
              f'consistent={consistent(segs, data)}'
        if exact:
            out += f' blocks={st.st_blocks} layout={segs}'
        return out
    finally:
        os.close(fd)


def step(name, f):
    try:
        print(name, f())
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))


def fallocate_steps(path, exact):
    fd = os.open(path, os.O_RDWR)
    try:
        for what, mode, off, ln in [
            ('alloc', 0, 0, 8 * BLOCK),
            ('alloc-grow', 0, 20 * BLOCK, 4 * BLOCK),
            ('keep-size', FALLOC_FL_KEEP_SIZE, 24 * BLOCK, 8 * BLOCK),
            ('punch', FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BLOCK, 2 * BLOCK),
            ('punch-no-keep', FALLOC_FL_PUNCH_HOLE, BLOCK, BLOCK),
            ('zero', FALLOC_FL_ZERO_RANGE, 5 * BLOCK, BLOCK + 17),
            ('bad-mode', 0x4000, 0, BLOCK),
            # Last: Linux's FUSE refuses these two modes itself (EOPNOTSUPP, whatever the
            # filesystem behind), so from here on layerfs and kernel overlayfs differ.
            ('collapse', FALLOC_FL_COLLAPSE_RANGE, 2 * BLOCK, BLOCK),
            ('insert', FALLOC_FL_INSERT_RANGE, 3 * BLOCK, 2 * BLOCK),
        ]:
            print(f'{path[len(root):]} {what}', fallocate(fd, mode, off, ln), state(path, exact))
    finally:
        os.close(fd)


def direct_steps(path, exact):
    buf = mmap.mmap(-1, 4 * BLOCK)  # page-aligned, as O_DIRECT wants
    buf.write(bytes(range(256)) * (4 * BLOCK // 256))
    rel = path[len(root):]

    def write_aligned():
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
        try:
            return os.pwritev(fd, [buf], BLOCK)
        finally:
            os.close(fd)

    def read_aligned():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            out = mmap.mmap(-1, 8 * BLOCK)
            n = os.preadv(fd, [out], 0)
            return n, hashlib.sha1(out[:n]).hexdigest()[:10]
        finally:
            os.close(fd)

    def misaligned_offset():
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            out = mmap.mmap(-1, BLOCK)
            return os.preadv(fd, [out], 7)
        finally:
            os.close(fd)

    def mmap_direct():
        # a file opened O_DIRECT can still be mapped (the mapping goes through the page
        # cache), and what is written through the mapping reaches the file
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            with mmap.mmap(fd, 2 * BLOCK) as m:
                before = hashlib.sha1(m[:2 * BLOCK]).hexdigest()[:10]
                m[5:8] = b'MAP'
                m.flush()
            return before
        finally:
            os.close(fd)

    step(f'{rel} direct-write', write_aligned)
    step(f'{rel} direct-read', read_aligned)
    step(f'{rel} direct-misaligned-offset', misaligned_offset)
    step(f'{rel} direct-mmap', mmap_direct)
    print(f'{rel} after-direct', state(path, exact))


fallocate_steps(f'{root}/lower', False)
with open(f'{root}/new', 'wb') as f:
    f.write(b'n' * (10 * BLOCK))
fallocate_steps(f'{root}/new', True)
direct_steps(f'{root}/direct-new', True)
direct_steps(f'{root}/lower2', False)
