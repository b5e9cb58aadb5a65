//! layerfs: a union filesystem for container images.
//!
//! - [`image`] reads and writes image formats (OCI layout, OCI archive, docker-archive),
//!   image references, and the outputs of `save` and `export`.
//! - [`store`] is the content-addressed store: layers unpacked once by diff_id, images,
//!   container records, locking, atomic installs, garbage collection.
//! - [`union`] is the union filesystem core: the layer stack, lookup and readdir merge,
//!   the inode table, copy-up and whiteouts. It knows nothing of tar, clap or FUSE.
//! - [`container`] owns a container above the store: its directory, lock and holders
//!   (what `mount`, `rm`, `umount`, `ps` and `df` go by), its image id typed, the one builder of its layer stacks (writable, frozen), and the read adapters over
//!   a frozen union that `changes`, `commit` and `export` share.
//! - [`changes`] compares a container with its image, reading its upper layer only
//!   (`diff`, and what `commit` writes).
//! - [`commit`] writes a container's layer as an OCI changeset tar and makes it an image
//!   (`container::control` holds a mounted container's writes meanwhile).
//! - [`fuse`] adapts the core to `fuser`: decode a request, call the core, reply once.
//! - [`tar_reader`] frames tar streams (layers and archives) with every record bounded;
//!   [`tar_writer`] writes every tar of files (export, commit, layers written again).
//! - [`time`] formats and parses RFC 3339 timestamps and Docker's "3 weeks ago".
//! - [`mountinfo`] reads what is mounted where (is a mount point ours, is it dead).
//! - [`regular`] opens files that must be regular files in layer trees (never a FIFO).
//! - [`cli`] wires it all for the `layerfs` and `layerfs-overlay` binaries.
//! - [`fdtree`] walks, removes and opens directory trees of any depth through directory
//!   fds, holding a bounded number of them.
//! - [`whiteout`] is the only place that knows whiteout/opaque spellings; [`sys`] is the
//!   only place with `unsafe` (syscall wrappers).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod changes;
pub mod cli;
pub mod commit;
pub mod container;
pub mod digest;
pub mod error;
pub mod fdtree;
pub mod fuse;
pub mod image;
pub mod inspect;
pub mod interrupt;
pub mod mountinfo;
pub mod ownership;
pub mod regular;
pub mod store;
pub mod sys;
pub mod tar_reader;
pub mod tar_writer;
pub mod time;
pub mod union;
pub mod whiteout;
