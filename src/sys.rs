//! Thin, safe wrappers over the few syscalls that `nix` does not cover.
//!
//! This is the only module allowed to use `unsafe`; every block says why it is sound.
//! Everything else in the crate reaches files through `nix` or these wrappers, always
//! relative to a directory fd (`*at` calls) so that no path is ever rebuilt or followed
//! out of a layer.
//!
//! Extended attributes are the main reason this module exists: Linux 6.13 added
//! `getxattrat(2)` and friends, which read an xattr of `name` inside a directory fd without
//! opening it. Older kernels fall back to `/proc/self/fd/<dirfd>/<name>` with the `l*xattr`
//! calls, which resolve the same object (the magic link is only the parent). An fd itself
//! is served by the `f*xattr` calls, and, for `O_PATH` fds that those refuse (EBADF, as
//! does `*xattrat` with `AT_EMPTY_PATH` on 6.18), by its `/proc/self/fd/<fd>` link.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};

/// Syscall numbers of the `*xattrat` family (Linux 6.13, the same on every architecture
/// since the syscall table unification); `libc` does not carry them yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// `struct xattr_args` of the `*xattrat` syscalls.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Set once the kernel has answered ENOSYS to an `*xattrat` call.
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// How an xattr call names its object.
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    /// The object the fd itself refers to (an `O_PATH` fd works).
    Fd(BorrowedFd<'a>),
    /// Entry `name` (one path component) in directory `dir`; never follows a final symlink.
    Entry(BorrowedFd<'a>, &'a OsStr),
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_long) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn is_ebadf<T>(r: &io::Result<T>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EBADF))
}

fn xattrat_available() -> bool {
    !NO_XATTRAT.load(Ordering::Relaxed)
}

fn note_enosys<T>(r: &io::Result<T>) -> bool {
    if let Err(e) = r
        && e.raw_os_error() == Some(libc::ENOSYS)
    {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        return true;
    }
    false
}

/// `/proc/self/fd/N[/name]` for the fallback path, and whether the final component
/// must be followed (only for the bare fd: the magic link itself is not the object).
fn proc_path(at: At<'_>) -> io::Result<(CString, bool)> {
    match at {
        At::Fd(fd) => Ok((
            cstr(OsStr::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))?,
            true,
        )),
        At::Entry(dir, name) => {
            let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
            p.extend_from_slice(name.as_bytes());
            Ok((cstr(&OsString::from_vec(p))?, false))
        }
    }
}

/// The (dirfd, path, at_flags) triple of the `*xattrat` syscalls.
fn at_args(at: At<'_>) -> io::Result<(RawFd, CString, libc::c_uint)> {
    match at {
        At::Fd(fd) => Ok((
            fd.as_raw_fd(),
            CString::default(),
            libc::AT_EMPTY_PATH as libc::c_uint,
        )),
        At::Entry(dir, name) => Ok((
            dir.as_raw_fd(),
            cstr(name)?,
            libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
        )),
    }
}

/// Raw getxattr into `buf`; returns the value length (or the needed size when `buf` is empty).
fn getxattr_raw(at: At<'_>, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if let At::Fd(fd) = at {
        // SAFETY: fd is live; attr is a C string; buf is valid for buf.len() bytes.
        let r = check(unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } as libc::c_long);
        if !is_ebadf(&r) {
            return r;
        }
        // An O_PATH fd: only the /proc path reaches it.
    } else if xattrat_available() {
        let (dfd, path, flags) = at_args(at)?;
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len() as u32,
            flags: 0,
        };
        // SAFETY: all pointers come from live CStrings/buffers for the duration of the call;
        // `args.value`/`args.size` describe `buf` exactly.
        let r = check(unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dfd,
                path.as_ptr(),
                flags,
                attr.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        });
        if !note_enosys(&r) {
            return r;
        }
    }
    let (path, follow) = proc_path(at)?;
    // SAFETY: path and attr are valid NUL-terminated strings; buf is valid for buf.len() bytes.
    let r = unsafe {
        if follow {
            libc::getxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } else {
            libc::lgetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    };
    check(r as libc::c_long)
}

/// Reads xattr `attr`; `Ok(None)` when the object does not have it.
pub fn getxattr(at: At<'_>, attr: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let attr = cstr(attr)?;
    let mut buf = vec![0u8; 256];
    loop {
        match getxattr_raw(at, &attr, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let need = getxattr_raw(at, &attr, &mut [])?;
                buf = vec![0u8; need.max(buf.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
}

/// Size-probing getxattr with the caller's buffer size, as FUSE's getxattr needs:
/// `size == 0` returns the length only.
pub fn getxattr_sized(at: At<'_>, attr: &OsStr, size: usize) -> io::Result<Vec<u8>> {
    let attr = cstr(attr)?;
    let mut buf = vec![0u8; size];
    let n = getxattr_raw(at, &attr, &mut buf)?;
    if size == 0 {
        // Return a vector whose length is the needed size (content unspecified).
        return Ok(vec![0u8; n]);
    }
    buf.truncate(n);
    Ok(buf)
}

fn listxattr_raw(at: At<'_>, buf: &mut [u8]) -> io::Result<usize> {
    if let At::Fd(fd) = at {
        // SAFETY: fd is live; buf is valid for buf.len() bytes.
        let r =
            check(
                unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
                    as libc::c_long,
            );
        if !is_ebadf(&r) {
            return r;
        }
    } else if xattrat_available() {
        let (dfd, path, flags) = at_args(at)?;
        // SAFETY: path is a valid C string; buf is valid for buf.len() bytes.
        let r = check(unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dfd,
                path.as_ptr(),
                flags,
                buf.as_mut_ptr(),
                buf.len(),
            )
        });
        if !note_enosys(&r) {
            return r;
        }
    }
    let (path, follow) = proc_path(at)?;
    // SAFETY: path is a valid C string; buf is valid for buf.len() bytes.
    let r = unsafe {
        if follow {
            libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        } else {
            libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }
    };
    check(r as libc::c_long)
}

/// Lists the names of all xattrs of the object (in the raw NUL-separated form split up).
pub fn listxattr(at: At<'_>) -> io::Result<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match listxattr_raw(at, &mut buf) {
            Ok(n) => break n,
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                let need = listxattr_raw(at, &mut [])?;
                buf = vec![0u8; need.max(buf.len() * 2)];
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect())
}

/// `XATTR_CREATE` / `XATTR_REPLACE` / 0, as in setxattr(2).
pub fn setxattr(at: At<'_>, attr: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let attr = cstr(attr)?;
    if let At::Fd(fd) = at {
        // SAFETY: fd is live; attr is a C string; value is valid for value.len() bytes.
        let r = check(unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } as libc::c_long);
        if !is_ebadf(&r) {
            return r.map(|_| ());
        }
    } else if xattrat_available() {
        let (dfd, path, at_flags) = at_args(at)?;
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: pointers are valid for the call; args describes `value` exactly.
        let r = check(unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                dfd,
                path.as_ptr(),
                at_flags,
                attr.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        });
        if !note_enosys(&r) {
            return r.map(|_| ());
        }
    }
    let (path, follow) = proc_path(at)?;
    // SAFETY: valid C strings and a value buffer of value.len() bytes.
    let r = unsafe {
        if follow {
            libc::setxattr(
                path.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    };
    check(r as libc::c_long).map(|_| ())
}

/// Removes xattr `attr`; ENODATA when absent.
pub fn removexattr(at: At<'_>, attr: &OsStr) -> io::Result<()> {
    let attr = cstr(attr)?;
    if let At::Fd(fd) = at {
        // SAFETY: fd is live; attr is a C string.
        let r = check(unsafe { libc::fremovexattr(fd.as_raw_fd(), attr.as_ptr()) } as libc::c_long);
        if !is_ebadf(&r) {
            return r.map(|_| ());
        }
    } else if xattrat_available() {
        let (dfd, path, at_flags) = at_args(at)?;
        // SAFETY: valid C strings for the duration of the call.
        let r = check(unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dfd,
                path.as_ptr(),
                at_flags,
                attr.as_ptr(),
            )
        });
        if !note_enosys(&r) {
            return r.map(|_| ());
        }
    }
    let (path, follow) = proc_path(at)?;
    // SAFETY: valid C strings.
    let r = unsafe {
        if follow {
            libc::removexattr(path.as_ptr(), attr.as_ptr())
        } else {
            libc::lremovexattr(path.as_ptr(), attr.as_ptr())
        }
    };
    check(r as libc::c_long).map(|_| ())
}

/// `/proc/self/fd/N`: the magic link that reaches exactly the inode fd `N` holds.
fn fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// chmod of the inode `fd` holds (an `O_PATH` fd works): `fchmodat2(AT_EMPTY_PATH)`
/// (Linux 6.6), else through the fd's magic link, which resolves to that inode and
/// nothing else. Not for symlinks (Linux cannot chmod them).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    const SYS_FCHMODAT2: libc::c_long = 452;
    // SAFETY: an empty C string literal and plain integers; the fd is live.
    let r = check(unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode as libc::c_uint,
            libc::AT_EMPTY_PATH,
        )
    });
    match r {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) => {
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                fd_path(fd).as_str(),
                nix::sys::stat::Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(io::Error::from)
        }
        Err(e) => Err(e),
    }
}

/// chown of the inode `fd` holds (an `O_PATH` fd works; a symlink is changed itself).
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    nix::unistd::fchownat(
        fd,
        "",
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
        nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io::Error::from)
}

/// Sets atime/mtime of the inode `fd` holds (an `O_PATH` fd works, symlinks included).
pub fn utimens_fd(
    fd: BorrowedFd<'_>,
    atime: &nix::sys::time::TimeSpec,
    mtime: &nix::sys::time::TimeSpec,
) -> io::Result<()> {
    let times = [*atime.as_ref(), *mtime.as_ref()];
    // SAFETY: `times` is two valid timespecs; the path is an empty C string literal and
    // AT_EMPTY_PATH makes the call act on the fd itself.
    let r = unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// Opens the inode an `O_PATH` fd holds with real access `flags` (through its magic
/// link: never another inode, never a symlink's target).
pub fn reopen(fd: BorrowedFd<'_>, flags: nix::fcntl::OFlag) -> io::Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        fd_path(fd).as_str(),
        flags | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Gives the inode an fd holds a new name `name` in `dir` (it must still have a name).
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        fd_path(fd).as_str(),
        dir,
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

/// Shares the extents of `src` with `dst` (`FICLONE`): a copy that costs no data blocks
/// on filesystems that support reflinks (btrfs, xfs). Fails with EOPNOTSUPP/EXDEV/EINVAL
/// elsewhere, and the caller falls back to `copy_file_range`.
pub fn ficlone(dst: impl AsFd, src: impl AsFd) -> io::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd by value as its argument; both fds are live.
    let r = unsafe {
        libc::ioctl(
            dst.as_fd().as_raw_fd(),
            FICLONE as _,
            src.as_fd().as_raw_fd() as libc::c_long,
        )
    };
    check(r as libc::c_long).map(|_| ())
}

/// Raises the soft limit of open files to the hard limit (every command does, at start):
/// the union keeps one `O_PATH` fd per directory and layer it has looked up.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok(hard)
}

/// Takes ownership of the fd our parent handed us under the number that environment
/// variable `var` holds, after checking that it is open; `None` when there is none, and
/// for every call after the first with that number: an fd is adopted once per process, so
/// two owners never close it twice.
pub fn inherited_fd(var: &str) -> Option<std::os::fd::OwnedFd> {
    static TAKEN: std::sync::Mutex<Vec<RawFd>> = std::sync::Mutex::new(Vec::new());
    let fd: RawFd = std::env::var(var).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if taken.contains(&fd) {
        return None;
    }
    // SAFETY: F_GETFD on any integer is harmless; it only tells whether the fd is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    taken.push(fd);
    // SAFETY: the fd is open, and nothing else in this process owns it: the parent passed
    // it for us alone (the variable names it), and `TAKEN` makes this the only adoption of
    // that number. Callers adopt at startup, before the process opens files of its own
    // that could have reused the number had the parent's fd been closed.
    Some(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A pidfd of process `pid` (`pidfd_open(2)`, Linux 5.3): it refers to that process
/// even once its number is reused, and polls readable when it has exited.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1; nothing is borrowed.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel has just returned this fd, which nothing else in this process owns.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Logs a warning to syslog (LOG_DAEMON) as `layerfs-overlay`: for a daemon whose
/// stderr is nobody's (or the caller's, which must not get it).
pub fn syslog_warning(msg: &str) {
    let Ok(msg) = CString::new(msg.replace('\0', "?")) else {
        return;
    };
    // SAFETY: the ident is a 'static C string literal (openlog keeps the pointer); the
    // format is a literal "%s" and `msg` a valid C string for the duration of the call.
    unsafe {
        libc::openlog(
            c"layerfs-overlay".as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        );
        libc::syslog(libc::LOG_WARNING, c"%s".as_ptr(), msg.as_ptr());
    }
}

/// The effective user is root (ownership can be set with chown, devices made with mknod).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root of the initial user namespace: may give files any owner. Root of a user
/// namespace (`unshare -Ur`, `podman unshare`) is not: it may chown to its few mapped ids
/// only, and what it writes belongs to a plain user on the host.
pub fn is_host_root() -> bool {
    is_root() && !in_user_namespace()
}

/// This process runs in a user namespace other than the initial one (whose uid map is
/// the identity over all 2^32 − 1 ids).
pub fn in_user_namespace() -> bool {
    static IN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        // No /proc: assume the usual case.
        Err(_) => false,
    })
}

/// One entry of a directory listing (never `.` or `..`).
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// The type the directory reports (`None` where the filesystem does not say).
    pub kind: Option<nix::dir::Type>,
}

/// Every entry of the directory `fd` holds (it must be open for reading), unsorted. The
/// fd is consumed: a listing needs a position of its own.
pub fn dir_entries(fd: std::os::fd::OwnedFd) -> io::Result<Vec<DirEntry>> {
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(DirEntry {
            name: OsStr::from_bytes(name).to_owned(),
            ino: e.ino(),
            kind: e.file_type(),
        });
    }
    Ok(out)
}

/// The inode attribute ioctls (chattr's): flags as an `int`, or a `struct fsxattr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileAttrIoctl {
    GetFlags,
    SetFlags,
    GetXattr,
    SetXattr,
}

/// `struct fsxattr`: 28 bytes.
pub const FSXATTR_SIZE: usize = 28;

impl FileAttrIoctl {
    /// The command for `cmd` as Linux numbers it (`FS_IOC_GETFLAGS`, `FS_IOC_SETFLAGS`,
    /// `FS_IOC_FSGETXATTR`, `FS_IOC_FSSETXATTR` of a 64-bit kernel, which is what its FUSE
    /// module sends whatever the caller's width).
    pub fn from_cmd(cmd: u32) -> Option<FileAttrIoctl> {
        FileAttrIoctl::ALL.into_iter().find(|op| op.cmd() == cmd)
    }

    const ALL: [FileAttrIoctl; 4] = [
        FileAttrIoctl::GetFlags,
        FileAttrIoctl::SetFlags,
        FileAttrIoctl::GetXattr,
        FileAttrIoctl::SetXattr,
    ];

    fn cmd(self) -> u32 {
        match self {
            FileAttrIoctl::GetFlags => 0x8008_6601,
            FileAttrIoctl::SetFlags => 0x4008_6602,
            FileAttrIoctl::GetXattr => 0x801c_581f,
            FileAttrIoctl::SetXattr => 0x401c_5820,
        }
    }

    /// Whether it changes the inode.
    pub fn sets(self) -> bool {
        matches!(self, FileAttrIoctl::SetFlags | FileAttrIoctl::SetXattr)
    }

    /// Bytes of its argument: an `int` (whatever the command's encoded size says, the
    /// kernel reads and writes an int) or a `struct fsxattr`.
    pub fn arg_size(self) -> usize {
        match self {
            FileAttrIoctl::GetFlags | FileAttrIoctl::SetFlags => 4,
            FileAttrIoctl::GetXattr | FileAttrIoctl::SetXattr => FSXATTR_SIZE,
        }
    }
}

/// Runs `op` on the file `fd` is open on (not an `O_PATH` fd) with `arg` (its input for a
/// set, zeroes for a get), and returns the argument as the kernel left it.
pub fn fileattr_ioctl(fd: BorrowedFd<'_>, op: FileAttrIoctl, arg: &[u8]) -> io::Result<Vec<u8>> {
    let n = op.arg_size();
    // Room for a `long` too, should a filesystem write one for the flags.
    let mut buf = [0u8; 32];
    let take = arg.len().min(n);
    buf[..take].copy_from_slice(&arg[..take]);
    // SAFETY: `buf` outlives the call and is larger than what any of these four commands
    // reads or writes (an int, a long or a 28-byte struct fsxattr).
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::c_ulong::from(op.cmd()),
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..n].to_vec())
}
