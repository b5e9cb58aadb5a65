//! The union core as the writer reads it (`export` and `commit` both read a union): an
//! entry's [`Leaf`] from its attributes, a file's content, errors as io errors. The core
//! itself never learns about tar.

use std::io::{self, Read};

use super::Leaf;
use crate::union::{Attr, Fh, FsError, NodeId, Union};

/// Bytes asked per read of a file.
const READ_CHUNK: u32 = 1 << 20;

impl Leaf {
    /// From the attributes the union core shows.
    pub fn of_attr(a: &Attr) -> Leaf {
        let rdev = u64::from(a.rdev);
        Leaf {
            kind: a.kind,
            perm: u32::from(a.perm),
            uid: u64::from(a.uid),
            gid: u64::from(a.gid),
            size: a.size,
            mtime: a.mtime.sec,
            rdev: (
                nix::sys::stat::major(rdev) as u32,
                nix::sys::stat::minor(rdev) as u32,
            ),
            ino: a.ino,
            nlink: u64::from(a.nlink),
        }
    }
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
    /// File `id` of `union` opened, as the writer reads a regular file.
    pub fn content(union: &Union, id: NodeId) -> io::Result<super::Content<'_>> {
        let f = UnionFile::open(union, id)?;
        let size = union.open_size(f.fh).map_err(io_err)?;
        Ok(super::Content {
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
