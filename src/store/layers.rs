//! Layers: staged, verified, then installed by one rename.
//!
//! `layers/<diff_id hex>/` holds `diff/` (the unpacked layer, see [`super::unpack`]),
//! `tar-split.zst` (its tar's layout, see [`super::tarsplit`]) and `layer.json`
//! ([`LayerInfo`]). A layer is built in `tmp/layer-…/` by [`stage`], which streams the
//! blob through: sha256 of the blob as stored (checked against the manifest digest and
//! size when known) → decompression (gzip, zstd or none, recognised from the blob's first
//! bytes) → sha256 of the tar (checked against the config's diff_id, after reading the
//! stream to its very end) → the unpacker and the layout recorder. [`stage_tar`] does the
//! part from the tar on, for a layer made here (`commit`'s). Reading, hashing and
//! decompressing run on a thread of their own, a few chunks ahead of the unpacker, so CPU
//! work overlaps the filesystem work. [`install`] renames the staged directory into
//! `layers/` with `RENAME_NOREPLACE`; when another load won the race the staged copy is
//! discarded. A layer already installed is never staged again.

use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::Store;
use super::progress::{LayerEvent, LayerProgress};
use super::tarsplit;
use super::unpack::{self, UnpackOptions, UnpackStats};
use crate::digest::{Digest, Hashing, Mismatch, VerifyingReader, mismatch_in};
use crate::error::{Error, Result};
use crate::image::{Compression, ImageFiles, LayerPlan};
use crate::whiteout::Styles;

pub const LAYER_JSON: &str = "layer.json";
const DIFF_DIR: &str = "diff";
/// Read-ahead between the blob and the decompressor.
const BLOB_BUF: usize = 256 << 10;

/// One form in which a layer has been seen (the same diff_id arrives gzip'd, zstd'd, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSource {
    pub digest: Option<Digest>,
    pub media_type: String,
    pub size: u64,
}

/// `layer.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerInfo {
    pub diff_id: Digest,
    /// Sum of the sizes of regular files.
    pub size: u64,
    /// Tar entries applied.
    pub entries: u64,
    /// How whiteouts and opaque directories are spelled in `diff/`.
    pub styles: Styles,
    pub sources: Vec<LayerSource>,
    /// When it was unpacked (RFC 3339).
    pub created: String,
}

/// Reads `layer.json`; `Ok(None)` when the layer is not installed.
pub fn read_info(store: &Store, diff_id: &Digest) -> Result<Option<LayerInfo>> {
    store.read_json_opt(super::at::layer(diff_id).join(LAYER_JSON))
}

/// A layer unpacked and verified in `tmp/`, not yet visible.
#[derive(Debug)]
pub struct Staged {
    /// Its directory, inside the store.
    pub dir: PathBuf,
    pub info: LayerInfo,
}

/// Blob hashing: verified when the source names the digest, just measured otherwise.
enum BlobReader<R> {
    Verify(VerifyingReader<R>),
    Hash(Hashing<R>),
}

impl<R: Read> Read for BlobReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BlobReader::Verify(v) => v.read(buf),
            BlobReader::Hash(h) => h.read(buf),
        }
    }
}

impl<R: Read> BlobReader<R> {
    fn failure(&self) -> Option<&Mismatch> {
        match self {
            BlobReader::Verify(v) => v.failure(),
            BlobReader::Hash(_) => None,
        }
    }
}

/// Where the error of a layer names it: its blob digest when known, else its diff_id.
pub fn label(plan: &LayerPlan) -> String {
    plan.digest.unwrap_or(plan.diff_id).to_string()
}

fn in_layer(layer: &str, e: Error) -> Error {
    Error::Layer {
        layer: layer.to_string(),
        source: Box::new(e),
    }
}

/// Streams one layer blob into a new staging directory and verifies it. `progress` is
/// told the blob's size and fed its bytes as they are read.
pub fn stage(
    store: &Store,
    files: &dyn ImageFiles,
    plan: &LayerPlan,
    opts: &UnpackOptions,
    progress: LayerProgress<'_>,
) -> Result<Staged> {
    let layer = label(plan);
    let (blob, blob_size) = files
        .open(&plan.path)
        .map_err(|e| in_layer(&layer, e))?
        .ok_or_else(|| {
            in_layer(
                &layer,
                Error::MissingBlob {
                    what: "layer".into(),
                    digest: layer.clone(),
                    location: files.location(&plan.path),
                },
            )
        })?;
    progress.report(LayerEvent::Start(blob_size));
    staging(store, &plan.diff_id, &layer, |dir| {
        let blob = progress.counting(blob);
        stage_blob(store, dir, files, plan, opts, blob, blob_size)
    })
}

/// Stages a layer from its uncompressed tar, which must hash to `diff_id`, as [`stage`]
/// does from a blob (unpacked, verified, its layout recorded); `source` is the form
/// `layer.json` records it came in. For layers made here (`commit`), not read from an
/// image source.
pub fn stage_tar(
    store: &Store,
    tar: impl Read + Send,
    diff_id: Digest,
    opts: &UnpackOptions,
    source: LayerSource,
) -> Result<Staged> {
    staging(store, &diff_id, &diff_id.to_string(), |dir| {
        let diff_fd = make_diff(store, dir)?;
        let stats = unpack_tar(store, dir, &diff_fd, tar, &diff_id, opts).map_err(Failed::error)?;
        write_info(store, dir, diff_id, &stats, opts, source)
    })
}

/// Runs `build` in a new staging directory for layer `diff_id`, which is removed again
/// when it fails; its errors name the layer as `layer`.
fn staging(
    store: &Store,
    diff_id: &Digest,
    layer: &str,
    build: impl FnOnce(&Path) -> Result<LayerInfo>,
) -> Result<Staged> {
    let dir = store.staging_dir(&format!("layer-{}", diff_id.short()))?;
    match build(&dir) {
        Ok(info) => Ok(Staged { dir, info }),
        Err(e) => {
            let _ = store.dir().remove_tree(&dir);
            Err(in_layer(layer, e))
        }
    }
}

/// Creates `dir/diff` (the layer root) and opens it.
fn make_diff(store: &Store, dir: &Path) -> Result<OwnedFd> {
    let diff = dir.join(DIFF_DIR);
    // The mode of a layer root no tar entry describes (Docker's default); `./` sets it.
    store.dir().mkdir(&diff, 0o755)?;
    store.dir().open_dir(&diff)
}

/// The blob side of [`stage`]: its digest (checked when the source names it, else
/// measured), its compression (recognised from its first bytes), then [`unpack_tar`].
fn stage_blob(
    store: &Store,
    dir: &Path,
    files: &dyn ImageFiles,
    plan: &LayerPlan,
    opts: &UnpackOptions,
    blob: impl Read + Send,
    blob_size: u64,
) -> Result<LayerInfo> {
    let diff_fd = make_diff(store, dir)?;
    let location = files.location(&plan.path);
    let mut blob_r = match plan.digest {
        Some(d) => BlobReader::Verify(VerifyingReader::new(blob, d, plan.size)),
        None => BlobReader::Hash(Hashing::new(blob)),
    };
    let blob_mismatch = |m: &Mismatch| Error::DigestMismatch {
        what: format!("blob {location}"),
        mismatch: m.clone(),
    };

    let (unpacked, compression) = {
        let mut buffered = BufReader::with_capacity(BLOB_BUF, &mut blob_r);
        let head = buffered.fill_buf().map_err(|e| Error::io(&location, e))?;
        let compression = Compression::sniff(head);
        let tar = compression
            .reader(buffered)
            .map_err(|e| Error::io_what("starting zstd decompression", e))?;
        let unpacked = unpack_tar(store, dir, &diff_fd, tar, &plan.diff_id, opts);
        (unpacked, compression)
    };
    // A blob that is not the one the manifest names explains whatever went wrong reading
    // the tar out of it.
    if !matches!(unpacked, Err(Failed::Store(_)))
        && let Some(m) = blob_r.failure()
    {
        return Err(blob_mismatch(m));
    }
    let stats = unpacked.map_err(Failed::error)?;
    // The rest of the blob (after the compressed stream's end) counts for its digest.
    if let Err(e) = io::copy(&mut blob_r, &mut io::sink()) {
        return Err(match mismatch_in(&e) {
            Some(m) => blob_mismatch(m),
            None => Error::io(&location, e),
        });
    }
    if let Some(m) = blob_r.failure() {
        return Err(blob_mismatch(m));
    }
    let digest = match &blob_r {
        BlobReader::Verify(_) => plan.digest,
        BlobReader::Hash(h) => Some(h.digest()),
    };
    let media_type = match &plan.media_type {
        Some(m) => {
            if Compression::of_media_type(m) != Some(compression) {
                log::debug!(
                    "layer {}: media type {m} but content is {compression:?}",
                    label(plan)
                );
            }
            m.clone()
        }
        None => compression.docker_media_type().to_string(),
    };
    let source = LayerSource {
        digest,
        media_type,
        size: blob_size,
    };
    write_info(store, dir, plan.diff_id, &stats, opts, source)
}

/// Why [`unpack_tar`] failed: while reading the tar (which a bad blob explains) or while
/// finishing what it wrote in the store.
enum Failed {
    Stream(Error),
    Store(Error),
}

impl Failed {
    fn error(self) -> Error {
        match self {
            Failed::Stream(e) | Failed::Store(e) => e,
        }
    }
}

/// Unpacks the uncompressed tar `tar` into `diff_fd` (the root of `dir/diff`) while
/// recording its layout into `dir`, and checks that it hashes to `diff_id`, read to its
/// very end.
fn unpack_tar(
    store: &Store,
    dir: &Path,
    diff_fd: &OwnedFd,
    tar: impl Read + Send,
    diff_id: &Digest,
    opts: &UnpackOptions,
) -> std::result::Result<UnpackStats, Failed> {
    let diff_mismatch = |m: &Mismatch| Error::DigestMismatch {
        what: "uncompressed layer (diff_id listed in the image config)".into(),
        mismatch: m.clone(),
    };
    let mut diff_r = VerifyingReader::new(tar, *diff_id, None);
    let layout_rel = dir.join(tarsplit::TAR_SPLIT);
    let layout_path = store.shown(&layout_rel);
    let layout_file = store
        .dir()
        .open_write(&layout_rel, true)
        .map_err(Failed::Store)?;
    let recorder = tarsplit::Recorder::new(layout_file)
        .map_err(|e| Failed::Store(Error::io(&layout_path, e)))
        .map(tarsplit::Shared::new)?;
    // Reading, hashing and decompressing run on their own thread, a few chunks ahead
    // of the unpacker (which mostly waits on the filesystem). The unpacker's side of
    // the stream goes through the layout recorder.
    let (unpacked, drained) = std::thread::scope(|scope| {
        let (ahead, producer) = read_ahead(scope, &mut diff_r);
        let mut tee = tarsplit::Tee::new(ahead, &recorder);
        let unpacked = unpack::unpack_recording(&mut tee, diff_fd.as_fd(), opts, Some(&recorder));
        // Read to the very end: bytes after the tar's end marker are part of the
        // diff_id, and the digest checks happen at EOF.
        let drained = match &unpacked {
            Ok(_) => io::copy(&mut tee, &mut io::sink()).map(|_| ()),
            Err(_) => Ok(()),
        };
        drop(tee);
        let _ = producer.join();
        (unpacked, drained)
    });
    let kept = match recorder.into_inner().finish() {
        Ok(kept) => kept,
        Err(e) => return Err(Failed::Store(Error::io(&layout_path, e))),
    };
    if !kept {
        let _ = store.dir().remove_file(&layout_rel);
    }
    if let Some(m) = diff_r.failure() {
        return Err(Failed::Stream(diff_mismatch(m)));
    }
    let stats = match unpacked {
        Ok(s) => s,
        Err(Error::Tar { source }) => {
            return Err(Failed::Stream(match mismatch_in(&source) {
                Some(m) => diff_mismatch(m),
                None => Error::Tar { source },
            }));
        }
        Err(e) => return Err(Failed::Stream(e)),
    };
    if let Err(e) = drained {
        return Err(Failed::Stream(match mismatch_in(&e) {
            Some(m) => diff_mismatch(m),
            None => Error::io_what("decompressing the layer", e),
        }));
    }
    Ok(stats)
}

/// Writes `dir/layer.json` for a layer staged there from `source`.
fn write_info(
    store: &Store,
    dir: &Path,
    diff_id: Digest,
    stats: &UnpackStats,
    opts: &UnpackOptions,
    source: LayerSource,
) -> Result<LayerInfo> {
    let info = LayerInfo {
        diff_id,
        size: stats.size,
        entries: stats.entries,
        styles: opts.styles,
        sources: vec![source],
        created: crate::time::now_rfc3339(),
    };
    store
        .dir()
        .write_new(dir.join(LAYER_JSON), &info_json(&info)?)?;
    Ok(info)
}

/// `layer.json`'s bytes: the one encoder, for new layers and for sources added later.
fn info_json(info: &LayerInfo) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(info).map_err(|e| Error::encode("layer.json", e))?;
    json.push(b'\n');
    Ok(json)
}

/// Chunk size and depth of the read-ahead between decompression and unpack.
const AHEAD_CHUNK: usize = 256 << 10;
const AHEAD_CHUNKS: usize = 8;

/// The consuming end of [`read_ahead`].
struct AheadReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for AheadReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    let _ = self.recycle.send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer hung up: end of stream.
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
    }
}

/// Reads `src` on a scoped thread into a bounded queue of chunks and returns the reader
/// of that queue. The producer stops at EOF, at an error (passed on to the reader), or
/// when the reader is dropped.
fn read_ahead<'scope, 'env, R: Read + Send>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    src: &'scope mut R,
) -> (AheadReader, std::thread::ScopedJoinHandle<'scope, ()>) {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD_CHUNKS);
    let (recycle, reuse) = mpsc::channel::<Vec<u8>>();
    let producer = scope.spawn(move || {
        loop {
            let mut buf = reuse.try_recv().unwrap_or_default();
            buf.resize(AHEAD_CHUNK, 0);
            let mut filled = 0;
            // Fill whole chunks: decompressors return small reads.
            let res = loop {
                // Ctrl-C: the unpacker gets the error, its staging dir goes.
                if let Err(e) = crate::interrupt::check() {
                    break Err(e);
                }
                match src.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            let eof = filled < AHEAD_CHUNK;
            if filled > 0 && tx.send(Ok(buf)).is_err() {
                return;
            }
            if let Err(e) = res {
                let _ = tx.send(Err(e));
                return;
            }
            if eof {
                return;
            }
        }
    });
    let reader = AheadReader {
        rx,
        recycle,
        cur: Vec::new(),
        pos: 0,
        done: false,
    };
    (reader, producer)
}

/// Makes a staged layer visible. Returns the installed layer's info: ours, or that of
/// the copy another load installed first (ours is then discarded).
pub fn install(store: &Store, staged: Staged) -> Result<LayerInfo> {
    let dest = super::at::layer(&staged.info.diff_id);
    match store.dir().rename_noreplace(&staged.dir, &dest) {
        Ok(()) => Ok(staged.info),
        Err(Error::Io { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
            ) =>
        {
            // Ours is a spare copy: a failure to delete it leaves `tmp/` dirt, not an error.
            if let Err(e) = store.dir().remove_tree(&staged.dir) {
                log::warn!(
                    "removing a spare copy of layer {}: {e}",
                    staged.info.diff_id
                );
            }
            let existing = read_info(store, &staged.info.diff_id)?;
            let merged = add_sources(store, &staged.info.diff_id, &staged.info.sources)?;
            Ok(merged.or(existing).unwrap_or(staged.info))
        }
        Err(e) => Err(e),
    }
}

/// Records the tar layout of an installed layer that has none (it was unpacked by an older
/// layerfs), from its blob in `files`, so that it can be saved. Nothing is unpacked; the
/// layout is built in `tmp/` and renamed into the layer directory. A blob that is not
/// the layer (wrong digest) is only reported: the layer itself was checked when unpacked.
pub fn record_layout(store: &Store, files: &dyn ImageFiles, plan: &LayerPlan) -> Result<()> {
    let layer = super::at::layer(&plan.diff_id);
    if tarsplit::has_layout(store, &plan.diff_id) || !store.dir().is_dir(&layer) {
        return Ok(());
    }
    let Some((blob, _)) = files.open(&plan.path)? else {
        return Ok(());
    };
    let blob: Box<dyn Read + Send> = match plan.digest {
        Some(d) => Box::new(VerifyingReader::new(blob, d, plan.size)),
        None => blob,
    };
    let mut buffered = BufReader::with_capacity(BLOB_BUF, blob);
    let location = files.location(&plan.path);
    let head = buffered.fill_buf().map_err(|e| Error::io(&location, e))?;
    let decompressed = Compression::sniff(head)
        .reader(buffered)
        .map_err(|e| Error::io_what("starting zstd decompression", e))?;
    let diff_r = VerifyingReader::new(decompressed, plan.diff_id, None);
    let stage = store.staging_dir(&format!("layout-{}", plan.diff_id.short()))?;
    let staged = stage.join(tarsplit::TAR_SPLIT);
    let res = store.dir().open_write(&staged, true).and_then(|f| {
        tarsplit::record_stream(diff_r, f).map_err(|e| Error::io(store.shown(&staged), e))
    });
    let out = match res {
        Ok(true) => match store
            .dir()
            .rename_noreplace(&staged, layer.join(tarsplit::TAR_SPLIT))
        {
            Ok(()) => Ok(()),
            // Recorded by a concurrent load meanwhile.
            Err(_) if tarsplit::has_layout(store, &plan.diff_id) => Ok(()),
            Err(e) => Err(e),
        },
        Ok(false) => Ok(()),
        Err(e) => {
            log::warn!(
                "layer {}: cannot record its tar layout from {location}: {e}",
                plan.diff_id
            );
            Ok(())
        }
    };
    let _ = store.dir().remove_tree(&stage);
    out
}

/// Records that an installed layer also comes as `sources` (under `meta.lock`).
pub fn add_sources(
    store: &Store,
    diff_id: &Digest,
    sources: &[LayerSource],
) -> Result<Option<LayerInfo>> {
    let _meta = store.lock_meta()?;
    let Some(mut info) = read_info(store, diff_id)? else {
        return Ok(None);
    };
    let mut changed = false;
    for s in sources {
        if !info.sources.contains(s)
            && !info
                .sources
                .iter()
                .any(|x| x.digest.is_some() && x.digest == s.digest)
        {
            info.sources.push(s.clone());
            changed = true;
        }
    }
    if changed {
        store.write_atomic(
            super::at::layer(diff_id).join(LAYER_JSON),
            &info_json(&info)?,
        )?;
    }
    Ok(Some(info))
}

/// A layer's size as Docker computes it (`docker history`, `docker images`): the sizes
/// of everything in the unpacked layer but directories (regular files, symlinks: their
/// target's length), each inode once (hard links count once). Walked through directory
/// fds ([`crate::fdtree`]), so a layer of any depth is counted whole; unreadable entries
/// count 0.
pub fn docker_size(store: &Store, diff_id: &Digest) -> u64 {
    let sized = store
        .open_layer_dir(diff_id)
        .map_err(|e| (io::Error::other(e), 0))
        .and_then(|fd| tree_size(std::os::fd::AsFd::as_fd(&fd)));
    sized.unwrap_or_else(|(e, total)| {
        log::warn!("size of layer {diff_id}: {e}");
        total
    })
}

/// [`docker_size`] of the tree under `dir`; on an error, also what was counted so far.
pub fn tree_size(dir: std::os::fd::BorrowedFd<'_>) -> std::result::Result<u64, (io::Error, u64)> {
    let mut sizes = DockerSize::default();
    match crate::fdtree::walk(dir, &mut sizes) {
        Ok(()) => Ok(sizes.total),
        Err(e) => Err((e, sizes.total)),
    }
}

/// What [`docker_size`] counts.
#[derive(Default)]
struct DockerSize {
    seen: std::collections::HashSet<u64>,
    total: u64,
}

impl crate::fdtree::Visitor for DockerSize {
    fn entry(
        &mut self,
        dir: std::os::fd::BorrowedFd<'_>,
        _path: &[std::ffi::OsString],
        e: &crate::fdtree::Entry,
    ) -> io::Result<bool> {
        if e.kind == Some(nix::dir::Type::Directory) {
            return Ok(true);
        }
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let Ok(st) = nix::sys::stat::fstatat(dir, e.name.as_os_str(), flags) else {
            return Ok(false);
        };
        if crate::union::FileKind::from_mode(st.st_mode).is_dir() {
            return Ok(true);
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > 0 && self.seen.insert(st.st_ino) {
            self.total += size;
        }
        Ok(false)
    }
}

/// The names of installed layers (diff_ids).
pub fn installed(store: &Store) -> Result<Vec<Digest>> {
    store.digest_entries(super::at::LAYERS)
}
