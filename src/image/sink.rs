//! Where a saved image goes: an OCI layout directory or a tar archive, written so that
//! nothing half-written is ever visible at the output path.
//!
//! A [`Sink`] is built under a temporary name next to the output (`.NAME.tmp-PID-N`, on
//! the same filesystem) and put in place by [`Sink::commit`]; dropped without a commit
//! (an error, a full disk), it removes what it wrote. What the output may replace, and
//! the modes of what is written (private to the writer), are [`super::output`]'s rules.
//!
//! Blobs go to `blobs/sha256/<hex>`, each once. A blob whose digest is known only once
//! it is written (a layer being compressed) is streamed: into a temporary file renamed
//! to its digest (directory), or behind a placeholder tar header that is rewritten with
//! the blob's name and size once it is complete (archive). Archives are plain ustar,
//! entries owned by 0:0 with mode 0644 (directories 0755) and mtime 0 in their headers,
//! as Docker writes them, so the same image always gives the same archive.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::compress::Written;
use super::output::{AtomicFile, StageDir, Target};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::interrupt::Checked;

/// Tar block size.
const BLOCK: u64 = 512;
/// Mode in the headers of an archive's files and directories (what Docker and skopeo use).
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The path of a blob inside a layout.
pub fn blob_rel(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// An OCI layout directory being written.
pub struct DirSink {
    stage: StageDir,
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
    /// Starts a layout directory at `out` (checked first: a new or empty directory).
    pub fn dir(out: &Path) -> Result<Sink> {
        Ok(Sink::Dir(DirSink {
            stage: StageDir::create(out)?,
            blobs: HashSet::new(),
        }))
    }

    /// Starts an archive at `out` (checked first: a new file, or over a regular one).
    pub fn tar(out: &Path) -> Result<Sink> {
        let mut t = TarSink {
            file: AtomicFile::create(out, Target::SaveArchive)?,
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
            Sink::Dir(d) => d.stage.out(),
            Sink::Tar(t) => t.file.out(),
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
            Sink::Dir(s) => s
                .stage
                .write_file(rel, bytes)
                .map_err(|e| Error::io(&out, e)),
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
            // Ctrl-C stops a blob midway (the output is removed when dropped).
            Sink::Dir(s) => s
                .stream(|w| fill(&mut Checked(w)))
                .map_err(|e| Error::io(&out, e)),
            Sink::Tar(s) => s
                .stream(|w| fill(&mut Checked(w)))
                .map_err(|e| Error::io(&out, e)),
        }
    }

    /// Finishes the output and puts it in place.
    pub fn commit(self) -> Result<()> {
        match self {
            Sink::Dir(s) => s.stage.commit(),
            Sink::Tar(mut s) => {
                let out = s.file.out().to_path_buf();
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
        let tmp = format!("blobs/sha256/.tmp-{n}");
        let res = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, self.stage.create_file(&tmp)?);
            let written = fill(&mut w)?;
            w.flush()?;
            Ok::<_, io::Error>(written)
        })();
        let written = match res {
            Ok(w) => w,
            Err(e) => {
                let _ = self.stage.remove_file(&tmp);
                return Err(e);
            }
        };
        if self.blobs.insert(written.digest) {
            self.stage.rename(&tmp, &blob_rel(&written.digest))?;
        } else {
            self.stage.remove_file(&tmp)?;
        }
        Ok(written)
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
    use std::fs;
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
    }
}
