//! The store's root directory: checked once, held open, and the base of every path the
//! store touches.
//!
//! Who may own a store root (the same rule for root and for a plain user): the directory
//! must belong to the caller (effective uid). A directory another user owns is refused:
//! its owner could swap `tmp/` or `layers/` for a symlink at any time, and the store's
//! chmods, deletes and writes would follow it out (root's `prune` deleting what the link
//! names). A root that others may write (group or other `w` bit) is tightened to 0700 when
//! it holds nothing yet (a new store: `mkdir -m 777 DIR` first, as people do), and refused
//! when it already holds something: what it holds could have been planted by anyone. A
//! root only readable by others is tightened to 0700 (see [`super::DIR_MODE`]).
//!
//! After that check, nothing below the root is ever reached by a path from `/`: every
//! open, create, rename and delete starts at the held directory fd and resolves its
//! relative path with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` (one `O_NOFOLLOW` component at a time on kernels before 5.6),
//! so a later swap of the root's path, of one of its parents or of anything inside it
//! cannot redirect the store to another directory. Relative paths are the store's own
//! (`layers/<hex>/layer.json`); [`Root::shown`] turns them into the full path for messages.
//! Files are opened without blocking and checked to be regular files before they are
//! read, so a FIFO standing in for a record cannot hang a command.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::error::{Error, Result};

/// The store root, verified and held open (see the module docs).
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// What [`Root::open`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A directory with entries in it (a store, or something else: the caller decides).
    Populated,
    /// Nothing in it yet (created now, or an empty directory): a store may be made there.
    Empty,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Is `name` one of the staged files a concurrent first use of a new store leaves while it
/// writes `VERSION` (such a directory still counts as empty)?
fn is_staging_of_new_store(name: &OsStr, staged_version: &str) -> bool {
    name.as_bytes().starts_with(staged_version.as_bytes())
}

impl Root {
    /// Opens and checks the root at `path` (created mode 0700 when missing, with its
    /// parents). `staged_version` is the name prefix of the store's own staged `VERSION`
    /// file, which does not make a directory "populated".
    pub fn open(path: &Path, staged_version: &str) -> Result<(Root, Found)> {
        let not_a_store = |detail: String| Error::NotAStore {
            path: path.to_path_buf(),
            detail,
        };
        // The path itself is the caller's to name: it is followed as given.
        let open =
            || nix::fcntl::open(path, DIR_FLAGS.difference(OFlag::O_NOFOLLOW), Mode::empty());
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                match nix::unistd::mkdir(path, Mode::from_bits_truncate(super::DIR_MODE)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(Error::io(path, e.into())),
                }
                open().map_err(|e| Error::io(path, e.into()))?
            }
            Err(Errno::ENOTDIR) => return Err(not_a_store("a file, not a directory".into())),
            Err(e) => return Err(Error::io(path, e.into())),
        };
        let root = Root {
            fd,
            path: path.to_path_buf(),
        };
        let st = nix::sys::stat::fstat(&root.fd).map_err(|e| Error::io(path, e.into()))?;
        let me = nix::unistd::geteuid().as_raw();
        if st.st_uid != me {
            return Err(not_a_store(format!(
                "owned by uid {}, not by you (uid {me}): its owner could change what the \
                 store holds; use a directory of your own (a new path is created mode 0700)",
                st.st_uid
            )));
        }
        let populated = || -> Result<bool> {
            Ok(root
                .entries(Path::new(""))?
                .iter()
                .any(|n| !is_staging_of_new_store(n, staged_version)))
        };
        let mode = st.st_mode & 0o7777;
        let found = if mode & 0o022 != 0 {
            if populated()? {
                return Err(not_a_store(format!(
                    "writable by other users (mode {mode:04o}), so what it holds may have \
                     been put there by anyone; if it is yours and you trust it: chmod 700 {}",
                    path.display()
                )));
            }
            root.tighten()?;
            // Tightened first, checked after: nobody else can add an entry any more.
            if populated()? {
                return Err(not_a_store(format!(
                    "another user wrote into it while it was mode {mode:04o}; pick a new path"
                )));
            }
            Found::Empty
        } else {
            if mode & 0o077 != 0 {
                root.tighten()?;
            }
            if populated()? {
                Found::Populated
            } else {
                Found::Empty
            }
        };
        Ok((root, found))
    }

    fn tighten(&self) -> Result<()> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(super::DIR_MODE))
            .map_err(|e| Error::io(&self.path, e.into()))
    }

    /// The root as the user named it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full path of `rel`, for messages (and for nothing else: it is never opened).
    pub fn shown(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// The held root directory.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn io(&self, rel: &Path, e: impl Into<io::Error>) -> Error {
        Error::io(self.shown(rel), e.into())
    }

    /// Opens `rel` beneath the root with `flags`, following no symlink on the way.
    fn resolve(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let how = OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match nix::fcntl::openat2(self.fd.as_fd(), rel, how) {
            Err(Errno::ENOSYS) => self.walk(rel, flags, mode),
            r => r.map_err(io::Error::from),
        }
    }

    /// `resolve` without openat2 (Linux before 5.6): one component at a time, never
    /// following a symlink, never climbing out.
    fn walk(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let comps: Vec<&OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                Component::CurDir => Ok(OsStr::new(".")),
                _ => Err(io::Error::from(Errno::EXDEV)),
            })
            .collect::<io::Result<_>>()?;
        let Some((last, dirs)) = comps.split_last() else {
            return nix::fcntl::openat(self.fd.as_fd(), ".", flags, mode).map_err(Into::into);
        };
        let mut cur: Option<OwnedFd> = None;
        for c in dirs {
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            cur = Some(nix::fcntl::openat(at, *c, dir_flags, Mode::empty())?);
        }
        let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
        nix::fcntl::openat(at, *last, flags, mode).map_err(Into::into)
    }

    /// The parent directory of `rel` (opened beneath the root) and its last component.
    fn parent_of<'a>(&self, rel: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::from(Errno::EINVAL))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fd = self.resolve(parent, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }

    /// Opens directory `rel` for reading (fds of it serve `*at` calls and listings).
    pub fn open_dir(&self, rel: impl AsRef<Path>) -> Result<OwnedFd> {
        let rel = rel.as_ref();
        self.resolve(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| self.io(rel, e))
    }

    /// [`Root::open_dir`], `Ok(None)` when `rel` does not exist.
    pub fn open_dir_opt(&self, rel: impl AsRef<Path>) -> Result<Option<OwnedFd>> {
        let rel = rel.as_ref();
        match self.resolve(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// Opens the regular file `rel` for reading, without blocking (a FIFO is refused, not
    /// waited on); `Ok(None)` when it does not exist.
    pub fn open_read(&self, rel: impl AsRef<Path>) -> Result<Option<File>> {
        let rel = rel.as_ref();
        let fd = match self.resolve(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(self.io(rel, e)),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| self.io(rel, e))?;
        if kind(&st) != SFlag::S_IFREG {
            return Err(Error::Invalid {
                file: self.shown(rel).display().to_string(),
                detail: "not a regular file (the store is damaged here)".into(),
            });
        }
        Ok(Some(File::from(fd)))
    }

    /// The bytes of regular file `rel`; `Ok(None)` when it does not exist.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let rel = rel.as_ref();
        let Some(mut f) = self.open_read(rel)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(|e| self.io(rel, e))?;
        Ok(Some(out))
    }

    /// Opens `rel` for writing, mode 0600 whatever the umask: a new file (`create_new`,
    /// failing when it exists), else created or appended to.
    pub fn open_write(&self, rel: impl AsRef<Path>, create_new: bool) -> Result<File> {
        let rel = rel.as_ref();
        let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT;
        flags |= if create_new {
            OFlag::O_EXCL
        } else {
            OFlag::O_APPEND | OFlag::O_NONBLOCK
        };
        let fd = self
            .resolve(rel, flags, Mode::from_bits_truncate(super::FILE_MODE))
            .map_err(|e| self.io(rel, e))?;
        let f = File::from(fd);
        if !create_new {
            let m = f.metadata().map_err(|e| self.io(rel, e))?;
            if !m.is_file() {
                return Err(Error::Invalid {
                    file: self.shown(rel).display().to_string(),
                    detail: "not a regular file (the store is damaged here)".into(),
                });
            }
        }
        Ok(f)
    }

    /// Writes a new file `rel` (it must not exist) with the store's file mode.
    pub fn write_new(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        self.open_write(rel, true)?
            .write_all(bytes)
            .map_err(|e| self.io(rel, e))
    }

    /// Replaces `rel` with `bytes` atomically: a new file named `staged` beside it, then
    /// a rename over it.
    pub fn write_atomic(&self, rel: impl AsRef<Path>, staged: &str, bytes: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        let tmp = rel.with_file_name(staged);
        let res = self
            .write_new(&tmp, bytes)
            .and_then(|()| self.rename(&tmp, rel));
        if res.is_err() {
            let _ = self.remove_file(&tmp);
        }
        res
    }

    /// Creates directory `rel` with `mode` (exactly: the umask is undone). Fails with an
    /// `AlreadyExists` I/O error when something is there.
    pub fn mkdir(&self, rel: impl AsRef<Path>, mode: u32) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_of(rel).map_err(|e| self.io(rel, e))?;
        nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(mode))
            .map_err(|e| self.io(rel, e))?;
        let fd = self.open_dir(rel)?;
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| self.io(rel, e))
    }

    /// Creates directory `rel` mode 0700, or tightens it to 0700 when it exists with bits
    /// for others; refuses anything there that is not a directory.
    pub fn ensure_private_dir(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        match self.mkdir(rel, super::DIR_MODE) {
            Ok(()) => return Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let fd = match self.open_dir(rel) {
            Ok(fd) => fd,
            Err(Error::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) =>
            {
                return Err(Error::Invalid {
                    file: self.shown(rel).display().to_string(),
                    detail: "not a directory".into(),
                });
            }
            Err(e) => return Err(e),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(|e| self.io(rel, e))?;
        if st.st_mode & 0o077 != 0 {
            nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(super::DIR_MODE))
                .map_err(|e| self.io(rel, e))?;
        }
        Ok(())
    }

    fn rename_flags(&self, from: &Path, to: &Path, flags: RenameFlags) -> Result<()> {
        let (fdir, fname) = self.parent_of(from).map_err(|e| self.io(from, e))?;
        let (tdir, tname) = self.parent_of(to).map_err(|e| self.io(to, e))?;
        nix::fcntl::renameat2(&fdir, fname, &tdir, tname, flags).map_err(|e| self.io(to, e))
    }

    /// Renames `from` to `to` (both beneath the root), replacing what `to` names.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        self.rename_flags(from.as_ref(), to.as_ref(), RenameFlags::empty())
    }

    /// Renames `from` to `to` unless `to` exists (an `AlreadyExists` I/O error then).
    pub fn rename_noreplace(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<()> {
        self.rename_flags(from.as_ref(), to.as_ref(), RenameFlags::RENAME_NOREPLACE)
    }

    /// Removes the file (not directory) `rel`; fine when it is already gone.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = self.parent_of(rel).map_err(|e| self.io(rel, e))?;
        match nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// Deletes the tree (or file) `rel`; fine when it is already gone. Directories it may
    /// not enter or empty (rootless copies of read-only image directories) are made
    /// `u+rwx` on the way. Nothing outside `rel` is reached: symlinks are removed, never
    /// followed.
    pub fn remove_tree(&self, rel: impl AsRef<Path>) -> Result<()> {
        let rel = rel.as_ref();
        let (dir, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(self.io(rel, e)),
        };
        crate::fdtree::remove_tree_at(dir.as_fd(), name).map_err(|e| self.io(rel, e))
    }

    /// What is at `rel` (not following a symlink there); `Ok(None)` when nothing is.
    pub fn stat(&self, rel: impl AsRef<Path>) -> Result<Option<FileStat>> {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() {
            return nix::sys::stat::fstat(&self.fd)
                .map(Some)
                .map_err(|e| self.io(rel, e));
        }
        let (dir, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(None);
            }
            Err(e) => return Err(self.io(rel, e)),
        };
        match nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.io(rel, e)),
        }
    }

    /// True when `rel` is a directory (a symlink to one is not).
    pub fn is_dir(&self, rel: impl AsRef<Path>) -> bool {
        matches!(self.stat(rel), Ok(Some(st)) if kind(&st) == SFlag::S_IFDIR)
    }

    /// True when `rel` is a regular file (a symlink to one is not).
    pub fn is_file(&self, rel: impl AsRef<Path>) -> bool {
        matches!(self.stat(rel), Ok(Some(st)) if kind(&st) == SFlag::S_IFREG)
    }

    /// Takes the flock of file `rel` (created 0600 when missing), waiting as needed.
    pub fn lock(
        &self,
        rel: impl AsRef<Path>,
        mode: super::lock::Mode,
        who: &str,
    ) -> Result<super::LockGuard> {
        let rel = rel.as_ref();
        super::lock::lock(self.open_write(rel, false)?, &self.shown(rel), mode, who)
    }

    /// Takes the flock of file `rel` if nobody holds a conflicting one; `Ok(None)` otherwise.
    pub fn try_lock(
        &self,
        rel: impl AsRef<Path>,
        mode: super::lock::Mode,
    ) -> Result<Option<super::LockGuard>> {
        let rel = rel.as_ref();
        super::lock::adopt(self.open_write(rel, false)?, &self.shown(rel), mode)
    }

    /// The names in directory `rel` (without `.` and `..`), unsorted; none when it does
    /// not exist.
    pub fn entries(&self, rel: impl AsRef<Path>) -> Result<Vec<OsString>> {
        let rel = rel.as_ref();
        let Some(fd) = self.open_dir_opt(rel)? else {
            return Ok(Vec::new());
        };
        crate::sys::dir_entries(fd)
            .map(|v| v.into_iter().map(|e| e.name).collect())
            .map_err(|e| self.io(rel, e))
    }
}
