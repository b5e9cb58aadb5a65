//! What a container changed: the paths its writable layer touches, seen both as the
//! container's mount shows them and as its image alone shows them. `diff` lists them
//! ([`diff`]); `commit` writes them as a layer (`crate::commit`).
//!
//! Two read-only unions answer every question about a path: the container's view (the
//! image layers under the upper layer, opened frozen: exactly what the mount shows, its
//! hard-link index included, without writing anything, also while the mount is live) and
//! the image's view (the image layers alone). Neither is ever walked whole. The walk is
//! driven by the upper directory: only the names it holds are looked at, so a container
//! that touched three files of a 100k-file image costs a handful of lookups. Only where
//! the upper layer replaces a directory's contents — an opaque directory, a renamed one
//! (`redirect`), a directory over a non-directory, a new directory — is the container's
//! view of that directory listed, and its image counterpart for what it lost.
//!
//! Reading the upper layer's own spellings (whiteouts of every dialect, opaque markers)
//! goes through [`crate::whiteout`]; the overlay marks through the union's mark reader.
//! Whether its `.wh.` names are marks is not decided here: it is the container's
//! spelling (`Container::upper_spec`), the same its mount reads, so a `.wh.` file a
//! process made through a mount that spells whiteouts as devices is a file here too.
//! A lower file whose hard-linked inode was copied up keeps its lower name but shows the
//! copy (the index, `union/index.rs`): such names are found by one pass over the image
//! layers, made only when the index holds an inode with names outside the upper layer
//! ([`links`]).
//!
//! The walk hands each path to a visitor, depth first, in a fixed order: a directory, then
//! the children it still has (by name, bytewise), each with its subtree, then the children
//! it lost (by name), then the end of the directory. Docker lists a directory's changes
//! this way too, in Go's map order; ours is sorted, so the same changes always come out
//! the same. It holds a bounded number of fds however deep the tree ([`walk`]): each
//! child is looked up in its turn and forgotten after its subtree, and only the deepest
//! few directories keep their nodes.

pub mod diff;
mod links;
#[cfg(test)]
mod tests;
mod walk;

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::stat::fstatat;

use crate::container::read::{fs_err, listing};
use crate::container::{Container, Layers, walker_options};
use crate::error::{Error, Result};
use crate::store::ImageRecord;
use crate::sys::At;
use crate::union::{self, Attr, LayerSpec, NodeId, Stack, Union, WorkSpec};
use crate::whiteout;

pub use links::Extra;

/// `/a/b` for the walk's path `a/b` (`/` for the root), for messages.
pub fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// The container's and the image's view of one container.
pub struct Views {
    /// What the container's mount shows.
    pub ctr: Union,
    /// What its image shows.
    pub img: Union,
    upper: LayerSpec,
    work: WorkSpec,
    /// The image's layer directories, top first.
    lowers: Vec<LayerSpec>,
    /// The upper layer may spell whiteouts and opaque markers as `.wh.` files.
    wh_files: bool,
}

/// A path as one view shows it: its node (looked up, forgotten after the visit) and
/// attributes.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub id: NodeId,
    pub attr: Attr,
}

/// One step of the walk. Paths are relative to the root, without a leading `/` (the root
/// is the empty path).
#[derive(Debug)]
pub enum Visit<'a> {
    /// A directory the container has; its children follow, then [`Visit::Leave`].
    Dir {
        path: &'a [u8],
        ctr: Found,
        img: Option<Found>,
        /// Its contents replace whatever the image had below it: everything it holds
        /// follows (not only what the upper layer touched), and a layer must mark it
        /// opaque when the image has a directory there (`img`).
        replaced: bool,
        /// Inside a replaced directory (a layer writes its contents whole, no marks).
        in_full: bool,
    },
    /// A non-directory the container has, or a path it no longer has (`ctr` is `None`;
    /// the image's view is in `img`).
    Leaf {
        path: &'a [u8],
        ctr: Option<Found>,
        img: Option<Found>,
        in_full: bool,
    },
    /// The end of the directory `path`.
    Leave { path: &'a [u8] },
}

/// What the upper directory holds at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    Entry,
    Whiteout,
    /// An empty file marked as a whiteout (kernel xattr whiteouts).
    XattrWhiteout,
    /// Not in the upper directory: a name found by the hard-link pass only.
    Extra,
}

/// The raw names of a directory, `.` and `..` left out.
fn raw_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    Ok(crate::fdtree::entries(dir.as_fd())?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

/// The image record of container `c`: an error naming it when the image is gone.
pub fn container_image(store: &crate::store::Store, c: &Container) -> Result<ImageRecord> {
    let gone = || Error::ImageGone {
        container: c.record.name.clone(),
        image: c.record.image.clone(),
    };
    let id = crate::container::image_of(c).map_err(|_| gone())?;
    store.image(&id)?.ok_or_else(gone)
}

impl Views {
    /// Opens the views of container `c` of `store`.
    pub fn of_container(store: &crate::store::Store, c: &Container) -> Result<Views> {
        let image = container_image(store, c)?;
        Views::open(&Layers::of(store, c, &image)?)
    }

    /// Opens the views of a container's `layers` (see [`Layers::frozen`]). Nothing is
    /// written, not even a probe. The upper layer's `.wh.` names are marks exactly in its
    /// spellings, as for its mount; otherwise they are files (which a layer cannot carry:
    /// `commit` refuses them).
    pub fn open(layers: &Layers) -> Result<Views> {
        let stack = layers
            .frozen()
            .map_err(|e| Error::io_what("opening the container's layers", e))?;
        let wh_files = stack.wh_files(0);
        // The walk lets directories go as it leaves them (see `walk`).
        let ctr = Union::new(stack, walker_options())
            .map_err(|e| fs_err("reading the container's layers", e))?;
        let stack = Stack::open(&layers.lowers, None)
            .map_err(|e| Error::io_what("opening the image's layers", e))?;
        let img = Union::new(stack, walker_options())
            .map_err(|e| fs_err("reading the image's layers", e))?;
        Ok(Views {
            ctr,
            img,
            upper: layers.upper.clone(),
            work: layers.work.clone(),
            lowers: layers.lowers.clone(),
            wh_files,
        })
    }

    /// Walks what the upper layer touches, handing each path to `visit`. `deleted_in_full`:
    /// also visit what replaced directories lost (for `diff`; a layer's opaque marker
    /// says it without naming them).
    pub fn walk(
        &self,
        deleted_in_full: bool,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        self.walk_linked(deleted_in_full, &HashSet::new(), visit)
    }

    /// [`Views::walk`], also visiting every name the image layers give the inodes in
    /// `linked` (numbered as the container's view numbers them), changed or not: `commit`
    /// asks for the inodes of hard-linked files inside replaced directories, whose other
    /// names the upper layer may not hold, so that the layer keeps them one inode.
    pub fn walk_linked(
        &self,
        deleted_in_full: bool,
        linked: &HashSet<u64>,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        let extra = links::lower_names(self, linked)?;
        let ctr = Found {
            id: union::ROOT_ID,
            attr: self
                .ctr
                .getattr(union::ROOT_ID, None)
                .map_err(|e| fs_err("/", e))?,
        };
        let img = Found {
            id: union::ROOT_ID,
            attr: self
                .img
                .getattr(union::ROOT_ID, None)
                .map_err(|e| fs_err("/", e))?,
        };
        let root = self
            .upper
            .open_readable()
            .map_err(|e| Error::io_what("opening the upper layer", e))?;
        let marks = union::xattr::read_marks(At::Fd(root.as_fd()))
            .map_err(|e| fs_err(self.upper.path.display(), e))?;
        let replaced = marks.opaque || self.has_opaque_marker(&root);
        visit(
            self,
            Visit::Dir {
                path: &[],
                ctr,
                img: Some(img),
                replaced,
                in_full: false,
            },
        )?;
        walk::Walk::new(self, deleted_in_full).run(
            (ctr, img, root),
            replaced,
            marks.xwhiteouts,
            &extra,
            visit,
        )
    }

    fn has_opaque_marker(&self, dir: &OwnedFd) -> bool {
        self.wh_files
            && fstatat(
                dir,
                whiteout::OPAQUE_MARKER,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
    }
}
