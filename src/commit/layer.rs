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
//! Entries come in the walk's fixed order (see `crate::changes`) with fixed metadata
//! (see [`super::tar`]), so the same changes give the same bytes, hence the same diff_id.
//! A file whose name a layer cannot carry (`.wh.*`, which a reader takes for a whiteout or
//! marker) fails the layer, naming the path: leaving it out, or writing it, would make
//! the image differ from what the container shows.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use crate::changes::{Found, Views, Visit, fs_err, show};
use crate::error::{Error, Result};
use crate::union::{Fh, FileKind, Union};
use crate::whiteout::{self, NameKind};

use super::tar::{Body, Meta, TarWriter};

/// How a layer is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerOptions {
    /// `SOURCE_DATE_EPOCH`: no mtime later than this.
    pub clamp_mtime: Option<i64>,
}

/// What a layer holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerStats {
    pub entries: u64,
    /// Bytes of regular file data.
    pub data: u64,
    /// Entries left out (sockets).
    pub skipped: u64,
}

/// Reads a file through the union.
struct UnionReader<'a> {
    u: &'a Union,
    fh: Fh,
    off: u64,
}

impl Read for UnionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = u32::try_from(buf.len().min(1 << 20)).unwrap_or(1 << 20);
        let data = self
            .u
            .read(self.fh, self.off, want)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.off += n as u64;
        Ok(n)
    }
}

struct Writer<'a, W: Write> {
    tar: TarWriter<W>,
    opts: &'a LayerOptions,
    /// Inode (as the container's view numbers it) → the path it was first written at.
    links: HashMap<u64, Vec<u8>>,
    stats: LayerStats,
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
    fn meta(&self, v: &Views, path: &[u8], f: &Found) -> Result<Meta> {
        let mut mtime = f.attr.mtime.sec;
        if let Some(max) = self.opts.clamp_mtime {
            mtime = mtime.min(max);
        }
        Ok(Meta {
            mode: u32::from(f.attr.perm),
            uid: u64::from(f.attr.uid),
            gid: u64::from(f.attr.gid),
            mtime,
            xattrs: Views::xattrs(&v.ctr, f.id).map_err(|e| fs_err(show(path), e))?,
        })
    }

    fn put(&mut self, path: &[u8], meta: &Meta, body: Body<'_>) -> Result<()> {
        self.tar
            .entry(path, meta, body)
            .map_err(|e| Error::io_what(format!("writing {} into the layer", show(path)), e))?;
        self.stats.entries += 1;
        Ok(())
    }

    fn visit(&mut self, v: &Views, step: Visit<'_>) -> Result<()> {
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
                let meta = self.meta(v, path, &ctr)?;
                let name: &[u8] = if path.is_empty() { b"./" } else { path };
                self.put(name, &meta, Body::Dir)?;
                if replaced && img.is_some_and(|i| i.attr.kind.is_dir()) {
                    let mut marker = path.to_vec();
                    if !marker.is_empty() {
                        marker.push(b'/');
                    }
                    marker.extend_from_slice(whiteout::OPAQUE_MARKER.as_bytes());
                    self.put(&marker, &Meta::default(), Body::File(0, &mut io::empty()))?;
                }
                Ok(())
            }
            Visit::Leaf {
                path, ctr: Some(f), ..
            } => {
                check_name(path)?;
                self.entry(v, path, &f)
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
                self.put(&wh, &Meta::default(), Body::File(0, &mut io::empty()))
            }
            // Deleted inside a replaced directory (its opaque marker says it), or nothing.
            Visit::Leaf { .. } | Visit::Leave { .. } => Ok(()),
        }
    }

    fn skip(&mut self, path: &[u8], why: &str) -> Result<()> {
        log::warn!("commit: leaving {} out of the layer: {why}", show(path));
        self.stats.skipped += 1;
        Ok(())
    }

    fn entry(&mut self, v: &Views, path: &[u8], f: &Found) -> Result<()> {
        let meta = self.meta(v, path, f)?;
        let at = |e| fs_err(show(path), e);
        match f.attr.kind {
            FileKind::Regular => {
                if f.attr.nlink > 1 {
                    if let Some(first) = self.links.get(&f.attr.ino).cloned() {
                        return self.put(path, &meta, Body::HardLink(&first));
                    }
                    self.links.insert(f.attr.ino, path.to_vec());
                }
                let open = v.ctr.open(f.id, libc::O_RDONLY).map_err(at)?;
                let mut r = UnionReader {
                    u: &v.ctr,
                    fh: open.fh,
                    off: 0,
                };
                let res = self.put(path, &meta, Body::File(f.attr.size, &mut r));
                v.ctr.release(open.fh);
                self.stats.data += f.attr.size;
                res
            }
            FileKind::Symlink => {
                let target = v.ctr.readlink(f.id).map_err(at)?;
                self.put(path, &meta, Body::Symlink(&target))
            }
            FileKind::Fifo => self.put(path, &meta, Body::Fifo),
            FileKind::CharDevice | FileKind::BlockDevice => {
                let rdev = u64::from(f.attr.rdev);
                let dev = (
                    u64::from(nix::sys::stat::major(rdev) as u32),
                    u64::from(nix::sys::stat::minor(rdev) as u32),
                );
                let body = if f.attr.kind == FileKind::CharDevice {
                    Body::Char(dev.0, dev.1)
                } else {
                    Body::Block(dev.0, dev.1)
                };
                self.put(path, &meta, body)
            }
            FileKind::Socket => self.skip(path, "a socket cannot be in a tar"),
            FileKind::Directory => Ok(()),
        }
    }
}

/// Writes the layer of the container `views` shows to `out`.
pub fn write_layer<W: Write>(
    views: &Views,
    out: W,
    opts: &LayerOptions,
) -> Result<(W, LayerStats)> {
    let mut w = Writer {
        tar: TarWriter::new(out),
        opts,
        links: HashMap::new(),
        stats: LayerStats::default(),
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
    views.walk_linked(false, &linked, &mut |v, step| w.visit(v, step))?;
    let stats = w.stats;
    let out = w
        .tar
        .finish()
        .map_err(|e| Error::io_what("writing the layer", e))?;
    Ok((out, stats))
}
