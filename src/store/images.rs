//! Image records and tags.
//!
//! `images/<config hex>/` holds `config.json` (the config blob, byte for byte: its sha256
//! is the image id), `manifest.json` (byte for byte, when the source had one) and
//! `image.json` ([`ImageRecord`]: the layers bottom first with digest, diff_id, chain id,
//! media type and sizes). It is staged in `tmp/` and renamed into place, so a visible image
//! directory is complete; the layers it names are installed before it appears.
//! `refs.json` maps full references (`docker.io/library/busybox:latest`) to image ids; it is
//! the only place tags live, read-modify-written under `meta.lock` and replaced by rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LockGuard, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Reference;

pub const CONFIG_JSON: &str = "config.json";
pub const MANIFEST_JSON: &str = "manifest.json";
pub const IMAGE_JSON: &str = "image.json";

/// Shortest id prefix accepted as an image reference (Docker's short id length).
pub const MIN_ID_PREFIX: usize = 12;

/// One layer of an image, as `image.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as the source stored it (compressed); `None` when the source
    /// did not say and the blob was not read (an already installed layer).
    pub digest: Option<Digest>,
    /// sha256 of the uncompressed tar: the layer's key in `layers/`.
    pub diff_id: Digest,
    /// ChainID of the stack up to this layer.
    pub chain_id: Digest,
    pub media_type: String,
    /// Blob size, when known.
    pub size: Option<u64>,
    /// Sum of the sizes of the layer's regular files.
    pub unpacked_size: u64,
}

/// `image.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// sha256 of the config blob.
    pub id: Digest,
    pub manifest_digest: Option<Digest>,
    #[serde(default)]
    pub manifest_media_type: Option<String>,
    /// Bottom first.
    pub layers: Vec<LayerRecord>,
    /// When it was loaded (RFC 3339).
    pub loaded: String,
    /// From the config, for listings without parsing it.
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    /// Where it was loaded from.
    #[serde(default)]
    pub origin: String,
    /// Tags pointing at it (from refs.json; not stored in image.json).
    #[serde(skip)]
    pub tags: Vec<Reference>,
}

impl ImageRecord {
    /// How to name the image to a person: its first tag (`busybox:latest`), else its
    /// short id.
    pub fn display_name(&self) -> String {
        match self.tags.first() {
            Some(t) => t.familiar(),
            None => self.id.short(),
        }
    }

    /// Sum of the unpacked sizes of its layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.unpacked_size).sum()
    }

    /// The diff_ids, bottom first (the `layer_dir`s to stack).
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id).collect()
    }
}

/// Reads `image.json` of `id` (without tags); `Ok(None)` when not installed.
fn read_bare(store: &Store, id: &Digest) -> Result<Option<ImageRecord>> {
    store.read_json_opt(super::at::image(id).join(IMAGE_JSON))
}

/// Tags per image id, from refs.json.
fn tags_by_id(refs: &BTreeMap<String, Digest>) -> BTreeMap<Digest, Vec<Reference>> {
    let mut out: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
    for (name, id) in refs {
        if let Ok(r) = Reference::parse(name) {
            out.entry(*id).or_default().push(r);
        }
    }
    out
}

/// `image.json` of `id` with its tags.
pub fn read_record(store: &Store, id: &Digest) -> Result<Option<ImageRecord>> {
    let Some(mut rec) = read_bare(store, id)? else {
        return Ok(None);
    };
    rec.tags = tags_by_id(&store.refs()?).remove(id).unwrap_or_default();
    Ok(Some(rec))
}

/// Ids of all installed images.
pub fn ids(store: &Store) -> Result<Vec<Digest>> {
    store.digest_entries(super::at::IMAGES)
}

/// Every image with tags, newest (by config `created`, then load time) first.
pub fn list(store: &Store) -> Result<Vec<ImageRecord>> {
    let mut tags = tags_by_id(&store.refs()?);
    let mut out = Vec::new();
    for id in ids(store)? {
        if let Some(mut r) = read_bare(store, &id)? {
            r.tags = tags.remove(&id).unwrap_or_default();
            out.push(r);
        }
    }
    out.sort_by(|a, b| {
        let key = |r: &ImageRecord| {
            (
                r.created.as_deref().and_then(crate::time::parse_rfc3339),
                r.loaded.clone(),
            )
        };
        key(b).cmp(&key(a))
    });
    Ok(out)
}

/// Resolves a name, id or id prefix to an installed image.
pub fn resolve(store: &Store, reference: &str) -> Result<ImageRecord> {
    let parsed = Reference::parse(reference);
    if let Ok(r) = &parsed
        && let Some(id) = store.refs()?.get(&r.to_string())
    {
        return read_record(store, id)?.ok_or_else(|| {
            Error::UnknownImage(format!(
                "{reference} (tagged image {id} is missing from the store)"
            ))
        });
    }
    let hex = reference
        .strip_prefix(crate::digest::SHA256_PREFIX)
        .unwrap_or(reference);
    let is_hex = hex.len() >= MIN_ID_PREFIX
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_hex {
        let matches: Vec<Digest> = ids(store)?
            .into_iter()
            .filter(|d| d.hex().starts_with(hex))
            .collect();
        match matches.as_slice() {
            [one] => {
                return read_record(store, one)?
                    .ok_or_else(|| Error::UnknownImage(reference.to_string()));
            }
            [] => {}
            many => {
                return Err(Error::AmbiguousImage {
                    prefix: reference.to_string(),
                    candidates: many.iter().map(|d| d.short()).collect(),
                });
            }
        }
    }
    match parsed {
        Err(e) if !is_hex && !reference.starts_with(crate::digest::SHA256_PREFIX) => Err(e),
        _ => Err(Error::UnknownImage(reference.to_string())),
    }
}

/// Installs an image directory (staged, then renamed); an image already present stays
/// as it is (same id means same config, hence same layers).
pub fn install(
    store: &Store,
    record: &ImageRecord,
    config: &[u8],
    manifest: Option<&[u8]>,
) -> Result<()> {
    let dest = super::at::image(&record.id);
    if store.dir().is_file(dest.join(IMAGE_JSON)) {
        return Ok(());
    }
    let staging = store.staging_dir(&format!("image-{}", record.id.short()))?;
    let res = (|| -> Result<()> {
        let w = |name: &str, bytes: &[u8]| store.dir().write_new(staging.join(name), bytes);
        w(CONFIG_JSON, config)?;
        if let Some(m) = manifest {
            w(MANIFEST_JSON, m)?;
        }
        let mut json =
            serde_json::to_vec_pretty(record).map_err(|e| Error::encode("image.json", e))?;
        json.push(b'\n');
        w(IMAGE_JSON, &json)?;
        store.dir().rename_noreplace(&staging, &dest)
    })();
    match res {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = store.dir().remove_tree(&staging);
            // Another load installed the same image meanwhile: fine.
            if store.dir().is_file(dest.join(IMAGE_JSON)) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Points `name` at image `id` (under `meta.lock`). A name that already points at another
/// image is a clash: refused unless `force`, which moves it (that image keeps its other
/// names, or becomes dangling). Returns the image the name was taken from, if any.
pub fn tag_checked(
    store: &Store,
    id: &Digest,
    name: &Reference,
    force: bool,
) -> Result<Option<Digest>> {
    let meta = store.lock_meta()?;
    tag_checked_held(store, &meta, id, name, force)
}

/// [`tag_checked`], by a caller that holds `meta.lock` (`_meta`) already.
pub fn tag_checked_held(
    store: &Store,
    _meta: &LockGuard,
    id: &Digest,
    name: &Reference,
    force: bool,
) -> Result<Option<Digest>> {
    let mut refs = store.refs()?;
    let key = name.to_string();
    let previous = refs.get(&key).copied().filter(|p| p != id);
    if let Some(p) = previous
        && !force
    {
        return Err(Error::NameTaken {
            name: name.familiar(),
            image: p.short(),
            hint: " (--force moves it)",
        });
    }
    if refs.get(&key) != Some(id) {
        refs.insert(key, *id);
        store.write_refs(&refs)?;
    }
    Ok(previous)
}

/// Points each of `names` at image `id` (under `meta.lock`).
pub fn tag(store: &Store, id: &Digest, names: &[Reference]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let _meta = store.lock_meta()?;
    let mut refs = store.refs()?;
    for n in names {
        refs.insert(n.to_string(), *id);
    }
    store.write_refs(&refs)
}
