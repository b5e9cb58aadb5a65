//! File-system steps shared by the store's modules: deleting a tree (with a bounded number
//! of fds, atomically through `tmp/`), random name suffixes. Depends on nothing else in
//! the store but [`Store`]'s paths, so the other modules can all use it without importing
//! one another in a cycle.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use super::Store;
use crate::error::Result;

/// [`crate::fdtree::remove_tree_at`] of `path` (its parent directories followed as given:
/// for trees outside a store, such as a test's scratch directory); a missing one is not an
/// error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let dir = match fs::File::open(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    crate::fdtree::remove_tree_at(dir.as_fd(), name)
}

/// Renames `rel` (inside the store) into `tmp/` (the atomic step: from then on it is
/// gone), then deletes it. A deletion that fails midway is logged and its rest left in
/// `tmp/`, which the next `load` or `prune` clears: the removal asked for is done all the
/// same.
pub fn remove_atomically(store: &Store, rel: &Path, what: &str) -> Result<()> {
    let grave = store.staging_dir(&format!("rm-{what}"))?;
    let target = grave.join("x");
    if let Err(e) = store.dir().rename(rel, &target) {
        let _ = store.dir().remove_tree(&grave);
        return Err(e);
    }
    if let Err(e) = store.dir().remove_tree(&grave) {
        log::warn!(
            "{} is removed, but deleting its files failed (the rest is left in {} for `layerfs prune`): {e}",
            store.shown(rel).display(),
            store.shown(&grave).display()
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
