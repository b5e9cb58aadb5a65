//! rename(2) and renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
//!
//! A renamed directory that merges lower directories records where they are
//! (`redirect`), so `rename(2)` of any directory succeeds, atomically, without copying its
//! tree (kernel overlayfs' `redirect_dir`). A moved non-directory is copied up first. The
//! nodes involved are pinned across the rename (see [`super::inode`]): whoever reads a
//! node while its name moves reaches its inode through the pin, never through a name.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::fcntl::{RenameFlags, renameat2};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::sys::At;
use crate::whiteout;

use super::Union;
use super::attr::FileKind;
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::lookup::stat_at;
use super::node::{Body, Node, NodeId, UpperLoc};
use super::upper::Writer;
use super::xattr;

const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;
const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;

/// A pin taken for the duration of a rename, dropped afterwards unless the node had one
/// already (or lost its last name meanwhile).
struct TempPin<'a> {
    node: &'a Node,
    added: bool,
}

impl<'a> TempPin<'a> {
    fn new(u: &Union, node: &'a Node) -> Result<TempPin<'a>> {
        let had = node.read().pin().is_some();
        u.pin(node)?;
        Ok(TempPin {
            node,
            added: !had && node.read().pin().is_some(),
        })
    }
}

impl Drop for TempPin<'_> {
    fn drop(&mut self) {
        if self.added {
            self.node.write().unpin_if_linked();
        }
    }
}

impl Union {
    /// Makes `name` in upper directory `pfd` a name of indexed `node`, if it is not there
    /// yet: the upper copy of a hard-linked node is made at the name it was first looked
    /// up by, which need not be the name a rename moves.
    fn ensure_upper_name(
        &self,
        w: &Writer<'_>,
        node: &Node,
        pfd: &OwnedFd,
        name: &OsStr,
    ) -> Result<()> {
        let key = match node.read().upper() {
            Some(UpperLoc::Indexed { key }) => key.clone(),
            _ => return Ok(()),
        };
        if stat_at(pfd, name)?.is_some() {
            return Ok(());
        }
        w.link_from_index(&key, pfd, name)
    }

    /// The path of a directory node's lower directories in the lower layers' namespace
    /// ("" for the root). Iterative (names gathered up to the root or to an absolute
    /// redirect): any depth.
    fn lower_path(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        // Components below the base, nearest first.
        let mut comps: Vec<Vec<u8>> = Vec::new();
        let mut cur = node.clone();
        let mut p = loop {
            let (parent, name, upper) = {
                let s = cur.read();
                (
                    s.parent().cloned(),
                    s.name().to_owned(),
                    s.dir().and_then(|d| d.upper().cloned()),
                )
            };
            let Some(parent) = parent else {
                break Vec::new();
            };
            let redirect = match upper {
                Some(up) => xattr::read_marks(At::Fd(up.as_fd()))?.redirect,
                None => None,
            };
            match redirect {
                Some(r) if r.starts_with(b"/") => break r,
                Some(r) => comps.push(r),
                None => comps.push(name.as_bytes().to_vec()),
            }
            cur = self.parent_node(&parent)?;
        };
        for c in comps.iter().rev() {
            p.push(b'/');
            p.extend_from_slice(c);
        }
        Ok(p)
    }

    /// Readies `node` to move to another name: it gets an upper copy, and a directory
    /// records where its lower directories are (or that it has none).
    fn prepare_move(&self, w: &Writer<'_>, node: &Arc<Node>) -> Result<()> {
        if !node.is_dir() {
            return self.copy_up(node, CopyMode::Full);
        }
        let fd = self.copy_up_dir(node)?;
        let has_lowers = node.read().dir().is_some_and(|d| !d.lowers().is_empty());
        let marks = xattr::read_marks(At::Fd(fd.as_fd()))?;
        if has_lowers {
            if marks.redirect.is_none() {
                let path = self.lower_path(node)?;
                xattr::set(At::Fd(fd.as_fd()), w.up.ns(), xattr::REDIRECT, &path)?;
            }
        } else if !marks.opaque {
            whiteout::set_opaque(fd.as_fd(), w.up.styles.opaque)?;
        }
        Ok(())
    }

    /// Points `node` at its new name after a rename.
    fn moved(&self, node: &Arc<Node>, parent: &Arc<Node>, pfd: &Arc<OwnedFd>, name: &OsStr) {
        node.write().moved(self.parent_ref(parent), pfd, name);
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
    pub fn rename(&self, p1: NodeId, n1: &OsStr, p2: NodeId, n2: &OsStr, flags: u32) -> Result<()> {
        let w = self.writer()?;
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
            if d.ino == src.ino && d.ident == src.ident && !exchange {
                return Ok(()); // two names of one inode: POSIX says do nothing
            }
            if !exchange {
                match (src.kind.is_dir(), d.kind.is_dir()) {
                    (true, false) => return Err(FsError::ENOTDIR),
                    (false, true) => return Err(FsError::EISDIR),
                    (true, true) => {
                        let ds = match &d.body {
                            Body::Dir(di) => di.snapshot(),
                            Body::File(_) => Default::default(),
                        };
                        let live = self
                            .nodes
                            .find(d.ino, &d.ident)
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
        self.prepare_move(&w, &snode)?;
        self.ensure_upper_name(&w, &snode, &pfd1, n1)?;
        let _spin = TempPin::new(self, &snode)?;

        if exchange {
            let dnode = dnode.ok_or(FsError::ENOENT)?;
            self.prepare_move(&w, &dnode)?;
            self.ensure_upper_name(&w, &dnode, &pfd2, n2)?;
            let _dpin = TempPin::new(self, &dnode)?;
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
                let t = w.move_aside(&pfd2, n2, d_lower)?;
                w.drop_staged(&t)?;
                target_wh = d_lower;
            }
            Some(_) => {}
            None => w.clear_wh_file(&pfd2, n2)?,
        }
        if target_wh && src_is_dir {
            // rename(2) cannot put a directory over a whiteout: swap them, then keep the
            // whiteout at the old name only if a lower entry is there to hide.
            renameat2(&*pfd1, n1, &*pfd2, n2, RenameFlags::RENAME_EXCHANGE)?;
            if !need_wh {
                unlinkat(&*pfd1, n1, UnlinkatFlags::NoRemoveDir)?;
            }
        } else {
            w.rename_leaving(&pfd1, n1, &pfd2, n2, need_wh)?;
        }
        self.moved(&snode, &pn2, &pfd2, n2);
        if let Some(d) = dnode {
            self.name_removed(&w, &d)?;
        }
        self.mark_impure(&pn2, &pfd2)?;
        self.dir_changed(&pn1, -i32::from(src_is_dir));
        self.dir_changed(&pn2, i32::from(src_is_dir) - i32::from(dst_is_dir));
        Ok(())
    }
}
