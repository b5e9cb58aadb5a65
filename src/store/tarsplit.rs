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

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use super::Store;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Result};

/// The file, next to `diff/` and `layer.json`.
pub const TAR_SPLIT: &str = "tar-split.zst";

const MAGIC: &[u8; 5] = b"LFTS\x01";
const TAG_END: u8 = 0;
const TAG_RAW: u8 = 1;
const TAG_FILE: u8 = 2;
/// Largest raw record: bounds what playback holds in memory at once.
const MAX_RAW: usize = 1 << 20;
/// Longest path a file record may carry (PATH_MAX).
const MAX_PATH: u32 = 4096;
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

/// What the unpacker tells the layout recorder.
pub trait ContentSink {
    /// See [`Recorder::content`].
    fn content(&self, offset: u64, size: u64, path: &[u8]);
    /// See [`Recorder::invalidate`].
    fn invalidate(&self, why: &str);
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
/// then the diff_id). Reads `reader` to its end. `Ok(false)`: given up (see
/// [`Recorder::invalidate`]).
pub fn record_stream<R: Read, W: Write>(reader: R, out: W) -> io::Result<bool> {
    use crate::store::unpack::{clean, join};
    use crate::whiteout::{NameKind, classify};
    let rec = Shared::new(Recorder::new(out)?);
    {
        let mut tee = Tee::new(reader, &rec);
        let mut seen = std::collections::HashSet::new();
        {
            let mut archive = tar::Archive::new(&mut tee);
            for entry in archive.entries()? {
                let mut entry = entry?;
                let etype = entry.header().entry_type();
                if matches!(
                    etype,
                    tar::EntryType::XGlobalHeader
                        | tar::EntryType::XHeader
                        | tar::EntryType::GNULongName
                        | tar::EntryType::GNULongLink
                ) {
                    continue;
                }
                let Some(comps) = clean(&entry.path_bytes()) else {
                    rec.invalidate("a path escapes the layer");
                    continue;
                };
                let path = join(&comps);
                if !seen.insert(path.clone()) {
                    rec.invalidate("an entry replaces an earlier one of the same name");
                }
                let plain = comps
                    .iter()
                    .all(|c| classify(std::ffi::OsStr::from_bytes(c)) == NameKind::Entry);
                let size = entry.size();
                if plain
                    && size > 0
                    && matches!(etype, tar::EntryType::Regular | tar::EntryType::Continuous)
                {
                    rec.content(entry.raw_file_position(), size, &path);
                }
                io::copy(&mut entry, &mut io::sink())?;
            }
        }
        io::copy(&mut tee, &mut io::sink())?;
    }
    rec.into_inner().finish()
}

/// True when the layer has a recorded layout.
pub fn has_layout(store: &Store, diff_id: &Digest) -> bool {
    store.layer_path(diff_id).join(TAR_SPLIT).is_file()
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
        let lp = store.layer_path(diff_id);
        let path = lp.join(TAR_SPLIT);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let diff = lp.join("diff");
        let root: OwnedFd = nix::fcntl::open(
            &diff,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::io(&diff, e.into()))?;
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
    /// any symlink.
    fn open_file(&self, path: &[u8], size: u64) -> io::Result<File> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let p = Path::new(std::ffi::OsStr::from_bytes(path));
        let fd = nix::fcntl::openat2(self.root.as_fd(), p, how).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("layer file {}: {e}", p.display()),
            )
        })?;
        let f = File::from(fd);
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(bad(format!(
                "layer file {} is not a regular file",
                p.display()
            )));
        }
        if meta.len() != size {
            return Err(bad(format!(
                "layer file {} is {} bytes, {size} when it was unpacked",
                p.display(),
                meta.len()
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
mod tests {
    use super::*;

    /// Records `stream` with the given content ranges, observing it in `step`-byte reads
    /// and announcing each range `lag` bytes after its start arrived.
    fn record(stream: &[u8], files: &[(u64, u64, &str)], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut r = Recorder::new(&mut out).unwrap();
            let mut pos = 0usize;
            let mut next = 0usize;
            while pos < stream.len() {
                let end = (pos + step).min(stream.len());
                r.observe(&stream[pos..end]);
                pos = end;
                while next < files.len() && files[next].0 as usize <= pos {
                    let (o, s, p) = files[next];
                    r.content(o, s, p.as_bytes());
                    next += 1;
                }
            }
            assert!(r.finish().unwrap());
        }
        out
    }

    fn records(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut d = zstd::Decoder::new(bytes).unwrap();
        let mut all = Vec::new();
        d.read_to_end(&mut all).unwrap();
        assert_eq!(&all[..5], MAGIC);
        let mut i = 5;
        let mut out = Vec::new();
        loop {
            let tag = all[i];
            i += 1;
            match tag {
                TAG_RAW => {
                    let n = u32::from_le_bytes(all[i..i + 4].try_into().unwrap()) as usize;
                    out.push((tag, all[i + 4..i + 4 + n].to_vec()));
                    i += 4 + n;
                }
                TAG_FILE => {
                    let n = u32::from_le_bytes(all[i + 8..i + 12].try_into().unwrap()) as usize;
                    out.push((tag, all[i..i + 12 + n].to_vec()));
                    i += 12 + n;
                }
                _ => {
                    out.push((tag, all[i..i + 8].to_vec()));
                    return out;
                }
            }
        }
    }

    #[test]
    fn content_is_left_out_whatever_the_read_sizes() {
        // 10 header bytes, 5 content bytes, 3 padding, 4 content, 2 trailer.
        let stream = b"HHHHHHHHHHcccccPPPddddTT";
        let files = [(10, 5, "a"), (18, 4, "b/c")];
        for step in [1, 2, 3, 7, 100] {
            let recs = records(&record(stream, &files, step));
            let raw: Vec<u8> = recs
                .iter()
                .filter(|(t, _)| *t == TAG_RAW)
                .flat_map(|(_, b)| b.clone())
                .collect();
            assert_eq!(raw, b"HHHHHHHHHHPPPTT", "step {step}");
            let kinds: Vec<u8> = recs.iter().map(|(t, _)| *t).collect();
            // (raw records may be split, but a file record always sits between them)
            let files_at: Vec<usize> = kinds
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == TAG_FILE)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(files_at.len(), 2, "step {step}: {kinds:?}");
            assert_eq!(*kinds.last().unwrap(), TAG_END);
        }
    }

    #[test]
    fn out_of_order_content_gives_up() {
        let mut out = Vec::new();
        let mut r = Recorder::new(&mut out).unwrap();
        r.observe(b"0123456789");
        r.content(4, 2, b"x");
        r.content(3, 1, b"y");
        assert!(!r.finish().unwrap());
    }

    /// A real tar unpacked with the recorder plays back byte for byte (padding, PAX
    /// records, hard links, whiteouts, bytes after the end marker), and a file changed
    /// on disk afterwards fails the diff_id check.
    #[test]
    fn unpacked_layer_plays_back_exactly() {
        use crate::store::unpack::{Ownership, UnpackOptions, unpack_recording};
        use crate::whiteout::{OpaqueStyle, Styles, WhiteoutStyle};
        let mut b = tar::Builder::new(Vec::new());
        fn put(
            b: &mut tar::Builder<Vec<u8>>,
            path: &str,
            kind: tar::EntryType,
            data: &[u8],
            link: Option<&str>,
        ) {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            put(&mut b, path, kind, data, link)
        };
        add("d/", tar::EntryType::Directory, b"", None);
        add("d/f", tar::EntryType::Regular, b"hello world", None);
        add("d/empty", tar::EntryType::Regular, b"", None);
        add("d/big", tar::EntryType::Regular, &vec![7u8; 3 << 20], None);
        add("d/l", tar::EntryType::Symlink, b"", Some("f"));
        add("d/h", tar::EntryType::Link, b"", Some("d/f"));
        add(".wh.gone", tar::EntryType::Regular, b"", None);
        add("d/.wh..wh..opq", tar::EntryType::Regular, b"", None);
        b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
            .unwrap();
        put(&mut b, "x", tar::EntryType::Regular, b"with xattr", None);
        let mut stream = b.into_inner().unwrap();
        stream.extend_from_slice(&[0u8; 4096]); // trailing zeros, as some tools write
        let diff_id = Digest::of(&stream);

        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("s")).unwrap();
        let lp = store.layer_path(&diff_id);
        std::fs::create_dir_all(lp.join("diff")).unwrap();
        let opts = UnpackOptions {
            styles: Styles {
                whiteout: WhiteoutStyle::WhFile,
                opaque: OpaqueStyle::WhFile,
            },
            ownership: Ownership::OverrideStat,
        };
        let layout = std::fs::File::create(lp.join(TAR_SPLIT)).unwrap();
        let rec = Shared::new(Recorder::new(layout).unwrap());
        let dest = std::fs::File::open(lp.join("diff")).unwrap();
        {
            let mut tee = Tee::new(&stream[..], &rec);
            unpack_recording(&mut tee, dest.as_fd(), &opts, Some(&rec)).unwrap();
            io::copy(&mut tee, &mut io::sink()).unwrap();
        }
        assert!(rec.into_inner().finish().unwrap());

        let mut back = Vec::new();
        LayerTar::open(&store, &diff_id)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(
            back == stream,
            "played back {} bytes, want {}",
            back.len(),
            stream.len()
        );
        let layout_size = std::fs::metadata(lp.join(TAR_SPLIT)).unwrap().len();
        assert!(layout_size < 4096, "layout is {layout_size} bytes");

        std::fs::write(lp.join("diff/d/f"), b"HELLO WORLD").unwrap();
        let err = LayerTar::open(&store, &diff_id)
            .unwrap()
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }
}
