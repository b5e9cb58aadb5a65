//! The content-addressed layer store: layers unpacked once by diff_id, image records,
//! tags, containers, locking, atomic installs and garbage collection.
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
//! removed by the next load that finds the store idle, and by `prune`.
//!
//! The root is created mode 0700, and `layers/`, `images/`, `containers/`, `mounts/` and
//! `tmp/` are kept 0700 (tightened when found wider), as Docker keeps `/var/lib/docker`:
//! layers and containers' writable layers hold setuid binaries and device nodes of the
//! images, which must not be reachable by other local users through the store. Files the
//! store writes itself (records, tags, locks, logs) are created 0600 whatever the umask
//! (the mount daemon runs with umask 0); the files inside layers keep the images' modes.

pub mod containers;
pub mod export;
pub mod fsops;
pub mod gc;
pub mod images;
pub mod layer_tar;
pub mod layers;
pub mod load;
pub mod lock;
pub mod mounts;
pub mod save;
pub mod tarsplit;
pub mod unpack;
pub mod usage;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::whiteout::Styles;
pub use images::{ImageRecord, LayerRecord};
pub use layers::LayerInfo;
pub use lock::LockGuard;
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

/// Opens `path` for writing with the store's file mode, creating it if needed. The mode
/// is given at creation, so no umask can widen it.
pub(crate) fn open_private(path: &Path, create_new: bool) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.write(true).mode(FILE_MODE);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true).append(true);
    }
    o.open(path)
}

/// Writes a new file (`path` must not exist) with the store's file mode.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    open_private(path, true)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| Error::io(path, e))
}

/// Creates directory `d` with [`DIR_MODE`], or tightens it to that mode when it exists
/// with bits for others (a store made by an older layerfs, or `containers/` made with
/// the umask's mode).
fn ensure_private_dir(d: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(d) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(d, e)),
    }
    let meta = fs::metadata(d).map_err(|e| Error::io(d, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid {
            file: d.display().to_string(),
            detail: "not a directory".into(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(d, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| Error::io(d, e))?;
    }
    Ok(())
}

/// How [`Store::write_atomic`] names the file it stages for `name`, beside it.
fn staged_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// A layer store rooted at a directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    styles: OnceLock<Styles>,
}

/// Numbers staging directories of one process apart.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store at `root`, creating it if `root` does not exist or is an empty
    /// directory. Anything else that is not a store (a file, a directory with other
    /// things in it) is refused, never turned into one.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
            styles: OnceLock::new(),
        };
        let not_a_store = |detail: &str| Error::NotAStore {
            path: root.to_path_buf(),
            detail: detail.to_string(),
        };
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_store("a file, not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(root)
                    .map_err(|e| Error::io(root, e))?;
            }
            Err(e) => return Err(Error::io(root, e)),
        }
        let vpath = root.join("VERSION");
        match fs::read_to_string(&vpath) {
            Ok(v) if v.trim() == STORE_VERSION => {}
            Ok(v) => {
                return Err(Error::StoreVersion {
                    path: root.to_path_buf(),
                    found: v.trim().to_string(),
                    wanted: STORE_VERSION.into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new store: only in an empty directory (VERSION goes first, so a store
                // interrupted while being created is still recognised). Another process
                // may be creating it at the same moment: its staged VERSION does not make
                // the directory foreign, and a VERSION that appeared since is accepted.
                let staged = staged_prefix("VERSION");
                let foreign = fs::read_dir(root)
                    .map_err(|e| Error::io(root, e))?
                    .filter_map(|e| e.ok())
                    .any(|e| !e.file_name().to_string_lossy().starts_with(&staged));
                if !foreign {
                    store.write_atomic(&vpath, format!("{STORE_VERSION}\n").as_bytes())?;
                } else if fs::read_to_string(&vpath)
                    .map(|v| v.trim() != STORE_VERSION)
                    .unwrap_or(true)
                {
                    return Err(not_a_store(
                        "a directory with other files and no VERSION file; pick a new or \
                         empty directory",
                    ));
                }
            }
            Err(e) => return Err(Error::io(&vpath, e)),
        }
        for d in [
            store.layers_dir(),
            store.images_dir(),
            store.containers_dir(),
            store.mounts_dir(),
            store.tmp_dir(),
        ] {
            ensure_private_dir(&d)?;
        }
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/layers`.
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// `ROOT/layers/<hex>`: the layer's directory (with `diff/` and `layer.json`).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// `ROOT/layers/<hex>/diff`: the unpacked layer, for overlay `lowerdir=`.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layer_path(diff_id).join("diff")
    }

    /// `ROOT/images`.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `ROOT/images/<hex>`.
    pub fn image_path(&self, id: &Digest) -> PathBuf {
        self.images_dir().join(id.hex())
    }

    /// `ROOT/tmp`: staging on the store's filesystem.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// `ROOT/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `ROOT/mounts`: records of read-only mounts (see [`mounts`]).
    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    /// `ROOT/empty`: an empty directory, the one lower layer of an image without layers
    /// (a union needs at least one). Created on first use, complete when visible.
    pub fn empty_layer_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("empty");
        if dir.is_dir() {
            return Ok(dir);
        }
        let stage = self.staging_dir("empty")?;
        let made = stage.join("empty");
        let res = fs::DirBuilder::new()
            .mode(EMPTY_ROOT_MODE)
            .create(&made)
            .and_then(|()| fs::set_permissions(&made, fs::Permissions::from_mode(EMPTY_ROOT_MODE)))
            .map_err(|e| Error::io(&made, e))
            .and_then(|()| layers::rename_noreplace(&made, &dir));
        let _ = fs::remove_dir_all(&stage);
        match res {
            Ok(()) => Ok(dir),
            // Made by a concurrent mount meanwhile.
            Err(_) if dir.is_dir() => Ok(dir),
            Err(e) => Err(e),
        }
    }

    /// `ROOT/refs.json`.
    pub fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Holds the store lock shared (loads, mounts).
    pub fn lock_shared(&self) -> Result<LockGuard> {
        lock::lock(&self.lock_path(), lock::Mode::Shared, "shared")
    }

    /// Holds the store lock exclusive (rmi, prune).
    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        lock::lock(&self.lock_path(), lock::Mode::Exclusive, "exclusive")
    }

    /// The shared lock for a load: when nobody else uses the store, first clears
    /// leftovers of killed processes from `tmp/`.
    pub fn lock_for_load(&self) -> Result<LockGuard> {
        match lock::try_lock(&self.lock_path(), lock::Mode::Exclusive)? {
            Some(mut g) => {
                let removed = gc::clean_tmp(self)?;
                if removed > 0 {
                    log::info!("removed {removed} leftover(s) of interrupted work from tmp/");
                }
                g.downgrade(&self.lock_path())?;
                Ok(g)
            }
            None => self.lock_shared(),
        }
    }

    /// Holds `meta.lock` for a short read-modify-write.
    pub fn lock_meta(&self) -> Result<LockGuard> {
        lock::lock(
            &self.root.join("meta.lock"),
            lock::Mode::Exclusive,
            "metadata",
        )
    }

    /// A new, empty, uniquely named directory in `tmp/`.
    pub fn staging_dir(&self, what: &str) -> Result<PathBuf> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = self
            .tmp_dir()
            .join(format!("{what}-{}-{n}", std::process::id()));
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&p)
            .map_err(|e| Error::io(&p, e))?;
        Ok(p)
    }

    /// Writes a file atomically: temp file in the same directory, then rename. No fsync:
    /// like Docker's layer store, the store trades durability across a power cut for
    /// speed (an fsync on ext4 would flush every layer file written before it); a kill at
    /// any point still leaves either the old or the new file.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(
            "{}{}-{n}",
            staged_prefix(&name),
            std::process::id()
        ));
        let res = (|| -> io::Result<()> {
            let mut f = open_private(&tmp, true)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(path, e));
        }
        Ok(())
    }

    /// The whiteout/opaque spellings this process can write in the store, probed once on
    /// a scratch directory in `tmp/`.
    pub fn styles(&self) -> Result<Styles> {
        if let Some(s) = self.styles.get() {
            return Ok(*s);
        }
        let scratch = self.staging_dir("probe")?;
        let fd = fs::File::open(&scratch).map_err(|e| Error::io(&scratch, e));
        let styles = fd.map(|f| crate::whiteout::probe_styles(std::os::fd::AsFd::as_fd(&f)));
        let _ = fs::remove_dir_all(&scratch);
        let styles = styles?;
        Ok(*self.styles.get_or_init(|| styles))
    }

    /// How unpack keeps ownership: chown as root, `override_stat` xattrs otherwise.
    pub fn ownership(&self) -> Ownership {
        if crate::sys::is_root() {
            Ownership::Chown
        } else {
            Ownership::OverrideStat
        }
    }

    /// All tags: full reference → image id.
    pub fn refs(&self) -> Result<BTreeMap<String, Digest>> {
        let p = self.refs_path();
        match fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| Error::json(p.display().to_string(), e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    /// Replaces `refs.json` (callers hold `meta.lock`).
    pub fn write_refs(&self, refs: &BTreeMap<String, Digest>) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(refs)
            .map_err(|e| Error::io_what("encoding refs.json", io::Error::other(e)))?;
        bytes.push(b'\n');
        self.write_atomic(&self.refs_path(), &bytes)
    }

    /// The installed layer's record, if the layer is installed.
    pub fn layer_info(&self, diff_id: &Digest) -> Result<Option<LayerInfo>> {
        layers::read_info(self, diff_id)
    }

    /// True when the layer is installed.
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).join(layers::LAYER_JSON).is_file()
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
        let p = self.image_path(id).join(images::CONFIG_JSON);
        fs::read(&p).map_err(|e| Error::io(&p, e))
    }

    /// The parsed config of image `id`.
    pub fn image_config(&self, id: &Digest) -> Result<oci_spec::image::ImageConfiguration> {
        let bytes = self.image_config_bytes(id)?;
        let p = self.image_path(id).join(images::CONFIG_JSON);
        crate::image::parse_config(&bytes, &p.display().to_string())
    }
}

impl Store {
    /// The union's lower layers for `image`, top first; for an image without layers, the
    /// store's empty directory (an empty root).
    pub fn lower_specs(&self, image: &ImageRecord) -> Result<Vec<crate::union::LayerSpec>> {
        if image.layers.is_empty() {
            return Ok(vec![crate::union::LayerSpec {
                path: self.empty_layer_dir()?,
                wh_files: false,
            }]);
        }
        let mut specs = Vec::with_capacity(image.layers.len());
        for l in image.layers.iter().rev() {
            let info = self.layer_info(&l.diff_id)?.ok_or_else(|| Error::Invalid {
                file: format!("image {}", image.id),
                detail: format!("its layer {} is not in the store", l.diff_id),
            })?;
            specs.push(crate::union::LayerSpec::written_with(
                self.layer_dir(&l.diff_id),
                info.styles,
            ));
        }
        Ok(specs)
    }
}

/// The entries of `dir` named by a digest's hex (layers, images), sorted; none when the
/// directory does not exist. Other names (staging leftovers) are not entries.
pub(crate) fn digest_entries(dir: &Path) -> Result<Vec<Digest>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and parses JSON file `p`; `Ok(None)` when it does not exist (not installed).
pub(crate) fn read_json_opt<T: serde::de::DeserializeOwned>(p: &Path) -> Result<Option<T>> {
    match fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::json(p.display().to_string(), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}
