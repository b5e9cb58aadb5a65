//! Safe extraction of one layer tar into a directory, in kernel overlay format.
//!
//! [`unpack`] is a pure function of a byte stream (any `Read`: a file, a decompressor, a
//! network body) and a destination directory fd; it touches nothing else, so it can be
//! fuzzed and fed by a download. It reads the stream up to the tar's end-of-archive
//! marker; the caller drains the rest (the diff_id covers every byte).
//!
//! What it keeps: file types (regular, directory, symlink, hard link as a real hard link
//! within the layer, fifo, char and block devices), mode incl. setuid/setgid/sticky,
//! numeric uid/gid, mtime (PAX fractional too), PAX `SCHILY.xattr.*` xattrs (empty
//! values too), long names (GNU and PAX). Per entry the order is create → data → chown →
//! chmod → xattrs → times, because chown clears setuid bits and `security.capability`;
//! directory modes and times are applied at the end, deepest first (as GNU tar does), so
//! that a read-only directory can still be filled and creating children does not move
//! its mtime.
//!
//! Whiteouts are written in the store's [`Styles`] (kernel: char device 0/0 and
//! `trusted.overlay.opaque=y`), via [`crate::whiteout`], after all entries: an opaque
//! marker applies wherever it sits in the tar; a whiteout hides lower layers only, so a
//! name that this layer also creates is kept (and made opaque if it is a directory).
//!
//! Safety invariants: every operation is relative to `dest` or to a directory fd opened
//! beneath it; parents are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` (or an `O_NOFOLLOW` walk), so no symlink
//! planted by the layer is ever followed; names are cleaned lexically (leading `/` and
//! `./` dropped, `..` resolved, any escape refused); final components are created with
//! `O_EXCL`/`*at` calls that never follow links; hard links must name an existing
//! non-directory of this layer. Every refusal is an [`Error::Entry`] naming the entry.
//! Nothing here panics on any input.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::tarsplit::ContentSink;
use crate::error::{Error, Result};
use crate::sys::{self, At};
use crate::whiteout::{self, NameKind, Styles};

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
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// Options of one unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    pub styles: Styles,
    pub ownership: Ownership,
}

/// What one unpack produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    /// Tar entries applied (whiteouts and markers included, skipped ones not).
    pub entries: u64,
    /// Sum of the sizes of regular files.
    pub size: u64,
}

/// PAX prefix of extended attributes (GNU tar, Go's archive/tar, buildah, skopeo).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Copy buffer: large enough to amortise syscalls, small enough per parallel layer.
const COPY_BUF: usize = 256 << 10;
/// Directory fds kept open for parent lookups (entries of a directory tend to cluster).
const PARENT_CACHE: usize = 64;
/// Mode of directories created because an entry needs them and the tar has none.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Unpacks the tar stream `reader` into the directory `dest` (empty, owned by the caller).
pub fn unpack<R: Read>(
    reader: R,
    dest: BorrowedFd<'_>,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    unpack_recording(reader, dest, opts, None)
}

/// [`unpack`], telling `layout` where each regular file's content lies in the stream and
/// where on disk it goes (see `tarsplit.rs`).
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
        dirs: Vec::new(),
        whiteouts: Vec::new(),
        opaque: Vec::new(),
        buf: vec![0u8; COPY_BUF],
        stats: UnpackStats::default(),
        openat2: true,
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| Error::Tar { source: e })?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Tar { source: e })?;
        u.entry(&mut entry)?;
    }
    u.finish()?;
    Ok(u.stats)
}

/// A path inside the layer: cleaned components.
type Comps = Vec<Vec<u8>>;

struct DeferredDir {
    comps: Comps,
    mode: u32,
    atime: TimeSpec,
    mtime: TimeSpec,
}

/// A directory to create things in: the layer root, or a directory beneath it.
#[derive(Clone)]
enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Sub(Rc<OwnedFd>),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Root(b) => *b,
            DirFd::Sub(o) => o.as_fd(),
        }
    }
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    atime: TimeSpec,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: BorrowedFd<'a>,
    opts: &'a UnpackOptions,
    layout: Option<&'a dyn ContentSink>,
    cache: lru::LruCache<Vec<u8>, Rc<OwnedFd>>,
    dirs: Vec<DeferredDir>,
    whiteouts: Vec<(Comps, Vec<u8>)>,
    opaque: Vec<Comps>,
    buf: Vec<u8>,
    stats: UnpackStats,
    /// Cleared when the kernel lacks openat2 (before 5.6): the O_NOFOLLOW walk is used.
    openat2: bool,
    uid: u32,
    gid: u32,
}

/// Cleans a tar path: drops leading `/`, `.` and empty components, resolves `..`
/// lexically; `None` when it would climb above the layer root.
pub(crate) fn clean(raw: &[u8]) -> Option<Comps> {
    let mut out: Comps = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
}

pub(crate) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// `sec[.frac]` (PAX time) → TimeSpec.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nsec: i64 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    let (sec, nsec) = match (neg, nsec) {
        (false, n) => (sec, n),
        (true, 0) => (-sec, 0),
        (true, n) => (-sec - 1, 1_000_000_000 - n),
    };
    Some(TimeSpec::new(sec, nsec))
}

impl<'a> Unpacker<'a> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        use tar::EntryType as T;
        let etype = entry.header().entry_type();
        if matches!(
            etype,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = lossy(&raw);
        let comps =
            clean(&raw).ok_or_else(|| Error::entry(&name, "path escapes the layer (..)"))?;
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
                && let Some(target) = entry.link_name_bytes()
                && clean(&target).as_ref() == Some(&comps)
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
                    && etype != T::GNUSparse
                {
                    l.content(entry.raw_file_position(), entry.size(), &join(&comps));
                }
                self.regular(entry, &dir, fname, meta, &name)
            }
            T::Directory => {
                nix::sys::stat::mkdirat(&dir, fname, Mode::from_bits_truncate(0o700))
                    .map_err(|e| Error::entry_io(&name, "cannot create directory", errno_io(e)))?;
                self.directory_meta(dir, fname, comps.clone(), meta, &name)
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::entry(&name, "symlink without a target"))?;
                if target.is_empty() {
                    return Err(Error::entry(&name, "symlink with an empty target"));
                }
                nix::unistd::symlinkat(os(&target), &dir, fname)
                    .map_err(|e| Error::entry_io(&name, "cannot create symlink", errno_io(e)))?;
                self.node_meta(&dir, fname, meta, &name, false)
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::entry(&name, "hard link without a target"))?
                    .into_owned();
                self.hard_link(&dir, fname, &target, &name)
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
                    let h = entry.header();
                    let major = h.device_major().ok().flatten().unwrap_or(0);
                    let minor = h.device_minor().ok().flatten().unwrap_or(0);
                    (major, minor)
                };
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                match nix::sys::stat::mknodat(&dir, fname, kind, Mode::empty(), dev) {
                    Ok(()) => {}
                    Err(Errno::EPERM) if self.opts.ownership == Ownership::OverrideStat => {
                        return Err(Error::entry(
                            &name,
                            format!(
                                "device node {type_name} {major}:{minor} needs root to create (rootless import cannot keep it)"
                            ),
                        ));
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

    /// Reads mode, owner, times and xattrs of an entry.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta> {
        let bad = |what: &str, e: io::Error| Error::entry_io(name, format!("bad {what} field"), e);
        let h = entry.header();
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let uid = h.uid().map_err(|e| bad("uid", e))?;
        let gid = h.gid().map_err(|e| bad("gid", e))?;
        let hmtime = h.mtime().map_err(|e| bad("mtime", e))?;
        let mut mtime = TimeSpec::new(i64::try_from(hmtime).unwrap_or(i64::MAX), 0);
        let mut atime = None;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| bad("PAX", e))? {
            for ext in exts {
                let ext = ext.map_err(|e| bad("PAX", e))?;
                let key = ext.key_bytes();
                if let Some(x) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    let xname = OsString::from(os(x));
                    if whiteout::is_internal_xattr(&xname) {
                        log::warn!(
                            "entry {name:?}: dropping xattr {} (overlay metadata is never taken from an image)",
                            xname.to_string_lossy()
                        );
                        continue;
                    }
                    xattrs.push((xname, ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        mtime = t;
                    }
                } else if key == b"atime" {
                    atime = parse_pax_time(ext.value_bytes());
                }
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

    /// The directory `comps` (created 0755 if missing), for creating an entry in it.
    fn parent(&mut self, comps: &[Vec<u8>], name: &str) -> Result<DirFd<'a>> {
        if comps.is_empty() {
            return Ok(DirFd::Root(self.root));
        }
        let key = join(comps);
        if let Some(fd) = self.cache.get(&key) {
            return Ok(DirFd::Sub(Rc::clone(fd)));
        }
        let fd = self
            .resolve(comps, true)
            .map_err(|r| Error::entry(name, r))?
            .ok_or_else(|| Error::entry(name, "parent directory missing"))?;
        let fd = Rc::new(fd);
        self.cache.put(key, Rc::clone(&fd));
        Ok(DirFd::Sub(fd))
    }

    /// Opens directory `comps` (an `O_PATH` fd) beneath the root without following any
    /// symlink. `Ok(None)` when missing and `create` is false; `Err(reason)` when a
    /// component is a symlink or not a directory.
    fn resolve(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
    ) -> std::result::Result<Option<OwnedFd>, String> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let path = join(comps);
        if self.openat2 {
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
            match nix::fcntl::openat2(self.root, path.as_slice(), how) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::ENOENT) if !create => return Ok(None),
                Err(Errno::ENOENT) => {} // walk and create what is missing
                Err(Errno::ENOSYS) => self.openat2 = false,
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) | Err(Errno::EXDEV) => {} // walk: precise reason
                Err(Errno::EAGAIN) | Err(Errno::ENAMETOOLONG) | Err(Errno::E2BIG) => {}
                Err(e) => return Err(format!("cannot open parent directory: {e}")),
            }
        }
        let mut cur: Option<OwnedFd> = None;
        for (i, c) in comps.iter().enumerate() {
            let at: BorrowedFd<'_> = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.root,
            };
            let shown = || lossy(&join(&comps[..=i]));
            let next = match nix::fcntl::openat(at, os(c), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(
                        at,
                        os(c),
                        Mode::from_bits_truncate(IMPLICIT_DIR_MODE),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(format!("cannot create directory {:?}: {e}", shown()));
                        }
                    }
                    // The umask may have narrowed the mode.
                    let _ = nix::sys::stat::fchmodat(
                        at,
                        os(c),
                        Mode::from_bits_truncate(IMPLICIT_DIR_MODE),
                        FchmodatFlags::FollowSymlink,
                    );
                    nix::fcntl::openat(at, os(c), flags, Mode::empty())
                        .map_err(|e| format!("cannot open directory {:?}: {e}", shown()))?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    let is_link = nix::sys::stat::fstatat(at, os(c), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map(|st| {
                            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                        })
                        .unwrap_or(false);
                    return Err(if is_link {
                        format!(
                            "path goes through the symlink {:?} (writing through symlinks is refused)",
                            shown()
                        )
                    } else {
                        format!("{:?} is not a directory", shown())
                    });
                }
                Err(e) => return Err(format!("cannot open directory {:?}: {e}", shown())),
            };
            cur = Some(next);
        }
        Ok(cur)
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: &DirFd<'_>,
        fname: &OsStr,
        meta: Meta,
        name: &str,
    ) -> Result<()> {
        let fd = nix::fcntl::openat(
            dir,
            fname,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::entry_io(name, "cannot create file", errno_io(e)))?;
        let mut file = File::from(fd);
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Tar { source: e }),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| Error::entry_io(name, "cannot write file", e))?;
            written += n as u64;
        }
        self.stats.size += written;
        let fd = file.as_fd();
        match self.opts.ownership {
            Ownership::Chown => nix::unistd::fchown(
                fd,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
            )
            .map_err(|e| Error::entry_io(name, "cannot chown", errno_io(e)))?,
            Ownership::OverrideStat => self.override_stat(At::Fd(fd), &meta, name)?,
        }
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| Error::entry_io(name, "cannot chmod", errno_io(e)))?;
        self.xattrs(At::Fd(fd), &meta.xattrs, name)?;
        nix::sys::stat::futimens(fd, &meta.atime, &meta.mtime)
            .map_err(|e| Error::entry_io(name, "cannot set times", errno_io(e)))?;
        Ok(())
    }

    /// Owner, mode, xattrs and times of a non-regular, non-directory entry, by name.
    fn node_meta(
        &mut self,
        dir: &DirFd<'_>,
        fname: &OsStr,
        meta: Meta,
        name: &str,
        chmod: bool,
    ) -> Result<()> {
        match self.opts.ownership {
            Ownership::Chown => nix::unistd::fchownat(
                dir,
                fname,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::entry_io(name, "cannot chown", errno_io(e)))?,
            // user.* xattrs exist only on regular files and directories: the owner of a
            // rootless symlink, fifo or device is not kept.
            Ownership::OverrideStat => {}
        }
        if chmod {
            nix::sys::stat::fchmodat(
                dir,
                fname,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| Error::entry_io(name, "cannot chmod", errno_io(e)))?;
        }
        self.xattrs(At::Entry(dir.as_fd(), fname), &meta.xattrs, name)?;
        nix::sys::stat::utimensat(
            dir,
            fname,
            &meta.atime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| Error::entry_io(name, "cannot set times", errno_io(e)))?;
        Ok(())
    }

    /// Owner and xattrs of a directory now; mode and times at the end.
    fn directory_meta(
        &mut self,
        dir: DirFd<'_>,
        fname: &OsStr,
        comps: Comps,
        meta: Meta,
        name: &str,
    ) -> Result<()> {
        match self.opts.ownership {
            Ownership::Chown => nix::unistd::fchownat(
                &dir,
                fname,
                Some(Uid::from_raw(meta.uid as u32)),
                Some(Gid::from_raw(meta.gid as u32)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::entry_io(name, "cannot chown", errno_io(e)))?,
            Ownership::OverrideStat => {
                self.override_stat(At::Entry(dir.as_fd(), fname), &meta, name)?
            }
        }
        self.xattrs(At::Entry(dir.as_fd(), fname), &meta.xattrs, name)?;
        self.dirs.retain(|d| d.comps != comps);
        self.dirs.push(DeferredDir {
            comps,
            mode: meta.mode,
            atime: meta.atime,
            mtime: meta.mtime,
        });
        Ok(())
    }

    fn hard_link(
        &mut self,
        dir: &DirFd<'_>,
        fname: &OsStr,
        target: &[u8],
        name: &str,
    ) -> Result<()> {
        let tcomps = clean(target).ok_or_else(|| {
            Error::entry(
                name,
                format!("hard link target {:?} escapes the layer", lossy(target)),
            )
        })?;
        let Some((tlast, tparent)) = tcomps.split_last() else {
            return Err(Error::entry(name, "hard link to the layer root"));
        };
        let shown = lossy(target);
        let tdir = if tparent.is_empty() {
            DirFd::Root(self.root)
        } else {
            match self.resolve(tparent, false) {
                Ok(Some(fd)) => DirFd::Sub(Rc::new(fd)),
                Ok(None) => {
                    return Err(Error::entry(
                        name,
                        format!("hard link target {shown:?} does not exist in this layer"),
                    ));
                }
                Err(r) => {
                    return Err(Error::entry(
                        name,
                        format!("hard link target {shown:?}: {r}"),
                    ));
                }
            }
        };
        match nix::sys::stat::fstatat(&tdir, os(tlast), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                return Err(Error::entry(
                    name,
                    format!("hard link target {shown:?} is a directory"),
                ));
            }
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                return Err(Error::entry(
                    name,
                    format!("hard link target {shown:?} does not exist in this layer"),
                ));
            }
            Err(e) => {
                return Err(Error::entry_io(
                    name,
                    format!("hard link target {shown:?}"),
                    errno_io(e),
                ));
            }
        }
        nix::unistd::linkat(&tdir, os(tlast), dir, fname, AtFlags::empty())
            .map_err(|e| Error::entry_io(name, "cannot create hard link", errno_io(e)))
    }

    fn xattrs(&self, at: At<'_>, xattrs: &[(OsString, Vec<u8>)], name: &str) -> Result<()> {
        for (k, v) in xattrs {
            match sys::setxattr(at, k, v, 0) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    log::warn!(
                        "entry {name:?}: xattr {} not supported here, dropped",
                        k.to_string_lossy()
                    );
                }
                // Rootless: security.capability and trusted.* need privileges we lack.
                Err(e)
                    if e.raw_os_error() == Some(libc::EPERM)
                        && self.opts.ownership == Ownership::OverrideStat
                        && !k.as_bytes().starts_with(b"user.") =>
                {
                    log::warn!(
                        "entry {name:?}: xattr {} needs privileges (rootless), dropped",
                        k.to_string_lossy()
                    );
                }
                Err(e) => {
                    return Err(Error::entry_io(
                        name,
                        format!("cannot set xattr {}", k.to_string_lossy()),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rootless: records ownership the host cannot give us (regular files and
    /// directories only: other types cannot carry user.* xattrs).
    fn override_stat(&self, at: At<'_>, meta: &Meta, name: &str) -> Result<()> {
        if meta.uid == u64::from(self.uid) && meta.gid == u64::from(self.gid) {
            return Ok(());
        }
        let v = format!("{}:{}:0{:o}", meta.uid, meta.gid, meta.mode);
        sys::setxattr(at, OsStr::new(OVERRIDE_STAT_XATTR), v.as_bytes(), 0)
            .map_err(|e| Error::entry_io(name, "cannot record ownership", e))
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
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest first; the sort is stable so equal depths keep tar order.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.comps.len()));
        for d in dirs {
            let shown = lossy(&join(&d.comps));
            let (parent, fname): (DirFd<'_>, Vec<u8>) = match d.comps.split_last() {
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

    /// An existing directory of the layer opened for reading (not `O_PATH`: fd-based
    /// xattr calls such as `setxattrat(AT_EMPTY_PATH)` refuse `O_PATH` fds with EBADF).
    fn open_dir_rdonly(&mut self, comps: &[Vec<u8>]) -> Option<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match comps.split_last() {
            None => nix::fcntl::openat(self.root, ".", flags, Mode::empty()).ok(),
            Some((last, parent)) => {
                let p = self.dir_at(parent)?;
                nix::fcntl::openat(&p, os(last), flags, Mode::empty()).ok()
            }
        }
    }

    /// An existing directory of the layer, or `None`.
    fn dir_at(&mut self, comps: &[Vec<u8>]) -> Option<DirFd<'a>> {
        if comps.is_empty() {
            return Some(DirFd::Root(self.root));
        }
        match self.resolve(comps, false) {
            Ok(Some(fd)) => Some(DirFd::Sub(Rc::new(fd))),
            _ => None,
        }
    }
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never following symlinks.
pub fn remove_entry(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return Ok(nix::unistd::unlinkat(
            dir,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?);
    }
    let open = |d: BorrowedFd<'_>| {
        nix::fcntl::openat(
            d,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open(dir) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => {
            // Rootless: a directory without read/search permission for us.
            nix::sys::stat::fchmodat(dir, name, Mode::S_IRWXU, FchmodatFlags::FollowSymlink)?;
            open(dir)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut names: Vec<OsString> = Vec::new();
    {
        let mut d = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for e in d.iter() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
    }
    for n in names {
        remove_entry(fd.as_fd(), &n)?;
    }
    Ok(nix::unistd::unlinkat(
        dir,
        name,
        nix::unistd::UnlinkatFlags::RemoveDir,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        let c = |s: &str| clean(s.as_bytes()).map(|v| lossy(&join(&v)));
        assert_eq!(c("./a/b/").as_deref(), Some("a/b"));
        assert_eq!(c("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(c("a/../b").as_deref(), Some("b"));
        assert_eq!(c("a/../../b"), None);
        assert_eq!(c("../x"), None);
        assert_eq!(c("./").as_deref(), Some(""));
    }

    /// Truncated and bit-flipped layers give errors or odd trees, never a panic, and
    /// never anything outside the destination.
    #[test]
    fn corrupt_input_never_panics() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("d/", tar::EntryType::Directory, b"", None);
        add("d/f", tar::EntryType::Regular, b"hello world", None);
        add("d/l", tar::EntryType::Symlink, b"", Some("f"));
        add("d/h", tar::EntryType::Link, b"", Some("d/f"));
        add(".wh.x", tar::EntryType::Regular, b"", None);
        add("d/.wh..wh..opq", tar::EntryType::Regular, b"", None);
        let good = b.into_inner().unwrap();
        let base = tempfile::tempdir().unwrap();
        let opts = UnpackOptions {
            styles: whiteout::Styles {
                whiteout: whiteout::WhiteoutStyle::WhFile,
                opaque: whiteout::OpaqueStyle::WhFile,
            },
            ownership: Ownership::OverrideStat,
        };
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..300 {
            let mut input = good.clone();
            if i % 3 == 0 {
                input.truncate((next() as usize) % good.len());
            } else {
                for _ in 0..(1 + next() % 8) {
                    let at = (next() as usize) % input.len();
                    input[at] = next() as u8;
                }
            }
            let dest = tempfile::tempdir_in(base.path()).unwrap();
            let fd = std::fs::File::open(dest.path()).unwrap();
            let _ = unpack(&input[..], fd.as_fd(), &opts);
        }
        // Everything stayed inside the per-run directories.
        assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
        let t = parse_pax_time(b"1700000000.123456789123").unwrap();
        assert_eq!(t.tv_nsec(), 123_456_789);
        let t = parse_pax_time(b"-1.25").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
        assert!(parse_pax_time(b"abc").is_none());
        assert!(parse_pax_time(b"1.2x").is_none());
    }
}
