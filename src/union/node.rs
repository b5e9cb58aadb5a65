//! Nodes: what the kernel knows as one inode of the union, and where its data and
//! metadata live in the layers. The table that owns them (ids, lookup counts, identity)
//! is the node table (`table.rs`).
//!
//! A node's state lock guards its locations ([`NodeState`], whose fields change only
//! through its named transitions). Operations clone what they need out of it and run
//! their syscalls unlocked. An operation that moves or removes a name of a node
//! first pins the node's upper inode (an `O_PATH` fd kept in its state, which readers
//! prefer to any name), so a reader that finds a name stale and retries reaches the inode
//! through the pin or the new name (see the threading model in `table.rs`).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use nix::sys::stat::FileStat;

use super::attr::FileKind;
use super::names::Lowers;
use super::readdir::ListingCache;

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

/// Where a non-directory's data and metadata are. Copy-up only moves it forward
/// (`Lower` → `MetaCopy` → `Upper`, or `Lower` → `Upper`): once a node has an upper copy
/// it keeps one, whose location may be re-pointed (rename, indexing) but not dropped.
#[derive(Debug, Clone)]
pub(crate) enum Content {
    /// Not copied up: data and metadata are the topmost lower entry's.
    Lower(Lower),
    /// Metadata in the upper copy (marked `metacopy`), data still `lower`'s.
    MetaCopy { upper: UpperLoc, lower: Lower },
    /// Data and metadata in the upper copy. `lower` is the lower entry it was copied from
    /// or found over (a hard-linked lower file whose copy is in the index): nothing is
    /// read from it through the node any more.
    Upper {
        upper: UpperLoc,
        lower: Option<Lower>,
    },
}

impl Content {
    /// The upper copy, if any.
    pub fn upper(&self) -> Option<&UpperLoc> {
        match self {
            Content::Lower(_) => None,
            Content::MetaCopy { upper, .. } | Content::Upper { upper, .. } => Some(upper),
        }
    }

    /// The lower entry the node still reads from: everything while not copied up, the
    /// data (at its [`Lower::data_loc`]) while a metacopy; `None` once the data is up.
    pub fn lower(&self) -> Option<&Lower> {
        match self {
            Content::Lower(l) | Content::MetaCopy { lower: l, .. } => Some(l),
            Content::Upper { .. } => None,
        }
    }

    /// The lower entry, when the node has no upper copy at all.
    pub fn lower_only(&self) -> Option<&Lower> {
        match self {
            Content::Lower(l) => Some(l),
            _ => None,
        }
    }

    /// The topmost lower entry whatever was copied up (for a resolution's data source:
    /// see `metacopy_data` in `lookup.rs`).
    pub fn topmost_lower(&self) -> Option<&Lower> {
        match self {
            Content::Lower(l) | Content::MetaCopy { lower: l, .. } => Some(l),
            Content::Upper { lower, .. } => lower.as_ref(),
        }
    }

    pub fn is_metacopy(&self) -> bool {
        matches!(self, Content::MetaCopy { .. })
    }

    /// Rebuilds the content from the old one (moved out for the duration of `f`).
    fn update(&mut self, f: impl FnOnce(Content) -> Content) {
        // A placeholder that costs no allocation; `f` never fails.
        let hole = Content::Upper {
            upper: UpperLoc::Indexed { key: String::new() },
            lower: None,
        };
        let old = std::mem::replace(self, hole);
        *self = f(old);
    }

    /// Gives the content upper copy `upper`, holding metadata only when `metacopy` (which
    /// needs a lower entry for the data).
    fn with_upper(&mut self, upper: UpperLoc, metacopy: bool) {
        self.update(|c| {
            let lower = match c {
                Content::Lower(l) | Content::MetaCopy { lower: l, .. } => Some(l),
                Content::Upper { lower, .. } => lower,
            };
            match lower {
                Some(lower) if metacopy => Content::MetaCopy { upper, lower },
                lower => Content::Upper { upper, lower },
            }
        });
    }

    /// Replaces the upper location, keeping what holds the data.
    fn relocate_upper(&mut self, loc: UpperLoc) {
        if let Content::MetaCopy { upper, .. } | Content::Upper { upper, .. } = self {
            *upper = loc;
        }
    }
}

/// What a node is made of: a merged directory, or a non-directory of some kind.
#[derive(Debug)]
pub(crate) enum Body {
    Dir(DirInfo),
    File(Content),
}

/// The layers a merged directory is made of, and what is cached about it.
#[derive(Debug, Default)]
pub(crate) struct DirInfo {
    /// The directory in the upper layer, when it has been created or copied up (set once).
    upper: Option<Arc<OwnedFd>>,
    /// Lower layer directories merged below it, top first, cut at the first opaque one.
    lowers: Arc<Lowers>,
    /// Stat of the topmost lower directory (attributes before copy-up).
    lower_stat: Option<FileStat>,
    /// The upper directory already carries the `impure` mark (set once).
    impure: bool,
    /// The merged listing and subdirectory count (`readdir.rs` owns what is in it).
    listing: ListingCache,
    /// The upper directory's default ACL (`None` inside: it has none), once read: what
    /// is created in it inherits it.
    default_acl: Option<Option<Arc<[u8]>>>,
}

impl DirInfo {
    pub fn new(
        upper: Option<Arc<OwnedFd>>,
        lowers: Vec<LowerDir>,
        lower_stat: Option<FileStat>,
        impure: bool,
    ) -> DirInfo {
        DirInfo {
            upper,
            lowers: Arc::new(Lowers::new(lowers)),
            lower_stat,
            impure,
            ..Default::default()
        }
    }

    pub fn upper(&self) -> Option<&Arc<OwnedFd>> {
        self.upper.as_ref()
    }

    pub fn lowers(&self) -> &Lowers {
        &self.lowers
    }

    pub fn lower_stat(&self) -> Option<FileStat> {
        self.lower_stat
    }

    pub fn impure(&self) -> bool {
        self.impure
    }

    pub fn listing(&self) -> &ListingCache {
        &self.listing
    }

    /// The cached default ACL: `None` when not read yet.
    pub fn default_acl(&self) -> Option<&Option<Arc<[u8]>>> {
        self.default_acl.as_ref()
    }

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
    pub lowers: Arc<Lowers>,
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

/// Mutable part of a node: where it is in the namespace and in the layers. Its fields
/// are private: they change only through the transitions below, each made under the
/// node's write lock, so a reader holding the read lock sees one consistent state.
///
/// - [`relinked`](Self::relinked) (lookup): found at a name while unlinked — linked again
///   there, with the upper location found;
/// - [`moved`](Self::moved) (rename): new parent and name, a named upper location follows;
/// - [`set_unlinked`](Self::set_unlinked) (unlink, rmdir, rename over it): the last name is
///   gone, the pin stays;
/// - [`pinned`](Self::pinned) / [`unpin_if_linked`](Self::unpin_if_linked) (before a name
///   is removed or moved): the upper inode held by an fd;
/// - [`open_fd_remembered`](Self::open_fd_remembered) (open): an open file's upper fd;
/// - [`copied_up`](Self::copied_up), [`metacopy_completed`](Self::metacopy_completed),
///   [`indexed`](Self::indexed) (copy-up, link): where a non-directory's data is
///   ([`Content`]);
/// - [`dir_copied_up`](Self::dir_copied_up), [`marked_impure`](Self::marked_impure),
///   [`default_acl_read`](Self::default_acl_read) /
///   [`default_acl_changed`](Self::default_acl_changed): a directory's upper side;
/// - [`listing_mut`](Self::listing_mut): the listing cache, changed only by `readdir.rs`.
///
/// Invariants: `kind` and `ino` never change, and the body is [`Body::Dir`] exactly when
/// `kind` is a directory; an upper copy, once there, stays (a directory's as a file's);
/// a pin is the node's own upper inode, held only by a non-directory with an upper copy;
/// an open fd is remembered only while the data is in the upper copy. Where attributes
/// are read from follows from the body alone (the upper copy when there is one, else the
/// topmost lower entry or directory), so anything presented on top of them (an override
/// of owner and mode) belongs beside it here.
#[derive(Debug)]
pub(crate) struct NodeState {
    /// Parent directory and name of the name this node was reached by (root: none).
    parent: Option<Parent>,
    name: OsString,
    kind: FileKind,
    /// The inode number the entry has in the layers (its own, its `origin` mark's, its
    /// bottom directory's): what index keys and origin marks are made of. The node id is
    /// this number unless another live file already had it.
    ino: u64,
    body: Body,
    /// An `O_PATH` fd of the upper inode, taken before a name of it is removed: it keeps
    /// an unlinked file reachable (fstat, fchmod… of open files) and its inode number
    /// from being reused while the kernel still knows the node.
    pin: Option<Arc<OwnedFd>>,
    /// A real fd of the upper inode held by an open file of the node: metadata calls use
    /// it while the file is open (a write makes the kernel ask for security.capability
    /// every time) instead of opening the inode again.
    open_fd: Option<Weak<OwnedFd>>,
    /// The last name is gone; the node lives on for open files until forgotten.
    unlinked: bool,
}

impl NodeState {
    /// A node reached as `name` in `parent` (none for the root).
    pub fn new(
        parent: Option<Parent>,
        name: OsString,
        kind: FileKind,
        ino: u64,
        body: Body,
    ) -> NodeState {
        debug_assert_eq!(kind.is_dir(), matches!(body, Body::Dir(_)));
        NodeState {
            parent,
            name,
            kind,
            ino,
            body,
            pin: None,
            open_fd: None,
            unlinked: false,
        }
    }

    // ---- reads

    pub fn parent(&self) -> Option<&Parent> {
        self.parent.as_ref()
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }

    pub fn kind(&self) -> FileKind {
        self.kind
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked
    }

    /// Directories only.
    pub fn dir(&self) -> Option<&DirInfo> {
        match &self.body {
            Body::Dir(d) => Some(d),
            Body::File(_) => None,
        }
    }

    /// Non-directories only.
    pub fn content(&self) -> Option<&Content> {
        match &self.body {
            Body::File(c) => Some(c),
            Body::Dir(_) => None,
        }
    }

    /// A non-directory's upper copy.
    pub fn upper(&self) -> Option<&UpperLoc> {
        self.content().and_then(Content::upper)
    }

    /// The lower entry a non-directory still reads from ([`Content::lower`]).
    pub fn lower(&self) -> Option<&Lower> {
        self.content().and_then(Content::lower)
    }

    /// The lower entry of a non-directory that has no upper copy.
    pub fn lower_only(&self) -> Option<&Lower> {
        self.content().and_then(Content::lower_only)
    }

    /// The upper copy holds metadata only; data is still read from below.
    pub fn is_metacopy(&self) -> bool {
        self.content().is_some_and(Content::is_metacopy)
    }

    pub fn pin(&self) -> Option<&Arc<OwnedFd>> {
        self.pin.as_ref()
    }

    pub fn open_fd(&self) -> Option<Arc<OwnedFd>> {
        self.open_fd.as_ref().and_then(Weak::upgrade)
    }

    pub fn has_upper(&self) -> bool {
        match &self.body {
            Body::Dir(d) => d.upper.is_some(),
            Body::File(c) => c.upper().is_some(),
        }
    }

    /// Data is served by the upper copy (not a lower file, not a metacopy).
    pub fn data_in_upper(&self) -> bool {
        matches!(self.body, Body::File(Content::Upper { .. }))
    }

    // ---- transitions

    /// Found at `name` in `parent` while unlinked (a name we did not count, in an upper
    /// layer another tool wrote): linked again there, with the upper location found.
    pub fn relinked(&mut self, parent: Parent, name: &OsStr, upper: Option<UpperLoc>) {
        self.unlinked = false;
        self.parent = Some(parent);
        self.name = name.to_owned();
        if let (Some(loc), Body::File(c)) = (upper, &mut self.body) {
            let metacopy = c.is_metacopy();
            c.with_upper(loc, metacopy);
        }
    }

    /// Renamed to `name` in `parent` (upper directory `upper_parent`).
    pub fn moved(&mut self, parent: Parent, upper_parent: &Arc<OwnedFd>, name: &OsStr) {
        self.parent = Some(parent);
        self.name = name.to_owned();
        if let Body::File(c) = &mut self.body
            && let Some(UpperLoc::Named { .. }) = c.upper()
        {
            c.relocate_upper(UpperLoc::Named {
                parent: upper_parent.clone(),
                name: name.to_owned(),
            });
        }
    }

    /// The last name is gone. A pin stays: open files reach the inode through it.
    pub fn set_unlinked(&mut self) {
        self.unlinked = true;
    }

    /// Holds the upper inode by `fd` (the caller checked it is this node's). Only a
    /// non-directory with an upper copy is pinned; anything else keeps no pin.
    pub fn pinned(&mut self, fd: Arc<OwnedFd>) {
        debug_assert!(self.upper().is_some());
        if self.upper().is_some() {
            self.pin = Some(fd);
        }
    }

    /// Lets a pin taken for the duration of an operation go, unless the node lost its
    /// last name meanwhile (then the pin is what reaches it).
    pub fn unpin_if_linked(&mut self) {
        if !self.unlinked {
            self.pin = None;
        }
    }

    /// An open file of the node holds `fd`, a data fd of its upper inode.
    pub fn open_fd_remembered(&mut self, fd: &Arc<OwnedFd>) {
        debug_assert!(self.data_in_upper());
        self.open_fd = Some(Arc::downgrade(fd));
    }

    /// A non-directory's copy-up is in place at `upper`: metadata only when `metacopy`.
    pub fn copied_up(&mut self, upper: UpperLoc, metacopy: bool) {
        if let Body::File(c) = &mut self.body {
            debug_assert!(matches!(c, Content::Lower(_)));
            c.with_upper(upper, metacopy);
        }
    }

    /// The data of a metacopy is in its upper inode now (the mark is gone).
    pub fn metacopy_completed(&mut self) {
        if let Body::File(c) = &mut self.body {
            let upper = c.upper().cloned();
            if let Some(upper) = upper {
                c.with_upper(upper, false);
            }
        }
    }

    /// The upper copy is reached through index entry `key` from now on.
    pub fn indexed(&mut self, key: String) {
        if let Body::File(c) = &mut self.body {
            debug_assert!(c.upper().is_some());
            c.relocate_upper(UpperLoc::Indexed { key });
        }
    }

    /// A directory's upper directory is `fd` (made by copy-up, or found made).
    pub fn dir_copied_up(&mut self, fd: Arc<OwnedFd>) {
        if let Body::Dir(d) = &mut self.body {
            d.upper = Some(fd);
        }
    }

    /// The upper directory carries the `impure` mark now.
    pub fn marked_impure(&mut self) {
        if let Body::Dir(d) = &mut self.body {
            d.impure = true;
        }
    }

    /// The default ACL of the upper directory, as just read.
    pub fn default_acl_read(&mut self, acl: Option<Arc<[u8]>>) {
        if let Body::Dir(d) = &mut self.body {
            d.default_acl = Some(acl);
        }
    }

    /// The directory's ACLs changed: read the default one again when needed.
    pub fn default_acl_changed(&mut self) {
        if let Body::Dir(d) = &mut self.body {
            d.default_acl = None;
        }
    }

    /// A directory's listing cache, to change through its own methods (`readdir.rs`).
    pub fn listing_mut(&mut self) -> Option<&mut ListingCache> {
        match &mut self.body {
            Body::Dir(d) => Some(&mut d.listing),
            Body::File(_) => None,
        }
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
        self.read().kind().is_dir()
    }

    pub fn is_unlinked(&self) -> bool {
        self.read().is_unlinked()
    }
}
