//! Unbounded and hostile input, through the real binary (issue 13, defects 5 and 7): GNU
//! sparse files keep their holes and a layer's apparent size is bounded; huge GNU long
//! names and PAX headers are refused before they are read (checked on the children's peak
//! RSS); owners beyond 32 bits are refused; FIFOs anywhere in a source never block `load`
//! or `mount`; symlinks leading out of a source directory are never followed, and no
//! message tells a digest or size of what they point at. Every refusal exits 1 with a
//! message naming the file or layer and leaves the store as it was.
//!
//! Peak RSS is read with `getrusage(RUSAGE_CHILDREN)`: the largest of every child this
//! test binary has waited for, so every `layerfs` run here must stay under the bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest as _, Sha256};

/// Most any `layerfs` child of this test binary may use (a load of a small image takes a
/// few MiB; the old code needed more than the 512 MiB record it was refusing).
const MAX_CHILD_RSS_KIB: i64 = 128 << 10;
/// A command that should fail at once gets this long before it counts as hung.
const HANG: Duration = Duration::from_secs(30);

fn seeded() -> TestStore {
    let s = TestStore::new();
    let b = one_layer(
        &s.scratch("seed"),
        vec![dir("etc"), file("etc/seed", b"seed")],
    );
    s.load(&b.path.display().to_string());
    s
}

/// Loads `source` (extra `args` first), expects exit 1 with each of `needles` in the
/// message, no panic, an unchanged store, and a small child.
fn refused(s: &TestStore, args: &[&str], source: &str, needles: &[&str]) -> String {
    let before = s.listing();
    let mut all = vec!["load"];
    all.extend_from_slice(args);
    all.push(source);
    let out = run_bounded(s.cmd().args(&all));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{all:?} should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("layerfs: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
    assert_eq!(before, s.listing(), "store changed by a failed load: {err}");
    check_child_rss();
    err
}

/// Runs a command with a deadline: a hang fails the test (the child is killed first).
fn run_bounded(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, HANG)
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command hung for {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child killed when dropped (unless taken out first).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn check_child_rss() {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let kib = ru.max_rss();
    assert!(
        kib < MAX_CHILD_RSS_KIB,
        "a layerfs child peaked at {kib} KiB of RSS (bound {MAX_CHILD_RSS_KIB} KiB)"
    );
}

// ------------------------------------------------------------------ raw tar crafting

fn gnu_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A gzip'd layer blob made of `head`, then `fill` repeated `mib` times (1 MiB each,
/// compressed once and repeated as gzip members), then `tail`; and its diff_id.
fn repeated_blob(head: &[u8], fill: u8, mib: usize, tail: &[u8]) -> (Vec<u8>, String) {
    let chunk = vec![fill; 1 << 20];
    let mut hasher = Sha256::new();
    hasher.update(head);
    for _ in 0..mib {
        hasher.update(&chunk);
    }
    hasher.update(tail);
    let gz_chunk = Comp::Gzip.compress(&chunk);
    let mut blob = Comp::Gzip.compress(head);
    for _ in 0..mib {
        blob.extend_from_slice(&gz_chunk);
    }
    blob.extend_from_slice(&Comp::Gzip.compress(tail));
    (blob, format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// An OCI layout at `dir` with one layer given as (blob, diff_id).
fn layout_with_blob(dir: &Path, blob: Vec<u8>, diff_id: String) -> Built {
    let mut spec = ImageSpec::new(vec![vec![]]);
    spec.diff_ids = Some(vec![diff_id]);
    write_oci_blobs(dir, &spec, &[blob], "latest")
}

/// A one-member layer holding an extension record (`L` long name, `x` PAX) of `mib` MiB
/// of 'a', followed by a small file: every byte really there, so reading the record
/// whole costs its size in memory.
fn huge_record_layer(kind: tar::EntryType, mib: usize) -> (Vec<u8>, String) {
    let size = (mib as u64) << 20;
    let head = gnu_header("././@LongLink", kind, size).as_bytes().to_vec();
    let mut tail = Vec::new();
    tail.extend_from_slice(gnu_header("f", tar::EntryType::Regular, 0).as_bytes());
    tail.extend_from_slice(&[0u8; 1024]);
    repeated_blob(&head, b'a', mib, &tail)
}

/// A GNU sparse member: `real` bytes apparent, `data` at its very end.
fn sparse_layer(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
    let mut h = gnu_header(name, tar::EntryType::GNUSparse, data.len() as u64);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(real - data.len() as u64);
        g.sparse[0].set_length(data.len() as u64);
        g.set_real_size(real);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

fn sparse_image(dir: &Path, name: &str, real: u64) -> Built {
    let tar = sparse_layer(name, real, &[b'z'; 512]);
    let diff_id = format!("sha256:{}", sha256_hex(&tar));
    layout_with_blob(dir, Comp::Gzip.compress(&tar), diff_id)
}

// ------------------------------------------------------------------ sparse files, size bound

#[test]
fn gnu_sparse_files_keep_their_holes() {
    let s = seeded();
    let real = 2u64 << 30;
    let b = sparse_image(&s.scratch("holes"), "holes", real);
    let blob_len = std::fs::metadata(b.blob(&b.layer_digests[0]))
        .unwrap()
        .len();
    assert!(blob_len < 200, "the blob is tiny ({blob_len} bytes)");
    let start = Instant::now();
    let out = run_bounded(s.cmd().args(["load", "-q", &b.path.display().to_string()]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    check_child_rss();
    let dirs = s.layer_dirs("holes:latest");
    let p = dirs[0].join("holes");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.len(), real);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} bytes allocated: the holes were written as zeros",
        m.blocks() * 512
    );
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&p).unwrap();
    f.seek(SeekFrom::Start(real - 1024)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(&tail[..512], &[0u8; 512][..]);
    assert_eq!(&tail[512..], &[b'z'; 512][..]);
    // The recorded size is the apparent one.
    assert_eq!(
        s.inspect("holes:latest")["layers"][0]["unpacked_size"],
        real
    );
}

/// Sparse archives made by GNU tar, in each of its sparse formats (old GNU; PAX 0.0, 0.1
/// and 1.0), unpack to the same file, holes kept.
#[test]
fn gnu_tar_sparse_formats_keep_their_holes() {
    let s = seeded();
    let work = s.scratch("gnutar");
    let f = work.join("f");
    let size: u64 = 3 << 20;
    {
        use std::io::{Seek, SeekFrom};
        let mut fh = std::fs::File::create(&f).unwrap();
        fh.set_len(size).unwrap();
        fh.seek(SeekFrom::Start(1 << 20)).unwrap();
        fh.write_all(b"middle").unwrap();
        fh.seek(SeekFrom::Start(size - 3)).unwrap();
        fh.write_all(b"end").unwrap();
    }
    for (i, args) in [
        vec!["--format=gnu"],
        vec!["--format=posix", "--sparse-version=0.0"],
        vec!["--format=posix", "--sparse-version=0.1"],
        vec!["--format=posix", "--sparse-version=1.0"],
    ]
    .into_iter()
    .enumerate()
    {
        let tar_path = work.join(format!("{i}.tar"));
        let st = Command::new("tar")
            .args(&args)
            .args(["--sparse", "-cf"])
            .arg(&tar_path)
            .arg("-C")
            .arg(&work)
            .arg("f")
            .status()
            .unwrap();
        assert!(st.success(), "GNU tar {args:?}");
        let tar = std::fs::read(&tar_path).unwrap();
        let name = format!("gnutar{i}");
        let mut spec = ImageSpec::new(vec![vec![]]);
        spec.layers = vec![tar];
        let b = write_oci(&s.scratch(&name), &spec.comp(Comp::Plain), "latest");
        s.load(&b.path.display().to_string());
        let p = s.layer_dirs(&format!("{name}:latest"))[0].join("f");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), size, "{args:?}");
        assert!(
            m.blocks() * 512 <= 64 << 10,
            "{args:?}: {} blocks",
            m.blocks()
        );
        let got = std::fs::read(&p).unwrap();
        assert_eq!(&got[1 << 20..(1 << 20) + 6], b"middle", "{args:?}");
        assert_eq!(&got[got.len() - 3..], b"end", "{args:?}");
        assert_eq!(got.iter().filter(|&&b| b != 0).count(), 9, "{args:?}");
    }
    check_child_rss();
}

#[test]
fn layer_size_is_bounded_by_default_and_can_be_raised() {
    let s = seeded();
    // 100 GiB apparent, over the 64 GiB default: refused before anything is written.
    let b = sparse_image(&s.scratch("huge"), "huge", 100 << 30);
    let src = b.path.display().to_string();
    refused(
        &s,
        &[],
        &src,
        &[
            &b.layer_digests[0],
            "\"huge\"",
            "more than 68719476736 bytes",
            "--max-layer-size",
        ],
    );
    // Raised: it loads (as holes).
    let out = run_bounded(
        s.cmd()
            .args(["load", "-q", "--max-layer-size", "200G", &src]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = s.layer_dirs("huge:latest")[0].join("huge");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 100 << 30);
    check_child_rss();
}

#[test]
fn layer_size_bound_counts_real_files_and_env_and_mount() {
    let s = seeded();
    let b = one_layer(
        &s.scratch("two-mib"),
        vec![file("a", &[1u8; 1 << 20]), file("b", &[2u8; 1 << 20])],
    );
    let src = b.path.display().to_string();
    let err = refused(
        &s,
        &["--max-layer-size", "1536K"],
        &src,
        &["\"b\"", "more than 1572864 bytes"],
    );
    assert!(err.contains(&b.layer_digests[0]), "{err}");
    // The environment variable, for `load` and for what `mount` loads.
    let before = s.listing();
    let out = run_bounded(
        s.cmd()
            .env("LAYERFS_MAX_LAYER_SIZE", "1M")
            .args(["load", &src]),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 1048576 bytes"));
    let mnt = s.scratch("mnt");
    let out = run_bounded(s.cmd().env("LAYERFS_MAX_LAYER_SIZE", "1M").args([
        "mount",
        &format!("oci:{src}"),
        &mnt.display().to_string(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("more than 1048576 bytes"), "{err}");
    assert_eq!(before, s.listing());
    // A bad value is a usage error, not a silent default.
    let out = run_bounded(s.cmd().args(["load", "--max-layer-size", "lots", &src]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a size"));
    // At the default it loads.
    s.load(&src);
}

// ------------------------------------------------------------------ names and PAX records

#[test]
fn huge_gnu_long_name_is_refused_before_it_is_read() {
    let s = seeded();
    let (blob, diff_id) = huge_record_layer(tar::EntryType::GNULongName, 512);
    let b = layout_with_blob(&s.scratch("longname"), blob, diff_id);
    refused(
        &s,
        &[],
        &b.path.display().to_string(),
        &[
            &b.layer_digests[0],
            "tar header at byte 0",
            "GNU long name record of 536870912 bytes is over the limit of 65537 bytes",
        ],
    );
}

#[test]
fn huge_gnu_long_link_is_refused_before_it_is_read() {
    let s = seeded();
    let (blob, diff_id) = huge_record_layer(tar::EntryType::GNULongLink, 256);
    let b = layout_with_blob(&s.scratch("longlink"), blob, diff_id);
    refused(
        &s,
        &[],
        &b.path.display().to_string(),
        &[
            &b.layer_digests[0],
            "GNU long link record of 268435456 bytes",
        ],
    );
}

#[test]
fn huge_pax_header_is_refused_before_it_is_read() {
    let s = seeded();
    let (blob, diff_id) = huge_record_layer(tar::EntryType::XHeader, 512);
    let b = layout_with_blob(&s.scratch("pax"), blob, diff_id);
    refused(
        &s,
        &[],
        &b.path.display().to_string(),
        &[
            &b.layer_digests[0],
            "PAX header of 536870912 bytes is over the limit of 1048576 bytes",
        ],
    );
}

#[test]
fn names_over_the_limit_are_refused_and_deep_paths_load() {
    let s = seeded();
    // Within the PAX limit, over the name limit (64 KiB).
    let long = "d/".repeat(33000) + "f";
    let b = one_layer(
        &s.scratch("namemax"),
        vec![file("x", b"x").pax("path", long.as_bytes())],
    );
    refused(
        &s,
        &[],
        &b.path.display().to_string(),
        &[
            &b.layer_digests[0],
            "name of 66001 bytes is over the limit of 65536 bytes",
        ],
    );
    // A symlink target longer than PATH_MAX (the kernel could not store it).
    let b = one_layer(
        &s.scratch("linkmax"),
        vec![symlink("l", "t").pax("linkpath", "t".repeat(5000).as_bytes())],
    );
    refused(
        &s,
        &[],
        &b.path.display().to_string(),
        &["link target of 5000 bytes is longer than PATH_MAX"],
    );
    // A path longer than PATH_MAX (a tree 2100 levels deep) is kept, and a hard link to
    // it: the unpacker resolves it a piece at a time.
    let deep = "d/".repeat(2100) + "f";
    let b = one_layer(
        &s.scratch("pathok"),
        vec![
            file("x", b"deep").pax("path", deep.as_bytes()),
            hardlink("h", "x").pax("linkpath", deep.as_bytes()),
        ],
    );
    s.load(&b.path.display().to_string());
}

// ------------------------------------------------------------------ owners

#[test]
fn owners_beyond_32_bits_are_refused() {
    for (what, entry) in [
        (
            "uid 4294967296",
            file("suid", b"x").mode(0o4755).owner(1 << 32, 0),
        ),
        (
            "gid 4294967296",
            file("sgid", b"x").mode(0o2755).owner(0, 1 << 32),
        ),
        (
            "uid 4294967296",
            file("pax", b"x").mode(0o4755).pax("uid", b"4294967296"),
        ),
        (
            "uid 4294967295",
            file("minus1", b"x")
                .mode(0o4755)
                .owner(u64::from(u32::MAX), 0),
        ),
        (
            "gid 18446744073709551615",
            dir("d").pax("gid", b"18446744073709551615"),
        ),
    ] {
        let s = seeded();
        let b = one_layer(&s.scratch("owners"), vec![entry]);
        refused(
            &s,
            &[],
            &b.path.display().to_string(),
            &[&b.layer_digests[0], what, "out of range"],
        );
    }
    // The largest valid id is kept.
    let s = seeded();
    let b = one_layer(
        &s.scratch("maxid"),
        vec![file("f", b"x").owner(u64::from(u32::MAX) - 1, 7)],
    );
    s.load(&b.path.display().to_string());
    let m = std::fs::metadata(s.layer_dirs("maxid:latest")[0].join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (u32::MAX - 1, 7));
}

// ------------------------------------------------------------------ FIFOs in sources

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn fifos_in_a_source_never_block() {
    require_root("a seeded store owned by root");
    let s = seeded();
    let img = || {
        let d = tempfile::tempdir_in(s.dir.path()).unwrap().keep();
        let b = one_layer(&d, vec![file("f", b"x")]);
        (b.path.display().to_string(), b)
    };
    // oci-layout
    let (src, b) = img();
    mkfifo(&b.path.join("oci-layout"));
    refused(&s, &[], &src, &["oci-layout", "is a fifo", "refused"]);
    // index.json
    let (src, b) = img();
    mkfifo(&b.path.join("index.json"));
    refused(&s, &[], &src, &["index.json", "is a fifo"]);
    // the config blob
    let (src, b) = img();
    mkfifo(&b.blob(&b.config_digest));
    refused(&s, &[], &src, &[&b.config_digest[7..], "is a fifo"]);
    // the manifest
    let (src, b) = img();
    mkfifo(&b.blob(&b.manifest_digest));
    refused(&s, &[], &src, &[&b.manifest_digest[7..], "is a fifo"]);
    // a layer blob: named with its layer
    let (src, b) = img();
    mkfifo(&b.blob(&b.layer_digests[0]));
    refused(
        &s,
        &[],
        &src,
        &[&format!("layer {}", b.layer_digests[0]), "is a fifo"],
    );
    // the source itself
    let fifo = s.dir.path().join("image.tar");
    mkfifo(&fifo);
    refused(&s, &[], &fifo.display().to_string(), &["is a fifo"]);
    // an unpacked docker-archive whose config is a fifo
    let arch = s.dir.path().join("d.tar");
    let built = write_docker_archive(
        &arch,
        &ImageSpec::new(vec![vec![file("f", b"x")]]),
        &["x/y:z"],
    );
    let ddir = s.scratch("docker-dir");
    assert!(
        Command::new("tar")
            .args(["-xf", &arch.display().to_string(), "-C"])
            .arg(&ddir)
            .status()
            .unwrap()
            .success()
    );
    mkfifo(&ddir.join(format!("{}.json", &built.config_digest[7..])));
    refused(&s, &[], &ddir.display().to_string(), &["is a fifo"]);
}

/// `mount oci:DIR` of a source with a FIFO fails at once, so `prune` (which needs the
/// store lock exclusive) is never held up behind it.
#[test]
fn mount_of_a_fifo_source_does_not_hold_the_store() {
    let s = seeded();
    let b = one_layer(&s.scratch("img"), vec![file("f", b"x")]);
    mkfifo(&b.blob(&b.config_digest));
    let mnt = s.scratch("mnt");
    // Killed if the test fails before it is waited for (a hung mount must not outlive it).
    let mut mount = KillOnDrop(Some(
        s.cmd()
            .args([
                "mount",
                &format!("oci:{}", b.path.display()),
                &mnt.display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    std::thread::sleep(Duration::from_millis(500));
    let prune = run_bounded(s.cmd().arg("prune"));
    assert!(
        prune.status.success(),
        "prune: {}",
        String::from_utf8_lossy(&prune.stderr)
    );
    let out = wait_bounded(mount.0.take().unwrap(), HANG);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a fifo"), "{err}");
}

// ------------------------------------------------------------------ symlinks out of a source

/// A host file the caller of a load (say, a user preparing a layout for root) must never
/// get into the store, nor learn the digest or size of.
fn secret(s: &TestStore) -> (std::path::PathBuf, String, String) {
    let p = s.dir.path().join("secret");
    let body = b"root:$6$very-secret-hash:19000:0:99999:7:::\n".repeat(7);
    std::fs::File::create(&p).unwrap().write_all(&body).unwrap();
    (p, sha256_hex(&body), body.len().to_string())
}

fn symlink_to(target: &Path, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn symlinks_out_of_a_layout_are_never_followed() {
    let s = seeded();
    let (secret, secret_digest, secret_size) = secret(&s);
    let img = || {
        let d = tempfile::tempdir_in(s.dir.path()).unwrap().keep();
        one_layer(&d, vec![file("f", b"x")])
    };
    let check = |src: &Path, names: &str| {
        let err = refused(
            &s,
            &[],
            &src.display().to_string(),
            &[names, "symlink that leads out of the image directory"],
        );
        assert!(!err.contains(&secret_digest), "leaks the digest: {err}");
        assert!(!err.contains(&secret_size), "leaks the size: {err}");
        assert!(!err.contains("secret-hash"), "{err}");
    };
    // Absolute and relative links, at every file a load reads.
    let b = img();
    symlink_to(&secret, &b.blob(&b.layer_digests[0]));
    check(&b.path, &format!("layer {}", b.layer_digests[0]));
    let b = img();
    symlink_to(Path::new("../../../secret"), &b.blob(&b.config_digest));
    check(&b.path, &b.config_digest[7..]);
    let b = img();
    symlink_to(&secret, &b.blob(&b.manifest_digest));
    check(&b.path, &b.manifest_digest[7..]);
    let b = img();
    symlink_to(&secret, &b.path.join("index.json"));
    check(&b.path, "index.json");
    let b = img();
    symlink_to(&secret, &b.path.join("oci-layout"));
    check(&b.path, "oci-layout");
    // A whole directory of the layout linked elsewhere.
    let b = img();
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::rename(b.path.join("blobs"), &elsewhere).unwrap();
    symlink_to(&elsewhere, &b.path.join("blobs"));
    check(&b.path, "blobs/sha256");
    // Symlinks that stay inside the layout are fine.
    let b = img();
    let blob = b.blob(&b.layer_digests[0]);
    std::fs::rename(&blob, b.path.join("layer.tar.gz")).unwrap();
    symlink_to(Path::new("../../layer.tar.gz"), &blob);
    s.load(&b.path.display().to_string());
}

#[test]
fn symlinks_out_of_a_docker_archive_directory_are_never_followed() {
    let s = seeded();
    let (secret, secret_digest, _) = secret(&s);
    let arch = s.dir.path().join("d.tar");
    write_docker_archive(
        &arch,
        &ImageSpec::new(vec![vec![file("f", b"x")]]),
        &["x/y:z"],
    );
    let ddir = s.scratch("docker-dir");
    assert!(
        Command::new("tar")
            .args(["-xf", &arch.display().to_string(), "-C"])
            .arg(&ddir)
            .status()
            .unwrap()
            .success()
    );
    symlink_to(&secret, &ddir.join("layer0/layer.tar"));
    let err = refused(
        &s,
        &[],
        &ddir.display().to_string(),
        &["layer0/layer.tar", "leads out of the image directory"],
    );
    assert!(!err.contains(&secret_digest), "{err}");
}
