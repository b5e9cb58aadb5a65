//! Disk usage of the store, as `docker system df` counts it: layers are shared between
//! images, so every total counts a layer once; an image's size is the sum of its layers,
//! of which the "shared" part is also used by another image and the "unique" part by it
//! alone. Active images are those a container or a live read-only mount uses; what the
//! inactive ones alone hold is reclaimable (by `rmi`/`prune`), as are the writable layers
//! of containers that are not mounted (by `rm`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::containers::{self, ContainerRecord};
use super::{ImageRecord, Store, layers, mounts};
use crate::digest::Digest;
use crate::error::Result;

/// One image's share of the store.
#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    pub id: Digest,
    pub tags: Vec<String>,
    pub created: Option<String>,
    /// Sum of its layers (a layer it lists twice counts once).
    pub size: u64,
    /// The part of `size` in layers other images use too.
    pub shared_size: u64,
    /// `size - shared_size`: what removing it alone would free.
    pub unique_size: u64,
    /// Containers made from it.
    pub containers: usize,
    /// Used by a container or a live read-only mount.
    pub active: bool,
}

/// One container's writable layer.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerUsage {
    pub name: String,
    pub image: String,
    pub created: String,
    /// Where it is mounted, while it is.
    pub mountpoint: Option<String>,
    pub size: u64,
}

/// One installed layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerUsage {
    pub diff_id: Digest,
    pub size: u64,
    /// How many images list it.
    pub images: usize,
    /// Listed by an active image.
    pub active: bool,
}

/// One line of the summary: TYPE TOTAL ACTIVE SIZE RECLAIMABLE.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub total: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

/// Everything `df` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub summary: Vec<Summary>,
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub layers: Vec<LayerUsage>,
}

fn unique_layers(img: &ImageRecord) -> BTreeMap<Digest, u64> {
    img.layers
        .iter()
        .map(|l| (l.diff_id, l.unpacked_size))
        .collect()
}

/// Measures the store, reading records only; `container` measures one container (its
/// writable layer, whether it is mounted: `crate::container::usage`, which owns them).
pub fn usage(
    store: &Store,
    container: impl Fn(&ContainerRecord) -> ContainerUsage,
) -> Result<Usage> {
    let images = store.list_images()?;
    let ctrs = containers::list(store)?;
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for c in &ctrs {
        *users.entry(c.image.clone()).or_default() += 1;
    }
    let held: BTreeSet<String> = mounts::live(store)?
        .into_iter()
        .map(|m| m.record.image)
        .collect();

    // Layer → number of images listing it, and whether an active image does.
    let mut listed: BTreeMap<Digest, (usize, bool, u64)> = BTreeMap::new();
    let mut image_rows = Vec::new();
    for img in &images {
        let key = img.id.to_string();
        let n = users.get(&key).copied().unwrap_or(0);
        let active = n > 0 || held.contains(&key);
        for (d, size) in unique_layers(img) {
            let e = listed.entry(d).or_insert((0, false, size));
            e.0 += 1;
            e.1 |= active;
        }
        image_rows.push((img, n, active));
    }
    let mut out_images = Vec::new();
    for (img, n, active) in image_rows {
        let mine = unique_layers(img);
        let size: u64 = mine.values().sum();
        let shared_size: u64 = mine
            .iter()
            .filter(|(d, _)| listed.get(*d).is_some_and(|e| e.0 > 1))
            .map(|(_, s)| s)
            .sum();
        out_images.push(ImageUsage {
            id: img.id,
            tags: img.tags.iter().map(|t| t.familiar()).collect(),
            created: img.created.clone(),
            size,
            shared_size,
            unique_size: size - shared_size,
            containers: n,
            active,
        });
    }

    let mut out_layers = Vec::new();
    for d in layers::installed(store)? {
        let size = match listed.get(&d) {
            Some(e) => e.2,
            None => store.layer_info(&d)?.map_or(0, |i| i.size),
        };
        let (n, active) = listed.get(&d).map_or((0, false), |e| (e.0, e.1));
        out_layers.push(LayerUsage {
            diff_id: d,
            size,
            images: n,
            active,
        });
    }

    let out_ctrs: Vec<ContainerUsage> = ctrs.iter().map(container).collect();

    let listed_size: u64 = listed.values().map(|e| e.2).sum();
    let active_size: u64 = listed.values().filter(|e| e.1).map(|e| e.2).sum();
    let all_layers: u64 = out_layers.iter().map(|l| l.size).sum();
    let summary = vec![
        Summary {
            kind: "Images",
            total: out_images.len(),
            active: out_images.iter().filter(|i| i.active).count(),
            size: listed_size,
            reclaimable: listed_size - active_size,
        },
        Summary {
            kind: "Containers",
            total: out_ctrs.len(),
            active: out_ctrs.iter().filter(|c| c.mountpoint.is_some()).count(),
            size: out_ctrs.iter().map(|c| c.size).sum(),
            reclaimable: out_ctrs
                .iter()
                .filter(|c| c.mountpoint.is_none())
                .map(|c| c.size)
                .sum(),
        },
        Summary {
            kind: "Layers",
            total: out_layers.len(),
            active: out_layers.iter().filter(|l| l.active).count(),
            size: all_layers,
            reclaimable: out_layers
                .iter()
                .filter(|l| !l.active)
                .map(|l| l.size)
                .sum(),
        },
    ];
    Ok(Usage {
        summary,
        images: out_images,
        containers: out_ctrs,
        layers: out_layers,
    })
}
