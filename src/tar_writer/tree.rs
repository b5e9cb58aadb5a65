//! A whole tree through the [`Writer`]: every directory before its children, children in
//! byte order of their names, names relative to the root without a leading `./` (as
//! `docker export` writes them), the root itself not written. Iterative, with a bounded
//! number of open directories whatever the depth (see [`Tree`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use super::{Leaf, Options, Put, Source, Writer, Written};
use crate::union::FileKind;

/// A tree to write: a [`Source`] whose nodes are found from a root, directory by
/// directory. The writer holds one open directory per level only for the deepest few
/// levels ([`crate::fdtree::window`] of [`Tree::dir_fds`]); it opens the others again,
/// from the root down by name, when it comes back to them. A directory's entries are
/// looked up one at a time, each released once written, so a wide directory does not
/// hold them all either.
pub trait Tree: Source {
    /// A directory opened for reading its entries.
    type Dir;

    /// The root directory.
    fn root(&self) -> io::Result<Self::Node>;
    fn stat(&self, node: &Self::Node) -> io::Result<Leaf>;
    /// Opens directory `node` (which it takes over).
    fn open_dir(&self, node: Self::Node) -> io::Result<Self::Dir>;
    /// The names of a directory's entries, in any order.
    fn names(&self, dir: &Self::Dir) -> io::Result<Vec<OsString>>;
    /// Entry `name` of `dir`; `None` when it is gone.
    fn child(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Option<Self::Node>>;
    /// Called once a non-directory node is written.
    fn release(&self, _node: Self::Node) {}
    /// Called once a directory is done with (or let go until the walk comes back).
    fn close_dir(&self, _dir: Self::Dir) {}
    /// How many fds an open directory holds.
    fn dir_fds(&self) -> usize {
        1
    }
}

/// A directory the walk is in.
struct Frame<D> {
    /// Length of the path of its entries' prefix (its path and a `/`; the root: 0).
    prefix: usize,
    name: OsString,
    /// Open, or let go (outside the window, or gone).
    dir: Option<D>,
    /// Entries still to write, in byte order of their names.
    names: std::vec::IntoIter<OsString>,
}

/// Writes `tree` as a tar stream into `out` (with the end-of-archive blocks).
pub fn write_tree<T: Tree, W: Write>(tree: &T, out: W, opts: Options) -> io::Result<Written> {
    let mut w = Writer::new(out, opts);
    let root = tree.open_dir(tree.root()?)?;
    let names = match sorted_names(tree, &root, b"") {
        Ok(n) => n,
        Err(e) => {
            tree.close_dir(root);
            return Err(e);
        }
    };
    let mut stack = vec![Frame {
        prefix: 0,
        name: OsString::new(),
        dir: Some(root),
        names,
    }];
    let r = walk(
        tree,
        &mut w,
        &mut stack,
        crate::fdtree::window(tree.dir_fds()),
    );
    for f in stack.into_iter().rev() {
        if let Some(d) = f.dir {
            tree.close_dir(d);
        }
    }
    r?;
    Ok(w.finish()?.1)
}

/// The names of `dir` (at `prefix`) in byte order; an error names the directory.
fn sorted_names<T: Tree>(
    tree: &T,
    dir: &T::Dir,
    prefix: &[u8],
) -> io::Result<std::vec::IntoIter<OsString>> {
    let mut names = tree.names(dir).map_err(|e| {
        let shown = match String::from_utf8_lossy(prefix).trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        io::Error::new(e.kind(), format!("{shown}: {e}"))
    })?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter())
}

/// How many times an entry gone between its lookup and its reading is looked up again
/// (a file replaced by a rename while the tree is written) before it is left out.
pub(super) const LOOKUPS: usize = 3;

/// Writes entry `name` of `dir` (its path: `path` and the name); an error names it. A
/// directory written is given back, to be walked; `path` is left with the name and, for
/// a directory, a `/` after it.
fn entry<T: Tree, W: Write>(
    w: &mut Writer<W>,
    tree: &T,
    dir: &T::Dir,
    name: &OsStr,
    path: &mut Vec<u8>,
) -> io::Result<Option<T::Node>> {
    let len = path.len();
    for _ in 0..LOOKUPS {
        path.truncate(len);
        path.extend_from_slice(name.as_bytes());
        let Some(child) = tree.child(dir, name)? else {
            return Ok(None);
        };
        let leaf = match tree.stat(&child) {
            Ok(l) => l,
            Err(e) => {
                tree.release(child);
                return Err(e);
            }
        };
        let is_dir = leaf.kind == FileKind::Directory;
        if is_dir {
            path.push(b'/');
        }
        match w.node(tree, path, &child, &leaf) {
            Ok(Put::Written) if is_dir => return Ok(Some(child)),
            Ok(Put::Written) => {
                tree.release(child);
                return Ok(None);
            }
            Ok(Put::Gone) => tree.release(child),
            Err(e) => {
                tree.release(child);
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "{}: {e}",
                        String::from_utf8_lossy(path).trim_end_matches('/')
                    ),
                ));
            }
        }
    }
    log::debug!(
        "{} went away while it was read: left out",
        String::from_utf8_lossy(path)
    );
    Ok(None)
}

/// Writes the entries below the directories of `stack` (their own entries written),
/// keeping the deepest `window` of them open (see [`Tree`]).
fn walk<T: Tree, W: Write>(
    tree: &T,
    w: &mut Writer<W>,
    stack: &mut Vec<Frame<T::Dir>>,
    window: usize,
) -> io::Result<()> {
    let mut path: Vec<u8> = Vec::new();
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            if let Some(d) = stack.pop().and_then(|f| f.dir) {
                tree.close_dir(d);
            }
            path.truncate(stack.last().map_or(0, |f| f.prefix));
            continue;
        };
        reopen(tree, stack, &path, window)?;
        let Some(dir) = stack.last().and_then(|f| f.dir.as_ref()) else {
            continue; // gone meanwhile
        };
        let len = path.len();
        let Some(child) = entry(w, tree, dir, &name, &mut path)? else {
            path.truncate(len);
            continue;
        };
        let dir = tree.open_dir(child)?;
        let names = match sorted_names(tree, &dir, &path) {
            Ok(n) => n,
            Err(e) => {
                tree.close_dir(dir);
                return Err(e);
            }
        };
        stack.push(Frame {
            prefix: path.len(),
            name,
            dir: Some(dir),
            names,
        });
        // The directories above the window are let go (the root stays open).
        if let Some(end) = stack.len().checked_sub(window)
            && end > 1
        {
            for f in stack[1..end].iter_mut().rev() {
                let Some(d) = f.dir.take() else { break };
                tree.close_dir(d);
            }
        }
    }
    Ok(())
}

/// Opens the top directory of `stack` again if it was let go: from the deepest open one
/// above it, name by name, those within the deepest `window` staying open. A directory
/// not found again as one (gone meanwhile) leaves it and those below it with nothing to
/// write.
fn reopen<T: Tree>(
    tree: &T,
    stack: &mut [Frame<T::Dir>],
    path: &[u8],
    window: usize,
) -> io::Result<()> {
    let top = stack.len().saturating_sub(1);
    if stack.get(top).is_none_or(|f| f.dir.is_some()) {
        return Ok(());
    }
    let first = stack
        .iter()
        .rposition(|f| f.dir.is_some())
        .map_or(0, |i| i + 1);
    let keep_from = (top + 1).saturating_sub(window).max(1);
    for m in first.max(1)..=top {
        let (above, rest) = stack.split_at_mut(m);
        let (Some(parent), Some(f)) = (above.last_mut(), rest.first_mut()) else {
            break;
        };
        let found = match parent.dir.as_ref() {
            Some(pd) => tree.child(pd, &f.name)?,
            None => None,
        };
        let found = match found {
            Some(n) if tree.stat(&n).is_ok_and(|l| l.kind == FileKind::Directory) => Some(n),
            Some(n) => {
                tree.release(n);
                None
            }
            None => None,
        };
        let Some(node) = found else {
            log::debug!(
                "{} is gone: nothing more written below it",
                String::from_utf8_lossy(&path[..f.prefix])
            );
            for g in rest.iter_mut() {
                g.names = Vec::new().into_iter();
            }
            break;
        };
        f.dir = Some(tree.open_dir(node)?);
        if m > 1
            && m - 1 < keep_from
            && let Some(d) = parent.dir.take()
        {
            tree.close_dir(d);
        }
    }
    Ok(())
}
