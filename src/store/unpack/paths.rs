//! Names and directories of a layer being unpacked: tar paths cleaned into components,
//! directories resolved beneath the layer root without following any symlink, and
//! removal of an earlier entry of the same name.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag};

use super::Unpacker;
use crate::error::{Error, Result};

/// A path inside the layer: cleaned components.
pub(super) type Comps = Vec<Vec<u8>>;

/// Mode of directories created because an entry needs them and the tar has none.
const IMPLICIT_DIR_MODE: u32 = 0o755;

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

pub(super) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub(super) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn errno_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// A directory to create things in: the layer root, or a directory beneath it.
#[derive(Clone)]
pub(super) enum DirFd<'a> {
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

impl<'a> Unpacker<'a> {
    /// The directory `comps` (created 0755 if missing), for creating an entry in it.
    pub(super) fn parent(&mut self, comps: &[Vec<u8>], name: &str) -> Result<DirFd<'a>> {
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
    pub(super) fn resolve(
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

    /// An existing directory of the layer opened for reading (not `O_PATH`: fd-based
    /// xattr calls such as `setxattrat(AT_EMPTY_PATH)` refuse `O_PATH` fds with EBADF).
    pub(super) fn open_dir_rdonly(&mut self, comps: &[Vec<u8>]) -> Option<OwnedFd> {
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
    pub(super) fn dir_at(&mut self, comps: &[Vec<u8>]) -> Option<DirFd<'a>> {
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
    for e in crate::sys::dir_entries(fd.try_clone()?)? {
        remove_entry(fd.as_fd(), &e.name)?;
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
}
