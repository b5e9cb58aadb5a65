//! `docker save` archives (docker-archive, format v1.2) and Docker 25+'s hybrid archives.
//!
//! `manifest.json` is `[{"Config": "<file>", "RepoTags": [...], "Layers": ["<file>", ...]}]`:
//! one entry per image, layer files bottom first (legacy `<id>/layer.tar`, skopeo's
//! `<hex>.tar`, Docker 25's `blobs/sha256/<hex>`). Without a selector every image of the
//! archive loads, as `docker load` does; `docker-archive:PATH:REF` picks the one tagged REF
//! (or `@N`, the N-th, as skopeo spells it). When the archive is also an OCI layout (Docker
//! 25+), the OCI manifest of each image is found through `index.json` and kept, with its
//! layer media types and digests. A file name that is a digest is checked like one.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{ImageFiles, ImagePlan, LayerPlan, Reference, oci};
use crate::digest::{Digest, Mismatch};
use crate::error::{Error, Result};

/// One entry of `manifest.json`.
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Reads the image(s) of a docker-archive.
pub fn read(
    files: &Arc<dyn ImageFiles>,
    path: &Path,
    selector: Option<&str>,
) -> Result<Vec<ImagePlan>> {
    let mloc = files.location("manifest.json");
    let bytes = files
        .read_small("manifest.json")?
        .ok_or_else(|| Error::UnknownFormat {
            path: path.to_path_buf(),
            detail: "no manifest.json: not a docker-archive".into(),
        })?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| Error::json(&mloc, e))?;
    if entries.is_empty() {
        return Err(Error::Invalid {
            file: mloc,
            detail: "lists no images".into(),
        });
    }
    let tags_of = |e: &Entry| -> Vec<Reference> {
        e.repo_tags
            .iter()
            .flatten()
            .filter_map(|t| super::name_from_ref(t, None))
            .collect()
    };
    let chosen: Vec<&Entry> = match selector {
        None => entries.iter().collect(),
        Some(sel) => {
            let by_index = sel
                .strip_prefix('@')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| entries.get(n));
            let wanted = Reference::parse(sel).ok();
            let found = by_index.or_else(|| {
                entries
                    .iter()
                    .find(|e| wanted.as_ref().is_some_and(|w| tags_of(e).contains(w)))
            });
            match found {
                Some(e) => vec![e],
                None => {
                    return Err(Error::TagNotFound {
                        path: path.to_path_buf(),
                        tag: sel.to_string(),
                        available: entries
                            .iter()
                            .flat_map(|e| e.repo_tags.iter().flatten().cloned())
                            .collect(),
                    });
                }
            }
        }
    };
    let hybrid = files.exists("index.json");
    chosen
        .into_iter()
        .map(|e| {
            let mut names = tags_of(e);
            if let Some(sel) = selector
                && let Ok(w) = Reference::parse(sel)
            {
                names.retain(|n| *n == w);
            }
            plan_entry(files, path, e, names, hybrid)
        })
        .collect()
}

/// The digest a blob's file name spells (`<hex>.tar`, `<hex>.json`, `blobs/sha256/<hex>`).
fn digest_from_name(name: &str) -> Option<Digest> {
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    let base = name.rsplit('/').next()?;
    let stem = base
        .strip_suffix(".tar")
        .or_else(|| base.strip_suffix(".json"))?;
    Digest::from_hex(stem).ok()
}

fn plan_entry(
    files: &Arc<dyn ImageFiles>,
    path: &Path,
    e: &Entry,
    names: Vec<Reference>,
    hybrid: bool,
) -> Result<ImagePlan> {
    let cloc = files.location(&e.config);
    let config_bytes = files
        .read_small(&e.config)?
        .ok_or_else(|| Error::MissingBlob {
            what: "config".into(),
            digest: e.config.clone(),
            location: cloc.clone(),
        })?;
    let config_digest = Digest::of(&config_bytes);
    if let Some(named) = digest_from_name(&e.config)
        && named != config_digest
    {
        return Err(Error::DigestMismatch {
            what: format!("config {cloc}"),
            mismatch: Mismatch::Digest {
                expected: named,
                actual: config_digest,
            },
        });
    }
    if hybrid
        && let Some((mbytes, mdigest, mtype)) =
            oci::find_manifest_for_config(files.as_ref(), &config_digest)
    {
        let mut plan = oci::plan_from_manifest(
            files,
            mbytes,
            Some(mdigest),
            Some(mtype),
            names,
            path.display().to_string(),
        )?;
        // manifest.json is the authority on where each layer is.
        if plan.layers.len() == e.layers.len() {
            for (l, p) in plan.layers.iter_mut().zip(&e.layers) {
                if files.exists(p) {
                    l.path = p.clone();
                }
            }
        }
        return Ok(plan);
    }
    let config = super::parse_config(&config_bytes, &cloc)?;
    let diff_ids = super::diff_ids(&config, &cloc, e.layers.len())?;
    let layers = e
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(p, diff_id)| {
            if !files.exists(p) {
                return Err(Error::MissingBlob {
                    what: "layer".into(),
                    digest: diff_id.to_string(),
                    location: files.location(p),
                }
                .in_layer(&diff_id));
            }
            Ok(LayerPlan {
                path: p.clone(),
                digest: digest_from_name(p),
                size: None,
                media_type: None,
                diff_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ImagePlan {
        files: Arc::clone(files),
        config_bytes,
        config_digest,
        config,
        manifest_bytes: None,
        manifest_digest: None,
        manifest_media_type: None,
        layers,
        names,
        origin: path.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_names() {
        let hex = "42911635547a5f37d5a91588d739524b66725a699d8fd0ddd130388acc6a38d2";
        assert!(digest_from_name(&format!("{hex}.tar")).is_some());
        assert!(digest_from_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_from_name(&format!("{hex}/layer.tar")).is_none());
    }
}
