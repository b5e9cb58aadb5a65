//! Opening a file that must be a regular file, inside a tree that may have changed since
//! it was looked at: a layer of the store, a lower or upper layer of a mount.
//!
//! A name that held a regular file when it was listed may hold a FIFO by the time it is
//! opened (a damaged store, a lower directory someone else writes): an `open` for reading
//! would then wait for a writer forever, and a device node may act on being opened. So
//! the name is reached with `O_PATH` (which opens nothing and never follows a final
//! symlink), checked with `fstat`, and only a regular file is opened, through its
//! `/proc/self/fd` link: the very inode that was checked, never another one. Every read
//! of file content in a layer or container tree goes through here (`save`'s playback
//! and its tree writer, the union core's data opens and copy-up, hence `export`,
//! `commit` and mounts).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

/// What a file type is called in messages.
pub fn kind_name(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symlink",
        _ => "of an unknown type",
    }
}

/// True for a regular file's mode.
pub fn is_regular(mode: u32) -> bool {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// A checked `O_PATH` fd of entry `name` (one component, not followed) of `dir`, and
/// its stat; an `InvalidData` error ("is a FIFO, not a regular file") for anything else.
pub fn path_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(OwnedFd, FileStat)> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    checked(fd)
}

/// As [`path_at`] for a relative path of several components, resolved beneath `root`
/// without following any symlink or leaving `root`'s mount (a path longer than PATH_MAX
/// too: [`crate::fdtree::open_beneath`]).
pub fn path_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<(OwnedFd, FileStat)> {
    use std::os::unix::ffi::OsStrExt;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW;
    checked(crate::fdtree::open_beneath(
        root,
        rel.as_os_str().as_bytes(),
        flags,
    )?)
}

fn checked(fd: OwnedFd) -> io::Result<(OwnedFd, FileStat)> {
    let st = fstat(fd.as_fd())?;
    if !is_regular(st.st_mode) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is {}, not a regular file", kind_name(st.st_mode)),
        ));
    }
    Ok((fd, st))
}

/// Opens the regular file a checked `O_PATH` fd holds with `flags` (access and I/O
/// flags; never creation).
pub fn reopen(fd: BorrowedFd<'_>, flags: OFlag) -> io::Result<File> {
    crate::sys::reopen(fd, flags | OFlag::O_NOCTTY).map(File::from)
}

/// Opens entry `name` of `dir` for reading if it is a regular file (see the module docs).
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(File, FileStat)> {
    let (fd, st) = path_at(dir, name)?;
    Ok((reopen(fd.as_fd(), OFlag::O_RDONLY)?, st))
}

/// Opens `rel` beneath `root` for reading if it is a regular file (see [`path_beneath`]).
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<(File, FileStat)> {
    let (fd, st) = path_beneath(root, rel)?;
    Ok((reopen(fd.as_fd(), OFlag::O_RDONLY)?, st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("f"), b"data").unwrap();
        nix::unistd::mkfifo(&d.join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/g"), b"g").unwrap();
        let root = File::open(d).unwrap();
        let (mut f, st) = open_at(root.as_fd(), OsStr::new("f")).unwrap();
        assert_eq!(st.st_size, 4);
        let mut s = String::new();
        io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "data");
        // A FIFO is refused without blocking; a symlink is not followed.
        let e = open_at(root.as_fd(), OsStr::new("p")).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let e = open_at(root.as_fd(), OsStr::new("l")).unwrap_err();
        assert!(e.to_string().contains("is a symlink"), "{e}");
        let e = open_at(root.as_fd(), OsStr::new("sub")).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(open_beneath(root.as_fd(), Path::new("sub/g")).is_ok());
        assert!(open_beneath(root.as_fd(), Path::new("p")).is_err());
        assert!(open_beneath(root.as_fd(), Path::new("../x")).is_err());
    }
}
