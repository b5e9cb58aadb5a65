//! Copy-up: giving a lower entry an upper copy before it changes.
//!
//! Always staged: the copy is built complete in `WORK/layerfs-tmp/#N` (data, owner, mode,
//! xattrs, times, our marks) and renamed into the upper directory in one step, so a crash
//! leaves the lower entry visible and intact, never a half-copied file. The parent's times
//! are put back afterwards: a copy-up is not a change the user made.
//!
//! Three depths:
//! - directories: the directory alone (its entries stay where they are);
//! - metadata only (`metacopy`): a regular file whose owner, mode, times or xattrs change
//!   gets a sparse upper file of the same size marked `metacopy`, and data keeps coming
//!   from the lower file until the first write; chmod of a 1 GiB file costs no data;
//! - full: data through `FICLONE` when the filesystem shares extents, else
//!   `copy_file_range` over the data segments only (holes stay holes).
//!
//! Hard-linked lower files (st_nlink > 1) are copied once into the index
//! (`WORK/layerfs-index/<ino>`) and linked from there, so every name of the inode, found
//! now or after a remount, reaches the same copy.
//!
//! The node table learns the copy's inode before it appears at its name, so a lookup that
//! finds it there gets the same node. A metacopy is completed in place (data written into
//! the upper inode, then the mark removed), as the kernel does: the node keeps its upper
//! inode, and a crash before the mark goes leaves reads served from below.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Whence, lseek};

use crate::sys::{self, At};
use crate::whiteout;

use super::Union;
use super::attr::FileKind;
use super::error::Context;
use super::error::{FsError, Result};
use super::index::{IndexSource, NewIndexEntry};
use super::layer::open_readable_dir;
use super::lookup::open_dir_at;
use super::node::{DevIno, Lower, Node, UpperLoc};
use super::upper::Writer;
use super::xattr;

/// How much of a file to copy up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// Data and metadata.
    Full,
    /// Metadata only when the file allows it (a regular file with one link), else full.
    Meta,
    /// Data up to this size, then truncated (or extended) to it.
    Truncate(u64),
}

fn stat_times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Puts a directory's atime/mtime back to `st`'s (its ctime moves, as it must).
fn restore_dir_times(dir: &OwnedFd, st: &FileStat) -> Result<()> {
    let fd = open_readable_dir(dir)?;
    let (a, m) = stat_times(st);
    nix::sys::stat::futimens(&fd, &a, &m)?;
    Ok(())
}

/// Copies the user-visible xattrs of `src` to `dst`.
pub(crate) fn copy_xattrs(src: At<'_>, dst: At<'_>) -> Result<()> {
    for name in sys::listxattr(src)? {
        if whiteout::is_internal_xattr(&name) {
            continue;
        }
        let Some(value) = sys::getxattr(src, &name)? else {
            continue;
        };
        match sys::setxattr(dst, &name, &value, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                log::debug!("copy-up: xattr {name:?} not supported by the upper filesystem");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Copies bytes [0, len) of `src` to `dst`, skipping holes, then sizes `dst` to `len`.
pub(crate) fn copy_data(src: &OwnedFd, dst: &OwnedFd, len: u64, src_size: u64) -> Result<()> {
    if len == src_size && len > 0 && sys::ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut off: i64 = 0;
    let len_i = len as i64;
    while off < len_i {
        let data = match lseek(src, off, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break,
            Err(Errno::EINVAL) => off, // no SEEK_DATA support: copy everything
            Err(e) => return Err(e.into()),
        };
        if data >= len_i {
            break;
        }
        let hole = match lseek(src, data, Whence::SeekHole) {
            Ok(h) => h,
            Err(_) => len_i,
        };
        let end = hole.min(len_i);
        copy_range(src, dst, data, end)?;
        off = end;
    }
    nix::unistd::ftruncate(dst, len_i)?;
    Ok(())
}

/// Copies [start, end) with copy_file_range, or read/write where the kernel refuses.
fn copy_range(src: &OwnedFd, dst: &OwnedFd, start: i64, end: i64) -> Result<()> {
    let mut pos = start;
    while pos < end {
        let mut si = pos;
        let mut di = pos;
        let want = (end - pos) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut si), dst, Some(&mut di), want) {
            Ok(0) => break, // source shorter than its size said: stop, ftruncate pads
            Ok(n) => pos += n as i64,
            Err(Errno::EXDEV)
            | Err(Errno::EINVAL)
            | Err(Errno::ENOSYS)
            | Err(Errno::EOPNOTSUPP) => {
                let mut buf = vec![0u8; (want).min(1 << 20)];
                let n = nix::sys::uio::pread(src, &mut buf, pos)?;
                if n == 0 {
                    break;
                }
                let mut w = 0;
                while w < n {
                    w += nix::sys::uio::pwrite(dst, &buf[w..n], pos + w as i64)?;
                }
                pos += n as i64;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets owner, mode and xattrs of the staged entry `fd` holds (an `O_PATH` fd or an open
/// one) from `st` and the xattrs read through `src_at`.
pub(crate) fn copy_meta(fd: BorrowedFd<'_>, st: &FileStat, src_at: At<'_>) -> Result<()> {
    sys::chown_fd(fd, Some(st.st_uid), Some(st.st_gid))?;
    if FileKind::from_mode(st.st_mode) != FileKind::Symlink {
        // after chown, which clears setuid/setgid
        sys::chmod_fd(fd, st.st_mode & 0o7777)?;
    }
    copy_xattrs(src_at, At::Fd(fd))?;
    Ok(())
}

/// Sets atime and mtime of the staged entry `fd` holds from `st`.
fn set_times_fd(fd: BorrowedFd<'_>, st: &FileStat) -> Result<()> {
    let (a, m) = stat_times(st);
    Ok(sys::utimens_fd(fd, &a, &m)?)
}

/// Writes the data of lower file `data` into `dst` as `mode` asks: all of it, or up to a
/// new size (then sized to it).
fn fill_from_lower(dst: &OwnedFd, data: &Lower, mode: CopyMode) -> Result<()> {
    let size = data.stat.st_size as u64;
    let len = match mode {
        CopyMode::Truncate(n) => n.min(size),
        _ => size,
    };
    if len > 0 {
        // (checked to be a regular file before it is opened: a FIFO would block)
        let (src, _) = crate::regular::open_at(data.parent.as_fd(), &data.name)
            .ctx(|| format!("copy up {:?}", data.name))?;
        copy_data(&OwnedFd::from(src), dst, len, size)?;
    }
    if let CopyMode::Truncate(n) = mode {
        nix::unistd::ftruncate(dst, n as i64)?;
    }
    Ok(())
}

/// An `O_PATH` fd of staged entry `name` (never following it).
fn open_path(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The real inode a staged copy is (and will be once renamed into place).
fn staged_ident(w: &Writer<'_>, tmpname: &OsStr) -> Result<DevIno> {
    Ok(DevIno::of(&fstatat(
        &*w.up.tmp,
        tmpname,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?))
}

impl Union {
    /// Ensures directory node `node` has an upper directory, copying up the directories
    /// above it that lack one first; returns the upper directory. Iterative, top down:
    /// a directory of any depth costs no deeper stack (a thread's stack would overflow,
    /// and the daemon abort, thousands of levels down).
    pub(crate) fn copy_up_dir(&self, node: &Arc<Node>) -> Result<Arc<OwnedFd>> {
        let upper_of = |n: &Node| n.read().dir().and_then(|d| d.upper().cloned());
        if let Some(up) = upper_of(node) {
            return Ok(up);
        }
        self.writer()?;
        // `node` and the directories above it without an upper copy, nearest first; and
        // the upper directory of the first one above them that has one.
        let mut chain = vec![node.clone()];
        let mut pfd = loop {
            let Some(cur) = chain.last() else {
                return Err(FsError::EIO);
            };
            let parent = cur.read().parent().cloned().ok_or(FsError::EIO)?;
            let parent = self.parent_node(&parent)?;
            if let Some(up) = upper_of(&parent) {
                break up;
            }
            chain.push(parent);
        };
        while let Some(n) = chain.pop() {
            pfd = self.copy_up_dir_in(&n, &pfd)?;
        }
        Ok(pfd)
    }

    /// Copies up directory `node`, whose parent's upper directory is `pfd`.
    fn copy_up_dir_in(&self, node: &Arc<Node>, pfd: &Arc<OwnedFd>) -> Result<Arc<OwnedFd>> {
        let w = self.writer()?;
        let _g = node.copy_guard();
        let (name, src, st) = {
            let s = node.read();
            let d = s.dir().ok_or(FsError::ENOTDIR)?;
            if let Some(u) = d.upper() {
                return Ok(u.clone());
            }
            if s.is_unlinked() {
                return Err(FsError::ENOENT);
            }
            let src = &d.lowers().first().ok_or(FsError::EIO)?.fd;
            (
                s.name().to_owned(),
                src.clone(),
                d.lower_stat().ok_or(FsError::EIO)?,
            )
        };
        let tmp = w.tmp_name();
        let tmpname = OsStr::new(&tmp);
        nix::sys::stat::mkdirat(&*w.up.tmp, tmpname, Mode::from_bits_truncate(0o700))?;
        let staged = (|| -> Result<DevIno> {
            let fd = open_path(&w.up.tmp, tmpname)?;
            copy_meta(fd.as_fd(), &st, At::Fd(src.as_fd()))?;
            set_times_fd(fd.as_fd(), &st)?;
            Ok(DevIno::of(&fstat(&fd)?))
        })();
        let ident = match staged {
            Ok(i) => i,
            Err(e) => {
                w.discard_staged(tmpname, true);
                return Err(e.with_ctx(format!("copy up directory {name:?}")));
            }
        };
        let pst = fstat(pfd)?;
        self.nodes.set_upper(node, Some(ident));
        if let Err(e) = w.place_staged(tmpname, pfd, &name) {
            w.discard_staged(tmpname, true);
            // Copied up already, through another node object of this directory (one
            // found again by a file handle): that copy is this directory's.
            if e == Errno::EEXIST
                && let Ok(fd) = open_dir_at(pfd, &name)
            {
                self.nodes.set_upper(node, Some(DevIno::of(&fstat(&*fd)?)));
                node.write().dir_copied_up(fd.clone());
                return Ok(fd);
            }
            self.nodes.set_upper(node, None);
            return Err(e).ctx(|| format!("copy up directory {name:?}"));
        }
        restore_dir_times(pfd, &pst)?;
        let fd = open_dir_at(pfd, &name)?;
        node.write().dir_copied_up(fd.clone());
        Ok(fd)
    }

    /// Ensures non-directory `node` has an upper copy at the depth `mode` asks for.
    pub(crate) fn copy_up(&self, node: &Arc<Node>, mode: CopyMode) -> Result<()> {
        if node.is_dir() {
            self.copy_up_dir(node)?;
            return Ok(());
        }
        let done = |n: &Node| {
            let s = n.read();
            s.data_in_upper() || (s.upper().is_some() && mode == CopyMode::Meta)
        };
        if done(node) {
            return Ok(());
        }
        let w = self.writer()?;
        let _g = node.copy_guard();
        if done(node) {
            return Ok(());
        }
        let (parent, name, ino, lower, metacopy) = {
            let s = node.read();
            if s.is_unlinked() {
                return Err(FsError::ENOENT);
            }
            (
                s.parent().cloned().ok_or(FsError::EIO)?,
                s.name().to_owned(),
                s.ino(),
                s.lower().cloned().ok_or(FsError::EIO)?,
                s.upper().is_some(),
            )
        };
        if metacopy {
            return self
                .complete_metacopy(node, &lower, mode)
                .map_err(|e| e.with_ctx(format!("copy up data of {name:?}")));
        }
        let parent = self.parent_node(&parent)?;
        let pfd = self.copy_up_dir(&parent)?;
        let kind = FileKind::from_mode(lower.stat.st_mode);
        let hardlinked = lower.stat.st_nlink > 1;
        let meta_only = mode == CopyMode::Meta && kind == FileKind::Regular && !hardlinked;

        let tmp = w.tmp_name();
        let tmpname = OsStr::new(&tmp);
        let staged = self
            .stage_copy(&w, tmpname, kind, &lower, mode, meta_only, ino)
            .and_then(|()| staged_ident(&w, tmpname));
        let ident = match staged {
            Ok(i) => i,
            Err(e) => {
                w.discard_staged(tmpname, false);
                return Err(e.with_ctx(format!(
                    "copy up {name:?} from {}",
                    self.layer_name(lower.layer)
                )));
            }
        };

        let pst = fstat(&pfd)?;
        self.nodes.set_upper(node, Some(ident));
        let installed = self.install_copy(&w, tmpname, ident, &pfd, &name, hardlinked, ino, &lower);
        let loc = match installed {
            Ok(loc) => loc,
            Err(e) => {
                self.nodes.set_upper(node, None);
                w.discard_staged(tmpname, false);
                return Err(e.with_ctx(format!("copy up {name:?}")));
            }
        };
        restore_dir_times(&pfd, &pst)?;
        self.mark_impure(&parent, &pfd)?;
        node.write().copied_up(loc, meta_only);
        Ok(())
    }

    /// Puts staged copy `tmpname` (the real inode `staged`) in place as `name` of upper
    /// directory `pfd` (and, for a hard-linked file, as its index name first).
    #[allow(clippy::too_many_arguments)]
    fn install_copy(
        &self,
        w: &Writer<'_>,
        tmpname: &OsStr,
        staged: DevIno,
        pfd: &Arc<OwnedFd>,
        name: &OsStr,
        hardlinked: bool,
        ino: u64,
        lower: &Lower,
    ) -> Result<UpperLoc> {
        let mut loc = UpperLoc::Named {
            parent: pfd.clone(),
            name: name.to_owned(),
        };
        let mut key = None;
        if hardlinked {
            // One copy for every name: the index name first, then this one.
            let entry = NewIndexEntry {
                ino,
                kind: FileKind::from_mode(lower.stat.st_mode),
                inode: staged,
                nlink: lower.stat.st_nlink,
            };
            let k = w.make_index_entry(IndexSource::Staged(tmpname), &entry)?;
            loc = UpperLoc::Indexed { key: k.clone() };
            key = Some(k);
        }
        if let Err(e) = w.place_staged(tmpname, pfd, name) {
            if let Some(k) = key
                && let Err(undo) = w.drop_index_entry(&k)
            {
                log::warn!("copy-up of {name:?} failed, its index entry {k} stays: {undo}");
            }
            return Err(e.into());
        }
        Ok(loc)
    }

    /// Writes the data of a metacopy node into its upper inode, then drops the mark.
    fn complete_metacopy(&self, node: &Node, lower: &Lower, mode: CopyMode) -> Result<()> {
        let (ufd, ust) = self.upper_inode_stat(node)?;
        let data = lower.data_loc();
        let dst = sys::reopen(ufd.as_fd(), OFlag::O_WRONLY)?;
        fill_from_lower(&dst, data, mode)?;
        // Filling in the data is no change the user made: keep the file's times.
        let (a, m) = stat_times(&ust);
        sys::utimens_fd(ufd.as_fd(), &a, &m)?;
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        sys::removexattr(At::Fd(ufd.as_fd()), &up.ns().name(xattr::METACOPY))?;
        node.write().metacopy_completed();
        Ok(())
    }

    /// Builds the copy of `lower` as `tmpname` in the staging directory.
    #[allow(clippy::too_many_arguments)]
    fn stage_copy(
        &self,
        w: &Writer<'_>,
        tmpname: &OsStr,
        kind: FileKind,
        lower: &Lower,
        mode: CopyMode,
        meta_only: bool,
        ino: u64,
    ) -> Result<()> {
        let tmpdir = &*w.up.tmp;
        let size = lower.stat.st_size as u64;
        // An fd of the staged entry: everything after its creation goes through it.
        let fd = match kind {
            FileKind::Regular => {
                let dst = openat(
                    tmpdir,
                    tmpname,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )?;
                if meta_only {
                    nix::unistd::ftruncate(&dst, size as i64)?;
                } else {
                    fill_from_lower(&dst, lower.data_loc(), mode)?;
                }
                dst
            }
            FileKind::Symlink => {
                let target = nix::fcntl::readlinkat(&*lower.parent, lower.name.as_os_str())?;
                nix::unistd::symlinkat(target.as_os_str(), tmpdir, tmpname)?;
                open_path(tmpdir, tmpname)?
            }
            FileKind::Directory => return Err(FsError::EISDIR),
            other => {
                let sflag = match other {
                    FileKind::Fifo => SFlag::S_IFIFO,
                    FileKind::CharDevice => SFlag::S_IFCHR,
                    FileKind::BlockDevice => SFlag::S_IFBLK,
                    _ => SFlag::S_IFSOCK,
                };
                nix::sys::stat::mknodat(
                    tmpdir,
                    tmpname,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    lower.stat.st_rdev,
                )?;
                open_path(tmpdir, tmpname)?
            }
        };
        copy_meta(
            fd.as_fd(),
            &lower.stat,
            At::Entry(lower.parent.as_fd(), &lower.name),
        )?;
        let at = At::Fd(fd.as_fd());
        xattr::set(at, w.up.ns(), xattr::ORIGIN, ino.to_string().as_bytes())?;
        if meta_only {
            xattr::set(at, w.up.ns(), xattr::METACOPY, b"")?;
        }
        set_times_fd(fd.as_fd(), &lower.stat)?;
        Ok(())
    }

    /// Marks an upper directory as holding entries whose inode numbers are not their
    /// real ones, so listings know to read them.
    pub(crate) fn mark_impure(&self, dir: &Arc<Node>, fd: &OwnedFd) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let already = dir.read().dir().is_some_and(|d| d.impure());
        if already {
            return Ok(());
        }
        xattr::set(At::Fd(fd.as_fd()), up.ns(), xattr::IMPURE, b"y")?;
        dir.write().marked_impure();
        // Listings built before read no origin marks.
        self.dir_changed(dir, 0);
        Ok(())
    }
}
