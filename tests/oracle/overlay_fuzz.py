"""Differential test: random namespace and data operations applied to a layerfs-overlay
mount and to kernel overlayfs (redirect_dir, index, metacopy) over the same three lower
layers; after every step the two merged trees, the errnos, which names share an inode
and whether each name's st_ino changed must agree, also across remounts; and layerfs'
d_ino must equal st_ino and a directory's nlink 2 + its subdirectories everywhere.

Usage: overlay_fuzz.py LAYERFS_OVERLAY_BIN SCRATCH_DIR SEED STEPS
Exit status 0 when the two agree; otherwise prints the first difference.
Run by tests/overlay_oracle.rs (as root).
"""
import ctypes
import errno
import os
import random
import stat as S
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
BIN, B, SEED, STEPS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(SEED)
NAMES = ['a', 'b', 'c', 'd']
LOWERS = f'{B}/L3:{B}/L2:{B}/L1'


def sh(c):
    subprocess.run(c, shell=True, check=True)


def build_lowers():
    """Three random lower layers: files, dirs, symlinks, whiteouts, opaque dirs, hard links."""
    r = random.Random(SEED * 7)

    def fill(root, depth, layer):
        for n in NAMES:
            x = r.random()
            p = os.path.join(root, n)
            if x < 0.25:
                with open(p, 'w') as f:
                    f.write(f'{layer}:{p[len(B):]}')
            elif x < 0.62 and depth < 3:
                os.makedirs(p, exist_ok=True)
                fill(p, depth + 1, layer)
            elif x < 0.66:
                os.symlink('target', p)
            elif x < 0.72 and layer == 'L2' and os.path.lexists(p.replace('/L2/', '/L1/', 1)):
                os.mknod(p, 0o20000, 0)  # whiteout of something in L1

    for layer in ['L1', 'L2', 'L3']:
        os.makedirs(f'{B}/{layer}')
        fill(f'{B}/{layer}', 0, layer)
    for dp, dn, _ in os.walk(f'{B}/L3'):
        for d in dn:
            if r.random() < 0.3:
                os.setxattr(os.path.join(dp, d), 'trusted.overlay.opaque', b'y')
    for layer in ['L1', 'L2']:
        for dp, dn, fn in os.walk(f'{B}/{layer}'):
            files = [f for f in fn if S.S_ISREG(os.lstat(os.path.join(dp, f)).st_mode)]
            for f in files[:1]:
                os.link(os.path.join(dp, f), os.path.join(dp, f + 'h'))
                for d in dn[:1]:
                    q = os.path.join(dp, d, 'hl')
                    if not os.path.lexists(q):
                        os.link(os.path.join(dp, f), q)


def mount_all():
    sh(f'mount -t overlay overlay -o lowerdir={LOWERS},upperdir={B}/ku,workdir={B}/kw,'
       f'redirect_dir=on,index=on,metacopy=on {B}/k')
    sh(f'{BIN} -o lowerdir={LOWERS},upperdir={B}/fu,workdir={B}/fw {B}/f')


def umount_all():
    subprocess.run(f'umount {B}/k', shell=True)
    subprocess.run(f'umount {B}/f', shell=True)


def fail(e):
    raise e


def walk(root):
    """Relative path -> lstat of every entry below root."""
    out = {}
    for dp, dn, fn in os.walk(root, onerror=fail):
        for n in dn + fn:
            p = os.path.join(dp, n)
            out[p[len(root):]] = os.lstat(p)
    return out


def snapshot(root):
    out = {}
    for rel, st in walk(root).items():
        p = root + rel
        if S.S_ISDIR(st.st_mode):
            # (merged directories: the kernel reports nlink 1, we 2 + subdirs)
            out[rel] = ('dir', oct(st.st_mode & 0o7777))
        elif S.S_ISLNK(st.st_mode):
            out[rel] = ('lnk', os.readlink(p))
        elif S.S_ISREG(st.st_mode):
            with open(p) as f:
                out[rel] = ('reg', oct(st.st_mode & 0o7777), st.st_nlink, f.read())
        else:
            out[rel] = ('other', st.st_mode)
    return out


def ino_groups(inos):
    """Which names share an inode (the partition, not the numbers)."""
    g = {}
    for rel, i in inos.items():
        g.setdefault(i, []).append(rel)
    return sorted(sorted(v) for v in g.values())


def inomap(root):
    return {rel: st.st_ino for rel, st in walk(root).items()}


def rand_path():
    ps = [''] + list(walk(f'{B}/k'))
    if rnd.random() < 0.5 and len(ps) > 1:
        return rnd.choice(ps[1:])
    dirs = [q for q in ps if S.S_ISDIR(os.lstat(f'{B}/k' + q).st_mode)]
    return rnd.choice(dirs) + '/' + rnd.choice(NAMES + ['e', 'f'])


OPS = ['write', 'append', 'trunc', 'unlink', 'rmdir', 'mkdir', 'rename', 'rename', 'rename',
       'link', 'link', 'chmod', 'symlink', 'exchange', 'noreplace', 'rmrf', 'openunlink',
       'xattr', 'fifo', 'otrunc']


def apply(root, op):
    kind, p1, p2, mode, n = op
    a, b = root + p1, root + p2
    try:
        if kind in ('write', 'append') and os.path.exists(a) and S.S_ISFIFO(os.stat(a).st_mode):
            return 'fifo'
        if kind == 'write':
            with open(a, 'w') as f:
                f.write(f'w{n}')
        elif kind == 'append':
            with open(a, 'a') as f:
                f.write(f'+{n}')
        elif kind == 'trunc':
            os.truncate(a, n % 5)
        elif kind == 'unlink':
            os.unlink(a)
        elif kind == 'rmdir':
            os.rmdir(a)
        elif kind == 'mkdir':
            os.mkdir(a)
        elif kind == 'rename':
            os.rename(a, b)
        elif kind == 'link':
            os.link(a, b)
        elif kind == 'chmod':
            os.chmod(a, mode)
        elif kind == 'symlink':
            os.symlink(f't{n}', a)
        elif kind in ('exchange', 'noreplace'):
            flag = 2 if kind == 'exchange' else 1
            if libc.renameat2(-100, a.encode(), -100, b.encode(), flag) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
        elif kind == 'openunlink':
            fd = os.open(a, os.O_RDWR | os.O_NONBLOCK)
            try:
                os.unlink(a)
                os.pwrite(fd, b'X', 0)
                data = os.pread(fd, 100, 0).decode()
                nl = os.fstat(fd).st_nlink
            finally:
                os.close(fd)
            return f'ok {data} {nl}'
        elif kind == 'xattr':
            os.setxattr(a, 'user.k', str(n).encode(), follow_symlinks=False)
            names = ','.join(sorted(os.listxattr(a, follow_symlinks=False)))
            return 'ok ' + os.getxattr(a, 'user.k', follow_symlinks=False).decode() + ' ' + names
        elif kind == 'fifo':
            os.mkfifo(a, mode)
        elif kind == 'otrunc':
            fd = os.open(a, os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK)
            os.write(fd, b'T')
            os.close(fd)
        elif kind == 'rmrf' and p1 != '':
            return 'rc%d' % subprocess.run(['rm', '-rf', a], capture_output=True).returncode
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def diff(a, b):
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print('  ', k or '/', 'kernel:', a.get(k), 'layerfs:', b.get(k))


def d_ino_mismatches(root):
    """Entries whose readdir d_ino is not their st_ino."""
    bad = []
    for dp, _, _ in os.walk(root, onerror=fail):
        with os.scandir(dp) as it:
            for e in it:
                st = os.lstat(e.path)
                if e.inode() != st.st_ino:
                    bad.append((e.path[len(root):], e.inode(), st.st_ino))
    return bad


def dir_nlink_mismatches(root):
    """Directories whose st_nlink is not 2 + their subdirectories (the merged view's)."""
    bad = []
    for dp, dn, _ in os.walk(root, onerror=fail):
        n = os.lstat(dp).st_nlink
        # (os.walk counts symlinks to directories as directories)
        subdirs = sum(1 for d in dn if S.S_ISDIR(os.lstat(os.path.join(dp, d)).st_mode))
        if n != 2 + subdirs:
            bad.append((dp[len(root):] or '/', n, 2 + subdirs))
    return bad


def compare(what, ik0, if0):
    """Compares both trees now; ik0/if0 are the inode maps from before the step."""
    sk, sf = snapshot(f'{B}/k'), snapshot(f'{B}/f')
    ik1, if1 = inomap(f'{B}/k'), inomap(f'{B}/f')
    ok = True
    bad = d_ino_mismatches(f'{B}/f')
    if bad:
        print(f'{what}: layerfs d_ino != st_ino for', bad)
        ok = False
    bad = dir_nlink_mismatches(f'{B}/f')
    if bad:
        print(f'{what}: layerfs directory nlink is not 2 + subdirectories:', bad)
        ok = False
    if sk != sf:
        print(f'{what}: trees differ')
        diff(sk, sf)
        ok = False
    if ino_groups(ik1) != ino_groups(if1):
        print(f'{what}: names sharing an inode differ:', ino_groups(ik1), ino_groups(if1))
        ok = False
    for q in set(ik0) & set(ik1) & set(if0) & set(if1):
        if (ik0[q] == ik1[q]) != (if0[q] == if1[q]):
            print(f'{what}: st_ino of {q}: kernel {ik0[q]}->{ik1[q]}, layerfs {if0[q]}->{if1[q]}')
            ok = False
    return ok


def main():
    for d in ['ku', 'kw', 'fu', 'fw', 'k', 'f']:
        os.makedirs(f'{B}/{d}')
    build_lowers()
    mount_all()
    try:
        if not compare(f'seed {SEED}: initial', {}, {}):
            return 1
        for i in range(STEPS):
            op = (rnd.choice(OPS), rand_path(), rand_path(), rnd.randint(0, 0o777),
                  rnd.randint(0, 1000))
            ik0, if0 = inomap(f'{B}/k'), inomap(f'{B}/f')
            rk = apply(f'{B}/k', op)
            rf = apply(f'{B}/f', op)
            what = f'seed {SEED} step {i} {op}'
            if rk != rf:
                print(f'{what}: kernel {rk}, layerfs {rf}')
                return 1
            if not compare(what, ik0, if0):
                return 1
            if rnd.random() < 0.05:
                ik0, if0 = inomap(f'{B}/k'), inomap(f'{B}/f')
                umount_all()
                mount_all()
                if not compare(f'seed {SEED} remount after step {i}', ik0, if0):
                    return 1
        return 0
    finally:
        umount_all()


sys.exit(main())
