//! Container records: `ROOT/containers/<name>/container.json`, written by `layerfs mount`
//! (through `crate::container`, which owns the rest of a container's directory: its
//! writable layer, its lock, its daemon's socket and log). The store reads the records
//! only: `rmi` and `prune` never remove an image, or its layers, that a container uses,
//! and `df` counts them.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::Store;
use crate::error::{Error, Result};
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
    /// `crate::container::Container::styles`); absent in records of older versions until the next mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub styles: Option<Styles>,
    /// The image as it was named when the container was made (`docker.io/library/busybox:latest`,
    /// or the image id), as Docker keeps `Config.Image`: `ps` shows that name while it
    /// still names this image, else the short id. Absent in records of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
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

/// Container names: what Docker allows, so they are safe as one path component.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}
