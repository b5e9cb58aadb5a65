//! File-system steps shared by the store's modules: deleting a tree, renaming without
//! replacing. Depends on nothing else in the store, so `layers`, `images` and `gc` can all
//! use it without importing one another in a cycle.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Deletes a directory tree (or file); directories we may not enter or empty (rootless
/// copies of read-only image directories) are made `u+rwx` first.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return fs::remove_file(path).map_err(|e| Error::io(path, e));
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    make_writable(path);
    fs::remove_dir_all(path).map_err(|e| Error::io(path, e))
}

fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
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
