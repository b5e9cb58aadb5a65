//! The one tar writer: every tar layerfs makes of files goes through [`Writer`] —
//! `layerfs export` (a container's merged tree), `commit` (a container's changes as an OCI
//! layer) and the layers `save` writes again when their original tar is not recorded
//! (`commit::layer_tar` for a committed layer, a layer directory for any other).
//!
//! What it is given: entries as a [`Source`] presents them, each with its [`Leaf`] (the
//! union core's [`FileKind`] and its stat), at a path the caller chose, in the caller's
//! order; a whole tree through [`Tree`] and [`write_tree`] (directories before their
//! children, children in byte order of their names, a bounded number of directories open
//! at any depth); `commit` feeds its changes walk entry by entry. What it decides, once
//! for all of them:
//! - the header encoding (`header.rs`: ustar blocks, PAX records, GNU long names), in one
//!   of two [`Dialect`]s;
//! - hard links: an inode met again (same `ino`, more than one link) is written as a link
//!   to the first name it was written at ([`Links`] says which kinds);
//! - sockets: a tar cannot hold one; they are left out, counted in [`Written::skipped`];
//! - the type of an entry, from [`FileKind`], and its data: a regular file is opened
//!   before its header is written, the header announces the size of what was opened
//!   ([`Content::size`], not the size its lookup saw: the file may have been rewritten
//!   between), and exactly that many bytes follow (one that grew is cut; one that shrank
//!   while it was read fails, or is padded with zeros, [`Options::pad_shrunk`]);
//! - entries that vanish between their listing and their reading: nothing is written of
//!   them and [`Put::Gone`] says so (a tree looks the name up again);
//! - xattrs as PAX `SCHILY.xattr.*` records in name order.
//!
//! Export, commit and layer re-creation are [`Options`] of it ([`Options::TREE`],
//! [`Options::layer`]); each option exists because the bytes each of them wrote before
//! this module must stay what they were (diff_ids of committed layers, the layers loaded
//! from exports), not because one is better.

mod header;
mod tree;
pub mod union;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};

use crate::union::FileKind;

pub use tree::{Tree, write_tree};

/// What the tar needs to know of an entry: its kind, as the union core names kinds, and
/// its stat ([`Leaf::of_attr`] from the union core, [`Leaf::of_stat`] from the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub kind: FileKind,
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of a regular file (ignored for other kinds).
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// (major, minor) of a device.
    pub rdev: (u32, u32),
    /// Identity of the inode, for hard links (only compared, never written).
    pub ino: u64,
    pub nlink: u64,
}

impl Leaf {
    /// From the host's stat of a file.
    pub fn of_stat(st: &nix::sys::stat::FileStat) -> Leaf {
        let kind = FileKind::from_mode(st.st_mode);
        Leaf {
            kind,
            perm: st.st_mode & 0o7777,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: if kind == FileKind::Regular {
                st.st_size as u64
            } else {
                0
            },
            mtime: st.st_mtime,
            rdev: (
                nix::sys::stat::major(st.st_rdev) as u32,
                nix::sys::stat::minor(st.st_rdev) as u32,
            ),
            ino: st.st_ino,
            nlink: st.st_nlink,
        }
    }
}

/// Where the content of entries comes from: a node is whatever the source looks entries
/// up as. Only what the writer needs of an entry is asked: the xattrs (not of a hard
/// link to an earlier name, unless [`Options::link_xattrs`]), a symlink's target, a
/// regular file's content.
pub trait Source {
    type Node;
    /// The xattrs to write (name, value), in any order.
    fn xattrs(&self, node: &Self::Node) -> io::Result<Vec<(OsString, Vec<u8>)>>;
    fn read_link(&self, node: &Self::Node) -> io::Result<Vec<u8>>;
    /// The content of a regular file.
    fn open(&self, node: &Self::Node) -> io::Result<Content<'_>>;
}

/// A regular file opened for reading.
pub struct Content<'a> {
    pub data: Box<dyn Read + 'a>,
    /// Its size when opened (fstat of the open file): what its header announces.
    pub size: u64,
}

/// What [`Writer::node`] did.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Written,
    /// The entry was gone when it was read (ENOENT before its header): nothing written.
    Gone,
}

/// How headers are spelled. The two differ only where ustar's fields fall short, and in
/// small matters of form; every difference is a branch of `header.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// POSIX ustar with PAX records, as Go's archive/tar (Docker, containerd, skopeo)
    /// writes layers: `ustar\0` `00`, PAX `path`/`linkpath` for names and targets over
    /// 100 bytes, `uid`/`gid`/`size`/`mtime` records for values ustar cannot hold (times
    /// before 1970 too), names and targets byte for byte as given. `commit`'s layers are
    /// written so: what every reader of image layers reads, and the diff_ids of every
    /// layer it made, which `commit::layer_tar` must give back.
    Pax,
    /// GNU, as the `tar` crate's `Builder` writes it, which wrote `export` and layer
    /// directories before this module: `ustar ` ` \0`, `././@LongLink` entries for long
    /// names and targets, base-256 numbers beyond octal, a time before 1970 as 0, names
    /// and link targets through its path rules (`a/./b` and `a//b` as `a/b`), xattr
    /// names as lossy UTF-8 in a PAX header with no name. Kept so that an export, and a
    /// layer loaded from one, come out byte for byte as before (a layer directory written
    /// again counts only when it gives the layer's diff_id).
    Gnu,
}

/// Which entries of more than one link are written once, then as links to that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Regular files only: `commit` writes a hard-linked symlink, FIFO or device at each
    /// of its names (as it always has: its layers must come out the same again).
    Regular,
    /// Everything but directories, as GNU tar and Docker's archive package do: trees.
    NonDirectories,
}

/// How entries are written: see [`Options::TREE`] and [`Options::layer`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub dialect: Dialect,
    pub links: Links,
    /// A hard-link entry carries its file's xattrs (PAX records), as `commit` writes
    /// them; trees write a link bare (the xattrs are the file's, written with it).
    pub link_xattrs: bool,
    /// `SOURCE_DATE_EPOCH`: no entry's mtime later than this (not markers': theirs is 0).
    pub clamp_mtime: Option<i64>,
    /// A file that shrank while it was read is padded with zeros to the size its header
    /// announced (as GNU tar does), with a warning: an export of a container written to
    /// meanwhile. Otherwise it is an error: a layer must hold what the file held.
    pub pad_shrunk: bool,
    /// How a socket left out is logged: a warning where the result is meant to be the
    /// same files (a layer), debug where a tar is known to leave them out (an export,
    /// as `docker export` and GNU tar do silently).
    pub socket_log: log::Level,
}

impl Options {
    /// A whole tree: `layerfs export`, and a layer directory written again for `save`.
    pub const TREE: Options = Options {
        dialect: Dialect::Gnu,
        links: Links::NonDirectories,
        link_xattrs: false,
        clamp_mtime: None,
        pad_shrunk: true,
        socket_log: log::Level::Debug,
    };

    /// An OCI changeset layer: `commit`, and `commit::layer_tar` writing a committed
    /// layer again, with the same bytes.
    pub fn layer(clamp_mtime: Option<i64>) -> Options {
        Options {
            dialect: Dialect::Pax,
            links: Links::Regular,
            link_xattrs: true,
            clamp_mtime,
            pad_shrunk: false,
            socket_log: log::Level::Warn,
        }
    }

    fn links(&self, kind: FileKind) -> bool {
        match self.links {
            Links::Regular => kind == FileKind::Regular,
            Links::NonDirectories => kind != FileKind::Directory,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Entries (hard links and markers included; extension records not).
    pub entries: u64,
    /// Bytes of regular file content.
    pub content: u64,
    /// Entries left out (sockets).
    pub skipped: u64,
}

/// Writes entries to `out`.
pub struct Writer<W: Write> {
    out: W,
    opts: Options,
    /// The first name of each inode written with more than one link.
    links: HashMap<u64, Vec<u8>>,
    written: Written,
    buf: Vec<u8>,
}

/// A path for messages.
pub(crate) fn shown(path: &[u8]) -> String {
    match String::from_utf8_lossy(path).trim_end_matches('/') {
        "" | "." => "/".to_string(),
        p => format!("/{}", p.trim_start_matches("./")),
    }
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, opts: Options) -> Writer<W> {
        Writer {
            out,
            opts,
            links: HashMap::new(),
            written: Written::default(),
            buf: Vec::new(),
        }
    }

    /// Writes `node` of `src` at `path` (relative, `/`-separated; a directory's gets a
    /// trailing `/` if it lacks one), as `leaf` says it is. Everything read of the node
    /// (xattrs, target, open file) is read before any of it is written, so an entry gone
    /// meanwhile leaves nothing behind ([`Put::Gone`]).
    pub fn node<S: Source + ?Sized>(
        &mut self,
        src: &S,
        path: &[u8],
        node: &S::Node,
        leaf: &Leaf,
    ) -> io::Result<Put> {
        match self.node_or_gone(src, path, node, leaf) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Put::Gone),
            Err(e) => Err(e),
            Ok(()) => Ok(Put::Written),
        }
    }

    /// [`Writer::node`]; a NotFound error comes only before anything is written (once
    /// the header is out, a read's NotFound is passed on as another kind).
    fn node_or_gone<S: Source + ?Sized>(
        &mut self,
        src: &S,
        path: &[u8],
        node: &S::Node,
        leaf: &Leaf,
    ) -> io::Result<()> {
        if leaf.kind == FileKind::Socket {
            log::log!(
                self.opts.socket_log,
                "leaving {} out: a socket cannot be in a tar",
                shown(path)
            );
            self.written.skipped += 1;
            return Ok(());
        }
        let mut f = header::Fields {
            name: path,
            flag: header::FILE,
            mode: leaf.perm & 0o7777,
            uid: leaf.uid,
            gid: leaf.gid,
            size: 0,
            mtime: match self.opts.clamp_mtime {
                Some(max) => leaf.mtime.min(max),
                None => leaf.mtime,
            },
            link: b"",
            dev: None,
            xattrs: &[],
        };
        let linked = leaf.nlink > 1 && self.opts.links(leaf.kind);
        if linked && let Some(first) = self.links.get(&leaf.ino).cloned() {
            let xattrs = match self.opts.link_xattrs {
                true => sorted(src.xattrs(node)?),
                false => Vec::new(),
            };
            f.flag = header::HARD_LINK;
            f.link = &first;
            f.xattrs = &xattrs;
            return self.put(&f, None);
        }
        let xattrs = sorted(src.xattrs(node)?);
        f.xattrs = &xattrs;
        let name;
        let target;
        let mut content = None;
        match leaf.kind {
            FileKind::Regular => {
                let c = src.open(node)?;
                f.size = c.size;
                content = Some(c);
            }
            FileKind::Directory => {
                let mut n = path.to_vec();
                if !n.ends_with(b"/") {
                    n.push(b'/');
                }
                name = n;
                f.name = &name;
                f.flag = header::DIR;
            }
            FileKind::Symlink => {
                target = src.read_link(node)?;
                f.flag = header::SYMLINK;
                f.link = &target;
            }
            FileKind::Fifo => f.flag = header::FIFO,
            FileKind::CharDevice | FileKind::BlockDevice => {
                f.flag = match leaf.kind {
                    FileKind::CharDevice => header::CHAR,
                    _ => header::BLOCK_DEV,
                };
                f.dev = Some(leaf.rdev);
            }
            FileKind::Socket => return Ok(()),
        }
        match content {
            Some(mut c) => {
                self.put(&f, Some(&mut c.data))?;
                self.written.content += c.size;
            }
            None => self.put(&f, None)?,
        }
        if linked {
            self.links.insert(leaf.ino, path.to_vec());
        }
        Ok(())
    }

    /// An empty regular file with mode, owner and time 0: a whiteout (`.wh.NAME`) or an
    /// opaque marker, as `commit` writes them.
    pub fn marker(&mut self, path: &[u8]) -> io::Result<()> {
        let f = header::Fields {
            name: path,
            flag: header::FILE,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: b"",
            dev: None,
            xattrs: &[],
        };
        self.put(&f, None)
    }

    /// Writes one entry: its headers, then (a regular file) exactly `f.size` bytes of
    /// `data`.
    fn put(&mut self, f: &header::Fields<'_>, data: Option<&mut dyn Read>) -> io::Result<()> {
        header::write(&mut self.out, self.opts.dialect, f)?;
        if let Some(data) = data {
            self.copy(data, f.size, f.name)
                .map_err(|e| match e.kind() {
                    // (not taken for an entry gone before it was written)
                    io::ErrorKind::NotFound => io::Error::other(e),
                    _ => e,
                })?;
            header::pad(&mut self.out, f.size)?;
        }
        self.written.entries += 1;
        Ok(())
    }

    /// Copies exactly `size` bytes of `data`: a file that shrank meanwhile is an error,
    /// or padded with zeros ([`Options::pad_shrunk`]), never a damaged archive (the header
    /// announced its size already).
    fn copy(&mut self, data: &mut dyn Read, size: u64, name: &[u8]) -> io::Result<()> {
        if size > 0 && self.buf.is_empty() {
            self.buf = vec![0u8; 1 << 20];
        }
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) if self.opts.pad_shrunk => {
                    log::warn!(
                        "{}: the file shrank by {left} bytes while it was read; padded with zeros",
                        shown(name)
                    );
                    self.buf.fill(0);
                    while left > 0 {
                        let n = self
                            .buf
                            .len()
                            .min(usize::try_from(left).unwrap_or(usize::MAX));
                        self.out.write_all(&self.buf[..n])?;
                        left -= n as u64;
                    }
                    return Ok(());
                }
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// What was written so far.
    pub fn written(&self) -> Written {
        self.written
    }

    /// Writes the end-of-archive marker (two zero blocks), flushes, and hands back the
    /// output.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.out.write_all(&[0u8; 2 * header::BLOCK])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

/// In name order, whatever order the source lists them in.
fn sorted(mut xattrs: Vec<(OsString, Vec<u8>)>) -> Vec<(OsString, Vec<u8>)> {
    xattrs.sort();
    xattrs
}

#[cfg(test)]
mod tests;
