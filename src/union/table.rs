//! The node table: the one owner of node identity and lifetime.
//!
//! ## Identity
//! fuser uses the inode number a reply reports as the FUSE node id, so node ids are inode
//! numbers. Every resolution of a name comes with its *natural* number (the entry's own
//! inode number, its `origin` mark's, its bottom directory's — what stays stable across
//! copy-up, rename and remount) and its [`Ident`] (the real inodes it is). A resolution
//! gets, in this order:
//! 1. the live node that [`Ident::matches`] it under its natural number, or under the
//!    number that object was given earlier (rule 3);
//! 2. a new node with the natural number, if no live node has that number;
//! 3. otherwise a new node with a number from the synthetic range: the natural number
//!    belongs to another live file. Only a damaged or forged mark (`origin`, `redirect`)
//!    can cause this: nodes pin the upper inodes they lose a name of, so the filesystem
//!    cannot hand a live node's inode number to a new file. Logged.
//!
//! So two live files never share a node, and one file never gets two live nodes. Every
//! new node gets a new generation, so a number used again after the kernel forgot its
//! old node is a new inode to the kernel too.
//!
//! ## Lifetime
//! The kernel's lookup count decides: each reply that hands a node to the kernel
//! (lookup, create, mkdir, mknod, symlink, link, readdirplus) counts one ([`intern`],
//! [`add_lookup`]); FORGET takes them back ([`forget`]); at zero the node leaves the table
//! (open handles may keep the `Arc` a while longer). The root is never forgotten.
//!
//! A forgotten node leaves a ghost (a bounded LRU): its generation, identity, and where it
//! was (parent id and name), plus a weak reference to the node object. File handles
//! (`name_to_handle_at`, NFS export) name a node by id and generation long after the kernel
//! forgot it; a ghost lets the node be found again with the same generation, and a file
//! looked up again gets its old generation back, so its handles stay valid. A ghost whose
//! object still lives (a child or an open file holds it) gives back that very object:
//! one file never has two node objects.
//!
//! ## Threading model
//! The daemon answers requests on several threads at once; all union state is shared.
//! - `NodeTable::inner` (a mutex) guards the id → node map, the synthetic-number map and
//!   the nodes' [`Ident`]s, which are written only here. It is held for map operations
//!   only: no syscall, no node state lock is taken under it.
//! - `Node::ident` is a leaf lock (taken under the table mutex or alone).
//! - `Node::state` (a rwlock) guards a node's locations in the layers. Syscalls run on
//!   fds cloned out of it, unlocked, and reach a node's upper inode only through an fd
//!   checked to be that inode (`inode.rs`). An operation that moves or removes a name of
//!   a node pins the node's upper inode first; readers prefer the pin to any name, so a
//!   reader that found a name stale (gone, or another inode now) retries and reaches the
//!   inode through the pin or the name the state has by then.
//! - `Node::copy_lock` serializes copy-up of one node; it is taken before the state lock,
//!   and a child's before its parent's (copy-up goes up the tree, never down).
//! - Lock order: `copy_lock` → `state` → table mutex → `ident`. At most one state lock is
//!   held at a time, and none across a syscall that may wait on another node.
//! - The kernel serializes namespace changes in one directory (and setattr, link, unlink,
//!   rename of one inode); the core relies on that only for the errno it answers, never
//!   for the integrity of this state: a stale view makes an operation retry or fail,
//!   never act on another file.
//!
//! [`intern`]: NodeTable::intern
//! [`add_lookup`]: NodeTable::add_lookup
//! [`forget`]: NodeTable::forget

use std::collections::HashMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::node::{DevIno, Ident, Node, NodeId, NodeState};

/// How many forgotten nodes are remembered for file handles (about 100 bytes each).
pub(crate) const GHOSTS: usize = 32 * 1024;

/// What is left of a forgotten node.
#[derive(Debug, Clone)]
pub(crate) struct Ghost {
    pub generation: u64,
    pub ident: Ident,
    /// Where it was: its parent's id (none for the root) and its name there.
    pub parent: Option<NodeId>,
    pub name: OsString,
    /// The node object, while something still holds it.
    pub node: Weak<Node>,
}

/// Node ids handed out when a natural number is taken: far above any real inode number
/// (and above the `xino` range of `Stack::map_ino`).
pub const SYNTHETIC_BASE: u64 = 1 << 63;

#[derive(Debug)]
struct Slot {
    node: Arc<Node>,
    nlookup: u64,
}

#[derive(Debug)]
struct Inner {
    slots: HashMap<NodeId, Slot>,
    /// Nodes with a synthetic id, by each real inode they are.
    synthetic: HashMap<DevIno, NodeId>,
    next_synthetic: u64,
    ghosts: lru::LruCache<NodeId, Ghost>,
}

impl Inner {
    /// The live node that is `ident` (rule 1 of the module docs).
    fn matching(&self, natural: NodeId, ident: &Ident) -> Option<&Arc<Node>> {
        if let Some(slot) = self.slots.get(&natural)
            && slot.node.ident().matches(ident)
        {
            return Some(&slot.node);
        }
        for key in ident.keys() {
            if let Some(id) = self.synthetic.get(&key)
                && let Some(slot) = self.slots.get(id)
                && slot.node.ident().matches(ident)
            {
                return Some(&slot.node);
            }
        }
        None
    }
}

/// The inode table.
#[derive(Debug)]
pub(crate) struct NodeTable {
    inner: Mutex<Inner>,
    next_generation: AtomicU64,
}

impl NodeTable {
    pub fn new(root: NodeState, root_ident: Ident) -> NodeTable {
        let node = Arc::new(Node::new(NodeId::ROOT, 0, root_ident, root));
        let mut slots = HashMap::new();
        slots.insert(NodeId::ROOT, Slot { node, nlookup: 1 });
        NodeTable {
            inner: Mutex::new(Inner {
                slots,
                synthetic: HashMap::new(),
                next_synthetic: SYNTHETIC_BASE,
                ghosts: lru::LruCache::new(NonZeroUsize::new(GHOSTS).unwrap_or(NonZeroUsize::MIN)),
            }),
            next_generation: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node the kernel knows as `id` (possibly unlinked but still open).
    pub fn get(&self, id: NodeId) -> Option<Arc<Node>> {
        self.lock().slots.get(&id).map(|s| s.node.clone())
    }

    /// The live node that is the object `ident` (natural number `natural`), if any.
    pub fn find(&self, natural: u64, ident: &Ident) -> Option<Arc<Node>> {
        self.lock().matching(NodeId(natural), ident).cloned()
    }

    /// The node of a resolution, made with `make` if new; counts one kernel lookup.
    pub fn intern(
        &self,
        natural: u64,
        ident: Ident,
        make: impl FnOnce() -> NodeState,
    ) -> Arc<Node> {
        let natural = NodeId(natural);
        let mut t = self.lock();
        if let Some(node) = t.matching(natural, &ident).cloned() {
            if let Some(slot) = t.slots.get_mut(&node.id) {
                slot.nlookup += 1;
            }
            return node;
        }
        // The same file, looked up again after the kernel forgot it: its old node (if it
        // still lives) or at least its old generation, so its file handles stay valid.
        let ghost = match t.ghosts.pop(&natural) {
            Some(g) if g.ident.matches(&ident) => Some(g),
            _ => None,
        };
        if let Some(node) = ghost.as_ref().and_then(|g| g.node.upgrade())
            && !t.slots.contains_key(&natural)
        {
            t.slots.insert(
                natural,
                Slot {
                    node: node.clone(),
                    nlookup: 1,
                },
            );
            return node;
        }
        let generation = match &ghost {
            Some(g) if !t.slots.contains_key(&natural) => g.generation,
            _ => self.next_generation.fetch_add(1, Ordering::Relaxed),
        };
        let id = if t.slots.contains_key(&natural) {
            let mut id = t.next_synthetic;
            while t.slots.contains_key(&NodeId(id)) || id <= 1 {
                id = id.wrapping_add(1).max(SYNTHETIC_BASE);
            }
            t.next_synthetic = id.wrapping_add(1).max(SYNTHETIC_BASE);
            for key in ident.keys() {
                t.synthetic.insert(key, NodeId(id));
            }
            log::warn!(
                "inode number {} is another live file's (damaged origin or redirect mark?); \
                 reporting {id} for this one",
                natural.0
            );
            NodeId(id)
        } else {
            natural
        };
        let node = Arc::new(Node::new(id, generation, ident, make()));
        t.slots.insert(
            id,
            Slot {
                node: node.clone(),
                nlookup: 1,
            },
        );
        node
    }

    /// Records the upper inode a node just got (creation or copy-up), before it appears
    /// at its name; `None` undoes it when the copy-up failed.
    pub fn set_upper(&self, node: &Node, upper: Option<DevIno>) {
        let mut t = self.lock();
        let mut ident = node.ident();
        if let Some(old) = ident.upper
            && t.synthetic.get(&old) == Some(&node.id)
        {
            t.synthetic.remove(&old);
        }
        ident.upper = upper;
        node.set_ident(ident);
        if let Some(u) = upper
            && t.synthetic.values().any(|id| *id == node.id)
        {
            t.synthetic.insert(u, node.id);
        }
    }

    /// Counts one more kernel reference to a node handed out again (link).
    pub fn add_lookup(&self, node: &Arc<Node>) {
        let mut t = self.lock();
        match t.slots.get_mut(&node.id) {
            Some(slot) if Arc::ptr_eq(&slot.node, node) => slot.nlookup += 1,
            Some(_) => log::error!("node {} was replaced while in use", node.id.0),
            None => {
                t.slots.insert(
                    node.id,
                    Slot {
                        node: node.clone(),
                        nlookup: 1,
                    },
                );
            }
        }
    }

    /// The kernel dropped `n` references to `id`.
    pub fn forget(&self, id: NodeId, n: u64) {
        if id == NodeId::ROOT {
            return;
        }
        let node = {
            let mut t = self.lock();
            let Some(slot) = t.slots.get_mut(&id) else {
                return;
            };
            slot.nlookup = slot.nlookup.saturating_sub(n);
            if slot.nlookup > 0 {
                return;
            }
            let Some(slot) = t.slots.remove(&id) else {
                return;
            };
            for key in slot.node.ident().keys() {
                if t.synthetic.get(&key) == Some(&id) {
                    t.synthetic.remove(&key);
                }
            }
            slot.node
        };
        // Read unlocked (lock order: a node's state is never taken under the table).
        let (parent, name, unlinked) = {
            let s = node.read();
            (
                s.parent().map(|p| p.id()),
                s.name().to_owned(),
                s.is_unlinked(),
            )
        };
        if unlinked || id.0 >= SYNTHETIC_BASE {
            return; // nothing to find again by name
        }
        let mut t = self.lock();
        if !t.slots.contains_key(&id) {
            t.ghosts.put(
                id,
                Ghost {
                    generation: node.generation,
                    ident: node.ident(),
                    parent,
                    name,
                    node: Arc::downgrade(&node),
                },
            );
        }
    }

    /// The ghost of forgotten node `id`, if it is remembered.
    pub fn ghost(&self, id: NodeId) -> Option<Ghost> {
        self.lock().ghosts.peek(&id).cloned()
    }

    /// Gives ghost `id` the node object made for it again (so that one file keeps one
    /// object while it is found again by its handle).
    pub fn haunt(&self, id: NodeId, node: &Arc<Node>) {
        if let Some(g) = self.lock().ghosts.peek_mut(&id) {
            g.node = Arc::downgrade(node);
        }
    }

    /// Counts one kernel lookup of `node`, a node object found again through its ghost:
    /// it becomes the table's node for its id (or the live node with that id and identity
    /// is counted instead). `None` when another file has the id now.
    pub fn adopt(&self, node: &Arc<Node>) -> Option<Arc<Node>> {
        let mut t = self.lock();
        if let Some(slot) = t.slots.get_mut(&node.id) {
            if Arc::ptr_eq(&slot.node, node) || slot.node.ident().matches(&node.ident()) {
                slot.nlookup += 1;
                return Some(slot.node.clone());
            }
            return None;
        }
        t.ghosts.pop(&node.id);
        t.slots.insert(
            node.id,
            Slot {
                node: node.clone(),
                nlookup: 1,
            },
        );
        Some(node.clone())
    }

    /// The kernel's lookup count of `id` (0 when unknown).
    #[cfg(test)]
    pub fn lookups(&self, id: NodeId) -> u64 {
        self.lock().slots.get(&id).map_or(0, |s| s.nlookup)
    }

    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }
}

/// A bare state for tests.
#[cfg(test)]
pub(crate) fn empty_state(kind: super::attr::FileKind) -> NodeState {
    use super::node::{Body, Content, DirInfo, UpperLoc};
    let body = if kind.is_dir() {
        Body::Dir(DirInfo::default())
    } else {
        Body::File(Content::Upper {
            upper: UpperLoc::Indexed { key: String::new() },
            lower: None,
        })
    };
    NodeState::new(None, Default::default(), kind, 0, body)
}

#[cfg(test)]
mod tests {
    use super::super::attr::FileKind;
    use super::*;

    fn di(ino: u64) -> DevIno {
        DevIno { dev: 7, ino }
    }

    fn lower(ino: u64) -> Ident {
        Ident {
            upper: None,
            lower: Some(di(ino)),
        }
    }

    fn upper(ino: u64) -> Ident {
        Ident {
            upper: Some(di(ino)),
            lower: None,
        }
    }

    fn table() -> NodeTable {
        NodeTable::new(empty_state(FileKind::Directory), upper(2))
    }

    fn intern(t: &NodeTable, natural: u64, ident: Ident) -> Arc<Node> {
        t.intern(natural, ident, || empty_state(FileKind::Regular))
    }

    #[test]
    fn intern_counts_and_forget_drops_at_zero() {
        let t = table();
        let a = intern(&t, 100, lower(100));
        let b = intern(&t, 100, lower(100));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.id, NodeId(100));
        assert_eq!(t.lookups(a.id), 2);
        t.forget(a.id, 1);
        assert_eq!(t.lookups(a.id), 1);
        t.forget(a.id, 1);
        assert!(t.get(a.id).is_none());
        assert_eq!(t.len(), 1, "only the root is left");
        // The number used again by another file is a new inode to the kernel.
        let c = intern(&t, 100, lower(101));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_ne!(a.generation, c.generation);
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let t = table();
        t.forget(NodeId::ROOT, 1000);
        assert!(t.get(NodeId::ROOT).is_some());
    }

    #[test]
    fn hard_links_are_one_node() {
        // Two names of one lower inode resolve to the same ident.
        let t = table();
        let a = intern(&t, 100, lower(100));
        let b = intern(&t, 100, lower(100));
        assert!(Arc::ptr_eq(&a, &b));
        // …also once copied up through the index: a name found in the upper layer.
        t.set_upper(&a, Some(di(555)));
        let c = intern(
            &t,
            100,
            Ident {
                upper: Some(di(555)),
                lower: None,
            },
        );
        assert!(Arc::ptr_eq(&a, &c));
        // A resolution made before the copy-up is still the same file.
        assert!(Arc::ptr_eq(&a, &intern(&t, 100, lower(100))));
        assert_eq!(t.lookups(a.id), 4);
    }

    #[test]
    fn a_taken_number_never_aliases_two_files() {
        let t = table();
        let a = intern(&t, 100, upper(100));
        // Another file claims number 100 (a forged origin mark).
        let b = intern(&t, 100, upper(200));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(b.id.0 >= SYNTHETIC_BASE);
        // Found again under its own number, by lookup and by find.
        assert!(Arc::ptr_eq(&b, &intern(&t, 100, upper(200))));
        assert!(Arc::ptr_eq(
            &b,
            &t.find(100, &upper(200)).expect("found again")
        ));
        assert!(Arc::ptr_eq(&a, &t.find(100, &upper(100)).expect("a")));
        assert!(t.find(100, &upper(300)).is_none());
        // Forgetting the synthetic node frees its keys.
        t.forget(b.id, 2);
        assert!(t.find(100, &upper(200)).is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_file_with_a_synthetic_number_keeps_it_through_copy_up() {
        let t = table();
        let _a = intern(&t, 100, upper(100));
        let b = intern(&t, 100, lower(300));
        t.set_upper(&b, Some(di(301)));
        let again = intern(
            &t,
            100,
            Ident {
                upper: Some(di(301)),
                lower: None,
            },
        );
        assert!(Arc::ptr_eq(&b, &again));
    }

    #[test]
    fn a_free_natural_number_is_not_taken_while_the_file_has_another() {
        // b got a synthetic number because a had 100; a is forgotten; b stays b.
        let t = table();
        let a = intern(&t, 100, upper(100));
        let b = intern(&t, 100, upper(200));
        t.forget(a.id, 1);
        let again = intern(&t, 100, upper(200));
        assert!(Arc::ptr_eq(&b, &again));
    }

    #[test]
    fn a_file_looked_up_again_keeps_its_generation_and_object() {
        let t = table();
        let a = intern(&t, 100, lower(100));
        let generation = a.generation;
        t.forget(a.id, 1);
        assert!(t.get(a.id).is_none());
        assert_eq!(t.ghost(a.id).map(|g| g.generation), Some(generation));
        // Something still holds the object (an open file, a child): it comes back itself.
        let again = intern(&t, 100, lower(100));
        assert!(Arc::ptr_eq(&a, &again));
        t.forget(again.id, 1);
        drop((a, again));
        // Nothing holds it: a new object, with the old generation (its handles stay valid).
        let third = intern(&t, 100, lower(100));
        assert_eq!(third.generation, generation);
        t.forget(third.id, 1);
        // Another file with that number: a new generation.
        let other = intern(&t, 100, upper(999));
        assert_ne!(other.generation, generation);
        assert!(t.ghost(other.id).is_none());
    }

    #[test]
    fn a_ghost_object_is_adopted_once() {
        let t = table();
        let a = intern(&t, 100, lower(100));
        t.forget(a.id, 1);
        let b = t.adopt(&a).expect("adopted");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(t.lookups(a.id), 1);
        assert!(Arc::ptr_eq(&t.adopt(&a).expect("again"), &a));
        assert_eq!(t.lookups(a.id), 2);
        // An object for a file that lost the number to another one is refused.
        let stale = Arc::new(Node::new(
            NodeId(200),
            7,
            lower(200),
            empty_state(FileKind::Regular),
        ));
        let _other = intern(&t, 200, upper(201));
        assert!(t.adopt(&stale).is_none());
    }

    #[test]
    fn concurrent_lookups_and_forgets_keep_counts_and_identity() {
        let t = Arc::new(table());
        let threads: Vec<_> = (0..8u64)
            .map(|seed| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut held: Vec<(NodeId, u64)> = Vec::new();
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let obj = 10 + x % 16;
                        if x % 3 == 0 && !held.is_empty() {
                            let (id, _) = held.swap_remove((x as usize / 3) % held.len());
                            t.forget(id, 1);
                        } else {
                            let n = intern(&t, obj, lower(obj));
                            assert_eq!(n.ident(), lower(obj), "another object's node");
                            assert_eq!(n.id, NodeId(obj));
                            held.push((n.id, obj));
                        }
                    }
                    for (id, _) in held {
                        t.forget(id, 1);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("thread");
        }
        assert_eq!(
            t.len(),
            1,
            "every lookup was forgotten: only the root is left"
        );
    }
}
