//! Acting on a node's own inode, never on whatever its name points at now.
//!
//! A directory node holds `O_PATH` fds of its layer directories. A non-directory holds
//! where its upper copy is (a name in an upper directory, or its index name) and, once a
//! name of it has been removed, a pin: an `O_PATH` fd of the inode itself. To act on the
//! upper inode, the core opens the name with `O_PATH|O_NOFOLLOW` and checks that what it
//! got is the node's inode ([`super::node::Ident`]); a name that no longer is (renamed
//! meanwhile, replaced by a symlink) is looked at again under the node's lock, which the
//! operation that changed it held, so the retry sees the new name. Everything else goes
//! through that fd: `fchownat(AT_EMPTY_PATH)`, `fchmodat2`, `utimensat(AT_EMPTY_PATH)`, the
//! `f*xattr` family, and for data a reopen through the fd's `/proc/self/fd` link.
//! Lower entries are not the core's to change, so they are reached by (directory fd,
//! name); their data only once [`crate::regular`] has checked it is a regular file.
//!
//! A frozen stack (`Stack::open_frozen`: `export`, `diff`, `commit` reading a container
//! whose mount may be live) reads an upper layer another process writes, whose
//! operations hold none of our locks: there a name that no longer holds the node's inode
//! means the file changed meanwhile, and is ENOENT (looked up again, the name gives the
//! new file), never the EIO of a layer changed behind a mount.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat};

use crate::sys::{self, At};

use super::attr::FileKind;
use super::error::{Context, FsError, Result};
use super::node::{DevIno, Node, UpperLoc};
use super::{Atime, Union};

/// How often a stale name is looked at again before giving up: each retry waits for the
/// operation that moved the name, so more than a couple means something outside the
/// mount is changing the layer.
const STALE_RETRIES: usize = 4;

/// Where to read a node's metadata (xattrs, symlink target).
pub(crate) enum InodeRef {
    /// The inode itself (an `O_PATH` fd or an open one).
    Fd(Arc<OwnedFd>),
    /// An immutable lower entry: directory fd and name.
    Lower(Arc<OwnedFd>, OsString),
}

impl InodeRef {
    pub(crate) fn at(&self) -> At<'_> {
        match self {
            InodeRef::Fd(fd) => At::Fd(fd.as_fd()),
            InodeRef::Lower(d, n) => At::Entry(d.as_fd(), n),
        }
    }
}

/// The fd of the node's upper inode an open file holds, if any.
fn open_fd(node: &Node) -> Option<Arc<OwnedFd>> {
    node.read().open_fd()
}

/// The flags a data fd of an inode may be reopened with: access, truncation, append and
/// I/O behaviour; never creation, never symlink or directory semantics.
fn reopen_flags(flags: OFlag) -> OFlag {
    flags
        & !(OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOCTTY
            | OFlag::O_NOFOLLOW
            | OFlag::O_DIRECTORY
            | OFlag::O_PATH
            | OFlag::O_TMPFILE)
}

impl Union {
    /// (directory fd, name) of an upper location.
    pub(crate) fn upper_loc_at(&self, loc: &UpperLoc) -> Result<(Arc<OwnedFd>, OsString)> {
        match loc {
            UpperLoc::Named { parent, name } => Ok((parent.clone(), name.clone())),
            UpperLoc::Indexed { key } => {
                let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
                Ok((up.index.clone(), OsString::from(key)))
            }
        }
    }

    /// An fd of the node's upper inode and its stat (the node must have an upper copy).
    pub(crate) fn upper_inode_stat(&self, node: &Node) -> Result<(Arc<OwnedFd>, FileStat)> {
        let mut last = OsString::new();
        for _ in 0..STALE_RETRIES {
            let loc = {
                let s = node.read();
                if let Some(d) = s.dir() {
                    let fd = d.upper().cloned().ok_or(FsError::EIO)?;
                    drop(s);
                    let st = fstat(&fd)?;
                    return Ok((fd, st));
                }
                if let Some(pin) = s.pin() {
                    let pin = pin.clone();
                    drop(s);
                    let st = fstat(&pin)?;
                    return Ok((pin, st));
                }
                if s.is_unlinked() {
                    return Err(FsError::ENOENT);
                }
                s.upper().cloned().ok_or(FsError::EIO)?
            };
            let want = node.ident().upper.ok_or(FsError::EIO)?;
            let (dir, name) = self.upper_loc_at(&loc)?;
            match openat(
                &dir,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let st = fstat(&fd)?;
                    if DevIno::of(&st) == want {
                        return Ok((Arc::new(fd), st));
                    }
                    if self.frozen_upper() {
                        return Err(FsError::ENOENT);
                    }
                }
                // Another process writes the layer of a frozen stack (a mounted
                // container's): the node's inode was removed or replaced there since it
                // was looked up. It changed meanwhile; nothing is damaged: ENOENT, and a
                // reader looks the name up again if it wants what is there now (the
                // node's attributes, read at the lookup, are not that file's).
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) if self.frozen_upper() => {
                    return Err(FsError::ENOENT);
                }
                Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {}
                Err(e) => return Err(e).ctx(|| format!("open upper {name:?}")),
            }
            last = name;
            // The name was moved or replaced since we read it: the operation that did it
            // holds the node's lock until its state says so.
            std::thread::yield_now();
        }
        if node.is_unlinked() {
            return Err(FsError::ENOENT);
        }
        Err(FsError::corrupt(format!(
            "upper entry {last:?} of inode {} is not that inode any more \
             (the upper layer changed behind the mount?)",
            node.id.0
        )))
    }

    /// True for a stack that reads an upper layer another process writes
    /// ([`super::Stack::open_frozen`]): a name there may change between two looks.
    fn frozen_upper(&self) -> bool {
        self.stack.upper.as_ref().is_some_and(|u| u.frozen)
    }

    /// An fd of the node's upper inode: an open file's while there is one, else the
    /// checked `O_PATH` one.
    pub(crate) fn upper_inode(&self, node: &Node) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = open_fd(node) {
            return Ok(fd);
        }
        Ok(self.upper_inode_stat(node)?.0)
    }

    /// Where a node's metadata is read from: its upper inode, else its lower entry.
    pub(crate) fn read_ref(&self, node: &Node) -> Result<InodeRef> {
        let s = node.read();
        if let Some(d) = s.dir() {
            let fd = match d.upper() {
                Some(u) => u.clone(),
                None => d.lowers().first().ok_or(FsError::EIO)?.fd.clone(),
            };
            return Ok(InodeRef::Fd(fd));
        }
        if s.upper().is_some() || s.pin().is_some() {
            drop(s);
            return Ok(InodeRef::Fd(self.upper_inode(node)?));
        }
        let l = s.lower_only().ok_or(FsError::EIO)?;
        Ok(InodeRef::Lower(l.parent.clone(), l.name.clone()))
    }

    /// Keeps the node's upper inode (if it has one) reachable and its number taken
    /// before one of its names is removed.
    pub(crate) fn pin(&self, node: &Node) -> Result<()> {
        {
            let s = node.read();
            if s.dir().is_some() || s.pin().is_some() || s.upper().is_none() {
                return Ok(());
            }
        }
        let fd = self.upper_inode(node)?;
        node.write().pinned(fd);
        Ok(())
    }

    /// Opens a node's data with `flags`: the upper copy when it holds the data, else the
    /// lower file (read-only). Returns the fd and whether it is the lower file.
    pub(crate) fn open_data(&self, node: &Node, flags: OFlag) -> Result<(OwnedFd, bool)> {
        let s = node.read();
        if s.data_in_upper() {
            drop(s);
            // An open file's fd is the regular upper inode already; else check it is one.
            let fd = match open_fd(node) {
                Some(fd) => fd,
                None => {
                    let (fd, st) = self.upper_inode_stat(node)?;
                    if FileKind::from_mode(st.st_mode) != FileKind::Regular {
                        return Err(FsError::corrupt(format!(
                            "upper copy of inode {} is not a regular file",
                            node.id.0
                        )));
                    }
                    fd
                }
            };
            let mut flags = reopen_flags(flags);
            if self.opts.atime == Atime::Never && flags & OFlag::O_ACCMODE == OFlag::O_RDONLY {
                flags |= OFlag::O_NOATIME;
            }
            let data = match sys::reopen(fd.as_fd(), flags) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EPERM)
                        && flags.contains(OFlag::O_NOATIME) =>
                {
                    sys::reopen(fd.as_fd(), flags & !OFlag::O_NOATIME)
                }
                r => r,
            }
            .ctx(|| format!("reopen upper inode {}", node.id.0))?;
            return Ok((data, false));
        }
        let l = s.lower().ok_or(FsError::EIO)?.data_loc().clone();
        drop(s);
        let ro = (reopen_flags(flags) & !OFlag::O_ACCMODE & !OFlag::O_APPEND & !OFlag::O_TRUNC)
            | OFlag::O_RDONLY;
        let what = || format!("open {:?} in {}", l.name, self.layer_name(l.layer));
        // A lower layer may be a directory others write (a `layerfs-overlay` lowerdir) or
        // a damaged store: the name is checked to hold a regular file before it is opened
        // (a FIFO there would block this thread for good).
        let (path, _) = crate::regular::path_at(l.parent.as_fd(), &l.name).ctx(what)?;
        let open = |extra: OFlag| crate::regular::reopen(path.as_fd(), ro | extra);
        let file = match self.opts.atime {
            // (O_NOATIME is refused on others' files to a daemon without CAP_FOWNER)
            Atime::Never => match open(OFlag::O_NOATIME) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(OFlag::empty()),
                r => r,
            },
            _ => open(OFlag::empty()),
        }
        .ctx(what)?;
        Ok((OwnedFd::from(file), true))
    }
}
