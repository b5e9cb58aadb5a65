//! Resolving a name in a merged directory: which layer serves it, whether a whiteout or
//! an opaque directory hides it, and which lower directories merge below a directory.
//!
//! Rules (overlayfs.rst): the topmost entry wins; a whiteout ends the search with "no
//! such entry"; a non-directory ends it (anything below is hidden); a directory keeps
//! collecting directories of the same name below it until an opaque one, a whiteout or a
//! non-directory. A directory with a `redirect` merges with the directories found at the
//! redirect path below it instead of at its own name (a renamed directory).
//!
//! Layer rotation (an upper layer becoming a lower one, as containers-storage does) is
//! read like the kernel reads it: `redirect` and `opaque` count in every layer, and in a
//! lower directory marked `impure` the entries' marks are read too: `origin` (the inode
//! number to report) and `metacopy` (the data is the same name's further down).
//!
//! Inode numbers of directories are the bottom directory's of their merge chain: that
//! one stays when a directory is copied up, renamed (redirect) or rotated into a lower
//! layer, so `st_ino` is stable through all of them.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstatat};

use crate::sys::At;
use crate::whiteout;

use super::Union;
use super::attr::FileKind;
use super::error::{FsError, Result, absent_ok};
use super::layer::index_key;
use super::node::{DirInfo, DirSnapshot, Lower, LowerDir, Node, NodeState, UpperLoc};
use super::xattr::{self, Marks};

/// What a name resolved to.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub kind: FileKind,
    pub ino: u64,
    pub lower: Option<Lower>,
    pub upper: Option<UpperLoc>,
    pub metacopy: bool,
    pub dir: Option<DirInfo>,
}

impl Resolved {
    /// The state of a node for this resolution, reached as `name` in `parent`.
    pub(crate) fn into_state(self, parent: &Arc<Node>, name: &OsStr) -> NodeState {
        NodeState {
            parent: Some(parent.clone()),
            name: name.to_owned(),
            kind: self.kind,
            ino: self.ino,
            lower: self.lower,
            upper: self.upper,
            metacopy: self.metacopy,
            dir: self.dir,
            unlinked: false,
        }
    }
}

pub(crate) fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<FileStat>> {
    absent_ok(fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)).or_else(|e| {
        // A name too long for a `.wh.` probe or a path component that is not a
        // directory simply does not exist here.
        if e == FsError::ENAMETOOLONG || e == FsError::ENOTDIR {
            Ok(None)
        } else {
            Err(e)
        }
    })
}

pub(crate) fn open_dir_at(dir: &OwnedFd, name: &OsStr) -> Result<Arc<OwnedFd>> {
    Ok(Arc::new(openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?))
}

impl Union {
    /// True when layer `layer` spells a whiteout for `name` as a `.wh.` file in `dir`.
    fn wh_file_exists(&self, layer: usize, dir: &OwnedFd, name: &OsStr) -> Result<bool> {
        if !self.stack.wh_files(layer) {
            return Ok(false);
        }
        Ok(stat_at(dir, &whiteout::whiteout_file_name(name))?.is_some())
    }

    /// The marks of directory `dir` of layer `layer`, opaque in any dialect.
    pub(crate) fn dir_marks(&self, layer: usize, dir: &OwnedFd) -> Result<Marks> {
        let mut marks = xattr::read_marks(At::Fd(dir.as_fd()))?;
        if !marks.opaque
            && self.stack.wh_files(layer)
            && stat_at(dir, OsStr::new(whiteout::OPAQUE_MARKER))?.is_some()
        {
            marks.opaque = true;
        }
        Ok(marks)
    }

    /// Resolves `name` in the directory whose layers are `parent`.
    pub(crate) fn resolve(&self, parent: &DirSnapshot, name: &OsStr) -> Result<Option<Resolved>> {
        if let Some(up) = &parent.upper {
            match stat_at(up, name)? {
                Some(st) if whiteout::is_whiteout_device(&st) => return Ok(None),
                Some(st) if FileKind::from_mode(st.st_mode).is_dir() => {
                    return self.resolve_upper_dir(parent, up, name, &st).map(Some);
                }
                Some(st) => return self.resolve_upper_file(parent, up, name, &st).map(Some),
                None => {
                    if self.wh_file_exists(0, up, name)? {
                        return Ok(None);
                    }
                }
            }
        }
        self.resolve_lowers(&parent.lowers, name)
    }

    /// Resolves `name` among lower directories only.
    pub(crate) fn resolve_lowers(
        &self,
        lowers: &[LowerDir],
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        for (i, ld) in lowers.iter().enumerate() {
            let Some(st) = stat_at(&ld.fd, name)? else {
                if self.wh_file_exists(ld.layer, &ld.fd, name)? {
                    return Ok(None);
                }
                continue;
            };
            if whiteout::is_whiteout_device(&st) {
                return Ok(None);
            }
            let kind = FileKind::from_mode(st.st_mode);
            if !kind.is_dir() {
                return self.resolve_lower_file(lowers, i, name, st).map(Some);
            }
            let dirfd = open_dir_at(&ld.fd, name)?;
            let marks = self.dir_marks(ld.layer, &dirfd)?;
            let below = &lowers[i + 1..];
            let chain = self.chain_below(ld.layer, &marks, below, name)?;
            let mut merged = vec![LowerDir {
                layer: ld.layer,
                fd: dirfd,
                impure: marks.impure,
            }];
            merged.extend(chain);
            let ino = self.dir_ino(&merged, ld.layer, &st)?;
            return Ok(Some(Resolved {
                kind,
                ino,
                lower: None,
                upper: None,
                metacopy: false,
                dir: Some(DirInfo {
                    lowers: merged,
                    lower_stat: Some(st),
                    ..Default::default()
                }),
            }));
        }
        Ok(None)
    }

    /// A non-directory found in `lowers[i]`: its marks if its directory is impure (a
    /// rotated upper layer), and its data further down if it is a metacopy.
    fn resolve_lower_file(
        &self,
        lowers: &[LowerDir],
        i: usize,
        name: &OsStr,
        st: FileStat,
    ) -> Result<Resolved> {
        let ld = &lowers[i];
        let kind = FileKind::from_mode(st.st_mode);
        let mut ino = self.stack.map_ino(ld.layer, st.st_ino);
        let mut data = None;
        if ld.impure {
            let marks = xattr::read_marks(At::Entry(ld.fd.as_fd(), name))?;
            if let Some(o) = marks.origin {
                ino = o;
            }
            if marks.metacopy {
                match self.resolve_lowers(&lowers[i + 1..], name)? {
                    Some(Resolved { lower: Some(l), .. }) => {
                        data = Some(Box::new(l.data_loc().clone()))
                    }
                    _ => {
                        log::error!(
                            "metacopy {name:?} in {} has no data below",
                            self.stack.layers[ld.layer].path.display()
                        );
                        return Err(FsError::EIO);
                    }
                }
            }
        }
        let upper = if st.st_nlink > 1 {
            self.indexed(ino, None)?
        } else {
            None
        };
        Ok(Resolved {
            kind,
            ino,
            lower: Some(Lower {
                layer: ld.layer,
                parent: ld.fd.clone(),
                name: name.to_owned(),
                stat: st,
                data,
            }),
            upper,
            metacopy: false,
            dir: None,
        })
    }

    /// The lower directories that merge below a directory of layer `layer` with `marks`,
    /// named `name` in the parent whose lower directories below it are `below`.
    fn chain_below(
        &self,
        layer: usize,
        marks: &Marks,
        below: &[LowerDir],
        name: &OsStr,
    ) -> Result<Vec<LowerDir>> {
        if marks.opaque {
            return Ok(Vec::new());
        }
        match &marks.redirect {
            Some(r) => self.redirect_lowers(layer, below, r),
            None => self.lower_dirs_below(below, name),
        }
    }

    /// The directories named `name` in `lowers` that merge below a directory above them.
    pub(crate) fn lower_dirs_below(
        &self,
        lowers: &[LowerDir],
        name: &OsStr,
    ) -> Result<Vec<LowerDir>> {
        let mut out = Vec::new();
        for (i, ld) in lowers.iter().enumerate() {
            let Some(st) = stat_at(&ld.fd, name)? else {
                if self.wh_file_exists(ld.layer, &ld.fd, name)? {
                    break;
                }
                continue;
            };
            if !FileKind::from_mode(st.st_mode).is_dir() {
                break; // a whiteout or a non-directory hides everything below
            }
            let dirfd = open_dir_at(&ld.fd, name)?;
            let marks = self.dir_marks(ld.layer, &dirfd)?;
            out.push(LowerDir {
                layer: ld.layer,
                fd: dirfd,
                impure: marks.impure,
            });
            if marks.opaque {
                break;
            }
            if let Some(r) = &marks.redirect {
                out.extend(self.redirect_lowers(ld.layer, &lowers[i + 1..], r)?);
                break;
            }
        }
        Ok(out)
    }

    /// The directories at redirect path `target` of a directory in layer `layer`:
    /// absolute (from the roots of the layers below `layer`), or a bare name among the
    /// parent's lower directories below it (`below`).
    pub(crate) fn redirect_lowers(
        &self,
        layer: usize,
        below: &[LowerDir],
        target: &[u8],
    ) -> Result<Vec<LowerDir>> {
        let Some(abs) = target.strip_prefix(b"/") else {
            return self.lower_dirs_below(below, OsStr::from_bytes(target));
        };
        let first = (layer + 1).max(self.stack.first_lower());
        let mut cur: Vec<LowerDir> = Vec::new();
        for l in first..self.stack.layers.len() {
            let fd = self.stack.root(l).clone();
            let impure = self.dir_marks(l, &fd)?.impure;
            cur.push(LowerDir {
                layer: l,
                fd,
                impure,
            });
        }
        for comp in abs.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            match self.resolve_lowers(&cur, OsStr::from_bytes(comp))? {
                Some(Resolved { dir: Some(d), .. }) => cur = d.lowers,
                _ => return Ok(Vec::new()),
            }
        }
        Ok(cur)
    }

    /// The inode number of a directory: its bottom directory's. `merged` is the chain of
    /// lower directories (the directory itself first when it is in a lower layer);
    /// `own` is the stat of the directory in `layer`.
    fn dir_ino(&self, merged: &[LowerDir], layer: usize, own: &FileStat) -> Result<u64> {
        match merged.last() {
            Some(last) if last.layer != layer => Ok(self
                .stack
                .map_ino(last.layer, nix::sys::stat::fstat(&last.fd)?.st_ino)),
            _ => Ok(self.stack.map_ino(layer, own.st_ino)),
        }
    }

    fn resolve_upper_dir(
        &self,
        parent: &DirSnapshot,
        up: &OwnedFd,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<Resolved> {
        let fd = open_dir_at(up, name)?;
        let marks = self.dir_marks(0, &fd)?;
        let lowers = self.chain_below(0, &marks, &parent.lowers, name)?;
        let lower_stat = match lowers.first() {
            Some(ld) => Some(nix::sys::stat::fstat(&ld.fd)?),
            None => None,
        };
        let ino = self.dir_ino(&lowers, 0, st)?;
        Ok(Resolved {
            kind: FileKind::Directory,
            ino,
            lower: None,
            upper: None,
            metacopy: false,
            dir: Some(DirInfo {
                upper: Some(fd),
                lowers,
                lower_stat,
                impure: marks.impure,
                ..Default::default()
            }),
        })
    }

    fn resolve_upper_file(
        &self,
        parent: &DirSnapshot,
        up: &Arc<OwnedFd>,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<Resolved> {
        let marks = xattr::read_marks(At::Entry(up.as_fd(), name))?;
        let ino = marks
            .origin
            .unwrap_or_else(|| self.stack.map_ino(0, st.st_ino));
        let mut upper = UpperLoc::Named {
            parent: up.clone(),
            name: name.to_owned(),
        };
        if st.st_nlink > 1 {
            upper = match self.indexed(ino, Some(st))? {
                Some(idx) => idx,
                // Hard links made outside of us (another tool wrote this upper layer): give
                // the inode an index name, so it stays reachable whichever name goes.
                None => self.adopt_into_index(up, name, ino, st).unwrap_or(upper),
            };
        }
        let mut lower = None;
        if marks.metacopy {
            match self.resolve_lowers(&parent.lowers, name)? {
                Some(Resolved { lower: Some(l), .. }) => lower = Some(l),
                _ => {
                    log::error!(
                        "metacopy file {:?} has no lower data in {}",
                        name,
                        self.stack.layers[0].path.display()
                    );
                    return Err(FsError::EIO);
                }
            }
        }
        Ok(Resolved {
            kind: FileKind::from_mode(st.st_mode),
            ino,
            lower,
            upper: Some(upper),
            metacopy: marks.metacopy,
            dir: None,
        })
    }

    /// Links an upper inode with several names into the index; `None` when it cannot (the
    /// name then stays the node's only handle, as before).
    fn adopt_into_index(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        ino: u64,
        st: &FileStat,
    ) -> Option<UpperLoc> {
        let up = self.stack.upper.as_ref()?;
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

    /// The index entry of inode `ino`, if the inode has been copied up through the index.
    /// `same` (an upper entry's stat) must be the very inode the index holds.
    pub(crate) fn indexed(&self, ino: u64, same: Option<&FileStat>) -> Result<Option<UpperLoc>> {
        let Some(up) = &self.stack.upper else {
            return Ok(None);
        };
        let key = index_key(ino);
        let ist = match absent_ok(fstatat(
            &up.index,
            key.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ))? {
            Some(s) => s,
            None => return Ok(None),
        };
        if let Some(s) = same
            && (s.st_ino != ist.st_ino || s.st_dev != ist.st_dev)
        {
            return Ok(None);
        }
        Ok(Some(UpperLoc::Indexed { key }))
    }
}
