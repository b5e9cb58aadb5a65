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
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::open;
use crate::error::{Error, Result};
use crate::tar_reader::TarReader;

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
    /// True when the file exists (after following links), also when it cannot be used
    /// (not a regular file, a symlink leading out): [`ImageFiles::open`] then says why.
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

/// An image in a directory: files are opened beneath it (see [`super::open`]).
pub struct DirFiles {
    root: PathBuf,
    fd: OwnedFd,
}

impl DirFiles {
    /// Opens the directory `root` (the user's path: symlinks followed).
    pub fn open(root: &Path) -> Result<DirFiles> {
        Ok(DirFiles {
            root: root.to_path_buf(),
            fd: open::open_dir(root)?,
        })
    }

    /// The directory `fd` already holds, shown as `root` in messages.
    pub fn from_fd(fd: OwnedFd, root: impl Into<PathBuf>) -> DirFiles {
        DirFiles {
            root: root.into(),
            fd,
        }
    }
}

impl ImageFiles for DirFiles {
    fn location(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }

    fn exists(&self, rel: &str) -> bool {
        clean_rel(rel).is_some_and(|r| open::exists_beneath(self.fd.as_fd(), &r))
    }

    fn open(&self, rel: &str) -> Result<Option<Blob>> {
        let Some(r) = clean_rel(rel) else {
            return Err(Error::Invalid {
                file: self.location(rel),
                detail: "path leaves the image directory".into(),
            });
        };
        let shown = || self.location(&r);
        Ok(open::open_beneath(self.fd.as_fd(), &r, &shown)?
            .map(|(f, size)| (Box::new(f) as Box<dyn Read + Send>, size)))
    }
}

/// An image held in memory (file name → content), for tests and fuzzing.
#[derive(Debug, Default, Clone)]
pub struct MemFiles {
    pub files: HashMap<String, Vec<u8>>,
}

impl ImageFiles for MemFiles {
    fn location(&self, rel: &str) -> String {
        format!("memory:{rel}")
    }

    fn exists(&self, rel: &str) -> bool {
        clean_rel(rel).is_some_and(|r| self.files.contains_key(&r))
    }

    fn open(&self, rel: &str) -> Result<Option<Blob>> {
        Ok(clean_rel(rel).and_then(|r| self.files.get(&r)).map(|b| {
            let r: Box<dyn Read + Send> = Box::new(io::Cursor::new(b.clone()));
            (r, b.len() as u64)
        }))
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
        let (file, _) = open::open_file(path)?;
        TarFiles::from_file(file, path)
    }

    /// Indexes the archive in `file` (at its start), named `path` in messages (a
    /// compressed archive is read from its decompressed copy).
    pub fn from_file(file: File, path: &Path) -> Result<TarFiles> {
        let mut entries = HashMap::new();
        // The entry whose data reaches furthest: (its end, its name), to tell a truncated
        // archive (its data seeked past the end) from one without the file asked for.
        let mut furthest: Option<(u64, String)> = None;
        {
            let mut tar = TarReader::new_seekable(BufReader::new(&file));
            let bad = |e: Error| match e {
                Error::Tar { source } => Error::UnknownFormat {
                    path: path.to_path_buf(),
                    detail: format!("not a readable tar archive: {source}"),
                },
                e => Error::Invalid {
                    file: path.display().to_string(),
                    detail: e.to_string(),
                },
            };
            loop {
                let entry = match tar.next_entry() {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    // Entries read, then the end in the middle of a header: cut short.
                    Err(Error::Tar { source })
                        if source.kind() == std::io::ErrorKind::UnexpectedEof
                            && !entries.is_empty() =>
                    {
                        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                        return Err(Error::Invalid {
                            file: path.display().to_string(),
                            detail: format!(
                                "the archive is truncated: it ends after {len} bytes, inside \
                                 a tar header (after {} entries)",
                                entries.len()
                            ),
                        });
                    }
                    Err(e) => return Err(bad(e)),
                };
                let name = String::from_utf8_lossy(&entry.path).into_owned();
                let Some(name) = clean_rel(&name) else {
                    continue;
                };
                let link = entry
                    .link
                    .as_ref()
                    .map(|l| String::from_utf8_lossy(l).into_owned());
                let kind = match (entry.kind, link) {
                    (tar::EntryType::Regular | tar::EntryType::Continuous, _)
                        if entry.sparse.is_none() =>
                    {
                        let end = entry.data_offset.saturating_add(entry.size);
                        if furthest.as_ref().is_none_or(|(e, _)| end > *e) {
                            furthest = Some((end, name.clone()));
                        }
                        TarKind::File {
                            offset: entry.data_offset,
                            size: entry.size,
                        }
                    }
                    (tar::EntryType::Symlink, Some(l)) => TarKind::Symlink(l),
                    (tar::EntryType::Link, Some(l)) => TarKind::HardLink(l),
                    _ => TarKind::Other,
                };
                // Last entry of a name wins, as when extracting.
                entries.insert(name, kind);
            }
        }
        let len = file
            .metadata()
            .map_err(|e| Error::io_what(format!("reading {}", path.display()), e))?
            .len();
        if let Some((end, name)) = furthest
            && end > len
        {
            return Err(Error::Invalid {
                file: path.display().to_string(),
                detail: format!(
                    "the archive is truncated: {name} ends at byte {end}, but the archive ends \
                     after {len} bytes ({} bytes missing)",
                    end - len
                ),
            });
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
