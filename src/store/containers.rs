//! Containers: the writable layers the mount creates, as far as the image store needs to
//! know them. `ROOT/containers/<name>/container.json` is written by `layerfs mount`; here we
//! only read the records, so that `rmi` and `prune` never remove an image (or its layers)
//! that a container uses.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::union::LayerSpec;
use crate::whiteout::Styles;

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
    /// How the writable layer spells whiteouts and opaque directories (see
    /// [`Container::styles`]); absent in records of older versions until the next mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub styles: Option<Styles>,
}

/// Every container record (none when `containers/` does not exist). A directory without
/// a readable record is skipped with a warning rather than failing every listing.
pub fn list(store: &Store) -> Result<Vec<ContainerRecord>> {
    let mut out = Vec::new();
    for name in store.dir().entries(super::at::CONTAINERS)? {
        let p = Path::new(super::at::CONTAINERS)
            .join(&name)
            .join(CONTAINER_JSON);
        match store.read_json_opt::<ContainerRecord>(&p) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => {}
            Err(err @ Error::BadJson { .. }) => log::warn!("{err}"),
            Err(err) => return Err(err),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

// ---- the container side: created and used by `layerfs mount` ----
//
// ROOT/containers/<name>/
//   container.json   ContainerRecord (mountpoint set while mounted; the writable
//                    layer's whiteout spellings, fixed when it is made)
//   upper/ work/     the writable layer, kernel overlay format (see union/)
//   lock             flock held exclusive by the mount daemon: one mount at a time
//   daemon.log       the detached daemon's stderr

use std::path::{Path, PathBuf};

use super::lock::{self, LockGuard};
use crate::union::WorkSpec;
use crate::union::layer::WORK_INDEX;

const UPPER: &str = "upper";
const WORK: &str = "work";
const LOCK: &str = "lock";
const LOG: &str = "daemon.log";

/// One container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// The store's root, through which the container's files are reached.
    root: Arc<super::Root>,
    /// `containers/<name>`, inside the store.
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
        let fd = self.root.open_dir(&rel)?;
        Ok((
            LayerSpec::written_with(fd, self.root.shown(&rel), styles),
            styles,
        ))
    }

    /// The work directory, opened beneath the store's verified root.
    pub fn work_spec(&self) -> Result<WorkSpec> {
        let rel = self.dir.join(WORK);
        Ok(WorkSpec::opened(
            self.root.open_dir(&rel)?,
            self.root.shown(&rel),
        ))
    }

    /// The container's directory, opened (the control socket lives there).
    pub fn open_dir(&self) -> Result<std::os::fd::OwnedFd> {
        self.root.open_dir(&self.dir)
    }

    /// The daemon's log file, opened for appending (created 0600).
    pub fn open_log(&self) -> Result<std::fs::File> {
        self.root.open_write(self.dir.join(LOG), false)
    }

    /// The full path of the daemon's log file, for messages.
    pub fn log_shown(&self) -> PathBuf {
        self.root.shown(self.dir.join(LOG))
    }

    /// Takes the mount lock; `Ok(None)` when another daemon holds it (mounted).
    pub fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.root
            .try_lock(self.dir.join(LOCK), lock::Mode::Exclusive)
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
        let rel = self.dir.join(CONTAINER_JSON);
        let bytes = serde_json::to_vec_pretty(&self.record)
            .map_err(|e| Error::json(self.root.shown(&rel).display().to_string(), e))?;
        store.write_atomic(&rel, &bytes)
    }

    /// Bytes the writable layer holds (what `ps -s` shows as SIZE): its regular files, a
    /// hard-linked inode once (names in the upper directory and the index of hard links
    /// alike), a sparse file (a metadata-only copy-up) by what it allocates.
    pub fn size(&self) -> u64 {
        use nix::sys::stat::SFlag;
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        let mut count = |st: &nix::sys::stat::FileStat| {
            let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
            if regular && (st.st_nlink == 1 || seen.insert((st.st_dev, st.st_ino))) {
                total += (st.st_size as u64).min((st.st_blocks as u64).saturating_mul(512));
            }
        };
        for rel in [self.dir.join(UPPER), self.dir.join(WORK).join(WORK_INDEX)] {
            if let Ok(Some(fd)) = self.root.open_dir_opt(&rel) {
                super::fsops::visit_tree(fd, &mut count);
            }
        }
        total
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
    let dir = super::at::container(name);
    let record = store.read_json_opt(dir.join(CONTAINER_JSON))?;
    Ok(record.map(|record| Container {
        root: store.root_handle(),
        dir,
        record,
    }))
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
    let stage = store.staging_dir("container")?;
    let record = ContainerRecord {
        name: name.clone(),
        image: image.id.to_string(),
        created: crate::time::now_rfc3339(),
        mountpoint: None,
        styles: Some(store.styles()?),
    };
    let dir = super::at::container(&name);
    let res = (|| -> Result<()> {
        for d in [UPPER, WORK] {
            store.dir().mkdir(stage.join(d), super::DIR_MODE)?;
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
            serde_json::to_vec_pretty(&record).map_err(|e| Error::json(CONTAINER_JSON, e))?;
        store.dir().write_new(stage.join(CONTAINER_JSON), &bytes)?;
        store.dir().rename_noreplace(&stage, &dir)
    })();
    match res {
        Ok(()) => Ok(Container {
            root: store.root_handle(),
            dir,
            record,
        }),
        Err(e) => {
            let _ = store.dir().remove_tree(&stage);
            match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(Error::Conflict(format!(
                        "a container named {name} already exists"
                    )))
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
    let t = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::futimens(
        to,
        &t(m.st_atime, m.st_atime_nsec),
        &t(m.st_mtime, m.st_mtime_nsec),
    )?;
    Ok(())
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
    if !store.dir().entries(c.dir.join(UPPER))?.is_empty() {
        return Err(Error::Conflict(format!(
            "container {} has data in its writable layer",
            c.record.name
        )));
    }
    super::fsops::remove_atomically(store, &c.dir, "container")
}

/// Every container with its directory.
pub fn all(store: &Store) -> Result<Vec<Container>> {
    Ok(list(store)?
        .into_iter()
        .map(|record| Container {
            root: store.root_handle(),
            dir: super::at::container(&record.name),
            record,
        })
        .collect())
}
