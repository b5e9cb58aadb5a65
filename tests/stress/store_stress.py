"""Concurrent differential stress test of the layerfs store.

Several worker processes run seeded random commands against ONE store (`--root`) for a
bounded time: `load` (built OCI layouts and docker-archives, the busybox fixture), `tag`,
`rmi` (with and without -f), `mount IMAGE DIR --name C`, `mount C DIR`, `mount
--read-only`, writes through the mounts, `umount` (by name and by directory), `commit C
[NAME]`, `diff`, `save` (docker-archive, oci, oci-archive), `export`, `rm` (with and
without -f), `prune`, `images`, `ps -a`, `df`, `inspect`. The pools of image names and
container names are small, so commands collide on the same names all the time; some
`load`, `commit`, `save`, `export` and `rm` commands are killed (SIGKILL) at a random
moment, and some commands are stopped (SIGSTOP) a few times midway, as on a busy machine,
to widen the windows in which others overlap them. One scenario is directed (issue 19,
defect 3): a commit of a mounted container is stopped while its container is unmounted,
mounted again and rewritten, then runs in short slices during the rewrites (stopped for
1.5 s at most: a commit that holds the container makes the unmount wait for it). Every command
is logged: start and end (monotonic clock), argv, exit status, stdout, stderr.

Files written through a mount name their writer, the container, a sequence number and
their length (`LFS W=3 C=c1 Q=17 N=5000`, then bytes derived from them). Each is written
whole under a temporary name and renamed into place, or rewritten in place by one
write(2) after O_TRUNC; so a file at a final name in a snapshot (a committed layer, a
container at rest) is complete, or empty while a rewrite in place is under way.

At the end everything left mounted is unmounted (and any daemon of this store that is
left is reported and killed), then the checker:
1. whole images: every image `images` lists has its config, its record and all its
   layers; `inspect` works; `save` of each loads into a fresh store with the same id;
   each mounts read-only and lists; every tag names an installed image; after `prune`,
   `tmp/` is empty, no layer is unused and no read-only mount record is left;
2. whole containers: every container of `ps -a` has its image, mounts, `diff`s (the
   listing matches its writable layer), and its writable layer holds exactly what the
   writes logged for it leave (each writer's last completed write or removal of each of
   its files since the container was last created); every file names that container;
3. serial order: per name (container existence, container mounted, tag), every
   command's result must fit a serial order consistent with real time: a command that
   needs a state (e.g. `rm C` succeeded: C existed; `commit C T` succeeded: T was free;
   `rm C` failed "is mounted": C was mounted) must find a command that could have made
   that state between the last command that surely unmade it and itself; two mounts of
   one container need an unmount between them; every failure must carry a message from
   the allow-list (never an I/O error on a store path, bad JSON, a panic); a committed
   layer must be a snapshot: for each writer, the files of its in the layer must be the
   state after its write with the highest sequence number there (no older version of a
   file it had rewritten before that write, no file missing that it had not removed),
   and every file in it was written to that container before the commit ended, whole;
   `save` outputs are whole (blob digests) and `export` outputs hold whole files (but
   for a file rewritten in place while the export ran).
Violations are printed with the commands involved and the commands around them.

Usage: store_stress.py LAYERFS_BIN SCRATCH SEED SECONDS
SCRATCH must not exist or be empty (it is left in place, with the logs in SCRATCH/logs).
Exit status 0 when everything held. Run by tests/store_stress.rs (as root, 15 s); run
longer for releases, e.g.
`python3 tests/stress/store_stress.py target/release/layerfs /tmp/ss 1 120`.
Fixtures: $LAYERFS_FIXTURES, else ../shared/fixtures beside the crate.
"""
import errno
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import stat as S
import subprocess
import sys
import tarfile
import threading
import time

if __name__ == '__main__':
    BIN, B, SEED, SECONDS = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), \
        int(sys.argv[3]), float(sys.argv[4])
else:  # imported to look at a log: set these first
    BIN = B = ''
    SEED, SECONDS = 0, 0.0

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.environ.get('LAYERFS_FIXTURES') or os.path.normpath(
    os.path.join(HERE, '..', '..', '..', 'shared', 'fixtures'))

NWORKERS = 7
TAGS = ['s/x:1', 's/x:2', 's/y:1', 'stress/c:1', 'layerfs/busybox:latest']
LOAD_TAGS = ['s/x:1', 's/x:2', 's/y:1']
CONTAINERS = ['c0', 'c1', 'c2', 'c3']
SLOTS = 6              # files per writer: w<W>-s<k>
DIRS = 3               # mount points per worker
HANG = 150             # seconds: a command running longer is reported as hung
KILLABLE = {'load': 0.15, 'commit': 0.12, 'save': 0.12, 'export': 0.1, 'rm': 0.06}
# How often a command is stopped (SIGSTOP) a few times midway, as a busy machine would
# (default 3%): it widens the windows in which other commands overlap it.
PAUSE = {'commit': 0.35, 'rm': 0.1, 'mount': 0.1, 'umount': 0.1, 'export': 0.1, 'diff': 0.1,
         'save': 0.1, 'rmi': 0.1, 'tag': 0.05}


def store():
    return f'{B}/store'


def now():
    return time.monotonic()


# ---------------------------------------------------------------- file contents

def content(w, c, q, n):
    """The bytes of write Q by writer W into container C: a header, then bytes derived
    from it, N bytes in all."""
    head = f'LFS W={w} C={c} Q={q} N={n}\n'.encode()
    seed = hashlib.sha256(head).digest()
    body = (seed * (n // len(seed) + 1))[:max(0, n - len(head))]
    return (head + body)[:n] if n >= len(head) else head


HEAD = re.compile(rb'^LFS W=(\d+) C=([A-Za-z0-9._-]+) Q=(\d+) N=(\d+)\n')


def parse_content(data):
    """(w, c, q, n, whole) of file bytes, or None when they are not a header at all.
    whole: the bytes are exactly what that write wrote; a strict prefix gives False."""
    m = HEAD.match(data)
    if not m:
        return None
    w, c, q, n = int(m.group(1)), m.group(2).decode(), int(m.group(3)), int(m.group(4))
    want = content(w, c, q, n)
    if data == want:
        return (w, c, q, n, True)
    if want.startswith(data):
        return (w, c, q, n, False)
    return None


def slot_name(w, k):
    return f'w{w}-s{k}'


SLOT = re.compile(r'^(\.t-)?w(\d+)-s(\d+)$')


# ---------------------------------------------------------------- images

def host_arch():
    m = os.uname().machine
    return {'x86_64': 'amd64', 'aarch64': 'arm64'}.get(m, m)


def layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT) as t:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 1700000000, 0, 0, '', ''
            if kind == 'dir':
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == 'symlink':
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, data, 0o777
                t.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def config_for(tars, created, label):
    return json.dumps({
        'created': created, 'architecture': host_arch(), 'os': 'linux',
        'config': {'Cmd': ['/bin/sh'], 'Env': ['PATH=/bin'], 'Labels': {'stress': label}},
        'rootfs': {'type': 'layers', 'diff_ids': ['sha256:' + sha(t) for t in tars]},
        'history': [{'created': created, 'created_by': f'layer {i}'} for i in range(len(tars))],
    }, sort_keys=True).encode()


def write_oci(path, tars, created, label, tag='latest'):
    os.makedirs(f'{path}/blobs/sha256')

    def blob(b):
        with open(f'{path}/blobs/sha256/{sha(b)}', 'wb') as f:
            f.write(b)
        return 'sha256:' + sha(b)
    layers = []
    for t in tars:
        gz = gzip.compress(t, mtime=0)
        layers.append({'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip',
                       'digest': blob(gz), 'size': len(gz)})
    cfg = config_for(tars, created, label)
    manifest = json.dumps({
        'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
        'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                   'digest': blob(cfg), 'size': len(cfg)},
        'layers': layers}).encode()
    md = blob(manifest)
    with open(f'{path}/oci-layout', 'w') as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(f'{path}/index.json', 'w') as f:
        json.dump({'schemaVersion': 2, 'manifests': [{
            'mediaType': 'application/vnd.oci.image.manifest.v1+json', 'digest': md,
            'size': len(manifest),
            'annotations': {'org.opencontainers.image.ref.name': tag}}]}, f)
    return 'sha256:' + sha(cfg)


def write_docker_archive(path, tars, created, label, repo_tags):
    cfg = config_for(tars, created, label)
    with tarfile.open(path, 'w', format=tarfile.USTAR_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
            t.addfile(ti, io.BytesIO(data))
        add(f'{sha(cfg)}.json', cfg)
        paths = []
        for i, tb in enumerate(tars):
            add(f'layer{i}/layer.tar', tb)
            paths.append(f'layer{i}/layer.tar')
        add('manifest.json', json.dumps([{'Config': f'{sha(cfg)}.json', 'RepoTags': repo_tags,
                                          'Layers': paths}]).encode())
    return 'sha256:' + sha(cfg)


def fixture_id(layout, ref):
    with open(f'{layout}/index.json') as f:
        idx = json.load(f)
    for m in idx['manifests']:
        if m.get('annotations', {}).get('org.opencontainers.image.ref.name') == ref:
            with open(f'{layout}/blobs/sha256/{m["digest"][7:]}') as f:
                return json.load(f)['config']['digest']
    raise SystemExit(f'{layout}: no ref {ref}')


def build_sources():
    """The images workers load: (argv tail, names the source itself gives) by key."""
    if not os.path.isfile(f'{FIX}/busybox/oci/index.json'):
        raise SystemExit(f'fixtures not found at {FIX} (set LAYERFS_FIXTURES or run '
                         f'../shared/scripts/make-fixtures.sh)')
    src = f'{B}/src'
    os.makedirs(src)
    l0 = layer_tar([('etc', 'dir', b''), ('etc/os-release', 'file', b'ID=stress\n'),
                    ('data', 'dir', b''), ('data/base.txt', 'file', b'base\n' * 100),
                    ('bin', 'symlink', 'data')])
    l1 = layer_tar([('app', 'dir', b''), ('app/one', 'file', b'one\n' * 1000)])
    l2 = layer_tar([('app', 'dir', b''), ('app/two', 'file', b'two\n' * 50),
                    ('data', 'dir', b''), ('data/.wh.base.txt', 'file', b'')])
    ids = {
        'a': write_oci(f'{src}/a', [l0], '2024-01-01T00:00:00Z', 'a'),
        'b': write_oci(f'{src}/b', [l0, l1], '2024-01-02T00:00:00Z', 'b'),
        'c': write_docker_archive(f'{src}/c.tar', [l0, l2], '2024-01-03T00:00:00Z', 'c',
                                  ['stress/c:1']),
        'bb': fixture_id(f'{FIX}/busybox/oci', 'latest'),
        'bb1': fixture_id(f'{FIX}/busybox/oci', 'l1'),
    }
    sources = {
        'a': (f'oci:{src}/a:latest', []),
        'b': (f'oci:{src}/b:latest', []),
        'c': (f'{src}/c.tar', ['stress/c:1']),
        'bb': (f'oci:{FIX}/busybox/oci:latest', []),
        'bbd': (f'{FIX}/busybox/busybox.docker.tar', ['layerfs/busybox:latest']),
        'bb1': (f'oci:{FIX}/busybox/oci:l1', []),
    }
    return sources, ids


# ---------------------------------------------------------------- mounts

def unescape(s):
    return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), s)


def mountinfo():
    """[(mount point, source, fstype, dev)] of this mount namespace."""
    out = []
    try:
        with open('/proc/self/mountinfo') as f:
            text = f.read()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(' - ')
        lf, rf = left.split(' '), right.split(' ')
        if len(lf) < 5 or len(rf) < 2:
            continue
        maj, _, mi = lf[2].partition(':')
        out.append((unescape(lf[4]), unescape(rf[1]), rf[0], os.makedev(int(maj), int(mi))))
    return out


def mount_at(path):
    """(source, fstype, dev) of the topmost mount at path, or None."""
    top = None
    for mp, src, fst, dev in mountinfo():
        if mp == path:
            top = (src, fst, dev)
    return top


def mounts_under(prefix):
    return [mp for mp, _, _, _ in mountinfo() if mp == prefix or mp.startswith(prefix + '/')]


def store_daemons():
    """Pids of layerfs processes serving this store (their argv names its root)."""
    pids = []
    me = store().encode()
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv and argv[0] == BIN.encode() and me in argv and b'mount' in argv:
            pids.append(int(p))
    return pids


# ---------------------------------------------------------------- workers

def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))


class Worker:
    def __init__(self, w, sources, ids, deadline):
        self.w = w
        self.r = random.Random(f'{SEED}-w{w}')
        self.sources, self.deadline = sources, deadline
        self.ids = sorted(set(ids.values()))
        self.log = []
        self.n = 0
        self.seq = 0
        self.dirs = [f'{B}/mnt/w{w}-{k}' for k in range(DIRS)]
        self.out = f'{B}/out/w{w}'
        self.cwd = f'{B}/cwd'

    def rec(self, kind, **kw):
        r = {'id': f'w{self.w}#{self.n}', 'w': self.w, 'kind': kind}
        r.update(kw)
        self.n += 1
        self.log.append(r)
        return r

    def start(self, kind, args):
        """Starts `layerfs ARGS` (see `finish`)."""
        argv = [BIN, '--root', store()] + args
        t0 = now()   # (before the process exists: it may run and end before Popen returns)
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, cwd=self.cwd)
        return {'p': p, 't0': t0, 'kind': kind, 'args': args, 'paused': []}

    def finish(self, h, kill=None, pauses=(), **kw):
        """Waits for a started command and logs it; kills it `kill` seconds after its
        start if given; stops it (SIGSTOP) as `pauses` says: (run this long, then stop
        that long), …"""
        p, t0 = h['p'], h['t0']
        killed = hung = False
        for run_for, stop_for in pauses:
            if kill is not None and now() - t0 + run_for >= kill:
                break
            try:
                p.wait(timeout=run_for)
                break
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGSTOP)
                h['paused'].append([round(now() - t0, 3), round(stop_for, 3)])
                time.sleep(stop_for)
                p.send_signal(signal.SIGCONT)
        try:
            limit = HANG if kill is None else max(0.0, kill - (now() - t0))
            out, err = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            killed, hung = kill is not None, kill is None
        t1 = now()
        return self.rec(h['kind'], args=h['args'], t0=t0, t1=t1, rc=p.returncode,
                        killed=killed, hung=hung, paused=h['paused'],
                        out=out.decode(errors='replace'), err=err.decode(errors='replace'),
                        **kw)

    def run(self, kind, args, kill=None, **kw):
        """Runs `layerfs ARGS`; kills it after `kill` seconds if given, and sometimes
        stops it (SIGSTOP) a few times at random moments, as a busy machine would, to
        widen the windows in which other commands overlap it."""
        pauses = []
        if self.r.random() < PAUSE.get(kind, 0.03):
            pauses = [(self.r.uniform(0.002, 0.06), self.r.uniform(0.03, 0.25))
                      for _ in range(self.r.randint(1, 5))]
        return self.finish(self.start(kind, args), kill=kill, pauses=pauses, **kw)

    def kill_after(self, kind):
        if self.r.random() < KILLABLE.get(kind, 0):
            return self.r.uniform(0.0, 0.35)
        return None

    # -- choices
    def image_arg(self):
        x = self.r.random()
        if x < 0.8:
            return self.r.choice(TAGS)
        return self.r.choice(self.ids)[7:7 + 12]

    def container(self):
        return self.r.choice(CONTAINERS)

    def step(self):
        acts = [('load', 8), ('tag', 6), ('rmi', 5), ('mount', 9), ('mount_name', 6),
                ('mount_ro', 2), ('write', 14), ('remount', 4), ('umount', 7), ('commit', 8),
                ('commit_race', 2),
                ('diff', 3), ('save', 4), ('export', 3), ('rm', 5), ('prune', 2), ('list', 5)]
        total = sum(w for _, w in acts)
        x = self.r.uniform(0, total)
        for name, wt in acts:
            x -= wt
            if x <= 0:
                break
        getattr(self, 'do_' + name)()

    def do_load(self):
        key = self.r.choice(sorted(self.sources))
        src, names = self.sources[key]
        args = ['load', src]
        tag = None
        if key in ('a', 'b', 'bb', 'bb1') or self.r.random() < 0.3:
            tag = self.r.choice(LOAD_TAGS)
            args += ['--tag', tag]
        r = self.run('load', args, kill=self.kill_after('load'),
                     names=names + ([tag] if tag else []))
        if r['rc'] == 0 and r['out'].strip():
            last = r['out'].strip().splitlines()[-1]
            if last.startswith('sha256:') and last not in self.ids:
                self.ids.append(last)

    def do_tag(self):
        src = self.image_arg()
        dst = self.r.choice(TAGS)
        args = ['tag', src, dst] + (['--force'] if self.r.random() < 0.3 else [])
        self.run('tag', args, img=src, dst=dst)

    def do_rmi(self):
        ref = self.image_arg()
        args = ['rmi', ref] + (['--force'] if self.r.random() < 0.3 else [])
        self.run('rmi', args, ref=ref)

    def free_dir(self):
        free = [d for d in self.dirs if mount_at(d) is None]
        if free and self.r.random() < 0.9:
            return self.r.choice(free)
        return self.r.choice(self.dirs)

    def do_mount(self):
        c, img, d = self.container(), self.image_arg(), self.free_dir()
        self.run('mount', ['mount', img, d, '--name', c], c=c, img=img, dir=d, byname=False)

    def do_mount_name(self):
        c, d = self.container(), self.free_dir()
        self.run('mount', ['mount', c, d], c=c, dir=d, byname=True)

    def do_mount_ro(self):
        img, d = self.image_arg(), self.free_dir()
        self.run('mount_ro', ['mount', '--read-only', img, d], img=img, dir=d)

    def do_remount(self):
        """Unmounts one of our containers and mounts it again at once, then writes."""
        mine = [(d, mount_at(d)) for d in self.dirs]
        mine = [(d, m[0][8:]) for d, m in mine
                if m is not None and m[0].startswith('layerfs:') and m[0][8:] in CONTAINERS]
        if not mine:
            return self.do_write()
        d, c = self.r.choice(mine)
        r = self.run('umount', ['umount', d], dir=d, src='layerfs:' + c)
        if r['rc'] == 0:
            self.run('mount', ['mount', c, d], c=c, dir=d, byname=True)
            self.do_write(only=d)

    def do_umount(self):
        mine = [(d, mount_at(d)) for d in self.dirs]
        mine = [(d, m[0]) for d, m in mine if m is not None]
        if mine and self.r.random() < 0.5:
            d, src = self.r.choice(mine)
            self.run('umount', ['umount', d], dir=d, src=src)
        else:
            c = self.container()
            self.run('umount', ['umount', c], c=c)

    def do_write(self, only=None, burst=False):
        """A session of writes through one of our mounts of a container (`burst`: many
        quick rewrites in place)."""
        cands = []
        for d in [only] if only else self.dirs:
            m = mount_at(d)
            if m and m[0].startswith('layerfs:') and m[0][8:] in CONTAINERS:
                cands.append((d, m))
        if not cands:
            if only:
                return None
            return self.do_mount() if self.r.random() < 0.5 else self.do_mount_name()
        d, (src, _, dev) = self.r.choice(cands)
        c = src[8:]
        t0 = now()
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            self.rec('write', c=c, dir=d, t0=t0, t1=now(), ops=[], abort=f'open: {ename(e)}')
            return
        ops = []
        abort = None
        try:
            m = mount_at(d)
            if os.fstat(fd).st_dev != dev or m is None or m[0] != src or m[2] != dev:
                abort = 'not that mount any more'
            else:
                for _ in range(self.r.randint(12, 24) if burst else self.r.randint(2, 10)):
                    k = self.r.randrange(SLOTS)
                    self.seq += 1
                    q = self.seq
                    name = slot_name(self.w, k)
                    op = {'slot': k, 'q': q, 't0': now()}
                    try:
                        x = self.r.uniform(0.4, 0.45) if burst else self.r.random()
                        if x < 0.18:
                            op['op'] = 'unlink'
                            os.unlink(name, dir_fd=fd)
                        elif x < 0.45:
                            # Rewritten in place by one write(2): a snapshot holds the
                            # old bytes, an empty file, or the new bytes, never a mix.
                            op['op'] = 'inplace'
                            n = op['n'] = self.r.choice([60, 700, 4000, 30000])
                            f = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644,
                                        dir_fd=fd)
                            try:
                                os.write(f, content(self.w, c, q, n))
                            finally:
                                os.close(f)
                        else:
                            op['op'] = 'write'
                            n = self.r.choice([60, 700, 4000, 30000, 30000, 300000])
                            if self.r.random() < 0.03:
                                n = 4 << 20
                            op['n'] = n
                            data = content(self.w, c, q, n)
                            tmp = '.t-' + name
                            f = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644,
                                        dir_fd=fd)
                            try:
                                half = len(data) // 2
                                os.write(f, data[:half])
                                os.write(f, data[half:])
                            finally:
                                os.close(f)
                            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
                        op['res'] = 'ok'
                    except OSError as e:
                        op['res'] = ename(e)
                    op['t1'] = now()
                    ops.append(op)
                    if op['res'] not in ('ok', 'ENOENT'):
                        abort = f'{op["op"]}: {op["res"]}'
                        break
                    if self.r.random() < 0.3 and not burst:
                        time.sleep(self.r.uniform(0, 0.03))
        finally:
            os.close(fd)
        self.rec('write', c=c, dir=d, t0=t0, t1=now(), ops=ops, abort=abort)

    def do_commit(self):
        c = self.container()
        args = ['commit', c]
        name = None
        if self.r.random() < 0.7:
            name = self.r.choice(TAGS)
            args.append(name)
        r = self.run('commit', args, kill=self.kill_after('commit'), c=c, name=name)
        self.after_commit(r)

    def after_commit(self, r):
        """Keeps the top layer a commit made, read from the store at once."""
        if r['rc'] == 0 and not r['killed']:
            iid = r['out'].strip().splitlines()[-1] if r['out'].strip() else ''
            r['image'] = iid
            if iid.startswith('sha256:'):
                self.ids.append(iid)
                r['snap'] = snapshot_commit(iid)

    def do_commit_race(self):
        """Issue 19, defect 3: a commit of one of our mounted containers is stopped
        midway while we unmount the container, mount it again and write to it, and goes
        on while we write. Its layer must still be one snapshot (or the commit fail
        cleanly). The stop is bounded, as a busy machine's is: a commit that already
        holds the container makes the unmount wait for it (that is the product keeping
        the snapshot whole), so it must get to run again while the unmount waits, or the
        two would wait for each other until the unmount gives up."""
        mine = [(d, mount_at(d)) for d in self.dirs]
        mine = [(d, m[0][8:]) for d, m in mine
                if m is not None and m[0].startswith('layerfs:') and m[0][8:] in CONTAINERS]
        if not mine:
            return self.do_commit()
        d, c = self.r.choice(mine)
        h = self.start('commit', ['commit', c])
        try:
            h['p'].wait(timeout=self.r.uniform(0.003, 0.06))
        except subprocess.TimeoutExpired:
            h['p'].send_signal(signal.SIGSTOP)
            stopped = now()
            # Stopped for a while (or until we have unmounted and mounted again), then,
            # while we go on, the commit runs in short slices: its reading of the layer
            # spans our unmount, mount and writes (a commit that holds writes is not
            # bothered by that).
            done, remounted = threading.Event(), threading.Event()
            rs = random.Random(self.r.random())
            stop_for = rs.uniform(0.3, 1.5)

            def stutter():
                remounted.wait(timeout=stop_for)
                while not done.is_set():
                    h['p'].send_signal(signal.SIGCONT)
                    time.sleep(rs.uniform(0.0005, 0.003))
                    h['p'].send_signal(signal.SIGSTOP)
                    time.sleep(rs.uniform(0.003, 0.012))
                h['p'].send_signal(signal.SIGCONT)
            t = threading.Thread(target=stutter)
            t.start()
            try:
                r = self.run('umount', ['umount', d], dir=d, src='layerfs:' + c)
                if r['rc'] == 0:
                    self.run('mount', ['mount', c, d], c=c, dir=d, byname=True)
                remounted.set()
                self.do_write(only=d, burst=True)
            finally:
                remounted.set()
                done.set()
                t.join()
            h['paused'].append([round(stopped - h['t0'], 3), round(now() - stopped, 3)])
        r = self.finish(h, c=c, name=None, race=True)
        self.after_commit(r)

    def do_diff(self):
        c = self.container()
        self.run('diff', ['diff', c], c=c)

    def do_save(self):
        img = self.r.choice(TAGS) if self.r.random() < 0.85 else self.image_arg()
        fmt = self.r.choice(['docker-archive', 'docker-archive', 'oci', 'oci-archive'])
        out = f'{self.out}/save-{fmt}'
        if os.path.isdir(out):
            shutil.rmtree(out)
        args = ['save', img, '-o', out] + (['--format', fmt] if fmt != 'docker-archive' else [])
        r = self.run('save', args, kill=self.kill_after('save'), img=img, fmt=fmt)
        if r['rc'] == 0 and not r['killed']:
            r['verify'] = verify_save(out, fmt)
        if os.path.isdir(out):
            shutil.rmtree(out)
        elif os.path.exists(out):
            os.unlink(out)

    def do_export(self):
        c = self.container()
        out = f'{self.out}/export.tar'
        r = self.run('export', ['export', c, '-o', out], kill=self.kill_after('export'), c=c)
        if r['rc'] == 0 and not r['killed']:
            r['verify'] = verify_export(out)
        if os.path.exists(out):
            os.unlink(out)

    def do_rm(self):
        c = self.container()
        force = self.r.random() < 0.35
        self.run('rm', ['rm', c] + (['--force'] if force else []),
                 kill=self.kill_after('rm'), c=c, force=force)

    def do_prune(self):
        self.run('prune', ['prune'])

    def do_list(self):
        x = self.r.choice(['images', 'ps', 'ps', 'df', 'inspect'])
        if x == 'images':
            r = self.run('images', ['images', '--json'])
            if r['rc'] == 0:
                try:
                    r['seen'] = sorted({t for i in json.loads(r['out']) for t in i['repo_tags']})
                except ValueError as e:
                    r['bad'] = f'images --json: {e}'
        elif x == 'ps':
            r = self.run('ps', ['ps', '-a', '--json'])
            if r['rc'] == 0:
                try:
                    r['seen'] = {c['name']: c['state'] for c in containers_in(r['out'])}
                except ValueError as e:
                    r['bad'] = f'ps --json: {e}'
        elif x == 'df':
            self.run('df', ['df', '-v'])
        else:
            img = self.r.choice(TAGS)
            self.run('inspect', ['inspect', img], img=img)

    def main(self):
        for d in self.dirs + [self.out]:
            os.makedirs(d, exist_ok=True)
        while now() < self.deadline:
            self.step()


def snapshot_commit(iid):
    """The top layer of committed image iid, read from the store right after the commit:
    {name: entry} for the names a writer uses ('vanished' when rmi/prune was faster)."""
    try:
        with open(f'{store()}/images/{iid[7:]}/image.json') as f:
            top = json.load(f)['layers'][-1]['diff_id']
        return {'diff_id': top, 'entries': read_layer_top(f'{store()}/layers/{top[7:]}/diff')}
    except (OSError, ValueError, KeyError, IndexError) as e:
        return {'vanished': repr(e)}


def read_layer_top(path):
    """Root entries of a layer or writable layer directory: {name: [kind, parse]}."""
    out = {}
    for name in os.listdir(path):
        p = f'{path}/{name}'
        st = os.lstat(p)
        if S.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            out[name] = ['whiteout', None, 0]
        elif S.S_ISREG(st.st_mode):
            with open(p, 'rb') as f:
                data = f.read()
            if name.startswith('.wh.'):
                out[name[4:]] = ['whiteout', None, 0]
                continue
            out[name] = ['file', parse_content(data), len(data)]
        else:
            out[name] = ['other', oct(st.st_mode), 0]
    return out


def verify_save(out, fmt):
    """Problems with a saved image (blob digests, config), and its config's id."""
    blobs = {}
    try:
        if fmt == 'oci':
            for dp, _, fn in os.walk(f'{out}/blobs/sha256'):
                for n in fn:
                    with open(os.path.join(dp, n), 'rb') as f:
                        blobs[n] = f.read()
            with open(f'{out}/index.json', 'rb') as f:
                index = json.load(f)
        else:
            with tarfile.open(out) as t:
                for m in t.getmembers():
                    if m.isfile() and m.name.startswith('blobs/sha256/'):
                        blobs[m.name[13:]] = t.extractfile(m).read()
                index = json.load(t.extractfile('index.json'))
        bad = [f'blob {n} has sha256 {sha(b)}' for n, b in blobs.items() if sha(b) != n]
        ids = []
        for m in index['manifests']:
            man = json.loads(blobs[m['digest'][7:]])
            cfg = man['config']['digest'][7:]
            ids.append('sha256:' + cfg)
            config = json.loads(blobs[cfg])
            if len(config['rootfs']['diff_ids']) != len(man['layers']):
                bad.append(f'{cfg}: {len(man["layers"])} layers for '
                           f'{len(config["rootfs"]["diff_ids"])} diff_ids')
            for layer in man['layers']:
                if layer['digest'][7:] not in blobs:
                    bad.append(f'layer blob {layer["digest"]} missing')
        return {'bad': bad, 'ids': ids}
    except (OSError, ValueError, KeyError, tarfile.TarError) as e:
        return {'bad': [f'unreadable: {e!r}'], 'ids': []}


def verify_export(out):
    """The writers' files at their final names in an exported container, as
    {name: [parse, size]} (the checker judges them), and problems reading it."""
    bad, files = [], {}
    try:
        with tarfile.open(out) as t:
            for m in t.getmembers():
                name = m.name[2:] if m.name.startswith('./') else m.name
                sm = SLOT.match(name)
                if not sm or sm.group(1) or not m.isfile():
                    continue
                data = t.extractfile(m).read()
                files[name] = [parse_content(data), len(data)]
    except (OSError, tarfile.TarError) as e:
        bad.append(f'unreadable: {e!r}')
    return {'bad': bad, 'files': files}


def worker_main(w, sources, ids, deadline):
    wk = Worker(w, sources, ids, deadline)
    try:
        wk.main()
    finally:
        for r in wk.log:   # (listings were parsed whole; the log keeps their ends)
            for k in ('out', 'err'):
                if k in r:
                    r[k] = r[k][-4000:]
        with open(f'{B}/logs/w{w}.json', 'w') as f:
            json.dump(wk.log, f)


# ---------------------------------------------------------------- checker

ERR = re.compile(r'^layerfs: error: (.*)$', re.M)
QUOTED = r'"([^" ]+)'
# (kind, regex of the error message, what it says): every failure must match one.
ALLOWED = [
    ('tag', r'unknown image ' + QUOTED, 'absent-image'),
    ('tag', r'the name (\S+) is taken by image', 'name-taken'),
    ('rmi', r'unknown image ' + QUOTED, 'absent-image'),
    ('rmi', r'unable to remove (\S+): its image \S+ is in use by', 'in-use'),
    ('rmi', r'unable to remove image \S+: in use by', 'in-use'),
    ('rmi', r'image \S+ is referenced by several names', 'several-names'),
    ('mount', r'unknown image ' + QUOTED, 'absent-image'),
    ('mount', r'container (\S+) was made from image \S+, not ', 'other-image'),
    ('mount', r'container (\S+) is already mounted', 'mounted'),
    ('mount', r'is already a mount point', 'dir-taken'),
    ('mount', r'a container named (\S+) already exists', 'exists-race'),
    ('mount_ro', r'unknown image ' + QUOTED, 'absent-image'),
    ('mount_ro', r'is already a mount point', 'dir-taken'),
    ('umount', r'container (\S+) is not mounted', 'unmounted'),
    ('umount', r'is busy \(a process uses it\)', 'busy'),
    ('umount', r'no container or mount point named (\S+) ', 'absent-container'),
    ('umount', r'is not a mount point', 'dir-free'),
    ('umount', r'is not mounted$', 'dir-free'),
    ('commit', r'no such container: (\S+)', 'absent-container'),
    ('commit', r'the name (\S+) is taken by image', 'name-taken'),
    ('diff', r'no such container: (\S+)', 'absent-container'),
    ('export', r'no such container: (\S+)', 'absent-container'),
    ('save', r'unknown image ' + QUOTED, 'absent-image'),
    ('inspect', r'unknown image ' + QUOTED, 'absent-image'),
    ('rm', r'no such container: (\S+)', 'absent-container'),
    ('rm', r'container (\S+) is mounted( at \S+)?: unmount it first', 'mounted'),
    ('rm', r'is busy \(a process uses it\)', 'busy'),
]
OK_STDERR = [
    r'^layerfs: waiting for the store lock ',
    # A command that meets a container held for a moment by another one waits for it (in
    # a serial order the other one comes first) and says so.
    r'^layerfs: waiting for (the|another) commit of container \S+ to finish$',
    r'^layerfs: waiting for container \S+: (its mount daemon is starting|its mount has ended '
    r'and its daemon is letting go of it|another layerfs command is mounting or removing it)$',
    # Run as a plain user: the fixture's file capability cannot be kept (warned).
    r'^\[\S+ WARN  layerfs::store::unpack::create\] entry "data/cap-file": xattr '
    r'security.capability needs privileges \(rootless\), dropped; a load in a user namespace '
    r'keeps it \(unshare --map-auto --map-root-user\)$',
]


def classify_error(r):
    """What a failed command's message says (one of ALLOWED's words), or None."""
    msgs = ERR.findall(r['err'])
    if not msgs:
        return None
    msg = msgs[-1]
    for kind, rx, what in ALLOWED:
        if kind == r['kind'] and re.search(rx, msg):
            return what
    return None


def known_defect(r):
    """Which of issue 19's known defects an unexplained failure looks like, if any."""
    if r['kind'] == 'commit' and re.search(
            r'not that inode any more|shrank while it was read|does not hold writes', r['err']):
        return (' [a commit that does not hold its container still while it is unmounted, '
                'mounted again and written: issue 19, defect 3]')
    return ''


# An export reads a mounted container while its writers write (as `docker export` of a
# running container does; only commit holds writes): a file rewritten in place meanwhile
# may shrink under it, and the tar says so (c_export checks the rest of such a file).
EXPORT_STDERR = [
    r'^\[\S+ WARN  layerfs::tar_writer\] \S+: the file shrank by \d+ bytes while it was '
    r'read; padded with zeros$',
]


def stray_stderr(r):
    lines = [ln for ln in r['err'].splitlines() if ln.strip()]
    if r['rc'] != 0:
        lines = [ln for ln in lines if not ln.startswith('layerfs: error: ')]
    ok = OK_STDERR + (EXPORT_STDERR if r['kind'] == 'export' else [])
    return [ln for ln in lines if not any(re.match(p, ln) for p in ok)]


def is_tag(ref):
    return ref in TAGS


class Checker:
    def __init__(self, recs, sources, ids):
        self.recs = sorted(recs, key=lambda r: r['t0'])
        self.sess = self.sessions()
        self.sources, self.ids = sources, ids
        self.violations = []
        self.makers = {}    # key -> [(role, rec)]
        self.reqs = {}      # key -> [(need, rec, why)]

    def bad(self, what, *recs):
        self.violations.append((what, [r for r in recs if r]))

    def make(self, key, role, r):
        self.makers.setdefault(key, []).append((role, r))

    def need(self, key, value, r, why):
        self.reqs.setdefault(key, []).append((value, r, why))

    # -- per command
    def outcome(self, r):
        """'ok', 'fail' (allowed message), 'maybe' (killed) or None (reported)."""
        if r['kind'] == 'write':
            return 'ok'
        if r.get('hung'):
            self.bad(f'hung: still running after {HANG} s (killed)', r)
            return 'maybe'
        if r['killed']:
            return 'maybe'
        if 'panicked' in r['err'] or 'RUST_BACKTRACE' in r['err']:
            self.bad('panic', r)
            return None
        stray = stray_stderr(r)
        if stray:
            self.bad(f'unexpected stderr: {stray[0]!r}', r)
        if r['rc'] == 0:
            return 'ok'
        if r['rc'] != 1:
            self.bad(f'exit status {r["rc"]}', r)
            return None
        what = classify_error(r)
        if what is None:
            self.bad('an error no serial order explains (not in the allow-list)'
                     + known_defect(r), r)
            return None
        r['what'] = what
        return 'fail'

    def collect(self):
        for r in self.recs:
            o = self.outcome(r)
            r['outcome'] = o
            # A command that failed in a way no serial order explains (reported) may
            # still have done part of its work: its effects count as a killed one's.
            getattr(self, 'c_' + r['kind'])(r, o or 'maybe')

    def c_load(self, r, o):
        if o == 'ok':
            for ln in r['out'].splitlines():
                if ln.startswith('Loaded image: '):
                    self.make(('tag', ln[14:].strip()), 'T', r)
        else:
            for n in r['names']:
                self.make(('tag', n), 'T?', r)

    def c_tag(self, r, o):
        if o == 'ok':
            self.make(('tag', r['dst']), 'T', r)
            if is_tag(r['img']):
                self.need(('tag', r['img']), True, r, 'tag SOURCE succeeded')
        elif r.get('what') == 'absent-image' and is_tag(r['img']):
            self.need(('tag', r['img']), False, r, 'unknown image')
        elif r.get('what') == 'name-taken':
            self.need(('tag', r['dst']), True, r, 'name taken')

    def c_rmi(self, r, o):
        if o == 'ok':
            untagged = [ln[10:].strip() for ln in r['out'].splitlines()
                        if ln.startswith('Untagged: ')]
            for t in untagged:
                self.make(('tag', t), 'F', r)
                self.need(('tag', t), True, r, 'rmi untagged it')
            if is_tag(r['ref']) and r['ref'] not in untagged:
                self.bad(f'rmi {r["ref"]} succeeded without untagging it', r)
        else:
            if is_tag(r['ref']):
                self.make(('tag', r['ref']), 'F?', r)
                if r.get('what') == 'absent-image':
                    self.need(('tag', r['ref']), False, r, 'unknown image')
                elif r.get('what') == 'in-use':
                    self.need(('tag', r['ref']), True, r, 'in use')

    def c_mount(self, r, o):
        c = r['c']
        ex, mo = ('exists', c), ('mounted', c)
        if o == 'ok':
            if r['out'].strip() != c:
                self.bad(f'mount printed {r["out"].strip()!r}, not the container {c}', r)
            if not r['byname']:
                self.make(ex, 'T', r)
                if is_tag(r['img']):
                    self.need(('tag', r['img']), True, r, 'mounted that image')
            else:
                self.need(ex, True, r, 'mounted it by name')
            self.need(mo, False, r, 'mounted it')
            self.make(mo, 'T', r)
            return
        self.make(mo, 'T?', r)
        self.make(mo, 'F?', r)
        if not r['byname']:
            self.make(ex, 'T?', r)
            self.make(ex, 'F?', r)
        what = r.get('what')
        if what == 'absent-image':
            if r['byname']:
                self.need(ex, False, r, 'mount by name: unknown image (no such container)')
            elif is_tag(r['img']):
                self.need(('tag', r['img']), False, r, 'unknown image')
        elif what == 'mounted':
            self.need(mo, True, r, 'already mounted')
        elif what == 'other-image':
            self.need(ex, True, r, 'made from another image')
        elif what == 'exists-race':
            self.bad('mount --name C failed "already exists": serially it would have mounted '
                     'the existing container', r)

    def c_mount_ro(self, r, o):
        if o == 'ok' and is_tag(r['img']):
            self.need(('tag', r['img']), True, r, 'mounted that image')
        elif o == 'fail' and r.get('what') == 'absent-image' and is_tag(r['img']):
            self.need(('tag', r['img']), False, r, 'unknown image')

    def c_umount(self, r, o):
        c = r.get('c')
        if c is None:
            src = r.get('src') or ''
            if src.startswith('layerfs:') and src[8:] in CONTAINERS:
                c = src[8:]
            else:
                return
            byname = False
        else:
            byname = True
        mo, ex = ('mounted', c), ('exists', c)
        if o == 'ok':
            self.make(mo, 'F', r)
            self.need(mo, True, r, 'unmounted it')
            if byname:
                self.need(ex, True, r, 'unmounted it by name')
        elif o == 'maybe' or r.get('what') not in ('busy', 'dir-free'):
            self.make(mo, 'F?', r)
        if o == 'fail':
            what = r['what']
            if what == 'unmounted':
                self.need(mo, False, r, 'not mounted')
                self.need(ex, True, r, 'not mounted (exists)')
            elif what == 'absent-container' and byname:
                self.need(ex, False, r, 'no such container')
            elif what == 'busy':
                self.need(mo, True, r, 'busy')

    def c_write(self, r, o):
        pass

    def c_commit(self, r, o):
        c, name = r['c'], r['name']
        ex = ('exists', c)
        if o == 'ok':
            self.need(ex, True, r, 'committed it')
            if name:
                self.need(('tag', name), False, r, 'commit named the new image')
                self.make(('tag', name), 'T', r)
        elif o == 'maybe':
            if name:
                self.make(('tag', name), 'T?', r)
        else:
            if r.get('what') == 'absent-container':
                self.need(ex, False, r, 'no such container')
            elif r.get('what') == 'name-taken':
                self.need(('tag', name), True, r, 'name taken')

    def c_diff(self, r, o):
        ex = ('exists', r['c'])
        if o == 'ok':
            self.need(ex, True, r, 'diffed it')
            bad = [ln for ln in r['out'].splitlines() if not re.match(r'^[ACD] /', ln)]
            if bad:
                self.bad(f'diff printed {bad[0]!r}', r)
        elif o == 'fail':
            self.need(ex, False, r, 'no such container')

    def c_export(self, r, o):
        ex = ('exists', r['c'])
        if o == 'ok':
            self.need(ex, True, r, 'exported it')
            for b in r['verify']['bad']:
                self.bad(f'export: {b}', r)
            # Whole files: an export reads a mounted container while it is written, so
            # only a file rewritten in place meanwhile may be caught half-written.
            for name, (p, size) in r['verify']['files'].items():
                m = SLOT.match(name)
                if (p is None or not p[4]) and not self.inplace_during(
                        r, int(m.group(2)), int(m.group(3)), self.sess) and not (
                        size == 0 and self.empty_in_image(name, r)):
                    what = 'bytes no single write made' if p is None else \
                        f'part of write {p[0]}/{p[2]}'
                    self.bad(f'export of {r["c"]}: {name} holds {what} ({size} bytes), and '
                             f'no rewrite of it in place overlapped the export', r)
        elif o == 'fail':
            self.need(ex, False, r, 'no such container')

    def c_save(self, r, o):
        if o == 'ok':
            if is_tag(r['img']):
                self.need(('tag', r['img']), True, r, 'saved it')
            for b in r['verify']['bad']:
                self.bad(f'save: {b}', r)
        elif o == 'fail' and is_tag(r['img']):
            self.need(('tag', r['img']), False, r, 'unknown image')

    def c_inspect(self, r, o):
        if o == 'ok':
            self.need(('tag', r['img']), True, r, 'inspected it')
        elif o == 'fail':
            self.need(('tag', r['img']), False, r, 'unknown image')

    def c_rm(self, r, o):
        c = r['c']
        ex, mo = ('exists', c), ('mounted', c)
        if o == 'ok':
            if r['out'].strip() != c:
                self.bad(f'rm printed {r["out"].strip()!r}', r)
            self.need(ex, True, r, 'removed it')
            self.make(ex, 'F', r)
            self.make(mo, 'F', r)
            if not r['force']:
                self.need(mo, False, r, 'removed it without --force')
        elif o == 'maybe':
            self.make(ex, 'F?', r)
            self.make(mo, 'F?', r)
        else:
            if r['force']:
                self.make(mo, 'F?', r)
            if r.get('what') == 'absent-container':
                self.need(ex, False, r, 'no such container')
            elif r.get('what') == 'mounted':
                self.need(mo, True, r, '"is mounted"')
            elif r.get('what') == 'busy':
                self.need(mo, True, r, 'busy')

    def c_prune(self, r, o):
        pass

    def c_df(self, r, o):
        pass

    def c_images(self, r, o):
        if o == 'ok' and 'seen' in r:
            for t in TAGS:
                self.need(('tag', t), t in r['seen'], r, 'images listed it' if t in r['seen']
                          else 'images did not list it')
        if r.get('bad'):
            self.bad(r['bad'], r)

    def c_ps(self, r, o):
        if o == 'ok' and 'seen' in r:
            for c in CONTAINERS:
                st = r['seen'].get(c)
                self.need(('exists', c), st is not None, r,
                          'ps -a listed it' if st else 'ps -a did not list it')
                if st == 'stale':
                    self.bad(f'ps -a: {c} is stale (its daemon died)', r)
                elif st is not None:
                    self.need(('mounted', c), st == 'mounted', r, f'ps -a: {st}')
        if r.get('bad'):
            self.bad(r['bad'], r)

    # -- the serial-order checks
    def check_states(self):
        for key, reqs in self.reqs.items():
            makers = self.makers.get(key, [])
            t_any = [m for role, m in makers if role in ('T', 'T?')]
            f_any = [m for role, m in makers if role in ('F', 'F?')]
            t_ok = [m for role, m in makers if role == 'T']
            f_ok = [m for role, m in makers if role == 'F']
            what = f'{key[0]}({key[1]})'
            for value, x, why in reqs:
                if value:
                    if not any(m is not x and m['t0'] < x['t1'] for m in t_any):
                        self.bad(f'{what} must hold ({why}), but nothing could have made it '
                                 f'hold before', x)
                        continue
                    for f in f_ok:
                        if f is x or f['t1'] >= x['t0']:
                            continue
                        if not any(m is not x and m['t1'] > f['t0'] and m['t0'] < x['t1']
                                   for m in t_any):
                            racing = [m for m in self.recs if key[0] == 'exists'
                                      and m['kind'] == 'mount' and m.get('byname')
                                      and m['c'] == key[1] and m.get('outcome') == 'ok'
                                      and m['t1'] > f['t0'] and m['t0'] < f['t1']]
                            hint = (': a `mount C DIR` by name that overlapped the removal '
                                    'succeeded and brought C back (issue 19, defect 8)'
                                    if racing else '')
                            self.bad(f'{what} must hold ({why}), but the first command ended it '
                                     f'before and nothing could have made it hold since{hint}',
                                     f, *racing, x)
                            break
                else:
                    for t in t_ok:
                        if t is x or t['t1'] >= x['t0']:
                            continue
                        if not any(m is not x and m['t1'] > t['t0'] and m['t0'] < x['t1']
                                   for m in f_any):
                            self.bad(f'{what} must not hold ({why}), but the first command made '
                                     f'it hold before and nothing could have ended it since', t, x)
                            break
        # Two mounts of one container that overlap need an unmount between them.
        for key, makers in self.makers.items():
            if key[0] != 'mounted':
                continue
            t_ok = sorted((m for role, m in makers if role == 'T'), key=lambda m: m['t0'])
            f_any = [m for role, m in makers if role in ('F', 'F?')]
            for i, a in enumerate(t_ok):
                for b in t_ok[i + 1:]:
                    if b['t0'] >= a['t1']:
                        break
                    lo, hi = min(a['t0'], b['t0']), max(a['t1'], b['t1'])
                    if not any(u['t1'] > lo and u['t0'] < hi for u in f_any):
                        self.bad(f'two mounts of container {key[1]} overlap and both succeeded '
                                 f'with no unmount between them', a, b)

    # -- files: sessions, commits, containers
    def sessions(self):
        """Writer sessions, each op tagged with its session."""
        out = [r for r in self.recs if r['kind'] == 'write' and r['ops']]
        for s in out:
            for op in s['ops']:
                op['session'] = s['id']
                op['w'] = s['w']
                op['c'] = s['c']
        return out

    def check_commits(self, sessions):
        ops_by = {}
        for s in sessions:
            for op in s['ops']:
                ops_by[(op['w'], op['q'])] = (s, op)
        for r in self.recs:
            if r['kind'] != 'commit' or r.get('outcome') != 'ok' or 'snap' not in r:
                continue
            snap = r['snap']
            if 'entries' not in snap:
                continue
            c = r['c']
            top = {}
            for name, (kind, p, size) in snap['entries'].items():
                m = SLOT.match(name)
                if not m:
                    self.bad(f'commit: layer holds {name!r}, which nobody wrote', r)
                    continue
                if kind == 'whiteout':
                    continue
                if m.group(1) and kind == 'file':
                    if p is not None and p[1] != c:
                        self.bad(f'commit of {c}: {name} was written to container {p[1]}', r)
                    continue   # (a file being written: any prefix of it)
                if kind == 'file' and size == 0 and self.inplace_during(
                        r, int(m.group(2)), int(m.group(3)), sessions):
                    # (truncated by a rewrite in place, not yet written: unknown)
                    top[(int(m.group(2)), int(m.group(3)))] = None
                    continue
                if kind == 'file' and p is None:
                    self.bad(f'commit of {c} is not a snapshot: {name} holds bytes no single '
                             f'write made ({size} bytes)', r)
                    continue
                if kind != 'file' or p is None:
                    self.bad(f'commit: layer holds {name!r} ({kind}) that is no writer\'s file', r)
                    continue
                w, pc, q, n, whole = p
                got = ops_by.get((w, q))
                if pc != c:
                    self.bad(f'commit of {c}: {name} was written to container {pc}', r,
                             got and got[0])
                    continue
                if got is None or got[1]['c'] != c or got[1]['t0'] >= r['t1']:
                    self.bad(f'commit of {c}: {name} holds write {w}/{q}, which was not made '
                             f'to {c} before the commit ended', r)
                    continue
                if not m.group(1):
                    if not whole:
                        self.bad(f'commit of {c} is not a snapshot: {name} holds part of '
                                 f'write {w}/{q}', r, got[0])
                        continue
                    if int(m.group(2)) != w or int(m.group(3)) != got[1]['slot']:
                        self.bad(f'commit of {c}: {name} holds the data of another file', r)
                        continue
                    top[(w, int(m.group(3)))] = (q, got)
            self.cut(r, c, top, ops_by)

    def empty_in_image(self, name, r):
        """True when a commit that ended before command r ended made a layer holding file
        `name` empty (a snapshot taken while a rewrite in place had truncated it, not yet
        written): a container of that image, or of one above it, shows it so."""
        return any(c['kind'] == 'commit' and c['t1'] < r['t1']
                   and (c.get('snap') or {}).get('entries', {}).get(name, [None, None, -1])[2]
                   == 0 for c in self.recs)

    def inplace_during(self, r, w, k, sessions):
        """True when writer w rewrote its file k in place while command r ran."""
        return any(op['op'] == 'inplace' and op['w'] == w and op['slot'] == k
                   and op['t0'] < r['t1'] and op['t1'] > r['t0']
                   for s in sessions for op in s['ops'])

    def cut(self, r, c, top, ops_by):
        """Per writer: the layer must be the state after that writer's newest write in it."""
        by_w = {}
        for (w, k), v in top.items():
            if v is not None:
                by_w.setdefault(w, []).append((v[0], k, v[1]))
        for w, files in by_w.items():
            q_max, _, (sess, _) = max(files)
            ops = [op for op in sess['ops'] if op['q'] <= q_max]
            # (a removal after it, in this session or a later one, may be in the snapshot)
            later = [op for (w2, q2), (_, op) in ops_by.items()
                     if w2 == w and op['c'] == c and q2 > q_max]
            for k in range(SLOTS):
                mine = [op for op in ops if op['slot'] == k]
                if not mine or any(op['res'] not in ('ok', 'ENOENT') for op in mine):
                    continue
                last = mine[-1]
                name = slot_name(w, k)
                if (w, k) in top and top[(w, k)] is None:
                    continue
                have = top.get((w, k))
                if last['op'] in ('write', 'inplace'):
                    if have is None:
                        if any(op['slot'] == k and op['op'] == 'unlink' for op in later):
                            continue
                        self.bad(f'commit of {c} is not a snapshot: writer {w} wrote {name} '
                                 f'(write {last["q"]}) before its write {q_max}, which the '
                                 f'layer holds, but the layer lacks {name}', r, sess)
                    elif have[0] != last['q']:
                        self.bad(f'commit of {c} is not a snapshot: the layer holds write '
                                 f'{q_max} of writer {w} but an older version of {name} '
                                 f'(write {have[0]}, not {last["q"]})', r, sess)
                elif have is not None and have[0] < last['q']:
                    self.bad(f'commit of {c} is not a snapshot: the layer holds write {q_max} '
                             f'of writer {w} and {name}, which it removed before that', r, sess)

    def expected_files(self, c, sessions):
        """Per (writer, slot) of container c: the write number its writable layer must hold
        (None: no file), or '?' when the log cannot say (a removal or a write of unknown
        outcome, or one that may have raced a removal of the container). The last change
        of each file counts, unless `rm c` removed the container after it."""
        rms = [r for r in self.recs if r['kind'] == 'rm' and r['c'] == c
               and r.get('outcome') != 'fail']   # (ok, killed, or failing unexplained)
        sure = [r for r in rms if r['outcome'] == 'ok']
        last = {}
        for s in sessions:
            if s['c'] == c:
                for op in s['ops']:
                    last[(op['w'], op['slot'])] = op
        exp = {}
        for key, op in last.items():
            if any(rm['t0'] > op['t1'] for rm in sure):
                exp[key] = None
            elif any(rm['t1'] > op['t0'] for rm in rms) or op['res'] not in ('ok', 'ENOENT'):
                exp[key] = '?'
            else:
                exp[key] = op['q'] if op['op'] in ('write', 'inplace') else None
        return exp

    def report(self, per_kind=2):
        """Violations by kind (names and numbers taken out), then up to `per_kind` of
        each kind in full, with the commands on the same names around them."""
        print(f'{len(self.violations)} violation(s)')
        kinds = {}
        for what, recs in self.violations:
            msg = ERR.findall(recs[-1]['err']) if recs and what.startswith('an error') else []
            k = re.sub(r'\b(c\d|w\d+-s\d+|[0-9a-f]{12,64}|\d+)\b', '#',
                       f'{what}: {msg[-1]}' if msg else what)
            k = re.sub(r'/\S+', '/…', k)[:160]
            kinds.setdefault(k, []).append((what, recs))
        for k, vs in sorted(kinds.items(), key=lambda x: -len(x[1])):
            print(f'  {len(vs):4} × {k}')
        for k, vs in sorted(kinds.items(), key=lambda x: -len(x[1])):
            for what, recs in vs[:per_kind]:
                print(f'\nVIOLATION: {what}')
                for r in recs:
                    print('  >> ' + show(r))
                if not recs:
                    continue
                lo = min(r['t0'] for r in recs) - 0.3
                hi = max(r['t1'] for r in recs) + 0.1
                around = [x for x in self.recs if x['t1'] > lo and x['t0'] < hi
                          and x not in recs and relevant(x, recs)]
                if around:
                    print('  around it:')
                    for x in around[:14]:
                        print('     ' + show(x))
                    if len(around) > 14:
                        print(f'     … {len(around) - 14} more')


def names_of(r):
    """The container and tag names a command is about."""
    out = {r.get(k) for k in ('c', 'img', 'ref', 'dst', 'name')} - {None}
    if (r.get('src') or '').startswith('layerfs:'):
        out.add(r['src'][8:])
    return out


def relevant(x, recs):
    """Commands worth showing around a violation: those naming the same container or tag."""
    names = set()
    for r in recs:
        names |= names_of(r)
    return bool(names & names_of(x)) or x['kind'] == 'prune'


T_BASE = [0.0]


def show(r):
    t = f'[{r["t0"] - T_BASE[0]:8.3f} {r["t1"] - T_BASE[0]:8.3f}] {r["id"]:>7}'
    if r['kind'] == 'write':
        ops = ' '.join(f'{op["op"][0]}{op["slot"]}#{op["q"]}'
                       + ('' if op['res'] == 'ok' else f'({op["res"]})') for op in r['ops'])
        return f'{t} writes to {r["c"]} at {r["dir"]}: {ops}' + (
            f' [aborted: {r["abort"]}]' if r.get('abort') else '')
    res = 'KILLED' if r.get('killed') else ('HUNG' if r.get('hung') else f'rc={r["rc"]}')
    if r.get('paused'):
        res += ' (stopped ' + ', '.join(f'{d:.2f} s at +{a:.2f} s' for a, d in r['paused']) + ')'
    line = f'{t} layerfs {" ".join(r["args"])} -> {res}'
    out = r['out'].strip().replace('\n', ' | ')
    err = r['err'].strip().replace('\n', ' | ')
    if out:
        line += f'  out: {out[:160]}'
    if err:
        line += f'  err: {err[:300]}'
    if r.get('src'):
        line += f'  (mount there: {r["src"]})'
    return line


# ---------------------------------------------------------------- the end

def containers_in(ps_json):
    """The containers of a `ps -a --json` listing (read-only mounts of images are rows
    too, without a name; the final sweep unmounts them by mount point)."""
    return [c for c in json.loads(ps_json) if c.get('name')]


def lf(args, root=None, check=False, timeout=HANG):
    p = subprocess.run([BIN, '--root', root or store()] + args, capture_output=True,
                       timeout=timeout, cwd=f'{B}/cwd')
    out, err = p.stdout.decode(errors='replace'), p.stderr.decode(errors='replace')
    if check and p.returncode != 0:
        raise RuntimeError(f'layerfs {" ".join(args)}: rc={p.returncode}: {err.strip()}')
    return p.returncode, out, err


def unmount_all(problems):
    """Unmounts what the workers left (by container, then whatever is left under B), and
    reports any daemon of this store still alive after that (then kills it)."""
    rc, out, err = lf(['ps', '-a', '--json'])
    if rc == 0:
        for c in containers_in(out):
            if c['state'] == 'mounted':
                rc2, _, err2 = lf(['umount', c['name']])
                if rc2 != 0:
                    problems.append(f'final umount {c["name"]}: {err2.strip()}')
            elif c['state'] == 'stale':
                problems.append(f'container {c["name"]} is stale at the end')
    else:
        problems.append(f'final ps -a: {err.strip()}')
    for _ in range(3):
        left = mounts_under(B)
        if not left:
            break
        for mp in sorted(left, key=len, reverse=True):
            src = mount_at(mp)
            rc, _, err = lf(['umount', mp])
            if rc != 0:
                subprocess.run(['umount', '-l', mp], capture_output=True)
                problems.append(f'{mp} ({src and src[0]}) was still mounted and '
                                f'`layerfs umount` failed: {err.strip()}')
    deadline = now() + 10
    while store_daemons() and now() < deadline:
        time.sleep(0.1)
    for pid in store_daemons():
        problems.append(f'mount daemon {pid} of this store still runs with nothing mounted')
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def final_checks(ck, sessions):
    """Whole images and containers at the end; returns problems."""
    P = []
    st = store()
    T_now = now()
    end = {'id': 'final', 'kind': 'final', 't0': T_now, 't1': T_now + 1e6, 'args': [],
           'rc': 0, 'out': '', 'err': ''}
    # -- images
    rc, out, err = lf(['images', '--json'])
    if rc != 0:
        return [f'final images: {err.strip()}']
    images = json.loads(out)
    listed = {i['id'] for i in images}
    on_disk = {'sha256:' + h for h in os.listdir(f'{st}/images') if re.fullmatch('[0-9a-f]{64}', h)}
    if listed != on_disk:
        P.append(f'images lists {sorted(listed)} but images/ holds {sorted(on_disk)}')
    with open(f'{st}/refs.json') if os.path.exists(f'{st}/refs.json') else io.StringIO('{}') as f:
        refs = json.load(f)
    for name, iid in refs.items():
        if iid not in on_disk:
            P.append(f'tag {name} names image {iid}, which is not installed')
    fresh = f'{B}/check/store2'
    mnt = f'{B}/check/mnt'
    os.makedirs(mnt, exist_ok=True)
    used_layers = set()
    for im in images:
        iid = im['id']
        d = f'{st}/images/{iid[7:]}'
        try:
            with open(f'{d}/config.json', 'rb') as f:
                cfg = f.read()
            if 'sha256:' + sha(cfg) != iid:
                P.append(f'image {iid}: config.json has sha256 {sha(cfg)}')
            with open(f'{d}/image.json') as f:
                rec = json.load(f)
        except (OSError, ValueError) as e:
            P.append(f'image {iid}: {e!r}')
            continue
        diff_ids = json.loads(cfg)['rootfs']['diff_ids']
        if [l['diff_id'] for l in rec['layers']] != diff_ids:
            P.append(f'image {iid}: image.json layers differ from the config diff_ids')
        for l in rec['layers']:
            used_layers.add(l['diff_id'])
            ld = f'{st}/layers/{l["diff_id"][7:]}'
            if not (os.path.isfile(f'{ld}/layer.json') and os.path.isdir(f'{ld}/diff')):
                P.append(f'image {iid}: layer {l["diff_id"]} is not installed')
        for t in im['repo_tags']:
            end.setdefault('tags', []).append(t)
        rc, _, err = lf(['inspect', iid])
        if rc != 0:
            P.append(f'inspect {iid}: {err.strip()}')
        arch = f'{B}/check/save.tar'
        rc, _, err = lf(['save', iid, '-o', arch])
        if rc != 0:
            P.append(f'save {iid}: {err.strip()}')
        else:
            rc, out2, err = lf(['load', arch], root=fresh)
            got = out2.strip().splitlines()[-1] if out2.strip() else ''
            if rc != 0 or got != iid:
                P.append(f'save {iid} then load into a fresh store gave {got!r}: {err.strip()}')
            os.unlink(arch)
        rc, _, err = lf(['mount', '--read-only', iid, mnt])
        if rc != 0:
            P.append(f'mount --read-only {iid}: {err.strip()}')
        else:
            try:
                os.listdir(mnt)
            except OSError as e:
                P.append(f'listing the read-only mount of {iid}: {e!r}')
            rc, _, err = lf(['umount', mnt])
            if rc != 0:
                P.append(f'umount of the read-only mount of {iid}: {err.strip()}')
                subprocess.run(['umount', '-l', mnt], capture_output=True)
    # committed images that are still here: their top layer as right after the commit
    for r in ck.recs:
        snap = r.get('snap') or {}
        if r['kind'] == 'commit' and 'entries' in snap and r.get('image') in on_disk:
            try:
                # (through JSON, as the snapshot was)
                now_top = json.loads(json.dumps(
                    read_layer_top(f'{st}/layers/{snap["diff_id"][7:]}/diff')))
            except OSError as e:
                now_top = repr(e)
            if now_top != snap['entries']:
                P.append(f'the layer of committed image {r["image"]} ({r["id"]}) changed since')
    # -- tag states at the end
    for t in TAGS:
        ck.need(('tag', t), t in end.get('tags', []), end, 'the final images listing')
    # -- containers
    rc, out, err = lf(['ps', '-a', '--json'])
    if rc != 0:
        return P + [f'final ps -a: {err.strip()}']
    ps = containers_in(out)
    names = {c['name'] for c in ps}
    on_disk = {n for n in os.listdir(f'{st}/containers')}
    if names != on_disk:
        P.append(f'ps -a lists {sorted(names)} but containers/ holds {sorted(on_disk)}')
    for c in CONTAINERS:
        ck.need(('exists', c), c in names, end, 'the final ps -a')
    for c in ps:
        name = c['name']
        if c['image_id'] not in listed:
            P.append(f'container {name}: its image {c["image_id"]} is not in the store')
        if c['state'] != 'unmounted':
            P.append(f'container {name} is {c["state"]} after everything was unmounted')
        cd = f'{st}/containers/{name}'
        try:
            upper = read_layer_top(f'{cd}/upper')
        except OSError as e:
            P.append(f'container {name}: {e!r}')
            continue
        rc, dout, err = lf(['diff', name])
        if rc != 0:
            P.append(f'diff {name}: {err.strip()}')
        else:
            # (both by path: a file the image has too is `C`, which sorts after `A`)
            want = sorted((('D' if kind == 'whiteout' else 'AC') + ' /' + n
                           for n, (kind, _, _) in upper.items()), key=lambda x: x.split(' ')[1])
            got = sorted((ln for ln in dout.splitlines() if ln.count('/') == 1),
                         key=lambda x: x[2:])
            for g, wnt in zip(got, want):
                if g[0] not in wnt.split(' ')[0] or g[2:] != wnt.split(' ')[1]:
                    P.append(f'diff {name} says {g!r} where its writable layer has {wnt!r}')
                    break
            if len(got) != len(want):
                P.append(f'diff {name} lists {len(got)} top-level changes, its writable layer '
                         f'holds {len(want)}: {got} / {want}')
        rc, _, err = lf(['mount', name, mnt])
        if rc != 0:
            P.append(f'mount {name} {mnt}: {err.strip()}')
        else:
            try:
                seen = set(os.listdir(mnt))
                for n, (kind, _, _) in upper.items():
                    if (kind != 'whiteout') != (n in seen):
                        P.append(f'container {name}: {n} is {kind} in its writable layer but '
                                 f'{"" if n in seen else "not "}in its mount')
            except OSError as e:
                P.append(f'listing the mount of {name}: {e!r}')
            rc, _, err = lf(['umount', name])
            if rc != 0:
                P.append(f'umount {name}: {err.strip()}')
                subprocess.run(['umount', '-l', mnt], capture_output=True)
        # its files against the log
        exp = ck.expected_files(name, sessions)
        ops_by = {(op['w'], op['q']): op for s in sessions for op in s['ops']}
        have = {}
        for n, (kind, p, size) in upper.items():
            m = SLOT.match(n)
            if not m:
                P.append(f'container {name}: {n!r} in its writable layer, written by nobody')
                continue
            if kind == 'whiteout':
                continue
            if m.group(1) and kind == 'file' and p is None:
                continue   # (a temporary file left by a write cut short)
            key = (int(m.group(2)), int(m.group(3)))
            if kind == 'file' and not m.group(1) and exp.get(key) == '?' and (
                    p is None or not p[4]):
                continue   # (a rewrite in place cut short)
            if kind != 'file' or p is None:
                P.append(f'container {name}: {n} is not a writer\'s file ({kind}, {size} '
                         f'bytes)')
                continue
            w, pc, q, _, whole = p
            op = ops_by.get((w, q))
            if pc != name or op is None or op['c'] != name:
                P.append(f'container {name}: {n} holds write {w}/{q} made to container {pc}')
                continue
            if m.group(1):
                continue
            if not whole:
                P.append(f'container {name}: {n} is incomplete (write {w}/{q})')
            have[key] = q
        for key in sorted(set(exp) | set(have)):
            e = exp.get(key)
            if e == '?':
                continue
            if have.get(key) != e:
                P.append(f'container {name}: {slot_name(*key)} holds '
                         f'{"write " + str(have[key]) if key in have else "nothing"}, but the '
                         f'log says {"write " + str(e) if e else "nothing"} (its last completed '
                         f'change since {name} was last created)')
    # -- prune: nothing half-done stays
    rc, out, err = lf(['prune'])
    if rc != 0:
        P.append(f'final prune: {err.strip()}')
    left = os.listdir(f'{st}/tmp')
    if left:
        P.append(f'tmp/ holds {left} after prune')
    for h in os.listdir(f'{st}/layers'):
        if 'sha256:' + h not in used_layers:
            P.append(f'layer {h} is used by no image after prune')
        elif not os.path.isfile(f'{st}/layers/{h}/layer.json'):
            P.append(f'layer {h} has no layer.json')
    left = os.listdir(f'{st}/mounts')
    if left:
        P.append(f'mounts/ holds {left} with nothing mounted, after prune')
    return P


def main():
    os.makedirs(B, exist_ok=True)
    if os.listdir(B):
        raise SystemExit(f'{B} must be empty')
    for d in ['logs', 'mnt', 'out', 'cwd', 'check']:
        os.makedirs(f'{B}/{d}')
    # An empty directory becomes the store at the first command, whichever it is (only a
    # path that does not exist is refused by commands that make no store).
    os.makedirs(store(), mode=0o700)
    sources, ids = build_sources()
    T_BASE[0] = now()
    deadline = now() + SECONDS
    kids = {}
    problems = []
    try:
        for w in range(NWORKERS):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    worker_main(w, sources, ids, deadline)
                except BaseException as e:  # noqa: BLE001 - report anything from the child
                    print(f'worker {w}: {e!r}', flush=True)
                    code = 1
                os._exit(code)
            kids[pid] = w
        hard = deadline + HANG + 60
        while kids and now() < hard:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                time.sleep(0.2)
                continue
            w = kids.pop(pid)
            if status != 0:
                problems.append(f'worker {w} died (status {status})')
        for pid, w in kids.items():
            problems.append(f'worker {w} hung')
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    finally:
        unmount_all(problems)
    recs = []
    for w in range(NWORKERS):
        try:
            with open(f'{B}/logs/w{w}.json') as f:
                recs.extend(json.load(f))
        except (OSError, ValueError) as e:
            problems.append(f'worker {w} left no log: {e!r}')
    ck = Checker(recs, sources, ids)
    ck.collect()
    sessions = ck.sess
    ck.check_commits(sessions)
    try:
        problems.extend(final_checks(ck, sessions))
    finally:
        for mp in sorted(mounts_under(B), key=len, reverse=True):
            subprocess.run(['umount', '-l', mp], capture_output=True)
    ck.check_states()
    with open(f'{B}/logs/all.json', 'w') as f:
        json.dump(ck.recs, f)
    # summary
    kinds = {}
    for r in ck.recs:
        k = kinds.setdefault(r['kind'], [0, 0, 0, 0])
        o = r.get('outcome')
        k[{'ok': 0, 'fail': 1, 'maybe': 2}.get(o, 3)] += 1
    nops = sum(len(r['ops']) for r in ck.recs if r['kind'] == 'write')
    commits = [r for r in ck.recs if r['kind'] == 'commit' and 'entries' in r.get('snap', {})]
    print(f'seed {SEED}, {SECONDS:.0f} s, {NWORKERS} workers: {len(ck.recs)} commands, '
          f'{nops} file writes/removals; {len(commits)} commits checked as snapshots')
    print('command: ok / refused / killed / bad: ' + ', '.join(
        f'{k} {v[0]}/{v[1]}/{v[2]}/{v[3]}' for k, v in sorted(kinds.items())))
    for p in problems:
        print('FAIL', p)
    ck.report()
    if problems or ck.violations:
        print(f'\nrerun: python3 {os.path.abspath(__file__)} {BIN} NEW_DIR {SEED} {SECONDS:g} '
              f'(logs: {B}/logs/all.json)')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
