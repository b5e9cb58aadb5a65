//! Reading a frozen union (a container's view, or an image's), as `diff`, `commit` and
//! `export` do: a file's bytes ([`UnionFile`]), its xattrs, a directory's names, errors with
//! their context, and lookup counts given back ([`Looked`]). The core answers the kernel's
//! questions; these say them in the terms of a reader that is not the kernel.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use crate::error::Error;
use crate::union::{self, Attr, Fh, FsError, NodeId, Union};

/// Bytes asked per read of a file.
const READ_CHUNK: u32 = 1 << 20;

/// Largest xattr value (XATTR_SIZE_MAX).
const XATTR_MAX: u32 = 65536;

/// The error of a union operation on `what`.
pub fn fs_err(what: impl std::fmt::Display, e: FsError) -> Error {
    let what = match e.context() {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    };
    Error::io_what(what, io::Error::from_raw_os_error(e.errno()))
}

/// An io::Error of a union error, with its context when it has one.
pub fn io_err(e: FsError) -> io::Error {
    let base = io::Error::from_raw_os_error(e.errno());
    match e.context() {
        Some(ctx) => io::Error::new(base.kind(), format!("{ctx}: {base}")),
        None => base,
    }
}

/// A file of the union opened for reading, read in order; closed on drop.
pub struct UnionFile<'u> {
    union: &'u Union,
    fh: Fh,
    offset: u64,
}

impl UnionFile<'_> {
    pub fn open(union: &Union, id: NodeId) -> io::Result<UnionFile<'_>> {
        let reply = union.open(id, libc::O_RDONLY).map_err(io_err)?;
        Ok(UnionFile {
            union,
            fh: reply.fh,
            offset: 0,
        })
    }
}

impl UnionFile<'_> {
    /// File `id` of `union` opened, as the tar writer reads a regular file: its size is
    /// the open file's (a name may have been given to another file since its lookup).
    pub fn content(union: &Union, id: NodeId) -> io::Result<crate::tar_writer::Content<'_>> {
        let f = UnionFile::open(union, id)?;
        let size = union.open_size(f.fh).map_err(io_err)?;
        Ok(crate::tar_writer::Content {
            data: Box::new(f),
            size,
        })
    }
}

impl Read for UnionFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = u32::try_from(buf.len())
            .unwrap_or(READ_CHUNK)
            .min(READ_CHUNK);
        let data = self
            .union
            .read(self.fh, self.offset, want)
            .map_err(io_err)?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

impl Drop for UnionFile<'_> {
    fn drop(&mut self) {
        self.union.release(self.fh);
    }
}

/// The xattrs of `id` in `u`, as listed: every one the union shows (none where the
/// layers keep none).
pub fn xattrs(u: &Union, id: NodeId) -> union::Result<Vec<(OsString, Vec<u8>)>> {
    let list = match u.listxattr(id) {
        Ok(l) => l,
        Err(e) if e == FsError::EOPNOTSUPP => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        match u.getxattr(id, name, XATTR_MAX) {
            Ok(v) => out.push((name.to_os_string(), v)),
            // Removed since it was listed.
            Err(e) if e == FsError::ENODATA => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The user-visible xattrs of `id` in `u`, sorted by name: [`xattrs`] without the store's
/// record of rootless ownership (the union's own marks never show).
pub fn user_xattrs(u: &Union, id: NodeId) -> union::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = xattrs(u, id)?;
    out.retain(|(n, _)| n != crate::store::unpack::OVERRIDE_STAT_XATTR);
    out.sort();
    Ok(out)
}

/// The names directory `id` shows in `u`, `.` and `..` left out.
pub fn listing(u: &Union, id: NodeId) -> union::Result<Vec<OsString>> {
    let mut names = Vec::new();
    u.readdir(id, 0, |_, e| {
        if e.name != "." && e.name != ".." {
            names.push(e.name.clone());
        }
        false
    })?;
    Ok(names)
}

/// A node looked up in a union, its lookup count given back (the kernel's `forget`) when
/// dropped: a walker holds only the nodes it still needs, whatever way it leaves. The
/// root, never looked up, has no count to give back.
pub struct Looked<'u> {
    union: &'u Union,
    pub id: NodeId,
    pub attr: Attr,
    counted: bool,
}

impl<'u> Looked<'u> {
    /// `name` in directory `dir`; `None` when it is not there.
    pub fn lookup(union: &'u Union, dir: NodeId, name: &OsStr) -> union::Result<Option<Self>> {
        match union.lookup(dir, name) {
            Ok(e) => Ok(Some(Looked {
                union,
                id: e.id,
                attr: e.attr,
                counted: true,
            })),
            Err(e) if e == FsError::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The root directory.
    pub fn root(union: &'u Union) -> union::Result<Self> {
        Ok(Looked {
            union,
            id: union::ROOT_ID,
            attr: union.getattr(union::ROOT_ID, None)?,
            counted: false,
        })
    }
}

impl Drop for Looked<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.union.forget(self.id, 1);
        }
    }
}
