//! Content digests: the `sha256:<hex>` names that address every blob, layer and image.
//!
//! Owns [`Digest`] (sha256 only: the one algorithm images use in practice; anything else
//! is refused at parse time rather than half supported), the readers that hash a stream
//! while it flows ([`Hashing`], [`VerifyingReader`]) and the chain id rule of the
//! image-spec. Invariant: a `Digest` always holds exactly 32 bytes, so its text form is
//! always `sha256:` + 64 lowercase hex digits and is safe to use as a file name.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only algorithm prefix we accept.
pub const SHA256_PREFIX: &str = "sha256:";

/// A sha256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDigestError {
    #[error("unsupported digest algorithm in {0:?} (only sha256 is supported)")]
    Algorithm(String),
    #[error("invalid sha256 digest {0:?} (want 64 lowercase hex digits)")]
    Hex(String),
}

impl Digest {
    /// Parses `sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<Digest, ParseDigestError> {
        let Some(hex) = s.strip_prefix(SHA256_PREFIX) else {
            return Err(ParseDigestError::Algorithm(s.to_string()));
        };
        Digest::from_hex(hex).map_err(|_| ParseDigestError::Hex(s.to_string()))
    }

    /// Parses 64 lowercase hex digits (no algorithm prefix).
    pub fn from_hex(hex: &str) -> Result<Digest, ParseDigestError> {
        // Uppercase hex would give a second spelling (and a second directory name) of the
        // same digest: refuse it, as the image-spec does.
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseDigestError::Hex(hex.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).map_err(|_| ParseDigestError::Hex(hex.to_string()))?;
        Ok(Digest(out))
    }

    /// The digest whose raw bytes are `bytes` (a finished sha256).
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits, without the algorithm.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, as Docker shows image ids.
    pub fn short(&self) -> String {
        let mut h = self.hex();
        h.truncate(12);
        h
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256_PREFIX}{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// ChainID of a layer stack (image-spec config.md): the first layer's chain id is its
/// diff id, each next one is `sha256(parent_chain + " " + diff_id)`. Returns one chain id
/// per layer, bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => *d,
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A reader or writer that hashes and counts every byte going through it.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes through so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of what went through so far.
    pub fn digest(&self) -> Digest {
        Digest(self.hasher.clone().finalize().into())
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    fn seen(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.count += bytes.len() as u64;
    }
}

impl<W: io::Write> io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.seen(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen(&buf[..n]);
        Ok(n)
    }
}

/// What a [`VerifyingReader`] found at the end of its stream when the content was not
/// what the reference promised. Travels inside an `io::Error` (kind `InvalidData`) so that
/// any consumer of the stream stops; the owner of the reader can also ask
/// [`VerifyingReader::failure`] after the fact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("content digest is {actual}, expected {expected}")]
    Digest { expected: Digest, actual: Digest },
    #[error("content is {actual} bytes long, expected {expected}")]
    Size { expected: u64, actual: u64 },
}

/// A reader that hashes while streaming and checks digest (and size, when known) at EOF:
/// the read that would return 0 bytes returns an `InvalidData` error carrying a
/// [`Mismatch`] instead, so nobody treats unverified content as complete. A stream longer
/// than the expected size fails as soon as it overruns, without reading the rest.
pub struct VerifyingReader<R> {
    inner: Hashing<R>,
    expected: Digest,
    expected_size: Option<u64>,
    failure: Option<Mismatch>,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner: Hashing::new(inner),
            expected,
            expected_size,
            failure: None,
            verified: false,
        }
    }

    /// The mismatch seen, if the stream has ended (or overrun) with one.
    pub fn failure(&self) -> Option<&Mismatch> {
        self.failure.as_ref()
    }

    /// True once EOF was reached with the expected digest.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.inner.count()
    }

    fn fail(&mut self, m: Mismatch) -> io::Error {
        self.failure = Some(m.clone());
        io::Error::new(io::ErrorKind::InvalidData, m)
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(m) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, m.clone()));
        }
        let n = self.inner.read(buf)?;
        let count = self.inner.count();
        if let Some(size) = self.expected_size {
            if count > size {
                return Err(self.fail(Mismatch::Size {
                    expected: size,
                    actual: count,
                }));
            }
            if n == 0 && count != size && !buf.is_empty() {
                return Err(self.fail(Mismatch::Size {
                    expected: size,
                    actual: count,
                }));
            }
        }
        if n == 0 && !buf.is_empty() && !self.verified {
            let actual = self.inner.digest();
            if actual != self.expected {
                return Err(self.fail(Mismatch::Digest {
                    expected: self.expected,
                    actual,
                }));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

/// Finds a [`Mismatch`] inside an `io::Error` (as returned through decompressors and
/// tar readers, which pass reader errors on unchanged or wrap them once).
pub fn mismatch_in(err: &io::Error) -> Option<&Mismatch> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = err
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = cur {
        if let Some(m) = e.downcast_ref::<Mismatch>() {
            return Some(m);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(m) = mismatch_in(io)
        {
            return Some(m);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_display_round_trip() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "sha512:abcd",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:../../../../etc/passwd",
            "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a, b]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn verifying_reader_accepts_and_rejects() {
        let data = b"hello world".to_vec();
        let good = Digest::of(&data);
        let mut r = VerifyingReader::new(&data[..], good, Some(data.len() as u64));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(r.verified());

        let mut r = VerifyingReader::new(&data[..], Digest::of(b"x"), None);
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(mismatch_in(&err), Some(Mismatch::Digest { .. })));
        assert!(r.failure().is_some());

        let mut r = VerifyingReader::new(&data[..], good, Some(3));
        let err = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(mismatch_in(&err), Some(Mismatch::Size { .. })));
    }
}
