//! Shared helpers of the integration tests. Every test binary includes them whole with
//! `mod common;` (what a binary leaves unused costs a type check, no code):
//! - here: the built binary, the shared fixtures, a temporary store per test,
//!   walking and comparing trees, and an in-code image builder (a compact list of entries
//!   → tar → gzip/zstd/plain blob → OCI layout or docker-archive) for edge cases no real
//!   tool produces;
//! - [`mount`]: layer directories built in code and `layerfs-overlay` mounts of them;
//! - [`lab`]: containers of a store mounted with `layerfs mount`;
//! - [`tools`]: other tools as oracles (Docker, skopeo, umoci);
//! - [`users`]: what a test needs of its host (root, FUSE, subordinate ids) and running
//!   commands as root or as another user.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod lab;
pub mod mount;
pub mod tools;
pub mod users;

pub use users::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The `layerfs` binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_layerfs"))
}

// ---------------------------------------------------------------- fixtures

/// `$LAYERFS_FIXTURES`, else `<crate>/../shared/fixtures`; fails loudly when missing.
pub fn fixtures() -> PathBuf {
    let p = std::env::var_os("LAYERFS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    assert!(
        p.join("busybox/oci/index.json").is_file(),
        "fixtures not found at {} (set LAYERFS_FIXTURES or run ../shared/scripts/make-fixtures.sh)",
        p.display()
    );
    p
}

/// How a test names a fixture's OCI layout to `load` or `mount`: `load` parses a bare
/// `PATH:TAG` and skopeo's transport spelling `oci:PATH:TAG` apart, and the tests use
/// both on purpose, so that both stay covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `PATH:TAG`
    Path,
    /// `oci:PATH:TAG`
    Oci,
}

/// The OCI layout of fixture image `image` (`busybox`, `busybox-zstd`…) at `tag`.
pub fn fixture_ref(image: &str, tag: &str, how: Spelling) -> String {
    let layout = fixtures().join(image).join("oci");
    match how {
        Spelling::Path => format!("{}:{tag}", layout.display()),
        Spelling::Oci => format!("oci:{}:{tag}", layout.display()),
    }
}

/// The busybox fixture at `tag` (`latest`, or a layer of it: `l1`, `l2`).
pub fn bb(tag: &str, how: Spelling) -> String {
    fixture_ref("busybox", tag, how)
}

/// sha256 hex of bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A store in a temporary directory.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Who runs `layerfs` on it: root (0), or a plain user whose store is rootless.
    pub uid: u32,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("store");
        TestStore { dir, root, uid: 0 }
    }

    /// A store that nobody runs `layerfs` on (a rootless store: owners in records).
    pub fn rootless() -> TestStore {
        let mut s = TestStore::new();
        std::os::unix::fs::chown(s.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        s.uid = NOBODY;
        s
    }

    /// A scratch path next to the store (for building images).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn cmd(&self) -> Command {
        let mut c = command_as(self.uid, bin());
        c.env("LAYERFS_ROOT", &self.root).env_remove("RUST_LOG");
        c
    }

    /// Runs `layerfs ARGS` against this store.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    /// Runs and asserts a clean failure (exit 1, no panic); returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "layerfs {args:?} should fail with exit 1:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "layerfs {args:?} panicked: {stderr}"
        );
        assert!(
            stderr.contains("layerfs: error: "),
            "no error message: {stderr}"
        );
        stderr
    }

    /// Loads and returns the image id (the last line of stdout).
    pub fn load(&self, source: &str) -> String {
        let out = self.ok(&["load", "-q", source]);
        let id = out.lines().last().unwrap_or_default().to_string();
        assert!(
            id.starts_with("sha256:") && id.len() == 71,
            "bad id line {id:?} in {out}"
        );
        id
    }

    /// `inspect` of one image as JSON.
    pub fn inspect(&self, image: &str) -> Value {
        let out = self.ok(&["inspect", image]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// The `diff/` dirs of an image's layers, bottom first.
    pub fn layer_dirs(&self, image: &str) -> Vec<PathBuf> {
        self.inspect(image)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| PathBuf::from(l["path"].as_str().unwrap()))
            .collect()
    }

    /// Names of the installed layers.
    pub fn layer_names(&self) -> Vec<String> {
        names(&self.root.join("layers"))
    }

    /// Everything in the store (path, type, size, mode), for before/after comparisons.
    pub fn listing(&self) -> BTreeMap<String, String> {
        listing(&self.root)
    }
}

/// Sorted entry names of a directory (empty when missing).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------- trees

/// Every entry below `root` (not `root` itself), depth first, a directory before what it
/// holds, each directory's entries in readdir's order: `f` gets its path relative to
/// `root`, its directory entry (`d_ino`, `d_type`) and its lstat, and says whether to go
/// on below it (a directory's entries are walked only when it says true). Any error,
/// `root` missing too, fails the test.
pub fn walk_tree(root: &Path, f: &mut dyn FnMut(&str, &fs::DirEntry, &fs::Metadata) -> bool) {
    fn walk(
        root: &Path,
        dir: &Path,
        f: &mut dyn FnMut(&str, &fs::DirEntry, &fs::Metadata) -> bool,
    ) {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if f(&rel, &e, &m) && m.is_dir() {
                walk(root, &p, f);
            }
        }
    }
    walk(root, root, f);
}

/// The first non-empty regular file below `dir`: at each level the files in byte order
/// of their names, then the directories' in the same order. None when there is none or
/// `dir` cannot be read.
pub fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in &entries {
        if e.file_type().ok()?.is_file() && e.metadata().ok()?.len() > 0 {
            return Some(e.path());
        }
    }
    entries
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| first_file(&e.path()))
}

/// Every path under `root` with its type, mode, size (lock files excluded: they are
/// created on first use and carry no state); nothing when `root` does not exist (a store
/// before its first use).
pub fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    walk_tree(root, &mut |rel, _, m| {
        if rel == "lock" || rel == "meta.lock" {
            return true;
        }
        let t = m.file_type();
        let kind = if t.is_dir() {
            "d"
        } else if t.is_symlink() {
            "l"
        } else if t.is_char_device() {
            "c"
        } else {
            "f"
        };
        let size = if t.is_file() { m.len() } else { 0 };
        out.insert(
            rel.to_string(),
            format!("{kind} {:o} {size}", m.mode() & 0o7777),
        );
        true
    });
    out
}

/// The shared fixtures' oracle manifest of a tree (`../shared/scripts/lib/tree-manifest.py`:
/// path, type, mode, owner, size, sha256, link target, rdev, hard-link group, xattrs; no
/// mtimes), one line per path, the root line and `excluded` paths left out.
pub fn manifest(dir: &Path, excluded: &[&str]) -> Vec<String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/lib/tree-manifest.py");
    let mut c = Command::new("python3");
    c.arg(&script);
    for e in excluded {
        c.arg("--exclude").arg(e);
    }
    let out = c.arg(dir).output().expect("python3 tree-manifest.py");
    assert!(
        out.status.success(),
        "tree-manifest.py {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(".\t"))
        .map(String::from)
        .collect()
}

/// Asserts two manifests are equal, printing only the lines that differ.
pub fn assert_same_tree(a: &[String], b: &[String], what: &str) {
    if a == b {
        return;
    }
    let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    panic!(
        "{what}: trees differ\nonly in the first:\n  {}\nonly in the second:\n  {}",
        only_a
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_b
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

// ---------------------------------------------------------------- image builder

/// Kinds of tar entry the builder writes.
#[derive(Debug, Clone)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

/// One tar entry; the name is raw bytes so hostile names (`../x`, `/abs`) can be written.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Extra PAX records (e.g. `SCHILY.xattr.user.x`, fractional `mtime`).
    pub pax: Vec<(String, Vec<u8>)>,
}

fn entry(name: &str, kind: Kind, mode: u32) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        pax: Vec::new(),
    }
}

pub fn file(name: &str, content: &[u8]) -> Entry {
    entry(name, Kind::File(content.to_vec()), 0o644)
}
pub fn dir(name: &str) -> Entry {
    entry(name, Kind::Dir, 0o755)
}
pub fn symlink(name: &str, target: &str) -> Entry {
    entry(name, Kind::Symlink(target.as_bytes().to_vec()), 0o777)
}
pub fn hardlink(name: &str, target: &str) -> Entry {
    entry(name, Kind::HardLink(target.as_bytes().to_vec()), 0o644)
}
pub fn fifo(name: &str) -> Entry {
    entry(name, Kind::Fifo, 0o644)
}
pub fn chardev(name: &str, major: u32, minor: u32) -> Entry {
    entry(name, Kind::Char(major, minor), 0o600)
}
pub fn blockdev(name: &str, major: u32, minor: u32) -> Entry {
    entry(name, Kind::Block(major, minor), 0o600)
}

impl Entry {
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Self {
        self.mtime = t;
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.pax
            .push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        self
    }
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where len counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Builds an uncompressed layer tar from entries, in order.
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        let link = match &e.kind {
            Kind::Symlink(t) | Kind::HardLink(t) => Some(t.clone()),
            _ => None,
        };
        if let Some(l) = &link
            && l.len() > 100
        {
            pax.push(("linkpath".into(), l.clone()));
        }
        if !pax.is_empty() {
            let data: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.as_ustar_mut().unwrap().name[..10].copy_from_slice(b"PaxHeaders");
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            let n = e.name.len().min(100);
            u.name[..n].copy_from_slice(&e.name[..n]);
            if let Some(l) = &link {
                let n = l.len().min(100);
                u.linkname[..n].copy_from_slice(&l[..n]);
            }
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        let (t, data): (tar::EntryType, &[u8]) = match &e.kind {
            Kind::File(c) => (tar::EntryType::Regular, c),
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::Symlink(_) => (tar::EntryType::Symlink, b""),
            Kind::HardLink(_) => (tar::EntryType::Link, b""),
            Kind::Fifo => (tar::EntryType::Fifo, b""),
            Kind::Char(..) => (tar::EntryType::Char, b""),
            Kind::Block(..) => (tar::EntryType::Block, b""),
        };
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        h.set_entry_type(t);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Layer compression for built images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    Plain,
    Gzip,
    Zstd,
}

impl Comp {
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::Plain => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::Plain => tar.to_vec(),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(tar, 1).unwrap(),
        }
    }
}

/// An image described in code.
pub struct ImageSpec {
    pub layers: Vec<Vec<u8>>,
    pub comp: Comp,
    /// Override of the config's diff_ids (to test mismatches).
    pub diff_ids: Option<Vec<String>>,
    pub history: Option<Value>,
    pub created: String,
}

impl ImageSpec {
    pub fn new(layers: Vec<Vec<Entry>>) -> ImageSpec {
        ImageSpec {
            layers: layers.iter().map(|l| layer_tar(l)).collect(),
            comp: Comp::Gzip,
            diff_ids: None,
            history: None,
            created: "2024-01-02T03:04:05Z".into(),
        }
    }

    pub fn comp(mut self, c: Comp) -> Self {
        self.comp = c;
        self
    }

    fn config(&self) -> Value {
        let diff_ids: Vec<String> = self.diff_ids.clone().unwrap_or_else(|| {
            self.layers
                .iter()
                .map(|t| format!("sha256:{}", sha256_hex(t)))
                .collect()
        });
        let history = self.history.clone().unwrap_or_else(|| {
            Value::Array(
                (0..self.layers.len())
                    .map(|i| json!({"created": self.created, "created_by": format!("layer {}", i + 1)}))
                    .collect(),
            )
        });
        json!({
            "created": self.created,
            "architecture": host_arch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        })
    }
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// What was written for an image.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub config_digest: String,
    pub manifest_digest: String,
    /// Blob digests (`sha256:…`), bottom first.
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl Built {
    /// Path of a blob in the layout.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.path
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    let p = dir.join("blobs/sha256");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Writes an OCI layout at `dir` holding `spec` tagged `tag`.
pub fn write_oci(dir: &Path, spec: &ImageSpec, tag: &str) -> Built {
    let blobs: Vec<Vec<u8>> = spec.layers.iter().map(|t| spec.comp.compress(t)).collect();
    write_oci_blobs(dir, spec, &blobs, tag)
}

/// As [`write_oci`] with the layer blobs already made (`spec.comp` names their media
/// type; `spec.diff_ids` must be set when `spec.layers` does not hold the tars).
pub fn write_oci_blobs(dir: &Path, spec: &ImageSpec, blobs: &[Vec<u8>], tag: &str) -> Built {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for blob in blobs {
        let d = write_blob(dir, blob);
        layers.push(json!({"mediaType": spec.comp.media_type(), "digest": d, "size": blob.len()}));
        layer_digests.push(d);
    }
    let config = serde_json::to_vec(&spec.config()).unwrap();
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = write_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    Built {
        path: dir.to_path_buf(),
        config_digest,
        manifest_digest,
        layer_digests,
        diff_ids: spec.diff_ids.clone().unwrap_or_else(|| {
            spec.layers
                .iter()
                .map(|t| format!("sha256:{}", sha256_hex(t)))
                .collect()
        }),
    }
}

/// A gzip'd layer holding one file of `size` zero bytes (a multiple of 1 MiB) and a small
/// file after it, made cheaply: gzip members of a 1 MiB chunk, repeated (gzip readers
/// take concatenated members). Returns (blob, diff_id).
pub fn big_zero_layer(size: usize) -> (Vec<u8>, String) {
    const CHUNK: usize = 1 << 20;
    assert!(size % CHUNK == 0);
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    let head = h.as_bytes().to_vec();
    let zeros = vec![0u8; CHUNK];
    let tail = layer_tar(&[file("after", b"x")]);
    let mut hasher = Sha256::new();
    hasher.update(&head);
    for _ in 0..size / CHUNK {
        hasher.update(&zeros);
    }
    hasher.update(&tail);
    let gz_zeros = Comp::Gzip.compress(&zeros);
    let mut blob = Comp::Gzip.compress(&head);
    for _ in 0..size / CHUNK {
        blob.extend_from_slice(&gz_zeros);
    }
    blob.extend_from_slice(&Comp::Gzip.compress(&tail));
    (blob, format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Writes a legacy docker-archive (`manifest.json`, `<hex>.json`, `<n>/layer.tar`).
pub fn write_docker_archive(path: &Path, spec: &ImageSpec, repo_tags: &[&str]) -> Built {
    let config = serde_json::to_vec(&spec.config()).unwrap();
    let config_hex = sha256_hex(&config);
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(&format!("{config_hex}.json"), &config);
    let mut layer_paths = Vec::new();
    let mut layer_digests = Vec::new();
    for (i, t) in spec.layers.iter().enumerate() {
        let blob = spec.comp.compress(t);
        let p = format!("layer{i}/layer.tar");
        add(&p, &blob);
        layer_paths.push(p);
        layer_digests.push(format!("sha256:{}", sha256_hex(&blob)));
    }
    let manifest = json!([{"Config": format!("{config_hex}.json"), "RepoTags": repo_tags, "Layers": layer_paths}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap().flush().unwrap();
    Built {
        path: path.to_path_buf(),
        config_digest: format!("sha256:{config_hex}"),
        manifest_digest: String::new(),
        layer_digests,
        diff_ids: spec
            .layers
            .iter()
            .map(|t| format!("sha256:{}", sha256_hex(t)))
            .collect(),
    }
}

/// Builds a one-layer OCI image from entries at `dir` and returns it.
pub fn one_layer(dir: &Path, entries: Vec<Entry>) -> Built {
    write_oci(dir, &ImageSpec::new(vec![entries]), "latest")
}
