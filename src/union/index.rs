//! Hard links in the upper layer: one index name per hard-linked inode, kernel overlayfs'
//! `index=on` idea. `WORK/layerfs-index/<key>` (the inode's natural number in hex) is a
//! name of the inode that no rename or unlink through the mount touches, so every name
//! of the inode — found now or after a remount, in the upper layer or as a hard-linked
//! lower file — reaches the one copy. Marks on the index entry: `layerfs.origin` (the
//! number it stands for: an entry that does not say its own key is not ours and is
//! ignored) and `layerfs.nlink` (the visible link count, which counts the names in lower
//! layers too; the index name itself never counts). At zero the index name goes.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::sys::{self, At};

use super::Union;
use super::attr::FileKind;
use super::error::{Context, FsError, Result, absent_ok};
use super::lookup::stat_at;
use super::node::{Node, UpperLoc};
use super::upper::Writer;
use super::xattr;

/// The index key of an inode: its natural inode number in hex.
pub(crate) fn index_key(ino: u64) -> String {
    format!("{ino:016x}")
}

impl Union {
    /// The index entry of the inode whose natural number is `ino` and whose type is
    /// `kind`, with its stat, if it has been copied up through the index. `same` (an upper
    /// entry's stat) must be the very inode the index holds.
    pub(crate) fn indexed(
        &self,
        ino: u64,
        same: Option<&FileStat>,
        kind: FileKind,
    ) -> Result<Option<(UpperLoc, FileStat)>> {
        let Some(up) = &self.stack.upper else {
            return Ok(None);
        };
        let key = index_key(ino);
        let found = absent_ok(fstatat(
            &up.index,
            key.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ))
        .map_err(|e| e.with_ctx(format!("stat index entry {key}")))?;
        let Some(ist) = found else {
            return Ok(None);
        };
        if let Some(s) = same {
            if s.st_ino != ist.st_ino || s.st_dev != ist.st_dev {
                return Ok(None);
            }
        } else {
            // Found by number alone: it must be ours, for this number, of this type.
            let origin = xattr::read_marks(At::Entry(up.index.as_fd(), OsStr::new(&key)))?.origin;
            if origin != Some(ino) || FileKind::from_mode(ist.st_mode) != kind {
                log::warn!(
                    "ignoring index entry {key}: not an index entry of inode {ino} ({kind:?})"
                );
                return Ok(None);
            }
        }
        Ok(Some((UpperLoc::Indexed { key }, ist)))
    }

    /// Links an upper inode with several names into the index; `None` when it cannot (the
    /// name then stays the node's only handle, as before).
    pub(crate) fn adopt_into_index(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        ino: u64,
        st: &FileStat,
    ) -> Option<UpperLoc> {
        let up = self.stack.upper.as_ref().filter(|u| !u.frozen)?;
        let key = index_key(ino);
        match nix::unistd::linkat(dir, name, &*up.index, key.as_str(), AtFlags::empty()) {
            Ok(()) => {}
            // The key is taken by another inode (`indexed` checked it is not this one).
            Err(nix::errno::Errno::EEXIST) => return None,
            Err(e) => {
                log::warn!("indexing hard-linked {name:?}: {e}");
                return None;
            }
        }
        let at = At::Entry(up.index.as_fd(), OsStr::new(&key));
        let _ = xattr::set(
            at,
            up.ns(),
            xattr::NLINK,
            st.st_nlink.to_string().as_bytes(),
        );
        let _ = xattr::set(at, up.ns(), xattr::ORIGIN, ino.to_string().as_bytes());
        Some(UpperLoc::Indexed { key })
    }

    /// The visible link count of index entry `key` whose stat says `st_nlink`.
    pub(crate) fn index_nlink(&self, key: &str, st_nlink: u64) -> Result<u32> {
        let up = self.stack.upper.as_ref().ok_or(FsError::EIO)?;
        let marks = xattr::read_marks(At::Entry(up.index.as_fd(), OsStr::new(key)))?;
        Ok(marks
            .nlink
            .unwrap_or_else(|| u32::try_from(st_nlink.saturating_sub(1)).unwrap_or(u32::MAX))
            .max(1))
    }
}

impl Writer<'_> {
    /// Gives node `node` (which has an upper copy) a stable name in the index; returns
    /// its key.
    pub(crate) fn ensure_indexed(&self, node: &Node) -> Result<String> {
        let _g = node.copy_guard();
        let ino = match node.read().upper() {
            Some(UpperLoc::Indexed { key }) => return Ok(key.clone()),
            Some(UpperLoc::Named { .. }) => node.read().ino(),
            None => return Err(FsError::EIO),
        };
        // Link the node's own inode, not whatever its name is now.
        let fd = self.upper_inode(node)?;
        let key = index_key(ino);
        sys::link_fd(fd.as_fd(), self.up.index.as_fd(), OsStr::new(&key))
            .ctx(|| format!("index inode {}", node.id.0))?;
        let at = At::Entry(self.up.index.as_fd(), OsStr::new(&key));
        xattr::set(at, self.up.ns(), xattr::NLINK, b"1")?;
        xattr::set(at, self.up.ns(), xattr::ORIGIN, ino.to_string().as_bytes())?;
        node.write().indexed(key.clone());
        Ok(key)
    }

    /// Adds `delta` to the visible link count of an indexed inode; at zero the index name
    /// goes (open fds and pins keep the data alive).
    pub(crate) fn adjust_nlink(&self, key: &str, delta: i64) -> Result<u32> {
        let at = At::Entry(self.up.index.as_fd(), OsStr::new(key));
        let cur = match xattr::read_marks(at)?.nlink {
            Some(n) => i64::from(n),
            None => match stat_at(&self.up.index, OsStr::new(key))? {
                Some(st) => st.st_nlink as i64 - 1,
                None => return Ok(0),
            },
        };
        let new = (cur + delta).max(0);
        if new == 0 {
            unlinkat(&*self.up.index, key, UnlinkatFlags::NoRemoveDir)?;
        } else {
            xattr::set(at, self.up.ns(), xattr::NLINK, new.to_string().as_bytes())?;
        }
        Ok(new as u32)
    }

    /// Makes `name` in upper directory `dir` a name of index entry `key`.
    pub(crate) fn link_from_index(&self, key: &str, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        nix::unistd::linkat(&*self.up.index, key, dir, name, AtFlags::empty())
            .ctx(|| format!("link index entry {key} as {name:?}"))
    }
}
