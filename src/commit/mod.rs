//! `commit`: a container's writable layer becomes the top layer of a new image.
//!
//! Order, so that a failure at any point leaves the store as it was:
//! 1. checks that cost nothing: the container, its image (still in the store), the
//!    `--change` instructions (applied to a copy of the config), the new name (free);
//! 2. the container is held still (see [`crate::container::control`], and `container/dir.rs` for
//!    the container lock): not mounted, its lock is taken shared, so no mount or `rm`
//!    starts; mounted, its daemon holds every write, and keeps the container from other
//!    mounts and `rm` even when its mount ends, until we are done — a consistent
//!    snapshot, as `docker commit` pauses the container;
//! 3. the layer is written as a tar into `tmp/` ([`layer`]), its sha256 (the diff_id)
//!    computed on the way; then the container is let go, and a daemon that stopped
//!    holding it before (killed) fails the commit;
//! 4. a layer the store lacks is unpacked and installed as a loaded one
//!    (`store::layers::stage_tar`: verified against its diff_id, its layout recorded,
//!    staged in `tmp/`, renamed into place); one it has is used as it is (the same
//!    changes give the same diff_id);
//! 5. the image (the base config with the new `rootfs.diff_ids` entry, a `history` entry,
//!    `created`, `author` and the changes; the base's layers plus the new one) is staged
//!    and renamed into `images/`, and tagged, in one step under the metadata lock: a name
//!    taken meanwhile leaves no image, and undoes 4 (see [`install_image`]).
//!
//! The store lock is held shared throughout: `rmi`/`prune` cannot remove the base image
//! or the new layer in between.

pub mod config;
pub mod layer;

use std::io::{BufWriter, Write};

use serde_json::{Map, Value, json};

use crate::changes::{Views, container_image};
use crate::container;
use crate::container::Layers;
use crate::digest::{Digest, Hashing, chain_ids};
use crate::error::{Error, Result};
use crate::image::{Compression, Reference};
use crate::interrupt::Checked;
use crate::store::images::{self, ImageRecord, LayerRecord};
use crate::store::layers::{self, LayerInfo, LayerSource};
use crate::store::unpack::{DEFAULT_MAX_LAYER_SIZE, UnpackOptions};
use crate::store::{LockGuard, Store, at, gc};
use crate::union::{LayerSpec, WorkSpec};

pub use layer::{LayerOptions, LayerStats};

/// The media type of the layers commit makes: an uncompressed OCI layer (the blob is
/// the tar, so its digest is the diff_id).
pub const LAYER_MEDIA_TYPE: &str = Compression::None.media_type();

/// What to commit, and how.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name.
    pub name: Option<Reference>,
    /// History comment (`-m`).
    pub message: Option<String>,
    pub author: Option<String>,
    /// `--change` instructions, in order.
    pub changes: Vec<String>,
    /// `SOURCE_DATE_EPOCH`: the image's `created` time, and no file newer than it.
    pub source_date_epoch: Option<i64>,
}

/// What a commit made.
#[derive(Debug, Clone)]
pub struct Committed {
    pub id: Digest,
    pub diff_id: Digest,
    /// Bytes of the layer tar.
    pub layer_size: u64,
    /// False when the store had this layer already.
    pub layer_unpacked: bool,
    pub stats: LayerStats,
}

/// The base config with the new layer, history entry and changes applied.
fn new_config(
    base: &[u8],
    diff_id: &Digest,
    created: &str,
    opts: &CommitOptions,
) -> Result<Vec<u8>> {
    let invalid = |detail: &str| Error::Invalid {
        file: "the base image's config".into(),
        detail: detail.into(),
    };
    let mut cfg: Map<String, Value> = match serde_json::from_slice(base) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(invalid("not a JSON object")),
        Err(e) => return Err(Error::json("the base image's config", e)),
    };
    let mut run = match cfg.remove("config") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    config::apply(&mut run, &opts.changes)?;
    cfg.insert("config".into(), Value::Object(run));
    // Provenance of the base image's own build, not of this one.
    cfg.remove("container");
    cfg.remove("container_config");
    cfg.insert("created".into(), json!(created));
    match &opts.author {
        Some(a) => cfg.insert("author".into(), json!(a)),
        None => cfg.remove("author"),
    };
    let mut rootfs = match cfg.remove("rootfs") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    rootfs.insert("type".into(), json!("layers"));
    let mut ids = match rootfs.remove("diff_ids") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    ids.push(json!(diff_id.to_string()));
    let layers = ids.len();
    rootfs.insert("diff_ids".into(), Value::Array(ids));
    cfg.insert("rootfs".into(), Value::Object(rootfs));

    let mut history = match cfg.remove("history") {
        Some(Value::Array(a)) => a,
        // No history: one placeholder per base layer keeps entries and layers paired.
        _ => (1..layers).map(|_| json!({"created_by": ""})).collect(),
    };
    let mut h = Map::new();
    h.insert("created".into(), json!(created));
    // Not the container's name: the same changes give the same image (with
    // SOURCE_DATE_EPOCH), whichever container made them. `image.json` names it.
    h.insert("created_by".into(), json!("layerfs commit"));
    if let Some(a) = &opts.author {
        h.insert("author".into(), json!(a));
    }
    if let Some(m) = &opts.message {
        h.insert("comment".into(), json!(m));
    }
    history.push(Value::Object(h));
    cfg.insert("history".into(), Value::Array(history));
    serde_json::to_vec(&Value::Object(cfg)).map_err(|e| Error::encode("the config", e))
}

/// Refuses a name another image has (before any work is done).
fn check_name_free(store: &Store, name: &Reference) -> Result<()> {
    if let Some(id) = store.refs()?.get(&name.to_string()) {
        return Err(Error::NameTaken {
            name: name.familiar(),
            image: id.short(),
            hint: ": pick another, or move it afterwards with `layerfs tag --force`",
        });
    }
    Ok(())
}

/// Writes the layer of container `c` into `tar` (a new file in `tmp/`), holding the
/// container still meanwhile. Returns (diff_id, size, stats).
fn write_tar(
    store: &Store,
    c: &container::Container,
    path: &std::path::Path,
    opts: &LayerOptions,
) -> Result<(Digest, u64, LayerStats)> {
    let still = crate::container::hold_still(c)?;
    // The container held is the one checked before (not one removed and made again
    // under its name, of another image, meanwhile).
    match container::open(store, &c.record.name)? {
        Some(now)
            if now.record.image == c.record.image && now.record.created == c.record.created => {}
        _ => return Err(Error::UnknownContainer(c.record.name.clone())),
    }
    let (diff_id, size, stats) = read_layer(store, c, path, opts)?;
    // Fails when the hold did not last (a daemon killed meanwhile): no snapshot then.
    still.release()?;
    Ok((diff_id, size, stats))
}

/// [`write_tar`]'s work, with the container held.
fn read_layer(
    store: &Store,
    c: &container::Container,
    path: &std::path::Path,
    opts: &LayerOptions,
) -> Result<(Digest, u64, LayerStats)> {
    let views = Views::of_container(store, c)?;
    let file = store.dir().open_write(path, true)?;
    let path = &store.shown(path);
    // Stops at Ctrl-C (the staging directory is removed by the caller).
    let out = BufWriter::with_capacity(1 << 20, Hashing::new(Checked(file)));
    let (out, stats) = layer::write_layer(&views, out, opts)?;
    let hashing = out
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    let (diff_id, size) = (hashing.digest(), hashing.count());
    let mut file = hashing.into_inner().0;
    file.flush().map_err(|e| Error::io(path, e))?;
    Ok((diff_id, size, stats))
}

/// Unpacks and installs the layer tar at `tar` (`size` bytes, `data` of them file
/// contents) unless the store has it.
fn install_layer(
    store: &Store,
    tar: &std::path::Path,
    diff_id: Digest,
    size: u64,
    data: u64,
) -> Result<(LayerInfo, bool)> {
    if let Some(info) = store.layer_info(&diff_id)? {
        return Ok((info, false));
    }
    let opts = UnpackOptions {
        styles: store.styles()?,
        ownership: store.ownership(),
        // Our own tar: its files add up to what we wrote.
        max_size: DEFAULT_MAX_LAYER_SIZE.max(data),
    };
    let file = store
        .dir()
        .open_read(tar)?
        .ok_or_else(|| Error::io(store.shown(tar), std::io::ErrorKind::NotFound.into()))?;
    // The blob of an uncompressed layer is its tar: its digest is the diff_id.
    let source = LayerSource {
        digest: Some(diff_id),
        media_type: LAYER_MEDIA_TYPE.into(),
        size,
    };
    let staged = layers::stage_tar(store, file, diff_id, &opts, source)?;
    let info = layers::install(store, staged)?;
    Ok((info, true))
}

/// How often [`install_image`] unpacks its layer again when a concurrent commit of the
/// same changes removed it (undoing itself) before the image was installed.
const LAYER_RETRIES: usize = 3;

/// The layer a commit wrote and installed.
struct NewLayer {
    diff_id: Digest,
    /// Its tar's size, and the bytes of data its files hold.
    size: u64,
    data: u64,
    /// This commit unpacked it (the store did not have it): a failure removes it again.
    unpacked: bool,
}

/// Removes `layer` again when this commit unpacked it and no installed image uses it;
/// called with the metadata lock held (`_meta`), under which every commit installs its
/// image, so an image of another commit is either installed (and keeps the layer) or
/// checks for the layer before it installs (see [`install_image`]). Returns `e`.
fn undo_layer(store: &Store, _meta: &LockGuard, layer: &NewLayer, e: Error) -> Error {
    if layer.unpacked
        && let Err(u) = gc::remove_layer_if_unused(store, &layer.diff_id)
    {
        log::warn!("removing layer {} again: {u}", layer.diff_id);
    }
    e
}

/// Installs image `record` (config `config`) over its new top layer `layer`, and names
/// it, under the metadata lock, which every tag and every commit's install takes: the
/// name is checked free and taken in one step with the install (so a name taken since
/// the commit began leaves no image to undo), and the layer is checked to be there still
/// — another commit of the same changes whose name was taken may have removed it, as
/// its undo, after we found it installed: it is then unpacked again from its tar, `tar`.
/// A failure removes the layer again if this commit unpacked it.
fn install_image(
    store: &Store,
    tar: &std::path::Path,
    layer: &mut NewLayer,
    record: &ImageRecord,
    config: &[u8],
    opts: &CommitOptions,
) -> Result<()> {
    for _ in 0..LAYER_RETRIES {
        let meta = store.lock_meta()?;
        if !store.has_layer(&layer.diff_id) {
            drop(meta);
            install_layer(store, tar, layer.diff_id, layer.size, layer.data)?;
            layer.unpacked = true;
            continue;
        }
        let done = (|| {
            if let Some(n) = &opts.name {
                check_name_free(store, n)?;
            }
            images::install(store, record, config, None)?;
            if let Some(n) = &opts.name {
                images::tag_checked_held(store, &meta, &record.id, n, false)?;
            }
            Ok(())
        })();
        return done.map_err(|e| undo_layer(store, &meta, layer, e));
    }
    Err(Error::io_what(
        format!("installing layer {}", layer.diff_id),
        std::io::Error::other("removed again each time by concurrent commits"),
    ))
}

/// Writes the tar of layer `index` (bottom first) of `image` again, from its unpacked
/// directory over the layers below it. For a layer `commit` made, these are the very
/// bytes it wrote (the same diff_id): the store keeps no blobs, and `save` needs them.
/// Returns the output, the layer's diff_id as written, and its size.
pub fn layer_tar<W: Write>(
    store: &Store,
    image: &ImageRecord,
    index: usize,
    out: W,
) -> Result<(W, Digest, u64)> {
    let Some(layer) = image.layers.get(index) else {
        return Err(Error::Invalid {
            file: format!("image {}", image.id),
            detail: format!("has no layer {index}"),
        });
    };
    let below = ImageRecord {
        layers: image.layers[..index].to_vec(),
        ..image.clone()
    };
    let lowers = store.lower_specs(&below)?;
    let info = store
        .layer_info(&layer.diff_id)?
        .ok_or_else(|| Error::Invalid {
            file: format!("image {}", image.id),
            detail: format!("its layer {} is not in the store", layer.diff_id),
        })?;
    let work = store.staging_dir("layer-tar")?;
    let result = (|| {
        // The installed layer read as the upper layer it was made from, in its spellings.
        let upper = LayerSpec::written_with(
            store.open_layer_dir(&layer.diff_id)?,
            store.shown(at::layer_diff(&layer.diff_id)),
            info.styles,
        );
        let work = WorkSpec::opened(store.dir().open_dir(&work)?, store.shown(&work));
        let views = Views::open(&Layers {
            lowers,
            upper,
            work,
            styles: info.styles,
        })?;
        let (out, _) = layer::write_layer(&views, Hashing::new(out), &LayerOptions::default())?;
        let (digest, size) = (out.digest(), out.count());
        Ok((out.into_inner(), digest, size))
    })();
    let _ = store.dir().remove_tree(&work);
    result
}

/// [`layer_tar`] as `save` takes it ([`crate::store::save::RewriteLayer`]): the store
/// cannot call up into `commit` itself.
pub fn rewrite_layer(
    store: &Store,
    image: &ImageRecord,
    index: usize,
    out: &mut dyn Write,
) -> Result<(Digest, u64)> {
    layer_tar(store, image, index, out).map(|(_, digest, size)| (digest, size))
}

/// Commits container `name` (see the module docs).
pub fn commit(store: &Store, name: &str, opts: &CommitOptions) -> Result<Committed> {
    let c =
        container::open(store, name)?.ok_or_else(|| Error::UnknownContainer(name.to_string()))?;
    let _lock = store.lock_shared()?;
    let base = container_image(store, &c)?;
    let base_config = store.image_config_bytes(&base.id)?;
    // Refused changes and names cost nothing yet.
    new_config(&base_config, &base.id, "", opts)?;
    if let Some(n) = &opts.name {
        check_name_free(store, n)?;
    }

    let staging = store.staging_dir("commit")?;
    let result = (|| {
        let layer_opts = LayerOptions {
            clamp_mtime: opts.source_date_epoch,
        };
        let tar = staging.join("layer.tar");
        let (diff_id, size, stats) = write_tar(store, &c, &tar, &layer_opts)?;
        let (info, unpacked) = install_layer(store, &tar, diff_id, size, stats.content)?;
        let mut layer = NewLayer {
            diff_id,
            size,
            data: stats.content,
            unpacked,
        };
        let created = match opts.source_date_epoch {
            Some(t) => crate::time::format_rfc3339(t),
            None => crate::time::now_rfc3339(),
        };
        let config = match new_config(&base_config, &diff_id, &created, opts) {
            Ok(c) => c,
            Err(e) => return Err(undo_layer(store, &store.lock_meta()?, &layer, e)),
        };
        let id = Digest::of(&config);
        let mut layers = base.layers.clone();
        layers.push(LayerRecord {
            digest: Some(diff_id),
            diff_id,
            chain_id: diff_id,
            media_type: LAYER_MEDIA_TYPE.into(),
            size: Some(size),
            unpacked_size: info.size,
        });
        let chains = chain_ids(&layers.iter().map(|l| l.diff_id).collect::<Vec<_>>());
        for (l, c) in layers.iter_mut().zip(chains) {
            l.chain_id = c;
        }
        let record = ImageRecord {
            id,
            manifest_digest: None,
            manifest_media_type: None,
            layers,
            loaded: crate::time::now_rfc3339(),
            created: Some(created),
            os: base.os.clone(),
            architecture: base.architecture.clone(),
            origin: format!("commit of container {name}"),
            tags: Vec::new(),
        };
        install_image(store, &tar, &mut layer, &record, &config, opts)?;
        Ok::<_, Error>((id, layer, stats))
    })();
    let _ = store.dir().remove_tree(&staging);
    let (id, layer, stats) = result?;
    let (diff_id, size, unpacked) = (layer.diff_id, layer.size, layer.unpacked);
    Ok(Committed {
        id,
        diff_id,
        layer_size: size,
        layer_unpacked: unpacked,
        stats,
    })
}
