//! Read-only mounts: what holds an image while `layerfs mount --read-only` serves it.
//!
//! A container protects its image through its record for as long as the container
//! exists. A read-only mount has no container, so its daemon keeps a record for as long as
//! it serves:
//! ```text
//! ROOT/mounts/<pid>-<random>.json   MountRecord: image id, mount point, daemon pid, since
//! ```
//! The daemon holds an exclusive `flock` on the file for its whole life. A record is live
//! while its lock is held; one whose lock is free was left by a daemon that died without
//! removing it (flocks die with their process): it holds nothing, and `rmi`/`prune`
//! remove it. The record is written and locked in `tmp/` and renamed into place while the
//! daemon holds the store lock shared, so `rmi` and `prune` (exclusive) never see a record
//! that is not yet locked, and the image cannot go between its lookup and its record.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Root, Store, at};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Suffix of record files; other names in `mounts/` are not records.
const EXT: &str = ".json";

/// Largest record read: a mount point is at most PATH_MAX bytes.
const MAX_RECORD: u64 = 64 << 10;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `mounts/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// The image id, `sha256:…`.
    pub image: String,
    pub mountpoint: String,
    /// The daemon serving it.
    pub pid: u32,
    /// RFC 3339.
    pub created: String,
}

impl MountRecord {
    /// How `rmi` names this user of an image.
    pub fn describe(&self) -> String {
        format!("read-only mount at {} (pid {})", self.mountpoint, self.pid)
    }
}

/// A record held by the running daemon: live until dropped (the file is removed, then the
/// lock released).
#[derive(Debug)]
pub struct Hold {
    root: Arc<Root>,
    path: PathBuf,
    _lock: Flock<File>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.root.remove_file(&self.path);
    }
}

/// Records a read-only mount of `image` at `mountpoint` by this process, live while the
/// returned [`Hold`] lives. The caller holds the store lock shared.
pub fn hold(store: &Store, image: &Digest, mountpoint: &Path) -> Result<Hold> {
    let record = MountRecord {
        image: image.to_string(),
        mountpoint: mountpoint.display().to_string(),
        pid: std::process::id(),
        created: crate::time::now_rfc3339(),
    };
    let name = format!(
        "{}-{}-{}{EXT}",
        record.pid,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        super::fsops::random_suffix()
    );
    let stage = at::tmp(&format!("mount-{name}"));
    let file = store.dir().open_write(&stage, true)?;
    let res = (|| -> Result<Hold> {
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Error::io(store.shown(&stage), e.into()))?;
        let mut bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::encode(name.clone(), e))?;
        bytes.push(b'\n');
        lock.write_all(&bytes)
            .map_err(|e| Error::io(store.shown(&stage), e))?;
        let path = Path::new(at::MOUNTS).join(&name);
        store.dir().rename_noreplace(&stage, &path)?;
        Ok(Hold {
            root: store.root_handle(),
            path,
            _lock: lock,
        })
    })();
    if res.is_err() {
        let _ = store.dir().remove_file(&stage);
    }
    res
}

/// One record found in `mounts/`.
#[derive(Debug, Clone)]
pub struct Mount {
    root: Arc<Root>,
    /// `mounts/<id>.json`, inside the store.
    pub path: PathBuf,
    pub record: MountRecord,
    /// Its daemon still holds it.
    pub live: bool,
}

impl Mount {
    /// True while the daemon still holds the record.
    pub fn is_live(&self) -> bool {
        matches!(read(&self.root, &self.path), Ok(Some((_, true))))
    }
}

/// Waits until the daemon of one of `mounts` lets go of its record (after an unmount),
/// up to `timeout`; true when one did (or there are none).
pub fn wait_one_released(mounts: &[Mount], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if mounts.is_empty() || mounts.iter().any(|m| !m.is_live()) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a record and whether it is live; `Ok(None)` when it is gone. Never follows a
/// symlink and never blocks (no FIFO can stand in for a record: only regular files are read).
fn read(root: &Root, rel: &Path) -> Result<Option<(MountRecord, bool)>> {
    let path = &root.shown(rel);
    let Some(mut file) = root.open_read(rel)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_RECORD)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let record: MountRecord =
        serde_json::from_slice(&bytes).map_err(|e| Error::json(path.display().to_string(), e))?;
    let live = match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_unlocked) => false,
        Err((_, Errno::EWOULDBLOCK)) => true,
        Err((_, e)) => return Err(Error::io(path, e.into())),
    };
    Ok(Some((record, live)))
}

/// Every record in `mounts/`, live or not (none when the directory does not exist). A
/// file that is not a valid record is skipped with a warning.
pub fn list(store: &Store) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for name in store.dir().entries(at::MOUNTS)? {
        if !name.to_string_lossy().ends_with(EXT) {
            continue;
        }
        let path = Path::new(at::MOUNTS).join(&name);
        match read(store.dir(), &path) {
            Ok(Some((record, live))) => out.push(Mount {
                root: store.root_handle(),
                path,
                record,
                live,
            }),
            Ok(None) => {}
            Err(err) => log::warn!("skipping mount record: {err}"),
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The records whose daemon still serves them.
pub fn live(store: &Store) -> Result<Vec<Mount>> {
    Ok(list(store)?.into_iter().filter(|m| m.live).collect())
}

/// Removes the records no daemon holds; the caller holds the store lock exclusive (no
/// record is being created). Returns how many went.
pub fn remove_stale(store: &Store) -> Result<usize> {
    let mut n = 0;
    for m in list(store)? {
        if m.live {
            continue;
        }
        if store.dir().stat(&m.path)?.is_some() {
            store.dir().remove_file(&m.path)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_live_while_held_and_gone_after() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let id = Digest::from_hex(&"ab".repeat(32)).unwrap();
        let h = hold(&store, &id, Path::new("/mnt/x")).unwrap();
        let all = list(&store).unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].live);
        assert_eq!(all[0].record.image, id.to_string());
        assert_eq!(all[0].record.mountpoint, "/mnt/x");
        assert_eq!(remove_stale(&store).unwrap(), 0);
        assert!(!wait_one_released(&all, Duration::from_millis(50)));
        drop(h);
        assert!(list(&store).unwrap().is_empty());
        assert!(!all[0].is_live());
        assert!(wait_one_released(&all, Duration::from_millis(50)));
    }

    #[test]
    fn a_record_left_unlocked_is_stale() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s")).unwrap();
        let rec = MountRecord {
            image: format!("sha256:{}", "cd".repeat(32)),
            mountpoint: "/m".into(),
            pid: 1,
            created: "2024-01-01T00:00:00Z".into(),
        };
        let mounts = store.root().join(at::MOUNTS);
        let p = mounts.join("1-0-x.json");
        std::fs::write(&p, serde_json::to_vec(&rec).unwrap()).unwrap();
        std::fs::write(mounts.join("junk.json"), b"{").unwrap();
        let all = list(&store).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].live);
        assert!(live(&store).unwrap().is_empty());
        assert_eq!(remove_stale(&store).unwrap(), 1);
        assert!(!p.exists());
    }
}
