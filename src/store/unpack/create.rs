//! Creating each kind of entry: regular files (sparse ones with their holes), directories,
//! symlinks, hard links, device nodes and fifos, with owner, mode, xattrs and times.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::OFlag;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::paths::{Comps, DirFd, clean, errno_io, join, lossy, os};
use super::{DeferredDir, Meta, OVERRIDE_STAT_XATTR, Ownership, Unpacker};
use crate::error::{Error, Result};
use crate::sys::{self, At};
use crate::tar_reader::{Entry, TarReader};

impl<'a> Unpacker<'a> {
    /// Counts `bytes` more against the layer's bound; refuses the entry past it.
    fn charge(&mut self, bytes: u64, name: &str) -> Result<()> {
        match self.stats.size.checked_add(bytes) {
            Some(total) if total <= self.opts.max_size => {
                self.stats.size = total;
                Ok(())
            }
            _ => Err(Error::LayerTooLarge {
                entry: name.to_string(),
                limit: self.opts.max_size,
            }),
        }
    }

    /// A regular file: its data, or for a sparse file its data segments at their offsets
    /// and holes (never written) in between, then owner, mode, xattrs and times.
    pub(super) fn regular<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        entry: &Entry,
        dir: &DirFd<'_>,
        fname: &OsStr,
        meta: Meta,
        name: &str,
    ) -> Result<()> {
        self.charge(entry.apparent_size(), name)?;
        let fd = nix::fcntl::openat(
            dir,
            fname,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::entry_io(name, "cannot create file", errno_io(e)))?;
        let mut file = File::from(fd);
        match &entry.sparse {
            None => {
                self.copy(tar, &mut file, entry.size, name)?;
            }
            Some(sparse) => {
                for seg in &sparse.segments {
                    file.seek(SeekFrom::Start(seg.offset))
                        .map_err(|e| Error::entry_io(name, "cannot seek in sparse file", e))?;
                    self.copy(tar, &mut file, seg.len, name)?;
                }
                // The holes up to the apparent size (a trailing one included).
                file.set_len(sparse.real_size)
                    .map_err(|e| Error::entry_io(name, "cannot size sparse file", e))?;
            }
        }
        let fd = file.as_fd();
        match self.opts.ownership {
            Ownership::Chown => nix::unistd::fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
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

    /// Copies exactly `len` bytes of the entry's data to `file`.
    fn copy<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        file: &mut File,
        len: u64,
        name: &str,
    ) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match tar.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(Error::Tar {
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tar archive ends inside a member's data",
                        ),
                    });
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Tar { source: e }),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| Error::entry_io(name, "cannot write file", e))?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of a non-regular, non-directory entry, by name.
    pub(super) fn node_meta(
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
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
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
    pub(super) fn directory_meta(
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
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::entry_io(name, "cannot chown", errno_io(e)))?,
            // The layer root without a record is root's (ours, taken for root's: see
            // `crate::union`), and fuse-overlayfs 1.10 cannot list a lower root that has
            // one (ENODATA): recorded only when it is someone else's.
            Ownership::OverrideStat if comps.is_empty() && meta.uid == 0 && meta.gid == 0 => {}
            Ownership::OverrideStat => {
                self.override_stat(At::Entry(dir.as_fd(), fname), &meta, name)?
            }
        }
        self.xattrs(At::Entry(dir.as_fd(), fname), &meta.xattrs, name)?;
        self.dirs.insert(
            join(&comps),
            DeferredDir {
                mode: meta.mode,
                atime: meta.atime,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    pub(super) fn hard_link(
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

    pub(super) fn xattrs(
        &self,
        at: At<'_>,
        xattrs: &[(OsString, Vec<u8>)],
        name: &str,
    ) -> Result<()> {
        for (k, v) in xattrs {
            // Rootless, the record is ours: one in the tar would overwrite (or forge) it.
            if self.opts.ownership == Ownership::OverrideStat
                && k.as_os_str() == OsStr::new(OVERRIDE_STAT_XATTR)
            {
                log::warn!(
                    "entry {name:?}: dropping xattr {OVERRIDE_STAT_XATTR} (rootless, layerfs keeps ownership there itself)"
                );
                continue;
            }
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
                        "entry {name:?}: xattr {} needs privileges (rootless), dropped; a load in a user \
                         namespace keeps it (unshare --map-auto --map-root-user)",
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

    /// Rootless: records the entry's ownership (regular files and directories only:
    /// other types cannot carry user.* xattrs). Always, even where the host owner is the
    /// same id: in a user namespace the host owner reads as another id.
    pub(super) fn override_stat(&self, at: At<'_>, meta: &Meta, name: &str) -> Result<()> {
        let o = crate::ownership::Override::new(meta.uid, meta.gid, meta.mode);
        crate::ownership::write(at, &o).map_err(|e| {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                return Error::IoWhat {
                    what: "the store's filesystem keeps no user extended attributes (tmpfs \
                           before Linux 6.6, ramfs, some NFS), where a plain user's store \
                           keeps the images' owners: put the store on ext4, xfs or btrfs \
                           (--root DIR, or $XDG_DATA_HOME)"
                        .into(),
                    source: e,
                };
            }
            Error::entry_io(name, "cannot record ownership", e)
        })
    }
}

/// `sec[.frac]` (PAX time) → TimeSpec.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    // Digits only: a second sign ("--9223372036854775808") would overflow the negation.
    if sec.is_empty() || !sec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
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
