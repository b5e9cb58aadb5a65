//! A container's writable layer as one OCI changeset tar (image-spec `layer.md`), as the
//! container's mount shows it:
//! - every directory on the way to a change, with its attributes (`./` first: the root's
//!   owner and mode are a layer's too);
//! - added and changed entries whole: regular files with their data (a metadata-only
//!   copy-up with its data from below), symlinks, FIFOs, devices; sockets cannot be in a
//!   tar and are left out with a warning, as Docker does;
//! - deletions as `.wh.NAME`; a directory whose contents replace the image's (re-created
//!   over a deleted one, renamed, or over a non-directory) whole, with `.wh..wh..opq`
//!   first when the image has a directory there; a renamed directory is thus written in
//!   full at its new path, its old path whited out;
//! - a hard-linked inode once, its other names as tar hard links to the first one;
//! - owner, mode and xattrs as the mount presents them (never the union's own marks),
//!   mtimes as presented (clamped to `SOURCE_DATE_EPOCH` when asked).
//!
//! Entries come in the walk's fixed order (see `crate::changes`) and are written by
//! [`crate::tar_writer`] as [`tar_writer::Options::layer`] (POSIX ustar and PAX, fixed
//! metadata: see [`tar_writer::Dialect::Pax`]), so the same changes give the same bytes,
//! hence the same diff_id.
//! A file whose name a layer cannot carry (`.wh.*`, which a reader takes for a whiteout or
//! marker) fails the layer, naming the path: leaving it out, or writing it, would make
//! the image differ from what the container shows.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use crate::changes::{Found, Views, Visit, show};
use crate::container::read::{UnionFile, io_err, user_xattrs};
use crate::error::{Error, Result};
use crate::tar_writer::{self, Content, Leaf, Source, Written};
use crate::union::{FileKind, NodeId};
use crate::whiteout::{self, NameKind};

/// How a layer is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// `SOURCE_DATE_EPOCH`: no mtime later than this.
    pub clamp_mtime: Option<i64>,
}

/// What a layer holds: its entries, bytes of regular file content, and what was left
/// out (sockets).
pub type LayerStats = Written;

/// The container's view as the writer reads it (the user-visible xattrs only, see
/// [`user_xattrs`]).
struct Container<'v>(&'v Views);

impl Source for Container<'_> {
    type Node = NodeId;

    fn xattrs(&self, id: &NodeId) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        user_xattrs(&self.0.ctr, *id).map_err(io_err)
    }

    fn read_link(&self, id: &NodeId) -> io::Result<Vec<u8>> {
        self.0.ctr.readlink(*id).map_err(io_err)
    }

    fn open(&self, id: &NodeId) -> io::Result<Content<'_>> {
        UnionFile::content(&self.0.ctr, *id)
    }
}

struct Writer<'v, W: Write> {
    tar: tar_writer::Writer<W>,
    src: Container<'v>,
}

/// Refuses a path whose last name a layer tar would spell as a mark (only the container's
/// own names reach here: its whiteouts and markers are deletions and `replaced` by then).
fn check_name(path: &[u8]) -> Result<()> {
    let last = OsStr::from_bytes(path.rsplit(|b| *b == b'/').next().unwrap_or(path));
    if whiteout::classify(last) != NameKind::Entry {
        return Err(Error::WhiteoutName { path: show(path) });
    }
    Ok(())
}

impl<W: Write> Writer<'_, W> {
    /// Writes `f` at `path` (the root's as `./`).
    fn node(&mut self, path: &[u8], f: &Found) -> Result<()> {
        let name: &[u8] = if path.is_empty() { b"./" } else { path };
        match self
            .tar
            .node(&self.src, name, &f.id, &Leaf::of_attr(&f.attr))
        {
            Ok(tar_writer::Put::Written) => Ok(()),
            // (the container is held still: nothing may go while its layer is written)
            Ok(tar_writer::Put::Gone) => Err(written(
                path,
                io::Error::new(io::ErrorKind::NotFound, "gone while it was read"),
            )),
            Err(e) => Err(written(path, e)),
        }
    }

    /// An empty `.wh.` file: a whiteout or an opaque marker.
    fn marker(&mut self, path: &[u8]) -> Result<()> {
        self.tar.marker(path).map_err(|e| written(path, e))
    }

    fn visit(&mut self, step: Visit<'_>) -> Result<()> {
        match step {
            Visit::Dir {
                path,
                ctr,
                img,
                replaced,
                ..
            } => {
                if !path.is_empty() {
                    check_name(path)?;
                }
                self.node(path, &ctr)?;
                if replaced && img.is_some_and(|i| i.attr.kind.is_dir()) {
                    let mut marker = path.to_vec();
                    if !marker.is_empty() {
                        marker.push(b'/');
                    }
                    marker.extend_from_slice(whiteout::OPAQUE_MARKER.as_bytes());
                    self.marker(&marker)?;
                }
                Ok(())
            }
            Visit::Leaf {
                path, ctr: Some(f), ..
            } => {
                check_name(path)?;
                self.node(path, &f)
            }
            Visit::Leaf {
                path,
                ctr: None,
                img: Some(_),
                in_full: false,
            } => {
                let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
                    Some(i) => (&path[..=i], &path[i + 1..]),
                    None => (&b""[..], path),
                };
                let mut wh = dir.to_vec();
                wh.extend_from_slice(
                    whiteout::whiteout_file_name(OsStr::from_bytes(name)).as_bytes(),
                );
                self.marker(&wh)
            }
            // Deleted inside a replaced directory (its opaque marker says it), or nothing.
            Visit::Leaf { .. } | Visit::Leave { .. } => Ok(()),
        }
    }
}

fn written(path: &[u8], e: io::Error) -> Error {
    Error::io_what(format!("writing {} into the layer", show(path)), e)
}

/// Writes the layer of the container `views` shows to `out`.
pub fn write_layer<W: Write>(
    views: &Views,
    out: W,
    opts: &LayerOptions,
) -> Result<(W, LayerStats)> {
    let mut w = Writer {
        tar: tar_writer::Writer::new(out, tar_writer::Options::layer(opts.clamp_mtime)),
        src: Container(views),
    };
    // A file inside a replaced directory (a renamed one, say) is written whole at its new
    // path; its other names that the container never touched are only in the image
    // layers. Those are found (one pass over the walk first) and written too, as links,
    // so that the new image keeps the inode one, as the container shows it.
    let mut linked = HashSet::new();
    views.walk(false, &mut |_, step| {
        if let Visit::Leaf {
            ctr: Some(f),
            in_full: true,
            ..
        } = step
            && f.attr.kind == FileKind::Regular
            && f.attr.nlink > 1
        {
            linked.insert(f.attr.ino);
        }
        Ok(())
    })?;
    views.walk_linked(false, &linked, &mut |_, step| w.visit(step))?;
    w.tar
        .finish()
        .map_err(|e| Error::io_what("writing the layer", e))
}
