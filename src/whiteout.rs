//! The only place that knows how whiteouts and opaque directories are spelled.
//!
//! Three spellings meet in layerfs:
//! - **OCI tar** (image-spec `layer.md`): a file `.wh.NAME` deletes NAME from the layers
//!   below; a file `.wh..wh..opq` makes its directory opaque (hides everything below it).
//! - **Kernel overlay** (`Documentation/filesystems/overlayfs.rst`): a whiteout is a
//!   character device 0/0 named NAME (or, on newer kernels, an empty file with the xattr
//!   `trusted.overlay.whiteout`); an opaque directory carries `trusted.overlay.opaque=y`
//!   (`user.overlay.opaque=y` when mounted with `userxattr`).
//! - **fuse-overlayfs** without mknod: `.wh.NAME` files and `.wh..wh..opq` markers on disk,
//!   or `user.fuseoverlayfs.opaque=y`.
//!
//! The layer store writes the kernel spelling when it may (so kernel overlayfs and
//! fuse-overlayfs can mount the very same layer directories) and falls back to the
//! `.wh.` files when mknod or `trusted.*` xattrs are refused. The union core reads every
//! dialect. Neither of them spells `.wh.` itself. In a tree written with known
//! [`Styles`] (a store layer, a container's writable layer), `.wh.` names are marks only
//! when those styles write them ([`Styles::writes_wh_files`]); elsewhere they are files.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::sys::{self, At};

/// Prefix of an OCI whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of AUFS metadata entries (`.wh..wh.plnk`, `.wh..wh.aufs`): never content.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// The value an opaque xattr must have.
pub const OPAQUE_VALUE: &[u8] = b"y";
/// The value of the opaque xattr on a directory that is not opaque but holds xattr
/// whiteouts (Linux 6.8+; `Documentation/filesystems/overlayfs.rst`, "whiteouts and
/// opaque directories"): only in such directories are empty files with an
/// `overlay.whiteout` xattr whiteouts, so other directories cost no xattr read.
pub const XWHITEOUTS_VALUE: &[u8] = b"x";

/// Xattrs that mark a directory opaque, in every dialect we read.
pub const OPAQUE_XATTRS: [&str; 3] = [
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    "user.fuseoverlayfs.opaque",
];

/// Xattrs that mark an empty regular file as a whiteout (Linux 6.7+ "xattr whiteouts").
pub const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// Prefixes of xattrs that belong to the union machinery, never to the user: they are
/// hidden from listxattr/getxattr through the mount and refused in image layers.
const INTERNAL_XATTR_PREFIXES: [&str; 3] =
    ["trusted.overlay.", "user.overlay.", "user.fuseoverlayfs."];

/// What a directory entry name means in a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameKind<'a> {
    /// A plain entry.
    Entry,
    /// `.wh.NAME`: hides NAME of the layers below.
    Whiteout(&'a OsStr),
    /// `.wh..wh..opq`: the containing directory is opaque.
    Opaque,
    /// AUFS bookkeeping (`.wh..wh.*`): ignored, as Docker does.
    AufsMeta,
    /// `.wh.` alone: invalid per the image-spec.
    Invalid,
}

/// Classifies one path component (never a path).
pub fn classify(name: &OsStr) -> NameKind<'_> {
    let b = name.as_bytes();
    if !b.starts_with(WHITEOUT_PREFIX.as_bytes()) {
        return NameKind::Entry;
    }
    if b == OPAQUE_MARKER.as_bytes() {
        return NameKind::Opaque;
    }
    if b.starts_with(AUFS_META_PREFIX.as_bytes()) {
        return NameKind::AufsMeta;
    }
    let target = &b[WHITEOUT_PREFIX.len()..];
    if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
        return NameKind::Invalid;
    }
    NameKind::Whiteout(OsStr::from_bytes(target))
}

/// The `.wh.NAME` spelling of a whiteout for NAME.
pub fn whiteout_file_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(WHITEOUT_PREFIX);
    s.push(name);
    s
}

/// True for the kernel whiteout: a character device with device number 0/0.
pub fn is_whiteout_device(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

/// True for a regular file that may be an xattr whiteout (empty), so worth an xattr read.
pub fn may_be_xattr_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG && st.st_size == 0
}

/// True when an xattr (name, value) makes a directory opaque.
pub fn is_opaque_xattr(name: &OsStr, value: &[u8]) -> bool {
    OPAQUE_XATTRS.iter().any(|x| name == OsStr::new(x)) && value == OPAQUE_VALUE
}

/// True for xattr names that belong to the union machinery and are never shown to users.
pub fn is_internal_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    INTERNAL_XATTR_PREFIXES
        .iter()
        .any(|p| b.starts_with(p.as_bytes()))
}

/// Namespace of the overlay xattrs a layer or upper directory is written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XattrNs {
    /// `trusted.overlay.*`: needs CAP_SYS_ADMIN; what the kernel reads by default.
    Trusted,
    /// `user.overlay.*`: what the kernel reads with `userxattr` (rootless).
    User,
}

impl XattrNs {
    /// `trusted.overlay.` or `user.overlay.`
    pub fn prefix(self) -> &'static str {
        match self {
            XattrNs::Trusted => "trusted.overlay.",
            XattrNs::User => "user.overlay.",
        }
    }

    /// Full name of overlay xattr `suffix` (e.g. "opaque") in this namespace.
    pub fn name(self, suffix: &str) -> OsString {
        OsString::from(format!("{}{}", self.prefix(), suffix))
    }
}

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhiteoutStyle {
    /// Character device 0/0 (needs CAP_MKNOD): adds no bytes to the name.
    CharDevice,
    /// An empty `.wh.NAME` file.
    WhFile,
}

/// How opaque directories are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpaqueStyle {
    /// `<ns>.overlay.opaque=y` on the directory.
    Xattr(XattrNs),
    /// A `.wh..wh..opq` file inside the directory.
    WhFile,
}

/// The spellings one writer uses, chosen once per directory tree by [`probe_styles`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Styles {
    pub whiteout: WhiteoutStyle,
    pub opaque: OpaqueStyle,
}

impl Styles {
    /// The kernel overlay spelling used as root.
    pub const KERNEL: Styles = Styles {
        whiteout: WhiteoutStyle::CharDevice,
        opaque: OpaqueStyle::Xattr(XattrNs::Trusted),
    };

    /// The namespace for the other overlay xattrs (origin, redirect, metacopy) written
    /// beside these spellings.
    pub fn xattr_ns(&self) -> XattrNs {
        match self.opaque {
            OpaqueStyle::Xattr(ns) => ns,
            OpaqueStyle::WhFile => XattrNs::User,
        }
    }

    /// True when a directory tree written with these spellings holds `.wh.` names of its
    /// own: there, and only there, such names are marks rather than files, so they must
    /// be read as marks (and a user may not create them).
    pub fn writes_wh_files(&self) -> bool {
        self.whiteout == WhiteoutStyle::WhFile || self.opaque == OpaqueStyle::WhFile
    }
}

/// Creates (and removes) a kernel whiteout (char 0/0) in `scratch`: may this process?
fn can_mknod(scratch: BorrowedFd<'_>) -> nix::Result<()> {
    let probe = OsStr::new("layerfs-probe");
    nix::sys::stat::mknodat(scratch, probe, SFlag::S_IFCHR, Mode::empty(), 0)?;
    let _ = nix::unistd::unlinkat(scratch, probe, nix::unistd::UnlinkatFlags::NoRemoveDir);
    Ok(())
}

/// Sets (and removes) an overlay xattr of namespace `ns` on `scratch`: may this process?
fn can_setxattr(scratch: BorrowedFd<'_>, ns: XattrNs) -> io::Result<()> {
    let name = ns.name("layerfs-probe");
    sys::setxattr(At::Fd(scratch), &name, b"y", 0)?;
    let _ = sys::removexattr(At::Fd(scratch), &name);
    Ok(())
}

/// Finds out which spellings the filesystem of `scratch` (an empty, writable directory
/// the caller owns and removes afterwards) lets this process write.
pub fn probe_styles(scratch: BorrowedFd<'_>) -> Styles {
    let whiteout = match can_mknod(scratch) {
        Ok(()) => WhiteoutStyle::CharDevice,
        Err(_) => WhiteoutStyle::WhFile,
    };
    let opaque = [XattrNs::Trusted, XattrNs::User]
        .into_iter()
        .find(|ns| can_setxattr(scratch, *ns).is_ok())
        .map_or(OpaqueStyle::WhFile, OpaqueStyle::Xattr);
    Styles { whiteout, opaque }
}

/// Checks that this process may write `styles` in `scratch` (as [`probe_styles`] does):
/// a tree whose spellings are fixed (a container's writable layer) must not be written
/// in others, which would turn its plain `.wh.` files into marks.
pub fn check_writable(scratch: BorrowedFd<'_>, styles: Styles) -> io::Result<()> {
    if styles.whiteout == WhiteoutStyle::CharDevice
        && let Err(e) = can_mknod(scratch)
    {
        return Err(io::Error::new(
            io::Error::from(e).kind(),
            format!(
                "its whiteouts are character devices 0/0, which this process may not create \
                 (mknod: {e})"
            ),
        ));
    }
    if let OpaqueStyle::Xattr(ns) = styles.opaque
        && let Err(e) = can_setxattr(scratch, ns)
    {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "its opaque directories are marked with {}* xattrs, which this process may \
                 not set ({e})",
                ns.prefix()
            ),
        ));
    }
    Ok(())
}

/// Creates a whiteout for `name` in directory `dir`.
pub fn create_whiteout(dir: BorrowedFd<'_>, name: &OsStr, style: WhiteoutStyle) -> io::Result<()> {
    match style {
        WhiteoutStyle::CharDevice => {
            nix::sys::stat::mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), 0)?;
        }
        WhiteoutStyle::WhFile => {
            let wh = whiteout_file_name(name);
            let fd = nix::fcntl::openat(
                dir,
                wh.as_os_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            drop(fd);
        }
    }
    Ok(())
}

/// Marks directory `dir` (an fd of the directory itself; `O_PATH` is fine) opaque.
pub fn set_opaque(dir: BorrowedFd<'_>, style: OpaqueStyle) -> io::Result<()> {
    match style {
        OpaqueStyle::Xattr(ns) => sys::setxattr(At::Fd(dir), &ns.name("opaque"), OPAQUE_VALUE, 0),
        OpaqueStyle::WhFile => {
            match nix::fcntl::openat(
                dir,
                OPAQUE_MARKER,
                // (O_NONBLOCK: a FIFO of that name must not hang us)
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_NONBLOCK
                    | nix::fcntl::OFlag::O_NOFOLLOW
                    | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    drop(fd);
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Reads whether directory `dir` is marked opaque by an xattr in any dialect
/// (the `.wh..wh..opq` marker is found by the caller while it looks up or lists entries).
pub fn has_opaque_xattr(dir: At<'_>) -> io::Result<bool> {
    for name in sys::listxattr(dir)? {
        if OPAQUE_XATTRS.iter().any(|x| name == OsStr::new(x))
            && sys::getxattr(dir, &name)?.as_deref() == Some(OPAQUE_VALUE)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads whether an empty regular file is an xattr whiteout.
pub fn has_whiteout_xattr(entry: At<'_>) -> io::Result<bool> {
    for x in WHITEOUT_XATTRS {
        if sys::getxattr(entry, OsStr::new(x))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_names() {
        let cases: &[(&str, NameKind<'_>)] = &[
            ("file", NameKind::Entry),
            (".whx", NameKind::Entry),
            (".wh.file", NameKind::Whiteout(OsStr::new("file"))),
            (".wh..hidden", NameKind::Whiteout(OsStr::new(".hidden"))),
            (".wh..wh..opq", NameKind::Opaque),
            (".wh..wh.plnk", NameKind::AufsMeta),
            (".wh.", NameKind::Invalid),
            (".wh..", NameKind::Invalid),
            (".wh...", NameKind::Invalid),
        ];
        for (name, want) in cases {
            assert_eq!(&classify(OsStr::new(name)), want, "{name}");
        }
    }

    #[test]
    fn internal_xattrs() {
        for (name, internal) in [
            ("trusted.overlay.opaque", true),
            ("user.overlay.redirect", true),
            ("user.fuseoverlayfs.opaque", true),
            ("user.layerfs.test", false),
            ("security.capability", false),
            ("trusted.other", false),
        ] {
            assert_eq!(is_internal_xattr(OsStr::new(name)), internal, "{name}");
        }
    }

    #[test]
    fn opaque_xattr_values() {
        assert!(is_opaque_xattr(OsStr::new("trusted.overlay.opaque"), b"y"));
        assert!(is_opaque_xattr(
            OsStr::new("user.fuseoverlayfs.opaque"),
            b"y"
        ));
        assert!(!is_opaque_xattr(OsStr::new("trusted.overlay.opaque"), b"n"));
        assert!(!is_opaque_xattr(OsStr::new("user.other"), b"y"));
    }

    #[test]
    fn which_styles_hold_wh_names() {
        assert!(!Styles::KERNEL.writes_wh_files());
        for (whiteout, opaque) in [
            (WhiteoutStyle::WhFile, OpaqueStyle::Xattr(XattrNs::User)),
            (WhiteoutStyle::CharDevice, OpaqueStyle::WhFile),
            (WhiteoutStyle::WhFile, OpaqueStyle::WhFile),
        ] {
            assert!(
                Styles { whiteout, opaque }.writes_wh_files(),
                "{whiteout:?} {opaque:?}"
            );
        }
    }

    #[test]
    fn whiteout_file_names() {
        assert_eq!(whiteout_file_name(OsStr::new("a")), OsString::from(".wh.a"));
    }
}
