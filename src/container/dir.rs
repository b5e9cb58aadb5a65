//! A container's directory, `ROOT/containers/<name>/`: its record (kept in the format of
//! [`crate::store::containers`]), its writable layer, and the container lock, which orders
//! everything that changes a container or reads it whole.
//!
//! # The container lock
//!
//! `containers/<name>/lock` is an flock. Who holds it, how, and for how long:
//!
//! - **the mount daemon**, exclusive, for as long as it serves the container, and after
//!   its mount has ended (`layerfs umount`, `umount DIR`, `fusermount3 -u`, a signal)
//!   until no commit holds its write gate any more (`crate::container::control`): a commit reading
//!   the layer of a mounted container keeps the container from being mounted anew or
//!   removed until it is done, however the mount ended;
//! - **`layerfs mount`**, exclusive, from the moment it has picked the container — an
//!   existing one by name, or a new one, which [`create`] makes already locked — to the
//!   end: the daemon it starts inherits that very lock (the open file), so the container
//!   is never free between the choice and the mount. A daemon that fails before it
//!   mounts leaves the lock to `layerfs mount` (it exits without unlocking), which then
//!   removes a container it created while still holding it ([`discard_new`]);
//! - **`rm`**, exclusive, while it removes the container ([`remove`]: renamed into `tmp/`
//!   in one step, then deleted);
//! - **`commit` of a container that is not mounted**, shared, while it reads the layer
//!   (several commits may read at once; nobody mounts, writes or removes it meanwhile);
//! - **`umount` of a container whose daemon died**, shared, while it clears the record;
//!   and `crate::container::holder`'s probe, for an instant.
//!
//! The lock held exclusive does not mean "mounted": only the daemon knows whether its
//! mount is live, and says so on its control socket (`state`). `crate::container::holder` sets out
//! what `mount`, `rm`, `umount`, `ps` and `df` make of the two: a container really
//! mounted is refused (or, by `umount` and `rm --force`, unmounted); one held for a
//! moment — a commit reading it, a daemon starting or letting go, a mount being set up,
//! an `rm` — is waited for, up to [`BUSY_WAIT`], saying so on stderr, then
//! [`Error::ContainerBusy`]. Exclusive takers never block on the flock itself: they try,
//! and wait between tries without holding the store lock. So `rm NAME` and `mount NAME
//! DIR` (by name, or `--name NAME` of an existing container) exclude each other: at most
//! one of two racing ones succeeds, as in one of the two serial orders. After taking the
//! lock, every taker checks that the file it locked is still `containers/<name>/lock`:
//! one whose container was removed (or removed and made again) meanwhile gets
//! [`Error::UnknownContainer`], as if it had come after the `rm`; `mount` then looks its
//! argument up again.
//!
//! A commit of a mounted container takes no lock: its daemon holds it, and closes its
//! write gate for the commit. `layerfs umount` (and `rm --force`) first wait for the
//! gate to open, up to [`BUSY_WAIT`], and refuse with "container … is busy" rather than
//! unmount under a commit: an unmount would succeed (the daemon keeps the container until
//! the commit is done) but then wait for the daemon, and a caller expects the container
//! to be free when `umount` returns.
//!
//! Order: the store lock (shared) may be held while a container lock is taken, and a
//! mount daemon takes the store lock (shared) with its container's lock held; `rmi` and
//! `prune` (the store lock exclusive) take no container lock, and no container lock is
//! ever waited for while blocking, so no cycle can form.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::containers::{CONTAINER_JSON, ContainerRecord, list, valid_name};
use crate::store::lock::{self, LockGuard};
use crate::store::{self, Root, Store, at, fsops};
use crate::union::layer::WORK_INDEX;
use crate::union::{LayerSpec, WorkSpec};
use crate::whiteout::Styles;

// ROOT/containers/<name>/
//   container.json   ContainerRecord (mountpoint set while mounted; the writable
//                    layer's whiteout spellings, fixed when it is made)
//   upper/ work/     the writable layer, kernel overlay format (see union/)
//   lock             the container lock (see the module docs)
//   control.sock     the mount daemon's control socket (`crate::container::control`)
//   daemon.log       the detached daemon's stderr

/// How long a command waits for a container held for a moment — a commit reading it (its
/// lock shared, or its daemon's write gate), a daemon starting or letting go, a mount
/// being set up, an `rm` — before it gives up with [`Error::ContainerBusy`].
pub const BUSY_WAIT: Duration = Duration::from_secs(60);

/// How often [`Container::wait_unlocked`] looks again.
const POLL: Duration = Duration::from_millis(20);

const UPPER: &str = "upper";
const WORK: &str = "work";
const LOCK: &str = "lock";
const LOG: &str = "daemon.log";

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// The store's root, through which the container's files are reached.
    root: Arc<Root>,
    /// `containers/<name>`, inside the store.
    pub dir: PathBuf,
    pub record: ContainerRecord,
}

impl Container {
    /// The container `record` describes (read from its directory).
    pub fn of_record(store: &Store, record: ContainerRecord) -> Container {
        Container {
            root: store.root_handle(),
            dir: at::container(&record.name),
            record,
        }
    }

    /// " at MOUNTPOINT" when the record names one, for messages.
    pub fn at_mountpoint(&self) -> String {
        self.record
            .mountpoint
            .as_deref()
            .map(|m| format!(" at {m}"))
            .unwrap_or_default()
    }

    /// The full path of the container's directory, for messages.
    pub fn shown(&self) -> PathBuf {
        self.root.shown(&self.dir)
    }

    /// The spellings of the writable layer: those its mount writes, fixed when the
    /// container is made (the store's then). Every reader of the layer — the mount
    /// itself, a read-only mount, `diff`, `export`, `commit` — takes exactly these for
    /// whiteouts and opaque markers, and any other `.wh.` name for the plain file it is.
    /// A record of an older version, which has none, gets the store's (what its mounts
    /// probed), and keeps them from its next mount on.
    pub fn styles(&self, store: &Store) -> Result<Styles> {
        match self.record.styles {
            Some(s) => Ok(s),
            None => store.styles(),
        }
    }

    /// The writable layer as a layer of a union, opened beneath the store's verified
    /// root and read with [`Container::styles`] (also returned, for a stack that writes
    /// or freezes it).
    pub fn upper_spec(&self, store: &Store) -> Result<(LayerSpec, Styles)> {
        let styles = self.styles(store)?;
        let rel = self.dir.join(UPPER);
        let fd = self
            .root
            .open_dir(&rel)
            .map_err(|e| self.gone_if_missing(e))?;
        Ok((
            LayerSpec::written_with(fd, self.root.shown(&rel), styles),
            styles,
        ))
    }

    /// The work directory, opened beneath the store's verified root.
    pub fn work_spec(&self) -> Result<WorkSpec> {
        let rel = self.dir.join(WORK);
        Ok(WorkSpec::opened(
            self.root
                .open_dir(&rel)
                .map_err(|e| self.gone_if_missing(e))?,
            self.root.shown(&rel),
        ))
    }

    /// The container's directory, opened (the control socket lives there).
    pub fn open_dir(&self) -> Result<std::os::fd::OwnedFd> {
        self.root
            .open_dir(&self.dir)
            .map_err(|e| self.gone_if_missing(e))
    }

    /// The daemon's log file, opened for appending (created 0600).
    pub fn open_log(&self) -> Result<std::fs::File> {
        self.root
            .open_write(self.dir.join(LOG), false)
            .map_err(|e| self.gone_if_missing(e))
    }

    /// `e`, or [`Error::UnknownContainer`] when it says that a file of the container is
    /// not there: the container was removed meanwhile (in a serial order, the `rm` came
    /// first). Its files are never removed one by one: `rm` renames the whole directory.
    fn gone_if_missing(&self, e: Error) -> Error {
        match &e {
            Error::Io { source, .. } | Error::IoWhat { source, .. }
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                self.gone()
            }
            Error::NotFound(_) => self.gone(),
            _ => e,
        }
    }

    /// The full path of the daemon's log file, for messages.
    pub fn log_shown(&self) -> PathBuf {
        self.root.shown(self.dir.join(LOG))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK)
    }

    /// The container lock in `mode`, without waiting; `Ok(None)` when held in a
    /// conflicting mode. A container gone meanwhile is [`Error::UnknownContainer`].
    fn try_lock(&self, mode: lock::Mode) -> Result<Option<LockGuard>> {
        let g = match self.root.try_lock(self.lock_path(), mode) {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            // Its directory was renamed away by `rm`.
            Err(e) => return Err(self.gone_if_missing(e)),
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
        let rel = self.lock_path();
        let held = g
            .file()
            .metadata()
            .map_err(|e| Error::io(self.root.shown(&rel), e))?;
        match self.root.stat(&rel)? {
            Some(st) if st.st_dev == held.dev() && st.st_ino == held.ino() => Ok(()),
            _ => Err(self.gone()),
        }
    }

    /// Takes the container lock exclusive, without waiting (mount, rm: see the module
    /// docs and `crate::container::holder`); `Ok(None)` when anybody else holds it.
    pub fn try_exclusive(&self) -> Result<Option<LockGuard>> {
        self.try_lock(lock::Mode::Exclusive)
    }

    /// Takes the container lock shared, for a commit of the unmounted container;
    /// `Ok(None)` when it is held exclusive (mounted, being mounted or removed).
    pub fn lock_shared(&self) -> Result<Option<LockGuard>> {
        self.try_lock(lock::Mode::Shared)
    }

    /// Takes over the lock `layerfs mount` took for this container and handed to the
    /// daemon it started (`file`: the inherited open lock file).
    pub fn adopt_lock(&self, file: std::fs::File) -> Result<LockGuard> {
        let path = self.root.shown(self.lock_path());
        let Some(g) = lock::adopt(file, &path, lock::Mode::Exclusive)? else {
            return Err(Error::LockHeld {
                what: format!(
                    "container {}: the lock handed over by `layerfs mount`",
                    self.record.name
                ),
            });
        };
        self.check_held(&g)?;
        Ok(g)
    }

    /// True while somebody holds the lock exclusive: a daemon (serving the container,
    /// starting, or letting go), a mount being set up, an `rm`. Whether it is mounted is
    /// its daemon's to say (`crate::container::holder`).
    pub fn held_exclusive(&self) -> bool {
        matches!(self.lock_shared(), Ok(None))
    }

    /// Waits until nobody holds the lock exclusive any more, up to `timeout`: after an
    /// unmount, where the daemon's own exit cannot be watched.
    pub fn wait_unlocked(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if !self.held_exclusive() {
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
        let rel = self.dir.join(CONTAINER_JSON);
        let bytes = serde_json::to_vec_pretty(&self.record)
            .map_err(|e| Error::encode(self.root.shown(&rel).display().to_string(), e))?;
        store
            .write_atomic(&rel, &bytes)
            .map_err(|e| self.gone_if_missing(e))
    }

    /// Bytes the writable layer holds (what `ps -s` shows as SIZE): its regular files, a
    /// hard-linked inode once (names in the upper directory and the index of hard links
    /// alike), a sparse file (a metadata-only copy-up) by what it allocates. Walked through
    /// directory fds ([`crate::fdtree`]), so any depth is counted; what cannot be read (a
    /// live container changing meanwhile) is left out with a warning.
    pub fn size(&self) -> u64 {
        let mut sizes = Sizes::default();
        for rel in [self.dir.join(UPPER), self.dir.join(WORK).join(WORK_INDEX)] {
            let fd = match self.root.open_dir_opt(&rel) {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("size of container {}: {e}", self.record.name);
                    continue;
                }
            };
            if let Err(e) = crate::fdtree::walk(std::os::fd::AsFd::as_fd(&fd), &mut sizes) {
                log::warn!(
                    "size of container {}: {}: {e}",
                    self.record.name,
                    self.root.shown(&rel).display()
                );
            }
        }
        sizes.total
    }
}

/// What [`Container::size`] counts.
#[derive(Default)]
struct Sizes {
    /// Inodes with several links counted already.
    seen: std::collections::HashSet<(u64, u64)>,
    total: u64,
}

impl crate::fdtree::Visitor for Sizes {
    fn entry(
        &mut self,
        dir: std::os::fd::BorrowedFd<'_>,
        _path: &[std::ffi::OsString],
        e: &crate::fdtree::Entry,
    ) -> std::io::Result<bool> {
        use nix::sys::stat::SFlag;
        if e.kind == Some(nix::dir::Type::Directory) {
            return Ok(true);
        }
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let Ok(st) = nix::sys::stat::fstatat(dir, e.name.as_os_str(), flags) else {
            return Ok(false);
        };
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => Ok(true),
            SFlag::S_IFREG => {
                if st.st_nlink == 1 || self.seen.insert((st.st_dev, st.st_ino)) {
                    let allocated = u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512);
                    self.total += u64::try_from(st.st_size).unwrap_or(0).min(allocated);
                }
                Ok(false)
            }
            _ => Ok(false),
        }
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
    let dir = at::container(name);
    let record = store.read_json_opt(dir.join(CONTAINER_JSON))?;
    Ok(record.map(|record| Container {
        root: store.root_handle(),
        dir,
        record,
    }))
}

/// Creates a container of `image`, named `name` or `<image name>-<random>`; `created_as`:
/// the image as the user named it (a name of it, or its id), for `ps`. Built in `tmp/`
/// and renamed into place, so a container is complete when visible; and locked (exclusive)
/// before it is visible, so that nobody else mounts or removes it before its creator is
/// done with it.
pub fn create(
    store: &Store,
    name: Option<&str>,
    image: &store::ImageRecord,
    created_as: &str,
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
            format!("{base}-{}", fsops::random_suffix())
        }
    };
    if !valid_name(&name) {
        return Err(Error::Invalid {
            file: name,
            detail: "not a valid container name".into(),
        });
    }
    let stage = store.staging_dir("container")?;
    let record = ContainerRecord {
        name: name.clone(),
        image: image.id.to_string(),
        created: crate::time::now_rfc3339(),
        mountpoint: None,
        styles: Some(store.styles()?),
        image_name: Some(created_as.to_string()),
    };
    let dir = at::container(&name);
    let res = (|| -> Result<LockGuard> {
        for d in [UPPER, WORK] {
            store.dir().mkdir(stage.join(d), store::DIR_MODE)?;
        }
        // The upper root is the container's `/`: it starts with the image root's owner,
        // mode and times, as a copy-up of it would.
        let image_root = match image.layers.last() {
            Some(top) => store.open_layer_dir(&top.diff_id)?,
            None => store.dir().open_dir(store.empty_layer_dir()?)?,
        };
        let upper = stage.join(UPPER);
        copy_root_meta(&image_root, &store.dir().open_dir(&upper)?)
            .map_err(|e| Error::io(store.shown(&upper), e))?;
        let bytes =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::encode(CONTAINER_JSON, e))?;
        store.dir().write_new(stage.join(CONTAINER_JSON), &bytes)?;
        let Some(locked) = store
            .dir()
            .try_lock(stage.join(LOCK), lock::Mode::Exclusive)?
        else {
            return Err(Error::LockHeld {
                what: format!(
                    "{} (the lock of a container being made)",
                    store.shown(stage.join(LOCK)).display()
                ),
            });
        };
        store.dir().rename_noreplace(&stage, &dir)?;
        Ok(locked)
    })();
    match res {
        Ok(locked) => Ok((
            Container {
                root: store.root_handle(),
                dir,
                record,
            },
            locked,
        )),
        Err(e) => {
            let _ = store.dir().remove_tree(&stage);
            match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(Error::ContainerExists(name))
                }
                e => Err(e),
            }
        }
    }
}

/// Gives directory `to` the owner, mode and times of directory `from`.
fn copy_root_meta(from: &std::os::fd::OwnedFd, to: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let m = nix::sys::stat::fstat(from)?;
    match crate::sys::chown_fd(to.as_fd(), Some(m.st_uid), Some(m.st_gid)) {
        Ok(()) => {}
        // Not root: the owner stays ours (rootless ownership is kept elsewhere).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(e),
    }
    nix::sys::stat::fchmod(
        to,
        nix::sys::stat::Mode::from_bits_truncate(m.st_mode & 0o7777),
    )?;
    // Rootless: the owner the image root is meant to have is in its record.
    let record = std::ffi::OsStr::new(crate::ownership::XATTR);
    if let Some(v) = crate::sys::getxattr(crate::sys::At::Fd(from.as_fd()), record)? {
        crate::sys::setxattr(crate::sys::At::Fd(to.as_fd()), record, &v, 0)?;
    }
    let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::futimens(
        to,
        &t(m.st_atime, m.st_atime_nsec),
        &t(m.st_mtime, m.st_mtime_nsec),
    )?;
    Ok(())
}

/// Removes container `c`, whose lock `_lock` the caller holds exclusive ([`Container::lock`]):
/// its record and its writable layer go in one step (the directory is renamed into
/// `tmp/`, then deleted). The lock is held across the rename, so no mount starts meanwhile.
pub fn remove(store: &Store, c: &Container, _lock: LockGuard) -> Result<()> {
    fsops::remove_atomically(store, &c.dir, "container")
}

/// Removes container `c`, just created for a mount that failed (never mounted: its
/// writable layer is empty), as [`remove`] does, with the lock [`create`] gave (taken
/// again first: the daemon it was handed to unlocked it when it failed). Refused when
/// somebody else took the lock meanwhile, or its writable layer has data.
pub fn discard_new(store: &Store, c: Container, lock: LockGuard) -> Result<()> {
    if !lock.retake(&c.lock_path())? {
        return Err(Error::LockHeld {
            what: format!("container {} (taken meanwhile)", c.record.name),
        });
    };
    c.check_held(&lock)?;
    if !store.dir().entries(c.dir.join(UPPER))?.is_empty() {
        return Err(Error::ContainerHasData(c.record.name.clone()));
    }
    remove(store, &c, lock)
}

/// Every container with its directory.
pub fn all(store: &Store) -> Result<Vec<Container>> {
    Ok(list(store)?
        .into_iter()
        .map(|record| Container::of_record(store, record))
        .collect())
}
