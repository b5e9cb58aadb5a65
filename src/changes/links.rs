//! Lower names of copied-up hard links. When a container changes a file whose inode has
//! several names in the image, the inode is copied up once, into the index
//! (`WORK/layerfs-index/<key>`, see `union/index.rs`), and every name shows the copy —
//! also the names that were never touched and so are not in the upper directory. Those
//! names are found here: the index says which inodes have names outside the upper layer
//! (its `nlink` mark counts all visible names, the inode's own link count those in the
//! upper layer plus the index name), and one pass over the image layers' directories
//! (names and inode numbers only, no stat) finds their names. Nothing is read when no
//! such inode exists, which is the common case.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};

use super::Views;
use crate::error::{Error, Result};
use crate::sys::At;
use crate::union::FileKind;
use crate::union::layer::WORK_INDEX;

/// Paths the walk must visit besides the upper layer's, as a tree of names.
#[derive(Debug, Default)]
pub struct Extra {
    pub children: BTreeMap<OsString, Extra>,
}

impl Extra {
    fn add(&mut self, path: &[OsString]) {
        let mut cur = self;
        for c in path {
            cur = cur.children.entry(c.clone()).or_default();
        }
    }
}

/// The natural inode numbers of indexed inodes that have names outside the upper layer.
fn wanted(v: &Views) -> Result<HashSet<u64>> {
    let dir = v.work.path.join(WORK_INDEX);
    let work = v
        .work
        .open()
        .map_err(|e| Error::io_what("opening the work directory", e))?;
    let fd = match nix::fcntl::openat(
        &work,
        WORK_INDEX,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(HashSet::new()),
        Err(e) => return Err(Error::io(&dir, e.into())),
    };
    let mut out = HashSet::new();
    for name in super::raw_names(&fd).map_err(|e| Error::io(&dir, e))? {
        let Some(key) = std::str::from_utf8(name.as_bytes())
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        else {
            continue;
        };
        let Ok(st) = fstatat(&fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        if FileKind::from_mode(st.st_mode).is_dir() {
            continue;
        }
        let Ok(marks) = crate::union::xattr::read_marks(At::Entry(fd.as_fd(), &name)) else {
            continue;
        };
        // Not an index entry of ours for this inode: the mount ignores it too.
        if marks.origin != Some(key) {
            continue;
        }
        let upper_names = st.st_nlink.saturating_sub(1);
        if marks.nlink.is_some_and(|n| u64::from(n) > upper_names) {
            out.insert(key);
        }
    }
    Ok(out)
}

/// The lower paths whose inode the container copied up with some of its names left in
/// the image layers, and those of the inodes in `also` (numbered as the container's view
/// numbers them).
pub(super) fn lower_names(v: &Views, also: &HashSet<u64>) -> Result<Extra> {
    let mut wanted = wanted(v)?;
    wanted.extend(also);
    let mut out = Extra::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    for (i, layer) in v.lowers.iter().enumerate() {
        let fd = layer
            .open_readable()
            .map_err(|e| Error::io(&layer.path, e))?;
        // Layer i of the image is layer i + 1 of the container's stack.
        let natural = |ino: u64| v.ctr.stack.map_ino(i + 1, ino);
        scan(&fd, &mut Vec::new(), &wanted, &natural, &mut out)
            .map_err(|e| Error::io(&layer.path, e))?;
    }
    Ok(out)
}

fn scan(
    dir: &OwnedFd,
    path: &mut Vec<OsString>,
    wanted: &HashSet<u64>,
    natural: &dyn Fn(u64) -> u64,
    out: &mut Extra,
) -> std::io::Result<()> {
    let mut subdirs = Vec::new();
    for crate::sys::DirEntry { name, ino, kind } in super::raw_entries(dir)? {
        let is_dir = match kind {
            Some(t) => t == nix::dir::Type::Directory,
            None => fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileKind::from_mode(st.st_mode).is_dir()),
        };
        if is_dir {
            subdirs.push(name);
        } else if wanted.contains(&natural(ino)) {
            path.push(name);
            out.add(path);
            path.pop();
        }
    }
    for name in subdirs {
        let sub = match openat(
            dir,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EACCES) => continue,
            Err(e) => return Err(e.into()),
        };
        path.push(name);
        let r = scan(&sub, path, wanted, natural, out);
        path.pop();
        r?;
    }
    Ok(())
}
