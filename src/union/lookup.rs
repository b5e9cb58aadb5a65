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
//! Marks are input: whoever wrote a layer may have forged them. A redirect resolves only
//! inside the layer roots below its directory, one checked component at a time (never
//! `.`, `..` or an empty component); anything else fails that one entry with EIO.
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
use super::index::NewIndexEntry;
use super::names::Lowers;
use super::node::{
    Body, Content, DevIno, DirInfo, DirSnapshot, Ident, Lower, LowerDir, NodeState, Parent,
    UpperLoc,
};
use super::xattr::{self, Marks};

/// Longest redirect we follow (the kernel's limit is the same).
const MAX_REDIRECT: usize = 4096;

/// What a name resolved to.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub kind: FileKind,
    /// The natural inode number (see the node table (`table.rs`)).
    pub ino: u64,
    pub ident: Ident,
    pub body: Body,
}

impl Resolved {
    /// The upper copy of a non-directory.
    pub(crate) fn upper(&self) -> Option<&UpperLoc> {
        match &self.body {
            Body::File(c) => c.upper(),
            Body::Dir(_) => None,
        }
    }

    /// The state of a node for this resolution, reached as `name` in `parent`.
    pub(crate) fn into_state(self, parent: Parent, name: &OsStr) -> NodeState {
        NodeState::new(
            Some(parent),
            name.to_owned(),
            self.kind,
            self.ino,
            self.body,
        )
    }
}

/// One path component: not empty, not `.` or `..`, no `/`, no NUL.
pub(crate) fn is_component(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
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

/// The components of a redirect, checked: an absolute path (from the layer roots) or a
/// bare name (in the parent's lower directories).
fn redirect_components(target: &[u8]) -> Option<(bool, Vec<&OsStr>)> {
    if target.is_empty() || target.len() > MAX_REDIRECT {
        return None;
    }
    let (abs, rest) = match target.strip_prefix(b"/") {
        Some(r) => (true, r),
        None => (false, target),
    };
    let comps: Vec<&OsStr> = rest.split(|b| *b == b'/').map(OsStr::from_bytes).collect();
    let ok = comps.iter().all(|c| is_component(c) && c.len() <= 255)
        && (abs || comps.len() == 1)
        && !(abs && rest.is_empty());
    ok.then_some((abs, comps))
}

impl Union {
    /// The path of layer `layer` for messages.
    pub(crate) fn layer_name(&self, layer: usize) -> String {
        match self.stack.layers.get(layer) {
            Some(l) if self.stack.is_upper(layer) => format!("upper layer {}", l.path.display()),
            Some(l) => format!("layer {}", l.path.display()),
            None => format!("layer #{layer}"),
        }
    }

    /// True when layer `layer` spells a whiteout for `name` as a `.wh.` file in `dir`.
    fn wh_file_exists(&self, layer: usize, dir: &OwnedFd, name: &OsStr) -> Result<bool> {
        if !self.stack.wh_files(layer) {
            return Ok(false);
        }
        Ok(stat_at(dir, &whiteout::whiteout_file_name(name))?.is_some())
    }

    /// The marks of directory `dir` of layer `layer`, opaque in any dialect.
    pub(crate) fn dir_marks(&self, layer: usize, dir: &OwnedFd) -> Result<Marks> {
        xattr::dir_marks(dir, self.stack.wh_files(layer))
    }

    /// Resolves `name` in the directory whose layers are `parent`.
    pub(crate) fn resolve(&self, parent: &DirSnapshot, name: &OsStr) -> Result<Option<Resolved>> {
        if !is_component(name) {
            return Ok(None);
        }
        if let Some(up) = &parent.upper {
            let found = stat_at(up, name).map_err(|e| e.with_ctx(format!("stat {name:?}")))?;
            match found {
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
    pub(crate) fn resolve_lowers(&self, lowers: &Lowers, name: &OsStr) -> Result<Option<Resolved>> {
        self.resolve_lowers_from(lowers, 0, name)
    }

    /// Resolves `name` among the lower directories from position `from` on.
    fn resolve_lowers_from(
        &self,
        lowers: &Lowers,
        from: usize,
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        for i in lowers.candidates(self, from, name) {
            let ld = &lowers[i];
            let found = stat_at(&ld.fd, name).map_err(|e| {
                e.with_ctx(format!("stat {name:?} in {}", self.layer_name(ld.layer)))
            })?;
            let Some(st) = found else {
                if self.wh_file_exists(ld.layer, &ld.fd, name)? {
                    return Ok(None);
                }
                continue;
            };
            if whiteout::is_whiteout_device(&st)
                || xattr::is_xattr_whiteout(ld.fd.as_fd(), ld.xwhiteouts, name, &st)?
            {
                return Ok(None);
            }
            let kind = FileKind::from_mode(st.st_mode);
            if !kind.is_dir() {
                return self.resolve_lower_file(lowers, i, name, st).map(Some);
            }
            let dirfd = open_dir_at(&ld.fd, name)?;
            let marks = self.dir_marks(ld.layer, &dirfd)?;
            let chain = self.chain_below(ld.layer, &marks, lowers, i + 1, name)?;
            let mut merged = vec![LowerDir {
                layer: ld.layer,
                fd: dirfd,
                impure: marks.impure,
                xwhiteouts: marks.xwhiteouts,
            }];
            merged.extend(chain);
            let ino = self.dir_ino(&merged, ld.layer, &st)?;
            return Ok(Some(Resolved {
                kind,
                ino,
                ident: Ident {
                    upper: None,
                    lower: Some(DevIno::of(&st)),
                },
                body: Body::Dir(DirInfo::new(None, merged, Some(st), false)),
            }));
        }
        Ok(None)
    }

    /// A non-directory found in `lowers[i]`: its marks if its directory is impure (a
    /// rotated upper layer), and its data further down if it is a metacopy.
    fn resolve_lower_file(
        &self,
        lowers: &Lowers,
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
                data = Some(Box::new(self.metacopy_data(
                    lowers,
                    i + 1,
                    name,
                    kind,
                    ld.layer,
                )?));
            }
        }
        let lower = Lower {
            layer: ld.layer,
            parent: ld.fd.clone(),
            name: name.to_owned(),
            stat: st,
            data,
        };
        let (upper, upper_ident) = if st.st_nlink > 1 {
            match self.indexed(ino, None, kind)? {
                Some((loc, ist)) => (Some(loc), Some(DevIno::of(&ist))),
                None => (None, None),
            }
        } else {
            (None, None)
        };
        Ok(Resolved {
            kind,
            ino,
            ident: Ident {
                upper: upper_ident,
                lower: Some(DevIno::of(&st)),
            },
            body: Body::File(match upper {
                Some(upper) => Content::Upper {
                    upper,
                    lower: Some(lower),
                },
                None => Content::Lower(lower),
            }),
        })
    }

    /// Where the data of metacopy `name` (a `kind` entry of layer `layer`) is: the same
    /// name below, in the lower directories from position `from` on, which must be a
    /// regular file.
    fn metacopy_data(
        &self,
        lowers: &Lowers,
        from: usize,
        name: &OsStr,
        kind: FileKind,
        layer: usize,
    ) -> Result<Lower> {
        let damaged = |why: &str| {
            FsError::corrupt(format!(
                "metacopy {name:?} in {}: {why}",
                self.layer_name(layer)
            ))
        };
        if kind != FileKind::Regular {
            return Err(damaged("not a regular file"));
        }
        match self.resolve_lowers_from(lowers, from, name)? {
            Some(Resolved {
                kind: FileKind::Regular,
                body: Body::File(c),
                ..
            }) => match c.topmost_lower() {
                Some(l) => Ok(l.data_loc().clone()),
                None => Err(damaged("no data below it")),
            },
            _ => Err(damaged("no data below it")),
        }
    }

    /// The lower directories that merge below a directory of layer `layer` with `marks`,
    /// named `name` in the parent whose lower directories below it are those of
    /// `lowers` from position `from` on.
    fn chain_below(
        &self,
        layer: usize,
        marks: &Marks,
        lowers: &Lowers,
        from: usize,
        name: &OsStr,
    ) -> Result<Vec<LowerDir>> {
        if marks.opaque {
            return Ok(Vec::new());
        }
        match &marks.redirect {
            Some(r) => self.redirect_lowers(layer, lowers, from, r).map_err(|e| {
                e.with_ctx(format!(
                    "redirect of {name:?} in {}",
                    self.layer_name(layer)
                ))
            }),
            None => self.lower_dirs_below(lowers, from, name),
        }
    }

    /// The directories named `name` in `lowers` from position `from` on that merge below
    /// a directory above them.
    pub(crate) fn lower_dirs_below(
        &self,
        lowers: &Lowers,
        from: usize,
        name: &OsStr,
    ) -> Result<Vec<LowerDir>> {
        let mut out = Vec::new();
        for i in lowers.candidates(self, from, name) {
            let ld = &lowers[i];
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
                xwhiteouts: marks.xwhiteouts,
            });
            if marks.opaque {
                break;
            }
            if let Some(r) = &marks.redirect {
                out.extend(self.redirect_lowers(ld.layer, lowers, i + 1, r)?);
                break;
            }
        }
        Ok(out)
    }

    /// The directories at redirect path `target` of a directory in layer `layer`:
    /// absolute (from the roots of the layers below `layer`), or a bare name among the
    /// parent's lower directories below it (those of `lowers` from position `from` on).
    /// A target that is not a clean path is refused (EIO): it could name something
    /// outside the layer stack.
    pub(crate) fn redirect_lowers(
        &self,
        layer: usize,
        lowers: &Lowers,
        from: usize,
        target: &[u8],
    ) -> Result<Vec<LowerDir>> {
        let Some((abs, comps)) = redirect_components(target) else {
            return Err(FsError::corrupt(format!(
                "invalid redirect {:?}",
                String::from_utf8_lossy(&target[..target.len().min(256)])
            )));
        };
        if !abs {
            return self.lower_dirs_below(lowers, from, comps[0]);
        }
        let first = (layer + 1).max(self.stack.first_lower());
        let mut cur: Vec<LowerDir> = Vec::new();
        for l in first..self.stack.layers.len() {
            let fd = self.stack.root(l).clone();
            let marks = self.dir_marks(l, &fd)?;
            cur.push(LowerDir {
                layer: l,
                fd,
                impure: marks.impure,
                xwhiteouts: marks.xwhiteouts,
            });
        }
        for comp in comps {
            match self.resolve_lowers(&Lowers::unindexed(cur), comp)? {
                Some(Resolved {
                    body: Body::Dir(d), ..
                }) => cur = d.lowers().to_vec(),
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
        let lowers = self.chain_below(0, &marks, &parent.lowers, 0, name)?;
        let lower_stat = match lowers.first() {
            Some(ld) => Some(nix::sys::stat::fstat(&ld.fd)?),
            None => None,
        };
        let ino = self.dir_ino(&lowers, 0, st)?;
        Ok(Resolved {
            kind: FileKind::Directory,
            ino,
            ident: Ident {
                upper: Some(DevIno::of(st)),
                lower: lower_stat.as_ref().map(DevIno::of),
            },
            body: Body::Dir(DirInfo::new(Some(fd), lowers, lower_stat, marks.impure)),
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
        let kind = FileKind::from_mode(st.st_mode);
        let ino = marks
            .origin
            .unwrap_or_else(|| self.stack.map_ino(0, st.st_ino));
        let mut upper = UpperLoc::Named {
            parent: up.clone(),
            name: name.to_owned(),
        };
        if st.st_nlink > 1 {
            upper = match self.indexed(ino, Some(st), kind)? {
                Some((idx, _)) => idx,
                // Hard links made outside of us.
                None => {
                    let entry = NewIndexEntry {
                        ino,
                        kind,
                        inode: DevIno::of(st),
                        nlink: st.st_nlink,
                    };
                    self.adopt_into_index(up, name, &entry).unwrap_or(upper)
                }
            };
        }
        let lower = if marks.metacopy {
            Some(self.metacopy_data(&parent.lowers, 0, name, kind, 0)?)
        } else {
            None
        };
        Ok(Resolved {
            kind,
            ino,
            ident: Ident {
                upper: Some(DevIno::of(st)),
                lower: lower.as_ref().map(|l| DevIno::of(&l.stat)),
            },
            body: Body::File(match lower {
                Some(lower) if marks.metacopy => Content::MetaCopy { upper, lower },
                lower => Content::Upper { upper, lower },
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_clean_paths_only() {
        let ok = |t: &[u8]| redirect_components(t).is_some();
        assert!(ok(b"/a/b"));
        assert!(ok(b"name"));
        for bad in [
            &b""[..],
            b"/",
            b"/..",
            b"/a/../b",
            b"..",
            b".",
            b"a/b",
            b"/a//b",
            b"/a/",
            b"/a/./b",
            b"/a\0b",
        ] {
            assert!(!ok(bad), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        assert!(!ok(&vec![b'a'; 256]));
        assert!(!ok(&[b"/".as_slice(), &vec![b'a'; 5000]].concat()));
    }
}
