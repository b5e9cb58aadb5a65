"""Concurrent differential stress test of a layerfs-overlay mount.

Many processes at once, some as root and some as other users, for a bounded time:
- private workers each own one directory of the merged tree (lower content included, so
  copy-ups, whiteouts and redirects happen) and run seeded random operations there:
  create/write/append/truncate/read/stat/rename/exchange/link/unlink/mkdir/rmdir/chmod/
  symlink/setxattr/mkfifo/listdir, unlink-while-open, and hostile ones (fchmod, fchown,
  ftruncate, fsetxattr, futimens on an fd whose name was replaced by a symlink to a host
  file). Every operation and its result (errno, digest of what was read, stat) is logged;
  afterwards each worker's log is replayed, as the same user, on kernel overlayfs over the
  same lower layers, and every result and the final trees (also after a remount) must
  agree.
- shared workers churn one directory tree together (create/write/read/rename/link/
  unlink/mkdir/rmdir/chmod/setxattr); they cannot be replayed, so they check invariants:
  only errnos that concurrent use can cause, and every byte read belongs to the file read.
All content is made of tokens that name their writer, so a read that returns another
file's data (another user's included) is caught at once. A host file outside the layers
(the sentinel) must be unchanged at the end; the daemon must be alive, its peak RSS bounded.

Usage: union_stress.py LAYERFS_OVERLAY_BIN SCRATCH_DIR SEED SECONDS [MAX_RSS_MIB]
Exit status 0 when everything held. Run by tests/union_stress.rs (as root); run longer
for releases, e.g. `python3 tests/stress/union_stress.py target/release/layerfs-overlay
/tmp/s 1 300`.
"""
import ctypes
import errno
import hashlib
import json
import os
import random
import re
import signal
import stat as S
import subprocess
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
if __name__ == '__main__':
    BIN, B, SEED, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    MAX_RSS_MIB = int(sys.argv[5]) if len(sys.argv) > 5 else 128
else:  # imported to debug a log: set these first
    BIN = B = ''
    SEED, SECONDS, MAX_RSS_MIB = 0, 0.0, 512
SENTINEL_UID = 12345


def sentinel():
    return f'{B}/sentinel'
# (name, uid): private workers own w<i>; shared workers churn `shared`.
PRIVATE = [('P0', 0), ('P1', 65534), ('P2', 0), ('P3', 65534), ('P4', 65533), ('P5', 0)]
SHARED = [('S0', 0), ('S1', 65534), ('S2', 0), ('S3', 65533)]
NAMES = ['a', 'b', 'c', 'd', 'e']
TOKEN = re.compile(rb'<([A-Za-z0-9]+)\|')
ALPHABET = re.compile(rb'[^<>|A-Za-z0-9:/\0]')
ALLOWED_SHARED = {'ENOENT', 'EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR', 'EACCES', 'EPERM',
                  'EINVAL', 'ELOOP', 'ETXTBSY', 'ENODATA'}


def sh(c):
    subprocess.run(c, shell=True, check=True)


def content(owner, tag, n):
    """n repetitions of a token naming its writer."""
    return (f'<{owner}|{tag}>' * n).encode()


def foreign_tokens(data, owner):
    """Writers other than `owner` whose tokens are in data, and bytes no writer writes.
    (Truncation and overwrites cut tokens: a piece of a token is not foreign.)"""
    bad = {m.group(1).decode() for m in TOKEN.finditer(data) if m.group(1).decode() != owner}
    junk = ALPHABET.search(data)
    if junk:
        bad.add('junk:' + repr(data[max(0, junk.start() - 10):junk.start() + 30]))
    return bad


def build_lowers():
    r = random.Random(SEED * 31)
    for layer in ['L1', 'L2']:
        os.makedirs(f'{B}/{layer}')
    for name, uid in PRIVATE + [('shared', 0)]:
        owner = 'S' if name == 'shared' else name
        top = 'shared' if name == 'shared' else 'w' + name
        for layer in ['L1', 'L2']:
            root = f'{B}/{layer}/{top}'
            os.makedirs(root)
            for n1 in NAMES:
                x = r.random()
                p = f'{root}/{n1}'
                if x < 0.3:
                    with open(p, 'wb') as f:
                        f.write(content(owner, f'{layer}:{n1}', 3))
                elif x < 0.6:
                    os.mkdir(p)
                    for n2 in NAMES[:3]:
                        if r.random() < 0.5:
                            with open(f'{p}/{n2}', 'wb') as f:
                                f.write(content(owner, f'{layer}:{n1}/{n2}', 2))
                    if layer == 'L2' and r.random() < 0.3:
                        os.setxattr(p, 'trusted.overlay.opaque', b'y')
                elif x < 0.7 and layer == 'L2' and os.path.lexists(p.replace('/L2/', '/L1/')):
                    os.mknod(p, S.S_IFCHR, 0)  # whiteout
            files = sorted(f for f in os.listdir(root) if S.S_ISREG(os.lstat(f'{root}/{f}').st_mode))
            if files and not os.path.lexists(f'{root}/hl'):
                os.link(f'{root}/{files[0]}', f'{root}/hl')
            for dp, dn, fn in os.walk(root):
                for n in dn + fn:
                    os.lchown(os.path.join(dp, n), uid, uid)
                os.lchown(dp, uid, uid)
            os.chmod(root, 0o777 if name == 'shared' else (0o700 if uid == 0 else 0o755))
            for dp, dn, _ in os.walk(root):
                for d in dn:
                    os.chmod(os.path.join(dp, d), 0o777 if name == 'shared' else 0o755)
            if name == 'shared':
                for dp, _, fn in os.walk(root):
                    for f in fn:
                        p = os.path.join(dp, f)
                        if S.S_ISREG(os.lstat(p).st_mode):
                            os.chmod(p, 0o666)


def mount_kernel():
    sh(f'mount -t overlay overlay -o lowerdir={B}/L2:{B}/L1,upperdir={B}/ku,workdir={B}/kw,'
       f'redirect_dir=on,index=on,metacopy=on {B}/k')


def mount_layerfs():
    sh(f'{BIN} -o lowerdir={B}/L2:{B}/L1,upperdir={B}/fu,workdir={B}/fw {B}/f')


def daemon_pid():
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv and argv[0].endswith(b'layerfs-overlay') and f'{B}/f'.encode() in argv:
            return int(p)
    return None


def rss_mib(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def become(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.umask(0o022)


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def renameat2(a, b, flags):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def stat_str(st):
    t = S.S_IFMT(st.st_mode)
    if S.S_ISDIR(st.st_mode):
        # (merged directories: the kernel reports nlink 1 and its own size)
        return f'dir {st.st_mode & 0o7777:o} {st.st_uid}'
    return f'{t:o} {st.st_mode & 0o7777:o} {st.st_size} {st.st_nlink} {st.st_uid}'


def digest(data):
    return f'{len(data)}:{hashlib.sha1(data).hexdigest()[:12]}'


# ---------------------------------------------------------------- private workers

def rand_path(r):
    return '/'.join(r.choice(NAMES) for _ in range(r.choice([1, 1, 2, 2, 3])))


def gen_op(r, seq):
    kind = r.choice(['write', 'write', 'append', 'trunc', 'read', 'read', 'stat', 'unlink',
                     'rmdir', 'mkdir', 'mkdir', 'rename', 'rename', 'exchange', 'link',
                     'symlink', 'chmod', 'xattr', 'listdir', 'openunlink', 'stalefd',
                     'stalerename', 'fifo', 'rmrf'])
    return [kind, rand_path(r), rand_path(r), r.choice([0o600, 0o640, 0o644, 0o755, 0o4755]), seq]


def run_op(root, owner, op, leaks):
    """Applies one logged operation under `root`; returns its result as a string."""
    kind, p1, p2, mode, seq = op
    a, b = f'{root}/{p1}', f'{root}/{p2}'
    try:
        if kind in ('write', 'append', 'trunc', 'read', 'openunlink', 'stalefd',
                    'stalerename') and os.path.exists(a) and not S.S_ISREG(os.stat(a).st_mode):
            return 'notreg'
        if kind == 'write':
            fd = os.open(a, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
            try:
                os.write(fd, content(owner, f'w{seq}', 1 + seq % 7))
            finally:
                os.close(fd)
            with open(a, 'rb') as f:
                data = f.read()
            leaks.extend(f'{p1}: {t}' for t in foreign_tokens(data, owner))
            return 'ok ' + digest(data)
        if kind == 'append':
            with open(a, 'ab') as f:
                f.write(content(owner, f'a{seq}', 1))
        elif kind == 'trunc':
            os.truncate(a, (seq % 3) * 7)
        elif kind == 'read':
            with open(a, 'rb') as f:
                data = f.read()
            leaks.extend(f'{p1}: {t}' for t in foreign_tokens(data, owner))
            return 'ok ' + digest(data)
        elif kind == 'stat':
            return 'ok ' + stat_str(os.lstat(a))
        elif kind == 'unlink':
            os.unlink(a)
        elif kind == 'rmdir':
            os.rmdir(a)
        elif kind == 'mkdir':
            os.mkdir(a, 0o755)
        elif kind == 'rename':
            os.rename(a, b)
        elif kind == 'exchange':
            renameat2(a, b, 2)
        elif kind == 'link':
            os.link(a, b)
        elif kind == 'symlink':
            os.symlink(f't{seq % 3}', a)
        elif kind == 'chmod':
            if os.path.islink(a):
                return 'link'
            os.chmod(a, mode & 0o777)
        elif kind == 'xattr':
            os.setxattr(a, 'user.k', str(seq).encode(), follow_symlinks=False)
            return 'ok ' + os.getxattr(a, 'user.k', follow_symlinks=False).decode()
        elif kind == 'listdir':
            return 'ok ' + ','.join(sorted(os.listdir(a)))
        elif kind == 'fifo':
            os.mkfifo(a, 0o644)
        elif kind == 'openunlink':
            fd = os.open(a, os.O_RDWR)
            try:
                os.unlink(a)
                os.pwrite(fd, content(owner, f'u{seq}', 1), 0)
                data = os.pread(fd, 4096, 0)
                leaks.extend(f'{p1} (unlinked): {t}' for t in foreign_tokens(data, owner))
                return f'ok {digest(data)} {stat_str(os.fstat(fd))}'
            finally:
                os.close(fd)
        elif kind in ('stalefd', 'stalerename'):
            # The name of an open file is replaced by a symlink to a host file; every
            # change through the fd must reach the open file, never the symlink's target.
            fd = os.open(a, os.O_WRONLY | os.O_NONBLOCK)
            res = []
            try:
                if kind == 'stalefd':
                    os.unlink(a)
                    os.symlink(sentinel(), a)
                else:
                    os.symlink(sentinel(), a + '.s')
                    os.rename(a + '.s', a)
                for name, f in [('fchmod', lambda: os.fchmod(fd, 0o777)),
                                ('fchown', lambda: os.fchown(fd, 4242, 4242)),
                                ('ftruncate', lambda: os.ftruncate(fd, 3)),
                                ('fsetxattr', lambda: os.setxattr(fd, 'user.s', b'1')),
                                ('futimens', lambda: os.utime(fd, (1, 1)))]:
                    try:
                        f()
                        res.append(name)
                    except OSError as e:
                        res.append(f'{name}:{ename(e)}')
                res.append(stat_str(os.fstat(fd)))
            finally:
                os.close(fd)
                os.unlink(a)
            return 'ok ' + ' '.join(res)
        elif kind == 'rmrf':
            # (sorted: the order of a listing differs between filesystems, and where a
            # removal fails decides what is left)
            def rm(p):
                n = 0
                if os.path.isdir(p) and not os.path.islink(p):
                    for e in sorted(os.listdir(p)):
                        n += rm(f'{p}/{e}')
                    os.rmdir(p)
                else:
                    os.unlink(p)
                return n + 1
            return f'ok {rm(a)}'
        return 'ok'
    except OSError as e:
        return ename(e)


def private_worker(name, uid, root, deadline, logpath):
    become(uid)
    r = random.Random(f'{SEED}-{name}')
    log, leaks = [], []
    seq = 0
    while time.time() < deadline:
        op = gen_op(r, seq)
        res = run_op(f'{root}/w{name}', name, op, leaks)
        log.append([op, res])
        seq += 1
        if leaks:
            break
    with open(logpath, 'w') as f:
        json.dump({'log': log, 'leaks': leaks}, f)


def replay(name, uid, root, log, outpath):
    become(uid)
    out = []
    leaks = []
    for op, _ in log:
        out.append(run_op(f'{root}/w{name}', name, op, leaks))
    with open(outpath, 'w') as f:
        json.dump(out, f)


# ---------------------------------------------------------------- shared workers

def shared_worker(name, uid, root, deadline, logpath):
    become(uid)
    r = random.Random(f'{SEED}-{name}')
    bad, n = [], 0
    base = f'{root}/shared'
    while time.time() < deadline and len(bad) < 20:
        kind = r.choice(['write', 'write', 'read', 'read', 'rename', 'link', 'unlink', 'mkdir',
                         'rmdir', 'chmod', 'xattr', 'append', 'trunc', 'stat', 'listdir'])
        a, b = f'{base}/{rand_path(r)}', f'{base}/{rand_path(r)}'
        n += 1
        try:
            if kind == 'write':
                fd = os.open(a, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK, 0o666)
                try:
                    if S.S_ISREG(os.fstat(fd).st_mode):
                        os.write(fd, content('S', f'{name}{n}', 1 + n % 5))
                finally:
                    os.close(fd)
            elif kind == 'append':
                fd = os.open(a, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
                try:
                    if S.S_ISREG(os.fstat(fd).st_mode):
                        os.write(fd, content('S', f'{name}{n}', 1))
                finally:
                    os.close(fd)
            elif kind == 'read':
                fd = os.open(a, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    if S.S_ISREG(os.fstat(fd).st_mode):
                        data = os.read(fd, 1 << 16)
                        for t in foreign_tokens(data, 'S'):
                            bad.append(f'read {a[len(root):]}: foreign data {t}')
                finally:
                    os.close(fd)
            elif kind == 'trunc':
                os.truncate(a, 0)
            elif kind == 'rename':
                os.rename(a, b)
            elif kind == 'link':
                os.link(a, b)
            elif kind == 'unlink':
                os.unlink(a)
            elif kind == 'mkdir':
                os.mkdir(a, 0o777)
            elif kind == 'rmdir':
                os.rmdir(a)
            elif kind == 'chmod':
                os.chmod(a, r.choice([0o666, 0o777, 0o644]))
            elif kind == 'xattr':
                os.setxattr(a, 'user.k', name.encode())
                os.getxattr(a, 'user.k')
            elif kind == 'stat':
                os.lstat(a)
            elif kind == 'listdir':
                for e in os.listdir(a):
                    os.lstat(f'{a}/{e}')
        except OSError as e:
            if ename(e) not in ALLOWED_SHARED:
                bad.append(f'{kind} {a[len(root):]} {b[len(root):]}: {ename(e)}')
    with open(logpath, 'w') as f:
        json.dump({'ops': n, 'bad': bad}, f)


# ---------------------------------------------------------------- trees

def snapshot(top):
    out, inos = {}, {}
    for dp, dn, fn in os.walk(top):
        for n in dn + fn:
            p = os.path.join(dp, n)
            rel = p[len(top):]
            st = os.lstat(p)
            inos[rel] = st.st_ino
            xs = ','.join(sorted(f'{k}={os.getxattr(p, k, follow_symlinks=False)!r}'
                                 for k in os.listxattr(p, follow_symlinks=False)
                                 if k.startswith('user.')))
            if S.S_ISDIR(st.st_mode):
                out[rel] = ('dir', oct(st.st_mode & 0o7777), st.st_uid, xs)
            elif S.S_ISLNK(st.st_mode):
                out[rel] = ('lnk', os.readlink(p), st.st_uid)
            elif S.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    out[rel] = ('reg', oct(st.st_mode & 0o7777), st.st_uid, st.st_nlink,
                                digest(f.read()), xs)
            else:
                out[rel] = ('other', oct(st.st_mode), st.st_uid)
    groups = {}
    for rel, i in inos.items():
        groups.setdefault(i, []).append(rel)
    return out, sorted(sorted(v) for v in groups.values() if len(v) > 1)


def compare_trees(what, tops):
    ok = True
    for top in tops:
        k, f = snapshot(f'{B}/k/{top}'), snapshot(f'{B}/f/{top}')
        if k[0] != f[0]:
            ok = False
            print(f'{what}: {top} differs from kernel overlayfs:')
            for rel in sorted(set(k[0]) | set(f[0])):
                if k[0].get(rel) != f[0].get(rel):
                    print(f'   {top}{rel} kernel: {k[0].get(rel)} layerfs: {f[0].get(rel)}')
        if k[1] != f[1]:
            ok = False
            print(f'{what}: {top} hard-link groups differ: kernel {k[1]} layerfs {f[1]}')
    return ok


def sentinel_state():
    st = os.lstat(sentinel())
    with open(sentinel(), 'rb') as f:
        return (st.st_mode, st.st_uid, st.st_gid, f.read(), st.st_mtime_ns,
                os.listxattr(sentinel()))


def main():
    os.makedirs(B, exist_ok=True)
    os.chmod(B, 0o755)
    for d in ['ku', 'kw', 'fu', 'fw', 'k', 'f', 'logs']:
        os.makedirs(f'{B}/{d}')
    os.chmod(f'{B}/logs', 0o777)
    with open(sentinel(), 'wb') as f:
        f.write(b'SENTINEL')
    os.chown(sentinel(), SENTINEL_UID, SENTINEL_UID)
    os.chmod(sentinel(), 0o600)
    sentinel0 = sentinel_state()
    build_lowers()
    mount_kernel()
    mount_layerfs()
    failures = []
    try:
        pid = daemon_pid()
        deadline = time.time() + SECONDS
        kids = {}
        for name, uid in PRIVATE:
            c = os.fork()
            if c == 0:
                code = 0
                try:
                    private_worker(name, uid, f'{B}/f', deadline, f'{B}/logs/{name}.json')
                except BaseException as e:  # noqa: BLE001 - report anything from the child
                    print(f'{name}: {e!r}', flush=True)
                    code = 1
                os._exit(code)
            kids[c] = name
        for name, uid in SHARED:
            c = os.fork()
            if c == 0:
                code = 0
                try:
                    shared_worker(name, uid, f'{B}/f', deadline, f'{B}/logs/{name}.json')
                except BaseException as e:  # noqa: BLE001
                    print(f'{name}: {e!r}', flush=True)
                    code = 1
                os._exit(code)
            kids[c] = name
        peak = 0
        hard_deadline = deadline + 120
        while kids and time.time() < hard_deadline:
            if pid:
                peak = max(peak, rss_mib(pid))
            c, status = os.waitpid(-1, os.WNOHANG)
            if c == 0:
                time.sleep(0.2)
                continue
            name = kids.pop(c)
            if status != 0:
                failures.append(f'{name}: worker died (status {status})')
        if kids and pid:
            # Stuck requests come back (ENOTCONN) once the daemon is gone.
            os.kill(pid, signal.SIGKILL)
        for c, name in kids.items():
            failures.append(f'{name}: hung (a request never answered?)')
            os.kill(c, signal.SIGKILL)
        if kids:
            return report(failures)
        if pid is None or daemon_pid() != pid:
            failures.append('the layerfs daemon is gone')
            return report(failures)
        total = 0
        for name, _ in SHARED:
            with open(f'{B}/logs/{name}.json') as f:
                s = json.load(f)
            total += s['ops']
            failures.extend(f'{name}: {x}' for x in s['bad'])
        for name, uid in PRIVATE:
            with open(f'{B}/logs/{name}.json') as f:
                s = json.load(f)
            failures.extend(f'{name}: LEAK {x}' for x in s['leaks'])
            total += len(s['log'])
            c = os.fork()
            if c == 0:
                replay(name, uid, f'{B}/k', s['log'], f'{B}/logs/{name}.k.json')
                os._exit(0)
            os.waitpid(c, 0)
            with open(f'{B}/logs/{name}.k.json') as f:
                kres = json.load(f)
            for i, ((op, fres), kr) in enumerate(zip(s['log'], kres)):
                if fres != kr:
                    failures.append(f'{name} op {i} {op}: layerfs {fres}, kernel overlayfs {kr}')
                    break
        print(f'{total} operations by {len(PRIVATE) + len(SHARED)} processes in {SECONDS:.0f} s; '
              f'daemon peak RSS {peak} MiB')
        if peak > MAX_RSS_MIB:
            failures.append(f'daemon RSS {peak} MiB > {MAX_RSS_MIB} MiB')
        tops = [f'w{n}' for n, _ in PRIVATE]
        if not compare_trees('after the run', tops):
            failures.append('final trees differ')
        # the shared tree must be readable throughout, with only its own data
        for dp, dn, fn in os.walk(f'{B}/f/shared', onerror=lambda e: failures.append(f'walk: {e}')):
            for n in fn:
                p = os.path.join(dp, n)
                if S.S_ISREG(os.lstat(p).st_mode):
                    with open(p, 'rb') as f:
                        for t in foreign_tokens(f.read(), 'S'):
                            failures.append(f'shared {p[len(B):]}: foreign data {t}')
        subprocess.run(['umount', f'{B}/f'], check=True)
        mount_layerfs()
        if not compare_trees('after a remount', tops):
            failures.append('trees differ after a remount')
    finally:
        for m in ['f', 'k']:
            subprocess.run(['umount', '-l', f'{B}/{m}'], capture_output=True)
        if sentinel_state() != sentinel0:
            failures.append(f'the host file {sentinel()} was changed through the mount: '
                            f'{sentinel0} -> {sentinel_state()}')
    return report(failures)


def report(failures):
    for f in failures[:40]:
        print('FAIL', f)
    if len(failures) > 40:
        print(f'... and {len(failures) - 40} more')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
