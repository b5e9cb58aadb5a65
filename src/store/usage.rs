//! Disk usage of the store, as `docker system df` counts it: layers are shared between
//! images, so every total counts a layer once; an image's size is the sum of its layers,
//! of which the "shared" part is also used by another image and the "unique" part by it
//! alone. Active images are those a container or a live read-only mount uses; what the
//! inactive ones alone hold is reclaimable (by `rmi`/`prune`), as are the writable layers
//! of containers that are not mounted (by `rm`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::Path;

use serde::Serialize;

use super::containers::{self, ContainerRecord};
use super::{ImageRecord, Store, at, layers, lock, mounts};
use crate::digest::Digest;
use crate::error::Result;

/// The TYPE of `df`'s row for `tmp/` (as Docker's "Build Cache" row).
pub const TMP_KIND: &str = "Temporary (interrupted work)";

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

/// A live read-only mount of an image alone (no container: it writes nothing).
#[derive(Debug, Clone, Serialize)]
pub struct MountUsage {
    /// The image id.
    pub image: String,
    pub mountpoint: String,
    /// Its daemon.
    pub pid: u32,
    pub created: String,
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

/// What `tmp/` holds: staging of commands still running, and leftovers of interrupted
/// work (a process killed outright), which `prune` or the next load removes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TmpUsage {
    pub entries: usize,
    /// Entries of commands still running.
    pub in_use: usize,
    pub size: u64,
    /// What the leftovers hold.
    pub reclaimable: u64,
}

/// The size of entry `rel` of `tmp/`, counted as layers are ([`layers::tree_size`]); what
/// cannot be read (an entry removed meanwhile) counts 0.
pub fn tmp_entry_size(store: &Store, rel: &Path) -> u64 {
    match store.dir().stat(rel) {
        Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            match store.dir().open_dir(rel) {
                Ok(fd) => layers::tree_size(fd.as_fd()).unwrap_or_else(|(_, partial)| partial),
                Err(_) => 0,
            }
        }
        Ok(Some(st)) => u64::try_from(st.st_size).unwrap_or(0),
        _ => 0,
    }
}

/// Measures `tmp/`. The rule `prune` follows decides what is in use: every command that
/// stages holds the store lock (shared), so with the lock free nothing is; with it taken,
/// an entry is in use unless its name says which process staged it and that process is
/// gone (nothing of it is removed before `prune` gets the lock, once that command ends).
pub fn tmp_usage(store: &Store) -> Result<TmpUsage> {
    let idle = store.dir().try_lock(at::LOCK, lock::Mode::Exclusive)?;
    let names = store.dir().entries(at::TMP)?;
    let busy = idle.is_none();
    drop(idle);
    let mut out = TmpUsage::default();
    for name in names {
        let size = tmp_entry_size(store, &Path::new(at::TMP).join(&name));
        let in_use = busy && super::staging_pid(&name).is_none_or(process_alive);
        out.entries += 1;
        out.size += size;
        if in_use {
            out.in_use += 1;
        } else {
            out.reclaimable += size;
        }
    }
    Ok(out)
}

/// True when process `pid` exists (one of another user's counts too).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Everything `df` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub summary: Vec<Summary>,
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    pub layers: Vec<LayerUsage>,
    pub tmp: TmpUsage,
    /// Read-only mounts of images alone (they hold their images, as containers do).
    pub read_only_mounts: Vec<MountUsage>,
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
    let read_only_mounts: Vec<MountUsage> = mounts::live(store)?
        .into_iter()
        .map(|m| MountUsage {
            image: m.record.image,
            mountpoint: m.record.mountpoint,
            pid: m.record.pid,
            created: m.record.created,
        })
        .collect();
    let held: BTreeSet<&str> = read_only_mounts.iter().map(|m| m.image.as_str()).collect();

    // Layer → number of images listing it, and whether an active image does.
    let mut listed: BTreeMap<Digest, (usize, bool, u64)> = BTreeMap::new();
    let mut image_rows = Vec::new();
    for img in &images {
        let key = img.id.to_string();
        let n = users.get(&key).copied().unwrap_or(0);
        let active = n > 0 || held.contains(key.as_str());
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

    let tmp = tmp_usage(store)?;
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
        Summary {
            kind: TMP_KIND,
            total: tmp.entries,
            active: tmp.in_use,
            size: tmp.size,
            reclaimable: tmp.reclaimable,
        },
    ];
    Ok(Usage {
        summary,
        images: out_images,
        containers: out_ctrs,
        layers: out_layers,
        tmp,
        read_only_mounts,
    })
}
