//! The content-addressed layer store: layers unpacked once by diff_id, image records,
//! tags, container records, locking, atomic installs and garbage collection.
//!
//! On-disk layout (`VERSION` = "1"; the mount reads this, keep it stable):
//! ```text
//! ROOT/VERSION                            "1"
//! ROOT/lock                               flock: shared by load and mount, exclusive by rmi/prune
//! ROOT/meta.lock                          flock: exclusive around read-modify-write of refs.json, layer.json
//! ROOT/layers/<diff_id hex>/diff/         the unpacked layer, kernel overlay format
//! ROOT/layers/<diff_id hex>/layer.json    LayerInfo: diff_id, size, entries, styles, sources, created
//! ROOT/images/<config hex>/config.json    the config blob, byte for byte (sha256 = image id)
//! ROOT/images/<config hex>/manifest.json  the manifest, byte for byte, when the source had one
//! ROOT/images/<config hex>/image.json     ImageRecord: id, manifest digest, layers, loaded time
//! ROOT/refs.json                          {"docker.io/library/busybox:latest": "sha256:…"}
//! ROOT/containers/<name>/container.json   written by the mount (see containers.rs)
//! ROOT/mounts/<id>.json                   a read-only mount, locked by its daemon (see mounts.rs)
//! ROOT/empty/                             an empty directory: the lower layer of an image without layers
//! ROOT/tmp/                               staging, same filesystem as everything else
//! ```
//! Invariants: a directory under `layers/` or `images/` is complete when visible (it is
//! built in `tmp/` and renamed into place; removal renames it back into `tmp/` before
//! deleting); `layers/<hex>` holds the layer whose uncompressed tar has sha256 `<hex>`; an
//! image record only names layers that are installed; `refs.json` only names installed
//! images and is replaced by rename. `tmp/` may hold leftovers of killed processes,
//! removed by the next load that finds the store idle, and by `prune`; `df` counts them.
//!
//! The root must belong to the caller and is kept mode 0700 (a root another user owns or
//! may write is refused: see [`root`]); every path below it is opened relative to the
//! root's verified fd without following symlinks. `layers/`, `images/`, `containers/`,
//! `mounts/` and `tmp/` are kept 0700 (tightened when found wider), as Docker keeps `/var/lib/docker`:
//! layers and containers' writable layers hold setuid binaries and device nodes of the
//! images, which must not be reachable by other local users through the store. Files the
//! store writes itself (records, tags, locks, logs) are created 0600 whatever the umask
//! (the mount daemon runs with umask 0); the files inside layers keep the images' modes.

pub mod containers;
pub mod fsops;
pub mod gc;
pub mod images;
pub mod layer_tar;
pub mod layers;
pub mod load;
pub mod lock;
pub mod mounts;
pub mod progress;
pub mod root;
pub mod save;
pub mod tarsplit;
pub mod unpack;
pub mod usage;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::whiteout::Styles;
pub use images::{ImageRecord, LayerRecord};
pub use layers::LayerInfo;
pub use lock::LockGuard;
pub use root::{Found, Root};
pub use unpack::Ownership;

/// The store format this code writes and reads.
pub const STORE_VERSION: &str = "1";

/// Mode of the store's own directories (see the module docs).
pub const DIR_MODE: u32 = 0o700;

/// Mode of the files the store writes itself: records, tags, locks, logs.
pub const FILE_MODE: u32 = 0o600;

/// Mode of `ROOT/empty/`, the root directory of an image without layers (Docker's
/// default for a directory a layer does not describe).
const EMPTY_ROOT_MODE: u32 = 0o755;

/// Paths inside the store, relative to its root (the layout above). Only [`Root`] opens
/// them; they are never joined to the root's path except for messages.
pub mod at {
    use std::path::PathBuf;

    use crate::digest::Digest;

    pub const VERSION: &str = "VERSION";
    pub const LOCK: &str = "lock";
    pub const META_LOCK: &str = "meta.lock";
    pub const REFS: &str = "refs.json";
    pub const LAYERS: &str = "layers";
    pub const IMAGES: &str = "images";
    pub const CONTAINERS: &str = "containers";
    pub const MOUNTS: &str = "mounts";
    pub const TMP: &str = "tmp";
    pub const EMPTY: &str = "empty";

    /// `layers/<hex>`: a layer's directory (with `diff/` and `layer.json`).
    pub fn layer(diff_id: &Digest) -> PathBuf {
        PathBuf::from(LAYERS).join(diff_id.hex())
    }

    /// `layers/<hex>/diff`: the unpacked layer.
    pub fn layer_diff(diff_id: &Digest) -> PathBuf {
        layer(diff_id).join("diff")
    }

    /// `images/<hex>`.
    pub fn image(id: &Digest) -> PathBuf {
        PathBuf::from(IMAGES).join(id.hex())
    }

    /// `containers/<name>`.
    pub fn container(name: &str) -> PathBuf {
        PathBuf::from(CONTAINERS).join(name)
    }

    /// `tmp/<name>`.
    pub fn tmp(name: &str) -> PathBuf {
        PathBuf::from(TMP).join(name)
    }
}

/// How [`Store::write_atomic`] names the file it stages for `name`, beside it.
fn staged_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// The process that made entry `name` of `tmp/`, when its name says (`WHAT-PID-N`, as
/// [`Store::staging_dir`] names them).
pub fn staging_pid(name: &std::ffi::OsStr) -> Option<u32> {
    let mut parts = name.to_str()?.rsplitn(3, '-');
    let n = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// A layer store rooted at a directory.
#[derive(Debug)]
pub struct Store {
    root: std::sync::Arc<Root>,
    styles: OnceLock<Styles>,
}

/// Numbers staging directories of one process apart.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store at `root`, creating it if `root` does not exist or is an empty
    /// directory. Anything else that is not a store (a file, a directory with other
    /// things in it) is refused, never turned into one; so is a root that another user
    /// owns or may write (see [`root`]).
    pub fn open(root: &Path) -> Result<Store> {
        let (dir, found) = Root::open(root, &staged_prefix(at::VERSION))?;
        let store = Store {
            root: std::sync::Arc::new(dir),
            styles: OnceLock::new(),
        };
        let not_a_store = |detail: &str| Error::NotAStore {
            path: root.to_path_buf(),
            detail: detail.to_string(),
        };
        let version = |s: &Store| -> Result<Option<String>> {
            Ok(s.root
                .read(at::VERSION)?
                .map(|v| String::from_utf8_lossy(&v).trim().to_string()))
        };
        match version(&store)? {
            Some(v) if v == STORE_VERSION => {}
            Some(v) => {
                return Err(Error::StoreVersion {
                    path: root.to_path_buf(),
                    found: v,
                    wanted: STORE_VERSION.into(),
                });
            }
            // A new store: only in an empty directory (VERSION goes first, so a store
            // interrupted while being created is still recognised). Another process may
            // be creating it at the same moment: its staged VERSION does not make the
            // directory populated, and a VERSION that appeared since is accepted.
            None if found == Found::Empty => {
                store.write_atomic(at::VERSION, format!("{STORE_VERSION}\n").as_bytes())?;
            }
            None => {
                if version(&store)?.as_deref() != Some(STORE_VERSION) {
                    return Err(not_a_store(
                        "a directory with other files and no VERSION file; pick a new or \
                         empty directory",
                    ));
                }
            }
        }
        for d in [at::LAYERS, at::IMAGES, at::CONTAINERS, at::MOUNTS, at::TMP] {
            store.root.ensure_private_dir(d)?;
        }
        Ok(store)
    }

    /// Opens the store at `root` for a command that only reads or changes what is there:
    /// a path that does not exist is [`Error::NoStore`], not a new store (a mistyped
    /// `--root` would otherwise leave an empty store behind). An existing directory is
    /// opened as [`Store::open`] does.
    pub fn open_existing(root: &Path) -> Result<Store> {
        match std::fs::symlink_metadata(root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NoStore {
                path: root.to_path_buf(),
            }),
            _ => Store::open(root),
        }
    }

    /// The store root, as the user named it (for messages).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The verified root directory: every file of the store is reached through it.
    pub fn dir(&self) -> &Root {
        &self.root
    }

    /// The root, shared (containers keep it to reach their own directories).
    pub(crate) fn root_handle(&self) -> std::sync::Arc<Root> {
        std::sync::Arc::clone(&self.root)
    }

    /// The full path of `rel` (inside the store), for messages.
    pub fn shown(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.shown(rel)
    }

    /// `layers/<hex>/diff` opened: the unpacked layer, for the union.
    pub fn open_layer_dir(&self, diff_id: &Digest) -> Result<std::os::fd::OwnedFd> {
        self.root.open_dir(at::layer_diff(diff_id))
    }

    /// `empty/`: an empty directory, the one lower layer of an image without layers
    /// (a union needs at least one). Created on first use, complete when visible.
    pub fn empty_layer_dir(&self) -> Result<PathBuf> {
        let dir = PathBuf::from(at::EMPTY);
        if self.root.is_dir(&dir) {
            return Ok(dir);
        }
        let stage = self.staging_dir("empty")?;
        let made = stage.join("empty");
        let res = self
            .root
            .mkdir(&made, EMPTY_ROOT_MODE)
            .and_then(|()| self.root.rename_noreplace(&made, &dir));
        let _ = self.root.remove_tree(&stage);
        match res {
            Ok(()) => Ok(dir),
            // Made by a concurrent mount meanwhile.
            Err(_) if self.root.is_dir(&dir) => Ok(dir),
            Err(e) => Err(e),
        }
    }

    /// Holds the store lock shared (loads, mounts).
    pub fn lock_shared(&self) -> Result<LockGuard> {
        self.root.lock(at::LOCK, lock::Mode::Shared, "shared")
    }

    /// Holds the store lock exclusive (rmi, prune).
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        self.root.lock(at::LOCK, lock::Mode::Exclusive, "exclusive")
    }

    /// The shared lock for a load: when nobody else uses the store, first clears
    /// leftovers of killed processes from `tmp/`.
    pub fn lock_for_load(&self) -> Result<LockGuard> {
        match self.root.try_lock(at::LOCK, lock::Mode::Exclusive)? {
            Some(mut g) => {
                let removed = gc::clean_tmp(self, false)?.entries;
                if removed > 0 {
                    log::info!("removed {removed} leftover(s) of interrupted work from tmp/");
                }
                g.downgrade(&self.shown(at::LOCK))?;
                Ok(g)
            }
            None => self.lock_shared(),
        }
    }

    /// Holds `meta.lock` for a short read-modify-write.
    pub fn lock_meta(&self) -> Result<LockGuard> {
        self.root
            .lock(at::META_LOCK, lock::Mode::Exclusive, "metadata")
    }

    /// A new, empty, uniquely named directory in `tmp/` (its path inside the store).
    pub fn staging_dir(&self, what: &str) -> Result<PathBuf> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = at::tmp(&format!("{what}-{}-{n}", std::process::id()));
        // Known before anything is staged: an interrupted command removes it.
        crate::interrupt::note_store(&self.root);
        self.root.mkdir(&p, DIR_MODE)?;
        Ok(p)
    }

    /// Writes file `rel` atomically: temp file in the same directory, then rename. No
    /// fsync: like Docker's layer store, the store trades durability across a power cut
    /// for speed (an fsync on ext4 would flush every layer file written before it); a kill
    /// at any point still leaves either the old or the new file.
    pub fn write_atomic(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
        let rel = rel.as_ref();
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = rel
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staged = format!("{}{}-{n}", staged_prefix(&name), std::process::id());
        self.root.write_atomic(rel, &staged, bytes)
    }

    /// Reads and parses JSON file `rel`; `Ok(None)` when it does not exist (not installed).
    pub fn read_json_opt<T: serde::de::DeserializeOwned>(
        &self,
        rel: impl AsRef<Path>,
    ) -> Result<Option<T>> {
        let rel = rel.as_ref();
        match self.root.read(rel)? {
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::json(self.shown(rel).display().to_string(), e)),
            None => Ok(None),
        }
    }

    /// The entries of directory `rel` named by a digest's hex (layers, images), sorted;
    /// none when the directory does not exist. Other names (staging leftovers) are not
    /// entries.
    pub(crate) fn digest_entries(&self, rel: &str) -> Result<Vec<Digest>> {
        let mut out: Vec<Digest> = self
            .root
            .entries(rel)?
            .iter()
            .filter_map(|n| n.to_str().and_then(|n| Digest::from_hex(n).ok()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The whiteout/opaque spellings this process can write in the store, probed once on
    /// a scratch directory in `tmp/`.
    pub fn styles(&self) -> Result<Styles> {
        if let Some(s) = self.styles.get() {
            return Ok(*s);
        }
        let scratch = self.staging_dir("probe")?;
        let fd = self.root.open_dir(&scratch);
        let styles = fd.map(|f| crate::whiteout::probe_styles(std::os::fd::AsFd::as_fd(&f)));
        let _ = self.root.remove_tree(&scratch);
        let styles = styles?;
        Ok(*self.styles.get_or_init(|| styles))
    }

    /// How unpack keeps ownership: chown as the host's root, `override_stat` xattrs
    /// otherwise (root of a user namespace included: most ids are not its to give).
    pub fn ownership(&self) -> Ownership {
        if crate::sys::is_host_root() {
            Ownership::Chown
        } else {
            Ownership::OverrideStat
        }
    }

    /// All tags: full reference → image id.
    pub fn refs(&self) -> Result<BTreeMap<String, Digest>> {
        Ok(self.read_json_opt(at::REFS)?.unwrap_or_default())
    }

    /// Replaces `refs.json` (callers hold `meta.lock`).
    pub fn write_refs(&self, refs: &BTreeMap<String, Digest>) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(refs).map_err(|e| Error::encode("refs.json", e))?;
        bytes.push(b'\n');
        self.write_atomic(at::REFS, &bytes)
    }

    /// The installed layer's record, if the layer is installed.
    pub fn layer_info(&self, diff_id: &Digest) -> Result<Option<LayerInfo>> {
        layers::read_info(self, diff_id)
    }

    /// True when the layer is installed.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.root
            .is_file(at::layer(diff_id).join(layers::LAYER_JSON))
    }

    /// Resolves `name[:tag]` (Docker normalization), a full image id, or an id prefix of
    /// at least 12 hex digits (with or without `sha256:`).
    pub fn resolve_image(&self, reference: &str) -> Result<ImageRecord> {
        images::resolve(self, reference)
    }

    /// The image record of `id`, with its tags.
    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        images::read_record(self, id)
    }

    /// Every image, with tags, newest first.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        images::list(self)
    }

    /// The config blob of image `id`, byte for byte.
    pub fn image_config_bytes(&self, id: &Digest) -> Result<Vec<u8>> {
        let p = at::image(id).join(images::CONFIG_JSON);
        self.root
            .read(&p)?
            .ok_or_else(|| Error::io(self.shown(&p), io::ErrorKind::NotFound.into()))
    }

    /// The parsed config of image `id`.
    pub fn image_config(&self, id: &Digest) -> Result<oci_spec::image::ImageConfiguration> {
        let bytes = self.image_config_bytes(id)?;
        let p = self.shown(at::image(id).join(images::CONFIG_JSON));
        crate::image::parse_config(&bytes, &p.display().to_string())
    }
}

impl Store {
    /// The union's lower layers for `image`, top first, each opened beneath the verified
    /// root; for an image without layers, the store's empty directory (an empty root).
    pub fn lower_specs(&self, image: &ImageRecord) -> Result<Vec<crate::union::LayerSpec>> {
        if image.layers.is_empty() {
            let empty = self.empty_layer_dir()?;
            return Ok(vec![crate::union::LayerSpec::opened(
                self.root.open_dir(&empty)?,
                self.shown(&empty),
                false,
            )]);
        }
        let mut specs = Vec::with_capacity(image.layers.len());
        for l in image.layers.iter().rev() {
            let info = self.layer_info(&l.diff_id)?.ok_or_else(|| Error::Invalid {
                file: format!("image {}", image.id),
                detail: format!("its layer {} is not in the store", l.diff_id),
            })?;
            specs.push(
                crate::union::LayerSpec::written_with(
                    self.open_layer_dir(&l.diff_id)?,
                    self.shown(at::layer_diff(&l.diff_id)),
                    info.styles,
                )
                .labeled(l.diff_id.to_string()),
            );
        }
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_say_their_process() {
        let pid = |s: &str| staging_pid(std::ffi::OsStr::new(s));
        assert_eq!(pid("layer-0123456789ab-4242-0"), Some(4242));
        assert_eq!(pid("rm-layer-17-3"), Some(17));
        assert_eq!(pid("mount-4242-1x7f.json"), None);
        assert_eq!(pid("4242-1"), None);
        assert_eq!(pid("x-4242-"), None);
        assert_eq!(pid("x-y-1"), None);
    }
}
