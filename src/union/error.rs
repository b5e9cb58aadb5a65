//! Errors of the union core: an errno, because that is all a filesystem operation can
//! answer, plus — for failures the caller did not cause (an I/O error in a layer, a
//! damaged overlay mark, a layer changed behind the mount's back) — what the core was
//! doing, in which layer, on which name. The FUSE adapter turns an error into its errno
//! and logs it once, at debug level for the errnos users cause every day (ENOENT, EEXIST…)
//! and as a warning when it carries context.

use std::fmt;
use std::io;
use std::sync::Arc;

/// An errno answered by a union operation, with what went wrong where it is not obvious.
#[derive(Clone)]
pub struct FsError {
    errno: i32,
    ctx: Option<Arc<str>>,
}

pub type Result<T> = std::result::Result<T, FsError>;

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        $(pub const $name: FsError = FsError { errno: libc::$name, ctx: None };)*
    };
}

impl FsError {
    errnos!(
        ENOENT,
        EEXIST,
        EIO,
        EROFS,
        EINVAL,
        ENOTDIR,
        EISDIR,
        ENOTEMPTY,
        EPERM,
        EBADF,
        ENODATA,
        ENAMETOOLONG,
        EOVERFLOW,
        EXDEV,
        ENOSYS,
        ERANGE,
        EOPNOTSUPP,
        ELOOP,
        ESTALE,
        EMLINK,
        EACCES,
        EFBIG,
    );

    pub fn from_errno(errno: i32) -> FsError {
        FsError { errno, ctx: None }
    }

    /// EIO for something found damaged or inconsistent in a layer; `what` says what and
    /// where.
    pub fn corrupt(what: impl fmt::Display) -> FsError {
        FsError {
            errno: libc::EIO,
            ctx: Some(what.to_string().into()),
        }
    }

    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// What the core was doing, if this error is worth telling anyone about.
    pub fn context(&self) -> Option<&str> {
        self.ctx.as_deref()
    }

    /// Adds what was being done (outermost first when nested).
    pub fn with_ctx(self, what: impl fmt::Display) -> FsError {
        let ctx = match self.ctx {
            Some(inner) => format!("{what}: {inner}"),
            None => what.to_string(),
        };
        FsError {
            errno: self.errno,
            ctx: Some(ctx.into()),
        }
    }
}

/// Equal errnos are equal errors, whatever the context.
impl PartialEq for FsError {
    fn eq(&self, other: &Self) -> bool {
        self.errno == other.errno
    }
}

impl Eq for FsError {}

impl fmt::Debug for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ctx {
            Some(c) => write!(f, "{c}: {}", nix::errno::Errno::from_raw(self.errno)),
            None => write!(f, "{}", nix::errno::Errno::from_raw(self.errno)),
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let desc = nix::errno::Errno::from_raw(self.errno).desc();
        match &self.ctx {
            Some(c) => write!(f, "{c}: {desc}"),
            None => write!(f, "{desc}"),
        }
    }
}

impl std::error::Error for FsError {}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => FsError::from_errno(errno),
            // One of ours (a layer file found not to be a regular file): EIO, saying why.
            None => FsError::corrupt(e),
        }
    }
}

/// Its errno, for callers outside the core that speak `io::Error`.
impl From<FsError> for io::Error {
    fn from(e: FsError) -> Self {
        io::Error::from_raw_os_error(e.errno())
    }
}

impl From<nix::errno::Errno> for FsError {
    fn from(e: nix::errno::Errno) -> Self {
        FsError::from_errno(e as i32)
    }
}

/// Attaching context to results.
pub(crate) trait Context<T> {
    /// Adds `what` (computed only on error) to an error.
    fn ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<FsError>> Context<T> for std::result::Result<T, E> {
    fn ctx<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().with_ctx(what()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_nests_and_equality_ignores_it() {
        let e = FsError::corrupt("redirect \"../x\" of a in layer 1").with_ctx("lookup a");
        assert_eq!(e, FsError::EIO);
        assert_eq!(
            e.context(),
            Some("lookup a: redirect \"../x\" of a in layer 1")
        );
        assert!(e.to_string().starts_with("lookup a: redirect"), "{e}");
        assert!(e.to_string().len() > "lookup a: redirect \"../x\" of a in layer 1: ".len());
        let r: Result<()> = Err(nix::errno::Errno::EACCES).ctx(|| "open upper");
        assert_eq!(r.unwrap_err().context(), Some("open upper"));
    }
}
