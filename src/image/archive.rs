//! Compressed archives (`docker save img | gzip > img.tar.gz`, `.tar.zst`), read as
//! `docker load` reads them.
//!
//! An archive is read in place with positioned reads ([`super::files`]), which a
//! compressed stream does not allow; so it is decompressed once into an unnamed file
//! (`O_TMPFILE`) in a scratch directory — the store's `tmp/`, on the filesystem that
//! will hold the layers anyway — which disappears when closed, also if the process is
//! killed. Where `O_TMPFILE` is not supported, a named file is created and unlinked at
//! once. Telling a compressed docker-archive from a compressed OCI archive needs the
//! entry names: [`scan_compressed`] streams the headers (decompressing, not storing).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::BorrowedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Compression;
use crate::error::{Error, Result};
use crate::tar_reader::TarReader;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A decompressing reader of file `path` (a regular file, opened without blocking, as
/// every source file is: [`super::open::open_file`]).
fn decoder(path: &Path, c: Compression) -> Result<Box<dyn Read + Send>> {
    let (f, _) = super::open::open_file(path)?;
    c.reader(BufReader::with_capacity(256 << 10, f))
        .map_err(|e| Error::io(path, e))
}

/// A scratch directory (held open) and its path for messages.
#[derive(Debug, Clone, Copy)]
pub struct Scratch<'a> {
    pub dir: BorrowedFd<'a>,
    pub shown: &'a Path,
}

/// An unnamed read-write file in `dir`.
fn unnamed_file(dir: BorrowedFd<'_>) -> io::Result<File> {
    let mode = Mode::from_bits_truncate(0o600);
    let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC;
    match nix::fcntl::openat(dir, ".", flags | OFlag::O_TMPFILE, mode) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(".decompressed-{}-{n}", std::process::id());
            let fd = nix::fcntl::openat(
                dir,
                name.as_str(),
                flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                mode,
            )?;
            nix::unistd::unlinkat(dir, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            Ok(File::from(fd))
        }
        Err(e) => Err(e.into()),
    }
}

/// Decompresses archive `path` into an unnamed file in `scratch`, positioned at its start.
pub fn decompress_to_temp(path: &Path, c: Compression, scratch: Scratch<'_>) -> Result<File> {
    let mut out = unnamed_file(scratch.dir).map_err(|e| Error::io(scratch.shown, e))?;
    let mut r = crate::interrupt::Checked(decoder(path, c)?);
    io::copy(&mut r, &mut out).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            Error::UnknownFormat {
                path: path.to_path_buf(),
                detail: format!("a {c:?}-compressed file that does not decompress: {e}"),
            }
        }
        _ => Error::io_what(
            format!(
                "decompressing {} into {}",
                path.display(),
                scratch.shown.display()
            ),
            e,
        ),
    })?;
    out.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(scratch.shown, e))?;
    Ok(out)
}

/// Whether the compressed archive at `path` holds `manifest.json` (docker-archive) and
/// `index.json`/`oci-layout` (OCI), from its headers; stops at `manifest.json`. The
/// headers are framed by the bounded [`TarReader`], as a plain archive's are.
pub fn scan_compressed(path: &Path, c: Compression) -> Result<(bool, bool)> {
    let bad = |e: Error| match e {
        Error::Tar { source } => Error::UnknownFormat {
            path: path.to_path_buf(),
            detail: format!("a {c:?}-compressed file that is not a readable tar archive: {source}"),
        },
        e => Error::Invalid {
            file: path.display().to_string(),
            detail: e.to_string(),
        },
    };
    let mut tar = TarReader::new(decoder(path, c)?);
    let mut oci = false;
    while let Some(entry) = tar.next_entry().map_err(bad)? {
        let name = String::from_utf8_lossy(&entry.path).into_owned();
        match super::files::clean_rel(&name).as_deref() {
            Some("manifest.json") => return Ok((true, oci)),
            Some("index.json") | Some("oci-layout") => oci = true,
            _ => {}
        }
    }
    Ok((false, oci))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn decompresses_into_an_unnamed_file() {
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "index.json", &b"{}"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let p = t.path().join("x.tar.zst");
        std::fs::write(&p, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        assert_eq!(
            scan_compressed(&p, Compression::Zstd).unwrap(),
            (false, true)
        );
        let scratch = t.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let dir = std::fs::File::open(&scratch).unwrap();
        let sc = Scratch {
            dir: std::os::fd::AsFd::as_fd(&dir),
            shown: &scratch,
        };
        let mut f = decompress_to_temp(&p, Compression::Zstd, sc).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, tar);
        assert_eq!(
            std::fs::read_dir(&scratch).unwrap().count(),
            0,
            "nothing named left"
        );
        let g = t.path().join("bad.gz");
        let mut w = std::fs::File::create(&g).unwrap();
        w.write_all(&[0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert!(decompress_to_temp(&g, Compression::Gzip, sc).is_err());
    }
}
