//! A streaming tar reader that bounds everything it holds in memory.
//!
//! Used for layer tars (the unpacker) and for the outer tar of OCI and docker archives.
//! Why not `tar::Archive`: it reads GNU long names, long links and PAX headers whole into
//! memory, whatever size their header announces (a 1 GiB long name cost 5 GB of RSS before
//! the entry could be refused), it turns the holes of GNU sparse files into streams of
//! zeros (so a 111-byte blob became a 2 GiB file of real zeros), and it splits PAX records
//! at newlines rather than by their length (binary xattr values such as
//! `security.capability` may hold `\n`). This reader frames the archive itself: it refuses
//! an extension header whose announced size is over its limit before reading a byte of
//! it, and hands out sparse maps so that the unpacker can leave holes. Decoding the fields
//! of a 512-byte header (octal and base-256 numbers, the ustar prefix) is left to
//! `tar::Header`.
//!
//! Formats: ustar and v7 headers; GNU long names (`L`), long links (`K`) and old sparse
//! files (`S`, with extension blocks); PAX local headers (`x`: path, linkpath, size, uid,
//! gid and every other record handed on) and PAX sparse files (GNU formats 0.0, 0.1 and
//! 1.0). PAX global headers (`g`) are skipped, as Docker does. Limits, all checked before
//! anything is read into memory:
//!
//! - a name or hard-link target: at most [`MAX_NAME_LEN`] bytes (64 KiB: a path in a
//!   tree deeper than about 2000 levels is longer than PATH_MAX, and the unpacker
//!   resolves it one piece at a time; a path is held in memory, so it is bounded all the
//!   same); a symlink target: at most [`MAX_SYMLINK_LEN`] bytes (PATH_MAX, the longest
//!   the kernel stores);
//! - a GNU long-name or long-link record: [`MAX_NAME_LEN`] + 1 bytes (the name and its NUL);
//! - a PAX header: [`MAX_PAX_LEN`] bytes (Go's archive/tar uses the same bound);
//! - a sparse map: [`MAX_SPARSE_SEGMENTS`] data segments (and, for PAX sparse 1.0, a map
//!   text of at most [`MAX_PAX_LEN`] bytes).
//!
//! Nothing here panics on any input; every refusal is an [`Error::TarFormat`] giving the
//! byte offset of the header concerned.

mod sparse;
#[cfg(test)]
mod tests;

use std::io::{self, Read, Seek, SeekFrom};

use tar::{EntryType, Header};

use crate::error::{Error, Result};
use sparse::{PaxSparse, pax_sparse_v0_0, pax_sparse_v0_1, validate_sparse};

/// Tar's block size.
pub const BLOCK: u64 = 512;
/// Longest name or hard-link target accepted (see the module docs).
pub const MAX_NAME_LEN: usize = 64 << 10;
/// Longest symlink target accepted: Linux's PATH_MAX.
pub const MAX_SYMLINK_LEN: usize = 4096;
/// Largest PAX header accepted (1 MiB; real ones are a few hundred bytes, xattrs included).
pub const MAX_PAX_LEN: u64 = 1 << 20;
/// Most data segments one sparse file may have (its map then takes 1 MiB of memory).
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 16;
/// Offset of the type flag in a header, and where the owner fields are.
const TYPEFLAG: usize = 156;
const UID_FIELD: std::ops::Range<usize> = 108..116;
const GID_FIELD: std::ops::Range<usize> = 116..124;

/// One PAX record: key and value, raw bytes.
pub type PaxRecord = (Vec<u8>, Vec<u8>);
/// The PAX records of one member, in order.
pub type PaxRecords = Vec<PaxRecord>;

/// One data segment of a sparse file: `len` bytes of the archive's data go at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// The layout of a sparse file: everything outside the segments is a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// The file's apparent size.
    pub real_size: u64,
    /// Sorted, not overlapping, within `real_size`; their lengths add up to the entry's
    /// data size.
    pub segments: Vec<Segment>,
}

/// One archive member, its extension headers applied.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The member's own header (mode, mtime, device numbers are read from it).
    pub header: Header,
    pub kind: EntryType,
    /// GNU long name, else PAX `path` (`GNU.sparse.name` for PAX sparse files), else the
    /// header's name (with its ustar prefix).
    pub path: Vec<u8>,
    /// GNU long link, else PAX `linkpath`, else the header's link name.
    pub link: Option<Vec<u8>>,
    /// PAX `uid`/`gid`, else the header's.
    pub uid: u64,
    pub gid: u64,
    /// Bytes of data that follow in the archive (what `Read` on the reader yields).
    pub size: u64,
    /// Set for sparse files: where the data goes and the apparent size.
    pub sparse: Option<Sparse>,
    /// Every PAX record of the member, in order (xattrs, times, …).
    pub pax: PaxRecords,
    /// Byte offset of the member's first header (its extension headers included).
    pub offset: u64,
    /// Byte offset of its data.
    pub data_offset: u64,
}

impl Entry {
    /// The apparent size of the file the member describes.
    pub fn apparent_size(&self) -> u64 {
        self.sparse.as_ref().map_or(self.size, |s| s.real_size)
    }

    /// The value of PAX record `key`, the last one when repeated.
    pub fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        pax_get(&self.pax, key)
    }
}

fn pax_get<'a>(pax: &'a [(Vec<u8>, Vec<u8>)], key: &[u8]) -> Option<&'a [u8]> {
    pax.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// Reads members of a tar stream one by one; `Read` yields the data of the current one.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner` (seeks included).
    pos: u64,
    /// Unread data of the current member, and the padding after it.
    data_left: u64,
    pad_left: u64,
    skip: fn(&mut R, u64) -> io::Result<()>,
    done: bool,
}

fn skip_by_reading<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tar archive ends inside a member's data",
        ));
    }
    Ok(())
}

fn skip_by_seeking<R: Seek>(r: &mut R, n: u64) -> io::Result<()> {
    let n = i64::try_from(n).map_err(|_| io::Error::other("seek beyond 2^63 bytes"))?;
    r.seek(SeekFrom::Current(n)).map(|_| ())
}

impl<R: Read> TarReader<R> {
    /// A reader of a stream (skipped data is read and discarded).
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            data_left: 0,
            pad_left: 0,
            skip: skip_by_reading::<R>,
            done: false,
        }
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next member, or `None` at the end-of-archive marker (or at a clean end of the
    /// stream between members). The unread data of the previous member is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        let rest = self.data_left.saturating_add(self.pad_left);
        self.skip_n(rest).map_err(|source| Error::Tar { source })?;
        self.data_left = 0;
        self.pad_left = 0;

        let first = self.pos;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<PaxRecords> = None;
        loop {
            let offset = self.pos;
            let bad = |detail: String| Error::TarFormat { offset, detail };
            let pending = long_name.is_some() || long_link.is_some() || pax.is_some();
            let Some(block) = self.read_block().map_err(|source| Error::Tar { source })? else {
                self.done = true;
                if pending {
                    return Err(bad("the archive ends after an extension header".into()));
                }
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                if pending {
                    return Err(bad("end-of-archive marker after an extension header".into()));
                }
                return Ok(None);
            }
            let mut header = Header::new_old();
            header.as_mut_bytes().copy_from_slice(&block);
            check_checksum(&header).map_err(bad)?;
            let size = header
                .entry_size()
                .map_err(|e| bad(format!("bad size field: {e}")))?;
            match header.entry_type().as_byte() {
                b'L' | b'K' => {
                    let is_name = header.entry_type().as_byte() == b'L';
                    let what = if is_name { "long name" } else { "long link" };
                    let limit = MAX_NAME_LEN as u64 + 1;
                    if size > limit {
                        return Err(bad(format!(
                            "GNU {what} record of {size} bytes is over the limit of {limit} bytes (a path of {MAX_NAME_LEN} bytes and its NUL)"
                        )));
                    }
                    let slot = if is_name {
                        &mut long_name
                    } else {
                        &mut long_link
                    };
                    if slot.is_some() {
                        return Err(bad(format!("two GNU {what} records for one member")));
                    }
                    let mut v = self
                        .read_record(size)
                        .map_err(|source| Error::Tar { source })?;
                    if let Some(nul) = v.iter().position(|&b| b == 0) {
                        v.truncate(nul);
                    }
                    *slot = Some(v);
                }
                b'x' => {
                    if size > MAX_PAX_LEN {
                        return Err(bad(format!(
                            "PAX header of {size} bytes is over the limit of {MAX_PAX_LEN} bytes"
                        )));
                    }
                    if pax.is_some() {
                        return Err(bad("two PAX headers for one member".into()));
                    }
                    let raw = self
                        .read_record(size)
                        .map_err(|source| Error::Tar { source })?;
                    pax = Some(parse_pax(&raw).map_err(bad)?);
                }
                b'g' => {
                    // Global defaults: ignored, as Docker does; never read into memory.
                    let padded = padded(size).ok_or_else(|| bad("size overflow".into()))?;
                    self.skip_n(padded)
                        .map_err(|source| Error::Tar { source })?;
                }
                _ => {
                    let pax = pax.take().unwrap_or_default();
                    let e = self
                        .member(header, first, size, long_name, long_link, pax)
                        .map_err(|e| match e {
                            MemberError::Format(detail) => Error::TarFormat { offset, detail },
                            MemberError::Io(source) => Error::Tar { source },
                        })?;
                    return Ok(Some(e));
                }
            }
        }
    }

    /// Builds the member whose own header is `header` (at `offset`).
    fn member(
        &mut self,
        header: Header,
        first: u64,
        mut size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: PaxRecords,
    ) -> std::result::Result<Entry, MemberError> {
        let fmt = |s: String| MemberError::Format(s);
        let num = |key: &str| -> std::result::Result<Option<u64>, MemberError> {
            match pax_get(&pax, key.as_bytes()) {
                None => Ok(None),
                Some(v) => parse_decimal(v)
                    .map(Some)
                    .ok_or_else(|| fmt(format!("PAX record {key} is not a number"))),
            }
        };
        if let Some(s) = num("size")? {
            size = s;
        }
        // An empty owner field is 0, as Go's archive/tar (and so Docker) reads it.
        let empty = |r: std::ops::Range<usize>| header.as_bytes()[r].iter().all(|&b| b == 0);
        let uid = match num("uid")? {
            Some(u) => u,
            None if empty(UID_FIELD) => 0,
            None => header
                .uid()
                .map_err(|e| fmt(format!("bad uid field: {e}")))?,
        };
        let gid = match num("gid")? {
            Some(g) => g,
            None if empty(GID_FIELD) => 0,
            None => header
                .gid()
                .map_err(|e| fmt(format!("bad gid field: {e}")))?,
        };
        let mut path = match long_name {
            Some(n) => n,
            None => match pax_get(&pax, b"path") {
                Some(p) => p.to_vec(),
                None => header.path_bytes().into_owned(),
            },
        };
        let link = match long_link {
            Some(l) => Some(l),
            None => match pax_get(&pax, b"linkpath") {
                Some(l) => Some(l.to_vec()),
                None => header.link_name_bytes().map(|l| l.into_owned()),
            },
        };
        let mut kind = header.entry_type();
        // v7 archives spell a directory as a regular file whose name ends in '/'.
        if header.as_bytes()[TYPEFLAG] == 0 && path.ends_with(b"/") {
            kind = EntryType::Directory;
        }

        let mut sparse = None;
        if kind.is_gnu_sparse() {
            sparse = Some(self.gnu_sparse(&header)?);
        } else if let Some(format) = PaxSparse::detect(&pax) {
            if let Some(name) = pax_get(&pax, b"GNU.sparse.name") {
                path = name.to_vec();
            }
            let real_size = match num("GNU.sparse.realsize")? {
                Some(s) => s,
                None => num("GNU.sparse.size")?
                    .ok_or_else(|| fmt("PAX sparse file without its real size".into()))?,
            };
            let segments = match format {
                PaxSparse::V0_0 => pax_sparse_v0_0(&pax).map_err(fmt)?,
                PaxSparse::V0_1 => pax_sparse_v0_1(&pax).map_err(fmt)?,
                PaxSparse::V1_0 => {
                    let (segs, used) = self.pax_sparse_v1_0(size)?;
                    size -= used;
                    segs
                }
            };
            sparse = Some(Sparse {
                real_size,
                segments,
            });
        }
        if let Some(s) = &sparse {
            validate_sparse(s, size).map_err(fmt)?;
        }
        if path.len() > MAX_NAME_LEN {
            return Err(fmt(format!(
                "a name of {} bytes is over the limit of {MAX_NAME_LEN} bytes",
                path.len()
            )));
        }
        if let Some(l) = &link {
            if kind == EntryType::Symlink && l.len() > MAX_SYMLINK_LEN {
                return Err(fmt(format!(
                    "a link target of {} bytes is longer than PATH_MAX ({MAX_SYMLINK_LEN})",
                    l.len()
                )));
            }
            if l.len() > MAX_NAME_LEN {
                return Err(fmt(format!(
                    "a link target of {} bytes is over the limit of {MAX_NAME_LEN} bytes",
                    l.len()
                )));
            }
        }
        let data_offset = self.pos;
        self.data_left = size;
        self.pad_left = padded(size).map_or(0, |p| p - size);
        Ok(Entry {
            header,
            kind,
            path,
            link,
            uid,
            gid,
            size,
            sparse,
            pax,
            offset: first,
            data_offset,
        })
    }

    /// Reads one 512-byte block; `None` at a clean end of the stream.
    fn read_block(&mut self) -> io::Result<Option<[u8; BLOCK as usize]>> {
        let mut block = [0u8; BLOCK as usize];
        let mut got = 0;
        while got < block.len() {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos = self.pos.saturating_add(got as u64);
        match got {
            0 => Ok(None),
            n if n == block.len() => Ok(Some(block)),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive ends inside a header",
            )),
        }
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tar archive ends inside a member",
                )
            } else {
                e
            }
        })?;
        self.pos = self.pos.saturating_add(buf.len() as u64);
        Ok(())
    }

    /// Reads an extension record of `size` bytes (already checked against its limit)
    /// and the padding after it.
    fn read_record(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(size).map_err(|_| io::Error::other("record too large"))?;
        let mut v = vec![0u8; len];
        self.read_exact_counted(&mut v)?;
        let pad = padded(size).map_or(0, |p| p - size);
        self.skip_n(pad)?;
        Ok(v)
    }

    fn skip_n(&mut self, n: u64) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        (self.skip)(&mut self.inner, n)?;
        self.pos = self.pos.saturating_add(n);
        Ok(())
    }
}

impl<R: Read + Seek> TarReader<R> {
    /// A reader of a seekable file: skipped data is seeked over.
    pub fn new_seekable(inner: R) -> TarReader<R> {
        let mut r = TarReader::new(inner);
        r.skip = skip_by_seeking::<R>;
        r
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.data_left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar archive ends inside a member's data",
            ));
        }
        self.data_left -= n as u64;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

enum MemberError {
    Format(String),
    Io(io::Error),
}

/// `size` rounded up to whole blocks; `None` on overflow.
fn padded(size: u64) -> Option<u64> {
    size.checked_add(BLOCK - 1).map(|s| s & !(BLOCK - 1))
}

/// Checks the header checksum (the unsigned sum, or the signed one some old tars wrote).
fn check_checksum(h: &Header) -> std::result::Result<(), String> {
    let want = h.cksum().map_err(|e| format!("bad checksum field: {e}"))?;
    let bytes = h.as_bytes();
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in bytes.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u32::from(b);
        signed += i64::from(b as i8);
    }
    if want == unsigned || i64::from(want) == signed {
        Ok(())
    } else {
        Err("header checksum mismatch (not a tar archive, or a corrupt one)".into())
    }
}

/// A non-negative decimal number (PAX and sparse map values).
fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses PAX records `"<len> <key>=<value>\n"` by their length (values may hold `\n`).
fn parse_pax(mut data: &[u8]) -> std::result::Result<PaxRecords, String> {
    let mut out = Vec::new();
    let malformed = || "malformed PAX record".to_string();
    // Writers pad the last block with NULs.
    while !data.is_empty() && data[0] != 0 {
        let sp = data
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or_else(malformed)?;
        let len = parse_decimal(&data[..sp]).ok_or_else(malformed)?;
        let len = usize::try_from(len).map_err(|_| malformed())?;
        if len <= sp + 1 || len > data.len() {
            return Err(malformed());
        }
        let (record, rest) = data.split_at(len);
        data = rest;
        let body = record[sp + 1..].strip_suffix(b"\n").ok_or_else(malformed)?;
        let eq = body.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
        out.push((body[..eq].to_vec(), body[eq + 1..].to_vec()));
    }
    Ok(out)
}
