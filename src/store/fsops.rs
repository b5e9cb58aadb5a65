//! File-system steps shared by the store's modules: deleting a tree (atomically, through
//! `tmp/`), renaming without replacing, random name suffixes. Depends on nothing else in
//! the store but [`Store`]'s paths, so the other modules can all use it without importing
//! one another in a cycle.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::Store;
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

/// Renames `path` into `tmp/` (the atomic step), then deletes it.
pub fn remove_atomically(store: &Store, path: &Path, what: &str) -> Result<()> {
    let grave = store.staging_dir(&format!("rm-{what}"))?;
    let target = grave.join("x");
    fs::rename(path, &target).map_err(|e| Error::io(path, e))?;
    remove_tree(&grave)
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
