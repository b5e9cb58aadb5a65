//! OCI image layouts (image-spec image-layout.md), as a directory or as an OCI archive.
//!
//! `index.json` lists the images, tagged by the `org.opencontainers.image.ref.name`
//! annotation (a tag, or a whole reference); blobs live at `blobs/<alg>/<hex>`. Without a
//! tag a layout must hold exactly one image (several names for one manifest count once);
//! with several, the error lists the tags. An image index or Docker manifest list picks
//! the linux image for this machine's architecture. Every blob read here (indexes,
//! manifests, configs) is checked against its descriptor's digest and size; layer blobs are
//! only located (and checked while they stream, by the store). Extra files, such as
//! Docker's `manifest.json`, are ignored.

use std::path::Path;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::{Compression, ImageFiles, ImagePlan, LayerPlan, Reference, name_from_ref};
use crate::digest::{Digest, Mismatch};
use crate::error::{Error, Result};

/// The annotation that tags an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker 25+'s) annotation with the full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media types of layers we cannot unpack but name specially in the error.
const FOREIGN_HINT: [&str; 2] = ["foreign", "nondistributable"];

/// Nested indexes deeper than this are refused (a loop of indexes is a hostile image).
const MAX_INDEX_DEPTH: usize = 4;

/// Reads the image(s) a layout holds; `selector` is a tag or reference, `hint` the
/// repository name for tag-only ref names.
pub fn read(
    files: &Arc<dyn ImageFiles>,
    path: &Path,
    selector: Option<&str>,
    hint: Option<&str>,
) -> Result<Vec<ImagePlan>> {
    if !files.exists("index.json") {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            detail: "no index.json: not an OCI image layout".into(),
        });
    }
    if let Some(bytes) = files.read_small("oci-layout")? {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(files.location("oci-layout"), e))?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(Error::Invalid {
                file: files.location("oci-layout"),
                detail: "no imageLayoutVersion".into(),
            });
        }
    }
    let index = read_index_file(files.as_ref())?;
    let top = index.manifests();
    let names_of = |d: &Descriptor| -> Vec<Reference> { descriptor_names(d, hint) };
    let label = |d: &Descriptor| -> String {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
            .unwrap_or_else(|| format!("(untagged {})", d.digest()))
    };

    let chosen: Vec<&Descriptor> = match selector {
        Some(sel) => {
            let wanted = Reference::parse(sel).ok();
            let by_tag: Vec<&Descriptor> = top
                .iter()
                .filter(|d| {
                    let a = d.annotations().as_ref();
                    a.and_then(|a| a.get(REF_NAME)).map(String::as_str) == Some(sel)
                        || a.and_then(|a| a.get(CONTAINERD_NAME)).map(String::as_str) == Some(sel)
                        || wanted
                            .as_ref()
                            .is_some_and(|w| names_of(d).iter().any(|n| n == w))
                })
                .collect();
            if by_tag.is_empty() {
                let mut available: Vec<String> = top.iter().map(label).collect();
                available.dedup();
                return Err(Error::TagNotFound {
                    path: path.to_path_buf(),
                    tag: sel.to_string(),
                    available,
                });
            }
            vec![by_tag[0]]
        }
        None => {
            let mut digests: Vec<String> = top.iter().map(|d| d.digest().to_string()).collect();
            digests.sort();
            digests.dedup();
            match digests.len() {
                0 => {
                    return Err(Error::Invalid {
                        file: files.location("index.json"),
                        detail: "lists no images".into(),
                    });
                }
                1 => vec![&top[0]],
                _ => {
                    let tags: Vec<String> = top.iter().map(label).collect();
                    let example_tag = top
                        .iter()
                        .find_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)))
                        .cloned()
                        .unwrap_or_else(|| "TAG".into());
                    return Err(Error::TagRequired {
                        path: path.to_path_buf(),
                        tags,
                        example: format!("oci:{}:{example_tag}", path.display()),
                    });
                }
            }
        }
    };

    let mut plans = Vec::new();
    for desc in chosen {
        // Every name of the chosen manifest when no tag was asked for; just the asked one
        // (normalized) otherwise.
        let names: Vec<Reference> = match selector {
            None => top
                .iter()
                .filter(|d| d.digest() == desc.digest())
                .flat_map(&names_of)
                .collect(),
            Some(_) => names_of(desc),
        };
        let (bytes, digest, media_type) = resolve_to_manifest(files.as_ref(), desc, 0)?;
        plans.push(plan_from_manifest(
            files,
            bytes,
            Some(digest),
            Some(media_type),
            names,
            path.display().to_string(),
        )?);
    }
    Ok(plans)
}

/// The names a top-level descriptor gives its image.
fn descriptor_names(d: &Descriptor, hint: Option<&str>) -> Vec<Reference> {
    let Some(a) = d.annotations().as_ref() else {
        return Vec::new();
    };
    if let Some(full) = a.get(CONTAINERD_NAME)
        && let Some(r) = name_from_ref(full, hint)
    {
        return vec![r];
    }
    a.get(REF_NAME)
        .and_then(|n| name_from_ref(n, hint))
        .into_iter()
        .collect()
}

fn read_index_file(files: &dyn ImageFiles) -> Result<ImageIndex> {
    let bytes = files
        .read_small("index.json")?
        .ok_or_else(|| Error::NotFound(files.location("index.json").into()))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(files.location("index.json"), e))
}

/// Our digest type from a descriptor's (sha256 only).
pub fn descriptor_digest(d: &Descriptor, file: &str) -> Result<Digest> {
    Digest::parse(d.digest().as_ref()).map_err(|e| Error::Invalid {
        file: file.to_string(),
        detail: e.to_string(),
    })
}

/// Where a blob lives in a layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Reads a small blob and checks it against its digest and size.
pub fn read_blob(
    files: &dyn ImageFiles,
    digest: &Digest,
    size: Option<u64>,
    what: &str,
) -> Result<Vec<u8>> {
    let path = blob_path(digest);
    let bytes = files.read_small(&path)?.ok_or_else(|| Error::MissingBlob {
        what: what.to_string(),
        digest: digest.to_string(),
        location: files.location(&path),
    })?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            what: format!("{what} {}", files.location(&path)),
            mismatch: Mismatch::Digest {
                expected: *digest,
                actual,
            },
        });
    }
    if let Some(size) = size
        && size != bytes.len() as u64
    {
        return Err(Error::DigestMismatch {
            what: format!("{what} {}", files.location(&path)),
            mismatch: Mismatch::Size {
                expected: size,
                actual: bytes.len() as u64,
            },
        });
    }
    Ok(bytes)
}

/// What a descriptor points at.
enum Kind {
    Index,
    Manifest,
}

fn kind_of(media_type: &str, bytes: &[u8]) -> Option<Kind> {
    match media_type {
        MT_OCI_INDEX | MT_DOCKER_LIST => Some(Kind::Index),
        MT_OCI_MANIFEST | MT_DOCKER_MANIFEST => Some(Kind::Manifest),
        _ => {
            // Media type missing or generic: look at the document itself.
            let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            if v.get("manifests").is_some() {
                Some(Kind::Index)
            } else if v.get("layers").is_some() && v.get("config").is_some() {
                Some(Kind::Manifest)
            } else {
                None
            }
        }
    }
}

/// Follows indexes down to one image manifest: (bytes, digest, media type).
fn resolve_to_manifest(
    files: &dyn ImageFiles,
    desc: &Descriptor,
    depth: usize,
) -> Result<(Vec<u8>, Digest, String)> {
    let digest = descriptor_digest(desc, &files.location("index.json"))?;
    let media_type = desc.media_type().to_string();
    let bytes = read_blob(files, &digest, Some(desc.size()), "manifest")?;
    let location = files.location(&blob_path(&digest));
    match kind_of(&media_type, &bytes) {
        Some(Kind::Manifest) => Ok((bytes, digest, media_type)),
        Some(Kind::Index) => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(Error::Invalid {
                    file: location,
                    detail: "image indexes nested too deep".into(),
                });
            }
            let index: ImageIndex =
                serde_json::from_slice(&bytes).map_err(|e| Error::json(&location, e))?;
            let pick = pick_platform(index.manifests(), &location)?;
            resolve_to_manifest(files, pick, depth + 1)
        }
        None => Err(Error::Invalid {
            file: location,
            detail: format!("unsupported manifest media type {media_type:?}"),
        }),
    }
}

/// This machine's architecture in OCI's spelling.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Picks linux + this architecture from an index.
fn pick_platform<'a>(manifests: &'a [Descriptor], location: &str) -> Result<&'a Descriptor> {
    let arch = host_arch();
    let matching = manifests.iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.os().to_string() == "linux" && p.architecture().to_string() == arch)
    });
    if let Some(d) = matching {
        return Ok(d);
    }
    // An index without platforms and a single image: that image.
    if manifests.len() == 1 && manifests[0].platform().is_none() {
        return Ok(&manifests[0]);
    }
    Err(Error::NoMatchingPlatform {
        file: location.to_string(),
        wanted: format!("linux/{arch}"),
        available: manifests
            .iter()
            .map(|d| match d.platform() {
                Some(p) => {
                    let mut s = format!("{}/{}", p.os(), p.architecture());
                    if let Some(v) = p.variant() {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                }
                None => "(no platform)".to_string(),
            })
            .collect(),
    })
}

/// Builds the plan of one image manifest.
pub fn plan_from_manifest(
    files: &Arc<dyn ImageFiles>,
    manifest_bytes: Vec<u8>,
    manifest_digest: Option<Digest>,
    manifest_media_type: Option<String>,
    names: Vec<Reference>,
    origin: String,
) -> Result<ImagePlan> {
    let mloc = match &manifest_digest {
        Some(d) => files.location(&blob_path(d)),
        None => files.location("manifest"),
    };
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| Error::json(&mloc, e))?;
    let config_digest = descriptor_digest(manifest.config(), &mloc)?;
    let config_bytes = read_blob(
        files.as_ref(),
        &config_digest,
        Some(manifest.config().size()),
        "config",
    )?;
    let cloc = files.location(&blob_path(&config_digest));
    let config = super::parse_config(&config_bytes, &cloc)?;
    let diff_ids = super::diff_ids(&config, &cloc, manifest.layers().len())?;
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let digest = descriptor_digest(desc, &mloc)?;
        let media_type = desc.media_type().to_string();
        if Compression::of_media_type(&media_type).is_none() {
            let kind = if FOREIGN_HINT.iter().any(|h| media_type.contains(h)) {
                format!("{media_type} (foreign / non-distributable layers are not supported)")
            } else {
                media_type
            };
            return Err(Error::UnsupportedMediaType {
                digest: digest.to_string(),
                media_type: kind,
            });
        }
        if !files.exists(&blob_path(&digest)) {
            return Err(Error::MissingBlob {
                what: "layer".into(),
                digest: digest.to_string(),
                location: files.location(&blob_path(&digest)),
            });
        }
        layers.push(LayerPlan {
            path: blob_path(&digest),
            digest: Some(digest),
            size: Some(desc.size()),
            media_type: Some(media_type),
            diff_id,
        });
    }
    Ok(ImagePlan {
        files: Arc::clone(files),
        config_bytes,
        config_digest,
        config,
        manifest_bytes: Some(manifest_bytes),
        manifest_digest,
        manifest_media_type,
        layers,
        names,
        origin,
    })
}

/// Finds, in a layout that also is a Docker 25+ archive, the manifest of the image whose
/// config is `config`: (bytes, digest, media type). Unreadable or foreign entries are
/// skipped: this only enriches what `manifest.json` already says.
pub fn find_manifest_for_config(
    files: &dyn ImageFiles,
    config: &Digest,
) -> Option<(Vec<u8>, Digest, String)> {
    let index = read_index_file(files).ok()?;
    let mut stack: Vec<(Descriptor, usize)> =
        index.manifests().iter().cloned().map(|d| (d, 0)).collect();
    while let Some((desc, depth)) = stack.pop() {
        let digest = descriptor_digest(&desc, "").ok()?;
        let Ok(bytes) = read_blob(files, &digest, Some(desc.size()), "manifest") else {
            continue;
        };
        match kind_of(desc.media_type().as_ref(), &bytes) {
            Some(Kind::Manifest) => {
                let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) else {
                    continue;
                };
                if descriptor_digest(m.config(), "").ok().as_ref() == Some(config) {
                    return Some((bytes, digest, desc.media_type().to_string()));
                }
            }
            Some(Kind::Index) if depth < MAX_INDEX_DEPTH => {
                if let Ok(i) = serde_json::from_slice::<ImageIndex>(&bytes) {
                    stack.extend(i.manifests().iter().cloned().map(|d| (d, depth + 1)));
                }
            }
            _ => {}
        }
    }
    None
}
