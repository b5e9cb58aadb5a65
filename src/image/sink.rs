//! Where a saved image goes: an OCI layout directory or a tar archive, written so that
//! nothing half-written is ever visible at the output path.
//!
//! A [`Sink`] is built under a temporary name next to the output (`.NAME.tmp-PID-N`, on
//! the same filesystem) and renamed into place by [`Sink::commit`]; dropped without a
//! commit (an error, a full disk), it removes what it wrote. The output path is checked
//! before any work ([`check_output`]): an archive replaces an existing file (as
//! `docker save -o` does) but never a directory; a layout directory must be new or empty.
//!
//! Blobs go to `blobs/sha256/<hex>`, each once. A blob whose digest is known only once
//! it is written (a layer being compressed) is streamed: into a temporary file renamed
//! to its digest (directory), or behind a placeholder tar header that is rewritten with
//! the blob's name and size once it is complete (archive). Archives are plain ustar,
//! entries owned by 0:0 with mode 0644 (directories 0755) and mtime 0, as Docker writes
//! them, so the same image always gives the same archive.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::compress::Written;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Tar block size.
const BLOCK: u64 = 512;
/// Mode of the files and directories of a layout or archive (what Docker and skopeo use).
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The path of a blob inside a layout.
pub fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// A temporary name next to `out`.
fn temp_beside(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::Invalid {
            file: out.display().to_string(),
            detail: "not a file name".into(),
        })?
        .to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(parent.join(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

/// Checks, before any work, that `out` can be written as a directory (`dir`) or an
/// archive: its parent is a directory, and `out` is not something we must not replace.
pub fn check_output(out: &Path, dir: bool) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Invalid {
                file: parent.display().to_string(),
                detail: "not a directory".into(),
            });
        }
        Err(e) => return Err(Error::io(parent, e)),
    }
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(out, e)),
        Ok(m) if dir => {
            let empty = m.is_dir()
                && fs::read_dir(out)
                    .map_err(|e| Error::io(out, e))?
                    .next()
                    .is_none();
            if empty {
                Ok(())
            } else {
                Err(Error::Invalid {
                    file: out.display().to_string(),
                    detail: "exists (an OCI layout is written to a new or empty directory)".into(),
                })
            }
        }
        Ok(m) if m.is_dir() => Err(Error::Invalid {
            file: out.display().to_string(),
            detail: "is a directory (an archive is written to a file; --format oci writes \
                     a layout directory)"
                .into(),
        }),
        Ok(_) => Ok(()),
    }
}

/// A file written under a temporary name beside its path and renamed into place by
/// [`AtomicFile::commit`]; removed when dropped before.
pub struct AtomicFile {
    out: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts `out` (checked with [`check_output`] first: never over a directory).
    pub fn create(out: &Path) -> Result<AtomicFile> {
        check_output(out, false)?;
        let temp = temp_beside(out)?;
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(out, e))?;
        Ok(AtomicFile {
            out: out.to_path_buf(),
            temp,
            file: Some(BufWriter::with_capacity(1 << 20, f)),
        })
    }

    /// The buffered file, for writers that also seek (see [`TarSink`]).
    fn buffered(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("already closed"))
    }

    /// Flushes and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let res = (|| -> io::Result<()> {
            let w = self.file.take().ok_or_else(|| io::Error::other("closed"))?;
            drop(w.into_inner().map_err(|e| e.into_error())?);
            fs::rename(&self.temp, &self.out)
        })();
        res.map_err(|e| Error::io(&self.out, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// An OCI layout directory being written.
pub struct DirSink {
    out: PathBuf,
    stage: PathBuf,
    done: bool,
    blobs: HashSet<Digest>,
}

/// A tar archive being written.
pub struct TarSink {
    file: AtomicFile,
    blobs: HashSet<Digest>,
}

/// Either.
pub enum Sink {
    Dir(DirSink),
    Tar(TarSink),
}

impl Sink {
    /// Starts a layout directory at `out` (checked with [`check_output`] first).
    pub fn dir(out: &Path) -> Result<Sink> {
        check_output(out, true)?;
        let stage = temp_beside(out)?;
        fs::create_dir_all(stage.join("blobs/sha256")).map_err(|e| {
            let _ = fs::remove_dir_all(&stage);
            Error::io(out, e)
        })?;
        Ok(Sink::Dir(DirSink {
            out: out.to_path_buf(),
            stage,
            done: false,
            blobs: HashSet::new(),
        }))
    }

    /// Starts an archive at `out` (checked with [`check_output`] first).
    pub fn tar(out: &Path) -> Result<Sink> {
        let mut t = TarSink {
            file: AtomicFile::create(out)?,
            blobs: HashSet::new(),
        };
        for d in ["blobs/", "blobs/sha256/"] {
            t.header(d, 0, tar::EntryType::Directory)
                .and_then(|h| t.writer().and_then(|w| w.write_all(&h)))
                .map_err(|e| Error::io(out, e))?;
        }
        Ok(Sink::Tar(t))
    }

    /// The output path, for messages.
    pub fn out(&self) -> &Path {
        match self {
            Sink::Dir(d) => &d.out,
            Sink::Tar(t) => &t.file.out,
        }
    }

    /// True when blob `d` is in the output already.
    pub fn has_blob(&self, d: &Digest) -> bool {
        match self {
            Sink::Dir(s) => s.blobs.contains(d),
            Sink::Tar(s) => s.blobs.contains(d),
        }
    }

    /// Writes a small file at `rel` (`index.json`, `manifest.json`, …).
    pub fn put_file(&mut self, rel: &str, bytes: &[u8]) -> Result<()> {
        let out = self.out().to_path_buf();
        match self {
            Sink::Dir(s) => {
                let p = s.stage.join(rel);
                fs::write(&p, bytes).map_err(|e| Error::io(&out, e))
            }
            Sink::Tar(s) => s.put(rel, bytes).map_err(|e| Error::io(&out, e)),
        }
    }

    /// Writes a blob held in memory (a config, a manifest), once; returns its digest.
    pub fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d) {
            self.put_file(&blob_rel(&d), bytes)?;
            match self {
                Sink::Dir(s) => s.blobs.insert(d),
                Sink::Tar(s) => s.blobs.insert(d),
            };
        }
        Ok(d)
    }

    /// Streams a blob whose digest is learned while writing it: `fill` writes the bytes
    /// and returns their digest and size. A blob that turns out to be there already is
    /// dropped.
    pub fn stream_blob(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<Written>,
    ) -> Result<Written> {
        let out = self.out().to_path_buf();
        match self {
            Sink::Dir(s) => s.stream(fill).map_err(|e| Error::io(&out, e)),
            Sink::Tar(s) => s.stream(fill).map_err(|e| Error::io(&out, e)),
        }
    }

    /// Finishes the output and renames it into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Sink::Dir(mut s) => {
                let out = s.out.clone();
                // rename(2) replaces an empty directory, never a non-empty one.
                fs::rename(&s.stage, &s.out).map_err(|e| Error::io(&out, e))?;
                s.done = true;
                Ok(())
            }
            Sink::Tar(mut s) => {
                let out = s.file.out.clone();
                s.file
                    .write_all(&[0u8; 2 * BLOCK as usize])
                    .map_err(|e| Error::io(&out, e))?;
                s.file.commit()
            }
        }
    }
}

impl DirSink {
    fn stream(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<Written>,
    ) -> io::Result<Written> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.stage.join(format!("blobs/sha256/.tmp-{n}"));
        let res = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            let written = fill(&mut w)?;
            w.flush()?;
            Ok::<_, io::Error>(written)
        })();
        let written = match res {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if self.blobs.insert(written.digest) {
            fs::rename(&tmp, self.stage.join(blob_rel(&written.digest)))?;
        } else {
            fs::remove_file(&tmp)?;
        }
        Ok(written)
    }
}

impl Drop for DirSink {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.stage);
        }
    }
}

impl TarSink {
    fn writer(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file.buffered()
    }

    /// A ustar header block for `name`.
    fn header(&self, name: &str, size: u64, kind: tar::EntryType) -> io::Result<[u8; 512]> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            DIR_MODE
        } else {
            FILE_MODE
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut block = [0u8; 512];
        block.copy_from_slice(h.as_bytes());
        Ok(block)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (BLOCK - size % BLOCK) % BLOCK;
        self.writer()?.write_all(&vec![0u8; rem as usize])
    }

    fn put(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let h = self.header(rel, bytes.len() as u64, tar::EntryType::Regular)?;
        let w = self.writer()?;
        w.write_all(&h)?;
        w.write_all(bytes)?;
        self.pad(bytes.len() as u64)
    }

    fn stream(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<Written>,
    ) -> io::Result<Written> {
        let w = self.writer()?;
        w.flush()?;
        let start = w.get_mut().stream_position()?;
        w.write_all(&[0u8; BLOCK as usize])?;
        let written = fill(w)?;
        self.pad(written.size)?;
        if !self.blobs.insert(written.digest) {
            // Written already: cut this copy off again.
            let w = self.writer()?;
            w.flush()?;
            let f = w.get_mut();
            f.set_len(start)?;
            f.seek(SeekFrom::Start(start))?;
            return Ok(written);
        }
        let h = self.header(
            &blob_rel(&written.digest),
            written.size,
            tar::EntryType::Regular,
        )?;
        let w = self.writer()?;
        w.flush()?;
        let f = w.get_mut();
        let end = f.stream_position()?;
        f.seek(SeekFrom::Start(start))?;
        f.write_all(&h)?;
        f.seek(SeekFrom::Start(end))?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn written(bytes: &[u8]) -> Written {
        Written {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn archive_entries_are_complete_and_deduplicated() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("x.tar");
        let mut s = Sink::tar(&out).unwrap();
        s.put_file("index.json", b"{}").unwrap();
        for data in [&b"layer one"[..], b"layer two", b"layer one"] {
            s.stream_blob(|w| {
                w.write_all(data)?;
                Ok(written(data))
            })
            .unwrap();
        }
        assert!(!out.exists(), "visible before commit");
        s.commit().unwrap();
        let mut names = Vec::new();
        let mut a = tar::Archive::new(File::open(&out).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            if let Some(hex) = name.strip_prefix("blobs/sha256/")
                && !hex.is_empty()
            {
                assert_eq!(Digest::of(&data).hex(), hex);
            }
            names.push(name);
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "temp left");
    }

    #[test]
    fn a_failed_output_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        for dir in [false, true] {
            let out = t.path().join(if dir { "d" } else { "x.tar" });
            let mut s = if dir {
                Sink::dir(&out).unwrap()
            } else {
                Sink::tar(&out).unwrap()
            };
            let e = s
                .stream_blob(|w| {
                    w.write_all(b"partial")?;
                    Err(io::Error::from_raw_os_error(libc::ENOSPC))
                })
                .err()
                .unwrap();
            assert!(e.to_string().contains(&out.display().to_string()), "{e}");
            drop(s);
            assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
        }
        fs::create_dir(t.path().join("full")).unwrap();
        fs::write(t.path().join("full/f"), b"").unwrap();
        assert!(check_output(&t.path().join("full"), true).is_err());
        assert!(check_output(&t.path().join("full"), false).is_err());
        assert!(check_output(&t.path().join("nodir/x.tar"), false).is_err());
    }
}
