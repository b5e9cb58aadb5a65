//! Directory trees through directory fds, however deep: a depth-first walk that holds a
//! bounded number of fds, removal of a tree, and opening a path longer than PATH_MAX
//! beneath a directory.
//!
//! Depth is unbounded on Linux (a tree built with `mkdir` and `chdir` can be 3000 levels
//! deep, its paths far beyond PATH_MAX), while fds are not: a walk that keeps one open
//! directory per level fails with EMFILE under the usual limit of 1024, and one that
//! rebuilds paths fails with ENAMETOOLONG. So:
//! - [`walk`] keeps one directory fd open, the one it is in: it reads a directory's names
//!   when it enters it and goes back up through `..`, checked to be the directory it came
//!   from (device and inode), else found again from the root by name. No path is ever
//!   built, no symlink followed (`O_NOFOLLOW` on every step down).
//! - [`remove_tree_at`] removes a tree with that walk (std's `remove_dir_all` keeps a
//!   directory fd per level), making directories we may not enter or empty `u+rwx` first
//!   (rootless copies of read-only image directories).
//! - [`open_beneath`] resolves a long relative path in pieces shorter than PATH_MAX, each
//!   with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS …)`.
//! - Walks that cannot go up by `..` (through the union core, where a directory is a
//!   node, not an fd) keep a few levels open and look the others up again from the root;
//!   [`window`] says how many levels.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::dir::Type;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Fds a walk through the union core may keep for the directories above it: enough that
/// trees of everyday depth never need a directory looked up again.
const WINDOW_FDS: usize = 256;

/// How many directory levels a walk that looks directories up again (instead of going up
/// by `..`) keeps open, when one level costs `fds_per_level` fds: between 2 and 32.
pub fn window(fds_per_level: usize) -> usize {
    (WINDOW_FDS / fds_per_level.max(1)).clamp(2, 32)
}

/// What a [`walk`] does at each entry.
pub trait Visitor {
    /// Entry `e` of directory `dir`, which is at `path` (names from the walk's root).
    /// Returns true to enter it (a directory; anything else found there, or a directory
    /// we may not read, is passed over).
    fn entry(&mut self, dir: BorrowedFd<'_>, path: &[OsString], e: &Entry) -> io::Result<bool>;

    /// Directory `name` of `dir` has been walked, everything beneath it visited.
    fn left(&mut self, _dir: BorrowedFd<'_>, _name: &OsStr) -> io::Result<()> {
        Ok(())
    }

    /// Opens directory `name` of `dir` for reading its entries, never following a symlink.
    fn open_dir(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
        open_dir_at(dir, name)
    }
}

/// `name` in `dir` opened as a readable directory, never through a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// A directory entry as readdir gives it (the one reader is [`crate::sys::dir_entries`]).
pub use crate::sys::DirEntry as Entry;

/// One directory the walk is in: its name, identity and the entries still to visit.
struct Frame {
    name: OsString,
    dev: u64,
    ino: u64,
    entries: std::vec::IntoIter<Entry>,
}

/// The entries of directory `fd`, `.` and `..` left out, in the order readdir gives them.
pub fn entries(fd: BorrowedFd<'_>) -> io::Result<Vec<Entry>> {
    let own = openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    crate::sys::dir_entries(own)
}

fn frame(name: OsString, fd: BorrowedFd<'_>) -> io::Result<Frame> {
    let st = fstat(fd)?;
    Ok(Frame {
        name,
        dev: st.st_dev,
        ino: st.st_ino,
        entries: entries(fd)?.into_iter(),
    })
}

fn same(st: &FileStat, f: &Frame) -> bool {
    st.st_dev == f.dev && st.st_ino == f.ino
}

/// Walks the tree below directory `root` depth first, each directory's entries in
/// readdir order, holding one directory fd of its own at any time (see the module docs).
pub fn walk(root: BorrowedFd<'_>, v: &mut dyn Visitor) -> io::Result<()> {
    let mut cur = root.try_clone_to_owned()?;
    let mut frames = vec![frame(OsString::new(), cur.as_fd())?];
    let mut path: Vec<OsString> = Vec::new();
    while let Some(top) = frames.last_mut() {
        if let Some(e) = top.entries.next() {
            if !v.entry(cur.as_fd(), &path, &e)? {
                continue;
            }
            let name = e.name;
            let fd = match v.open_dir(cur.as_fd(), &name) {
                Ok(fd) => fd,
                // Gone, not a directory after all, or not ours to read: passed over.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EACCES) => continue,
                Err(e) => return Err(e.into()),
            };
            frames.push(frame(name.clone(), fd.as_fd())?);
            path.push(name);
            cur = fd;
            continue;
        }
        let Some(done) = frames.pop() else { break };
        let Some(parent) = frames.last() else { break };
        path.pop();
        cur = back_up(root, &cur, &path, parent)?;
        v.left(cur.as_fd(), &done.name)?;
    }
    Ok(())
}

/// The directory above `cur`, which must be `parent` (at `path` below `root`): through
/// `..`, else (moved meanwhile, or `..` not searchable) looked up again from the root.
fn back_up(
    root: BorrowedFd<'_>,
    cur: &OwnedFd,
    path: &[OsString],
    parent: &Frame,
) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if let Ok(up) = openat(cur, "..", flags, Mode::empty())
        && fstat(&up).is_ok_and(|st| same(&st, parent))
    {
        return Ok(up);
    }
    let mut fd = root.try_clone_to_owned()?;
    for name in path {
        fd = openat(
            &fd,
            name.as_os_str(),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?;
    }
    if fstat(&fd).is_ok_and(|st| same(&st, parent)) {
        Ok(fd)
    } else {
        Err(io::Error::other(
            "a directory was moved while its tree was walked",
        ))
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never following a symlink
/// and holding a bounded number of fds however deep the tree is. A missing `name` is not
/// an error.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if !is_dir(&st) {
        return Remover.unlink(dir, name).map(|_| ());
    }
    let fd = Remover.open_dir(dir, name)?;
    walk(fd.as_fd(), &mut Remover)?;
    drop(fd);
    Remover.left(dir, name)
}

/// The [`Visitor`] of [`remove_tree_at`].
struct Remover;

impl Remover {
    /// Unlinks non-directory `name`; false when it is a directory after all.
    fn unlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        let once = || unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        match once() {
            Ok(()) | Err(Errno::ENOENT) => Ok(true),
            Err(Errno::EISDIR) => Ok(false),
            Err(Errno::EACCES | Errno::EPERM) if make_writable(dir) => match once() {
                Ok(()) | Err(Errno::ENOENT) => Ok(true),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// Gives directory `fd` `u+rwx` (it is about to be emptied); false when it had it already
/// or cannot get it.
fn make_writable(fd: BorrowedFd<'_>) -> bool {
    match fstat(fd) {
        Ok(st) if st.st_mode & 0o700 != 0o700 => {
            crate::sys::chmod_fd(fd, (st.st_mode & 0o7777) | 0o700).is_ok()
        }
        _ => false,
    }
}

impl Visitor for Remover {
    fn entry(&mut self, dir: BorrowedFd<'_>, _path: &[OsString], e: &Entry) -> io::Result<bool> {
        if e.kind == Some(Type::Directory) {
            return Ok(true);
        }
        Ok(!self.unlink(dir, &e.name)?)
    }

    fn left(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        let once = || unlinkat(dir, name, UnlinkatFlags::RemoveDir);
        match once() {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EACCES | Errno::EPERM) if make_writable(dir) => Ok(once()?),
            Err(e) => Err(e.into()),
        }
    }

    fn open_dir(&mut self, dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
        let fd = match open_dir_at(dir, name) {
            Ok(fd) => fd,
            Err(Errno::EACCES) => {
                // Not readable or searchable by us: made so through an O_PATH fd, which
                // needs no permission on the directory itself.
                let p = openat(
                    dir,
                    name,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                if !make_writable(p.as_fd()) {
                    return Err(Errno::EACCES);
                }
                open_dir_at(dir, name)?
            }
            Err(e) => return Err(e),
        };
        // Its entries are unlinked next: that takes write and search permission.
        make_writable(fd.as_fd());
        Ok(fd)
    }
}

/// Longest path one `openat2` resolves (PATH_MAX counts the NUL).
const PATH_MAX_BYTES: usize = 4095;

/// Opens relative `path` beneath `dir` with `flags`, never following a symlink nor
/// leaving `dir` (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`); a path longer than PATH_MAX is resolved in
/// pieces that are not, each beneath the last. ENOSYS on kernels without `openat2`.
pub fn open_beneath(dir: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let how = |flags: OFlag| {
        OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        )
    };
    let mut held: Option<OwnedFd> = None;
    let mut rest = path;
    while rest.len() > PATH_MAX_BYTES {
        // The longest run of whole components that fits.
        let cut = rest[..=PATH_MAX_BYTES]
            .iter()
            .rposition(|b| *b == b'/')
            .filter(|i| *i > 0)
            .ok_or(Errno::ENAMETOOLONG)?;
        let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let piece = OsStr::from_bytes(&rest[..cut]);
        held = Some(nix::fcntl::openat2(
            at,
            piece,
            how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )?);
        rest = &rest[cut + 1..];
    }
    let at = held.as_ref().map_or(dir, |fd| fd.as_fd());
    nix::fcntl::openat2(at, OsStr::from_bytes(rest), how(flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A chain of `depth` directories `d` under `root`, with a file at each level.
    fn chain(root: &OwnedFd, depth: usize) {
        let mut cur = root.try_clone().unwrap();
        for _ in 0..depth {
            nix::sys::stat::mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
            let f = openat(
                &cur,
                "f",
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            drop(f);
            cur = open_dir_at(cur.as_fd(), OsStr::new("d")).unwrap();
        }
    }

    struct Count(usize, usize);
    impl Visitor for Count {
        fn entry(&mut self, _: BorrowedFd<'_>, path: &[OsString], e: &Entry) -> io::Result<bool> {
            self.0 += 1;
            self.1 = self.1.max(path.len());
            Ok(e.kind == Some(Type::Directory))
        }
    }

    #[test]
    fn deep_trees_are_walked_opened_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let root = nix::fcntl::open(t.path(), OFlag::O_RDONLY, Mode::empty()).unwrap();
        chain(&root, 2500);
        let mut c = Count(0, 0);
        walk(root.as_fd(), &mut c).unwrap();
        assert_eq!((c.0, c.1), (5000, 2499));
        let deep = "d/".repeat(2500) + "f";
        assert!(open_beneath(root.as_fd(), deep.as_bytes(), OFlag::O_RDONLY).is_err());
        let deep = "d/".repeat(2499) + "f";
        open_beneath(root.as_fd(), deep.as_bytes(), OFlag::O_RDONLY).unwrap();
        // A directory we may not enter, deep down, does not stop the removal.
        let p = open_beneath(root.as_fd(), "d/".repeat(2000).as_bytes(), OFlag::O_PATH).unwrap();
        crate::sys::chmod_fd(p.as_fd(), 0).unwrap();
        remove_tree_at(root.as_fd(), OsStr::new("d")).unwrap();
        assert_eq!(entries(root.as_fd()).unwrap().len(), 1);
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn long_paths_never_leave_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = nix::fcntl::open(t.path(), OFlag::O_RDONLY, Mode::empty()).unwrap();
        chain(&root, 2100);
        let up = "d/".repeat(2100) + &"../".repeat(2101) + "x";
        assert!(open_beneath(root.as_fd(), up.as_bytes(), OFlag::O_PATH).is_err());
    }
}
