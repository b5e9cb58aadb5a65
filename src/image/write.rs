//! The documents of a saved image: OCI manifest and index (image-spec manifest.md,
//! image-index.md, image-layout.md) and Docker's `manifest.json` and `repositories`
//! (docker-archive, as `docker save` has written them since Docker 25: an OCI layout with
//! Docker's files beside it, readable as either format).
//!
//! Pure functions of descriptors to bytes: compact JSON, fields in the order the specs
//! list them, so the same image always gives the same manifest digest.

use std::collections::BTreeMap;

use serde::Serialize;

use super::oci::{CONTAINERD_NAME, REF_NAME};
use super::reference::Reference;
use crate::digest::Digest;

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `oci-layout`.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A blob as a descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Platform<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'static str, String>,
}

fn descriptor(b: &Blob) -> Descriptor<'_> {
    Descriptor {
        media_type: &b.media_type,
        digest: b.digest.to_string(),
        size: b.size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

/// An OCI image manifest.
pub fn manifest(config: &Blob, layers: &[Blob]) -> Vec<u8> {
    let m = Manifest {
        schema_version: 2,
        media_type: MT_OCI_MANIFEST,
        config: descriptor(config),
        layers: layers.iter().map(descriptor).collect(),
    };
    serde_json::to_vec(&m).unwrap_or_default()
}

/// One image of an index.
#[derive(Debug, Clone)]
pub struct IndexImage {
    pub manifest: Blob,
    /// Its names; none: one untagged entry.
    pub names: Vec<Reference>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

/// `index.json`: one entry per name of each image, annotated as Docker 25+ does (the
/// tag in `org.opencontainers.image.ref.name`, which skopeo's and umoci's `PATH:TAG`
/// pick by, and the full name in `io.containerd.image.name`). A tag that names two
/// different images here is written as the whole familiar name (`repo:tag`) instead.
pub fn index(images: &[IndexImage]) -> Vec<u8> {
    let mut by_tag: BTreeMap<&str, Vec<Digest>> = BTreeMap::new();
    for i in images {
        for n in &i.names {
            let ds = by_tag.entry(n.tag()).or_default();
            if !ds.contains(&i.manifest.digest) {
                ds.push(i.manifest.digest);
            }
        }
    }
    let mut manifests = Vec::new();
    for i in images {
        let platform = || {
            (!i.os.is_empty() && !i.architecture.is_empty()).then(|| Platform {
                architecture: &i.architecture,
                os: &i.os,
                variant: i.variant.as_deref(),
            })
        };
        if i.names.is_empty() {
            let mut d = descriptor(&i.manifest);
            d.platform = platform();
            manifests.push(d);
        }
        for n in &i.names {
            let mut d = descriptor(&i.manifest);
            d.platform = platform();
            let unique = by_tag.get(n.tag()).is_none_or(|ds| ds.len() < 2);
            let ref_name = if unique {
                n.tag().to_string()
            } else {
                n.familiar()
            };
            d.annotations.insert(CONTAINERD_NAME, n.to_string());
            d.annotations.insert(REF_NAME, ref_name);
            manifests.push(d);
        }
    }
    let idx = Index {
        schema_version: 2,
        media_type: MT_OCI_INDEX,
        manifests,
    };
    serde_json::to_vec(&idx).unwrap_or_default()
}

#[derive(Serialize)]
struct DockerItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// One image of a docker-archive.
#[derive(Debug, Clone)]
pub struct DockerImage {
    pub config: Digest,
    pub names: Vec<Reference>,
    /// Layer blobs, bottom first.
    pub layers: Vec<Digest>,
}

/// Docker's `manifest.json`: where each image's config and layers are, and its names
/// (`RepoTags` in Docker's familiar form; `null` for an image saved by id).
pub fn docker_manifest(images: &[DockerImage]) -> Vec<u8> {
    let items: Vec<DockerItem> = images
        .iter()
        .map(|i| DockerItem {
            config: super::sink::blob_rel(&i.config),
            repo_tags: (!i.names.is_empty())
                .then(|| i.names.iter().map(Reference::familiar).collect()),
            layers: i.layers.iter().map(super::sink::blob_rel).collect(),
        })
        .collect();
    let mut v = serde_json::to_vec(&items).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Docker's legacy `repositories`: repository → tag → the top layer's blob (hex), as
/// Docker 25+ writes it; `None` when no image has a name.
pub fn repositories(images: &[DockerImage]) -> Option<Vec<u8>> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in images {
        let Some(top) = i.layers.last() else { continue };
        for n in &i.names {
            repos
                .entry(n.familiar_name())
                .or_default()
                .insert(n.tag().to_string(), top.hex());
        }
    }
    if repos.is_empty() {
        return None;
    }
    let mut v = serde_json::to_vec(&repos).unwrap_or_default();
    v.push(b'\n');
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Compression;

    fn blob(mt: &str, b: &[u8]) -> Blob {
        Blob {
            media_type: mt.into(),
            digest: Digest::of(b),
            size: b.len() as u64,
        }
    }

    #[test]
    fn documents_parse_as_what_they_claim() {
        let cfg = blob(MT_OCI_CONFIG, b"{}");
        let l = blob(Compression::Gzip.media_type(), b"layer");
        let m = manifest(&cfg, std::slice::from_ref(&l));
        let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&m).unwrap();
        assert_eq!(parsed.layers().len(), 1);
        let mb = blob(MT_OCI_MANIFEST, &m);
        let a = Reference::parse("busybox:latest").unwrap();
        let b = Reference::parse("other/x:latest").unwrap();
        let idx = index(&[
            IndexImage {
                manifest: mb.clone(),
                names: vec![a.clone()],
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
            IndexImage {
                manifest: blob(MT_OCI_MANIFEST, b"other"),
                names: vec![b],
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
        ]);
        let parsed: oci_spec::image::ImageIndex = serde_json::from_slice(&idx).unwrap();
        let refs: Vec<String> = parsed
            .manifests()
            .iter()
            .map(|d| d.annotations().as_ref().unwrap()[REF_NAME].clone())
            .collect();
        // "latest" names two images: spelled out.
        assert_eq!(refs, ["busybox:latest", "other/x:latest"]);
        let dm = docker_manifest(&[DockerImage {
            config: cfg.digest,
            names: vec![a],
            layers: vec![l.digest],
        }]);
        let v: serde_json::Value = serde_json::from_slice(&dm).unwrap();
        assert_eq!(v[0]["RepoTags"][0], "busybox:latest");
    }
}
