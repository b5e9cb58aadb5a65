//! The union filesystem core: a stack of layer directories merged into one tree, with an
//! optional writable upper layer. It speaks in node ids, names, attributes and errnos,
//! and knows nothing of FUSE, tar or the command line.
//!
//! On-disk format (the upper and work directories) is kernel overlayfs': whiteouts are
//! char 0/0 devices (or `.wh.` files where mknod is refused), opaque directories carry
//! `<ns>.overlay.opaque=y`, renamed directories `<ns>.overlay.redirect`, metadata-only
//! copies `<ns>.overlay.metacopy`; see [`xattr`] for our own marks and [`layer`] for the
//! work directory. Every visible change is one rename of something complete (copy-up
//! stages in the work directory), so a crash leaves either the old or the new state.
//!
//! Soundness rules every module keeps:
//! - the layers are reached only through directory fds and `*at` calls that never follow
//!   a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`); names are single components, never
//!   `.`, `..` or anything with a `/`, including those read from overlay marks;
//! - an operation on a node acts on the node's own inode ([`inode`]): an fd it holds, or
//!   an `O_PATH` fd opened at its name and checked to be that inode, never whatever a
//!   name happens to point at now;
//! - node identity and lifetime have one owner ([`table`], which also documents the
//!   threading model).
//!
//! Submodules: [`layer`] the stack, [`node`] nodes (their state and its transitions),
//! [`table`] the node table, [`lookup`] name resolution, [`readdir`] merged listings and
//! their cache, [`copyup`] copy-up, [`upper`] the one writer of the upper layer, [`index`]
//! hard links (the one maker of index entries), [`ops`] and [`rename`] namespace changes,
//! [`inode`] acting on a node's inode, [`file`] open files, [`meta`] attributes and
//! xattrs.

pub mod attr;
mod copyup;
pub mod error;
mod file;
mod fileattr;
mod index;
mod inode;
pub mod layer;
pub mod listing;
mod lookup;
mod meta;
mod names;
pub mod node;
mod ops;
pub mod readdir;
mod rename;
pub mod table;
mod upper;
pub(crate) mod xattr;

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::fstat;

pub use attr::{Attr, FileKind, Time};
pub use error::{FsError, Result};
pub use file::{OpenReply, SetAttr, TimeSet};
pub use layer::{LayerSpec, Stack, WorkSpec};
pub use listing::DirEntry;
pub(crate) use lookup::stat_at;
pub use meta::LAYER_XATTR;
pub use node::{Fh, NodeId};

use file::Handles;
use lookup::Resolved;
use node::{Body, DevIno, DirInfo, Ident, Node, NodeState, Parent};
use table::NodeTable;

/// The root's node id.
pub const ROOT_ID: NodeId = NodeId::ROOT;

/// Who asks: the credentials and umask of the calling process.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

/// When reading updates access times (the `*atime` mount options). FUSE leaves atime to
/// the filesystem (the kernel marks FUSE inodes `S_NOATIME`), so the union does what the
/// option says on the files it reads from: the backing filesystem's own policy
/// (`relatime` on a usual host), every read, never, or never for directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Atime {
    /// `relatime` (the default): as the backing filesystem updates it.
    #[default]
    Relative,
    /// `strictatime`: every read updates it.
    Strict,
    /// `noatime`: no read updates it (files are read with `O_NOATIME`).
    Never,
    /// `nodiratime`: listing a directory does not update its atime.
    NeverForDirs,
}

/// Tunables of a union mount.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the kernel may cache entries and attributes of immutable (lower-only)
    /// entries.
    pub lower_ttl: Duration,
    /// Same for entries that have an upper copy (changed only through this mount).
    pub upper_ttl: Duration,
    pub atime: Atime,
    /// Report a merged directory's link count as 2 + its subdirectories (which lists it
    /// once). Off for readers that never look at it (diff, commit): a lookup in a big
    /// merged directory then costs no listing.
    pub dir_nlink: bool,
    /// A node keeps its parent directory's node alive (with its fds). Off for read-only
    /// walkers (diff, commit, export), which give directories back as they leave them:
    /// a node then names its parent by id, so the fds a walk holds do not grow with its
    /// depth. Always on for a writable union (copy-up goes up the tree).
    pub hold_parents: bool,
    /// Ownership is kept in `user.containers.override_stat` records where the host
    /// refuses it (a rootless store, fuse-overlayfs' `xattr_permissions=2`): they are
    /// what the union reports, chown/chmod change them, new entries get one, and the
    /// record itself is never listed. On by default unless this is the host's root.
    pub owner_marks: bool,
    /// Reading the xattr `user.layerfs.layer` of an entry (by name: it is never listed,
    /// copied or stored) answers which layer serves it: the layer's label (a store
    /// layer's digest), or `upper` for the writable layer.
    pub layer_xattr: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            lower_ttl: Duration::from_secs(86400),
            upper_ttl: Duration::from_secs(1),
            atime: Atime::default(),
            dir_nlink: true,
            hold_parents: true,
            owner_marks: !crate::sys::is_host_root(),
            layer_xattr: true,
        }
    }
}

/// A looked-up entry, as the kernel gets it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub id: NodeId,
    pub generation: u64,
    pub attr: Attr,
    /// How long the kernel may cache it.
    pub ttl: Duration,
}

/// The union filesystem.
#[derive(Debug)]
pub struct Union {
    pub(crate) stack: Stack,
    pub(crate) nodes: NodeTable,
    pub(crate) handles: Handles,
    pub(crate) opts: Options,
    /// The key of readdir cookies (`readdir.rs`): random, so that no one can make names
    /// collide; the same for the mount's lifetime, as offsets must be.
    pub(crate) cookies: std::hash::RandomState,
}

impl Union {
    /// Builds the union over an opened stack.
    pub fn new(stack: Stack, mut opts: Options) -> Result<Union> {
        if stack.upper.as_ref().is_some_and(|u| !u.frozen) {
            opts.hold_parents = true;
        }
        let first_lower = stack.first_lower();
        let mut lowers = Vec::with_capacity(stack.layers.len());
        for l in first_lower..stack.layers.len() {
            let fd = stack.root(l).clone();
            let marks = xattr::read_marks(crate::sys::At::Fd(fd.as_fd()))?;
            lowers.push(node::LowerDir {
                layer: l,
                fd,
                impure: marks.impure,
                xwhiteouts: marks.xwhiteouts,
            });
        }
        let lower_stat = fstat(stack.root(first_lower))?;
        let upper = stack.upper.as_ref().map(|_| stack.root(0).clone());
        // Copied-up entries of the root (from an earlier mount) report their origin.
        let (impure, upper_ident) = match &upper {
            Some(fd) => (
                xattr::read_marks(crate::sys::At::Fd(fd.as_fd()))?.impure,
                Some(DevIno::of(&fstat(fd)?)),
            ),
            None => (false, None),
        };
        let root = NodeState::new(
            None,
            OsStr::new("").to_owned(),
            FileKind::Directory,
            ROOT_ID.0,
            Body::Dir(DirInfo::new(upper, lowers, Some(lower_stat), impure)),
        );
        let ident = Ident {
            upper: upper_ident,
            lower: Some(DevIno::of(&lower_stat)),
        };
        Ok(Union {
            nodes: NodeTable::new(root, ident),
            stack,
            handles: Handles::default(),
            opts,
            cookies: std::hash::RandomState::new(),
        })
    }

    pub fn read_only(&self) -> bool {
        self.stack.upper.as_ref().is_none_or(|u| u.frozen)
    }

    pub(crate) fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.nodes.get(id).ok_or(FsError::ENOENT)
    }

    /// The directory snapshot of a directory node.
    pub(crate) fn dir_snapshot(&self, node: &Node) -> Result<node::DirSnapshot> {
        let s = node.read();
        match s.dir() {
            Some(d) => Ok(d.snapshot()),
            None => Err(FsError::ENOTDIR),
        }
    }

    /// Rejects names the union reserves: `.wh.` spellings when some layer uses them.
    pub(crate) fn check_name(&self, name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(FsError::ENAMETOOLONG);
        }
        if !lookup::is_component(name) {
            return Err(FsError::EINVAL);
        }
        if self.stack.any_wh_files()
            && !matches!(
                crate::whiteout::classify(name),
                crate::whiteout::NameKind::Entry
            )
        {
            return Err(FsError::EINVAL);
        }
        Ok(())
    }

    /// How a node reached in directory `parent` refers to it (see `Options::hold_parents`).
    pub(crate) fn parent_ref(&self, parent: &Arc<Node>) -> Parent {
        if self.opts.hold_parents {
            Parent::Held(parent.clone())
        } else {
            Parent::Named(parent.id)
        }
    }

    /// The node of directory `p`: held, or found again by its id.
    pub(crate) fn parent_node(&self, p: &Parent) -> Result<Arc<Node>> {
        match p {
            Parent::Held(n) => Ok(n.clone()),
            Parent::Named(id) => self.find_again(*id),
        }
    }

    /// Turns a resolution into a live node (counting one kernel lookup).
    pub(crate) fn intern(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Arc<Node> {
        let (natural, ident) = (r.ino, r.ident);
        let upper = r.upper().cloned();
        let node = self.nodes.intern(natural, ident, || {
            r.into_state(self.parent_ref(parent), name)
        });
        // Found at a name, so not unlinked whatever our link count said (an upper layer
        // written by another tool may have more names than its marks count).
        if node.is_unlinked() {
            node.write().relinked(self.parent_ref(parent), name, upper);
        }
        node
    }

    /// A node for a resolution without counting a kernel lookup: the live one if any,
    /// else a detached node used only for the duration of an operation.
    pub(crate) fn node_for(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Arc<Node> {
        if let Some(n) = self.nodes.find(r.ino, &r.ident) {
            return n;
        }
        let (id, ident) = (NodeId(r.ino), r.ident);
        Arc::new(Node::new(
            id,
            0,
            ident,
            r.into_state(self.parent_ref(parent), name),
        ))
    }

    /// The entry the kernel gets for a node.
    pub(crate) fn entry(&self, node: &Node) -> Result<Entry> {
        let attr = self.attr_of(node, None)?;
        Ok(Entry {
            id: node.id,
            generation: node.generation,
            attr,
            ttl: self.ttl_for(node),
        })
    }

    fn ttl_for(&self, node: &Node) -> Duration {
        let s = node.read();
        if s.has_upper() || s.is_unlinked() {
            self.opts.upper_ttl
        } else {
            self.opts.lower_ttl
        }
    }

    /// How long the kernel may cache node `id`'s attributes.
    pub fn ttl_of(&self, id: NodeId) -> Duration {
        match self.nodes.get(id) {
            Some(n) => self.ttl_for(&n),
            None => self.opts.upper_ttl,
        }
    }

    /// Looks up `name` in directory `parent`. `.` and `..` are what the kernel asks when
    /// it decodes a file handle (`open_by_handle_at`, NFS export): node `parent` itself,
    /// or its parent, found again even after the kernel forgot it.
    pub fn lookup(&self, parent: NodeId, name: &OsStr) -> Result<Entry> {
        match name.as_encoded_bytes() {
            b"." => return self.lookup_by_handle(parent, false),
            b".." => return self.lookup_by_handle(parent, true),
            _ => {}
        }
        let pnode = self.node(parent)?;
        let snap = self.dir_snapshot(&pnode)?;
        // A reserved name cannot be created, so it does not exist either.
        self.check_name(name).map_err(|e| {
            if e == FsError::EINVAL {
                FsError::ENOENT
            } else {
                e
            }
        })?;
        let r = self.resolve(&snap, name)?.ok_or(FsError::ENOENT)?;
        let node = self.intern(&pnode, name, r);
        match self.entry(&node) {
            Ok(e) => Ok(e),
            Err(e) => {
                self.nodes.forget(node.id, 1);
                Err(e)
            }
        }
    }

    /// Node `id` (or its parent) for a file handle the kernel decodes; counts a lookup.
    fn lookup_by_handle(&self, id: NodeId, parent: bool) -> Result<Entry> {
        let mut node = self.find_again(id)?;
        if parent {
            let p = node.read().parent().cloned();
            node = match p {
                Some(p) => self.parent_node(&p)?,
                None => node, // the root is its own parent
            };
        }
        let node = self.nodes.adopt(&node).ok_or(FsError::ESTALE)?;
        self.entry(&node)
            .inspect_err(|_| self.nodes.forget(node.id, 1))
    }

    /// Node `id`: live, or found again through its ghost — its object if something still
    /// holds it, else resolved again at its name in its parent (found again the same way)
    /// and checked to be the same file. ESTALE when it is gone or another file is there.
    /// Iterative (the ghosts up to a live node, then resolved down): any depth.
    fn find_again(&self, id: NodeId) -> Result<Arc<Node>> {
        // Ghosts from `id` up to the first node that lives, nearest first.
        let mut ghosts: Vec<(NodeId, table::Ghost)> = Vec::new();
        let mut cur = id;
        let mut node = loop {
            if let Some(n) = self.nodes.get(cur) {
                break n;
            }
            let g = self.nodes.ghost(cur).ok_or(FsError::ESTALE)?;
            if let Some(n) = g.node.upgrade() {
                break n;
            }
            // (a chain longer than the ghosts remembered is a loop)
            if ghosts.len() > table::GHOSTS {
                return Err(FsError::ESTALE);
            }
            let parent = g.parent.ok_or(FsError::ESTALE)?;
            ghosts.push((cur, g));
            cur = parent;
        };
        while let Some((gid, g)) = ghosts.pop() {
            let snap = self.dir_snapshot(&node)?;
            let r = match self.resolve(&snap, &g.name)? {
                Some(r) if g.ident.matches(&r.ident) => r,
                _ => return Err(FsError::ESTALE),
            };
            let ident = r.ident;
            let found = Arc::new(Node::new(
                gid,
                g.generation,
                ident,
                r.into_state(self.parent_ref(&node), &g.name),
            ));
            self.nodes.haunt(gid, &found);
            node = found;
        }
        Ok(node)
    }

    /// The kernel dropped `n` lookups of `id`.
    pub fn forget(&self, id: NodeId, n: u64) {
        self.nodes.forget(id, n);
    }

    /// Number of live nodes (for diagnostics).
    pub fn live_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// `statfs` of the layer that takes writes (or the top lower when read-only).
    pub fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        Ok(nix::sys::statvfs::fstatvfs(self.stack.root(0))?)
    }
}
