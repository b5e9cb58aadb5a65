//! Removal: `rmi`, `prune`, leftovers in `tmp/`.
//!
//! Everything here runs under the exclusive store lock, so no load is between staging and
//! tagging. Removal is atomic as seen from the store: a layer or image directory is first
//! renamed into `tmp/` (one step: gone from `layers/` / `images/`), then deleted; a kill
//! in between, or a deletion that fails, leaves only `tmp/` leftovers, which the next
//! `load` or `prune` clears (one it cannot is reported and tried again later, never an
//! error). Docker's rules: removing a tag removes the
//! image once no tag and no container refers to it, then the layers no remaining image
//! uses; an image that a container or a live read-only mount uses is never removed (see
//! `mounts.rs`; records of read-only mounts whose daemon is gone are removed here).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use super::fsops::remove_atomically;
use super::{Store, at, containers, images, layers, mounts};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Reference;

/// What [`clean_tmp`] removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cleaned {
    pub entries: usize,
    /// Their sizes (as `df` counts them: [`super::usage::tmp_entry_size`]), when measured.
    pub bytes: u64,
}

/// Removes everything in `tmp/`; the caller holds the store lock exclusive. An entry that
/// cannot be deleted is logged and left for the next time (it is nobody's any more): it
/// never fails the load or prune that clears `tmp/`. `measure`: sum the sizes of what
/// goes (for `prune`'s report; a walk of each entry more).
pub fn clean_tmp(store: &Store, measure: bool) -> Result<Cleaned> {
    let mut done = Cleaned::default();
    for name in store.dir().entries(at::TMP)? {
        let rel = Path::new(at::TMP).join(name);
        let size = if measure {
            super::usage::tmp_entry_size(store, &rel)
        } else {
            0
        };
        match store.dir().remove_tree(&rel) {
            Ok(()) => {
                done.entries += 1;
                done.bytes += size;
            }
            Err(err) => log::warn!("cannot remove a leftover of interrupted work: {err}"),
        }
    }
    Ok(done)
}

/// What `rmi` did.
#[derive(Debug, Default, Clone)]
pub struct RmiReport {
    pub untagged: Vec<Reference>,
    pub deleted_images: Vec<Digest>,
    pub deleted_layers: Vec<Digest>,
}

/// What `prune` did.
#[derive(Debug, Default, Clone)]
pub struct PruneReport {
    pub tmp_entries: usize,
    /// What the leftovers in `tmp/` held.
    pub tmp_bytes: u64,
    pub deleted_images: Vec<Digest>,
    pub deleted_layers: Vec<Digest>,
    /// Sum of the unpacked sizes of the deleted layers and of the leftovers in `tmp/`.
    pub freed: u64,
}

/// Image id → what uses it: containers (`container NAME`) and live read-only mounts
/// (`read-only mount at DIR (pid N)`). Records of read-only mounts whose daemon is gone
/// are removed on the way (the caller holds the store lock exclusive).
fn image_users(store: &Store) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in containers::list(store)? {
        out.entry(c.image.clone())
            .or_default()
            .push(format!("container {}", c.name));
    }
    let stale = mounts::remove_stale(store)?;
    if stale > 0 {
        log::info!("removed {stale} record(s) of read-only mounts whose daemon is gone");
    }
    for m in mounts::live(store)? {
        out.entry(m.record.image.clone())
            .or_default()
            .push(m.record.describe());
    }
    Ok(out)
}

/// Removes image references (tags, ids or id prefixes), Docker's way.
pub fn rmi(store: &Store, references: &[String], force: bool) -> Result<RmiReport> {
    let _lock = store.lock_exclusive()?;
    let users = image_users(store)?;
    let mut report = RmiReport::default();
    let mut refs = store.refs()?;
    let mut doomed: Vec<Digest> = Vec::new();
    let tags_of = |refs: &BTreeMap<String, Digest>, id: &Digest| -> Vec<String> {
        refs.iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    };
    for reference in references {
        let by_tag = Reference::parse(reference)
            .ok()
            .filter(|r| refs.contains_key(&r.to_string()));
        let (id, remove_tags): (Digest, Vec<String>) = match by_tag {
            Some(r) => {
                let key = r.to_string();
                let id = refs[&key];
                let others = tags_of(&refs, &id).len() - 1;
                if others == 0
                    && let Some(cs) = users.get(&id.to_string())
                    && !force
                {
                    return Err(Error::NameInUse {
                        name: r.familiar(),
                        image: id.short(),
                        users: cs.clone(),
                    });
                }
                (id, vec![key])
            }
            None => {
                let rec = images::resolve(store, reference)?;
                let tags = tags_of(&refs, &rec.id);
                if tags.len() > 1 && !force {
                    return Err(Error::SeveralNames {
                        image: rec.id.short(),
                        names: tags
                            .iter()
                            .filter_map(|t| Reference::parse(t).ok())
                            .map(|r| r.familiar())
                            .collect(),
                    });
                }
                if let Some(cs) = users.get(&rec.id.to_string())
                    && !force
                {
                    return Err(Error::ImageInUse {
                        image: rec.id.short(),
                        users: cs.clone(),
                    });
                }
                (rec.id, tags)
            }
        };
        for t in &remove_tags {
            refs.remove(t);
            if let Ok(r) = Reference::parse(t) {
                report.untagged.push(r);
            }
        }
        if tags_of(&refs, &id).is_empty()
            && !users.contains_key(&id.to_string())
            && !doomed.contains(&id)
        {
            doomed.push(id);
        }
    }
    {
        let _meta = store.lock_meta()?;
        store.write_refs(&refs)?;
    }
    // Layers of the removed images that no remaining image uses.
    let mut candidate_layers: BTreeSet<Digest> = BTreeSet::new();
    for id in &doomed {
        if let Some(rec) = images::read_record(store, id)? {
            candidate_layers.extend(rec.diff_ids());
        }
        remove_atomically(store, &at::image(id), "image")?;
        report.deleted_images.push(*id);
    }
    let used = used_layers(store)?;
    for l in candidate_layers {
        if !used.contains(&l) && store.dir().stat(at::layer(&l))?.is_some() {
            remove_atomically(store, &at::layer(&l), "layer")?;
            report.deleted_layers.push(l);
        }
    }
    Ok(report)
}

/// Removes layer `diff_id` unless an installed image lists it (undoing an install).
pub(crate) fn remove_layer_if_unused(store: &Store, diff_id: &Digest) -> Result<()> {
    if used_layers(store)?.contains(diff_id) || store.dir().stat(at::layer(diff_id))?.is_none() {
        return Ok(());
    }
    remove_atomically(store, &at::layer(diff_id), "layer")
}

/// Layers named by any installed image.
fn used_layers(store: &Store) -> Result<BTreeSet<Digest>> {
    let mut used = BTreeSet::new();
    for id in images::ids(store)? {
        if let Some(rec) = images::read_record(store, &id)? {
            used.extend(rec.diff_ids());
        }
    }
    Ok(used)
}

/// Removes leftovers in `tmp/`, dangling images (no tag, no container) and layers that
/// no image uses.
pub fn prune(store: &Store) -> Result<PruneReport> {
    let _lock = store.lock_exclusive()?;
    let cleaned = clean_tmp(store, true)?;
    let mut report = PruneReport {
        tmp_entries: cleaned.entries,
        tmp_bytes: cleaned.bytes,
        ..Default::default()
    };
    report.freed = cleaned.bytes;
    let users = image_users(store)?;
    let refs = store.refs()?;
    let tagged: BTreeSet<Digest> = refs.values().copied().collect();
    for id in images::ids(store)? {
        if !tagged.contains(&id) && !users.contains_key(&id.to_string()) {
            remove_atomically(store, &at::image(&id), "image")?;
            report.deleted_images.push(id);
        }
    }
    let used = used_layers(store)?;
    for l in layers::installed(store)? {
        if !used.contains(&l) {
            report.freed += layers::read_info(store, &l)
                .ok()
                .flatten()
                .map_or(0, |i| i.size);
            remove_atomically(store, &at::layer(&l), "layer")?;
            report.deleted_layers.push(l);
        }
    }
    Ok(report)
}
