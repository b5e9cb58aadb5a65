//! A container, above the store: what it is made of and every way it is read.
//!
//! - its directory and lock ([`Container`], `dir.rs`), who holds it ([`holder`]), its
//!   mount daemon's control socket ([`control`]; [`hold_still`] for a snapshot), and its
//!   record, read and written in the format of [`crate::store::containers`], with its
//!   image id typed ([`image_of`]);
//! - the one builder of its layer stacks ([`Layers`]): writable (its mount), and frozen
//!   (its read-only mount, `diff`, `commit`, `export`). Every one of them opens the
//!   writable layer in the whiteout spellings the container recorded, and every read-only
//!   one with its hard-link index, so they all show what its mount shows;
//! - its mount lifecycle: picking and locking it for a mount, and the stack its daemon
//!   serves ([`mount`]); unmounting it and waiting for its daemon ([`umount`]);
//! - `export` ([`export`]), and the read adapters over a frozen union ([`read`]) that
//!   `changes` and `commit` share with it: a file reader, xattrs, listings, and a guard
//!   that gives lookup counts back.
//!
//! Above `store` (records, layers, images) and `union` (the core), below `cli`; `changes`
//! and `commit` use it. The store never imports it: it keeps the records, which is all
//! `rmi`, `prune` and `df`'s totals need of a container.

pub mod bundle;
pub mod control;
mod dir;
pub mod export;
pub mod holder;
pub mod mount;
pub mod read;
pub mod umount;

use std::io;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{ImageRecord, Store};
use crate::union::{self, LayerSpec, Stack, WorkSpec};
use crate::whiteout::Styles;

pub use crate::store::containers::{CONTAINER_JSON, ContainerRecord, valid_name};
pub use control::{Hold, hold_still};
pub use dir::{BUSY_WAIT, Container, all, create, discard_new, open, remove};

/// The image id of container `c`, as its record names it; a record whose id does not
/// parse is an invalid `container.json`.
pub fn image_of(c: &Container) -> Result<Digest> {
    Digest::parse(&c.record.image).map_err(|e| Error::Invalid {
        file: c.shown().join(CONTAINER_JSON).display().to_string(),
        detail: e.to_string(),
    })
}

/// The image record of container `c`; `None` when its image is no longer in the store.
pub fn image_record(store: &Store, c: &Container) -> Result<Option<ImageRecord>> {
    store.image(&image_of(c)?)
}

/// A container's layers, opened beneath the store's root and not yet stacked: its
/// writable layer and work directory over its image's layers.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The image's layer directories, top first.
    pub lowers: Vec<LayerSpec>,
    pub upper: LayerSpec,
    pub work: WorkSpec,
    /// The writable layer's spellings (see [`Container::styles`]).
    pub styles: Styles,
}

impl Layers {
    /// The layers of container `c` of `image`.
    pub fn of(store: &Store, c: &Container, image: &ImageRecord) -> Result<Layers> {
        let lowers = store.lower_specs(image)?;
        let (upper, styles) = c.upper_spec(store)?;
        Ok(Layers {
            lowers,
            upper,
            work: c.work_spec()?,
            styles,
        })
    }

    /// Stacked for its mount: the writable layer is written, in its own spellings only.
    pub fn writable(&self) -> io::Result<Stack> {
        Stack::open_styled(&self.lowers, &self.upper, &self.work, self.styles)
    }

    /// Stacked to be read as its mount shows it, writing nothing, also while it is
    /// mounted: its read-only mount, `diff`, `commit`, `export`. Its hard-link index is
    /// read as its mount reads it (a lower name of a hard-linked file copied up shows the
    /// copy), and its `.wh.` names are marks exactly in its spellings.
    pub fn frozen(&self) -> io::Result<Stack> {
        Stack::open_frozen(&self.lowers, &self.upper, &self.work, self.styles)
    }
}

/// The union options of a walker over a frozen stack (`diff`, `commit`, `export`):
/// nothing written (atimes included), no directory link counts (a lookup in a big
/// directory costs no listing), and directories let go as the walk leaves them, so the
/// fds it holds do not grow with the depth.
pub fn walker_options() -> union::Options {
    union::Options {
        atime: union::Atime::Never,
        dir_nlink: false,
        hold_parents: false,
        // (what layer serves a file is no content of it)
        layer_xattr: false,
        ..union::Options::default()
    }
}

/// What `df` shows of the store, each container measured here: its writable layer's size,
/// and where it is mounted as its daemon says.
pub fn usage(store: &Store) -> Result<crate::store::usage::Usage> {
    crate::store::usage::usage(store, |record| {
        let c = Container::of_record(store, record.clone());
        let mounted = holder::mounted_now(&c).ok().flatten();
        crate::store::usage::ContainerUsage {
            name: c.record.name.clone(),
            image: c.record.image.clone(),
            created: c.record.created.clone(),
            mountpoint: mounted.map(|m| match m.mountpoint {
                Some(p) => p.display().to_string(),
                None => c.record.mountpoint.clone().unwrap_or_default(),
            }),
            size: c.size(),
        }
    })
}
