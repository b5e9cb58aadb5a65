//! `layerfs save`: images of the store written as a docker-archive, an OCI image layout or
//! an OCI archive, for other tools to read.
//!
//! What is written, per image: its config byte for byte (so the image id is the same
//! wherever it is loaded), its layers, a manifest, and the image's names (index.json
//! annotations; Docker's `manifest.json` `RepoTags`). Each layer is the exact tar it was
//! loaded as, played back from its recorded layout ([`super::tarsplit`]) and checked
//! against its diff_id on the way out, then compressed as asked ([`crate::image::compress`]:
//! in parallel chunks, streamed). A layer shared by several images is written once.
//! Layers `commit` made are recorded as they are installed (through `layers::stage_tar`,
//! as loaded ones). A layer without a recorded layout (unpacked by an older layerfs) is
//! written again: one `commit` made by `commit`'s own writer over the layers below it
//! ([`SaveOptions::rewrite_commit`], given by the caller: that writer reads a container's
//! changes, above the store), any other from its directory; either counts only if it
//! gives the diff_id.
//!
//! "Written as is": the store keeps a layer's uncompressed tar exactly, not the
//! compressed blob it came in (keeping both would cost the blob's size again on disk).
//! So a layer saved uncompressed is byte for byte its original tar — and its original
//! blob when that was uncompressed (every `docker save` archive); a layer saved
//! compressed is compressed anew, reproducibly (the same image always gives the same
//! bytes), with a new blob digest. The stored manifest is written as is when its layers
//! are exactly what is written (same digests and media types), else a new OCI manifest.
//!
//! Compression by default: none for a docker-archive (as `docker save`), else each layer
//! as it was loaded (gzip, zstd or none; as `skopeo copy` keeps it).
//!
//! The store lock is held shared while saving, so no `rmi` or `prune` removes a layer
//! half-way; the store is only read.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::images::{ImageRecord, MANIFEST_JSON};
use super::{Store, at, layer_tar, tarsplit};
use crate::digest::{Digest, VerifyingReader, mismatch_in};
use crate::error::{Error, Result};
use crate::image::compress::{self, Written};
use crate::image::sink::Sink;
use crate::image::write::{self, Blob, DockerImage, IndexImage};
use crate::image::{Compression, Reference};

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// A `docker save` archive (Docker 25+'s: an OCI layout plus `manifest.json`).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// A tar of an OCI image layout.
    OciArchive,
}

impl SaveFormat {
    fn is_dir(self) -> bool {
        self == SaveFormat::Oci
    }
}

/// Options of a save.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    pub format: SaveFormat,
    /// Layer compression; `None`: the format's default (see the module docs).
    pub compress: Option<Compression>,
    /// Compression threads.
    pub threads: usize,
    /// `commit`'s writer of a layer it made (`crate::commit::layer_tar`), tried first for
    /// such a layer without a recorded layout; `None`: written from its directory only.
    pub rewrite_commit: Option<RewriteLayer>,
}

/// Writes layer `index` (bottom first) of an image to `out` again, from the store's
/// layers; returns the diff_id of what it wrote and its size.
pub type RewriteLayer =
    fn(&Store, &ImageRecord, usize, &mut dyn io::Write) -> Result<(Digest, u64)>;

/// One image to save, with the names to write for it.
#[derive(Debug, Clone)]
pub struct SaveImage {
    pub image: ImageRecord,
    pub names: Vec<Reference>,
}

/// What a save wrote.
#[derive(Debug, Clone, Default)]
pub struct Saved {
    pub images: usize,
    /// Layer blobs written (each once).
    pub layers: usize,
    /// Bytes of layer blobs written.
    pub layer_bytes: u64,
}

/// Merges requests for the same image (their names together, each once), in order.
fn merge(requests: Vec<SaveImage>) -> Vec<SaveImage> {
    let mut out: Vec<SaveImage> = Vec::new();
    for r in requests {
        match out.iter_mut().find(|o| o.image.id == r.image.id) {
            Some(o) => {
                for n in r.names {
                    if !o.names.contains(&n) {
                        o.names.push(n);
                    }
                }
            }
            None => out.push(r),
        }
    }
    out
}

/// The compression of one layer in the output.
fn layer_compression_for(opts: &SaveOptions, media_type: &str) -> Compression {
    match (opts.compress, opts.format) {
        (Some(c), _) => c,
        (None, SaveFormat::DockerArchive) => Compression::None,
        (None, _) => Compression::of_media_type(media_type).unwrap_or(Compression::Gzip),
    }
}

/// Writes `requests` to `out`. On any error nothing is left at `out` (an existing
/// archive there stays as it was) and the error says which image or layer failed.
pub fn save(
    store: &Store,
    requests: Vec<SaveImage>,
    out: &Path,
    opts: &SaveOptions,
) -> Result<Saved> {
    let requests = merge(requests);
    let mut sink = if opts.format.is_dir() {
        Sink::dir(out)?
    } else {
        Sink::tar(out)?
    };
    let _lock = store.lock_shared()?;
    let mut saved = Saved::default();
    let mut layers: HashMap<(Digest, Compression), Blob> = HashMap::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for r in &requests {
        let img = &r.image;
        let config = store.image_config_bytes(&img.id)?;
        if Digest::of(&config) != img.id {
            return Err(Error::Invalid {
                file: store
                    .shown(at::image(&img.id).join("config.json"))
                    .display()
                    .to_string(),
                detail: "no longer matches the image id (changed on disk)".into(),
            });
        }
        let mut blobs = Vec::with_capacity(img.layers.len());
        for (i, l) in img.layers.iter().enumerate() {
            let c = layer_compression_for(opts, &l.media_type);
            if let Some(b) = layers.get(&(l.diff_id, c)) {
                blobs.push(b.clone());
                continue;
            }
            let w = write_layer(store, &mut sink, img, i, c, opts)
                .map_err(|e| e.in_layer(&l.diff_id))?;
            saved.layers += 1;
            saved.layer_bytes += w.size;
            let b = Blob {
                media_type: c.media_type().to_string(),
                digest: w.digest,
                size: w.size,
            };
            layers.insert((l.diff_id, c), b.clone());
            blobs.push(b);
        }
        let config_blob = Blob {
            media_type: write::MT_OCI_CONFIG.to_string(),
            digest: sink.put_blob(&config)?,
            size: config.len() as u64,
        };
        let manifest = stored_manifest_if_same(store, img, &blobs)
            .unwrap_or_else(|| write::manifest(&config_blob, &blobs));
        let manifest_blob = Blob {
            media_type: write::MT_OCI_MANIFEST.to_string(),
            digest: sink.put_blob(&manifest)?,
            size: manifest.len() as u64,
        };
        let cfg = store.image_config(&img.id)?;
        index.push(IndexImage {
            manifest: manifest_blob,
            names: r.names.clone(),
            os: cfg.os().to_string(),
            architecture: cfg.architecture().to_string(),
            variant: cfg.variant().clone(),
        });
        docker.push(DockerImage {
            config: img.id,
            names: r.names.clone(),
            layers: blobs.iter().map(|b| b.digest).collect(),
        });
        saved.images += 1;
    }
    sink.put_file("index.json", &write::index(&index))?;
    if opts.format == SaveFormat::DockerArchive {
        sink.put_file("manifest.json", &write::docker_manifest(&docker))?;
    }
    sink.put_file("oci-layout", write::OCI_LAYOUT)?;
    if opts.format == SaveFormat::DockerArchive
        && let Some(repos) = write::repositories(&docker)
    {
        sink.put_file("repositories", &repos)?;
    }
    sink.commit()?;
    Ok(saved)
}

/// Where the tar of a layer without a recorded layout comes from.
#[derive(Debug, Clone, Copy)]
enum Rewrite {
    /// `commit`'s own writer, over the layers below it ([`SaveOptions::rewrite_commit`]).
    Commit(RewriteLayer),
    /// The generic writer of the layer's directory ([`layer_tar::stream`]).
    Files,
}

/// How to write again the tar of layer `index` of `img`, which has no recorded layout.
/// A layer `commit` made (an uncompressed OCI layer, as it writes them) is tried with
/// `commit`'s writer first, hashed without being kept: it gives the layer's exact bytes
/// when `commit` made it (also when a layerfs without layouts did), and anything else
/// fails its diff_id.
fn rewrite_for(store: &Store, img: &ImageRecord, index: usize, opts: &SaveOptions) -> Rewrite {
    let l = &img.layers[index];
    // `commit` writes its layers uncompressed.
    let Some(commit) = opts.rewrite_commit else {
        return Rewrite::Files;
    };
    if l.media_type != Compression::None.media_type() {
        return Rewrite::Files;
    }
    match commit(store, img, index, &mut io::sink()) {
        Ok((digest, _)) if digest == l.diff_id => Rewrite::Commit(commit),
        Ok((digest, _)) => {
            log::debug!(
                "layer {}: commit's writer gives {digest}, not the layer",
                l.diff_id
            );
            Rewrite::Files
        }
        Err(e) => {
            log::debug!("layer {}: commit's writer: {e}", l.diff_id);
            Rewrite::Files
        }
    }
}

/// Streams layer `index` of `img` into the output, compressed with `c`.
fn write_layer(
    store: &Store,
    sink: &mut Sink,
    img: &ImageRecord,
    index: usize,
    c: Compression,
    opts: &SaveOptions,
) -> Result<Written> {
    let threads = opts.threads;
    let diff_id = &img.layers[index].diff_id;
    // The recorded layout plays back the original tar; without one, a tar written again
    // is the layer only if it is byte for byte the same (checked against the diff_id on
    // the way).
    let recorded = tarsplit::LayerTar::open(store, diff_id)?;
    let rewrite = match recorded {
        Some(_) => None,
        None => Some(rewrite_for(store, img, index, opts)),
    };
    // Errors of the layer are told apart from errors of the output (a full disk).
    let failed = Arc::new(Mutex::new(None::<String>));
    let res = std::thread::scope(|scope| -> Result<Written> {
        let tar: Box<dyn Read + Send + '_> = match (recorded, rewrite) {
            (Some(t), _) => Box::new(t),
            (None, Some(Rewrite::Commit(commit))) => {
                let p = layer_tar::pipe_scoped(scope, move |mut w| {
                    commit(store, img, index, &mut w)
                        .map(|_| ())
                        .map_err(io::Error::other)
                })
                .map_err(|e| Error::io_what("starting the layer writer", e))?;
                Box::new(VerifyingReader::new(p, *diff_id, None))
            }
            (None, _) => {
                let dir = store.open_layer_dir(diff_id)?;
                let s = layer_tar::stream(dir)
                    .map_err(|e| Error::io(store.shown(at::layer_diff(diff_id)), e))?;
                Box::new(VerifyingReader::new(s, *diff_id, None))
            }
        };
        let src = SourceErrors {
            inner: tar,
            failed: Arc::clone(&failed),
        };
        sink.stream_blob(|w| compress::compress(src, w, c, threads))
    });
    let from_layer = failed.lock().ok().and_then(|mut f| f.take());
    match (res, from_layer) {
        (Ok(w), _) => Ok(w),
        (Err(_), Some(why)) if matches!(rewrite, Some(Rewrite::Files)) => Err(Error::Invalid {
            file: store.shown(at::layer(diff_id)).display().to_string(),
            detail: format!(
                "the layer's original tar is not recorded (it was loaded by an older \
                 layerfs) and a tar written from its files is not the original ({why}): \
                 load its image again from its source to save it"
            ),
        }),
        (Err(_), Some(why)) => Err(not_reproducible(store, diff_id, &why)),
        (Err(e), None) => Err(e),
    }
}

/// Remembers the first error of the reader it wraps.
struct SourceErrors<R> {
    inner: R,
    failed: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for SourceErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Ok(mut f) = self.failed.lock()
                && f.is_none()
            {
                *f = Some(match mismatch_in(e) {
                    Some(m) => m.to_string(),
                    None => e.to_string(),
                });
            }
        })
    }
}

fn not_reproducible(store: &Store, diff_id: &Digest, why: &str) -> Error {
    Error::Invalid {
        file: store.shown(at::layer(diff_id)).display().to_string(),
        detail: format!(
            "the unpacked layer no longer gives back its tar ({why}): it was changed on \
             disk; remove the image and load it again"
        ),
    }
}

/// The stored manifest, when it describes exactly the config and layer blobs written.
fn stored_manifest_if_same(store: &Store, img: &ImageRecord, layers: &[Blob]) -> Option<Vec<u8>> {
    if img.manifest_media_type.as_deref() != Some(write::MT_OCI_MANIFEST) {
        return None;
    }
    let bytes = store
        .dir()
        .read(at::image(&img.id).join(MANIFEST_JSON))
        .ok()??;
    let m: oci_spec::image::ImageManifest = serde_json::from_slice(&bytes).ok()?;
    if Digest::parse(m.config().digest().as_ref()).ok()? != img.id
        || m.layers().len() != layers.len()
    {
        return None;
    }
    let same = m.layers().iter().zip(layers).all(|(d, b)| {
        d.media_type().to_string() == b.media_type
            && Digest::parse(d.digest().as_ref()).ok() == Some(b.digest)
            && d.size() == b.size
    });
    same.then_some(bytes)
}
