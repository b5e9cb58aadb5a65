//! Hard links in the upper layer: one index name per hard-linked inode, kernel overlayfs'
//! `index=on` idea. `WORK/layerfs-index/<key>` (the inode's natural number in hex) is a
//! name of the inode that no rename or unlink through the mount touches, so every name
//! of the inode — found now or after a remount, in the upper layer or as a hard-linked
//! lower file — reaches the one copy. Marks on the index entry: `layerfs.origin` (the
//! number it stands for: an entry that does not say its own key is not ours and is
//! ignored) and `layerfs.nlink` (the visible link count, which counts the names in lower
//! layers too; the index name itself never counts). At zero the index name goes.
//!
//! Entries are made in one place, [`Writer::make_index_entry`], for three callers: the
//! copy-up of a hard-linked lower file (`copyup.rs`), link(2) of an upper file
//! ([`Writer::ensure_indexed`]), and a lookup that finds an upper file hard-linked outside
//! of us ([`Union::adopt_into_index`], which degrades to the file's name when that fails).

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, fstatat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::sys::{self, At};

use super::Union;
use super::attr::FileKind;
use super::error::{Context, FsError, Result, absent_ok};
use super::lookup::stat_at;
use super::node::{DevIno, Node, UpperLoc};
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

    /// Gives an upper inode with several names (hard links made outside of us: another
    /// tool wrote this upper layer) an index name, so it stays reachable whichever name
    /// goes. `None` when it gets none: on a read-only stack, or when making the entry
    /// fails. That degrades, it does not fail the lookup: the index name only matters
    /// once this name is removed, and until then the name serves every operation, as on
    /// a read-only stack; failing would hide a file that reads fine because the work
    /// directory is full or damaged. The reason is logged.
    pub(crate) fn adopt_into_index(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        entry: &NewIndexEntry,
    ) -> Option<UpperLoc> {
        let w = self.writer().ok()?;
        match w.make_index_entry(IndexSource::Name(dir, name), entry) {
            Ok(key) => Some(UpperLoc::Indexed { key }),
            Err(e) => {
                // EEXIST: another inode's entry claims the number (a forged or damaged
                // origin mark), found again at every lookup of this name.
                if e == FsError::EEXIST {
                    log::debug!("hard-linked {name:?} is reached by its name: {e}");
                } else {
                    log::warn!("hard-linked {name:?} is reached by its name: {e}");
                }
                None
            }
        }
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

/// How [`Writer::make_index_entry`] reaches the inode to index.
#[derive(Clone, Copy)]
pub(crate) enum IndexSource<'a> {
    /// A copy staged in the work directory under this name (seen by no one yet).
    Staged(&'a OsStr),
    /// A name in an upper directory: it may be another inode by now.
    Name(&'a OwnedFd, &'a OsStr),
    /// An fd of the inode itself.
    Inode(BorrowedFd<'a>),
}

/// An index entry to make.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewIndexEntry {
    /// The natural inode number it stands for (its key, its `origin` mark).
    pub ino: u64,
    pub kind: FileKind,
    /// The real inode to index.
    pub inode: DevIno,
    /// The visible link count to record.
    pub nlink: u64,
}

impl Writer<'_> {
    /// The one maker of index entries: gives `entry.inode`, reached through `src`, the
    /// index name of `entry.ino`, with its marks; returns the key.
    ///
    /// - Marks: `nlink` then `origin` (an entry that does not say its number yet is not
    ///   taken for ours by [`Union::indexed`]). A staged copy is marked before it is
    ///   linked, so its entry appears complete. A live inode is marked only once linked
    ///   (a failed link leaves it as it was), and its index name goes again if marking
    ///   fails.
    /// - The key taken (EEXIST): by this very inode (another lookup adopted it just now),
    ///   done; by something that is not an index entry of `ino` ([`Union::indexed`] says
    ///   why), replaced; by another inode's index entry of `ino`, EEXIST: two files claim
    ///   one number (a damaged or forged `origin` mark).
    /// - A name is checked to have been `entry.inode` when it was linked; if it was
    ///   replaced meanwhile, the index name goes again and the answer is ESTALE.
    pub(crate) fn make_index_entry(
        &self,
        src: IndexSource<'_>,
        entry: &NewIndexEntry,
    ) -> Result<String> {
        let key = index_key(entry.ino);
        let what = || format!("index entry {key} of inode {}", entry.ino);
        if let IndexSource::Staged(t) = src {
            self.mark_index_entry(At::Entry(self.up.tmp.as_fd(), t), entry)
                .ctx(what)?;
        }
        match self.link_into_index(src, &key) {
            Ok(()) => {}
            Err(Errno::EEXIST) => match self.index_entry_inode(&key)? {
                Some(found) if found == entry.inode => return Ok(key),
                _ if self.indexed(entry.ino, None, entry.kind)?.is_some() => {
                    return Err(
                        FsError::EEXIST.with_ctx(format!("{}: taken by another inode", what()))
                    );
                }
                _ => {
                    // Not ours for this number: it must not stand in the way of the real one.
                    self.drop_index_entry(&key).ctx(what)?;
                    self.link_into_index(src, &key).ctx(what)?;
                }
            },
            Err(e) => return Err(e).ctx(what),
        }
        if let IndexSource::Staged(_) = src {
            return Ok(key);
        }
        let checked = match src {
            IndexSource::Name(..) => match self.index_entry_inode(&key)? {
                Some(found) if found == entry.inode => Ok(()),
                _ => Err(FsError::ESTALE.with_ctx(format!("{}: the name was replaced", what()))),
            },
            _ => Ok(()),
        };
        let made = checked.and_then(|()| {
            let at = At::Entry(self.up.index.as_fd(), OsStr::new(&key));
            self.mark_index_entry(at, entry).ctx(what)
        });
        if let Err(e) = made {
            if let Err(undo) = self.drop_index_entry(&key) {
                log::warn!("{}: left unmarked: {undo}", what());
            }
            return Err(e);
        }
        Ok(key)
    }

    /// Links `src` into the index as `key`.
    fn link_into_index(&self, src: IndexSource<'_>, key: &str) -> nix::Result<()> {
        let index = &*self.up.index;
        match src {
            IndexSource::Staged(t) => linkat(&*self.up.tmp, t, index, key, AtFlags::empty()),
            IndexSource::Name(dir, name) => linkat(dir, name, index, key, AtFlags::empty()),
            IndexSource::Inode(fd) => sys::link_fd(fd, index.as_fd(), OsStr::new(key))
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    /// The real inode at index name `key`, if there is one.
    fn index_entry_inode(&self, key: &str) -> Result<Option<DevIno>> {
        Ok(stat_at(&self.up.index, OsStr::new(key))?.map(|st| DevIno::of(&st)))
    }

    /// Sets the marks of a new index entry on the inode `at` names.
    fn mark_index_entry(&self, at: At<'_>, entry: &NewIndexEntry) -> Result<()> {
        let ns = self.up.ns();
        xattr::set(at, ns, xattr::NLINK, entry.nlink.to_string().as_bytes())?;
        xattr::set(at, ns, xattr::ORIGIN, entry.ino.to_string().as_bytes())
    }

    /// Removes index name `key` (absent is fine).
    pub(crate) fn drop_index_entry(&self, key: &str) -> Result<()> {
        match unlinkat(&*self.up.index, key, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives node `node` (which has an upper copy) a stable name in the index; returns
    /// its key.
    pub(crate) fn ensure_indexed(&self, node: &Node) -> Result<String> {
        let _g = node.copy_guard();
        let (ino, kind) = {
            let s = node.read();
            match s.upper() {
                Some(UpperLoc::Indexed { key }) => return Ok(key.clone()),
                Some(UpperLoc::Named { .. }) => (s.ino(), s.kind()),
                None => return Err(FsError::EIO),
            }
        };
        // Link the node's own inode, not whatever its name is now.
        let fd = self.upper_inode(node)?;
        let entry = NewIndexEntry {
            ino,
            kind,
            inode: node.ident().upper.ok_or(FsError::EIO)?,
            nlink: 1,
        };
        let key = self
            .make_index_entry(IndexSource::Inode(fd.as_fd()), &entry)
            .map_err(|e| e.with_ctx(format!("index inode {}", node.id.0)))?;
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
