//! A layer's tar stream, kept as its layout: what lets the store give back the exact tar
//! it unpacked (same bytes, same diff_id) without keeping the tar itself.
//!
//! While a layer is unpacked, [`Tee`] shows every byte of the uncompressed stream to a
//! [`Recorder`], and the unpacker tells it where the content of each regular file lies
//! ([`Recorder::content`]). The recorder writes everything else (headers, PAX records,
//! padding, the end marker and whatever follows it) verbatim, and for each file's
//! content only a reference to the file in `diff/`. [`LayerTar`] plays it back: the raw
//! bytes, with each file's content read from the unpacked layer, through a check of the
//! diff_id (so a layer that changed on disk is an error, never a wrong tar). This is the
//! idea of containers-storage's tar-split, in our own small format.
//!
//! File `layers/<hex>/tar-split.zst`, a zstd stream of records (integers little endian):
//! ```text
//! "LFTS" 0x01                           magic, version
//! 0x01 len:u32 bytes[len]               raw bytes of the stream (len ≤ 1 MiB)
//! 0x02 size:u64 plen:u32 path[plen]     `size` content bytes of regular file `path`
//!                                       (relative to diff/, cleaned, '/'-separated)
//! 0x00 total:u64                        end: the stream is `total` bytes long
//! ```
//! The layout is recorded only when it is sure to play back: an entry that replaces an
//! earlier one of the same name (whose content is then gone from `diff/`) makes the
//! recorder give up ([`Recorder::invalidate`]); the layer then has no `tar-split.zst`,
//! and saving it says so. Sparse files are kept as raw bytes (their content in the
//! archive is not the file's bytes).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::unpack::ContentSink;
use super::{Store, at};
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Result};
use crate::tar_reader::TarReader;

/// The file, next to `diff/` and `layer.json`.
pub const TAR_SPLIT: &str = "tar-split.zst";

const MAGIC: &[u8; 5] = b"LFTS\x01";
const TAG_END: u8 = 0;
const TAG_RAW: u8 = 1;
const TAG_FILE: u8 = 2;
/// Largest raw record: bounds what playback holds in memory at once.
const MAX_RAW: usize = 1 << 20;
/// Longest path a file record may carry: the longest name a layer tar may have.
const MAX_PATH: u32 = crate::tar_reader::MAX_NAME_LEN as u32;
/// zstd level of the layout file: headers compress well at any level.
const LEVEL: i32 = 3;

/// Records the layout of one tar stream into a writer.
pub struct Recorder<W: Write> {
    out: Option<zstd::Encoder<'static, BufWriter<W>>>,
    /// Bytes seen but not yet written, starting at stream offset `pending_start`.
    pending: Vec<u8>,
    pending_start: u64,
    /// Stream offset of the next byte to be seen.
    pos: u64,
    /// The content range being skipped (its record is written already).
    skip: (u64, u64),
    /// Why the layout cannot be kept (the first reason).
    invalid: Option<String>,
    /// The first write error.
    error: Option<io::Error>,
}

impl<W: Write> Recorder<W> {
    pub fn new(out: W) -> io::Result<Recorder<W>> {
        let mut enc = zstd::Encoder::new(BufWriter::new(out), LEVEL)?;
        enc.write_all(MAGIC)?;
        Ok(Recorder {
            out: Some(enc),
            pending: Vec::new(),
            pending_start: 0,
            pos: 0,
            skip: (0, 0),
            invalid: None,
            error: None,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_some() || self.invalid.is_some() {
            return;
        }
        if let Some(out) = self.out.as_mut()
            && let Err(e) = out.write_all(bytes)
        {
            self.error = Some(e);
        }
    }

    /// Writes `pending[..n]` as raw records and drops it from `pending`.
    fn flush_raw(&mut self, n: usize) {
        let data: Vec<u8> = self.pending.drain(..n).collect();
        self.pending_start += n as u64;
        for chunk in data.chunks(MAX_RAW) {
            let mut rec = Vec::with_capacity(5 + chunk.len());
            rec.push(TAG_RAW);
            rec.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            rec.extend_from_slice(chunk);
            self.write(&rec);
        }
    }

    /// The stream went through `bytes` (the next ones after everything seen before).
    pub fn observe(&mut self, bytes: &[u8]) {
        let start = self.pos;
        self.pos += bytes.len() as u64;
        if self.invalid.is_some() {
            return;
        }
        let (s, e) = self.skip;
        // The parts of [start, pos) before and after the skipped range.
        let before_end = s.clamp(start, self.pos);
        let after_start = e.clamp(start, self.pos);
        if before_end > start {
            self.pending
                .extend_from_slice(&bytes[..(before_end - start) as usize]);
        }
        if after_start < self.pos && after_start >= before_end {
            if self.pending.is_empty() {
                self.pending_start = after_start;
            }
            self.pending
                .extend_from_slice(&bytes[(after_start - start) as usize..]);
        }
        if self.pending.len() >= MAX_RAW {
            let n = self.pending.len();
            self.flush_raw(n);
        }
    }

    /// The `size` bytes at stream offset `offset` are the content of regular file `path`
    /// (relative to the layer root) as it is written to disk.
    pub fn content(&mut self, offset: u64, size: u64, path: &[u8]) {
        if self.invalid.is_some() {
            return;
        }
        if offset < self.pending_start.max(self.skip.1) || offset > self.pos {
            self.invalidate("file content out of stream order");
            return;
        }
        if path.len() > MAX_PATH as usize {
            self.invalidate("path too long");
            return;
        }
        let before = (offset - self.pending_start) as usize;
        self.flush_raw(before.min(self.pending.len()));
        // Content that arrived already (read ahead) is dropped from what is pending.
        let arrived = (self.pos.min(offset + size) - offset) as usize;
        self.pending.drain(..arrived.min(self.pending.len()));
        self.pending_start = offset + size;
        self.skip = (offset, offset + size);
        let mut rec = Vec::with_capacity(13 + path.len());
        rec.push(TAG_FILE);
        rec.extend_from_slice(&size.to_le_bytes());
        rec.extend_from_slice(&(path.len() as u32).to_le_bytes());
        rec.extend_from_slice(path);
        self.write(&rec);
    }

    /// Gives up: the stream cannot be played back from the unpacked layer.
    pub fn invalidate(&mut self, why: &str) {
        if self.invalid.is_none() {
            log::debug!("layer layout not kept: {why}");
            self.invalid = Some(why.to_string());
        }
    }

    /// Ends the record. `Ok(true)`: the layout is complete; `Ok(false)`: it was given
    /// up (the caller removes the file); `Err`: it could not be written.
    pub fn finish(mut self) -> io::Result<bool> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.invalid.is_some() {
            return Ok(false);
        }
        let n = self.pending.len();
        self.flush_raw(n);
        let mut end = vec![TAG_END];
        end.extend_from_slice(&self.pos.to_le_bytes());
        self.write(&end);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.out.take() {
            Some(enc) => {
                let mut w = enc.finish()?;
                w.flush()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A [`Recorder`] shared by the tee (which sees the bytes) and the unpacker (which says
/// where file contents are), on one thread.
pub struct Shared<W: Write>(RefCell<Recorder<W>>);

impl<W: Write> Shared<W> {
    pub fn new(r: Recorder<W>) -> Shared<W> {
        Shared(RefCell::new(r))
    }

    pub fn into_inner(self) -> Recorder<W> {
        self.0.into_inner()
    }
}

impl<W: Write> ContentSink for Shared<W> {
    fn content(&self, offset: u64, size: u64, path: &[u8]) {
        if let Ok(mut r) = self.0.try_borrow_mut() {
            r.content(offset, size, path);
        }
    }

    fn invalidate(&self, why: &str) {
        if let Ok(mut r) = self.0.try_borrow_mut() {
            r.invalidate(why);
        }
    }
}

/// A reader that shows everything read through it to a recorder.
pub struct Tee<'a, R, W: Write> {
    inner: R,
    rec: &'a Shared<W>,
}

impl<'a, R: Read, W: Write> Tee<'a, R, W> {
    pub fn new(inner: R, rec: &'a Shared<W>) -> Self {
        Tee { inner, rec }
    }
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.rec.0.try_borrow_mut() {
            Ok(mut r) => r.observe(&buf[..n]),
            Err(_) => return Err(io::Error::other("layout recorder busy")),
        }
        Ok(n)
    }
}

/// Records the layout of the tar stream `reader` into `out` without unpacking it, for a
/// layer unpacked before layouts were recorded: each regular file's content is taken to
/// be where the unpacker put it (the same cleaned path), which playback checks (sizes,
/// then the diff_id). The stream is framed by the bounded [`TarReader`], as when
/// unpacking (names, PAX headers and sparse maps over their limits are refused before
/// they are read). Reads `reader` to its end. `Ok(false)`: given up (see
/// [`Recorder::invalidate`]).
pub fn record_stream<R: Read, W: Write>(reader: R, out: W) -> io::Result<bool> {
    use crate::store::unpack::{clean, join};
    use crate::whiteout::{NameKind, classify};
    let rec = Shared::new(Recorder::new(out)?);
    {
        let mut tee = Tee::new(reader, &rec);
        // Every path seen (parents included, as the unpacker creates them): a directory?
        let mut seen = std::collections::HashMap::<Vec<u8>, bool>::new();
        {
            let mut tar = TarReader::new(&mut tee);
            while let Some(entry) = tar.next_entry().map_err(io::Error::other)? {
                let Some(comps) = clean(&entry.path) else {
                    rec.invalidate("a path escapes the layer");
                    continue;
                };
                let path = join(&comps);
                let is_dir = entry.kind == tar::EntryType::Directory;
                for n in 1..comps.len() {
                    seen.entry(join(&comps[..n])).or_insert(true);
                }
                // As when unpacking: only a directory over a directory replaces nothing.
                if let Some(was_dir) = seen.insert(path.clone(), is_dir)
                    && !(was_dir && is_dir)
                {
                    rec.invalidate("an entry replaces an earlier one of the same name");
                }
                let plain = comps
                    .iter()
                    .all(|c| classify(std::ffi::OsStr::from_bytes(c)) == NameKind::Entry);
                if plain
                    && entry.size > 0
                    && entry.sparse.is_none()
                    && matches!(
                        entry.kind,
                        tar::EntryType::Regular | tar::EntryType::Continuous
                    )
                {
                    rec.content(entry.data_offset, entry.size, &path);
                }
            }
        }
        io::copy(&mut tee, &mut io::sink())?;
    }
    rec.into_inner().finish()
}

/// True when the layer has a recorded layout.
pub fn has_layout(store: &Store, diff_id: &Digest) -> bool {
    store.dir().is_file(at::layer(diff_id).join(TAR_SPLIT))
}

/// The layer's exact tar stream, played back from its layout and its unpacked files.
/// Reading it to the end checks the diff_id: content that is not the layer's (a file
/// changed on disk) fails the last read with an `InvalidData` error carrying the
/// mismatch, so nobody mistakes it for the layer.
pub struct LayerTar {
    inner: VerifyingReader<Playback>,
}

impl LayerTar {
    /// Opens the layout of layer `diff_id`; `Ok(None)` when it has none.
    pub fn open(store: &Store, diff_id: &Digest) -> Result<Option<LayerTar>> {
        let rel = at::layer(diff_id).join(TAR_SPLIT);
        let path = store.shown(&rel);
        let Some(file) = store.dir().open_read(&rel)? else {
            return Ok(None);
        };
        let root: OwnedFd = store.open_layer_dir(diff_id)?;
        let mut records = zstd::Decoder::new(file).map_err(|e| Error::io(&path, e))?;
        let mut magic = [0u8; 5];
        records
            .read_exact(&mut magic)
            .map_err(|e| Error::io(&path, e))?;
        if &magic != MAGIC {
            return Err(Error::Invalid {
                file: path.display().to_string(),
                detail: "not a layer layout (bad magic or version)".into(),
            });
        }
        let play = Playback {
            records,
            root,
            state: State::Between,
            buf: Vec::new(),
            at: 0,
            total: 0,
        };
        Ok(Some(LayerTar {
            inner: VerifyingReader::new(play, *diff_id, None),
        }))
    }
}

impl Read for LayerTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

enum State {
    /// About to read the next record.
    Between,
    /// Serving `buf[at..]`.
    Raw,
    /// Serving `left` more bytes of a file.
    File {
        file: BufReader<File>,
        left: u64,
    },
    Done,
}

struct Playback {
    records: zstd::Decoder<'static, BufReader<File>>,
    root: OwnedFd,
    state: State,
    buf: Vec<u8>,
    at: usize,
    /// Bytes served so far (checked against the end record).
    total: u64,
}

fn bad(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

impl Playback {
    fn next_record(&mut self) -> io::Result<()> {
        let mut tag = [0u8; 1];
        self.records
            .read_exact(&mut tag)
            .map_err(|_| bad("layer layout ends without its end record"))?;
        match tag[0] {
            TAG_RAW => {
                let mut len = [0u8; 4];
                self.records.read_exact(&mut len)?;
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_RAW {
                    return Err(bad("layer layout: raw record too long"));
                }
                self.buf.resize(len, 0);
                self.records.read_exact(&mut self.buf)?;
                self.at = 0;
                self.state = State::Raw;
            }
            TAG_FILE => {
                let mut size = [0u8; 8];
                self.records.read_exact(&mut size)?;
                let size = u64::from_le_bytes(size);
                let mut plen = [0u8; 4];
                self.records.read_exact(&mut plen)?;
                let plen = u32::from_le_bytes(plen);
                if plen == 0 || plen > MAX_PATH {
                    return Err(bad("layer layout: bad path length"));
                }
                let mut path = vec![0u8; plen as usize];
                self.records.read_exact(&mut path)?;
                let file = self.open_file(&path, size)?;
                self.state = State::File {
                    file: BufReader::with_capacity(256 << 10, file),
                    left: size,
                };
            }
            TAG_END => {
                let mut total = [0u8; 8];
                self.records.read_exact(&mut total)?;
                if u64::from_le_bytes(total) != self.total {
                    return Err(bad("layer layout: stream length differs from its record"));
                }
                self.state = State::Done;
            }
            _ => return Err(bad("layer layout: unknown record")),
        }
        Ok(())
    }

    /// Opens a regular file of `size` bytes beneath the layer root without following
    /// any symlink (a path longer than PATH_MAX too); anything else there (a FIFO would
    /// block the open) is refused unopened.
    fn open_file(&self, path: &[u8], size: u64) -> io::Result<File> {
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        let (f, st) = crate::regular::open_beneath(self.root.as_fd(), p)
            .map_err(|e| io::Error::new(e.kind(), format!("layer file {}: {e}", p.display())))?;
        if st.st_size as u64 != size {
            return Err(bad(format!(
                "layer file {} is {} bytes, {size} when it was unpacked",
                p.display(),
                st.st_size
            )));
        }
        Ok(f)
    }
}

impl Read for Playback {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match &mut self.state {
                State::Done => return Ok(0),
                State::Between => {
                    self.next_record()?;
                    continue;
                }
                State::Raw => {
                    let n = out.len().min(self.buf.len() - self.at);
                    out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
                    self.at += n;
                    if self.at == self.buf.len() {
                        self.state = State::Between;
                    }
                    n
                }
                State::File { file, left } => {
                    if *left == 0 {
                        self.state = State::Between;
                        continue;
                    }
                    let want = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = file.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(bad("a layer file is shorter than when it was unpacked"));
                    }
                    *left -= n as u64;
                    n
                }
            };
            self.total += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests;
