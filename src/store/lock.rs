//! Store locking with `flock(2)`.
//!
//! `ROOT/lock` orders the store's big operations: `load` and `mount` hold it shared (any
//! number at once: installs are renames of complete directories, so they cannot see each
//! other half done), `rmi` and `prune` hold it exclusive (they delete, and must not delete
//! what a running load is about to reference). `ROOT/meta.lock` is held exclusive for the
//! few milliseconds of a read-modify-write of `refs.json` or a `layer.json`.
//!
//! flock locks belong to the open file description: they vanish when the process dies,
//! so a killed `load` never leaves the store locked.

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct LockGuard {
    lock: Flock<File>,
    mode: Mode,
}

impl LockGuard {
    /// Which mode is held.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Turns an exclusive lock into a shared one (flock converts in place; another
    /// process may get in between, which is harmless for our users of it).
    pub fn downgrade(&mut self, path: &Path) -> Result<()> {
        self.lock
            .relock(FlockArg::LockShared)
            .map_err(|e| Error::io(path, e.into()))?;
        self.mode = Mode::Shared;
        Ok(())
    }
}

fn arg(mode: Mode, nonblock: bool) -> FlockArg {
    match (mode, nonblock) {
        (Mode::Shared, false) => FlockArg::LockShared,
        (Mode::Shared, true) => FlockArg::LockSharedNonblock,
        (Mode::Exclusive, false) => FlockArg::LockExclusive,
        (Mode::Exclusive, true) => FlockArg::LockExclusiveNonblock,
    }
}

/// Takes the lock of `file` (the lock file `path`, opened by the store beneath its root),
/// waiting as long as needed; says once on stderr that it waits when someone else holds
/// it (so a blocked `rmi` next to a running mount is not a mystery).
pub fn lock(file: File, path: &Path, mode: Mode, who: &str) -> Result<LockGuard> {
    let file = match Flock::lock(file, arg(mode, true)) {
        Ok(lock) => return Ok(LockGuard { lock, mode }),
        Err((file, Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(Error::io(path, e.into())),
    };
    eprintln!(
        "layerfs: waiting for the store lock {} ({who}; held by another load, mount, rmi or prune)",
        path.display()
    );
    loop {
        match Flock::lock(
            file.try_clone().map_err(|e| Error::io(path, e))?,
            arg(mode, false),
        ) {
            Ok(lock) => return Ok(LockGuard { lock, mode }),
            Err((_, Errno::EINTR)) => continue,
            Err((_, e)) => return Err(Error::io(path, e.into())),
        }
    }
}

/// Takes the lock of `file` if nobody holds a conflicting one; `Ok(None)` otherwise.
pub fn try_lock(file: File, path: &Path, mode: Mode) -> Result<Option<LockGuard>> {
    match Flock::lock(file, arg(mode, true)) {
        Ok(lock) => Ok(Some(LockGuard { lock, mode })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io(path, e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_excludes_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let f = || File::create(&p).unwrap();
        let s1 = try_lock(f(), &p, Mode::Shared).unwrap().unwrap();
        let _s2 = try_lock(f(), &p, Mode::Shared).unwrap().unwrap();
        assert!(try_lock(f(), &p, Mode::Exclusive).unwrap().is_none());
        drop(s1);
        drop(_s2);
        let mut x = try_lock(f(), &p, Mode::Exclusive).unwrap().unwrap();
        assert!(try_lock(f(), &p, Mode::Shared).unwrap().is_none());
        x.downgrade(&p).unwrap();
        assert_eq!(x.mode(), Mode::Shared);
        assert!(try_lock(f(), &p, Mode::Shared).unwrap().is_some());
    }
}
