//! Opening the files of an image source: regular files only, never blocking, never
//! outside the source.
//!
//! A source is input like any other: its `oci-layout` may be a FIFO (an `open` for reading
//! would wait for a writer forever, with the store lock held), a blob may be a device node
//! (opening some has side effects) or a symlink to a host file (which would then be read
//! into the store, and its digest and size printed in a mismatch message). So every file
//! is first reached with `O_PATH` (which opens nothing), checked to be a regular file with
//! `fstat`, and only then opened for reading, through `/proc/self/fd` (the same inode, no
//! second lookup of its name). Files of a directory source are resolved beneath the
//! directory with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: a symlink that stays
//! inside (Docker's `<id>/layer.tar -> ../<id>/layer.tar`) is followed, one that leads out
//! is refused (on kernels without openat2, before 5.6, every symlink is). The source path
//! the user names is followed as given. The reopen is non-blocking too, and checked to
//! reach the same inode.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::error::{Error, Result};

/// Opens the directory `path` (following symlinks: the user named it) as a root that
/// files are resolved beneath.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(path, io::Error::from(e)))
}

/// Opens the file `path` that the user named (symlinks followed) for reading; refuses
/// anything but a regular file.
pub fn open_file(path: &Path) -> Result<(File, u64)> {
    let shown = || path.display().to_string();
    let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::io(path, io::Error::from(e)))?;
    reopen_regular(fd, &shown)
}

/// Opens `rel` (already cleaned: relative, no `..`) beneath `root` for reading.
/// `Ok(None)` when it does not exist; an error when it is not a regular file or can only
/// be reached through a symlink that leaves `root`.
pub fn open_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    shown: &dyn Fn() -> String,
) -> Result<Option<(File, u64)>> {
    match path_beneath(root, rel, shown)? {
        Some(fd) => reopen_regular(fd, shown).map(Some),
        None => Ok(None),
    }
}

/// True when something is at `rel` beneath `root` (nothing is opened for reading). A
/// name that exists but cannot be used (a fifo, a symlink leading out) counts: opening it
/// then says why, rather than "missing".
pub fn exists_beneath(root: BorrowedFd<'_>, rel: &str) -> bool {
    let shown = String::new;
    !matches!(path_beneath(root, rel, &shown), Ok(None))
}

/// An `O_PATH` fd of `rel` beneath `root`.
fn path_beneath(
    root: BorrowedFd<'_>,
    rel: &str,
    shown: &dyn Fn() -> String,
) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let refused = |detail: &str| Error::Invalid {
        file: shown(),
        detail: detail.to_string(),
    };
    match nix::fcntl::openat2(root, rel, how) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::EXDEV) => Err(refused(
            "reached through a symlink that leads out of the image directory (refused)",
        )),
        Err(Errno::ELOOP) => Err(refused("too many levels of symlinks (refused)")),
        Err(Errno::ENOSYS) => walk_nofollow(root, rel, shown),
        Err(e) => Err(Error::io(shown(), io::Error::from(e))),
    }
}

/// Without openat2: one component at a time, never following a symlink.
fn walk_nofollow(
    root: BorrowedFd<'_>,
    rel: &str,
    shown: &dyn Fn() -> String,
) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur: Option<OwnedFd> = None;
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        let at = match &cur {
            Some(fd) => fd.as_fd(),
            None => root,
        };
        let next = match nix::fcntl::openat(at, c, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::io(shown(), io::Error::from(e))),
        };
        if kind_of(next.as_fd()).map_err(|e| Error::io(shown(), e))? == SFlag::S_IFLNK {
            return Err(Error::Invalid {
                file: shown(),
                detail:
                    "reached through a symlink (refused: this kernel cannot check where it leads)"
                        .into(),
            });
        }
        cur = Some(next);
    }
    Ok(cur)
}

fn kind_of(fd: BorrowedFd<'_>) -> io::Result<SFlag> {
    let st = fstat(fd)?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFIFO => "a fifo",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symlink",
        _ => "not a regular file",
    }
}

/// Checks that the `O_PATH` fd is a regular file, then opens that inode for reading.
fn reopen_regular(fd: OwnedFd, shown: &dyn Fn() -> String) -> Result<(File, u64)> {
    let st = fstat(fd.as_fd()).map_err(|e| Error::io(shown(), io::Error::from(e)))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(Error::Invalid {
            file: shown(),
            detail: format!("is {}, not a regular file (refused)", kind_name(kind)),
        });
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let opened = nix::fcntl::open(proc_path.as_str(), flags, Mode::empty())
        .map_err(|e| Error::io(shown(), io::Error::from(e)))?;
    let again = fstat(opened.as_fd()).map_err(|e| Error::io(shown(), io::Error::from(e)))?;
    if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
        return Err(Error::Invalid {
            file: shown(),
            detail: "changed while being opened (refused)".into(),
        });
    }
    Ok((File::from(opened), u64::try_from(st.st_size).unwrap_or(0)))
}
