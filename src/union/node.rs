//! Nodes (the union's inodes) and the table that owns them.
//!
//! A node is what the kernel knows as one inode: its FUSE node id, its lookup count, and
//! where its data and metadata live in the layers. Invariants:
//! - a node's id is its reported inode number (fuser sends `attr.ino` as the node id),
//!   except the root, which is id and inode 1; so every name of a hard-linked file
//!   reaches the same node and the same page cache;
//! - an entry that disappears (last name unlinked, replaced by rename) is marked
//!   unlinked at once: its real inode number may be reused by the filesystem, and a new
//!   file with it gets a new node with a new generation, never the old node;
//! - the kernel's lookup count per id decides when a slot is dropped (`forget`), never
//!   our own bookkeeping.
//!
//! Lock order: a node's state lock may be taken (for reading) under the table mutex,
//! never the other way round; no syscall runs under the table mutex.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::sys::stat::FileStat;

use super::attr::FileKind;
use super::readdir::Listing;

/// FUSE's id of the root node.
pub const ROOT_ID: u64 = 1;

/// A non-directory entry in a lower layer: where to find it, and its (immutable) stat.
#[derive(Debug, Clone)]
pub(crate) struct Lower {
    pub layer: usize,
    pub parent: Arc<OwnedFd>,
    pub name: OsString,
    pub stat: FileStat,
    /// Where the data is when this entry is a metacopy (a rotated upper layer's).
    pub data: Option<Box<Lower>>,
}

impl Lower {
    /// The entry that holds the bytes.
    pub fn data_loc(&self) -> &Lower {
        self.data.as_deref().unwrap_or(self)
    }
}

/// A directory of a lower layer that is part of a merged directory.
#[derive(Debug, Clone)]
pub(crate) struct LowerDir {
    pub layer: usize,
    pub fd: Arc<OwnedFd>,
    /// Marked `impure`: its entries may carry origin/metacopy marks (a rotated upper).
    pub impure: bool,
}

/// Where a non-directory lives in the upper layer.
#[derive(Debug, Clone)]
pub(crate) enum UpperLoc {
    /// `name` in upper directory `parent` (the only name of a single-link file).
    Named {
        parent: Arc<OwnedFd>,
        name: OsString,
    },
    /// `WORK/layerfs-index/<key>`: hard-linked inodes, reachable whatever their names do.
    Indexed { key: String },
}

/// The layers a merged directory is made of.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirInfo {
    /// The directory in the upper layer, when it has been created or copied up.
    pub upper: Option<Arc<OwnedFd>>,
    /// Lower layer directories merged below it, top first, cut at the first opaque one.
    pub lowers: Vec<LowerDir>,
    /// Stat of the topmost lower directory (attributes before copy-up).
    pub lower_stat: Option<FileStat>,
    /// The upper directory already carries the `impure` mark.
    pub impure: bool,
    /// Cached merged listing; dropped whenever the directory changes.
    pub listing: Option<Arc<Listing>>,
    /// Bumped on every change, so a listing built meanwhile is not cached.
    pub listing_gen: u64,
    /// Number of subdirectories in the merged view, once counted (a merged directory's
    /// nlink is 2 + this). Kept up to date by mkdir, rmdir and rename rather than
    /// recounted, so a create in a big directory does not cost a listing.
    pub subdirs: Option<u32>,
}

impl DirInfo {
    pub fn snapshot(&self) -> DirSnapshot {
        DirSnapshot {
            upper: self.upper.clone(),
            lowers: self.lowers.clone(),
        }
    }
}

/// The fds of a directory's layers, cloned out of the node so syscalls run unlocked.
#[derive(Debug, Clone, Default)]
pub(crate) struct DirSnapshot {
    pub upper: Option<Arc<OwnedFd>>,
    pub lowers: Vec<LowerDir>,
}

/// Mutable part of a node.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Parent directory and name of the name this node was reached by (root: none).
    pub parent: Option<Arc<Node>>,
    pub name: OsString,
    pub kind: FileKind,
    /// Reported inode number (st_ino).
    pub ino: u64,
    /// Non-directories: the topmost lower entry (data source while not copied up, and
    /// for a metacopy upper).
    pub lower: Option<Lower>,
    /// Non-directories: the upper copy.
    pub upper: Option<UpperLoc>,
    /// The upper copy holds metadata only; data is still read from `lower`.
    pub metacopy: bool,
    /// Directories only.
    pub dir: Option<DirInfo>,
    /// The last name is gone; the node lives on for open files until forgotten.
    pub unlinked: bool,
}

impl NodeState {
    pub fn has_upper(&self) -> bool {
        match &self.dir {
            Some(d) => d.upper.is_some(),
            None => self.upper.is_some(),
        }
    }

    /// Data is served by the upper copy (not a lower file, not a metacopy).
    pub fn data_in_upper(&self) -> bool {
        self.upper.is_some() && !self.metacopy
    }
}

/// One inode of the union.
#[derive(Debug)]
pub struct Node {
    /// FUSE node id, which is also the reported inode number (fuser uses one for both).
    pub id: u64,
    /// Told to the kernel with every entry: a new node for a reused inode number gets a
    /// new generation, so the kernel never takes it for the old one.
    pub generation: u64,
    state: RwLock<NodeState>,
    /// Serializes copy-up of this node.
    copy_lock: Mutex<()>,
}

impl Node {
    pub(crate) fn new(id: u64, generation: u64, state: NodeState) -> Node {
        Node {
            id,
            generation,
            state: RwLock::new(state),
            copy_lock: Mutex::new(()),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, NodeState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, NodeState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn copy_guard(&self) -> MutexGuard<'_, ()> {
        self.copy_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_dir(&self) -> bool {
        self.read().kind.is_dir()
    }

    fn is_unlinked(&self) -> bool {
        self.read().unlinked
    }
}

/// A table slot: the current node of an inode number and the kernel's lookup count for
/// that node id (summed over the nodes that held it, as the kernel's forgets will be).
#[derive(Debug)]
struct Slot {
    node: Arc<Node>,
    nlookup: u64,
}

/// The inode table, keyed by node id (= reported inode number).
#[derive(Debug)]
pub(crate) struct Inodes {
    inner: Mutex<HashMap<u64, Slot>>,
    next_generation: AtomicU64,
}

impl Inodes {
    pub fn new(root: NodeState) -> Inodes {
        let node = Arc::new(Node::new(ROOT_ID, 0, root));
        let mut map = HashMap::new();
        map.insert(ROOT_ID, Slot { node, nlookup: 1 });
        Inodes {
            inner: Mutex::new(map),
            next_generation: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node the kernel knows as `id` (possibly unlinked but still open).
    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.lock().get(&id).map(|s| s.node.clone())
    }

    /// The live (not unlinked) node of inode number `ino`, if any.
    pub fn by_ino(&self, ino: u64) -> Option<Arc<Node>> {
        let node = self.lock().get(&ino).map(|s| s.node.clone())?;
        (!node.is_unlinked()).then_some(node)
    }

    /// Returns the node for `ino`, creating it with `make` when there is none (or only an
    /// unlinked one, whose number the filesystem has reused), and counts one kernel lookup.
    pub fn intern(&self, ino: u64, make: impl FnOnce() -> NodeState) -> Arc<Node> {
        {
            let mut t = self.lock();
            if let Some(slot) = t.get_mut(&ino)
                && !slot.node.is_unlinked()
            {
                slot.nlookup += 1;
                return slot.node.clone();
            }
        }
        // Built unlocked: `make` may be arbitrary work.
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(Node::new(ino, generation, make()));
        let mut t = self.lock();
        let slot = t.entry(ino).or_insert_with(|| Slot {
            node: fresh.clone(),
            nlookup: 0,
        });
        if slot.node.is_unlinked() {
            slot.node = fresh;
        }
        slot.nlookup += 1;
        slot.node.clone()
    }

    /// Counts one more kernel reference (link, readdirplus replies).
    pub fn add_lookup(&self, node: &Node) {
        if let Some(slot) = self.lock().get_mut(&node.id) {
            slot.nlookup += 1;
        }
    }

    /// The kernel dropped `n` references to `id`.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut t = self.lock();
        if let Some(slot) = t.get_mut(&id) {
            slot.nlookup = slot.nlookup.saturating_sub(n);
            if slot.nlookup == 0 {
                t.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
