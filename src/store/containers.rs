//! Containers: the writable layers the mount creates. `ROOT/containers/<name>/` holds the
//! record (`container.json`, written by `layerfs mount`; `rmi` and `prune` read the
//! records so that they never remove an image, or its layers, that a container uses), the
//! writable layer, and the container lock, which orders everything that changes a
//! container or reads it whole.
//!
//! # The container lock
//!
//! `containers/<name>/lock` is an flock. Who holds it, how, and for how long:
//!
//! - **the mount daemon**, exclusive, for as long as it serves the container, and after
//!   its mount has ended (`layerfs umount`, `umount DIR`, `fusermount3 -u`, a signal)
//!   until no commit holds its write gate any more (`crate::control`): a commit reading
//!   the layer of a mounted container keeps the container from being mounted anew or
//!   removed until it is done, however the mount ended;
//! - **`layerfs mount`**, exclusive, from the moment it has picked the container — an
//!   existing one by name, or a new one, which [`create`] makes already locked — to the
//!   end: the daemon it starts inherits that very lock (the open file), so the container
//!   is never free between the choice and the mount; a mount that fails removes a
//!   container it created while still holding it ([`discard_new`]);
//! - **`rm`**, exclusive, while it removes the container ([`remove`]: renamed into `tmp/`
//!   in one step, then deleted);
//! - **`commit` of a container that is not mounted**, shared, while it reads the layer
//!   (several commits may read at once; nobody mounts, writes or removes it meanwhile);
//! - **"is it mounted?"** (`ps`, `df`, `umount`), shared, for an instant: a daemon holds
//!   the lock exclusive.
//!
//! A commit of a mounted container takes no lock: its daemon holds it, and closes its
//! write gate for the commit. `layerfs umount` (and `rm --force`) first wait for the
//! gate to open, up to [`BUSY_WAIT`], and refuse with "container … is busy" rather than
//! unmount under a commit: an unmount would succeed (the daemon keeps the container until
//! the commit is done) but then wait for the daemon, and a caller expects the container
//! to be free when `umount` returns.
//!
//! Exclusive takers ([`Container::lock`]) never block on the flock: one that finds it held
//! shared (a commit; an instant's probe) waits up to [`BUSY_WAIT`], saying so on stderr,
//! and then fails with [`Error::ContainerBusy`]; one that finds it held exclusive (a
//! daemon, a mount starting, an `rm`) gives up at once. So `rm NAME` and `mount NAME DIR`
//! (by name, or `--name NAME` of an existing container) exclude each other: at most one
//! of two racing ones succeeds, as in one of the two serial orders. After taking the
//! lock, every taker checks that the file it locked is still `containers/<name>/lock`:
//! one whose container was removed (or removed and made again) meanwhile gets
//! [`Error::UnknownContainer`], as if it had come after the `rm`; `mount` then looks its
//! argument up again.
//!
//! Order: the store lock (shared) may be held while a container lock is taken, and a
//! mount daemon takes the store lock (shared) with its container's lock held; `rmi` and
//! `prune` (the store lock exclusive) take no container lock, and no container lock is
//! ever waited for while blocking, so no cycle can form.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};

/// The record file in each container directory.
pub const CONTAINER_JSON: &str = "container.json";

/// `container.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// The image id, `sha256:…`.
    pub image: String,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub mountpoint: Option<String>,
}

/// Every container record (none when `containers/` does not exist). A directory without
/// a readable record is skipped with a warning rather than failing every listing.
pub fn list(store: &Store) -> Result<Vec<ContainerRecord>> {
    let dir = store.containers_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        let p = e.path().join(CONTAINER_JSON);
        match fs::read(&p) {
            Ok(b) => match serde_json::from_slice::<ContainerRecord>(&b) {
                Ok(r) => out.push(r),
                Err(err) => log::warn!("{}: invalid JSON: {err}", p.display()),
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(&p, err)),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

// ---- the container side: created and used by `layerfs mount` ----
//
// ROOT/containers/<name>/
//   container.json   ContainerRecord (mountpoint set while mounted)
//   upper/ work/     the writable layer, kernel overlay format (see union/)
//   lock             the container lock (see the module docs)
//   control.sock     the mount daemon's control socket (`crate::control`)
//   daemon.log       the detached daemon's stderr

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::lock::{self, LockGuard};

/// How long a command waits for a commit that holds a container (its lock shared, or its
/// daemon's write gate) before it gives up with [`Error::ContainerBusy`].
pub const BUSY_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting exclusive taker tries the lock again.
const POLL: Duration = Duration::from_millis(20);

/// After this long a waiting exclusive taker says on stderr what it waits for (shorter
/// waits are an instant's probe by `ps`, not worth a line).
const SAY_WAITING_AFTER: Duration = Duration::from_millis(500);

const UPPER: &str = "upper";
const WORK: &str = "work";
const LOCK: &str = "lock";
const LOG: &str = "daemon.log";

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub record: ContainerRecord,
}

/// Container names: what Docker allows, so they are safe as one path component.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

impl Container {
    /// " at MOUNTPOINT" when the record names one, for messages.
    pub fn at_mountpoint(&self) -> String {
        self.record
            .mountpoint
            .as_deref()
            .map(|m| format!(" at {m}"))
            .unwrap_or_default()
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join(UPPER)
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join(WORK)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG)
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK)
    }

    /// The container lock in `mode`, without waiting; `Ok(None)` when held in a
    /// conflicting mode. A container gone meanwhile is [`Error::UnknownContainer`].
    fn try_lock(&self, mode: lock::Mode) -> Result<Option<LockGuard>> {
        let path = self.lock_path();
        let g = match lock::try_lock(&path, mode) {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            // Its directory was renamed away by `rm`.
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(self.gone());
            }
            Err(e) => return Err(e),
        };
        self.check_held(&g)?;
        Ok(Some(g))
    }

    fn gone(&self) -> Error {
        Error::UnknownContainer(self.record.name.clone())
    }

    /// Checks that `g` locks this container's lock file, the one at its path now: not
    /// that of a container removed meanwhile (whose directory `rm` renamed away while
    /// holding it), nor of another made since under the same name.
    fn check_held(&self, g: &LockGuard) -> Result<()> {
        let path = self.lock_path();
        let held = g.file().metadata().map_err(|e| Error::io(&path, e))?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => Ok(()),
            Ok(_) => Err(self.gone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.gone()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Takes the container lock exclusive (mount, rm; see the module docs). `Ok(None)`
    /// when a daemon, a mount starting or an `rm` holds it; while commits of the
    /// unmounted container hold it, waits for them up to `wait`, then
    /// [`Error::ContainerBusy`].
    pub fn lock(&self, wait: Duration) -> Result<Option<LockGuard>> {
        let start = Instant::now();
        let mut said = false;
        loop {
            if let Some(g) = self.try_lock(lock::Mode::Exclusive)? {
                return Ok(Some(g));
            }
            // Held shared (commits, or an instant's probe) or exclusive (given up on)?
            if self.try_lock(lock::Mode::Shared)?.is_none() {
                return Ok(None);
            }
            let waited = start.elapsed();
            if waited >= wait {
                return Err(Error::ContainerBusy {
                    name: self.record.name.clone(),
                    detail: format!(
                        "a commit of it has been reading it for over {} s; try again once it \
                         is done",
                        wait.as_secs()
                    ),
                });
            }
            if !said && waited >= SAY_WAITING_AFTER {
                eprintln!(
                    "layerfs: waiting for the commit of container {} to finish",
                    self.record.name
                );
                said = true;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Takes the container lock shared, for a commit of the unmounted container;
    /// `Ok(None)` when it is held exclusive (mounted, being mounted or removed).
    pub fn lock_shared(&self) -> Result<Option<LockGuard>> {
        self.try_lock(lock::Mode::Shared)
    }

    /// Takes over the lock `layerfs mount` took for this container and handed to the
    /// daemon it started (`file`: the inherited open lock file).
    pub fn adopt_lock(&self, file: fs::File) -> Result<LockGuard> {
        let path = self.lock_path();
        let Some(g) = lock::adopt(file, &path, lock::Mode::Exclusive)? else {
            return Err(Error::Conflict(format!(
                "container {}: the lock handed over by `layerfs mount` is held by another \
                 process",
                self.record.name
            )));
        };
        self.check_held(&g)?;
        Ok(g)
    }

    /// True while a daemon serves this container (or a mount of it is starting, or `rm`
    /// removes it): its lock is held exclusive.
    pub fn is_mounted(&self) -> bool {
        matches!(self.lock_shared(), Ok(None))
    }

    /// Waits until no daemon holds the container (after an unmount), up to `timeout`.
    pub fn wait_unlocked(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if !self.is_mounted() {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Records (or clears) where the container is mounted.
    pub fn set_mountpoint(&mut self, store: &Store, mp: Option<&Path>) -> Result<()> {
        self.record.mountpoint = mp.map(|p| p.display().to_string());
        let bytes = serde_json::to_vec_pretty(&self.record)
            .map_err(|e| Error::json(self.dir.join(CONTAINER_JSON).display().to_string(), e))?;
        store.write_atomic(&self.dir.join(CONTAINER_JSON), &bytes)
    }

    /// Bytes the writable layer holds (what `ps -s` shows as SIZE): its regular files, a
    /// hard-linked inode once (names in the upper directory and the index of hard links
    /// alike), a sparse file (a metadata-only copy-up) by what it allocates.
    pub fn size(&self) -> u64 {
        use std::collections::HashSet;
        use std::os::unix::fs::MetadataExt;
        fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
            let Ok(rd) = fs::read_dir(p) else { return 0 };
            let mut total = 0;
            for e in rd.filter_map(|e| e.ok()) {
                let Ok(m) = e.metadata() else { continue };
                if m.is_dir() {
                    total += walk(&e.path(), seen);
                } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                    total += m.len().min(m.blocks().saturating_mul(512));
                }
            }
            total
        }
        let mut seen = HashSet::new();
        walk(&self.upper(), &mut seen) + walk(&self.work().join("layerfs-index"), &mut seen)
    }
}

/// Opens container `name`; `Ok(None)` when there is none.
pub fn open(store: &Store, name: &str) -> Result<Option<Container>> {
    if !valid_name(name) {
        return Err(Error::Invalid {
            file: name.into(),
            detail: "not a valid container name".into(),
        });
    }
    let dir = store.containers_dir().join(name);
    let record = super::read_json_opt(&dir.join(CONTAINER_JSON))?;
    Ok(record.map(|record| Container { dir, record }))
}

/// Creates a container of `image`, named `name` or `<image name>-<random>`. Built in `tmp/`
/// and renamed into place, so a container is complete when visible; and locked (exclusive)
/// before it is visible, so that nobody else mounts or removes it before its creator is
/// done with it.
pub fn create(
    store: &Store,
    name: Option<&str>,
    image: &super::ImageRecord,
) -> Result<(Container, LockGuard)> {
    let hint = image.display_name();
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let base: String = hint
                .rsplit('/')
                .next()
                .unwrap_or("c")
                .split(':')
                .next()
                .unwrap_or("c")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                .collect();
            let base = if base.is_empty() || !valid_name(&base) {
                "c".to_string()
            } else {
                base
            };
            format!("{base}-{}", super::fsops::random_suffix())
        }
    };
    if !valid_name(&name) {
        return Err(Error::Invalid {
            file: name,
            detail: "not a valid container name".into(),
        });
    }
    let containers = store.containers_dir();
    let stage = store.staging_dir("container")?;
    let record = ContainerRecord {
        name: name.clone(),
        image: image.id.to_string(),
        created: crate::time::now_rfc3339(),
        mountpoint: None,
    };
    for d in [UPPER, WORK] {
        let p = stage.join(d);
        fs::DirBuilder::new()
            .mode(super::DIR_MODE)
            .create(&p)
            .map_err(|e| Error::io(&p, e))?;
    }
    // The upper root is the container's `/`: it starts with the image root's owner, mode
    // and times, as a copy-up of it would.
    let image_root = match image.layers.last() {
        Some(top) => store.layer_dir(&top.diff_id),
        None => store.empty_layer_dir()?,
    };
    copy_root_meta(&image_root, &stage.join(UPPER))?;
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| Error::json(CONTAINER_JSON, e))?;
    super::write_new(&stage.join(CONTAINER_JSON), &bytes)?;
    let locked = lock::try_lock(&stage.join(LOCK), lock::Mode::Exclusive)?;
    let Some(locked) = locked else {
        return Err(Error::Conflict(format!(
            "{}: locked by another process while being made",
            stage.join(LOCK).display()
        )));
    };
    let dir = containers.join(&name);
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &stage,
        nix::fcntl::AT_FDCWD,
        &dir,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok((Container { dir, record }, locked)),
        Err(e) => {
            let _ = fs::remove_dir_all(&stage);
            if e == nix::errno::Errno::EEXIST {
                Err(Error::Conflict(format!(
                    "a container named {name} already exists"
                )))
            } else {
                Err(Error::io(&dir, e.into()))
            }
        }
    }
}

fn copy_root_meta(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(from).map_err(|e| Error::io(from, e))?;
    match std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())) {
        Ok(()) => {}
        // Not root: the owner stays ours (rootless ownership is kept elsewhere).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(Error::io(to, e)),
    }
    fs::set_permissions(
        to,
        std::os::unix::fs::PermissionsExt::from_mode(m.mode() & 0o7777),
    )
    .map_err(|e| Error::io(to, e))?;
    let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &t(m.atime(), m.atime_nsec()),
        &t(m.mtime(), m.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .map_err(|e| Error::io(to, e.into()))
}

/// Removes container `c`, whose lock `_lock` the caller holds exclusive ([`Container::lock`]):
/// its record and its writable layer go in one step (the directory is renamed into
/// `tmp/`, then deleted). The lock is held across the rename, so no mount starts meanwhile.
pub fn remove(store: &Store, c: &Container, _lock: LockGuard) -> Result<()> {
    super::fsops::remove_atomically(store, &c.dir, "container")
}

/// Removes container `c`, just created for a mount that failed (never mounted: its
/// writable layer is empty), as [`remove`] does, with the lock [`create`] gave (taken
/// again first: the daemon it was handed to unlocked it when it failed). Refused when
/// somebody else took the lock meanwhile, or its writable layer has data.
pub fn discard_new(store: &Store, c: Container, lock: LockGuard) -> Result<()> {
    if !lock.retake(&c.lock_path())? {
        return Err(Error::Conflict(format!(
            "container {} is mounted",
            c.record.name
        )));
    }
    c.check_held(&lock)?;
    let upper = c.upper();
    let empty = fs::read_dir(&upper)
        .map_err(|e| Error::io(&upper, e))?
        .next()
        .is_none();
    if !empty {
        return Err(Error::Conflict(format!(
            "container {} has data in its writable layer",
            c.record.name
        )));
    }
    remove(store, &c, lock)
}

/// Every container with its directory.
pub fn all(store: &Store) -> Result<Vec<Container>> {
    let dir = store.containers_dir();
    Ok(list(store)?
        .into_iter()
        .map(|record| Container {
            dir: dir.join(&record.name),
            record,
        })
        .collect())
}
