//! File-system steps shared by the store's modules: deleting a tree (atomically, through
//! `tmp/`), walking one for sizes, random name suffixes. Depends on nothing else in
//! the store but [`Store`]'s paths, so the other modules can all use it without importing
//! one another in a cycle.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::Store;
use crate::error::Result;

/// Deletes `name` in directory `dir` (a tree or a file); fine when it is already gone.
/// Directories we may not enter or empty (rootless copies of read-only image directories)
/// are made `u+rwx` first, through an fd of that very directory: nothing is followed, so
/// whoever wrote the tree (a container's user) cannot point the removal, or its chmods,
/// elsewhere.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        // unlink(2) of a directory.
        Err(Errno::EISDIR | Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let sub = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::EACCES) => {
            let p = nix::fcntl::openat(
                dir,
                name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let st = nix::sys::stat::fstat(&p)?;
            crate::sys::chmod_fd(p.as_fd(), (st.st_mode & 0o7777) | 0o700)?;
            nix::fcntl::openat(dir, name, flags, Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    let st = nix::sys::stat::fstat(&sub)?;
    if st.st_mode & 0o700 != 0o700 {
        nix::sys::stat::fchmod(
            &sub,
            Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
        )?;
    }
    for e in crate::sys::dir_entries(sub.try_clone()?)? {
        remove_tree_at(sub.as_fd(), &e.name)?;
    }
    drop(sub);
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// [`remove_tree_at`] of `path` (its parent directories followed as given: for trees
/// outside a store, such as a test's scratch directory).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(Errno::EINVAL))?;
    let dir = fs::File::open(parent)?;
    remove_tree_at(dir.as_fd(), name)
}

/// Calls `visit` with the `lstat` of everything below directory `dir` (not `dir` itself),
/// depth first; directories are entered by fd, never through a symlink. Entries that
/// vanish or cannot be read are skipped (for sizes, where an estimate beats a failure).
pub fn visit_tree(dir: std::os::fd::OwnedFd, visit: &mut dyn FnMut(&nix::sys::stat::FileStat)) {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag};
    let Ok(entries) = dir.try_clone().and_then(crate::sys::dir_entries) else {
        return;
    };
    for e in entries {
        let name = e.name.as_os_str();
        let Ok(st) = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        visit(&st);
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            if let Ok(sub) = nix::fcntl::openat(&dir, name, flags, Mode::empty()) {
                visit_tree(sub, visit);
            }
        }
    }
}

/// Renames `rel` (inside the store) into `tmp/` (the atomic step), then deletes it.
pub fn remove_atomically(store: &Store, rel: &Path, what: &str) -> Result<()> {
    let grave = store.staging_dir(&format!("rm-{what}"))?;
    let target = grave.join("x");
    if let Err(e) = store.dir().rename(rel, &target) {
        let _ = store.dir().remove_tree(&grave);
        return Err(e);
    }
    store.dir().remove_tree(&grave)
}

/// Eight hex digits for names that must not collide (container names, staging names).
pub fn random_suffix() -> String {
    let mut b = [0u8; 4];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    if b == [0; 4] {
        let t = crate::time::now_unix() as u64 ^ u64::from(std::process::id()).rotate_left(17);
        b = (t as u32).to_le_bytes();
    }
    hex::encode(b)
}
