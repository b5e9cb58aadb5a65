//! The overlay xattrs the union core reads and writes on its own entries.
//!
//! Kernel names where the kernel's format is ours too (`opaque`, `redirect`, `metacopy`,
//! `impure`), so kernel overlayfs (with `redirect_dir=on,metacopy=on`) can read an upper
//! layer we wrote; `layerfs.*` names where our value differs from the kernel's (the kernel's
//! `origin` is a file handle, ours the reported inode number). All live under the
//! `trusted.overlay.` / `user.overlay.` prefixes, which are hidden from users.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::FileStat;

use crate::sys::{self, At};
use crate::whiteout::{self, XattrNs};

use super::error::Result;
use super::lookup::stat_at;

pub(crate) const REDIRECT: &str = "redirect";
pub(crate) const METACOPY: &str = "metacopy";
pub(crate) const IMPURE: &str = "impure";
pub(crate) const ORIGIN: &str = "layerfs.origin";
pub(crate) const NLINK: &str = "layerfs.nlink";

/// The overlay xattrs found on one entry.
#[derive(Debug, Default, Clone)]
pub(crate) struct Marks {
    pub opaque: bool,
    /// Not opaque, but holds xattr whiteouts (opaque value `x`).
    pub xwhiteouts: bool,
    pub redirect: Option<Vec<u8>>,
    pub metacopy: bool,
    pub impure: bool,
    pub origin: Option<u64>,
    pub nlink: Option<u32>,
}

fn suffix_of(name: &OsStr) -> Option<&str> {
    let b = name.as_bytes();
    for ns in [XattrNs::Trusted, XattrNs::User] {
        if let Some(rest) = b.strip_prefix(ns.prefix().as_bytes()) {
            return std::str::from_utf8(rest).ok();
        }
    }
    None
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The marks of directory `dir` of a layer, opaque in any dialect: a `.wh..wh..opq` inside
/// counts where the layer spells marks as `.wh.` files (`wh_files`).
pub(crate) fn dir_marks(dir: &OwnedFd, wh_files: bool) -> Result<Marks> {
    let mut marks = read_marks(At::Fd(dir.as_fd()))?;
    if !marks.opaque && wh_files && stat_at(dir, OsStr::new(whiteout::OPAQUE_MARKER))?.is_some() {
        marks.opaque = true;
    }
    Ok(marks)
}

/// True when `st`, entry `name` of directory `dir`, is an xattr whiteout; `xwhiteouts`:
/// the directory's marks say it holds such whiteouts.
pub(crate) fn is_xattr_whiteout(
    dir: BorrowedFd<'_>,
    xwhiteouts: bool,
    name: &OsStr,
    st: &FileStat,
) -> Result<bool> {
    if !xwhiteouts || !whiteout::may_be_xattr_whiteout(st) {
        return Ok(false);
    }
    Ok(whiteout::has_whiteout_xattr(At::Entry(dir, name))?)
}

/// Reads the overlay marks of an entry with one listxattr and a getxattr per mark present.
pub(crate) fn read_marks(at: At<'_>) -> Result<Marks> {
    let mut m = Marks::default();
    let names = match sys::listxattr(at) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    for name in names {
        if whiteout::OPAQUE_XATTRS
            .iter()
            .any(|x| name == OsStr::new(x))
        {
            match sys::getxattr(at, &name)?.as_deref() {
                Some(whiteout::OPAQUE_VALUE) => m.opaque = true,
                Some(whiteout::XWHITEOUTS_VALUE) => m.xwhiteouts = true,
                _ => {}
            }
            continue;
        }
        let Some(suffix) = suffix_of(&name) else {
            continue;
        };
        match suffix {
            REDIRECT => m.redirect = sys::getxattr(at, &name)?,
            METACOPY => m.metacopy = true,
            IMPURE => m.impure = true,
            // 0 is no inode and 1 the root's: never a copied-up file's number.
            ORIGIN => {
                m.origin = sys::getxattr(at, &name)?
                    .as_deref()
                    .and_then(parse_u64)
                    .filter(|o| *o > 1)
            }
            NLINK => {
                m.nlink = sys::getxattr(at, &name)?
                    .as_deref()
                    .and_then(parse_u64)
                    .and_then(|n| u32::try_from(n).ok())
            }
            _ => {}
        }
    }
    Ok(m)
}

/// Sets mark `suffix` in namespace `ns`.
pub(crate) fn set(at: At<'_>, ns: XattrNs, suffix: &str, value: &[u8]) -> Result<()> {
    sys::setxattr(at, &ns.name(suffix), value, 0)?;
    Ok(())
}
