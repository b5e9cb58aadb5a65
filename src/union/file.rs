//! Attributes, open files, directory handles and xattrs of union nodes.
//!
//! A file handle holds a real fd: the lower file while the node has not been copied up
//! and only reads were asked, the upper copy otherwise. A read handle opened on a lower
//! file switches to the upper copy as soon as another open copies the node up, so every
//! reader sees the data that was written (kernel overlayfs does the same).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstat};
use nix::sys::time::TimeSpec;

use crate::sys::{self, At};
use crate::whiteout;

use super::attr::{Attr, FileKind, Time};
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::layer::open_readable_dir;
use super::node::{Node, NodeState, UpperLoc};
use super::readdir::{DirEntry, Listing};
use super::xattr;
use super::{Entry, Union};

/// What `open` answers.
#[derive(Debug, Clone, Copy)]
pub struct OpenReply {
    pub fh: u64,
    /// The data cannot change behind the kernel's back (a lower file): keep the page cache.
    pub keep_cache: bool,
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(Time),
}

/// The attribute changes of a setattr.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub fh: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct FileHandle {
    node: Arc<Node>,
    fd: RwLock<Arc<OwnedFd>>,
    /// The fd is the lower file (read-only); switch to the upper copy once there is one.
    on_lower: AtomicBool,
}

impl FileHandle {
    fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug)]
pub(crate) struct DirHandle {
    node: Arc<Node>,
    listing: Mutex<Option<Arc<Listing>>>,
    dot: u64,
    dotdot: u64,
}

/// Open files and directories.
#[derive(Debug, Default)]
pub(crate) struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<u64, Arc<FileHandle>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
}

impl Handles {
    fn next_fh(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn file(&self, fh: u64) -> Result<Arc<FileHandle>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(FsError::EBADF)
    }

    fn dir(&self, fh: u64) -> Result<Arc<DirHandle>> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(FsError::EBADF)
    }

    /// An fd of an open file of node `id` (for the attributes of an unlinked file).
    pub(crate) fn fd_of_node(&self, id: u64) -> Option<Arc<OwnedFd>> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.values().find(|h| h.node.id == id).map(|h| h.fd())
    }
}

fn to_timespec(t: &TimeSet) -> TimeSpec {
    match t {
        TimeSet::Now => TimeSpec::UTIME_NOW,
        TimeSet::At(t) => TimeSpec::new(t.sec, i64::from(t.nsec)),
    }
}

/// Where metadata of an upper copy is changed.
pub(crate) enum MetaTarget {
    /// Entry `name` in directory fd.
    Entry(Arc<OwnedFd>, OsString),
    /// A directory, opened for reading.
    Dir(OwnedFd),
}

impl MetaTarget {
    pub(crate) fn at(&self) -> At<'_> {
        match self {
            MetaTarget::Entry(d, n) => At::Entry(d.as_fd(), n),
            MetaTarget::Dir(fd) => At::Fd(fd.as_fd()),
        }
    }
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

    /// Where to change metadata of a node's upper copy (which must exist).
    pub(crate) fn meta_target(&self, s: &NodeState) -> Result<MetaTarget> {
        if let Some(d) = &s.dir {
            let up = d.upper.as_ref().ok_or(FsError::EIO)?;
            let fd = open_readable_dir(up)?;
            return Ok(MetaTarget::Dir(fd));
        }
        let loc = s.upper.as_ref().ok_or(FsError::EIO)?;
        let (d, n) = self.upper_loc_at(loc)?;
        Ok(MetaTarget::Entry(d, n))
    }

    /// Where to read metadata (xattrs, symlink target) of a node: upper copy or lower.
    fn read_target(&self, s: &NodeState) -> Result<MetaTarget> {
        if s.has_upper() {
            return self.meta_target(s);
        }
        if let Some(d) = &s.dir {
            let fd = &d.lowers.first().ok_or(FsError::EIO)?.fd;
            let fd = open_readable_dir(fd)?;
            return Ok(MetaTarget::Dir(fd));
        }
        let l = s.lower.as_ref().ok_or(FsError::EIO)?;
        Ok(MetaTarget::Entry(l.parent.clone(), l.name.clone()))
    }

    /// The attributes of a node.
    pub(crate) fn attr_of(&self, node: &Node, fh: Option<u64>) -> Result<Attr> {
        let s = node.read();
        if s.unlinked {
            let fd = match fh.and_then(|fh| self.handles.file(fh).ok()) {
                Some(h) => Some(h.fd()),
                None => self.handles.fd_of_node(node.id),
            };
            let st = match (fd, &s.lower) {
                (Some(fd), _) => fstat(&fd)?,
                (None, Some(l)) if s.upper.is_none() => l.stat,
                _ => return Err(FsError::ENOENT),
            };
            let mut a = Attr::from_stat(&st, s.ino);
            a.nlink = 0;
            return Ok(a);
        }
        let st = match self.upper_stat(&s)? {
            Some(st) => st,
            None => match (&s.dir, &s.lower) {
                (Some(d), _) => d.lower_stat.ok_or(FsError::EIO)?,
                (None, Some(l)) if s.upper.is_none() => l.stat,
                _ => return Err(FsError::ENOENT),
            },
        };
        let mut a = Attr::from_stat(&st, s.ino);
        // A metacopy (ours, or a lower one of a rotated layer) has its blocks below.
        if let Some(l) = &s.lower
            && (s.metacopy || (s.upper.is_none() && l.data.is_some()))
        {
            a.blocks = l.data_loc().stat.st_blocks as u64;
        }
        if let Some(loc @ UpperLoc::Indexed { .. }) = &s.upper {
            let (d, n) = self.upper_loc_at(loc)?;
            let marks = xattr::read_marks(At::Entry(d.as_fd(), &n))?;
            a.nlink = marks
                .nlink
                .unwrap_or_else(|| a.nlink.saturating_sub(1))
                .max(1);
        } else if s.upper.is_none()
            && let Some(l) = &s.lower
            && l.stat.st_nlink > 1
        {
            a.nlink = l.stat.st_nlink as u32;
        }
        let merged = s
            .dir
            .as_ref()
            .is_some_and(|d| usize::from(d.upper.is_some()) + d.lowers.len() > 1);
        let counted = s.dir.as_ref().and_then(|d| d.subdirs);
        drop(s);
        if merged {
            let subdirs = match counted {
                Some(n) => n,
                None => self.dir_listing(node)?.subdirs,
            };
            a.nlink = 2u32.saturating_add(subdirs);
        }
        Ok(a)
    }

    /// The merged listing of a directory node, cached until the directory changes.
    pub(crate) fn dir_listing(&self, node: &Node) -> Result<Arc<Listing>> {
        let (snap, impure, generation) = {
            let s = node.read();
            let d = s.dir.as_ref().ok_or(FsError::ENOTDIR)?;
            if let Some(l) = &d.listing {
                return Ok(l.clone());
            }
            (d.snapshot(), d.impure, d.listing_gen)
        };
        let listing = Arc::new(self.build_listing(&snap, impure)?);
        let mut s = node.write();
        if let Some(d) = s.dir.as_mut()
            && d.listing_gen == generation
        {
            d.listing = Some(listing.clone());
            d.subdirs = Some(listing.subdirs);
        }
        Ok(listing)
    }

    /// Forgets the cached listing of a directory node after a change in it; `subdirs`
    /// is how its number of subdirectories changed.
    pub(crate) fn dir_changed(&self, node: &Node, subdirs: i32) {
        let mut s = node.write();
        if let Some(d) = s.dir.as_mut() {
            d.listing = None;
            d.listing_gen += 1;
            d.subdirs = d.subdirs.map(|n| n.saturating_add_signed(subdirs));
        }
    }

    /// getattr: `fh` when the kernel has an open file at hand.
    pub fn getattr(&self, id: u64, fh: Option<u64>) -> Result<Attr> {
        let node = self.node(id)?;
        self.attr_of(&node, fh)
    }

    /// The target of a symlink.
    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let s = node.read();
        if s.kind != FileKind::Symlink {
            return Err(FsError::EINVAL);
        }
        let MetaTarget::Entry(d, n) = self.read_target(&s)? else {
            return Err(FsError::EINVAL);
        };
        drop(s);
        let target = nix::fcntl::readlinkat(&d, n.as_os_str())?;
        Ok(std::os::unix::ffi::OsStringExt::into_vec(target))
    }

    /// Opens a file. Any write access (or O_TRUNC) copies the node up first.
    pub fn open(&self, id: u64, flags: i32) -> Result<OpenReply> {
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(FsError::EISDIR);
        }
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        let write = acc != libc::O_RDONLY || trunc;
        if write {
            if self.read_only() {
                return Err(FsError::EROFS);
            }
            self.copy_up(
                &node,
                if trunc {
                    CopyMode::Truncate(0)
                } else {
                    CopyMode::Full
                },
            )?;
        }
        // O_TRUNC stays: with FUSE_ATOMIC_O_TRUNC the kernel counts on us to truncate a
        // file that was already copied up.
        let pass =
            OFlag::from_bits_truncate(flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY));
        let (fd, on_lower) = self.open_data(&node, pass)?;
        let fh = self.register_file(node, fd, on_lower);
        Ok(OpenReply {
            fh,
            keep_cache: on_lower,
        })
    }

    /// Opens a node's data with `flags`: the upper copy when it holds the data, else the
    /// lower file. Returns the fd and whether it is the lower file.
    fn open_data(&self, node: &Node, flags: OFlag) -> Result<(OwnedFd, bool)> {
        let s = node.read();
        let base = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if s.data_in_upper() {
            let loc = s.upper.clone().ok_or(FsError::EIO)?;
            drop(s);
            let (d, n) = self.upper_loc_at(&loc)?;
            return Ok((
                openat(&d, n.as_os_str(), flags | base, Mode::empty())?,
                false,
            ));
        }
        let l = s.lower.as_ref().ok_or(FsError::EIO)?.data_loc().clone();
        drop(s);
        let ro = (flags & !OFlag::O_ACCMODE & !OFlag::O_APPEND & !OFlag::O_TRUNC) | OFlag::O_RDONLY;
        Ok((
            openat(&l.parent, l.name.as_os_str(), ro | base, Mode::empty())?,
            true,
        ))
    }

    /// Registers an open file of `node`.
    pub(crate) fn register_file(&self, node: Arc<Node>, fd: OwnedFd, on_lower: bool) -> u64 {
        let fh = self.handles.next_fh();
        let h = Arc::new(FileHandle {
            node,
            fd: RwLock::new(Arc::new(fd)),
            on_lower: AtomicBool::new(on_lower),
        });
        self.handles
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    /// The fd a handle reads from, switched to the upper copy if the node was copied up
    /// since the handle was opened.
    fn read_fd(&self, h: &FileHandle) -> Result<Arc<OwnedFd>> {
        if h.on_lower.load(Ordering::Acquire) && h.node.read().data_in_upper() {
            let (fd, on_lower) = self.open_data(&h.node, OFlag::O_RDONLY)?;
            let fd = Arc::new(fd);
            *h.fd.write().unwrap_or_else(|p| p.into_inner()) = fd.clone();
            h.on_lower.store(on_lower, Ordering::Release);
            return Ok(fd);
        }
        Ok(h.fd())
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let h = self.handles.file(fh)?;
        let fd = self.read_fd(&h)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0usize;
        while done < buf.len() {
            let n = nix::sys::uio::pread(&*fd, &mut buf[done..], (offset + done as u64) as i64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes `data` at `offset`; returns the byte count written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handles.file(fh)?;
        if h.on_lower.load(Ordering::Acquire) {
            return Err(FsError::EBADF);
        }
        let fd = h.fd();
        let mut done = 0usize;
        while done < data.len() {
            let n = nix::sys::uio::pwrite(&*fd, &data[done..], (offset + done as u64) as i64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done as u32)
    }

    pub fn release(&self, fh: u64) {
        self.handles
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handles.file(fh)?;
        let fd = h.fd();
        if datasync {
            nix::unistd::fdatasync(&*fd)?;
        } else {
            nix::unistd::fsync(&*fd)?;
        }
        Ok(())
    }

    /// Changes attributes. Metadata changes of a lower regular file copy up its metadata
    /// only; a size change copies its data.
    pub fn setattr(&self, id: u64, ch: &SetAttr) -> Result<Attr> {
        let node = self.node(id)?;
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let kind = node.read().kind;
        if let Some(size) = ch.size {
            if kind.is_dir() {
                return Err(FsError::EISDIR);
            }
            let copied = node.read().data_in_upper();
            if copied {
                let fd = match ch.fh.and_then(|fh| self.handles.file(fh).ok()) {
                    Some(h) if !h.on_lower.load(Ordering::Acquire) => Some(h.fd()),
                    _ => None,
                };
                match fd {
                    Some(fd) => nix::unistd::ftruncate(&*fd, size as i64)?,
                    None => {
                        let (fd, _) = self.open_data(&node, OFlag::O_WRONLY)?;
                        nix::unistd::ftruncate(&fd, size as i64)?;
                    }
                }
            } else {
                self.copy_up(&node, CopyMode::Truncate(size))?;
            }
        }
        if ch.mode.is_some()
            || ch.uid.is_some()
            || ch.gid.is_some()
            || ch.atime.is_some()
            || ch.mtime.is_some()
        {
            self.copy_up(&node, CopyMode::Meta)?;
            let s = node.read();
            let target = self.meta_target(&s)?;
            drop(s);
            self.apply_meta(&target, kind, ch)?;
        }
        self.attr_of(&node, ch.fh)
    }

    /// After an O_TRUNC open by a caller without CAP_FSETID: clears setuid, and setgid
    /// when group-exec is set, as a truncate does everywhere else. With
    /// FUSE_ATOMIC_O_TRUNC the kernel sends no setattr for such an open (the one that
    /// would carry the cleared mode) and leaves the truncation to us.
    pub fn kill_privs_after_trunc(&self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        let perm = u32::from(self.attr_of(&node, None)?.perm);
        let mut new = perm & !libc::S_ISUID;
        if perm & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP) {
            new &= !libc::S_ISGID;
        }
        if new != perm {
            let ch = SetAttr {
                mode: Some(new),
                ..Default::default()
            };
            self.setattr(id, &ch)?;
        }
        Ok(())
    }

    fn apply_meta(&self, t: &MetaTarget, kind: FileKind, ch: &SetAttr) -> Result<()> {
        if ch.uid.is_some() || ch.gid.is_some() {
            let uid = ch.uid.map(nix::unistd::Uid::from_raw);
            let gid = ch.gid.map(nix::unistd::Gid::from_raw);
            match t {
                MetaTarget::Entry(d, n) => {
                    nix::unistd::fchownat(d, n.as_os_str(), uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?
                }
                MetaTarget::Dir(fd) => nix::unistd::fchown(fd, uid, gid)?,
            }
        }
        if let Some(mode) = ch.mode
            && kind != FileKind::Symlink
        {
            let mode = Mode::from_bits_truncate(mode & 0o7777);
            match t {
                MetaTarget::Entry(d, n) => nix::sys::stat::fchmodat(
                    d,
                    n.as_os_str(),
                    mode,
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?,
                MetaTarget::Dir(fd) => nix::sys::stat::fchmod(fd, mode)?,
            }
        }
        if ch.atime.is_some() || ch.mtime.is_some() {
            let a = ch
                .atime
                .as_ref()
                .map(to_timespec)
                .unwrap_or(TimeSpec::UTIME_OMIT);
            let m = ch
                .mtime
                .as_ref()
                .map(to_timespec)
                .unwrap_or(TimeSpec::UTIME_OMIT);
            match t {
                MetaTarget::Entry(d, n) => nix::sys::stat::utimensat(
                    d,
                    n.as_os_str(),
                    &a,
                    &m,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )?,
                MetaTarget::Dir(fd) => nix::sys::stat::futimens(fd, &a, &m)?,
            }
        }
        Ok(())
    }

    /// Opens a directory: takes a snapshot of its merged listing.
    pub fn opendir(&self, id: u64) -> Result<u64> {
        let node = self.node(id)?;
        let (dot, dotdot) = {
            let s = node.read();
            if s.dir.is_none() {
                return Err(FsError::ENOTDIR);
            }
            let pino = s.parent.as_ref().map(|p| p.read().ino).unwrap_or(s.ino);
            (s.ino, pino)
        };
        let fh = self.handles.next_fh();
        let h = Arc::new(DirHandle {
            node,
            listing: Mutex::new(None),
            dot,
            dotdot,
        });
        self.handles
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        Ok(fh)
    }

    /// The listing an open directory reads at `offset`: offset 0 (a fresh read or a
    /// rewind) takes a new snapshot, later offsets keep reading the same one.
    fn handle_listing(&self, h: &DirHandle, offset: u64) -> Result<Arc<Listing>> {
        let mut l = h.listing.lock().unwrap_or_else(|p| p.into_inner());
        match (&*l, offset) {
            (Some(cur), o) if o > 0 => Ok(cur.clone()),
            _ => {
                let fresh = self.dir_listing(&h.node)?;
                *l = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// Hands the entries of an open directory from `offset` on to `add`, each with the
    /// offset of the next one ("." and ".." first), until `add` says the reply is full.
    /// Nothing is copied but the entries handed out, so reading a big directory in many
    /// replies stays linear.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let h = self.handles.dir(fh)?;
        let listing = self.handle_listing(&h, offset)?;
        let dots = [
            DirEntry {
                name: ".".into(),
                kind: FileKind::Directory,
                ino: h.dot,
            },
            DirEntry {
                name: "..".into(),
                kind: FileKind::Directory,
                ino: h.dotdot,
            },
        ];
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let all = dots.iter().chain(listing.entries.iter());
        for (i, e) in all.enumerate().skip(start) {
            if add(i as u64 + 1, e) {
                break;
            }
        }
        Ok(())
    }

    /// readdirplus: like `readdir`, with each entry looked up (counted as a kernel lookup,
    /// so `add` gets the entry and must say whether it was taken). An entry that vanished
    /// since the listing was made is left out.
    pub fn readdirplus(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry, Option<&Entry>) -> bool,
    ) -> Result<()> {
        let h = self.handles.dir(fh)?;
        let dir_id = h.node.id;
        let mut result = Ok(());
        self.readdir(fh, offset, |next, e| {
            if e.name == "." || e.name == ".." {
                return add(next, e, None);
            }
            match self.lookup(dir_id, &e.name) {
                Ok(entry) => {
                    let full = add(next, e, Some(&entry));
                    if full {
                        // Not sent: the kernel will not count this lookup.
                        self.inodes.forget(entry.id, 1);
                    }
                    full
                }
                Err(FsError::ENOENT) => false,
                Err(err) => {
                    result = Err(err);
                    true
                }
            }
        })?;
        result
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles
            .dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    /// fsync of a directory reaches its upper directory.
    pub fn fsyncdir(&self, id: u64) -> Result<()> {
        let node = self.node(id)?;
        let up = node.read().dir.as_ref().and_then(|d| d.upper.clone());
        if let Some(up) = up {
            let fd = open_readable_dir(&up)?;
            nix::unistd::fsync(&fd)?;
        }
        Ok(())
    }

    /// getxattr: `size == 0` asks for the length only.
    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Vec<u8>> {
        if whiteout::is_internal_xattr(name) {
            return Err(FsError::ENODATA);
        }
        let node = self.node(id)?;
        let s = node.read();
        let t = self.read_target(&s)?;
        drop(s);
        Ok(sys::getxattr_sized(t.at(), name, size as usize)?)
    }

    /// listxattr without the union's own names; NUL-separated like the syscall.
    pub fn listxattr(&self, id: u64) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let s = node.read();
        let t = self.read_target(&s)?;
        drop(s);
        let mut out = Vec::new();
        for n in sys::listxattr(t.at())? {
            if !whiteout::is_internal_xattr(&n) {
                out.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()));
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, id: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        if whiteout::is_internal_xattr(name) {
            return Err(FsError::EPERM);
        }
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let node = self.node(id)?;
        self.copy_up(&node, CopyMode::Meta)?;
        let s = node.read();
        let t = self.meta_target(&s)?;
        drop(s);
        sys::setxattr(t.at(), name, value, flags)?;
        Ok(())
    }

    pub fn removexattr(&self, id: u64, name: &OsStr) -> Result<()> {
        if whiteout::is_internal_xattr(name) {
            return Err(FsError::ENODATA);
        }
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let node = self.node(id)?;
        {
            // Removing what is not there must not copy anything up.
            let s = node.read();
            let t = self.read_target(&s)?;
            drop(s);
            if sys::getxattr(t.at(), name)?.is_none() {
                return Err(FsError::ENODATA);
            }
        }
        self.copy_up(&node, CopyMode::Meta)?;
        let s = node.read();
        let t = self.meta_target(&s)?;
        drop(s);
        sys::removexattr(t.at(), name)?;
        Ok(())
    }
}
