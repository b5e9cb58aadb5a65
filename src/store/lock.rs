//! Store locking with `flock(2)`.
//!
//! `ROOT/lock` orders the store's big operations: `load` and `mount` hold it shared (any
//! number at once: installs are renames of complete directories, so they cannot see each
//! other half done), `rmi` and `prune` hold it exclusive (they delete, and must not delete
//! what a running load is about to reference). `ROOT/meta.lock` is held exclusive for the
//! few milliseconds of a read-modify-write of `refs.json` or a `layer.json`.
//!
//! flock locks belong to the open file description: they vanish when the process dies,
//! so a killed `load` never leaves the store locked. For the same reason a lock can be
//! handed to a child process, which inherits the open file ([`adopt`],
//! [`LockGuard::hand_over`]): `layerfs mount` hands its daemon the container's lock (see
//! `containers.rs`, which sets out the container lock's protocol).

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

    /// The locked file (to check which file it is, or to hand the lock to a child
    /// process: a lock belongs to the open file, which a child inherits).
    pub fn file(&self) -> &File {
        &self.lock
    }

    /// Lets go of this handle without unlocking, for a lock handed to another process
    /// that shares its open file (a daemon that inherited it): an unlock through any
    /// handle of the open file ends the lock for all of them. The lock then lasts until
    /// the last process holding the open file closes it (this one, when it exits).
    pub fn hand_over(self) {
        std::mem::forget(self);
    }

    /// Takes the lock again through this handle, after another process that shared the
    /// open file unlocked it; false when somebody else has taken it meanwhile.
    pub fn retake(&self, path: &Path) -> Result<bool> {
        match self.lock.relock(arg(self.mode, true)) {
            Ok(()) => Ok(true),
            Err(Errno::EWOULDBLOCK) => Ok(false),
            Err(e) => Err(Error::io(path, e.into())),
        }
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

/// Takes the lock through `file`, already open (by the store, beneath its root; or
/// inherited from the process that took it: taking a lock its open file holds already
/// succeeds at once); `Ok(None)` when another open file holds a conflicting one. `path`
/// names it in errors.
pub fn adopt(file: File, path: &Path, mode: Mode) -> Result<Option<LockGuard>> {
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
        let s1 = adopt(f(), &p, Mode::Shared).unwrap().unwrap();
        let _s2 = adopt(f(), &p, Mode::Shared).unwrap().unwrap();
        assert!(adopt(f(), &p, Mode::Exclusive).unwrap().is_none());
        drop(s1);
        drop(_s2);
        let mut x = adopt(f(), &p, Mode::Exclusive).unwrap().unwrap();
        assert!(adopt(f(), &p, Mode::Shared).unwrap().is_none());
        x.downgrade(&p).unwrap();
        assert_eq!(x.mode(), Mode::Shared);
        assert!(adopt(f(), &p, Mode::Shared).unwrap().is_some());
    }

    #[test]
    fn a_lock_handed_over_stays_held() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let f = || File::options().create(true).append(true).open(&p).unwrap();
        let mine = adopt(f(), &p, Mode::Exclusive).unwrap().unwrap();
        // What a child inherits: the same open file, which holds the lock already.
        let theirs = adopt(mine.file().try_clone().unwrap(), &p, Mode::Exclusive)
            .unwrap()
            .unwrap();
        mine.hand_over();
        assert!(
            adopt(f(), &p, Mode::Shared).unwrap().is_none(),
            "handed over"
        );
        // Another open file cannot adopt it.
        let other = File::open(&p).unwrap();
        assert!(adopt(other, &p, Mode::Exclusive).unwrap().is_none());
        // Unlocked through one handle, it is unlocked for all; retake() takes it again.
        let again = theirs.file().try_clone().unwrap();
        drop(theirs);
        let back = adopt(again, &p, Mode::Exclusive).unwrap().unwrap();
        assert!(back.retake(&p).unwrap());
        assert!(adopt(f(), &p, Mode::Shared).unwrap().is_none());
    }
}
