//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//!
//! Each change is made visible by one syscall on the upper layer (a create, a rename, a
//! `RENAME_WHITEOUT` or `RENAME_EXCHANGE`); anything that must be prepared (a copy-up,
//! a new entry that replaces a whiteout) is staged in the work directory first.
//!
//! Deleting a name that a lower layer has leaves a whiteout; a directory created where a
//! whiteout is becomes opaque; a renamed directory that merges lower directories records
//! where they are (`redirect`), so `rename(2)` of any directory succeeds, atomically,
//! without copying its tree (kernel overlayfs' `redirect_dir`).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

use crate::sys::At;
use crate::whiteout;

use super::attr::FileKind;
use super::error::{FsError, Result};
use super::file::OpenReply;
use super::layer::{empty_dir, index_key};
use super::lookup::{Resolved, open_dir_at, stat_at};
use super::node::{DirInfo, DirSnapshot, Node, UpperLoc};
use super::xattr;
use super::{Caller, Entry, Union};

/// What kind of entry to create.
#[derive(Debug, Clone, Copy)]
enum NewKind<'a> {
    File { flags: i32 },
    Dir,
    Special { sflag: SFlag, rdev: u64 },
    Symlink(&'a OsStr),
}

/// What occupies a name in the upper directory, for an entry about to land there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    /// A char 0/0 whiteout (or an xattr whiteout file).
    Whiteout,
    /// A `.wh.NAME` file beside an empty slot.
    WhFile,
}

const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
/// The shared whiteout inode, in the work directory.
const SHARED_WHITEOUT: &str = "layerfs-whiteout";
const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;

impl Union {
    fn slot(&self, pfd: &OwnedFd, name: &OsStr) -> Result<Slot> {
        match stat_at(pfd, name)? {
            Some(st) if whiteout::is_whiteout_device(&st) => Ok(Slot::Whiteout),
            Some(_) => Err(FsError::EEXIST),
            None => {
                if self.stack.wh_files(0)
                    && stat_at(pfd, &whiteout::whiteout_file_name(name))?.is_some()
                {
                    Ok(Slot::WhFile)
                } else {
                    Ok(Slot::Empty)
                }
            }
        }
    }

    /// Creates a new entry `name` in directory `parent` owned by the caller; returns its
    /// node, the open file (for a regular file) and its stat.
    fn make_entry(
        &self,
        parent: u64,
        name: &OsStr,
        caller: &Caller,
        mode: u32,
        kind: NewKind<'_>,
    ) -> Result<(Arc<Node>, Option<OwnedFd>, FileStat)> {
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        self.check_name(name)?;
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        // Is the name free? The upper directory decides, else the lower ones.
        let slot = match &snap.upper {
            Some(u) => self.slot(u, name)?,
            None => Slot::Empty,
        };
        if slot == Slot::Empty && self.resolve_lowers(&snap.lowers, name)?.is_some() {
            return Err(FsError::EEXIST);
        }
        let pfd = self.copy_up_dir(&pnode)?;
        // The upper parent carries the merged parent's owner and mode.
        let pst = nix::sys::stat::fstat(&pfd)?;
        let setgid_parent = pst.st_mode & libc::S_ISGID != 0;
        let gid = if setgid_parent {
            pst.st_gid
        } else {
            caller.gid
        };
        let mut perm = mode & 0o7777 & !caller.umask;
        if setgid_parent && matches!(kind, NewKind::Dir) {
            perm |= libc::S_ISGID;
        }
        let tmp;
        let (dir, cname): (&OwnedFd, &OsStr) = if slot == Slot::Whiteout {
            tmp = up.tmp_name();
            (&up.tmp, OsStr::new(&tmp))
        } else {
            (&pfd, name)
        };
        let mut fd = None;
        match kind {
            NewKind::File { flags } => {
                let pass = OFlag::from_bits_truncate(
                    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC),
                );
                fd = Some(openat(
                    dir,
                    cname,
                    pass | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(perm),
                )?);
            }
            NewKind::Dir => nix::sys::stat::mkdirat(dir, cname, Mode::from_bits_truncate(perm))?,
            NewKind::Special { sflag, rdev } => {
                nix::sys::stat::mknodat(dir, cname, sflag, Mode::from_bits_truncate(perm), rdev)?
            }
            NewKind::Symlink(target) => nix::unistd::symlinkat(target, dir, cname)?,
        }
        let stat_new = |fd: &Option<OwnedFd>| -> Result<FileStat> {
            Ok(match fd {
                Some(f) => nix::sys::stat::fstat(f)?,
                None => nix::sys::stat::fstatat(dir, cname, AtFlags::AT_SYMLINK_NOFOLLOW)?,
            })
        };
        let finish = (|| -> Result<FileStat> {
            let mut st = stat_new(&fd)?;
            // We create as ourselves: give the entry to the caller (a no-op skipped for
            // root's own creations), then put back bits chown clears.
            if st.st_uid != caller.uid || st.st_gid != gid {
                fchownat(
                    dir,
                    cname,
                    Some(Uid::from_raw(caller.uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
                st = stat_new(&fd)?;
            }
            if !matches!(kind, NewKind::Symlink(_)) && st.st_mode & 0o7777 != perm {
                nix::sys::stat::fchmodat(
                    dir,
                    cname,
                    Mode::from_bits_truncate(perm),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )?;
                st = stat_new(&fd)?;
            }
            match slot {
                Slot::Empty => {}
                Slot::Whiteout => {
                    if matches!(kind, NewKind::Dir) {
                        // Something lower had this name: the new directory hides it all.
                        let nfd = open_dir_at(dir, cname)?;
                        whiteout::set_opaque(nfd.as_fd(), up.styles.opaque)?;
                        renameat2(dir, cname, &pfd, name, RenameFlags::RENAME_EXCHANGE)?;
                        unlinkat(dir, cname, UnlinkatFlags::NoRemoveDir)?;
                    } else {
                        renameat(dir, cname, &pfd, name)?;
                    }
                }
                Slot::WhFile => {
                    if matches!(kind, NewKind::Dir) {
                        let nfd = open_dir_at(dir, cname)?;
                        whiteout::set_opaque(nfd.as_fd(), up.styles.opaque)?;
                    }
                    unlinkat(
                        &pfd,
                        whiteout::whiteout_file_name(name).as_os_str(),
                        UnlinkatFlags::NoRemoveDir,
                    )?;
                }
            }
            Ok(st)
        })();
        let st = match finish {
            Ok(st) => st,
            Err(e) => {
                let flag = if matches!(kind, NewKind::Dir) {
                    UnlinkatFlags::RemoveDir
                } else {
                    UnlinkatFlags::NoRemoveDir
                };
                let _ = unlinkat(dir, cname, flag);
                return Err(e);
            }
        };
        let is_dir = matches!(kind, NewKind::Dir);
        self.dir_changed(&pnode, i32::from(is_dir));
        // The node, from what we just made: a new upper entry with nothing below it.
        let r = Resolved {
            kind: FileKind::from_mode(st.st_mode),
            ino: self.stack.map_ino(0, st.st_ino),
            lower: None,
            upper: (!is_dir).then(|| UpperLoc::Named {
                parent: pfd.clone(),
                name: name.to_owned(),
            }),
            metacopy: false,
            dir: if is_dir {
                Some(DirInfo {
                    upper: Some(open_dir_at(&pfd, name)?),
                    ..Default::default()
                })
            } else {
                None
            },
        };
        Ok((self.intern(&pnode, name, r), fd, st))
    }

    /// The entry the kernel gets for a node just made, from its stat.
    fn new_entry(&self, node: &Node, st: &FileStat) -> Entry {
        Entry {
            id: node.id,
            generation: node.generation,
            attr: super::Attr::from_stat(st, node.id),
            ttl: self.opts.upper_ttl,
        }
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: &Caller,
    ) -> Result<(Entry, OpenReply)> {
        let (node, fd, st) =
            self.make_entry(parent, name, caller, mode, NewKind::File { flags })?;
        let fd = fd.ok_or(FsError::EIO)?;
        let entry = self.new_entry(&node, &st);
        let fh = self.register_file(node, fd, false);
        Ok((
            entry,
            OpenReply {
                fh,
                keep_cache: false,
            },
        ))
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: &Caller) -> Result<Entry> {
        let (node, _, st) = self.make_entry(parent, name, caller, mode, NewKind::Dir)?;
        Ok(self.new_entry(&node, &st))
    }

    /// mknod: fifos, sockets, devices (and regular files, as mknod(2) allows).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: &Caller,
    ) -> Result<Entry> {
        let kind = match FileKind::from_mode(mode) {
            FileKind::Regular => NewKind::File {
                flags: libc::O_RDONLY,
            },
            FileKind::Directory => return Err(FsError::EINVAL),
            FileKind::Symlink => return Err(FsError::EINVAL),
            FileKind::Fifo => NewKind::Special {
                sflag: SFlag::S_IFIFO,
                rdev: 0,
            },
            FileKind::Socket => NewKind::Special {
                sflag: SFlag::S_IFSOCK,
                rdev: 0,
            },
            FileKind::CharDevice => NewKind::Special {
                sflag: SFlag::S_IFCHR,
                rdev,
            },
            FileKind::BlockDevice => NewKind::Special {
                sflag: SFlag::S_IFBLK,
                rdev,
            },
        };
        let (node, _, st) = self.make_entry(parent, name, caller, mode, kind)?;
        Ok(self.new_entry(&node, &st))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        caller: &Caller,
    ) -> Result<Entry> {
        let (node, _, st) =
            self.make_entry(parent, name, caller, 0o777, NewKind::Symlink(target))?;
        Ok(self.new_entry(&node, &st))
    }

    /// Gives node `node` a stable upper name in the index; returns its key.
    fn ensure_indexed(&self, node: &Arc<Node>) -> Result<String> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let _g = node.copy_guard();
        let mut s = node.write();
        match s.upper.clone() {
            Some(UpperLoc::Indexed { key }) => Ok(key),
            Some(UpperLoc::Named { parent, name }) => {
                let key = index_key(s.ino);
                nix::unistd::linkat(
                    &*parent,
                    name.as_os_str(),
                    &*up.index,
                    key.as_str(),
                    AtFlags::empty(),
                )?;
                let at = At::Entry(up.index.as_fd(), OsStr::new(&key));
                xattr::set(at, up.ns(), xattr::NLINK, b"1")?;
                xattr::set(at, up.ns(), xattr::ORIGIN, s.ino.to_string().as_bytes())?;
                s.upper = Some(UpperLoc::Indexed { key: key.clone() });
                Ok(key)
            }
            None => Err(FsError::EIO),
        }
    }

    /// Adds `delta` to the visible link count of an indexed inode; at zero the index name
    /// goes (open fds keep the data alive).
    fn adjust_nlink(&self, key: &str, delta: i64) -> Result<u32> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let at = At::Entry(up.index.as_fd(), OsStr::new(key));
        let cur = match xattr::read_marks(at)?.nlink {
            Some(n) => i64::from(n),
            None => match stat_at(&up.index, OsStr::new(key))? {
                Some(st) => st.st_nlink as i64 - 1,
                None => return Ok(0),
            },
        };
        let new = (cur + delta).max(0);
        if new == 0 {
            unlinkat(&*up.index, key, UnlinkatFlags::NoRemoveDir)?;
        } else {
            xattr::set(at, up.ns(), xattr::NLINK, new.to_string().as_bytes())?;
        }
        Ok(new as u32)
    }

    /// link(2): a new name for a non-directory.
    pub fn link(&self, id: u64, newparent: u64, newname: &OsStr) -> Result<Entry> {
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        self.check_name(newname)?;
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(FsError::EPERM);
        }
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let pnode = self.node(newparent)?;
        let snap = self.dir_snapshot(&pnode)?;
        if self.resolve(&snap, newname)?.is_some() {
            return Err(FsError::EEXIST);
        }
        let pfd = self.copy_up_dir(&pnode)?;
        self.copy_up(&node, super::copyup::CopyMode::Full)?;
        let key = self.ensure_indexed(&node)?;
        match self.slot(&pfd, newname)? {
            Slot::Whiteout => {
                let t = up.tmp_name();
                nix::unistd::linkat(
                    &*up.index,
                    key.as_str(),
                    &*up.tmp,
                    t.as_str(),
                    AtFlags::empty(),
                )?;
                if let Err(e) = renameat(&*up.tmp, t.as_str(), &pfd, newname) {
                    let _ = unlinkat(&*up.tmp, t.as_str(), UnlinkatFlags::NoRemoveDir);
                    return Err(e.into());
                }
            }
            Slot::WhFile => {
                nix::unistd::linkat(&*up.index, key.as_str(), &pfd, newname, AtFlags::empty())?;
                unlinkat(
                    &pfd,
                    whiteout::whiteout_file_name(newname).as_os_str(),
                    UnlinkatFlags::NoRemoveDir,
                )?;
            }
            Slot::Empty => {
                nix::unistd::linkat(&*up.index, key.as_str(), &pfd, newname, AtFlags::empty())?;
            }
        }
        self.adjust_nlink(&key, 1)?;
        self.mark_impure(&pnode, &pfd)?;
        self.dir_changed(&pnode, 0);
        self.inodes.add_lookup(&node);
        self.entry(&node)
    }

    /// Moves upper entry `name` of `pfd` into the staging directory, leaving a whiteout
    /// in its place when `whiteout` is set; returns the staged name.
    fn move_aside(&self, pfd: &OwnedFd, name: &OsStr, whiteout: bool) -> Result<String> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let t = up.tmp_name();
        self.rename_leaving(pfd, name, &up.tmp, OsStr::new(&t), whiteout)?;
        Ok(t)
    }

    /// Renames within the upper layer, leaving a whiteout at the source if asked: in one
    /// step with RENAME_WHITEOUT, else (no CAP_MKNOD) rename then whiteout.
    fn rename_leaving(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
        whiteout: bool,
    ) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        if !whiteout {
            renameat(from_dir, from, to_dir, to)?;
            return Ok(());
        }
        if up.styles.whiteout == whiteout::WhiteoutStyle::CharDevice {
            match renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_WHITEOUT) {
                Ok(()) => return Ok(()),
                Err(Errno::EINVAL) | Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        renameat(from_dir, from, to_dir, to)?;
        whiteout::create_whiteout(from_dir.as_fd(), from, up.styles.whiteout)?;
        Ok(())
    }

    /// Removes a staged entry (a file, or a directory that only holds whiteouts).
    fn drop_staged(&self, name: &str) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        match unlinkat(&*up.tmp, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(()),
            Err(Errno::EISDIR) => {
                let fd = openat(
                    &*up.tmp,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                empty_dir(fd.as_fd())?;
                unlinkat(&*up.tmp, name, UnlinkatFlags::RemoveDir)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Readies a node that is about to lose a name: a hard-linked lower file is copied up
    /// to the index first (as kernel overlayfs does with `index=on`), so its visible link
    /// count is kept there and no later copy-up is made at the removed name (the node's
    /// name is whichever of its names was looked up first).
    fn before_name_removal(&self, node: &Arc<Node>) -> Result<()> {
        let hardlinked_lower = {
            let s = node.read();
            s.dir.is_none()
                && s.upper.is_none()
                && s.lower.as_ref().is_some_and(|l| l.stat.st_nlink > 1)
        };
        if hardlinked_lower {
            self.copy_up(node, super::copyup::CopyMode::Full)?;
        }
        Ok(())
    }

    /// Makes `name` in upper directory `pfd` a name of indexed `node`, if it is not there
    /// yet: the upper copy of a hard-linked node is made at the name it was first looked
    /// up by, which need not be the name a rename moves.
    fn ensure_upper_name(&self, node: &Node, pfd: &OwnedFd, name: &OsStr) -> Result<()> {
        let key = match &node.read().upper {
            Some(UpperLoc::Indexed { key }) => key.clone(),
            _ => return Ok(()),
        };
        if stat_at(pfd, name)?.is_some() {
            return Ok(());
        }
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        nix::unistd::linkat(&*up.index, key.as_str(), pfd, name, AtFlags::empty())?;
        Ok(())
    }

    /// Bookkeeping once a name of `node` is gone.
    fn name_removed(&self, node: &Arc<Node>) -> Result<()> {
        let upper = node.read().upper.clone();
        if let Some(UpperLoc::Indexed { key }) = upper {
            if self.adjust_nlink(&key, -1)? > 0 {
                return Ok(());
            }
        } else {
            let s = node.read();
            // Other names of a hard-linked lower file may still show it.
            if s.upper.is_none() && s.lower.as_ref().is_some_and(|l| l.stat.st_nlink > 1) {
                return Ok(());
            }
        }
        node.write().unlinked = true;
        Ok(())
    }

    /// Removes name `name` from the union view of `pnode` (whose snapshot before any
    /// copy-up is `snap`).
    fn remove_name(
        &self,
        pnode: &Arc<Node>,
        snap: &DirSnapshot,
        name: &OsStr,
        is_dir: bool,
    ) -> Result<()> {
        let pfd = self.copy_up_dir(pnode)?;
        let has_lower = self.resolve_lowers(&snap.lowers, name)?.is_some();
        let in_upper = stat_at(&pfd, name)?.is_some_and(|st| !whiteout::is_whiteout_device(&st));
        if in_upper && has_lower {
            // Replace the upper entry by a whiteout in one step, then drop it.
            let t = self.swap_with_whiteout(&pfd, name)?;
            self.drop_staged(&t)?;
        } else if in_upper {
            let flag = if is_dir {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            match unlinkat(&*pfd, name, flag) {
                Ok(()) => {}
                // A directory holding whiteouts (of a lower layer it no longer covers):
                // take it out of sight first, then empty it.
                Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {
                    let t = self.move_aside(&pfd, name, false)?;
                    self.drop_staged(&t)?;
                }
                Err(e) => return Err(e.into()),
            }
        } else if has_lower {
            self.put_whiteout(&pfd, name)?;
        } else {
            return Err(FsError::ENOENT);
        }
        self.dir_changed(pnode, -i32::from(is_dir));
        Ok(())
    }

    /// Makes `name` in upper directory `dir` a whiteout by linking the shared whiteout
    /// inode there (kernel overlayfs' trick: a link costs far less than a mknod).
    fn put_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        if up.styles.whiteout == whiteout::WhiteoutStyle::CharDevice {
            for _ in 0..2 {
                match nix::unistd::linkat(&up.work, SHARED_WHITEOUT, dir, name, AtFlags::empty()) {
                    Ok(()) => return Ok(()),
                    // None yet, or too many links on it.
                    Err(Errno::ENOENT) | Err(Errno::EMLINK) => self.new_shared_whiteout()?,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        whiteout::create_whiteout(dir.as_fd(), name, up.styles.whiteout)?;
        Ok(())
    }

    /// Replaces the shared whiteout inode by a fresh one.
    fn new_shared_whiteout(&self) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let t = up.tmp_name();
        whiteout::create_whiteout(
            up.tmp.as_fd(),
            OsStr::new(&t),
            whiteout::WhiteoutStyle::CharDevice,
        )?;
        renameat(&*up.tmp, t.as_str(), &up.work, SHARED_WHITEOUT)?;
        Ok(())
    }

    /// Swaps upper entry `name` of `dir` with a whiteout in one step; returns the staged
    /// name the entry now has.
    fn swap_with_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Result<String> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        let t = up.tmp_name();
        self.put_whiteout(&up.tmp, OsStr::new(&t))?;
        match renameat2(
            dir,
            name,
            &*up.tmp,
            t.as_str(),
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => Ok(t),
            Err(_) => {
                // No RENAME_EXCHANGE here: rename with a whiteout left behind instead.
                let _ = unlinkat(&*up.tmp, t.as_str(), UnlinkatFlags::NoRemoveDir);
                self.move_aside(dir, name, true)
            }
        }
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        let r = self.resolve(&snap, name)?.ok_or(FsError::ENOENT)?;
        if r.kind.is_dir() {
            return Err(FsError::EISDIR);
        }
        let node = self.node_for(&pnode, name, r);
        self.before_name_removal(&node)?;
        self.remove_name(&pnode, &snap, name, false)?;
        self.name_removed(&node)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        let r = self.resolve(&snap, name)?.ok_or(FsError::ENOENT)?;
        if !r.kind.is_dir() {
            return Err(FsError::ENOTDIR);
        }
        let node = self.node_for(&pnode, name, r);
        if !self.is_empty_dir(&self.dir_snapshot(&node)?)? {
            return Err(FsError::ENOTEMPTY);
        }
        self.remove_name(&pnode, &snap, name, true)?;
        self.name_removed(&node)
    }

    /// The path of a directory node's lower directories in the lower layers' namespace
    /// ("" for the root).
    fn lower_path(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        let (parent, name, upper) = {
            let s = node.read();
            (
                s.parent.clone(),
                s.name.clone(),
                s.dir.as_ref().and_then(|d| d.upper.clone()),
            )
        };
        let Some(parent) = parent else {
            return Ok(Vec::new());
        };
        if let Some(up) = upper
            && let Some(r) = xattr::read_marks(At::Fd(up.as_fd()))?.redirect
        {
            if r.starts_with(b"/") {
                return Ok(r);
            }
            let mut p = self.lower_path(&parent)?;
            p.push(b'/');
            p.extend_from_slice(&r);
            return Ok(p);
        }
        let mut p = self.lower_path(&parent)?;
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
        Ok(p)
    }

    /// Readies `node` to move to another name: it gets an upper copy, and a directory
    /// records where its lower directories are (or that it has none).
    fn prepare_move(&self, node: &Arc<Node>) -> Result<()> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EROFS)?;
        if !node.is_dir() {
            return self.copy_up(node, super::copyup::CopyMode::Full);
        }
        let fd = self.copy_up_dir(node)?;
        let has_lowers = node
            .read()
            .dir
            .as_ref()
            .is_some_and(|d| !d.lowers.is_empty());
        let marks = xattr::read_marks(At::Fd(fd.as_fd()))?;
        if has_lowers {
            if marks.redirect.is_none() {
                let path = self.lower_path(node)?;
                xattr::set(At::Fd(fd.as_fd()), up.ns(), xattr::REDIRECT, &path)?;
            }
        } else if !marks.opaque {
            whiteout::set_opaque(fd.as_fd(), up.styles.opaque)?;
        }
        Ok(())
    }

    /// Points `node` at its new name after a rename.
    fn moved(&self, node: &Arc<Node>, parent: &Arc<Node>, pfd: &Arc<OwnedFd>, name: &OsStr) {
        let mut s = node.write();
        s.parent = Some(parent.clone());
        s.name = name.to_owned();
        if let Some(UpperLoc::Named { .. }) = s.upper {
            s.upper = Some(UpperLoc::Named {
                parent: pfd.clone(),
                name: name.to_owned(),
            });
        }
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
    pub fn rename(&self, p1: u64, n1: &OsStr, p2: u64, n2: &OsStr, flags: u32) -> Result<()> {
        if self.read_only() {
            return Err(FsError::EROFS);
        }
        let exchange = flags & RENAME_EXCHANGE != 0;
        let noreplace = flags & RENAME_NOREPLACE != 0;
        if flags & !(RENAME_EXCHANGE | RENAME_NOREPLACE) != 0 || (exchange && noreplace) {
            return Err(FsError::EINVAL);
        }
        self.check_name(n2)?;
        let pn1 = self.node(p1)?;
        let pn2 = self.node(p2)?;
        let snap1 = self.dir_snapshot(&pn1)?;
        let snap2 = self.dir_snapshot(&pn2)?;
        let src = self.resolve(&snap1, n1)?.ok_or(FsError::ENOENT)?;
        let dst = self.resolve(&snap2, n2)?;
        if exchange && dst.is_none() {
            return Err(FsError::ENOENT);
        }
        if let Some(d) = &dst {
            if noreplace {
                return Err(FsError::EEXIST);
            }
            if d.ino == src.ino && !exchange {
                return Ok(()); // two names of one inode: POSIX says do nothing
            }
            if !exchange {
                match (src.kind.is_dir(), d.kind.is_dir()) {
                    (true, false) => return Err(FsError::ENOTDIR),
                    (false, true) => return Err(FsError::EISDIR),
                    (true, true) => {
                        let ds = d.dir.as_ref().map(|di| di.snapshot()).unwrap_or_default();
                        let live = self
                            .inodes
                            .by_ino(d.ino)
                            .and_then(|n| self.dir_snapshot(&n).ok());
                        if !self.is_empty_dir(&live.unwrap_or(ds))? {
                            return Err(FsError::ENOTEMPTY);
                        }
                    }
                    (false, false) => {}
                }
            }
        }
        let src_is_dir = src.kind.is_dir();
        let dst_is_dir = dst.as_ref().is_some_and(|d| d.kind.is_dir());
        let snode = self.node_for(&pn1, n1, src);
        let dnode = dst.map(|d| self.node_for(&pn2, n2, d));
        let pfd1 = self.copy_up_dir(&pn1)?;
        let pfd2 = self.copy_up_dir(&pn2)?;
        self.prepare_move(&snode)?;
        self.ensure_upper_name(&snode, &pfd1, n1)?;

        if exchange {
            let dnode = dnode.ok_or(FsError::ENOENT)?;
            self.prepare_move(&dnode)?;
            self.ensure_upper_name(&dnode, &pfd2, n2)?;
            renameat2(&*pfd1, n1, &*pfd2, n2, RenameFlags::RENAME_EXCHANGE)?;
            self.moved(&snode, &pn2, &pfd2, n2);
            self.moved(&dnode, &pn1, &pfd1, n1);
            self.mark_impure(&pn1, &pfd1)?;
            self.mark_impure(&pn2, &pfd2)?;
            let swap = i32::from(dst_is_dir) - i32::from(src_is_dir);
            self.dir_changed(&pn1, swap);
            self.dir_changed(&pn2, -swap);
            return Ok(());
        }

        if let Some(d) = &dnode {
            self.before_name_removal(d)?;
        }
        let need_wh = self.resolve_lowers(&snap1.lowers, n1)?.is_some();
        let mut target_wh = false;
        match stat_at(&pfd2, n2)? {
            Some(st) if whiteout::is_whiteout_device(&st) => target_wh = true,
            Some(st) if FileKind::from_mode(st.st_mode).is_dir() => {
                // An empty merged directory: clear out its whiteouts before replacing it.
                let d_lower = self.resolve_lowers(&snap2.lowers, n2)?.is_some();
                let t = self.move_aside(&pfd2, n2, d_lower)?;
                self.drop_staged(&t)?;
                target_wh = d_lower;
            }
            Some(_) => {}
            None => {
                if self.stack.wh_files(0) {
                    let wh = whiteout::whiteout_file_name(n2);
                    if stat_at(&pfd2, &wh)?.is_some() {
                        unlinkat(&*pfd2, wh.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
                    }
                }
            }
        }
        if target_wh && src_is_dir {
            // rename(2) cannot put a directory over a whiteout: swap them, then keep the
            // whiteout at the old name only if a lower entry is there to hide.
            renameat2(&*pfd1, n1, &*pfd2, n2, RenameFlags::RENAME_EXCHANGE)?;
            if !need_wh {
                unlinkat(&*pfd1, n1, UnlinkatFlags::NoRemoveDir)?;
            }
        } else {
            self.rename_leaving(&pfd1, n1, &pfd2, n2, need_wh)?;
        }
        self.moved(&snode, &pn2, &pfd2, n2);
        if let Some(d) = dnode {
            self.name_removed(&d)?;
        }
        self.mark_impure(&pn2, &pfd2)?;
        self.dir_changed(&pn1, -i32::from(src_is_dir));
        self.dir_changed(&pn2, i32::from(src_is_dir) - i32::from(dst_is_dir));
        Ok(())
    }
}
