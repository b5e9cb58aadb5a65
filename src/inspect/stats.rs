//! What each layer of a stack adds, changes and deletes, and how many of its bytes later
//! layers hide (replace or delete): shipped with the image, never seen in it.
//!
//! The layers are replayed bottom up over a map of the merged tree (path → the layer and
//! size of what is there), as an unpacker applies them: an entry replaces what was at its
//! path (and, a non-directory over a directory, everything under it); a whiteout (any
//! dialect) deletes its path and everything under it; an opaque directory deletes what
//! was under it before its own entries. Whatever leaves the map is charged, as hidden
//! bytes, to the layer that brought it. Counts are of non-directories; sizes are of
//! regular files, each inode once per layer: a hard-linked file's bytes count as hidden
//! only when its last name is gone.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;
use serde::Serialize;

use crate::fdtree::{self, Entry, Visitor};
use crate::sys::At;
use crate::union::{FileKind, Stack, xattr};
use crate::whiteout;

/// What one layer does.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerStats {
    /// Index in the stack (0: the top).
    #[serde(skip)]
    pub index: usize,
    pub layer: String,
    /// Bytes of its regular files.
    pub size: u64,
    /// Non-directories at paths nothing below had.
    pub added: u64,
    /// Non-directories replacing what a layer below had.
    pub changed: u64,
    /// Non-directories of layers below that its whiteouts and opaque directories delete.
    pub deleted: u64,
    /// Bytes of its regular files that layers above replace or delete.
    pub hidden: u64,
}

/// What is at a path of the merged tree so far.
#[derive(Clone, Copy)]
struct At_ {
    layer: usize,
    /// The regular file's inode (device, number), whose bytes `Replay::inodes` counts.
    inode: Option<(u64, u64)>,
    dir: bool,
}

/// The statistics of every layer of `stack`, top first.
pub fn layer_stats(stack: &Stack) -> io::Result<Vec<LayerStats>> {
    let n = stack.layers.len();
    let mut stats: Vec<LayerStats> = (0..n)
        .map(|i| LayerStats {
            index: i,
            layer: stack.layers[i].label.clone(),
            ..LayerStats::default()
        })
        .collect();
    let mut tree: BTreeMap<Vec<u8>, At_> = BTreeMap::new();
    let mut inodes: HashMap<(usize, u64, u64), (u64, u64)> = HashMap::new();
    for i in (0..n).rev() {
        let root = crate::union::layer::open_readable_dir(stack.root(i).as_fd())
            .map_err(io::Error::from)?;
        let mut v = Replay {
            layer: i,
            wh_files: stack.wh_files(i),
            tree: &mut tree,
            stats: &mut stats,
            inodes: &mut inodes,
        };
        fdtree::walk(root.as_fd(), &mut v)?;
    }
    Ok(stats)
}

struct Replay<'a> {
    layer: usize,
    wh_files: bool,
    tree: &'a mut BTreeMap<Vec<u8>, At_>,
    stats: &'a mut [LayerStats],
    /// Regular files' inodes by (layer, device, number): names still in the tree, size.
    inodes: &'a mut HashMap<(usize, u64, u64), (u64, u64)>,
}

fn join(path: &[OsString], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for c in path {
        p.extend_from_slice(c.as_bytes());
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Replay<'_> {
    /// Removes what is under `p` (and `p` itself when `with_self`), charging it to the
    /// layers that brought it; returns how many non-directories left.
    fn remove(&mut self, p: &[u8], with_self: bool) -> u64 {
        let mut prefix = p.to_vec();
        prefix.push(b'/');
        let mut gone: Vec<Vec<u8>> = self
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if with_self && self.tree.contains_key(p) {
            gone.push(p.to_vec());
        }
        let mut files = 0;
        for k in gone {
            let Some(a) = self.tree.remove(&k) else {
                continue;
            };
            if a.dir {
                continue;
            }
            files += 1;
            if let Some((dev, ino)) = a.inode
                && let Some(e) = self.inodes.get_mut(&(a.layer, dev, ino))
            {
                e.0 -= 1;
                if e.0 == 0 {
                    self.stats[a.layer].hidden += e.1;
                }
            }
        }
        files
    }

    fn delete(&mut self, p: &[u8]) {
        let n = self.remove(p, true);
        self.stats[self.layer].deleted += n;
    }

    /// Whether directory `name` of `dir` is opaque (in any dialect this layer spells).
    fn is_opaque(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
        let sub = fdtree::open_dir_at(dir, name)?;
        Ok(xattr::dir_marks(&sub, self.wh_files)?.opaque)
    }
}

impl Visitor for Replay<'_> {
    fn entry(&mut self, dir: BorrowedFd<'_>, path: &[OsString], e: &Entry) -> io::Result<bool> {
        let name = e.name.as_bytes();
        if self.wh_files && name.starts_with(whiteout::WHITEOUT_PREFIX.as_bytes()) {
            // `.wh..wh..opq` is read with its directory; `.wh..wh.*` is AUFS bookkeeping.
            if let whiteout::NameKind::Whiteout(target) = whiteout::classify(&e.name) {
                self.delete(&join(path, target.as_bytes()));
            }
            return Ok(false);
        }
        let p = join(path, name);
        let st = fstatat(dir, e.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let xattr_whiteout = whiteout::may_be_xattr_whiteout(&st)
            && xattr::is_xattr_whiteout(
                dir,
                xattr::read_marks(At::Fd(dir))?.xwhiteouts,
                &e.name,
                &st,
            )?;
        if whiteout::is_whiteout_device(&st) || xattr_whiteout {
            self.delete(&p);
            return Ok(false);
        }
        let kind = FileKind::from_mode(st.st_mode);
        if kind.is_dir() {
            // A directory replacing a non-directory deletes it; an opaque one, what was
            // under it.
            if self.tree.get(&p).is_some_and(|a| !a.dir) {
                let n = self.remove(&p, true);
                self.stats[self.layer].deleted += n;
            }
            if self.is_opaque(dir, &e.name)? {
                let n = self.remove(&p, false);
                self.stats[self.layer].deleted += n;
            }
            self.tree.insert(
                p,
                At_ {
                    layer: self.layer,
                    inode: None,
                    dir: true,
                },
            );
            return Ok(true);
        }
        let mut inode = None;
        if kind == FileKind::Regular {
            let key = (self.layer, st.st_dev, st.st_ino);
            let stats = &mut *self.stats;
            let e = self.inodes.entry(key).or_insert_with(|| {
                let size = u64::try_from(st.st_size).unwrap_or(0);
                stats[key.0].size += size;
                (0, size)
            });
            e.0 += 1;
            inode = Some((st.st_dev, st.st_ino));
        }
        let was_there = self.tree.contains_key(&p);
        let n = self.remove(&p, true);
        if was_there || n > 0 {
            self.stats[self.layer].changed += 1;
        } else {
            self.stats[self.layer].added += 1;
        }
        self.tree.insert(
            p,
            At_ {
                layer: self.layer,
                inode,
                dir: false,
            },
        );
        Ok(false)
    }
}
