//! Containers: the writable layers the mount creates, as far as the image store needs to
//! know them. `ROOT/containers/<name>/container.json` is written by `layerfs mount`; here we
//! only read the records, so that `rmi` and `prune` never remove an image (or its layers)
//! that a container uses.

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
//   lock             flock held exclusive by the mount daemon: one mount at a time
//   daemon.log       the detached daemon's stderr

use std::path::{Path, PathBuf};

use super::lock::{self, LockGuard};

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

    /// Takes the mount lock; `Ok(None)` when another daemon holds it (mounted).
    pub fn try_lock(&self) -> Result<Option<LockGuard>> {
        lock::try_lock(&self.dir.join(LOCK), lock::Mode::Exclusive)
    }

    /// True while a daemon serves this container.
    pub fn is_mounted(&self) -> bool {
        matches!(self.try_lock(), Ok(None))
    }

    /// Waits until no daemon holds the container (after an unmount), up to `timeout`.
    pub fn wait_unlocked(&self, timeout: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        loop {
            if !self.is_mounted() {
                return true;
            }
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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
    /// alike), a sparse file (a metadata-only copy-up) by what it allocates. Walked through
    /// directory fds ([`crate::fdtree`]), so any depth is counted; what cannot be read (a
    /// live container changing meanwhile) is left out with a warning.
    pub fn size(&self) -> u64 {
        let mut sizes = Sizes::default();
        for dir in [
            self.upper(),
            self.work().join(crate::union::layer::WORK_INDEX),
        ] {
            let fd = match crate::fdtree::open_dir_at(nix::fcntl::AT_FDCWD, dir.as_os_str()) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => {
                    log::warn!(
                        "size of container {}: {}: {e}",
                        self.record.name,
                        dir.display()
                    );
                    continue;
                }
            };
            if let Err(e) = crate::fdtree::walk(std::os::fd::AsFd::as_fd(&fd), &mut sizes) {
                log::warn!(
                    "size of container {}: {}: {e}",
                    self.record.name,
                    dir.display()
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
    ) -> io::Result<bool> {
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
    let dir = store.containers_dir().join(name);
    let record = super::read_json_opt(&dir.join(CONTAINER_JSON))?;
    Ok(record.map(|record| Container { dir, record }))
}

/// Creates a container of `image`, named `name` or `<image name>-<random>`. Built in `tmp/`
/// and renamed into place, so a container is complete when visible.
pub fn create(store: &Store, name: Option<&str>, image: &super::ImageRecord) -> Result<Container> {
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
    let dir = containers.join(&name);
    match nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &stage,
        nix::fcntl::AT_FDCWD,
        &dir,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(Container { dir, record }),
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

/// Removes container `c`: its record and its writable layer go in one step (the directory
/// is renamed into `tmp/`, then deleted). Refused while a daemon serves it: the caller
/// unmounts first. The mount lock is held across the rename, so no mount starts meanwhile.
pub fn remove(store: &Store, c: &Container) -> Result<()> {
    let Some(_lock) = c.try_lock()? else {
        return Err(Error::Conflict(format!(
            "container {} is mounted{}: unmount it first (or --force)",
            c.record.name,
            c.at_mountpoint()
        )));
    };
    super::fsops::remove_atomically(store, &c.dir, "container")
}

/// Removes container `c`, just created for a mount that failed (never mounted: its
/// writable layer is empty), as [`remove`] does. Refused while a daemon holds it or when
/// its writable layer has data.
pub fn discard_new(store: &Store, c: Container) -> Result<()> {
    let Some(_lock) = c.try_lock()? else {
        return Err(Error::Conflict(format!(
            "container {} is mounted",
            c.record.name
        )));
    };
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
    super::fsops::remove_atomically(store, &c.dir, "container")
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
