//! Safe extraction of one layer tar into a directory, in kernel overlay format.
//!
//! [`unpack`] is a pure function of a byte stream (any `Read`: a file, a decompressor, a
//! network body) and a destination directory fd; it touches nothing else, so it can be
//! fuzzed and fed by a download. It reads the stream up to the tar's end-of-archive
//! marker; the caller drains the rest (the diff_id covers every byte). The tar is framed
//! by [`crate::tar_reader`], which bounds names, PAX headers and sparse maps before
//! reading them.
//!
//! What it keeps: file types (regular, directory, symlink, hard link as a real hard link
//! within the layer, fifo, char and block devices), mode incl. setuid/setgid/sticky,
//! numeric uid/gid, mtime (PAX fractional too), PAX `SCHILY.xattr.*` xattrs (empty
//! values too), long names (GNU and PAX), sparse files (GNU and PAX sparse: holes stay
//! holes). Per entry the order is create → data → chown → chmod → xattrs → times,
//! because chown clears setuid bits and `security.capability`; directory modes and times
//! are applied at the end, deepest first (as GNU tar does), so that a read-only directory
//! can still be filled and creating children does not move its mtime.
//!
//! Whiteouts are written in the store's [`Styles`] (kernel: char device 0/0 and
//! `trusted.overlay.opaque=y`), via [`crate::whiteout`], after all entries: an opaque
//! marker applies wherever it sits in the tar; a whiteout hides lower layers only, so a
//! name that this layer also creates is kept (and made opaque if it is a directory).
//!
//! Bounds: the apparent sizes of a layer's files (sparse files count their full size)
//! add up to at most [`UnpackOptions::max_size`] ([`DEFAULT_MAX_LAYER_SIZE`] unless the
//! user raises it); an entry that would pass it is refused before it is created. Owners
//! must be valid 32-bit ids: a uid or gid of 2^32 − 1 or more would wrap (or mean "leave
//! unchanged" to chown) and is refused rather than kept with its setuid bit on the wrong
//! owner.
//!
//! Safety invariants: every operation is relative to `dest` or to a directory fd opened
//! beneath it; parents are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` (or an `O_NOFOLLOW` walk), so no symlink
//! planted by the layer is ever followed; names are cleaned lexically (leading `/` and
//! `./` dropped, `..` resolved, any escape refused); final components are created with
//! `O_EXCL`/`*at` calls that never follow links; hard links must name an existing
//! non-directory of this layer. Every refusal is an [`Error::Entry`] naming the entry.
//! Nothing here panics on any input.
//!
//! Layout: [`unpack_recording`] also tells a [`ContentSink`] (the store's tar-layout
//! recorder, `store::tarsplit`) where the content of each regular file lies in the stream
//! (the entry's data offset as the bounded reader framed it) and which cleaned path of the
//! layer holds it, so that the exact tar can be played back from the unpacked files. Only
//! what is on disk byte for byte is referenced: a sparse entry's data is not the file's
//! bytes (its map, its holes) and stays raw; an entry that replaces an earlier one of the
//! same name (whose content is then gone) makes the recorder give up.
//!
//! Files: this one drives the entries and finishes the layer; `paths` cleans names and
//! resolves directories beneath the root; `create` makes each kind of entry.

mod create;
mod paths;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::error::{Error, Result};
use crate::tar_reader::{Entry, TarReader};
use crate::whiteout::{self, NameKind, Styles};
use create::parse_pax_time;
pub use paths::remove_entry;
use paths::{Comps, DirFd, errno_io, lossy, os};
pub(crate) use paths::{clean, join};

/// Told where each regular file's content lies in the tar stream and which cleaned path
/// of the layer holds it (the store's tar-layout recorder, `store::tarsplit`, implements
/// it; defined here so that the unpacker depends on no recorder).
pub trait ContentSink {
    /// `size` bytes at stream offset `offset` are the content of the file at `path`.
    fn content(&self, offset: u64, size: u64, path: &[u8]);
    /// The layout cannot be recorded (why): the recorder gives up.
    fn invalidate(&self, why: &str);
}

/// How file ownership is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// chown to the tar's numeric ids (needs root).
    Chown,
    /// Rootless: files stay ours; ownership and mode the host refuses are kept in
    /// [`OVERRIDE_STAT_XATTR`] as `uid:gid:mode`, as fuse-overlayfs reads them.
    OverrideStat,
}

/// fuse-overlayfs / containers-storage's xattr for ownership kept in metadata.
pub const OVERRIDE_STAT_XATTR: &str = crate::ownership::XATTR;

/// The default bound on what one layer may unpack to (sum of its files' apparent sizes):
/// 64 GiB, several times the largest layers of real images (CUDA and ML images reach
/// 10–20 GiB), far below what a compressed bomb could ask for.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

/// Options of one unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub styles: Styles,
    pub ownership: Ownership,
    /// Most bytes the layer's files may add up to (apparent sizes, holes included).
    pub max_size: u64,
}

/// What one unpack produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    /// Tar entries applied (whiteouts and markers included, skipped ones not).
    pub entries: u64,
    /// Sum of the (apparent) sizes of regular files.
    pub size: u64,
}

/// PAX prefix of extended attributes (GNU tar, Go's archive/tar, buildah, skopeo).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Copy buffer: large enough to amortise syscalls, small enough per parallel layer.
const COPY_BUF: usize = 256 << 10;
/// Directory fds kept open for parent lookups (entries of a directory tend to cluster).
const PARENT_CACHE: usize = 64;
/// Largest valid uid/gid: 2^32 − 1 is `(uid_t)-1`, "leave unchanged" to chown.
const MAX_ID: u64 = u32::MAX as u64 - 1;

/// Unpacks the tar stream `reader` into the directory `dest` (empty, owned by the caller).
pub fn unpack<R: Read>(
    reader: R,
    dest: BorrowedFd<'_>,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    unpack_recording(reader, dest, opts, None)
}

/// [`unpack`], telling `layout` where each regular file's content lies in the stream and
/// where in the layer it goes (see the module docs and `store::tarsplit`).
pub fn unpack_recording<R: Read>(
    reader: R,
    dest: BorrowedFd<'_>,
    opts: &UnpackOptions,
    layout: Option<&dyn ContentSink>,
) -> Result<UnpackStats> {
    let mut u = Unpacker {
        root: dest,
        opts,
        layout,
        cache: lru::LruCache::new(NonZeroUsize::new(PARENT_CACHE).unwrap_or(NonZeroUsize::MIN)),
        dirs: HashMap::new(),
        whiteouts: Vec::new(),
        opaque: Vec::new(),
        buf: vec![0u8; COPY_BUF],
        stats: UnpackStats::default(),
        openat2: true,
    };
    let mut tar = TarReader::new(reader);
    while let Some(entry) = tar.next_entry()? {
        u.entry(&mut tar, &entry)?;
    }
    u.finish()?;
    Ok(u.stats)
}

/// Mode and times of a directory, applied at the end.
struct DeferredDir {
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    opts: &'a UnpackOptions,
    /// Told where file contents lie in the stream (layout recording), when set.
    layout: Option<&'a dyn ContentSink>,
    cache: lru::LruCache<Vec<u8>, Rc<OwnedFd>>,
    /// Directories of the tar by joined path (the last entry of a path wins): one
    /// allocation each, not one per component, which a deep tree would make quadratic.
    dirs: HashMap<Vec<u8>, DeferredDir>,
    whiteouts: Vec<(Comps, Vec<u8>)>,
    opaque: Vec<Comps>,
    buf: Vec<u8>,
    stats: UnpackStats,
    /// Cleared when the kernel lacks openat2 (before 5.6): the O_NOFOLLOW walk is used.
    openat2: bool,
}

impl<'a> Unpacker<'a> {
    fn entry<R: Read>(&mut self, tar: &mut TarReader<R>, entry: &Entry) -> Result<()> {
        use EntryType as T;
        let etype = entry.kind;
        let name = lossy(&entry.path);
        let comps =
            clean(&entry.path).ok_or_else(|| Error::entry(&name, "path escapes the layer (..)"))?;
        let meta = self.meta(entry, &name)?;

        // AUFS bookkeeping (`.wh..wh.plnk/…`) is never content, wherever it sits.
        if comps
            .iter()
            .any(|c| whiteout::classify(os(c)) == NameKind::AufsMeta)
        {
            log::debug!("skipping AUFS metadata entry {name:?}");
            return Ok(());
        }
        let Some((last, parent)) = comps.split_last() else {
            // The layer root itself (`./`).
            if etype != T::Directory {
                return Err(Error::entry(
                    &name,
                    "names the layer root but is not a directory",
                ));
            }
            self.stats.entries += 1;
            return self.directory_meta(
                DirFd::Root(self.root),
                OsStr::new("."),
                Vec::new(),
                meta,
                &name,
            );
        };
        for c in parent {
            if whiteout::classify(os(c)) != NameKind::Entry {
                return Err(Error::entry(
                    &name,
                    "a whiteout name is used as a directory (whiteouts cannot have children)",
                ));
            }
        }
        match whiteout::classify(os(last)) {
            NameKind::Entry => {}
            NameKind::Opaque => {
                self.parent(parent, &name)?;
                self.opaque.push(parent.to_vec());
                self.stats.entries += 1;
                return Ok(());
            }
            NameKind::Whiteout(target) => {
                let target = target.as_bytes().to_vec();
                self.parent(parent, &name)?;
                self.whiteouts.push((parent.to_vec(), target));
                self.stats.entries += 1;
                return Ok(());
            }
            NameKind::Invalid => {
                return Err(Error::entry(
                    &name,
                    "invalid whiteout name (nothing after .wh.)",
                ));
            }
            NameKind::AufsMeta => return Ok(()),
        }

        let dir = self.parent(parent, &name)?;
        let fname = os(last);
        // An existing entry (an earlier one of the same path: last one wins).
        let existing = match nix::sys::stat::fstatat(&dir, fname, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(Error::entry_io(&name, "cannot inspect", errno_io(e))),
        };
        if let Some(kind) = existing {
            let is_dir = kind == SFlag::S_IFDIR;
            if is_dir && etype == T::Directory {
                self.stats.entries += 1;
                return self.directory_meta(dir, fname, comps.clone(), meta, &name);
            }
            if etype == T::Link
                && let Some(target) = &entry.link
                && clean(target).as_ref() == Some(&comps)
            {
                // A hard link to itself: already there.
                return Ok(());
            }
            if let Some(l) = self.layout {
                l.invalidate("an entry replaces an earlier one of the same name");
            }
            remove_entry(dir.as_fd(), fname).map_err(|e| {
                Error::entry_io(&name, "cannot replace an earlier entry of the same name", e)
            })?;
            if is_dir {
                // Cached fds may point into the removed tree.
                self.cache.clear();
            }
        }

        self.stats.entries += 1;
        match etype {
            T::Regular | T::Continuous | T::GNUSparse => {
                // A sparse entry's bytes in the stream are not the file's: kept raw.
                if let Some(l) = self.layout
                    && entry.sparse.is_none()
                {
                    l.content(entry.data_offset, entry.size, &join(&comps));
                }
                self.regular(tar, entry, &dir, fname, meta, &name)
            }
            T::Directory => {
                nix::sys::stat::mkdirat(&dir, fname, Mode::from_bits_truncate(0o700))
                    .map_err(|e| Error::entry_io(&name, "cannot create directory", errno_io(e)))?;
                self.directory_meta(dir, fname, comps.clone(), meta, &name)
            }
            T::Symlink => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| Error::entry(&name, "symlink without a target"))?;
                if target.is_empty() {
                    return Err(Error::entry(&name, "symlink with an empty target"));
                }
                nix::unistd::symlinkat(os(target), &dir, fname)
                    .map_err(|e| Error::entry_io(&name, "cannot create symlink", errno_io(e)))?;
                self.node_meta(&dir, fname, meta, &name, false)
            }
            T::Link => {
                let target = entry
                    .link
                    .as_deref()
                    .ok_or_else(|| Error::entry(&name, "hard link without a target"))?;
                self.hard_link(&dir, fname, target, &name)
            }
            T::Char | T::Block | T::Fifo => {
                let (kind, type_name) = match etype {
                    T::Char => (SFlag::S_IFCHR, "char"),
                    T::Block => (SFlag::S_IFBLK, "block"),
                    _ => (SFlag::S_IFIFO, "pipe"),
                };
                let (major, minor) = if etype == T::Fifo {
                    (0, 0)
                } else {
                    let h = &entry.header;
                    let major = h.device_major().ok().flatten().unwrap_or(0);
                    let minor = h.device_minor().ok().flatten().unwrap_or(0);
                    (major, minor)
                };
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                match nix::sys::stat::mknodat(&dir, fname, kind, Mode::empty(), dev) {
                    Ok(()) => {}
                    // Rootless: an empty regular file whose record names the device, as
                    // containers-storage keeps one; the union shows it as the device.
                    Err(Errno::EPERM) if self.opts.ownership == Ownership::OverrideStat => {
                        let fd = nix::fcntl::openat(
                            &dir,
                            fname,
                            nix::fcntl::OFlag::O_CREAT
                                | nix::fcntl::OFlag::O_EXCL
                                | nix::fcntl::OFlag::O_WRONLY
                                | nix::fcntl::OFlag::O_NOFOLLOW
                                | nix::fcntl::OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o600),
                        )
                        .map_err(|e| {
                            Error::entry_io(
                                &name,
                                format!("cannot keep device node {type_name} {major}:{minor}"),
                                errno_io(e),
                            )
                        })?;
                        let k = if etype == T::Char {
                            crate::union::FileKind::CharDevice
                        } else {
                            crate::union::FileKind::BlockDevice
                        };
                        let o = crate::ownership::Override::device(
                            meta.uid,
                            meta.gid,
                            meta.mode,
                            k,
                            (major, minor),
                        );
                        crate::ownership::write(crate::sys::At::Fd(fd.as_fd()), &o)
                            .map_err(|e| Error::entry_io(&name, "cannot record the device", e))?;
                        drop(fd);
                        return self.node_meta(&dir, fname, meta, &name, true);
                    }
                    Err(e) => {
                        return Err(Error::entry_io(
                            &name,
                            "cannot create device node",
                            errno_io(e),
                        ));
                    }
                }
                self.node_meta(&dir, fname, meta, &name, true)
            }
            other => Err(Error::entry(
                &name,
                format!("unsupported tar entry type {:?}", other.as_byte() as char),
            )),
        }
    }

    /// Mode, owner, times and xattrs of an entry; refuses owners that are not valid ids.
    fn meta(&self, entry: &Entry, name: &str) -> Result<Meta> {
        let bad =
            |what: &str, e: std::io::Error| Error::entry_io(name, format!("bad {what} field"), e);
        let h = &entry.header;
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let id = |what: &str, v: u64| -> Result<u32> {
            match u32::try_from(v) {
                Ok(v) if u64::from(v) <= MAX_ID => Ok(v),
                _ => Err(Error::entry(
                    name,
                    format!("{what} {v} is out of range (owners are 32-bit ids up to {MAX_ID})"),
                )),
            }
        };
        let uid = id("uid", entry.uid)?;
        let gid = id("gid", entry.gid)?;
        let hmtime = h.mtime().map_err(|e| bad("mtime", e))?;
        let mut mtime = TimeSpec::new(i64::try_from(hmtime).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        for (key, value) in &entry.pax {
            if let Some(x) = key.strip_prefix(PAX_XATTR_PREFIX) {
                let xname = OsString::from(os(x));
                if whiteout::is_internal_xattr(&xname) {
                    log::warn!(
                        "entry {name:?}: dropping xattr {} (overlay metadata is never taken from an image)",
                        xname.to_string_lossy()
                    );
                    continue;
                }
                xattrs.retain(|(k, _)| *k != xname);
                xattrs.push((xname, value.clone()));
            } else if key == b"mtime" {
                if let Some(t) = parse_pax_time(value) {
                    mtime = t;
                }
            } else if key == b"atime" {
                atime = parse_pax_time(value);
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            atime: atime.unwrap_or(mtime),
            mtime,
            xattrs,
        })
    }

    /// Whiteouts and opaque markers, then directory modes and times, deepest first.
    fn finish(&mut self) -> Result<()> {
        let styles = self.opts.styles;
        let whiteouts = std::mem::take(&mut self.whiteouts);
        for (parent, target) in whiteouts {
            let mut full = parent.clone();
            full.push(target.clone());
            let shown = lossy(&join(&full));
            let dir = match self.dir_at(&parent) {
                Some(d) => d,
                None => continue, // its directory was replaced by a non-directory later on
            };
            match nix::sys::stat::fstatat(&dir, os(&target), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    // The layer both deletes and creates the name: it hides the lower one
                    // already; a directory must not show the lower one's children.
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                        self.opaque.push(full);
                    }
                }
                Err(Errno::ENOENT) => {
                    whiteout::create_whiteout(dir.as_fd(), os(&target), styles.whiteout)
                        .map_err(|e| Error::entry_io(&shown, "cannot create whiteout", e))?;
                }
                Err(e) => return Err(Error::entry_io(&shown, "cannot inspect", errno_io(e))),
            }
        }
        let opaque = std::mem::take(&mut self.opaque);
        for comps in opaque {
            let shown = lossy(&join(&comps));
            let Some(dir) = self.open_dir_rdonly(&comps) else {
                continue;
            };
            whiteout::set_opaque(dir.as_fd(), styles.opaque)
                .map_err(|e| Error::entry_io(&shown, "cannot mark directory opaque", e))?;
        }
        let depth =
            |p: &[u8]| p.iter().filter(|b| **b == b'/').count() + usize::from(!p.is_empty());
        let mut dirs: Vec<(usize, Vec<u8>, DeferredDir)> = std::mem::take(&mut self.dirs)
            .into_iter()
            .map(|(p, d)| (depth(&p), p, d))
            .collect();
        // Deepest first (then by name, so that runs are reproducible).
        dirs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, joined, d) in dirs {
            let comps: Comps = clean(&joined).unwrap_or_default();
            let shown = lossy(&joined);
            let (parent, fname): (DirFd<'_>, Vec<u8>) = match comps.split_last() {
                None => (DirFd::Root(self.root), b".".to_vec()),
                Some((last, parent)) => match self.dir_at(parent) {
                    Some(p) => (p, last.clone()),
                    None => continue,
                },
            };
            match nix::sys::stat::fstatat(&parent, os(&fname), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {}
                _ => continue, // replaced by a non-directory later in the tar
            }
            nix::sys::stat::fchmodat(
                &parent,
                os(&fname),
                Mode::from_bits_truncate(d.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| Error::entry_io(&shown, "cannot chmod directory", errno_io(e)))?;
            nix::sys::stat::utimensat(
                &parent,
                os(&fname),
                &d.atime,
                &d.mtime,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| Error::entry_io(&shown, "cannot set directory times", errno_io(e)))?;
        }
        Ok(())
    }
}
