//! A layer directory of the store as an OCI layer tar: what `save` writes for a layer
//! whose original tar has no recorded layout (see `tarsplit.rs`).
//!
//! The store keeps whiteouts and opaque directories in the kernel's spelling; a layer tar
//! spells them as files (image-spec layer.md). [`LayerDirTree`] presents `diff/` to
//! [`crate::tar_writer`] (as [`crate::tar_writer::Options::TREE`]) with that translation, asking [`crate::whiteout`] for every
//! spelling: a char 0/0 device `NAME` becomes an empty file `.wh.NAME`, a directory marked
//! opaque gets an empty `.wh..wh..opq` inside it, `.wh.` files of a layer stored in that
//! dialect stay as they are, the union's own xattrs are left out, and ownership kept
//! aside by a rootless unpack (`user.containers.override_stat`) is presented as the
//! entry's owner and mode.
//!
//! Such a tar is the layer's content but, in general, not its original bytes (entry
//! order, header fields and padding of the tool that wrote it are not kept), so its
//! sha256 is checked against the diff_id before it counts as the layer.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use super::unpack::OVERRIDE_STAT_XATTR;
use crate::sys::{self, At};
use crate::tar_writer::{self, Content, Leaf, Source, Tree};
use crate::union::FileKind;
use crate::whiteout;

/// A node: the layer root, an entry of a directory, or a marker made up for the tar.
pub enum LayerNode {
    Root(Rc<OwnedFd>),
    Entry {
        dir: Rc<OwnedFd>,
        name: OsString,
        st: FileStat,
    },
    Marker(Leaf),
}

/// `diff/` of a layer, read as a layer tar's entries.
pub struct LayerDirTree {
    root: Rc<OwnedFd>,
}

impl LayerDirTree {
    pub fn open(diff: &Path) -> io::Result<LayerDirTree> {
        let fd = nix::fcntl::open(
            diff,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(LayerDirTree { root: Rc::new(fd) })
    }

    fn at<'n>(n: &'n LayerNode) -> Option<At<'n>> {
        match n {
            LayerNode::Root(fd) => Some(At::Fd(fd.as_fd())),
            LayerNode::Entry { dir, name, .. } => Some(At::Entry(dir.as_fd(), name)),
            LayerNode::Marker(_) => None,
        }
    }
}

/// An empty regular file standing for a whiteout or an opaque marker, with the owner,
/// mode and time of what it stands for.
fn marker(like: &FileStat, perm: u32) -> Leaf {
    Leaf {
        kind: FileKind::Regular,
        perm,
        size: 0,
        rdev: (0, 0),
        ino: 0,
        nlink: 1,
        ..Leaf::of_stat(like)
    }
}

impl Tree for LayerDirTree {
    type Dir = Rc<OwnedFd>;

    fn root(&self) -> io::Result<LayerNode> {
        Ok(LayerNode::Root(Rc::clone(&self.root)))
    }

    fn stat(&self, n: &LayerNode) -> io::Result<Leaf> {
        let st = match n {
            LayerNode::Marker(s) => return Ok(*s),
            LayerNode::Root(fd) => nix::sys::stat::fstat(fd.as_fd())?,
            LayerNode::Entry { st, .. } => *st,
        };
        let mut out = Leaf::of_stat(&st);
        if let Some(at) = Self::at(n)
            && matches!(out.kind, FileKind::Regular | FileKind::Directory)
            && let Some(o) = crate::ownership::read(at)
            && o.applies_to(out.kind)
        {
            (out.uid, out.gid, out.perm) = (u64::from(o.uid), u64::from(o.gid), o.perm);
            if let Some((kind, rdev)) = o.kept_device(out.kind) {
                (out.kind, out.rdev, out.size) = (kind, rdev, 0);
            }
        }
        Ok(out)
    }

    fn open_dir(&self, n: LayerNode) -> io::Result<Rc<OwnedFd>> {
        match n {
            LayerNode::Root(fd) => Ok(fd),
            LayerNode::Entry { dir, name, .. } => {
                Ok(Rc::new(crate::fdtree::open_dir_at(dir.as_fd(), &name)?))
            }
            LayerNode::Marker(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }

    /// The entries' names, a whiteout device `NAME` as `.wh.NAME`, and `.wh..wh..opq`
    /// for a directory marked opaque (unless it has that file already).
    fn names(&self, dir: &Rc<OwnedFd>) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for e in crate::fdtree::entries(dir.as_fd())? {
            let st = nix::sys::stat::fstatat(
                dir.as_fd(),
                e.name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
            if whiteout::is_whiteout_device(&st) {
                out.push(whiteout::whiteout_file_name(&e.name));
            } else {
                out.push(e.name);
            }
        }
        let has_marker = out
            .iter()
            .any(|n| whiteout::classify(n) == whiteout::NameKind::Opaque);
        if !has_marker && whiteout::has_opaque_xattr(At::Fd(dir.as_fd())).unwrap_or(false) {
            out.push(OsString::from(whiteout::OPAQUE_MARKER));
        }
        Ok(out)
    }

    /// Entry `name` as [`LayerDirTree::names`] named it: an entry of the directory, or a
    /// marker standing for a whiteout device or for the opaque mark.
    fn child(&self, dir: &Rc<OwnedFd>, name: &OsStr) -> io::Result<Option<LayerNode>> {
        let at = |n: &OsStr| match nix::sys::stat::fstatat(
            dir.as_fd(),
            n,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some(st)),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        };
        if let Some(st) = at(name)? {
            // A whiteout device is only ever named as its `.wh.` file.
            return Ok(
                (!whiteout::is_whiteout_device(&st)).then(|| LayerNode::Entry {
                    dir: Rc::clone(dir),
                    name: name.to_os_string(),
                    st,
                }),
            );
        }
        Ok(match whiteout::classify(name) {
            whiteout::NameKind::Opaque
                if whiteout::has_opaque_xattr(At::Fd(dir.as_fd())).unwrap_or(false) =>
            {
                // (the directory's owner, mode and time, as Docker writes the marker)
                let st = nix::sys::stat::fstat(dir.as_fd())?;
                Some(LayerNode::Marker(marker(&st, st.st_mode & 0o777)))
            }
            // (mode 0600, as Docker writes whiteouts from overlay2)
            whiteout::NameKind::Whiteout(target) => at(target)?
                .filter(whiteout::is_whiteout_device)
                .map(|st| LayerNode::Marker(marker(&st, 0o600))),
            _ => None,
        })
    }
}

impl Source for LayerDirTree {
    type Node = LayerNode;

    fn read_link(&self, n: &LayerNode) -> io::Result<Vec<u8>> {
        match n {
            LayerNode::Entry { dir, name, .. } => {
                Ok(nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str())?
                    .as_bytes()
                    .to_vec())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn xattrs(&self, n: &LayerNode) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let Some(at) = Self::at(n) else {
            return Ok(Vec::new());
        };
        let names = match sys::listxattr(at) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for name in names {
            if whiteout::is_internal_xattr(&name) || name == OVERRIDE_STAT_XATTR {
                continue;
            }
            if let Some(v) = sys::getxattr(at, &name)? {
                out.push((name, v));
            }
        }
        Ok(out)
    }

    fn open(&self, n: &LayerNode) -> io::Result<Content<'_>> {
        match n {
            // (listed as a regular file; what is there now is checked before it is opened,
            // so a FIFO cannot hang `save`; the tree writer names the entry)
            LayerNode::Entry { dir, name, .. } => {
                let (f, st) = crate::regular::open_at(dir.as_fd(), name)?;
                Ok(Content {
                    data: Box::new(io::BufReader::with_capacity(256 << 10, f)),
                    size: st.st_size as u64,
                })
            }
            _ => Ok(Content {
                data: Box::new(io::empty()),
                size: 0,
            }),
        }
    }
}

/// The layer tar of directory `diff` as a stream: written by [`crate::tar_writer`]
/// on a thread of its own into a bounded pipe, so it is never whole in memory.
pub fn stream(diff: OwnedFd) -> io::Result<impl Read + Send + use<>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_CHUNKS);
    std::thread::Builder::new()
        .name("layer-tar".into())
        .spawn(move || {
            run_piped(&tx, |w| {
                let tree = LayerDirTree {
                    root: Rc::new(diff),
                };
                tar_writer::write_tree(&tree, w, tar_writer::Options::TREE).map(|_| ())
            })
        })?;
    Ok(PipeReader::new(rx))
}

/// What `write` writes, as a stream: `write` runs on a thread of `scope` (so it may
/// borrow), into a bounded pipe; its error is the reader's error.
pub fn pipe_scoped<'scope, F>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    write: F,
) -> io::Result<PipeReader>
where
    F: FnOnce(&mut dyn io::Write) -> io::Result<()> + Send + 'scope,
{
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPE_CHUNKS);
    std::thread::Builder::new()
        .name("layer-tar".into())
        .spawn_scoped(scope, move || run_piped(&tx, write))?;
    Ok(PipeReader::new(rx))
}

/// Runs `write` into the pipe `tx`, then sends what is left, or the error.
fn run_piped(
    tx: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) {
    let mut w = PipeWriter {
        tx,
        buf: Vec::with_capacity(PIPE_CHUNK),
    };
    if let Err(e) = write(&mut w).and_then(|()| w.send()) {
        let _ = tx.send(Err(e));
    }
}

const PIPE_CHUNK: usize = 1 << 20;
const PIPE_CHUNKS: usize = 4;

struct PipeWriter<'a> {
    tx: &'a std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl PipeWriter<'_> {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
        self.tx
            .send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl io::Write for PipeWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(PIPE_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == PIPE_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end of a pipe a writer thread fills (see [`pipe_scoped`]).
pub struct PipeReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl PipeReader {
    fn new(rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> PipeReader {
        PipeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The writer is done.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    /// Kernel-format whiteouts and opaque directories come out as `.wh.` entries, and
    /// overlay xattrs stay out (needs root: char 0/0 and trusted.* xattrs).
    #[test]
    fn kernel_spellings_become_wh_entries() {
        if !crate::sys::is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir(d.join("opq")).unwrap();
        std::fs::write(d.join("opq/f"), b"x").unwrap();
        let dir = File::open(d.join("opq")).unwrap();
        whiteout::set_opaque(dir.as_fd(), whiteout::Styles::KERNEL.opaque).unwrap();
        let root = File::open(d).unwrap();
        whiteout::create_whiteout(
            root.as_fd(),
            OsStr::new("gone"),
            whiteout::Styles::KERNEL.whiteout,
        )
        .unwrap();
        let mut out = Vec::new();
        let tree = LayerDirTree::open(d).unwrap();
        tar_writer::write_tree(&tree, &mut out, tar_writer::Options::TREE).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            let mut e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            if let Some(x) = e.pax_extensions().unwrap() {
                for x in x {
                    assert!(!x.unwrap().key().unwrap().contains("overlay"));
                }
            }
        }
        assert_eq!(names, [".wh.gone", "opq/", "opq/.wh..wh..opq", "opq/f"]);
    }
}
