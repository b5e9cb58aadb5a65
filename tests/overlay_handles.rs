//! File handles through a real mount: `name_to_handle_at` / `open_by_handle_at` keep
//! working after the kernel has forgotten the inodes (caches dropped), for lower files,
//! upper files and directories, also after a rename; a deleted file's handle is stale. And
//! an fd of a file replaced by a rename keeps answering fstat. Needs root (open_by_handle_at
//! wants CAP_DAC_READ_SEARCH), /dev/fuse and python3.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::mount::*;

const HANDLES: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)

class FH(ctypes.Structure):
    _fields_ = [('handle_bytes', ctypes.c_uint), ('handle_type', ctypes.c_int),
                ('f_handle', ctypes.c_ubyte * 128)]

def handle(path):
    fh, mnt = FH(), ctypes.c_int()
    fh.handle_bytes = 128
    if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mnt), 0):
        raise OSError(ctypes.get_errno(), 'name_to_handle_at ' + path)
    return fh

def open_by(mfd, fh, flags=os.O_RDONLY):
    fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), flags)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'open_by_handle_at')
    return fd

def forget_all():
    # the kernel drops unused dentries and inodes, and tells the daemon (FORGET)
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('2')
    time.sleep(0.3)

m = sys.argv[1]
mfd = os.open(m, os.O_RDONLY | os.O_DIRECTORY)
open(f'{m}/upper', 'w').write('upper data')
ino = {p: os.stat(f'{m}/{p}').st_ino for p in ['lower', 'upper', 'dir', 'dir/inner', 'gone']}
hs = {p: handle(f'{m}/{p}') for p in ino}
out = []

def check(what):
    forget_all()
    for p, h in hs.items():
        try:
            fd = open_by(mfd, h)
            st = os.fstat(fd)
            data = os.read(fd, 100) if os.path.isfile(f'/proc/self/fd/{fd}') else b'<dir>'
            os.close(fd)
            out.append(f'{what} {p}: {data.decode()} same_ino={st.st_ino == ino[p]}')
        except OSError as e:
            out.append(f'{what} {p}: errno {e.errno}')

check('fresh')
os.rename(f'{m}/dir', f'{m}/moved')       # a lower directory, renamed (redirect)
os.rename(f'{m}/upper', f'{m}/moved/upper2')
with open(f'{m}/lower', 'a') as f:        # copied up
    f.write('+')
os.unlink(f'{m}/gone')
check('after')
print('\n'.join(out))
"#;

#[test]
fn file_handles_outlive_the_kernels_inode_cache() {
    let mut l = Layers::new();
    l.add()
        .file("lower", "lower data")
        .file("dir/inner", "inner data")
        .file("gone", "soon gone");
    let m = Mount::new(&l.lowerdirs());
    let out = Command::new("python3")
        .arg("-c")
        .arg(HANDLES)
        .arg(&m.mp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "fresh lower: lower data same_ino=True",
        "fresh upper: upper data same_ino=True",
        "fresh dir: <dir> same_ino=True",
        "fresh dir/inner: inner data same_ino=True",
        "fresh gone: soon gone same_ino=True",
        "after lower: lower data+ same_ino=True",
        "after upper: upper data same_ino=True",
        "after dir: <dir> same_ino=True",
        "after dir/inner: inner data same_ino=True",
        "after gone: errno 116",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
}

#[test]
fn an_fd_of_a_file_replaced_by_rename_keeps_answering_fstat() {
    let mut l = Layers::new();
    l.add().file("a", "lower a").file("b", "lower b");
    let m = Mount::new(&l.lowerdirs());
    let script = r#"
import os, sys
m = sys.argv[1]
fd = os.open(f'{m}/a', os.O_RDONLY)
open(f'{m}/c', 'w').write('upper c')
fd2 = os.open(f'{m}/c', os.O_RDWR)
os.rename(f'{m}/b', f'{m}/a')
open(f'{m}/d', 'w').write('d')
os.rename(f'{m}/d', f'{m}/c')
for f in (fd, fd2):
    st = os.fstat(f)
    print(st.st_size, os.pread(f, 100, 0).decode())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&m.mp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "7 lower a\n7 upper c\n"
    );
}
