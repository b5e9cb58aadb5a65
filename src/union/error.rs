//! Errors of the union core: an errno, because that is all a filesystem operation can
//! answer. Internal failures (an I/O error on a layer, a corrupt xattr) are logged where
//! they happen and surface as EIO.

use std::fmt;
use std::io;

/// An errno answered by a union operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FsError(pub i32);

pub type Result<T> = std::result::Result<T, FsError>;

impl FsError {
    pub const ENOENT: FsError = FsError(libc::ENOENT);
    pub const EEXIST: FsError = FsError(libc::EEXIST);
    pub const EIO: FsError = FsError(libc::EIO);
    pub const EROFS: FsError = FsError(libc::EROFS);
    pub const EINVAL: FsError = FsError(libc::EINVAL);
    pub const ENOTDIR: FsError = FsError(libc::ENOTDIR);
    pub const EISDIR: FsError = FsError(libc::EISDIR);
    pub const ENOTEMPTY: FsError = FsError(libc::ENOTEMPTY);
    pub const EPERM: FsError = FsError(libc::EPERM);
    pub const EBADF: FsError = FsError(libc::EBADF);
    pub const ENODATA: FsError = FsError(libc::ENODATA);
    pub const ENAMETOOLONG: FsError = FsError(libc::ENAMETOOLONG);
    pub const EXDEV: FsError = FsError(libc::EXDEV);
    pub const ENOSYS: FsError = FsError(libc::ENOSYS);
    pub const ERANGE: FsError = FsError(libc::ERANGE);
    pub const EOPNOTSUPP: FsError = FsError(libc::EOPNOTSUPP);
    pub const ELOOP: FsError = FsError(libc::ELOOP);

    pub fn errno(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", nix::errno::Errno::from_raw(self.0))
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", nix::errno::Errno::from_raw(self.0).desc())
    }
}

impl std::error::Error for FsError {}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        FsError(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<nix::errno::Errno> for FsError {
    fn from(e: nix::errno::Errno) -> Self {
        FsError(e as i32)
    }
}

/// Maps "does not exist" to `None`, for probes where absence is an answer.
pub(crate) fn absent_ok<T>(r: nix::Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
