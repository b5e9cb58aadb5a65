//! Open files and directory handles of union nodes.
//!
//! A file handle holds a real fd: the lower file while the node has not been copied up
//! and only reads were asked, the upper copy otherwise. A read handle opened on a lower
//! file switches to the upper copy as soon as another open copies the node up, so every
//! reader sees the data that was written (kernel overlayfs does the same). A directory
//! handle reads one snapshot of the merged listing.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use nix::fcntl::OFlag;

use super::attr::{FileKind, Time};
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::layer::open_readable_dir;
use super::listing::DirEntry;
use super::node::{Fh, Node, NodeId};
use super::{Entry, Union};

/// What `open` answers.
#[derive(Debug, Clone, Copy)]
pub struct OpenReply {
    pub fh: Fh,
    /// The data cannot change behind the kernel's back (a lower file): keep the page cache.
    pub keep_cache: bool,
    /// Opened with O_DIRECT: the kernel must send every read and write as it came
    /// (FUSE `direct_io`), and they go to the backing file unbuffered.
    pub direct_io: bool,
}

/// Alignment of the buffers O_DIRECT I/O goes through: the largest logical block size
/// of the filesystems we sit on (the caller's offsets and sizes are its own business,
/// checked by the backing filesystem as for any O_DIRECT file).
const DIRECT_IO_ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes whose start is aligned for O_DIRECT, and the offset of
/// that start in the vector.
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + DIRECT_IO_ALIGN];
    let off = v
        .as_ptr()
        .align_offset(DIRECT_IO_ALIGN)
        .min(DIRECT_IO_ALIGN);
    (v, off)
}

/// A time to set: now, or a given time.
#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(Time),
}

/// The attribute changes of a setattr.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub fh: Option<Fh>,
}

#[derive(Debug)]
pub(crate) struct FileHandle {
    node: Arc<Node>,
    fd: RwLock<Arc<OwnedFd>>,
    /// The fd is the lower file (read-only); switch to the upper copy once there is one.
    on_lower: AtomicBool,
    /// Opened with O_DIRECT: I/O goes through aligned buffers.
    direct: bool,
}

impl FileHandle {
    pub(crate) fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn on_lower(&self) -> bool {
        self.on_lower.load(Ordering::Acquire)
    }
}

/// Open files and directories.
#[derive(Debug, Default)]
pub(crate) struct Handles {
    next: AtomicU64,
    files: Mutex<HashMap<Fh, Arc<FileHandle>>>,
}

impl Handles {
    fn next_fh(&self) -> Fh {
        Fh(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub(crate) fn file(&self, fh: Fh) -> Result<Arc<FileHandle>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
            .ok_or(FsError::EBADF)
    }

    /// An fd of an open file of node `id` (for the attributes of an unlinked file).
    pub(crate) fn fd_of_node(&self, id: NodeId) -> Option<Arc<OwnedFd>> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.values().find(|h| h.node.id == id).map(|h| h.fd())
    }
}

impl Union {
    /// Opens a file. Any write access (or O_TRUNC) copies the node up first.
    pub fn open(&self, id: NodeId, flags: i32) -> Result<OpenReply> {
        let node = self.node(id)?;
        if node.is_dir() {
            return Err(FsError::EISDIR);
        }
        let acc = flags & libc::O_ACCMODE;
        let trunc = flags & libc::O_TRUNC != 0;
        if acc != libc::O_RDONLY || trunc {
            self.writer()?;
            self.copy_up(
                &node,
                if trunc {
                    CopyMode::Truncate(0)
                } else {
                    CopyMode::Full
                },
            )?;
        }
        // O_TRUNC stays: with FUSE_ATOMIC_O_TRUNC the kernel counts on us to truncate a
        // file that was already copied up.
        let (fd, on_lower) = self.open_data(&node, OFlag::from_bits_truncate(flags))?;
        let direct = flags & libc::O_DIRECT != 0;
        let fh = self.register_file(node, fd, on_lower, direct);
        Ok(OpenReply {
            fh,
            keep_cache: on_lower && !direct,
            direct_io: direct,
        })
    }

    /// Registers an open file of `node`.
    pub(crate) fn register_file(
        &self,
        node: Arc<Node>,
        fd: OwnedFd,
        on_lower: bool,
        direct: bool,
    ) -> Fh {
        let fh = self.handles.next_fh();
        let fd = Arc::new(fd);
        if !on_lower {
            node.write().open_fd_remembered(&fd);
        }
        let h = Arc::new(FileHandle {
            node,
            fd: RwLock::new(fd),
            on_lower: AtomicBool::new(on_lower),
            direct,
        });
        self.handles
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    /// The fd a handle reads from, switched to the upper copy if the node was copied up
    /// since the handle was opened.
    fn read_fd(&self, h: &FileHandle) -> Result<Arc<OwnedFd>> {
        if h.on_lower() && h.node.read().data_in_upper() {
            let flags = if h.direct {
                OFlag::O_RDONLY | OFlag::O_DIRECT
            } else {
                OFlag::O_RDONLY
            };
            let (fd, on_lower) = self.open_data(&h.node, flags)?;
            let fd = Arc::new(fd);
            if !on_lower {
                h.node.write().open_fd_remembered(&fd);
            }
            *h.fd.write().unwrap_or_else(|p| p.into_inner()) = fd.clone();
            h.on_lower.store(on_lower, Ordering::Release);
            return Ok(fd);
        }
        Ok(h.fd())
    }

    /// The size of the file open at `fh`, now: what its reads read (a name may have been
    /// given to another file since it was looked up).
    pub fn open_size(&self, fh: Fh) -> Result<u64> {
        let h = self.handles.file(fh)?;
        let fd = self.read_fd(&h)?;
        Ok(nix::sys::stat::fstat(&*fd)?.st_size as u64)
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: Fh, offset: u64, size: u32) -> Result<Vec<u8>> {
        let h = self.handles.file(fh)?;
        let fd = self.read_fd(&h)?;
        let (mut buf, start) = if h.direct {
            aligned_buffer(size as usize)
        } else {
            (vec![0u8; size as usize], 0)
        };
        let want = start + size as usize;
        let mut done = 0usize;
        while start + done < want {
            let at = (offset + done as u64) as i64;
            let n = nix::sys::uio::pread(&*fd, &mut buf[start + done..want], at)?;
            // (an O_DIRECT read is not resumed mid-block: a short one is the end)
            if n == 0 || h.direct {
                done += n;
                break;
            }
            done += n;
        }
        buf.truncate(start + done);
        buf.drain(..start);
        if self.opts.atime == super::Atime::Strict {
            // strictatime: every read counts, whatever the backing filesystem's policy
            let t = nix::sys::time::TimeSpec::UTIME_NOW;
            let _ = crate::sys::utimens_fd(
                std::os::fd::AsFd::as_fd(&*fd),
                &t,
                &nix::sys::time::TimeSpec::UTIME_OMIT,
            );
        }
        Ok(buf)
    }

    /// Writes `data` at `offset`; returns the byte count written.
    pub fn write(&self, fh: Fh, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handles.file(fh)?;
        if h.on_lower() {
            return Err(FsError::EBADF);
        }
        let fd = h.fd();
        let aligned;
        let data = if h.direct {
            let (mut buf, start) = aligned_buffer(data.len());
            buf[start..start + data.len()].copy_from_slice(data);
            aligned = (buf, start);
            &aligned.0[aligned.1..aligned.1 + data.len()]
        } else {
            data
        };
        let mut done = 0usize;
        while done < data.len() {
            let n = nix::sys::uio::pwrite(&*fd, &data[done..], (offset + done as u64) as i64)?;
            if n == 0 || h.direct {
                done += n;
                break;
            }
            done += n;
        }
        Ok(done as u32)
    }

    /// fallocate(2) on an open file: preallocation, hole punching, zeroing, collapsing
    /// and inserting ranges, as far as the backing filesystem does them (EOPNOTSUPP
    /// exactly where it does not).
    pub fn fallocate(&self, fh: Fh, offset: u64, length: u64, mode: i32) -> Result<()> {
        let h = self.handles.file(fh)?;
        if h.on_lower() {
            return Err(FsError::EBADF);
        }
        let (Ok(offset), Ok(length)) = (i64::try_from(offset), i64::try_from(length)) else {
            return Err(FsError::EFBIG);
        };
        nix::fcntl::fallocate(
            &*h.fd(),
            nix::fcntl::FallocateFlags::from_bits_retain(mode),
            offset,
            length,
        )?;
        Ok(())
    }

    /// lseek(2) with SEEK_DATA / SEEK_HOLE (the kernel answers the others itself),
    /// answered from the backing file.
    pub fn lseek(&self, fh: Fh, offset: i64, whence: i32) -> Result<i64> {
        let h = self.handles.file(fh)?;
        let fd = self.read_fd(&h)?;
        let whence = match whence {
            libc::SEEK_DATA => nix::unistd::Whence::SeekData,
            libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
            libc::SEEK_SET => nix::unistd::Whence::SeekSet,
            libc::SEEK_END => nix::unistd::Whence::SeekEnd,
            _ => return Err(FsError::EINVAL),
        };
        Ok(nix::unistd::lseek(&*fd, offset, whence)?)
    }

    pub fn release(&self, fh: Fh) {
        self.handles
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    pub fn fsync(&self, fh: Fh, datasync: bool) -> Result<()> {
        let h = self.handles.file(fh)?;
        let fd = h.fd();
        if datasync {
            nix::unistd::fdatasync(&*fd)?;
        } else {
            nix::unistd::fsync(&*fd)?;
        }
        Ok(())
    }

    /// Hands the entries of directory `id` after `offset` (0: from the start) to `add`,
    /// each with the offset to continue after it, until `add` says the reply is full.
    /// "." and ".." come first (offsets 1 and 2); each other entry's offset is its
    /// cookie in the listing (see `readdir.rs`), so a reader that continues after the
    /// directory changed neither skips nor repeats an entry that did not change. There
    /// is no open-directory state: the kernel opens directories without asking (it
    /// caches listings), and a listing is the directory's own, cached until it changes.
    pub fn readdir(
        &self,
        id: NodeId,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry) -> bool,
    ) -> Result<()> {
        let node = self.node(id)?;
        let listing = self.dir_listing(&node)?;
        let dot = node.id.0;
        let dotdot = node.read().parent().map_or(dot, |p| p.id().0);
        let dots = [(".", dot), ("..", dotdot)].map(|(name, ino)| DirEntry {
            name: name.into(),
            kind: FileKind::Directory,
            ino,
        });
        for (i, e) in dots.iter().enumerate().skip(offset.min(2) as usize) {
            if add(i as u64 + 1, e) {
                return Ok(());
            }
        }
        let start = listing.offsets.partition_point(|&o| o <= offset);
        for (o, e) in listing.offsets[start..]
            .iter()
            .zip(&listing.entries[start..])
        {
            if add(*o, e) {
                break;
            }
        }
        Ok(())
    }

    /// readdirplus: like `readdir`, with each entry looked up (counted as a kernel lookup,
    /// so `add` gets the entry and must say whether it was taken). An entry that vanished
    /// since the listing was made is left out.
    pub fn readdirplus(
        &self,
        id: NodeId,
        offset: u64,
        mut add: impl FnMut(u64, &DirEntry, Option<&Entry>) -> bool,
    ) -> Result<()> {
        let mut result = Ok(());
        self.readdir(id, offset, |next, e| {
            if e.name == "." || e.name == ".." {
                return add(next, e, None);
            }
            match self.lookup(id, &e.name) {
                Ok(entry) => {
                    let full = add(next, e, Some(&entry));
                    if full {
                        // Not sent: the kernel will not count this lookup.
                        self.nodes.forget(entry.id, 1);
                    }
                    full
                }
                Err(e) if e == FsError::ENOENT => false,
                Err(err) => {
                    // One damaged entry does not fail the listing: it is left out.
                    log::warn!("readdirplus: {:?}: {err}", e.name);
                    if result.is_ok() && err.context().is_none() {
                        result = Err(err);
                        return true;
                    }
                    false
                }
            }
        })?;
        result
    }

    /// fsync of a directory reaches its upper directory.
    pub fn fsyncdir(&self, id: NodeId) -> Result<()> {
        let node = self.node(id)?;
        let up = node.read().dir().and_then(|d| d.upper().cloned());
        if let Some(up) = up {
            let fd = open_readable_dir(&up)?;
            nix::unistd::fsync(&fd)?;
        }
        Ok(())
    }
}
