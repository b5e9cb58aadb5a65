//! A merged directory's lower directories, and an index of the names they hold.
//!
//! Lower layers never change, so once a directory merges several of them, reading their
//! names once is cheaper than probing each of them on every lookup: a name none of them
//! holds (what `PATH` searches, the dynamic linker and Python imports ask for all the
//! time) is answered without a syscall, and a name they hold is probed only in the
//! directories that have it. Without the index a lookup's cost grows with the depth of
//! the stack (two probes per layer); with it, it does not.
//!
//! The index is built on a directory's first lookup, and only for directories merging at
//! least [`INDEX_FROM`] lower directories: below that, probing costs less than reading.
//! It lives as long as the directory's node, and is shared with the snapshots taken of it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use crate::sys;

use super::Union;
use super::layer::open_listing_dir;
use super::node::LowerDir;

/// Fewest lower directories for which a directory's names are indexed.
pub(crate) const INDEX_FROM: usize = 3;

/// The lower directories of a merged directory, top first, cut at the first opaque one.
#[derive(Debug, Default)]
pub(crate) struct Lowers {
    dirs: Vec<LowerDir>,
    /// Off for the throwaway lists of a redirect walk: read once, never worth indexing.
    indexable: bool,
    /// Built on first use; `None` inside when a directory could not be read (one
    /// searchable but not readable): probing still works there.
    names: OnceLock<Option<NameIndex>>,
}

/// For each name, the positions (in [`Lowers`]) of the directories holding it or its
/// `.wh.` whiteout file, in order.
#[derive(Default)]
struct NameIndex {
    map: HashMap<Box<[u8]>, Positions>,
}

impl std::fmt::Debug for NameIndex {
    // A node's state may be logged: its size, not thousands of names.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameIndex({} names)", self.map.len())
    }
}

/// One position needs no allocation of its own: most names are in one layer only.
#[derive(Debug)]
enum Positions {
    One(u32),
    Many(Vec<u32>),
}

impl Positions {
    fn as_slice(&self) -> &[u32] {
        match self {
            Positions::One(p) => std::slice::from_ref(p),
            Positions::Many(v) => v,
        }
    }

    fn push(&mut self, p: u32) {
        match self {
            Positions::One(q) if *q == p => {}
            Positions::One(q) => *self = Positions::Many(vec![*q, p]),
            Positions::Many(v) if v.last() == Some(&p) => {}
            Positions::Many(v) => v.push(p),
        }
    }
}

/// The positions a lookup probes: all from a start, or those the index names.
pub(crate) enum Candidates<'a> {
    All(std::ops::Range<usize>),
    Indexed(std::slice::Iter<'a, u32>, usize),
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Candidates::All(r) => r.next(),
            Candidates::Indexed(it, from) => it.by_ref().map(|&p| p as usize).find(|p| p >= from),
        }
    }
}

impl Deref for Lowers {
    type Target = [LowerDir];

    fn deref(&self) -> &[LowerDir] {
        &self.dirs
    }
}

impl Lowers {
    /// The lower directories of a directory node.
    pub fn new(dirs: Vec<LowerDir>) -> Lowers {
        Lowers {
            dirs,
            indexable: true,
            names: OnceLock::new(),
        }
    }

    /// Lower directories looked up once (a redirect walk): never indexed.
    pub fn unindexed(dirs: Vec<LowerDir>) -> Lowers {
        Lowers {
            dirs,
            indexable: false,
            names: OnceLock::new(),
        }
    }

    /// The positions from `from` on whose directories may hold `name` or its `.wh.`
    /// whiteout; every other one holds neither.
    pub fn candidates(&self, u: &Union, from: usize, name: &OsStr) -> Candidates<'_> {
        match self.index(u) {
            Some(ix) => Candidates::Indexed(
                ix.map
                    .get(name.as_bytes())
                    .map_or(&[][..], Positions::as_slice)
                    .iter(),
                from,
            ),
            None => Candidates::All(from..self.dirs.len()),
        }
    }

    fn index(&self, u: &Union) -> Option<&NameIndex> {
        if !self.indexable || self.dirs.len() < INDEX_FROM {
            return None;
        }
        self.names
            .get_or_init(|| {
                self.build(u)
                    .map_err(|e| log::debug!("name index: {e}"))
                    .ok()
            })
            .as_ref()
    }

    fn build(&self, u: &Union) -> std::io::Result<NameIndex> {
        let mut map: HashMap<Box<[u8]>, Positions> = HashMap::new();
        let mut add = |key: &[u8], p: u32| match map.get_mut(key) {
            Some(ps) => ps.push(p),
            None => {
                map.insert(key.into(), Positions::One(p));
            }
        };
        for (p, ld) in self.dirs.iter().enumerate() {
            let p = p as u32;
            // Reading names does not access the directory: keep atime as it is.
            let wh_files = u.stack.wh_files(ld.layer);
            for e in sys::dir_entries(open_listing_dir(&ld.fd, true)?)? {
                let b = e.name.as_bytes();
                add(b, p);
                // What a probe of `.wh.NAME` for NAME finds.
                if wh_files && b.len() > 4 && b.starts_with(b".wh.") {
                    add(&b[4..], p);
                }
            }
        }
        map.shrink_to_fit();
        Ok(NameIndex { map })
    }
}
