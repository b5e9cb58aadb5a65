//! Containers: the writable layers the mount creates, as far as the image store needs to
//! know them. `ROOT/containers/<name>/container.json` is written by `layerfs mount`; here we
//! only read the records, so that `rmi` and `prune` never remove an image (or its layers)
//! that a container uses.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};

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
}

/// Every container record (none when `containers/` does not exist). A directory without
/// a readable record is skipped with a warning rather than failing every listing.
pub fn list(store: &Store) -> Result<Vec<ContainerRecord>> {
    let dir = store.containers_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        let p = e.path().join(CONTAINER_JSON);
        match fs::read(&p) {
            Ok(b) => match serde_json::from_slice::<ContainerRecord>(&b) {
                Ok(r) => out.push(r),
                Err(err) => log::warn!("{}: invalid JSON: {err}", p.display()),
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(&p, err)),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
