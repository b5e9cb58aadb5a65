//! Layer compression: the one table of what each [`Compression`] is (magic bytes, media
//! types, reader, writer), and the streamed, parallel, deterministic writer of blobs.
//!
//! [`compress`] cuts the input into fixed-size chunks, compresses each on a pool of
//! threads into a self-contained gzip member or zstd frame, and writes them in order,
//! hashing what it writes. A gzip file of several members and a zstd stream of several
//! frames are what the formats allow (RFC 1952 §2.2, RFC 8878 §3) and what every reader
//! of image layers accepts (Go's gzip and zstd readers, pigz, zstd, Docker, skopeo,
//! umoci); pigz and zstd's own multithreaded modes cut their input the same way. At
//! most [`max_in_flight`] chunks are in memory, whatever the layer's size. The chunk
//! size is fixed, not derived from the number of cores, so the same input always gives
//! the same bytes (the same blob digest) on any machine.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::{Arc, Mutex, mpsc};

use crate::digest::{Digest, Hashing};

/// Input bytes per gzip member: large enough that restarting the 32 KiB window costs
/// well under 1 % of the ratio, small enough to keep all cores busy on a small layer.
const GZIP_CHUNK: usize = 1 << 20;
/// Input bytes per zstd frame (zstd's window at level 3 is a few MiB).
const ZSTD_CHUNK: usize = 4 << 20;
/// gzip level: what Go's `gzip.DefaultCompression` and zlib's default are.
pub const GZIP_LEVEL: u32 = 6;
/// zstd level: the library's and the CLI's default.
pub const ZSTD_LEVEL: i32 = 3;
/// Bound on the input held in memory by one compression (chunks read, being compressed
/// or waiting for their turn to be written).
const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Magic bytes that start a gzip member and a zstd frame.
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob (or an archive) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

    /// Recognises compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer blob compressed so: what `save` writes.
    pub const fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Docker's media type of a layer blob compressed so: recorded for layers whose source
    /// names none (a docker-archive).
    pub const fn docker_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        }
    }

    /// The compression a layer media type (OCI's or Docker's) names, or `None` when we
    /// cannot unpack it (foreign layers, unknown types).
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| c.media_type() == media_type || c.docker_media_type() == media_type)
    }

    /// A reader of `r`'s bytes decompressed (`r` itself when uncompressed). gzip: every
    /// member, as a layer compressed in parallel has several.
    pub fn reader<'a>(self, r: impl BufRead + Send + 'a) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }

    /// `chunk` compressed into one self-contained gzip member or zstd frame (a copy when
    /// uncompressed): the writer's unit, see [`compress`].
    fn compress_chunk(self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(chunk.to_vec()),
            Compression::Gzip => {
                let mut enc = flate2::GzBuilder::new().mtime(0).write(
                    Vec::with_capacity(chunk.len() / 2),
                    flate2::Compression::new(GZIP_LEVEL),
                );
                enc.write_all(chunk)?;
                enc.finish()
            }
            Compression::Zstd => zstd::bulk::compress(chunk, ZSTD_LEVEL),
        }
    }

    /// Input bytes per member/frame of [`compress`].
    fn chunk_size(self) -> usize {
        match self {
            Compression::Zstd => ZSTD_CHUNK,
            _ => GZIP_CHUNK,
        }
    }
}

/// What was written: the digest and size of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub digest: Digest,
    pub size: u64,
}

/// How many chunks one compression keeps in memory at most.
pub fn max_in_flight(c: Compression, threads: usize) -> usize {
    (2 * threads + 2).clamp(4, (MAX_IN_FLIGHT_BYTES / c.chunk_size()).max(4))
}

/// The number of compression threads: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads `src` to its end, filling `buf` as far as it goes.
fn fill(src: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<()> {
    buf.clear();
    buf.resize(want, 0);
    let mut n = 0;
    while n < want {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(n);
                return Err(e);
            }
        }
    }
    buf.truncate(n);
    Ok(())
}

/// What the writer receives, in sequence order.
enum Piece {
    Data(Vec<u8>),
    Failed(io::Error),
    End,
}

/// Streams `src` into `dst` compressed with `c` on `threads` threads (`None`: copied as
/// is) and returns the digest and size of what was written. An error of the source or
/// the destination stops everything and is returned; nothing is held back.
pub fn compress<R: Read + Send>(
    src: R,
    dst: &mut dyn Write,
    c: Compression,
    threads: usize,
) -> io::Result<Written> {
    let mut out = Hashing::new(dst);
    if c == Compression::None {
        let mut src = src;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.write_all(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        out.flush()?;
        return Ok(Written {
            digest: out.digest(),
            size: out.count(),
        });
    }
    let threads = threads.max(1);
    let in_flight = max_in_flight(c, threads);
    let chunk = c.chunk_size();
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
    // Owned by the workers alone: when they are all gone, the reader's sends fail.
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, Piece)>();
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = credit_tx.send(());
    }
    std::thread::scope(|s| {
        // The reader: cuts the input into chunks, one credit each.
        let reader_done = done_tx.clone();
        s.spawn(move || {
            let mut src = src;
            let mut seq = 0u64;
            loop {
                if credit_rx.recv().is_err() {
                    return; // the writer gave up
                }
                let mut buf = Vec::with_capacity(chunk);
                let res = fill(&mut src, &mut buf, chunk);
                if let Err(e) = res {
                    let _ = reader_done.send((seq, Piece::Failed(e)));
                    return;
                }
                let last = buf.len() < chunk;
                // An empty input still makes one (empty) member.
                if !buf.is_empty() || seq == 0 {
                    if work_tx.send((seq, buf)).is_err() {
                        return;
                    }
                    seq += 1;
                }
                if last {
                    let _ = reader_done.send((seq, Piece::End));
                    return;
                }
            }
        });
        for _ in 0..threads {
            let done = done_tx.clone();
            let work_rx = Arc::clone(&work_rx);
            s.spawn(move || {
                loop {
                    let job = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, data)) = job else { return };
                    let piece = match c.compress_chunk(&data) {
                        Ok(z) => Piece::Data(z),
                        Err(e) => Piece::Failed(e),
                    };
                    if done.send((seq, piece)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        drop(work_rx);
        // The writer (this thread): pieces in sequence order.
        let mut waiting: BTreeMap<u64, Piece> = BTreeMap::new();
        let mut next = 0u64;
        let result = 'write: loop {
            while let Some(piece) = waiting.remove(&next) {
                match piece {
                    Piece::Data(z) => {
                        if let Err(e) = out.write_all(&z) {
                            break 'write Err(e);
                        }
                        let _ = credit_tx.send(());
                        next += 1;
                    }
                    Piece::Failed(e) => break 'write Err(e),
                    Piece::End => break 'write out.flush(),
                }
            }
            match done_rx.recv() {
                Ok((seq, piece)) => {
                    waiting.insert(seq, piece);
                }
                Err(_) => {
                    break 'write Err(io::Error::other(
                        "a compression thread stopped unexpectedly",
                    ));
                }
            }
        };
        // Unblocks the reader if it waits for a credit; workers end when it is gone.
        drop(credit_tx);
        drop(done_rx);
        result
    })?;
    Ok(Written {
        digest: out.digest(),
        size: out.count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            for n in [0, 1, GZIP_CHUNK, GZIP_CHUNK + 1, 3 * ZSTD_CHUNK + 5] {
                let input = data(n);
                let mut a = Vec::new();
                let wa = compress(&input[..], &mut a, c, 4).unwrap();
                let mut b = Vec::new();
                let wb = compress(&input[..], &mut b, c, 1).unwrap();
                assert_eq!(wa, wb, "{c:?} {n}: thread count changed the output");
                assert_eq!(wa.size, a.len() as u64);
                assert_eq!(wa.digest, Digest::of(&a));
                let mut back = Vec::new();
                c.reader(&a[..]).unwrap().read_to_end(&mut back).unwrap();
                assert!(back == input, "{c:?} {n}: round trip differs");
            }
        }
    }

    #[test]
    fn one_table() {
        for c in Compression::ALL {
            assert_eq!(Compression::of_media_type(c.media_type()), Some(c));
            assert_eq!(Compression::of_media_type(c.docker_media_type()), Some(c));
        }
        assert_eq!(
            Compression::of_media_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            None
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }

    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("source broke"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
    }

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn errors_stop_everything() {
        let e = compress(Failing(3 << 20), &mut Vec::new(), Compression::Gzip, 2).unwrap_err();
        assert_eq!(e.to_string(), "source broke");
        let e = compress(&data(5 << 20)[..], &mut Full, Compression::Zstd, 2).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
}
