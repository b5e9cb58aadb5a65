//! `layerfs export`: a container's merged view as one tar, like `docker export`.
//!
//! The view is read through the union core, over the container's layers opened frozen
//! (its writable layer and its index of hard links on top of the image's layers, as
//! `diff` and `commit` read them), so whiteouts, opaque directories, redirects, metacopy
//! files and hard links come out exactly as a mount shows them and no overlay mark
//! reaches the tar. No FUSE mount is needed, the core writes nothing (atimes included,
//! nothing staged in the work directory), and the core never
//! learns about tar: [`UnionTree`] adapts it to [`crate::tar_writer`], which writes it as
//! [`crate::tar_writer::Options::TREE`]. A container
//! that is mounted meanwhile may be written to while it is read; as with `docker
//! export` of a running container, the tar is then whatever each file held when read.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};

use super::read::{self, Looked, UnionFile, io_err};
use super::{Layers, walker_options};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tar_writer::{self, Content, Leaf, Source, Tree, Written};
use crate::union::Union;

/// Writes container `name`'s merged view into `out` as a tar stream.
pub fn export_container(store: &Store, name: &str, out: impl Write) -> Result<Written> {
    let _lock = store.lock_shared()?;
    let c = super::open(store, name)?.ok_or_else(|| Error::UnknownContainer(name.to_string()))?;
    let id = super::image_of(&c)?;
    let image = store.image(&id)?.ok_or_else(|| Error::Invalid {
        file: c.shown().display().to_string(),
        detail: format!("its image {id} is not in the store"),
    })?;
    // Its whiteouts are what its mount takes for whiteouts; any other `.wh.` name is a
    // file, which a flat tree (not a layer) carries as it is.
    let stack = Layers::of(store, &c, &image)?
        .frozen()
        .map_err(|e| Error::io_what(format!("opening the layers of container {name}"), e))?;
    // Directories go out without their link counts; the writer lets directories go as it
    // leaves them: bounded fds at any depth.
    let union = Union::new(stack, walker_options())
        .map_err(|e| Error::io_what(format!("reading container {name}"), io_err(e)))?;
    let mut out = OutErrors {
        inner: out,
        failed: None,
    };
    match tar_writer::write_tree(&UnionTree(&union), &mut out, tar_writer::Options::TREE) {
        Ok(w) => Ok(w),
        // The output's own error (a full disk), not the entry being written.
        Err(_) if out.failed.is_some() => Err(Error::io_what(
            "writing the tar",
            out.failed
                .take()
                .unwrap_or_else(|| io::Error::other("write failed")),
        )),
        Err(e) => Err(Error::io_what(format!("reading container {name}"), e)),
    }
}

/// Remembers the first error of the writer it wraps.
struct OutErrors<W> {
    inner: W,
    failed: Option<io::Error>,
}

impl<W: Write> Write for OutErrors<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            if self.failed.is_none() {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            if self.failed.is_none() {
                self.failed = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// The union core as a [`Tree`]: nodes are looked up (and forgotten once written) as
/// the kernel would; an open directory is its node.
pub struct UnionTree<'u>(pub &'u Union);

/// A node: looked up, its count given back when the writer lets it go.
pub type UnionNode<'u> = Looked<'u>;

impl<'u> Source for UnionTree<'u> {
    type Node = UnionNode<'u>;

    fn read_link(&self, n: &UnionNode) -> io::Result<Vec<u8>> {
        self.0.readlink(n.id).map_err(io_err)
    }

    fn xattrs(&self, n: &UnionNode) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        read::xattrs(self.0, n.id).map_err(io_err)
    }

    fn open(&self, n: &UnionNode) -> io::Result<Content<'_>> {
        UnionFile::content(self.0, n.id)
    }
}

impl<'u> Tree for UnionTree<'u> {
    type Dir = UnionNode<'u>;

    fn root(&self) -> io::Result<UnionNode<'u>> {
        Looked::root(self.0).map_err(io_err)
    }

    fn stat(&self, n: &UnionNode) -> io::Result<Leaf> {
        Ok(Leaf::of_attr(&n.attr))
    }

    fn open_dir(&self, n: UnionNode<'u>) -> io::Result<UnionNode<'u>> {
        Ok(n)
    }

    fn names(&self, dir: &UnionNode) -> io::Result<Vec<OsString>> {
        read::listing(self.0, dir.id).map_err(io_err)
    }

    fn child(&self, dir: &UnionNode, name: &OsStr) -> io::Result<Option<UnionNode<'u>>> {
        // `None`: gone since the listing (a mounted container being written).
        Looked::lookup(self.0, dir.id, name).map_err(io_err)
    }

    fn dir_fds(&self) -> usize {
        // Its directory in every layer, at most.
        self.0.stack.layers.len().max(1)
    }

    fn release(&self, n: UnionNode) {
        drop(n);
    }

    fn close_dir(&self, d: UnionNode) {
        drop(d);
    }
}
