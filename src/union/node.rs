//! Nodes: what the kernel knows as one inode of the union, and where its data and
//! metadata live in the layers. The table that owns them (ids, lookup counts, identity)
//! is the node table (`table.rs`).
//!
//! A node's state lock guards its locations. Operations clone what they need out of it
//! and run their syscalls unlocked. An operation that moves or removes a name of a node
//! first pins the node's upper inode (an `O_PATH` fd kept in its state, which readers
//! prefer to any name), so a reader that finds a name stale and retries reaches the inode
//! through the pin or the new name (see the threading model in `table.rs`).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use nix::sys::stat::FileStat;

use super::attr::FileKind;
use super::listing::Listing;

/// A FUSE node id. fuser sends `attr.ino` as the node id, so it is also the inode number
/// the mount reports (`st_ino`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    pub const ROOT: NodeId = NodeId(1);
}

/// An open file or directory of the union, as handed to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fh(pub u64);

/// A real inode: device and inode number on the backing filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevIno {
    pub dev: u64,
    pub ino: u64,
}

impl DevIno {
    pub fn of(st: &FileStat) -> DevIno {
        DevIno {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// Which real inodes a node is: its upper copy (set once, by creation or copy-up, and
/// never changed: a metacopy is completed in place) and its topmost lower entry (fixed).
/// Two resolutions are the same file when their upper inodes are the same, or, when the
/// newer one found no upper copy, their lower entries are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ident {
    pub upper: Option<DevIno>,
    pub lower: Option<DevIno>,
}

impl Ident {
    /// Is `found` (a fresh resolution) this object?
    pub fn matches(&self, found: &Ident) -> bool {
        match found.upper {
            Some(u) => self.upper == Some(u),
            None => found.lower.is_some() && self.lower == found.lower,
        }
    }

    /// The inodes under which a node may be found again.
    pub fn keys(&self) -> impl Iterator<Item = DevIno> {
        self.upper.into_iter().chain(self.lower)
    }
}

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
    /// Holds xattr whiteouts (empty files with an `overlay.whiteout` xattr).
    pub xwhiteouts: bool,
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
    /// The upper directory's default ACL (`None` inside: it has none), once read: what
    /// is created in it inherits it.
    pub default_acl: Option<Option<Arc<[u8]>>>,
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

/// The directory a node was reached in.
#[derive(Debug, Clone)]
pub(crate) enum Parent {
    /// Kept alive by the node: a copy-up, which goes up the tree, reaches it even after
    /// the kernel forgot it (what a mount needs).
    Held(Arc<Node>),
    /// Named by id only (a read-only union with `Options::hold_parents` off): a walk
    /// that has let a directory go frees it and its fds, whatever it holds below it, so
    /// a walk of any depth holds a bounded number of fds.
    Named(NodeId),
}

impl Parent {
    pub fn id(&self) -> NodeId {
        match self {
            Parent::Held(n) => n.id,
            Parent::Named(id) => *id,
        }
    }
}

/// Mutable part of a node.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Parent directory and name of the name this node was reached by (root: none).
    pub parent: Option<Parent>,
    pub name: OsString,
    pub kind: FileKind,
    /// The inode number the entry has in the layers (its own, its `origin` mark's, its
    /// bottom directory's): what index keys and origin marks are made of. The node id is
    /// this number unless another live file already had it.
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
    /// An `O_PATH` fd of the upper inode, taken before a name of it is removed: it keeps
    /// an unlinked file reachable (fstat, fchmod… of open files) and its inode number
    /// from being reused while the kernel still knows the node.
    pub pin: Option<Arc<OwnedFd>>,
    /// A real fd of the upper inode held by an open file of the node: metadata calls use
    /// it while the file is open (a write makes the kernel ask for security.capability
    /// every time) instead of opening the inode again.
    pub open_fd: Option<Weak<OwnedFd>>,
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
    pub id: NodeId,
    /// Told to the kernel with every entry: a node id used again after the kernel forgot
    /// the old node comes with a new generation.
    pub generation: u64,
    /// Written only by the node table (under its lock); a leaf lock.
    ident: Mutex<Ident>,
    state: RwLock<NodeState>,
    /// Serializes copy-up of this node.
    copy_lock: Mutex<()>,
}

impl Node {
    pub(crate) fn new(id: NodeId, generation: u64, ident: Ident, state: NodeState) -> Node {
        Node {
            id,
            generation,
            ident: Mutex::new(ident),
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

    pub fn ident(&self) -> Ident {
        *self.ident.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_ident(&self, ident: Ident) {
        *self.ident.lock().unwrap_or_else(|p| p.into_inner()) = ident;
    }

    pub fn is_dir(&self) -> bool {
        self.read().kind.is_dir()
    }

    pub fn is_unlinked(&self) -> bool {
        self.read().unlinked
    }
}
