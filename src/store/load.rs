//! Loading an image source into the store: plan, unpack layers in parallel, install.
//!
//! Order of visibility, so that a failure or a kill at any point leaves no visible half
//! state: (1) the layers an image lacks are staged and verified in `tmp/`, in parallel (up
//! to the number of cores); if any fails, every staged layer is discarded and the store is
//! as it was; (2) the staged layers are renamed into `layers/`; (3) the image directory is
//! staged and renamed into `images/`; (4) the tags are written to `refs.json`. A kill
//! between (2) and (3) leaves layers no image names, which `prune` removes. The store lock
//! is held shared throughout, so `rmi`/`prune` never run in between. How it goes is
//! reported to the caller's [`Progress`], never drawn here.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::Store;
use super::images::{self, ImageRecord, LayerRecord};
use super::layers::{self, LayerInfo, LayerSource, Staged};
use super::progress::{LayerEvent, LayerProgress, Progress};
use super::unpack::{DEFAULT_MAX_LAYER_SIZE, UnpackOptions};
use crate::digest::{Digest, chain_ids};
use crate::error::{Error, Result};
use crate::image::{self, Compression, ImagePlan, Reference, Source};

/// Options of a load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// An extra name (`NAME[:TAG]`) for the loaded image.
    pub tag: Option<String>,
    /// Most bytes one layer may unpack to (apparent sizes of its files).
    pub max_layer_size: u64,
    /// The source's file name means nothing (an archive staged from stdin): ref names that
    /// are only a tag are not named after it.
    pub nameless: bool,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            tag: None,
            max_layer_size: DEFAULT_MAX_LAYER_SIZE,
            nameless: false,
        }
    }
}

/// One loaded image.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub id: Digest,
    /// The names it was tagged with.
    pub names: Vec<Reference>,
    /// Layers unpacked by this load (the others were already in the store).
    pub unpacked_layers: usize,
}

/// Loads the single image of `source` and returns its id, telling `progress` how it goes.
/// A source holding several images (a multi-image docker-archive) is an error: pick one
/// with `docker-archive:PATH:REF`.
pub fn load(
    store: &Store,
    source: &Source,
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let plans = read(store, source, opts)?;
    if plans.len() > 1 {
        let first = plans
            .iter()
            .flat_map(|p| p.names.first())
            .map(|n| n.familiar())
            .next()
            .unwrap_or_else(|| "@0".into());
        return Err(Error::SeveralImages {
            from: source.to_string(),
            count: plans.len(),
            example: format!("{source}:{first}"),
        });
    }
    let loaded = load_plans(store, plans, opts, progress)?;
    loaded
        .last()
        .map(|l| l.id)
        .ok_or_else(|| Error::NoImage(source.to_string()))
}

/// Loads every image of `source` (all of a docker-archive, as `docker load` does).
pub fn load_all(
    store: &Store,
    source: &Source,
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<Vec<Loaded>> {
    let plans = read(store, source, opts)?;
    load_plans(store, plans, opts, progress)
}

/// Reads `source`'s plans, with the store's `tmp/` as scratch space.
fn read(store: &Store, source: &Source, opts: &LoadOptions) -> Result<Vec<ImagePlan>> {
    let tmp = store.dir().open_dir(super::at::TMP)?;
    let shown = store.shown(super::at::TMP);
    let scratch = crate::image::archive::Scratch {
        dir: std::os::fd::AsFd::as_fd(&tmp),
        shown: &shown,
    };
    source.read_in(opts.tag.is_none() && !opts.nameless, scratch)
}

fn load_plans(
    store: &Store,
    plans: Vec<ImagePlan>,
    opts: &LoadOptions,
    progress: &dyn Progress,
) -> Result<Vec<Loaded>> {
    let extra = match &opts.tag {
        Some(t) => Some(Reference::parse(t)?),
        None => None,
    };
    if extra.is_some() && plans.len() > 1 {
        return Err(Error::TagNeedsOneImage);
    }
    let _lock = store.lock_for_load()?;
    let unpack_opts = UnpackOptions {
        styles: store.styles()?,
        ownership: store.ownership(),
        max_size: opts.max_layer_size,
    };
    let mut out = Vec::new();
    for plan in plans {
        out.push(load_one(
            store,
            plan,
            extra.as_ref(),
            &unpack_opts,
            progress,
        )?);
    }
    Ok(out)
}

fn load_one(
    store: &Store,
    plan: ImagePlan,
    extra: Option<&Reference>,
    unpack_opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<Loaded> {
    // Unique missing layers, in image order (an image may repeat a diff_id, e.g. empty layers).
    let mut todo: Vec<usize> = Vec::new();
    for (i, l) in plan.layers.iter().enumerate() {
        if !store.has_layer(&l.diff_id)
            && !todo.iter().any(|&j| plan.layers[j].diff_id == l.diff_id)
        {
            todo.push(i);
        }
    }
    let labels: Vec<String> = plan.layers.iter().map(layers::label).collect();
    progress.image(&labels);
    for i in (0..plan.layers.len()).filter(|i| !todo.contains(i)) {
        progress.layer(i, LayerEvent::Present);
    }

    let staged = stage_parallel(store, &plan, &todo, unpack_opts, progress)?;
    // Layers unpacked by an older layerfs get the tar layout `save` needs.
    for (i, l) in plan.layers.iter().enumerate() {
        if !todo.contains(&i) && !super::tarsplit::has_layout(store, &l.diff_id) {
            layers::record_layout(store, plan.files.as_ref(), l)?;
        }
    }
    let mut infos: Vec<(Digest, LayerInfo)> = Vec::new();
    for s in staged {
        let info = layers::install(store, s)?;
        infos.push((info.diff_id, info));
    }

    let diff_ids: Vec<Digest> = plan.layers.iter().map(|l| l.diff_id).collect();
    let chains = chain_ids(&diff_ids);
    let mut records = Vec::new();
    for (l, chain_id) in plan.layers.iter().zip(chains) {
        let fresh = infos
            .iter()
            .find(|(d, _)| *d == l.diff_id)
            .map(|(_, i)| i.clone());
        let info = match fresh.clone() {
            Some(i) => i,
            None => layers::read_info(store, &l.diff_id)?.ok_or_else(|| {
                Error::io_what(
                    format!("layer {} vanished from the store", l.diff_id),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?,
        };
        let (digest, media_type, size) = match &fresh {
            // Unpacked now: what we measured.
            Some(i) => {
                let s = i.sources.first();
                (
                    l.digest.or(s.and_then(|s| s.digest)),
                    l.media_type
                        .clone()
                        .or(s.map(|s| s.media_type.clone()))
                        .unwrap_or_default(),
                    l.size.or(s.map(|s| s.size)),
                )
            }
            // Already present: what the source says, completed cheaply.
            None => describe_present(&plan, l, store)?,
        };
        records.push(LayerRecord {
            digest,
            diff_id: l.diff_id,
            chain_id,
            media_type,
            size,
            unpacked_size: info.size,
        });
    }
    let record = ImageRecord {
        id: plan.config_digest,
        manifest_digest: plan.manifest_digest,
        manifest_media_type: plan.manifest_media_type.clone(),
        layers: records,
        loaded: crate::time::now_rfc3339(),
        created: plan.config.created().clone(),
        os: plan.config.os().to_string(),
        architecture: plan.config.architecture().to_string(),
        origin: plan.origin.clone(),
        tags: Vec::new(),
    };
    images::install(
        store,
        &record,
        &plan.config_bytes,
        plan.manifest_bytes.as_deref(),
    )?;
    let mut names = plan.names.clone();
    if let Some(e) = extra {
        names.push(e.clone());
    }
    names.dedup();
    images::tag(store, &plan.config_digest, &names)?;
    Ok(Loaded {
        id: plan.config_digest,
        names,
        unpacked_layers: todo.len(),
    })
}

/// Digest, media type and size of a layer that was already installed, without reading
/// its blob (beyond four bytes when the source does not name its media type).
fn describe_present(
    plan: &ImagePlan,
    l: &image::LayerPlan,
    store: &Store,
) -> Result<(Option<Digest>, String, Option<u64>)> {
    if let (Some(d), Some(m)) = (&l.digest, &l.media_type) {
        let src = LayerSource {
            digest: Some(*d),
            media_type: m.clone(),
            size: l.size.unwrap_or(0),
        };
        layers::add_sources(store, &l.diff_id, &[src])?;
        return Ok((Some(*d), m.clone(), l.size));
    }
    let Some((mut r, size)) = plan.files.open(&l.path)? else {
        return Ok((l.digest, l.media_type.clone().unwrap_or_default(), l.size));
    };
    let mut head = [0u8; 4];
    let n = r.read(&mut head).unwrap_or(0);
    let compression = Compression::sniff(&head[..n]);
    let digest = match compression {
        // An uncompressed blob is the tar itself: its digest is the diff_id.
        Compression::None => Some(l.diff_id),
        _ => l.digest,
    };
    Ok((
        digest,
        compression.docker_media_type().to_string(),
        Some(size),
    ))
}

/// Stages the layers `todo` (indexes into `plan.layers`) with up to `available_parallelism`
/// threads. On any failure every staged directory is removed and the first failure (in
/// layer order) is returned.
fn stage_parallel(
    store: &Store,
    plan: &ImagePlan,
    todo: &[usize],
    unpack_opts: &UnpackOptions,
    progress: &dyn Progress,
) -> Result<Vec<Staged>> {
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<Staged>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(k) else { break };
                    let layer = &plan.layers[i];
                    let shown = LayerProgress {
                        of: progress,
                        layer: i,
                    };
                    let r = layers::stage(store, plan.files.as_ref(), layer, unpack_opts, shown);
                    if r.is_ok() {
                        progress.layer(i, LayerEvent::Done);
                    } else {
                        progress.layer(i, LayerEvent::Failed);
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut v) = results.lock() {
                        v.push((i, r));
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| Error::io_what("unpack worker", std::io::Error::other("a worker panicked")))?;
    results.sort_by_key(|(i, _)| *i);
    let mut staged = Vec::new();
    let mut first_err = None;
    for (_, r) in results {
        match r {
            Ok(s) => staged.push(s),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        for s in staged {
            let _ = store.dir().remove_tree(&s.dir);
        }
        return Err(e);
    }
    Ok(staged)
}
