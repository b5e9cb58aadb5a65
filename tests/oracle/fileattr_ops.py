"""Inode attribute flags through a mount (chattr's ioctls), run the same on kernel
overlayfs and on layerfs over the same lower layer: every line must agree.

    fileattr_ops.py MOUNT

The lower layer holds files f, a, n, o and directory d (with d/x). Ends with every flag
cleared, so that the directories can be removed.
"""
import errno
import fcntl
import os
import struct
import sys

root = sys.argv[1]
GETFLAGS, SETFLAGS = 0x80086601, 0x40086602
FSGETXATTR, FSSETXATTR = 0x801C581F, 0x401C5820
IMMUTABLE, APPEND, NODUMP, NOATIME = 0x10, 0x20, 0x40, 0x80
SHOWN = IMMUTABLE | APPEND | NODUMP | NOATIME  # not the filesystem's own (extents…)
XFLAG_IMMUTABLE, XFLAG_APPEND, XFLAG_NODUMP = 0x8, 0x10, 0x80


def p(name):
    return os.path.join(root, name)


def fd_of(name):
    return os.open(p(name), os.O_RDONLY | os.O_NONBLOCK)


def getflags(name):
    fd = fd_of(name)
    try:
        return hex(struct.unpack('i', fcntl.ioctl(fd, GETFLAGS, b'\0' * 4))[0] & SHOWN)
    finally:
        os.close(fd)


def setflags(name, add=0, remove=0):
    """As chattr does: the flags read, with `add` set and `remove` cleared."""
    fd = fd_of(name)
    try:
        old = struct.unpack('i', fcntl.ioctl(fd, GETFLAGS, b'\0' * 4))[0]
        fcntl.ioctl(fd, SETFLAGS, struct.pack('i', (old | add) & ~remove))
    finally:
        os.close(fd)


def fsx(name, add=0):
    """The fsxattr's xflags (of interest); with `add`, sets those first."""
    fd = fd_of(name)
    try:
        raw = fcntl.ioctl(fd, FSGETXATTR, b'\0' * 28)
        if add:
            x = struct.unpack('IIIII8s', raw)
            fcntl.ioctl(fd, FSSETXATTR, struct.pack('IIIII8s', x[0] | add, *x[1:]))
            raw = fcntl.ioctl(fd, FSGETXATTR, b'\0' * 28)
        return hex(struct.unpack('IIIII8s', raw)[0] & (XFLAG_IMMUTABLE | XFLAG_APPEND | XFLAG_NODUMP))
    finally:
        os.close(fd)


def write(name, flags, data=b'w'):
    fd = os.open(p(name), flags)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def read(name):
    with open(p(name), 'rb') as f:
        return f.read()


def step(name, f):
    try:
        r = f()
        print(name, 'ok' if r is None else r)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, e.errno))


# An immutable file (from the lower layer: setting the flag copies it up).
step('f flags', lambda: getflags('f'))
step('f +i', lambda: setflags('f', add=IMMUTABLE))
step('f flags', lambda: getflags('f'))
step('f append', lambda: write('f', os.O_WRONLY | os.O_APPEND))
step('f rewrite', lambda: write('f', os.O_WRONLY | os.O_TRUNC))
step('f truncate', lambda: os.truncate(p('f'), 0))
step('f chmod', lambda: os.chmod(p('f'), 0o600))
step('f chown', lambda: os.chown(p('f'), 1, 1))
step('f utime', lambda: os.utime(p('f'), (1, 1)))
step('f setxattr', lambda: os.setxattr(p('f'), 'user.x', b'1'))
step('f unlink', lambda: os.unlink(p('f')))
step('f rename', lambda: os.rename(p('f'), p('g')))
step('f link', lambda: os.link(p('f'), p('h')))
step('o over f', lambda: os.rename(p('o'), p('f')))
step('f read', lambda: read('f'))
step('f -i', lambda: setflags('f', remove=IMMUTABLE))
step('f unlink', lambda: os.unlink(p('f')))

# Append-only.
step('a +a', lambda: setflags('a', add=APPEND))
step('a flags', lambda: getflags('a'))
step('a append', lambda: write('a', os.O_WRONLY | os.O_APPEND))
step('a write', lambda: write('a', os.O_WRONLY))
step('a truncate', lambda: os.truncate(p('a'), 0))
step('a unlink', lambda: os.unlink(p('a')))
step('a read', lambda: read('a'))
step('a -a', lambda: setflags('a', remove=APPEND))

# An immutable directory (also from the lower layer): no entry made, removed or moved
# in it, whiteouts included.
step('d +i', lambda: setflags('d', add=IMMUTABLE))
step('d flags', lambda: getflags('d'))
step('d create', lambda: write('d/new', os.O_WRONLY | os.O_CREAT))
step('d mkdir', lambda: os.mkdir(p('d/sub')))
step('d unlink x', lambda: os.unlink(p('d/x')))
step('d rename x', lambda: os.rename(p('d/x'), p('d/y')))
step('d move x out', lambda: os.rename(p('d/x'), p('xx')))
step('d write x', lambda: write('d/x', os.O_WRONLY | os.O_APPEND))
step('d list', lambda: sorted(os.listdir(p('d'))))
step('d -i', lambda: setflags('d', remove=IMMUTABLE))
step('d unlink x', lambda: os.unlink(p('d/x')))

# The fsxattr form, and flags that restrict nothing.
step('n xflags', lambda: fsx('n'))
step('n +nodump (fsxattr)', lambda: fsx('n', XFLAG_NODUMP))
step('n flags', lambda: getflags('n'))
step('n +A', lambda: setflags('n', add=NOATIME))
step('n flags', lambda: getflags('n'))
step('n read', lambda: read('n'))
step('n -A', lambda: setflags('n', remove=NOATIME))
step('n xflags', lambda: fsx('n'))
step('listing', lambda: sorted(os.listdir(root)))
