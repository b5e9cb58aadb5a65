//! The merged listing of a directory: every layer's entries, top first, without
//! duplicates, without what whiteouts hide and without the markers themselves.
//!
//! An entry's readdir offset is a cookie made from its name (a keyed hash, so names
//! cannot be chosen to collide), and a listing is ordered by it: an entry keeps its
//! offset whatever is created or removed beside it, so a reader that continues (or a
//! seekdir to a telldir) after the directory changed neither skips nor repeats an entry
//! that did not change, without any per-reader state.
//!
//! This module also owns the listing cache of a directory node ([`ListingCache`], kept in
//! its state): the last listing built, until the directory changes, and its number of
//! subdirectories (a merged directory's nlink). Every change of a directory's entries
//! calls [`Union::dir_changed`], which drops the listing and bumps a generation, so a
//! listing built while the change happened is not cached; the subdirectory count is kept
//! up to date by the change itself rather than recounted, so a create in a big directory
//! costs no listing.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::hash::BuildHasher;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use crate::sys::{self, At};
use crate::whiteout::{self, NameKind};

use super::attr::FileKind;
use super::error::{FsError, Result};
use super::layer::open_listing_dir;
use super::listing::{DirEntry, Listing};
use super::lookup::stat_at;
use super::node::{DirSnapshot, Node};
use super::xattr;
use super::{Atime, Union};

/// What is cached about a directory's merged listing (in its node's state, changed only
/// here).
#[derive(Debug, Default)]
pub(crate) struct ListingCache {
    /// The last listing built, while the directory has not changed since.
    listing: Option<Arc<Listing>>,
    /// Bumped on every change, so a listing built meanwhile is not cached.
    generation: u64,
    /// Number of subdirectories in the merged view, once counted.
    subdirs: Option<u32>,
}

impl ListingCache {
    /// Number of subdirectories in the merged view, if counted.
    pub fn subdirs(&self) -> Option<u32> {
        self.subdirs
    }

    /// Keeps `listing`, built from the directory as it was at `generation`, unless the
    /// directory changed since.
    fn store(&mut self, generation: u64, listing: &Arc<Listing>) {
        if self.generation == generation {
            self.listing = Some(listing.clone());
            self.subdirs = Some(listing.subdirs);
        }
    }

    /// The directory changed, with `subdirs` more (or fewer) subdirectories.
    fn changed(&mut self, subdirs: i32) {
        self.listing = None;
        self.generation += 1;
        self.subdirs = self.subdirs.map(|n| n.saturating_add_signed(subdirs));
    }
}

impl Union {
    /// Builds the merged listing of the directory made of `snap`. `impure` says the upper
    /// directory may hold copied-up or renamed entries whose reported inode numbers are
    /// not their real ones (the lower directories carry their own flag).
    ///
    /// d_ino is what `stat` reports: the real inode number for plain entries, the
    /// `origin` mark for copied-up ones, and for a directory that merges several layers
    /// or sits in an impure directory (it may be a renamed one) its resolved inode
    /// number, the bottom of its merge chain.
    pub(crate) fn build_listing(&self, snap: &DirSnapshot, impure: bool) -> Result<Listing> {
        // (layer, directory, impure, holds xattr whiteouts)
        let mut layers: Vec<(usize, Arc<OwnedFd>, bool, bool)> =
            Vec::with_capacity(snap.lowers.len() + 1);
        if let Some(up) = &snap.upper {
            layers.push((0, up.clone(), impure, false));
        }
        layers.extend(
            snap.lowers
                .iter()
                .map(|ld| (ld.layer, ld.fd.clone(), ld.impure, ld.xwhiteouts)),
        );

        let mut entries: Vec<DirEntry> = Vec::new();
        let mut index: HashMap<OsString, usize> = HashMap::new();
        let mut hidden: HashSet<OsString> = HashSet::new();
        // Directories whose inode number needs a full resolution.
        let mut resolve_ino: HashSet<usize> = HashSet::new();

        for (layer, fd, layer_impure, xwhiteouts) in &layers {
            let wh_files = self.stack.wh_files(*layer);
            let mut layer_hidden: Vec<OsString> = Vec::new();
            let noatime = matches!(self.opts.atime, Atime::Never | Atime::NeverForDirs);
            for e in sys::dir_entries(open_listing_dir(fd, noatime)?)? {
                let (name, dtype, dino) = (e.name, FileKind::from_dirent(e.kind), e.ino);
                if wh_files {
                    match whiteout::classify(&name) {
                        NameKind::Entry => {}
                        NameKind::Whiteout(t) => {
                            layer_hidden.push(t.to_owned());
                            continue;
                        }
                        NameKind::Opaque | NameKind::AufsMeta | NameKind::Invalid => continue,
                    }
                }
                if hidden.contains(&name) {
                    continue;
                }
                if let Some(&i) = index.get(&name) {
                    // Shadowed by a layer above. A directory seen again may merge with
                    // this one: its inode number comes from its whole chain.
                    if entries[i].kind.is_dir() && dtype.is_none_or(|k| k.is_dir()) {
                        resolve_ino.insert(i);
                    }
                    continue;
                }
                let kind = match dtype {
                    Some(k) => k,
                    None => match stat_at(fd, &name)? {
                        Some(st) => FileKind::from_mode(st.st_mode),
                        None => continue,
                    },
                };
                if kind == FileKind::CharDevice
                    && let Some(st) = stat_at(fd, &name)?
                    && whiteout::is_whiteout_device(&st)
                {
                    layer_hidden.push(name);
                    continue;
                }
                if *xwhiteouts
                    && kind == FileKind::Regular
                    && let Some(st) = stat_at(fd, &name)?
                    && whiteout::may_be_xattr_whiteout(&st)
                    && whiteout::has_whiteout_xattr(At::Entry(fd.as_fd(), &name))?
                {
                    layer_hidden.push(name);
                    continue;
                }
                let mut ino = self.stack.map_ino(*layer, dino);
                if *layer_impure {
                    if kind.is_dir() {
                        resolve_ino.insert(entries.len());
                    } else if let Some(o) = xattr::read_marks(At::Entry(fd.as_fd(), &name))
                        .ok()
                        .and_then(|m| m.origin)
                    {
                        ino = o;
                    }
                }
                index.insert(name.clone(), entries.len());
                entries.push(DirEntry { name, kind, ino });
            }
            hidden.extend(layer_hidden);
        }
        for i in resolve_ino {
            match self.resolve(snap, &entries[i].name) {
                Ok(Some(r)) => entries[i].ino = r.ino,
                Ok(None) => {}
                // A damaged mark fails that entry's lookup, not the listing.
                Err(e) => log::warn!("listing: {:?}: {e}", entries[i].name),
            }
        }
        let subdirs = entries.iter().filter(|e| e.kind.is_dir()).count() as u32;
        let (entries, offsets) = self.by_cookie(entries);
        Ok(Listing {
            entries,
            offsets,
            subdirs,
        })
    }

    /// `entries` ordered by their cookies, and those. A cookie is above 2 ("." and ".."
    /// come first) and below 2^62 + the number of entries, so it fits an `off_t`. Two
    /// names whose hashes collide (about never: 62 bits) take successive cookies.
    fn by_cookie(&self, entries: Vec<DirEntry>) -> (Vec<DirEntry>, Vec<u64>) {
        let mut keyed: Vec<(u64, DirEntry)> = entries
            .into_iter()
            .map(|e| ((self.cookies.hash_one(e.name.as_bytes()) >> 2) + 3, e))
            .collect();
        keyed.sort_unstable_by(|a, b| (a.0, a.1.name.as_bytes()).cmp(&(b.0, b.1.name.as_bytes())));
        let mut offsets = Vec::with_capacity(keyed.len());
        let mut entries = Vec::with_capacity(keyed.len());
        for (cookie, e) in keyed {
            let o = offsets
                .last()
                .map_or(cookie, |&last: &u64| cookie.max(last + 1));
            offsets.push(o);
            entries.push(e);
        }
        (entries, offsets)
    }

    /// The merged listing of a directory node, cached until the directory changes.
    pub(crate) fn dir_listing(&self, node: &Node) -> Result<Arc<Listing>> {
        let (snap, impure, generation) = {
            let s = node.read();
            let d = s.dir().ok_or(FsError::ENOTDIR)?;
            if let Some(l) = &d.listing().listing {
                return Ok(l.clone());
            }
            (d.snapshot(), d.impure(), d.listing().generation)
        };
        // Built unlocked: the generation says whether it is still the directory's.
        let listing = Arc::new(self.build_listing(&snap, impure)?);
        if let Some(cache) = node.write().listing_mut() {
            cache.store(generation, &listing);
        }
        Ok(listing)
    }

    /// Forgets the cached listing of a directory node after a change in it; `subdirs`
    /// is how its number of subdirectories changed.
    pub(crate) fn dir_changed(&self, node: &Node, subdirs: i32) {
        if let Some(cache) = node.write().listing_mut() {
            cache.changed(subdirs);
        }
    }

    /// True when the merged directory has no visible entry.
    pub(crate) fn is_empty_dir(&self, snap: &DirSnapshot) -> Result<bool> {
        Ok(self.build_listing(snap, false)?.entries.is_empty())
    }
}
