//! A tar writer whose bytes depend on the entries alone: POSIX ustar headers with PAX
//! records where ustar falls short (long names and link targets, ids beyond 21 bits,
//! sizes of 8 GiB or more, times before 1970 or after 2242, extended attributes), no user
//! or group names, no access or change times, PAX records in a fixed order (xattrs sorted
//! by name), a PAX header always named `././@PaxHeader` with zero owner and time, and the
//! two zero blocks of the end-of-archive marker. So the same entries always give the same
//! bytes, hence the same diff_id. Readers: GNU tar, bsdtar, Go's archive/tar (Docker,
//! containerd, skopeo, umoci), the `tar` crate (ours).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// ustar's name and link-name fields.
const NAME_FIELD: usize = 100;
/// Largest value of an 8-byte octal field (uid, gid, mode): 7 octal digits.
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime): 11 octal digits.
const MAX_OCTAL_12: u64 = 0o77777777777;
const BLOCK: usize = 512;

/// Ownership, mode, time and xattrs of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// What an entry is.
pub enum Body<'a> {
    Dir,
    /// A regular file of `size` bytes, read from the reader (exactly that many).
    File(u64, &'a mut dyn Read),
    Symlink(&'a [u8]),
    /// A second name of a file written earlier in this archive.
    HardLink(&'a [u8]),
    Fifo,
    Char(u64, u64),
    Block(u64, u64),
}

/// Writes entries to `out`.
pub struct TarWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn octal(field: &mut [u8], v: u64) {
    // NUL-terminated, zero-padded octal (what Go and GNU tar write).
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

/// A bare ustar header block (checksum filled in).
#[allow(clippy::too_many_arguments)]
fn header(
    name: &[u8],
    kind: u8,
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u64, u64),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(NAME_FIELD);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    let l = link.len().min(NAME_FIELD);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' || kind == b'4' {
        octal(&mut h[329..337], dev.0);
        octal(&mut h[337..345], dev.1);
    }
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter {
            out,
            buf: vec![0u8; 1 << 20],
        }
    }

    /// Writes one entry at `path` (relative, `/`-separated; directories get a trailing
    /// `/`).
    pub fn entry(&mut self, path: &[u8], meta: &Meta, body: Body<'_>) -> io::Result<()> {
        let mut name = path.to_vec();
        let (kind, size, link, dev): (u8, u64, &[u8], (u64, u64)) = match &body {
            Body::Dir => {
                if !name.ends_with(b"/") {
                    name.push(b'/');
                }
                (b'5', 0, b"", (0, 0))
            }
            Body::File(size, _) => (b'0', *size, b"", (0, 0)),
            Body::Symlink(t) => (b'2', 0, t, (0, 0)),
            Body::HardLink(t) => (b'1', 0, t, (0, 0)),
            Body::Fifo => (b'6', 0, b"", (0, 0)),
            Body::Char(a, b) => (b'3', 0, b"", (*a, *b)),
            Body::Block(a, b) => (b'4', 0, b"", (*a, *b)),
        };
        let mut pax = Vec::new();
        if name.len() > NAME_FIELD {
            pax_record(&mut pax, b"path", &name);
        }
        if link.len() > NAME_FIELD {
            pax_record(&mut pax, b"linkpath", link);
        }
        let big = |v: u64, max: u64| if v > max { 0 } else { v };
        if meta.uid > MAX_OCTAL_8 {
            pax_record(&mut pax, b"uid", meta.uid.to_string().as_bytes());
        }
        if meta.gid > MAX_OCTAL_8 {
            pax_record(&mut pax, b"gid", meta.gid.to_string().as_bytes());
        }
        if size > MAX_OCTAL_12 {
            pax_record(&mut pax, b"size", size.to_string().as_bytes());
        }
        let mtime = u64::try_from(meta.mtime)
            .ok()
            .filter(|t| *t <= MAX_OCTAL_12);
        if mtime.is_none() {
            pax_record(&mut pax, b"mtime", meta.mtime.to_string().as_bytes());
        }
        for (k, v) in &meta.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax_record(&mut pax, &key, v);
        }
        if !pax.is_empty() {
            let h = header(
                b"././@PaxHeader",
                b'x',
                0o644,
                0,
                0,
                pax.len() as u64,
                0,
                b"",
                (0, 0),
            );
            self.out.write_all(&h)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let h = header(
            &name,
            kind,
            u64::from(meta.mode & 0o7777),
            big(meta.uid, MAX_OCTAL_8),
            big(meta.gid, MAX_OCTAL_8),
            big(size, MAX_OCTAL_12),
            mtime.unwrap_or(0),
            link,
            dev,
        );
        self.out.write_all(&h)?;
        if let Body::File(size, data) = body {
            self.copy(data, size)?;
            self.pad(size)?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `data`: a file that shrank or grew meanwhile is an
    /// error, never a damaged archive.
    fn copy(&mut self, data: &mut dyn Read, size: u64) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            let want = self
                .buf
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was read",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.out.write_all(&self.buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the end-of-archive marker and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry = (String, tar::EntryType, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn entries(tar: &[u8]) -> Vec<Entry> {
        let mut a = tar::Archive::new(tar);
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            let mut x = Vec::new();
            if let Some(p) = e.pax_extensions().unwrap() {
                for r in p {
                    let r = r.unwrap();
                    x.push((r.key().unwrap().to_string(), r.value_bytes().to_vec()));
                }
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((path, kind, data, x));
        }
        out
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        for (k, v, want) in [
            (&b"path"[..], &b"a"[..], &b"9 path=a\n"[..]),
            (b"k", &[b'v'; 4][..], b"9 k=vvvv\n"),
            (b"k", &[b'v'; 94][..], b"101 k=".as_slice()),
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            assert!(out.starts_with(want), "{:?}", String::from_utf8_lossy(&out));
            let len: usize = String::from_utf8_lossy(&out)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, out.len());
        }
    }

    #[test]
    fn entries_read_back_and_bytes_are_stable() {
        let write = || {
            let mut w = TarWriter::new(Vec::new());
            let long = "d/".to_string() + &"n".repeat(150);
            let meta = Meta {
                mode: 0o4755,
                uid: 5_000_000,
                gid: 7,
                mtime: 1_700_000_000,
                xattrs: vec![
                    ("user.a".into(), b"1".to_vec()),
                    ("user.b".into(), Vec::new()),
                ],
            };
            w.entry(b"d", &meta, Body::Dir).unwrap();
            let mut data: &[u8] = b"hello";
            w.entry(long.as_bytes(), &meta, Body::File(5, &mut data))
                .unwrap();
            w.entry(b"d/h", &Meta::default(), Body::HardLink(long.as_bytes()))
                .unwrap();
            w.entry(b"d/s", &Meta::default(), Body::Symlink(b"target"))
                .unwrap();
            w.entry(b"d/c", &Meta::default(), Body::Char(1, 3)).unwrap();
            w.entry(
                b"d/old",
                &Meta {
                    mtime: -5,
                    ..Meta::default()
                },
                Body::Fifo,
            )
            .unwrap();
            w.finish().unwrap()
        };
        let a = write();
        assert_eq!(a, write());
        assert_eq!(a.len() % 512, 0);
        let got = entries(&a);
        assert_eq!(got[0].0, "d/");
        assert_eq!(got[1].0, "d/".to_string() + &"n".repeat(150));
        assert_eq!(got[1].2, b"hello");
        assert!(got[1].3.contains(&("uid".into(), b"5000000".to_vec())));
        assert!(
            got[1]
                .3
                .contains(&("SCHILY.xattr.user.b".into(), Vec::new()))
        );
        assert_eq!(got[2].1, tar::EntryType::Link);
        assert_eq!(got[3].1, tar::EntryType::Symlink);
        assert_eq!(got[4].1, tar::EntryType::Char);
        assert!(got[5].3.contains(&("mtime".into(), b"-5".to_vec())));
        // A file that shrank is an error.
        let mut w = TarWriter::new(Vec::new());
        let mut data: &[u8] = b"abc";
        assert!(
            w.entry(b"f", &Meta::default(), Body::File(10, &mut data))
                .is_err()
        );
    }
}
