//! File-system steps shared by the store's modules: deleting a tree (with a bounded number
//! of fds, atomically through `tmp/`), renaming without replacing, random name suffixes. Depends on nothing else in
//! the store but [`Store`]'s paths, so the other modules can all use it without importing
//! one another in a cycle.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use super::Store;
use crate::error::{Error, Result};

/// Deletes a directory tree (or file); a missing one is not an error. Holds a bounded
/// number of fds however deep the tree is, and makes directories we may not enter or
/// empty (rootless copies of read-only image directories) `u+rwx` first
/// ([`crate::fdtree::remove_tree_at`]).
pub fn remove_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::io(
            path,
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    };
    let dir = match nix::fcntl::open(
        parent,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(Error::io(parent, e.into())),
    };
    crate::fdtree::remove_tree_at(dir.as_fd(), name).map_err(|e| Error::io(path, e))
}

/// `renameat2(RENAME_NOREPLACE)`: fails with `AlreadyExists` when `to` exists.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| Error::io(to, io::Error::from(e)))
}

/// Renames `path` into `tmp/` (the atomic step: from then on it is gone), then deletes
/// it. A deletion that fails midway is logged and its rest left in `tmp/`, which the next
/// `load` or `prune` clears: the removal asked for is done all the same.
pub fn remove_atomically(store: &Store, path: &Path, what: &str) -> Result<()> {
    let grave = store.staging_dir(&format!("rm-{what}"))?;
    let target = grave.join("x");
    if let Err(e) = fs::rename(path, &target) {
        let _ = fs::remove_dir(&grave);
        return Err(Error::io(path, e));
    }
    if let Err(e) = remove_tree(&grave) {
        log::warn!(
            "{} is removed, but deleting its files failed (the rest is left in {} for `layerfs prune`): {e}",
            path.display(),
            grave.display()
        );
    }
    Ok(())
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
