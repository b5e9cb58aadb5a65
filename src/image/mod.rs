//! Image sources and formats: what `layerfs load` (and an IMAGE argument) can read.
//!
//! [`Source::parse`] understands skopeo-style transports (`oci:PATH[:TAG]`,
//! `oci-archive:PATH[:TAG]`, `docker-archive:PATH[:REF]`), bare directories and `.tar`
//! files (the format is detected from their content), and `PATH:TAG` when `PATH` exists.
//! [`Source::read`] turns a source into [`ImagePlan`]s: the config and manifest bytes
//! (verified against their digests), the layers to unpack (bottom first, each with where its
//! blob is, its media type and the diff_id the config promises) and the names to tag.
//! Nothing is written anywhere: the store (`store::load`) executes a plan.
//!
//! Formats: [`oci`] reads image layouts (a directory or an OCI archive, i.e. a tar of one;
//! image index and manifest lists pick linux + this machine's architecture); [`docker`]
//! reads `docker save` archives (v1.2 `manifest.json` + `<id>/layer.tar`, and Docker 25+'s
//! hybrid of that with an OCI layout). Archives are read in place ([`files`]).

pub mod archive;
pub mod compress;
pub mod docker;
pub mod files;
pub mod oci;
pub mod open;
pub mod output;
pub mod reference;
pub mod sink;
pub mod write;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;

use crate::digest::Digest;
use crate::error::{Error, Result};
pub use compress::Compression;
pub use files::ImageFiles;
pub use reference::Reference;

/// The kinds of image source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    OciLayout,
    /// A tar archive of an OCI image layout.
    OciArchive,
    /// A `docker save` archive (or such an archive unpacked into a directory).
    DockerArchive,
}

impl Format {
    /// The skopeo transport name.
    pub fn transport(self) -> &'static str {
        match self {
            Format::OciLayout => "oci",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
        }
    }
}

/// Where to load an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub format: Format,
    pub path: PathBuf,
    /// A tag (OCI) or reference (docker-archive) picking one image of several.
    pub selector: Option<String>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.format.transport(), self.path.display())?;
        if let Some(s) = &self.selector {
            write!(f, ":{s}")?;
        }
        Ok(())
    }
}

/// Offset and value of the ustar magic in a tar header ("ustar\0" POSIX, "ustar " GNU).
const USTAR_MAGIC_OFFSET: usize = 257;
const USTAR_MAGIC: &[u8] = b"ustar";

impl Source {
    /// Interprets a command-line argument.
    ///
    /// Returns `Ok(None)` when `arg` is not something to load (then it is a reference to an
    /// image in the store), `Ok(Some(_))` for a transport or an existing path, and an error
    /// for a transport or path-looking argument whose path is missing or not an image.
    pub fn parse(arg: &str) -> Result<Option<Source>> {
        for (prefix, format) in [
            ("oci:", Some(Format::OciLayout)),
            ("oci-archive:", Some(Format::OciArchive)),
            ("docker-archive:", Some(Format::DockerArchive)),
        ] {
            if let Some(rest) = arg.strip_prefix(prefix) {
                let (path, selector) =
                    split_path_selector(rest, format == Some(Format::DockerArchive))
                        .ok_or_else(|| Error::NotFound(PathBuf::from(rest)))?;
                let detected = detect(&path)?;
                let format = match (format, detected) {
                    // A docker-archive may be unpacked into a directory; an `oci:` directory
                    // may carry Docker's manifest.json too (Docker 25+): the transport wins.
                    (Some(f), _) => f,
                    (None, d) => d,
                };
                return Ok(Some(Source {
                    format,
                    path,
                    selector,
                }));
            }
        }
        let p = Path::new(arg);
        if p.exists() {
            let format = detect(p)?;
            return Ok(Some(Source {
                format,
                path: p.to_path_buf(),
                selector: None,
            }));
        }
        // PATH:TAG with an existing PATH.
        if let Some((path, tag)) = arg.rsplit_once(':')
            && !path.is_empty()
            && !tag.contains('/')
            && Path::new(path).exists()
        {
            let format = detect(Path::new(path))?;
            return Ok(Some(Source {
                format,
                path: PathBuf::from(path),
                selector: Some(tag.to_string()),
            }));
        }
        if looks_like_path(arg) {
            return Err(Error::NotFound(p.to_path_buf()));
        }
        Ok(None)
    }

    /// Reads the source into plans (several for a multi-image docker-archive).
    pub fn read(&self) -> Result<Vec<ImagePlan>> {
        self.read_with(true)
    }

    /// As [`Source::read`]; `name_tag_only_refs` false leaves ref names that are only a
    /// tag unnamed (when the user names the image with `--tag` instead).
    pub fn read_with(&self, name_tag_only_refs: bool) -> Result<Vec<ImagePlan>> {
        let tmp = std::env::temp_dir();
        let dir = open::open_dir(&tmp)?;
        let dir = nix::fcntl::openat(
            &dir,
            ".",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::io(&tmp, e.into()))?;
        self.read_in(
            name_tag_only_refs,
            archive::Scratch {
                dir: std::os::fd::AsFd::as_fd(&dir),
                shown: &tmp,
            },
        )
    }

    /// As [`Source::read_with`]; a compressed archive is decompressed into an unnamed
    /// file in `scratch` (the store's `tmp/`: it may be large), gone when closed.
    pub fn read_in(
        &self,
        name_tag_only_refs: bool,
        scratch: archive::Scratch<'_>,
    ) -> Result<Vec<ImagePlan>> {
        let hint = name_tag_only_refs.then(|| name_hint(&self.path)).flatten();
        let files: Arc<dyn ImageFiles> = if self.path.is_dir() {
            Arc::new(files::DirFiles::open(&self.path)?)
        } else {
            match check_archive(&self.path)? {
                None => Arc::new(files::TarFiles::open(&self.path)?),
                Some(c) => {
                    let plain = archive::decompress_to_temp(&self.path, c, scratch)?;
                    Arc::new(files::TarFiles::from_file(plain, &self.path)?)
                }
            }
        };
        let plans = match self.format {
            Format::OciLayout | Format::OciArchive => oci::read(
                &files,
                &self.path,
                self.selector.as_deref(),
                hint.as_deref(),
            )?,
            Format::DockerArchive => docker::read(&files, &self.path, self.selector.as_deref())?,
        };
        Ok(plans)
    }
}

/// Splits `PATH[:SEL]`: the whole string when it exists as a path; else at a ':' whose
/// left part exists. For docker-archive the selector is a reference that may itself hold a
/// ':' (`x.tar:busybox:latest`), so the first existing prefix wins; for OCI the tag never
/// holds one, so the last ':' does.
fn split_path_selector(s: &str, first: bool) -> Option<(PathBuf, Option<String>)> {
    if Path::new(s).exists() {
        return Some((PathBuf::from(s), None));
    }
    let mut cuts: Vec<usize> = s.match_indices(':').map(|(i, _)| i).collect();
    if !first {
        cuts.reverse();
    }
    cuts.into_iter().find_map(|i| {
        let (p, sel) = (&s[..i], &s[i + 1..]);
        (!p.is_empty() && Path::new(p).exists() && !sel.is_empty())
            .then(|| (PathBuf::from(p), Some(sel.to_string())))
    })
}

/// Arguments that are surely meant as paths (so a missing one is "no such file", not
/// "unknown image").
fn looks_like_path(arg: &str) -> bool {
    arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || arg.starts_with('~')
        || arg.ends_with(".tar")
        || arg.ends_with('/')
}

/// Detects the format of an existing path from its content.
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path.to_path_buf())
        } else {
            Error::io(path, e)
        }
    })?;
    if meta.is_dir() {
        let files = files::DirFiles::open(path)?;
        let has = |n: &str| files.exists(n);
        if has("manifest.json") {
            return Ok(Format::DockerArchive);
        }
        if has("index.json") || has("oci-layout") {
            return Ok(Format::OciLayout);
        }
        let mut detail = "no oci-layout, index.json or manifest.json in this directory".to_string();
        if let Ok(rd) = std::fs::read_dir(path) {
            let mut subs: Vec<String> = rd
                .flatten()
                .filter(|e| e.path().join("index.json").is_file())
                .map(|e| e.path().display().to_string())
                .collect();
            subs.sort();
            if !subs.is_empty() {
                detail.push_str(&format!(" (an OCI layout is in {})", subs.join(", ")));
            }
        }
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            detail,
        });
    }
    let (docker, oci) = match check_archive(path)? {
        None => {
            let files = files::TarFiles::open(path)?;
            (
                files.has("manifest.json"),
                files.has("index.json") || files.has("oci-layout"),
            )
        }
        Some(c) => archive::scan_compressed(path, c)?,
    };
    if docker {
        Ok(Format::DockerArchive)
    } else if oci {
        Ok(Format::OciArchive)
    } else {
        Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            detail: "a tar archive without manifest.json (docker-archive) or index.json (OCI)"
                .into(),
        })
    }
}

/// Checks that `path` is a tar archive, plain or compressed with gzip or zstd (as
/// `docker load` reads them): `Ok(None)` plain, `Ok(Some(c))` compressed with `c`; else
/// an error that says what the file is.
fn check_archive(path: &Path) -> Result<Option<Compression>> {
    let mut head = [0u8; 512];
    let (mut f, _) = open::open_file(path)?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    match Compression::sniff(head) {
        Compression::None => {}
        c => return Ok(Some(c)),
    }
    if n < 512
        || head.get(USTAR_MAGIC_OFFSET..USTAR_MAGIC_OFFSET + USTAR_MAGIC.len()) != Some(USTAR_MAGIC)
    {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            detail: "not a tar archive (plain, gzip or zstd), OCI layout or docker-archive".into(),
        });
    }
    Ok(None)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Generic directory names of a layout (`skopeo copy … oci:img/oci`): the image is then
/// named after the directory above.
const GENERIC_LAYOUT_DIRS: [&str; 3] = ["oci", "layout", "image"];

/// The repository name for refs that are only a tag: the layout directory's name (its
/// parent's for a generic `oci/`), or the archive's stem without `.gz` / `.zst` /
/// `.tar` / `.oci` / `.docker`.
pub fn name_hint(path: &Path) -> Option<String> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut comps: Vec<String> = abs
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let mut name = comps.pop()?;
    if path.is_dir() {
        if GENERIC_LAYOUT_DIRS.contains(&name.to_lowercase().as_str())
            && let Some(parent) = comps.pop()
        {
            name = parent;
        }
    } else {
        for suffix in [
            ".gz",
            ".zst",
            ".zstd",
            ".tgz",
            ".tar",
            ".oci",
            ".docker",
            ".oci-archive",
            ".docker-archive",
        ] {
            if let Some(s) = name.strip_suffix(suffix)
                && !s.is_empty()
            {
                name = s.to_string();
            }
        }
    }
    reference::sanitize_repo_name(&name)
}

/// One layer to unpack.
#[derive(Debug, Clone)]
pub struct LayerPlan {
    /// Path of the blob within the image files.
    pub path: String,
    /// Digest of the blob as stored, when the source says (manifest, file name).
    pub digest: Option<Digest>,
    /// Size of the blob, when the source says.
    pub size: Option<u64>,
    /// The media type, when the source says (docker-archives do not: sniffed then).
    pub media_type: Option<String>,
    /// The sha256 of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// One image to load: everything read and checked except the layer contents.
pub struct ImagePlan {
    pub files: Arc<dyn ImageFiles>,
    /// The config blob, byte for byte; its digest is the image id.
    pub config_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
    /// The manifest, byte for byte, when the source has one.
    pub manifest_bytes: Option<Vec<u8>>,
    pub manifest_digest: Option<Digest>,
    pub manifest_media_type: Option<String>,
    /// Bottom first.
    pub layers: Vec<LayerPlan>,
    /// Names from the source (`org.opencontainers.image.ref.name`, `RepoTags`).
    pub names: Vec<Reference>,
    /// Where the image came from, for messages.
    pub origin: String,
}

/// Checks a config against its layers and returns the diff_ids, bottom first.
pub fn diff_ids(
    config: &ImageConfiguration,
    file: &str,
    layer_count: usize,
) -> Result<Vec<Digest>> {
    let invalid = |detail: String| Error::Invalid {
        file: file.to_string(),
        detail,
    };
    if config.rootfs().typ() != "layers" {
        return Err(invalid(format!(
            "rootfs.type is {:?}, expected \"layers\"",
            config.rootfs().typ()
        )));
    }
    let ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|s| Digest::parse(s).map_err(|e| invalid(format!("rootfs.diff_ids: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    if ids.len() != layer_count {
        return Err(invalid(format!(
            "rootfs.diff_ids lists {} layers but the manifest has {layer_count}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Parses a config blob.
pub fn parse_config(bytes: &[u8], file: &str) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| Error::json(file, e))
}

/// Names a `RepoTags` entry or ref name; tag-only names get the repository `hint`.
pub fn name_from_ref(name: &str, hint: Option<&str>) -> Option<Reference> {
    let is_tag_only = !name.contains('/') && !name.contains(':');
    let full = if is_tag_only {
        format!("{}:{name}", hint?)
    } else {
        name.to_string()
    };
    match Reference::parse(&full) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!("ignoring image name {name:?}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hints() {
        let d = tempfile::tempdir().unwrap();
        let oci = d.path().join("Busybox-ZSTD").join("oci");
        std::fs::create_dir_all(&oci).unwrap();
        assert_eq!(name_hint(&oci).as_deref(), Some("busybox-zstd"));
        assert_eq!(
            name_hint(Path::new("/nonexistent/alpine.oci.tar")).as_deref(),
            Some("alpine")
        );
        assert_eq!(
            name_hint(Path::new("/nonexistent/alpine.oci.tar.zst")).as_deref(),
            Some("alpine")
        );
    }

    #[test]
    fn parse_non_paths() {
        assert_eq!(Source::parse("busybox:latest").unwrap(), None);
        assert!(matches!(
            Source::parse("/nonexistent/x"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            Source::parse("oci:/nonexistent/x:latest"),
            Err(Error::NotFound(_))
        ));
    }
}
