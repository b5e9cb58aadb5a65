//! Resolving a name in a merged directory: which layer serves it, whether a whiteout or
//! an opaque directory hides it, and which lower directories merge below a directory.
//!
//! Rules (overlayfs.rst): the topmost entry wins; a whiteout ends the search with "no
//! such entry"; a non-directory ends it (anything below is hidden); a directory keeps
//! collecting directories of the same name below it until an opaque one, a whiteout or a
//! non-directory. An upper directory with a `redirect` merges with the lower directories
//! found at the redirect path instead of at its own name (a renamed directory).

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
use super::node::{DirInfo, DirSnapshot, Lower, Node, NodeState, UpperLoc};
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

    /// True when directory `dir` of layer `layer` is opaque, in any dialect.
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
        lowers: &[(usize, Arc<OwnedFd>)],
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        for (i, (layer, fd)) in lowers.iter().enumerate() {
            let Some(st) = stat_at(fd, name)? else {
                if self.wh_file_exists(*layer, fd, name)? {
                    return Ok(None);
                }
                continue;
            };
            if whiteout::is_whiteout_device(&st) {
                return Ok(None);
            }
            let kind = FileKind::from_mode(st.st_mode);
            let ino = self.stack.map_ino(*layer, st.st_ino);
            if !kind.is_dir() {
                let mut upper = None;
                if st.st_nlink > 1 {
                    upper = self.indexed(ino, None)?;
                }
                return Ok(Some(Resolved {
                    kind,
                    ino,
                    lower: Some(Lower {
                        layer: *layer,
                        parent: fd.clone(),
                        name: name.to_owned(),
                        stat: st,
                    }),
                    upper,
                    metacopy: false,
                    dir: None,
                }));
            }
            let dirfd = open_dir_at(fd, name)?;
            let opaque = self.dir_marks(*layer, &dirfd)?.opaque;
            let mut merged = vec![(*layer, dirfd)];
            if !opaque {
                merged.extend(self.lower_dirs_below(&lowers[i + 1..], name)?);
            }
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

    /// The directories named `name` in `lowers` that merge below a directory above them.
    pub(crate) fn lower_dirs_below(
        &self,
        lowers: &[(usize, Arc<OwnedFd>)],
        name: &OsStr,
    ) -> Result<Vec<(usize, Arc<OwnedFd>)>> {
        let mut out = Vec::new();
        for (layer, fd) in lowers {
            let Some(st) = stat_at(fd, name)? else {
                if self.wh_file_exists(*layer, fd, name)? {
                    break;
                }
                continue;
            };
            if !FileKind::from_mode(st.st_mode).is_dir() {
                break; // a whiteout or a non-directory hides everything below
            }
            let dirfd = open_dir_at(fd, name)?;
            let opaque = self.dir_marks(*layer, &dirfd)?.opaque;
            out.push((*layer, dirfd));
            if opaque {
                break;
            }
        }
        Ok(out)
    }

    /// The lower directories at redirect path `target` (absolute from the layer roots, or
    /// a bare name in the parent's lower directories).
    pub(crate) fn redirect_lowers(
        &self,
        parent: &DirSnapshot,
        target: &[u8],
    ) -> Result<Vec<(usize, Arc<OwnedFd>)>> {
        let Some(abs) = target.strip_prefix(b"/") else {
            return self.lower_dirs_below(&parent.lowers, OsStr::from_bytes(target));
        };
        let mut cur: Vec<(usize, Arc<OwnedFd>)> = (self.stack.first_lower()
            ..self.stack.layers.len())
            .map(|l| (l, self.stack.root(l).clone()))
            .collect();
        for comp in abs.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            match self.resolve_lowers(&cur, OsStr::from_bytes(comp))? {
                Some(Resolved { dir: Some(d), .. }) => cur = d.lowers,
                _ => return Ok(Vec::new()),
            }
        }
        Ok(cur)
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
        let lowers = if marks.opaque {
            Vec::new()
        } else if let Some(r) = &marks.redirect {
            self.redirect_lowers(parent, r)?
        } else {
            self.lower_dirs_below(&parent.lowers, name)?
        };
        let lower_stat = match lowers.first() {
            Some((_, fd)) => Some(nix::sys::stat::fstat(fd)?),
            None => None,
        };
        let ino = match (lowers.first(), &lower_stat) {
            (Some((layer, _)), Some(ls)) => self.stack.map_ino(*layer, ls.st_ino),
            _ => self.stack.map_ino(0, st.st_ino),
        };
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
