//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir (`rename.rs`
//! has rename).
//!
//! Each change is made visible by one syscall on the upper layer (a create, a rename, a
//! `RENAME_WHITEOUT` or `RENAME_EXCHANGE`); anything that must be prepared (a copy-up,
//! a new entry that replaces a whiteout) is staged in the work directory first, all of it
//! through the upper layer's [`Writer`].
//!
//! Deleting a name that a lower layer has leaves a whiteout; a directory created where a
//! whiteout is becomes opaque. A node that loses a name is pinned first (see
//! [`super::inode`]), so an open file stays reachable and its inode number stays taken.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::sys::{self, At};
use crate::whiteout;

use super::attr::FileKind;
use super::copyup::CopyMode;
use super::error::{Context, FsError, Result};
use super::file::OpenReply;
use super::lookup::{Resolved, open_dir_at, stat_at};
use super::node::{Body, Content, DevIno, DirInfo, DirSnapshot, Ident, Node, NodeId, UpperLoc};
use super::upper::{Slot, Writer};
use super::{Caller, Entry, Union};

/// What kind of entry to create.
#[derive(Debug, Clone, Copy)]
enum NewKind<'a> {
    File { flags: i32 },
    Dir,
    Special { sflag: SFlag, rdev: u64 },
    Symlink(&'a OsStr),
}

impl NewKind<'_> {
    fn is_dir(&self) -> bool {
        matches!(self, NewKind::Dir)
    }
}

/// The name of the new entry inside an inheriting staging directory.
const STAGED_NAME: &str = "entry";

/// The xattr that holds a directory's default ACL.
const DEFAULT_ACL_XATTR: &str = "system.posix_acl_default";

impl Writer<'_> {
    /// A staging directory `tmp` that passes on to what is made in it what the upper
    /// directory of stat `pst` passes on: its group and setgid bit, its default ACL.
    fn inheriting_stage(&self, tmp: &str, pst: &FileStat, acl: Option<&[u8]>) -> Result<OwnedFd> {
        let mode = 0o700 | (pst.st_mode & libc::S_ISGID);
        nix::sys::stat::mkdirat(&*self.up.tmp, tmp, Mode::from_bits_truncate(0o700))?;
        let fd = openat(
            &*self.up.tmp,
            tmp,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        sys::chown_fd(fd.as_fd(), None, Some(pst.st_gid))?;
        sys::chmod_fd(fd.as_fd(), mode)?;
        if let Some(acl) = acl {
            sys::setxattr(At::Fd(fd.as_fd()), OsStr::new(DEFAULT_ACL_XATTR), acl, 0)?;
        }
        Ok(fd)
    }

    /// Removes an inheriting staging directory (empty by now), if one was made.
    fn drop_stage(&self, tmp: &str, made: bool) {
        if made {
            let _ = unlinkat(&*self.up.tmp, tmp, UnlinkatFlags::RemoveDir);
        }
    }

    /// Makes entry `cname` in `dir` (the upper parent, or the staging directory);
    /// returns an fd of it: the open file for a regular file, else an `O_PATH` fd.
    fn make_raw(
        &self,
        dir: &OwnedFd,
        cname: &OsStr,
        perm: u32,
        kind: NewKind<'_>,
    ) -> Result<OwnedFd> {
        let mode = Mode::from_bits_truncate(perm);
        let path_fd = |extra: OFlag| {
            openat(
                dir,
                cname,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | extra,
                Mode::empty(),
            )
        };
        match kind {
            NewKind::File { flags } => {
                let pass = OFlag::from_bits_truncate(
                    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC),
                );
                Ok(openat(
                    dir,
                    cname,
                    pass | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    mode,
                )?)
            }
            NewKind::Dir => {
                nix::sys::stat::mkdirat(dir, cname, mode)?;
                Ok(path_fd(OFlag::O_DIRECTORY)?)
            }
            NewKind::Special { sflag, rdev } => {
                nix::sys::stat::mknodat(dir, cname, sflag, mode, rdev)?;
                Ok(path_fd(OFlag::empty())?)
            }
            NewKind::Symlink(target) => {
                nix::unistd::symlinkat(target, dir, cname)?;
                Ok(path_fd(OFlag::empty())?)
            }
        }
    }
}

impl Union {
    /// Creates a new entry `name` in directory `parent` owned by the caller; returns its
    /// node, the open file (for a regular file) and its stat.
    fn make_entry(
        &self,
        parent: NodeId,
        name: &OsStr,
        caller: &Caller,
        mode: u32,
        kind: NewKind<'_>,
    ) -> Result<(Arc<Node>, Option<OwnedFd>, FileStat)> {
        let w = self.writer()?;
        self.check_name(name)?;
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        // Is the name free? The upper directory decides, else the lower ones.
        let slot = match &snap.upper {
            Some(u) => w.slot(u, name)?,
            None => Slot::Empty,
        };
        if slot == Slot::Empty && self.resolve_lowers(&snap.lowers, name)?.is_some() {
            return Err(FsError::EEXIST);
        }
        let pfd = self.copy_up_dir(&pnode)?;
        // The upper parent carries the merged parent's owner, mode and ACLs.
        let pst = fstat(&pfd)?;
        // Where ownership is kept in records, the entry gets one instead of a chown (the
        // parent's setgid and group are its record's too).
        let marked = self.opts.owner_marks && matches!(kind, NewKind::File { .. } | NewKind::Dir);
        let (pperm, pgid) = if self.opts.owner_marks {
            let a = self.attr_of(&pnode, None)?;
            (u32::from(a.perm), a.gid)
        } else {
            (pst.st_mode, pst.st_gid)
        };
        let setgid_parent = pperm & libc::S_ISGID != 0;
        let gid = if setgid_parent { pgid } else { caller.gid };
        // POSIX.1e: under a default ACL the umask does not apply; the ACL masks the mode
        // (the backing filesystem does it, and passes the ACL on, as it does for setgid).
        let default_acl = self.default_acl(&pnode, &pfd)?;
        let perm = if default_acl.is_some() {
            mode & 0o7777
        } else {
            mode & 0o7777 & !caller.umask
        };
        // Over a whiteout the entry is made in the work directory and renamed into place:
        // in a staging directory that passes on what the parent passes on, if anything.
        let tmp = w.tmp_name();
        let stage = if slot != Slot::Whiteout {
            None
        } else if setgid_parent || default_acl.is_some() {
            Some(w.inheriting_stage(&tmp, &pst, default_acl.as_deref())?)
        } else {
            None
        };
        let (dir, cname): (&OwnedFd, &OsStr) = match (&stage, slot) {
            (Some(sd), _) => (sd, OsStr::new(STAGED_NAME)),
            (None, Slot::Whiteout) => (&w.up.tmp, OsStr::new(&tmp)),
            (None, _) => (&pfd, name),
        };
        let made = w.make_raw(dir, cname, perm, kind);
        let fd = match made {
            Ok(fd) => fd,
            Err(e) => {
                w.drop_stage(&tmp, stage.is_some());
                return Err(e);
            }
        };
        let finish = (|| -> Result<FileStat> {
            let made = fstat(&fd)?;
            let mut st = made;
            if marked {
                let mut perm = st.st_mode & 0o7777;
                if kind.is_dir() && setgid_parent {
                    perm |= libc::S_ISGID;
                }
                let o = crate::ownership::Override::new(caller.uid, gid, perm);
                crate::ownership::write(At::Fd(fd.as_fd()), &o)?;
                (st.st_uid, st.st_gid, st.st_mode) =
                    (caller.uid, gid, (st.st_mode & !0o7777) | perm);
            } else if st.st_uid != caller.uid || st.st_gid != gid {
                // We create as ourselves: give the entry to the caller (a no-op skipped
                // for root's own creations), then put back the bits chown clears. A
                // symlink or fifo cannot carry a record: rootless, it stays ours.
                match sys::chown_fd(fd.as_fd(), Some(caller.uid), Some(gid)) {
                    Ok(()) => {}
                    Err(e)
                        if self.opts.owner_marks
                            && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {}
                    Err(e) => return Err(e.into()),
                }
                st = fstat(&fd)?;
                if !matches!(kind, NewKind::Symlink(_)) && st.st_mode != made.st_mode {
                    sys::chmod_fd(fd.as_fd(), made.st_mode & 0o7777)?;
                    st = fstat(&fd)?;
                }
            }
            match slot {
                Slot::Empty => {}
                Slot::Whiteout => {
                    if kind.is_dir() {
                        // Something lower had this name: the new directory hides it all.
                        whiteout::set_opaque(fd.as_fd(), w.up.styles.opaque)?;
                        renameat2(dir, cname, &pfd, name, RenameFlags::RENAME_EXCHANGE)?;
                        unlinkat(dir, cname, UnlinkatFlags::NoRemoveDir)?;
                    } else {
                        renameat(dir, cname, &pfd, name)?;
                    }
                }
                Slot::WhFile => {
                    if kind.is_dir() {
                        whiteout::set_opaque(fd.as_fd(), w.up.styles.opaque)?;
                    }
                    w.clear_wh_file(&pfd, name)?;
                }
            }
            Ok(st)
        })();
        if finish.is_err() {
            let flag = if kind.is_dir() {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            let _ = unlinkat(dir, cname, flag);
        }
        w.drop_stage(&tmp, stage.is_some());
        let st = finish.map_err(|e| e.with_ctx(format!("create {name:?}")))?;
        self.dir_changed(&pnode, i32::from(kind.is_dir()));
        // The node, from what we just made: a new upper entry with nothing below it.
        let r = Resolved {
            kind: FileKind::from_mode(st.st_mode),
            ino: self.stack.map_ino(0, st.st_ino),
            ident: Ident {
                upper: Some(DevIno::of(&st)),
                lower: None,
            },
            body: if kind.is_dir() {
                let fd = open_dir_at(&pfd, name)?;
                Body::Dir(DirInfo::new(Some(fd), Vec::new(), None, false))
            } else {
                Body::File(Content::Upper {
                    upper: UpperLoc::Named {
                        parent: pfd.clone(),
                        name: name.to_owned(),
                    },
                    lower: None,
                })
            },
        };
        let file = matches!(kind, NewKind::File { .. }).then_some(fd);
        Ok((self.intern(&pnode, name, r), file, st))
    }

    /// The default ACL of directory node `dir` (upper directory `pfd`), cached on the
    /// node: whether the umask applies to what is created in it, and what a staging
    /// directory must pass on.
    fn default_acl(&self, dir: &Node, pfd: &OwnedFd) -> Result<Option<Arc<[u8]>>> {
        if let Some(d) = dir.read().dir()
            && let Some(acl) = d.default_acl()
        {
            return Ok(acl.clone());
        }
        let acl = match sys::getxattr(At::Fd(pfd.as_fd()), OsStr::new(DEFAULT_ACL_XATTR)) {
            Ok(v) => v.map(Arc::from),
            // no ACLs on this filesystem, or none we may read: nothing to inherit
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EACCES)
                ) =>
            {
                None
            }
            Err(e) => return Err(FsError::from(e).with_ctx("read the default ACL")),
        };
        dir.write().default_acl_read(acl.clone());
        Ok(acl)
    }

    /// The entry the kernel gets for a node just made, from its stat.
    fn new_entry(&self, node: &Node, st: &FileStat) -> Entry {
        Entry {
            id: node.id,
            generation: node.generation,
            attr: super::Attr::from_stat(st, node.id.0),
            ttl: self.opts.upper_ttl,
        }
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: &Caller,
    ) -> Result<(Entry, OpenReply)> {
        let (node, fd, st) =
            self.make_entry(parent, name, caller, mode, NewKind::File { flags })?;
        let fd = fd.ok_or(FsError::EIO)?;
        let entry = self.new_entry(&node, &st);
        let direct = flags & libc::O_DIRECT != 0;
        let fh = self.register_file(node, fd, false, direct);
        Ok((
            entry,
            OpenReply {
                fh,
                keep_cache: false,
                direct_io: direct,
            },
        ))
    }

    pub fn mkdir(&self, parent: NodeId, name: &OsStr, mode: u32, caller: &Caller) -> Result<Entry> {
        let (node, _, st) = self.make_entry(parent, name, caller, mode, NewKind::Dir)?;
        Ok(self.new_entry(&node, &st))
    }

    /// mknod: fifos, sockets, devices (and regular files, as mknod(2) allows).
    pub fn mknod(
        &self,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: &Caller,
    ) -> Result<Entry> {
        let kind = match FileKind::from_mode(mode) {
            FileKind::Regular => NewKind::File {
                flags: libc::O_RDONLY,
            },
            FileKind::Directory | FileKind::Symlink => return Err(FsError::EINVAL),
            FileKind::Fifo => NewKind::Special {
                sflag: SFlag::S_IFIFO,
                rdev: 0,
            },
            FileKind::Socket => NewKind::Special {
                sflag: SFlag::S_IFSOCK,
                rdev: 0,
            },
            // A 0/0 character device is a whiteout in the upper layer: it would vanish
            // as it is made. Kernel overlayfs refuses it the same way.
            FileKind::CharDevice if rdev == 0 => return Err(FsError::EPERM),
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
        parent: NodeId,
        name: &OsStr,
        target: &OsStr,
        caller: &Caller,
    ) -> Result<Entry> {
        let (node, _, st) =
            self.make_entry(parent, name, caller, 0o777, NewKind::Symlink(target))?;
        Ok(self.new_entry(&node, &st))
    }

    /// link(2): a new name for a non-directory.
    pub fn link(&self, id: NodeId, newparent: NodeId, newname: &OsStr) -> Result<Entry> {
        let w = self.writer()?;
        self.check_name(newname)?;
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(FsError::EPERM);
        }
        let pnode = self.node(newparent)?;
        let snap = self.dir_snapshot(&pnode)?;
        if self.resolve(&snap, newname)?.is_some() {
            return Err(FsError::EEXIST);
        }
        let pfd = self.copy_up_dir(&pnode)?;
        self.copy_up(&node, CopyMode::Full)?;
        let key = w.ensure_indexed(&node)?;
        match w.slot(&pfd, newname)? {
            Slot::Whiteout => {
                let t = w.tmp_name();
                w.link_from_index(&key, &w.up.tmp, OsStr::new(&t))?;
                if let Err(e) = renameat(&*w.up.tmp, t.as_str(), &pfd, newname) {
                    w.discard_staged(OsStr::new(&t), false);
                    return Err(e.into());
                }
            }
            Slot::WhFile => {
                w.link_from_index(&key, &pfd, newname)?;
                w.clear_wh_file(&pfd, newname)?;
            }
            Slot::Empty => w.link_from_index(&key, &pfd, newname)?,
        }
        w.adjust_nlink(&key, 1)?;
        self.mark_impure(&pnode, &pfd)?;
        self.dir_changed(&pnode, 0);
        self.nodes.add_lookup(&node);
        self.entry(&node)
    }

    /// Readies a node that is about to lose a name: a hard-linked lower file is copied up
    /// to the index first (as kernel overlayfs does with `index=on`), so its visible link
    /// count is kept there and no later copy-up is made at the removed name (the node's
    /// name is whichever of its names was looked up first); an upper copy is pinned.
    pub(crate) fn before_name_removal(&self, node: &Arc<Node>) -> Result<()> {
        let hardlinked_lower = node
            .read()
            .lower_only()
            .is_some_and(|l| l.stat.st_nlink > 1);
        if hardlinked_lower {
            self.copy_up(node, CopyMode::Full)?;
        }
        self.pin(node)
    }

    /// Bookkeeping once a name of `node` is gone.
    pub(crate) fn name_removed(&self, w: &Writer<'_>, node: &Arc<Node>) -> Result<()> {
        let upper = node.read().upper().cloned();
        if let Some(UpperLoc::Indexed { key }) = upper {
            if w.adjust_nlink(&key, -1)? > 0 {
                return Ok(());
            }
        } else {
            // Other names of a hard-linked lower file may still show it.
            let s = node.read();
            if s.lower_only().is_some_and(|l| l.stat.st_nlink > 1) {
                return Ok(());
            }
        }
        node.write().set_unlinked();
        Ok(())
    }

    /// Removes name `name` from the union view of `pnode` (whose snapshot before any
    /// copy-up is `snap`).
    pub(crate) fn remove_name(
        &self,
        w: &Writer<'_>,
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
            let t = w.swap_with_whiteout(&pfd, name)?;
            w.drop_staged(&t)?;
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
                    let t = w.move_aside(&pfd, name, false)?;
                    w.drop_staged(&t)?;
                }
                Err(e) => return Err(e).ctx(|| format!("remove {name:?}")),
            }
        } else if has_lower {
            w.put_whiteout(&pfd, name)?;
        } else {
            return Err(FsError::ENOENT);
        }
        self.dir_changed(pnode, -i32::from(is_dir));
        Ok(())
    }

    pub fn unlink(&self, parent: NodeId, name: &OsStr) -> Result<()> {
        let w = self.writer()?;
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        let r = self.resolve(&snap, name)?.ok_or(FsError::ENOENT)?;
        if r.kind.is_dir() {
            return Err(FsError::EISDIR);
        }
        let node = self.node_for(&pnode, name, r);
        self.before_name_removal(&node)?;
        self.remove_name(&w, &pnode, &snap, name, false)?;
        self.name_removed(&w, &node)
    }

    pub fn rmdir(&self, parent: NodeId, name: &OsStr) -> Result<()> {
        let w = self.writer()?;
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
        self.remove_name(&w, &pnode, &snap, name, true)?;
        self.name_removed(&w, &node)
    }
}
