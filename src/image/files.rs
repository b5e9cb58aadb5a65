//! The files of an image, wherever they are: a directory (OCI layout, an unpacked
//! `docker save`) or a tar archive read in place.
//!
//! [`ImageFiles`] names files by their path relative to the image root (`index.json`,
//! `blobs/sha256/<hex>`, `<id>/layer.tar`). Paths are cleaned lexically first: absolute
//! paths and `..` are refused, so a hostile `manifest.json` cannot make us read a file
//! outside the image. An archive is indexed once (one pass over its headers, skipping
//! data with seeks); blobs are then read straight from their byte range in the archive
//! with positioned reads, so nothing is extracted to disk and several layers can be read
//! at once from one file handle. Symbolic and hard links inside the archive (docker-archive
//! `<id>/layer.tar -> ../<hex>.tar`) are followed, within the archive only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// Largest JSON document (index, manifest, config) we read into memory: real ones are a
/// few KiB; the cap keeps a hostile image from exhausting memory.
pub const MAX_JSON_SIZE: u64 = 64 << 20;

/// How many links we follow inside an archive before calling it a loop.
const MAX_LINK_HOPS: usize = 16;

/// A readable blob and its size.
pub type Blob = (Box<dyn Read + Send>, u64);

/// Read access to the files of one image source.
pub trait ImageFiles: Send + Sync {
    /// How messages name the file `rel` (`/x/oci/index.json`, `/x/img.tar:manifest.json`).
    fn location(&self, rel: &str) -> String;
    /// True when the file exists (after following links).
    fn exists(&self, rel: &str) -> bool;
    /// Opens a file for streaming; `Ok(None)` when it does not exist.
    fn open(&self, rel: &str) -> Result<Option<Blob>>;

    /// Reads a small file whole (at most [`MAX_JSON_SIZE`]); `Ok(None)` when missing.
    fn read_small(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let Some((r, size)) = self.open(rel)? else {
            return Ok(None);
        };
        if size > MAX_JSON_SIZE {
            return Err(Error::Invalid {
                file: self.location(rel),
                detail: format!("{size} bytes is too large for a JSON document"),
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_JSON_SIZE)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(self.location(rel), e))?;
        Ok(Some(buf))
    }
}

/// Cleans a relative path lexically: drops `.` and empty components, refuses absolute
/// paths and `..`. Returns `None` for anything that could leave the image root.
pub fn clean_rel(rel: &str) -> Option<String> {
    if rel.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// An image in a directory.
pub struct DirFiles {
    root: PathBuf,
}

impl DirFiles {
    pub fn new(root: &Path) -> DirFiles {
        DirFiles {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, rel: &str) -> Option<PathBuf> {
        clean_rel(rel).map(|r| self.root.join(r))
    }
}

impl ImageFiles for DirFiles {
    fn location(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_some_and(|p| p.is_file())
    }

    fn open(&self, rel: &str) -> Result<Option<Blob>> {
        let Some(p) = self.path(rel) else {
            return Err(Error::Invalid {
                file: self.location(rel),
                detail: "path leaves the image directory".into(),
            });
        };
        match File::open(&p) {
            Ok(f) => {
                let meta = f.metadata().map_err(|e| Error::io(&p, e))?;
                if !meta.is_file() {
                    return Err(Error::Invalid {
                        file: p.display().to_string(),
                        detail: "not a regular file".into(),
                    });
                }
                Ok(Some((Box::new(f), meta.len())))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}

#[derive(Debug, Clone)]
enum TarKind {
    File { offset: u64, size: u64 },
    Symlink(String),
    HardLink(String),
    Other,
}

/// An image inside a tar archive, read in place.
pub struct TarFiles {
    path: PathBuf,
    file: Arc<File>,
    entries: HashMap<String, TarKind>,
}

impl TarFiles {
    /// Indexes the archive at `path` (headers only; data is skipped by seeking).
    pub fn open(path: &Path) -> Result<TarFiles> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        TarFiles::from_file(file, path)
    }

    /// Indexes the archive in `file` (at its start), named `path` in messages (a
    /// compressed archive is read from its decompressed copy).
    pub fn from_file(file: File, path: &Path) -> Result<TarFiles> {
        let mut entries = HashMap::new();
        {
            let mut archive = tar::Archive::new(BufReader::new(&file));
            let bad = |e: io::Error| Error::UnknownFormat {
                path: path.to_path_buf(),
                detail: format!("not a readable tar archive: {e}"),
            };
            for entry in archive.entries_with_seek().map_err(bad)? {
                let entry = entry.map_err(bad)?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(name) = clean_rel(&name) else {
                    continue;
                };
                let link = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned());
                let kind = match (entry.header().entry_type(), link) {
                    (tar::EntryType::Regular | tar::EntryType::Continuous, _) => TarKind::File {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    },
                    (tar::EntryType::Symlink, Some(l)) => TarKind::Symlink(l),
                    (tar::EntryType::Link, Some(l)) => TarKind::HardLink(l),
                    _ => TarKind::Other,
                };
                // Last entry of a name wins, as when extracting.
                entries.insert(name, kind);
            }
        }
        Ok(TarFiles {
            path: path.to_path_buf(),
            file: Arc::new(file),
            entries,
        })
    }

    /// Follows links to a regular file's byte range.
    fn resolve(&self, rel: &str) -> Option<(u64, u64)> {
        let mut name = clean_rel(rel)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.entries.get(&name)? {
                TarKind::File { offset, size } => return Some((*offset, *size)),
                TarKind::HardLink(target) => name = clean_rel(target)?,
                TarKind::Symlink(target) => {
                    let joined = match name.rsplit_once('/') {
                        Some((dir, _)) if !target.starts_with('/') => format!("{dir}/{target}"),
                        _ => target.trim_start_matches('/').to_string(),
                    };
                    name = normalize_dots(&joined)?;
                }
                TarKind::Other => return None,
            }
        }
        None
    }

    /// True when the archive has an entry named `rel` (for format detection).
    pub fn has(&self, rel: &str) -> bool {
        clean_rel(rel).is_some_and(|r| self.entries.contains_key(&r))
    }
}

/// Resolves `..` lexically within the archive root (a symlink target may climb out of
/// its own directory, never out of the archive).
fn normalize_dots(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl ImageFiles for TarFiles {
    fn location(&self, rel: &str) -> String {
        format!("{}:{rel}", self.path.display())
    }

    fn exists(&self, rel: &str) -> bool {
        self.resolve(rel).is_some()
    }

    fn open(&self, rel: &str) -> Result<Option<Blob>> {
        Ok(self.resolve(rel).map(|(offset, size)| {
            let r: Box<dyn Read + Send> = Box::new(RangeReader {
                file: Arc::clone(&self.file),
                pos: offset,
                end: offset + size,
            });
            (r, size)
        }))
    }
}

/// Reads bytes `pos..end` of a shared file with positioned reads (no shared cursor, so
/// any number of readers can use one handle at once).
struct RangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is shorter than its tar headers say",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_rel_refuses_escapes() {
        assert_eq!(clean_rel("./a//b/.").as_deref(), Some("a/b"));
        assert_eq!(clean_rel("/etc/passwd"), None);
        assert_eq!(clean_rel("a/../b"), None);
        assert_eq!(clean_rel("."), None);
        assert_eq!(normalize_dots("a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(normalize_dots("a/../../c"), None);
    }
}
