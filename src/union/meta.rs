//! Attributes and extended attributes of union nodes: getattr, setattr, readlink and the
//! xattr calls. Changes copy up metadata only where they can (`metacopy`) and always act
//! on the node's own inode ([`super::inode`]).

use std::ffi::OsStr;
use std::os::fd::AsFd;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, fstat, fstatat};
use nix::sys::time::TimeSpec;

use crate::ownership::{self, Override};
use crate::sys::{self, At};
use crate::whiteout;

use super::Union;
use super::attr::{Attr, FileKind};
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::file::{SetAttr, TimeSet};
use super::inode::InodeRef;
use super::node::{DevIno, Node, NodeId, UpperLoc};

/// The xattr that answers which layer serves an entry ([`super::Options::layer_xattr`]).
pub const LAYER_XATTR: &str = "user.layerfs.layer";

fn to_timespec(t: &TimeSet) -> TimeSpec {
    match t {
        TimeSet::Now => TimeSpec::UTIME_NOW,
        TimeSet::At(t) => TimeSpec::new(t.sec, i64::from(t.nsec)),
    }
}

impl Union {
    /// Stat of a node's upper copy, if it has one: one `fstatat` at its name, checked to
    /// be its inode (else through the checked path of [`Union::upper_inode_stat`]).
    fn upper_stat(&self, node: &Node) -> Result<Option<FileStat>> {
        let loc = {
            let s = node.read();
            if let Some(d) = s.dir() {
                return match d.upper() {
                    Some(fd) => Ok(Some(fstat(fd)?)),
                    None => Ok(None),
                };
            }
            if let Some(pin) = s.pin() {
                return Ok(Some(fstat(pin)?));
            }
            match s.upper() {
                None => return Ok(None),
                Some(loc) => loc.clone(),
            }
        };
        let (dir, name) = self.upper_loc_at(&loc)?;
        if let Ok(st) = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            && Some(DevIno::of(&st)) == node.ident().upper
        {
            return Ok(Some(st));
        }
        Ok(Some(self.upper_inode_stat(node)?.1))
    }

    /// The attributes of a node.
    pub(crate) fn attr_of(&self, node: &Node, fh: Option<super::Fh>) -> Result<Attr> {
        if node.is_unlinked() {
            let fd = match fh.and_then(|fh| self.handles.file(fh).ok()) {
                Some(h) => Some(h.fd()),
                None => self.handles.fd_of_node(node.id),
            };
            let st = match fd {
                Some(ref fd) => fstat(fd)?,
                None => match self.upper_stat(node) {
                    Ok(Some(st)) => st,
                    _ => {
                        let s = node.read();
                        match s.lower_only() {
                            Some(l) => l.stat,
                            None => return Err(FsError::ENOENT),
                        }
                    }
                },
            };
            let mut a = Attr::from_stat(&st, node.id.0);
            a.nlink = 0;
            if self.opts.owner_marks {
                match fd {
                    Some(fd) => self.present_record(At::Fd(fd.as_fd()), &mut a),
                    None => {
                        if let Ok(r) = self.read_ref(node) {
                            self.present_record(r.at(), &mut a);
                        }
                    }
                }
            }
            return Ok(a);
        }
        let st = match self.upper_stat(node)? {
            Some(st) => st,
            None => {
                let s = node.read();
                match (s.dir(), s.lower_only()) {
                    (Some(d), _) => d.lower_stat().ok_or(FsError::EIO)?,
                    (None, Some(l)) => l.stat,
                    _ => return Err(FsError::ENOENT),
                }
            }
        };
        let mut a = Attr::from_stat(&st, node.id.0);
        let s = node.read();
        // A metacopy (ours, or a lower one of a rotated layer) has its blocks below.
        if let Some(l) = s.lower()
            && (s.is_metacopy() || (s.upper().is_none() && l.data.is_some()))
        {
            a.blocks = l.data_loc().stat.st_blocks as u64;
        }
        if let Some(UpperLoc::Indexed { key }) = s.upper() {
            a.nlink = self.index_nlink(key, st.st_nlink)?;
        } else if let Some(l) = s.lower_only()
            && l.stat.st_nlink > 1
        {
            a.nlink = l.stat.st_nlink as u32;
        }
        let merged = self.opts.dir_nlink
            && s.dir()
                .is_some_and(|d| usize::from(d.upper().is_some()) + d.lowers().len() > 1);
        let counted = s.dir().and_then(|d| d.listing().subdirs());
        drop(s);
        if self.opts.owner_marks {
            if matches!(a.kind, FileKind::Regular | FileKind::Directory) {
                let r = self.read_ref(node)?;
                self.present_record(r.at(), &mut a);
            } else {
                present_own_as_root(&mut a);
            }
        }
        if merged {
            let subdirs = match counted {
                Some(n) => n,
                None => self.dir_listing(node)?.subdirs,
            };
            a.nlink = 2u32.saturating_add(subdirs);
        }
        Ok(a)
    }

    /// Applies the ownership record of the inode at `at` (rootless layers: see
    /// [`crate::ownership`]) to `a`: the owner, group and mode the mount shows, and what
    /// diff, commit and export write.
    /// Without a record (a symlink, a fifo, what an older store wrote), an entry of
    /// ours is root's: we are the container's root, as a user namespace mapping root to
    /// us would show it (inside one, our ids read as 0 already).
    fn present_record(&self, at: At<'_>, a: &mut Attr) {
        match self.owner_record(at, a.kind) {
            Some(o) => {
                a.uid = o.uid;
                a.gid = o.gid;
                a.perm = o.perm as u16;
                if let Some((kind, (major, minor))) = o.kept_device(a.kind) {
                    a.kind = kind;
                    a.rdev = nix::sys::stat::makedev(u64::from(major), u64::from(minor)) as u32;
                    (a.size, a.blocks) = (0, 0);
                }
            }
            None => present_own_as_root(a),
        }
    }

    /// The ownership record of the inode at `at`, of type `kind`, if the union keeps
    /// records and it has one that applies.
    pub(crate) fn owner_record(&self, at: At<'_>, kind: FileKind) -> Option<Override> {
        if !self.opts.owner_marks || !matches!(kind, FileKind::Regular | FileKind::Directory) {
            return None;
        }
        ownership::read(at).filter(|o| o.applies_to(kind))
    }

    /// Xattr names never shown through the mount: the union's own, and the ownership
    /// records where the union keeps them.
    fn hidden_xattr(&self, name: &OsStr) -> bool {
        whiteout::is_internal_xattr(name)
            || (self.opts.owner_marks && name == OsStr::new(ownership::XATTR))
            || (self.opts.layer_xattr && name == OsStr::new(LAYER_XATTR))
    }

    /// The label of the layer that serves `node`: where its metadata is (the upper
    /// layer once copied up, metadata-only copies included), else its topmost lower
    /// entry's layer.
    fn serving_layer(&self, node: &Node) -> String {
        let layer = {
            let s = node.read();
            if s.has_upper() {
                0
            } else if let Some(d) = s.dir() {
                d.lowers().first().map_or(0, |l| l.layer)
            } else {
                s.lower().map_or(0, |l| l.layer)
            }
        };
        if self.stack.is_upper(layer) {
            return "upper".to_string();
        }
        self.stack
            .layers
            .get(layer)
            .map_or_else(String::new, |l| l.label.clone())
    }

    /// getattr: `fh` when the kernel has an open file at hand.
    pub fn getattr(&self, id: NodeId, fh: Option<super::Fh>) -> Result<Attr> {
        let node = self.node(id)?;
        let mut a = self.attr_of(&node, fh)?;
        // A lower file's stat is kept from its lookup (the layer does not change), but
        // reads move its atime: the kernel asks again after a read, so tell it.
        if self.opts.atime != super::Atime::Never {
            let lower = {
                let s = node.read();
                s.lower_only().map(|l| (l.parent.clone(), l.name.clone()))
            };
            if let Some((dir, name)) = lower
                && let Ok(st) = fstatat(&*dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            {
                a.atime = Attr::from_stat(&st, a.ino).atime;
            }
        }
        Ok(a)
    }

    /// The target of a symlink.
    pub fn readlink(&self, id: NodeId) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        if node.read().kind() != FileKind::Symlink {
            return Err(FsError::EINVAL);
        }
        let target = match self.read_ref(&node)? {
            InodeRef::Fd(fd) => nix::fcntl::readlinkat(&*fd, "")?,
            InodeRef::Lower(d, n) => nix::fcntl::readlinkat(&*d, n.as_os_str())?,
        };
        Ok(std::os::unix::ffi::OsStringExt::into_vec(target))
    }

    /// Changes attributes. Metadata changes of a lower regular file copy up its metadata
    /// only; a size change copies its data.
    pub fn setattr(&self, id: NodeId, ch: &SetAttr) -> Result<Attr> {
        let node = self.node(id)?;
        self.writer()?;
        let kind = node.read().kind();
        if let Some(size) = ch.size {
            if kind.is_dir() {
                return Err(FsError::EISDIR);
            }
            if kind != FileKind::Regular {
                return Err(FsError::EINVAL);
            }
            self.copy_up(&node, CopyMode::Truncate(size))?;
            let fd = match ch.fh.and_then(|fh| self.handles.file(fh).ok()) {
                Some(h) if !h.on_lower() => h.fd(),
                _ => std::sync::Arc::new(self.open_data(&node, OFlag::O_WRONLY)?.0),
            };
            nix::unistd::ftruncate(&*fd, size as i64)?;
        }
        if ch.mode.is_some()
            || ch.uid.is_some()
            || ch.gid.is_some()
            || ch.atime.is_some()
            || ch.mtime.is_some()
        {
            self.copy_up(&node, CopyMode::Meta)?;
            let fd = self.upper_inode(&node)?;
            let mut host = *ch;
            if self.opts.owner_marks {
                // A chown to the owner it has changes nothing (and an entry without a
                // record could not take one it lacks).
                let now = self.attr_of(&node, ch.fh)?;
                host.uid = host.uid.filter(|u| *u != now.uid);
                host.gid = host.gid.filter(|g| *g != now.gid);
            }
            // Ownership kept in a record changes there; the host inode keeps its owner.
            if let Some(mut o) = self.owner_record(At::Fd(fd.as_fd()), kind) {
                o.uid = ch.uid.unwrap_or(o.uid);
                o.gid = ch.gid.unwrap_or(o.gid);
                o.perm = ch.mode.map_or(o.perm, |m| m & 0o7777);
                ownership::write(At::Fd(fd.as_fd()), &o)?;
                (host.uid, host.gid) = (None, None);
            }
            apply_meta(fd.as_fd(), kind, &host)?;
        }
        self.attr_of(&node, ch.fh)
    }

    /// What a data change by a caller without CAP_FSETID does to a file's mode, as the
    /// kernel's `file_remove_privs` does it: setuid goes; setgid goes when group-exec is
    /// set or the caller is not in the file's group (`in_group`, asked only then).
    ///
    /// Called after an O_TRUNC open by such a caller (with FUSE_ATOMIC_O_TRUNC the kernel
    /// sends no setattr for it), and for the empty setattr the kernel sends before such a
    /// caller's write or fallocate when it wants setgid gone but FUSE's own recomputation
    /// (group-exec only) kept it: the case a non-owner outside the group leaves `2666`.
    pub fn kill_privs(&self, id: NodeId, in_group: &dyn Fn(u32) -> bool) -> Result<Attr> {
        let node = self.node(id)?;
        let attr = self.attr_of(&node, None)?;
        let perm = u32::from(attr.perm);
        let mut new = perm & !libc::S_ISUID;
        if perm & libc::S_ISGID != 0 && (perm & libc::S_IXGRP != 0 || !in_group(attr.gid)) {
            new &= !libc::S_ISGID;
        }
        if new == perm || attr.kind.is_dir() {
            return Ok(attr);
        }
        let ch = SetAttr {
            mode: Some(new),
            ..Default::default()
        };
        self.setattr(id, &ch)
    }

    /// getxattr: `size == 0` asks for the length only.
    pub fn getxattr(&self, id: NodeId, name: &OsStr, size: u32) -> Result<Vec<u8>> {
        if self.opts.layer_xattr && name == OsStr::new(LAYER_XATTR) {
            return Ok(self.serving_layer(&*self.node(id)?).into_bytes());
        }
        if self.hidden_xattr(name) {
            return Err(FsError::ENODATA);
        }
        let node = self.node(id)?;
        let r = self.read_ref(&node)?;
        Ok(sys::getxattr_sized(r.at(), name, size as usize)?)
    }

    /// listxattr without the union's own names; NUL-separated like the syscall.
    pub fn listxattr(&self, id: NodeId) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        let r = self.read_ref(&node)?;
        let mut out = Vec::new();
        for n in sys::listxattr(r.at())? {
            if !self.hidden_xattr(&n) {
                out.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(n.as_os_str()));
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        if self.hidden_xattr(name) {
            return Err(FsError::EPERM);
        }
        self.writer()?;
        let node = self.node(id)?;
        self.copy_up(&node, CopyMode::Meta)?;
        let fd = self.upper_inode(&node)?;
        sys::setxattr(At::Fd(fd.as_fd()), name, value, flags)?;
        forget_default_acl(&node);
        Ok(())
    }

    pub fn removexattr(&self, id: NodeId, name: &OsStr) -> Result<()> {
        if self.hidden_xattr(name) {
            return Err(FsError::ENODATA);
        }
        self.writer()?;
        let node = self.node(id)?;
        // Removing what is not there must not copy anything up.
        if sys::getxattr(self.read_ref(&node)?.at(), name)?.is_none() {
            return Err(FsError::ENODATA);
        }
        self.copy_up(&node, CopyMode::Meta)?;
        let fd = self.upper_inode(&node)?;
        sys::removexattr(At::Fd(fd.as_fd()), name)?;
        forget_default_acl(&node);
        Ok(())
    }
}

/// An entry of ours without a record is root's (see [`Union::present_record`]).
fn present_own_as_root(a: &mut Attr) {
    let (uid, gid) = ownership::own_ids();
    if a.uid == uid {
        a.uid = 0;
    }
    if a.gid == gid {
        a.gid = 0;
    }
}

/// A directory's ACLs changed: what it passes on is read again at the next create.
fn forget_default_acl(node: &Node) {
    node.write().default_acl_changed();
}

/// Applies owner, mode and time changes to the inode `fd` holds.
fn apply_meta(fd: std::os::fd::BorrowedFd<'_>, kind: FileKind, ch: &SetAttr) -> Result<()> {
    if ch.uid.is_some() || ch.gid.is_some() {
        sys::chown_fd(fd, ch.uid, ch.gid)?;
    }
    if let Some(mode) = ch.mode
        && kind != FileKind::Symlink
    {
        sys::chmod_fd(fd, mode & 0o7777)?;
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
        sys::utimens_fd(fd, &a, &m)?;
    }
    Ok(())
}
