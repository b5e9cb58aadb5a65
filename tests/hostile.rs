//! Bad and hostile input: every case fails with exit 1, a message naming the layer and
//! the entry (or the file), and leaves the store exactly as it was. Also the unpack rules
//! for odd but legal layers (same-layer whiteouts, duplicates, devices, PAX times).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::*;

/// A store that already holds an image, so "unchanged" is a real comparison.
fn seeded() -> TestStore {
    seeded_as(TestStore::new())
}

/// `s`, holding an image.
fn seeded_as(s: TestStore) -> TestStore {
    let b = one_layer(
        &s.scratch("seed"),
        vec![dir("etc"), file("etc/seed", b"seed")],
    );
    s.load(&b.path.display().to_string());
    s
}

/// Loads `source`, expects a failure whose message contains each of `needles`, and checks
/// that the store did not change.
fn refused(s: &TestStore, source: &Path, needles: &[&str]) -> String {
    let before = s.listing();
    let err = s.fail(&["load", &source.display().to_string()]);
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
    assert_eq!(before, s.listing(), "store changed by a failed load: {err}");
    err
}

/// A one-layer image of `entries`; refused, naming its layer digest and `entry`, by a
/// rootful store and by a rootless one (a plain user's: its unpack keeps owners and
/// devices in records, another path through the unpacker).
fn hostile(entries: Vec<Entry>, entry: &str, reason: &str) {
    for s in [seeded(), seeded_as(TestStore::rootless())] {
        let b = one_layer(&s.scratch("bad"), entries.clone());
        let err = refused(&s, &b.path, &[&b.layer_digests[0], entry, reason]);
        assert!(err.contains("layer sha256:"), "{err}");
    }
}

#[test]
fn dotdot_escape() {
    hostile(
        vec![file("../escaped", b"x")],
        "../escaped",
        "escapes the layer",
    );
    hostile(
        vec![dir("a"), file("a/../../escaped", b"x")],
        "a/../../escaped",
        "escapes the layer",
    );
}

#[test]
fn write_through_planted_symlink() {
    for s in [seeded(), seeded_as(TestStore::rootless())] {
        let outside = s.scratch("outside");
        // writable by the rootless store's user too: only the unpacker's rules stop it
        std::os::unix::fs::chown(&outside, Some(s.uid), Some(s.uid)).unwrap();
        let b = one_layer(
            &s.scratch("bad"),
            vec![
                symlink("link", &outside.display().to_string()),
                file("link/pwned", b"x"),
            ],
        );
        refused(&s, &b.path, &["link/pwned", "symlink", &b.layer_digests[0]]);
        assert!(!outside.join("pwned").exists(), "wrote through the symlink");
    }
    // Also a symlink to a directory inside the layer: still refused.
    hostile(
        vec![dir("d"), symlink("l", "d"), file("l/x", b"x")],
        "l/x",
        "symlink",
    );
    // And a relative symlink climbing out, used as a parent of a directory entry.
    hostile(
        vec![symlink("up", "../../.."), dir("up/tmp")],
        "up/tmp",
        "symlink",
    );
}

#[test]
fn hard_links_must_stay_inside() {
    hostile(
        vec![hardlink("h", "../../../../etc/passwd")],
        "\"h\"",
        "escapes the layer",
    );
    hostile(vec![hardlink("h", "missing")], "\"h\"", "does not exist");
    hostile(
        vec![dir("d"), hardlink("h", "d")],
        "\"h\"",
        "is a directory",
    );
    // Through a symlink planted in the layer.
    hostile(
        vec![symlink("etc", "/etc"), hardlink("h", "etc/passwd")],
        "\"h\"",
        "symlink",
    );
}

#[test]
fn bad_whiteouts() {
    hostile(vec![file(".wh.", b"")], ".wh.", "invalid whiteout");
    hostile(
        vec![dir("d"), file("d/.wh.", b"")],
        "d/.wh.",
        "invalid whiteout",
    );
    hostile(
        vec![file(".wh.gone", b""), file(".wh.gone/child", b"x")],
        ".wh.gone/child",
        "whiteout",
    );
    hostile(
        vec![file(".wh..wh..opq/x", b"")],
        ".wh..wh..opq/x",
        "whiteout",
    );
}

#[test]
fn absolute_names_are_contained() {
    let s = TestStore::new();
    let host = s.scratch("host");
    let abs = host.join("abs-file");
    let b = one_layer(
        &s.scratch("img"),
        vec![file(&abs.display().to_string(), b"x")],
    );
    let id = s.load(&b.path.display().to_string());
    assert!(!abs.exists(), "an absolute name was written on the host");
    let layer = &s.layer_dirs(&id)[0];
    let inside = layer.join(abs.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside).unwrap(), b"x");
}

#[test]
fn digest_mismatch_of_blob() {
    let s = seeded();
    let b = one_layer(&s.scratch("bad"), vec![file("a", b"original")]);
    // A valid layer, but not the one the manifest names.
    let other = Comp::Gzip.compress(&layer_tar(&[file("a", b"tampered")]));
    std::fs::write(b.blob(&b.layer_digests[0]), other).unwrap();
    refused(&s, &b.path, &[&b.layer_digests[0], "digest"]);
}

#[test]
fn digest_mismatch_of_diff_id() {
    let s = seeded();
    let mut spec = ImageSpec::new(vec![vec![file("a", b"a")]]);
    spec.diff_ids = Some(vec![format!("sha256:{}", "ab".repeat(32))]);
    let b = write_oci(&s.scratch("bad"), &spec, "latest");
    refused(&s, &b.path, &[&b.layer_digests[0], "diff_id", "abababab"]);
}

#[test]
fn digest_mismatch_with_trailing_bytes_after_the_tar() {
    // Bytes after the end-of-archive marker still count for the diff_id.
    let s = seeded();
    let tar = layer_tar(&[file("a", b"a")]);
    let mut spec = ImageSpec::new(vec![]);
    let mut padded = tar.clone();
    padded.extend_from_slice(b"trailing garbage");
    spec.layers = vec![padded];
    spec.diff_ids = Some(vec![format!("sha256:{}", sha256_hex(&tar))]);
    let b = write_oci(&s.scratch("bad"), &spec, "latest");
    refused(&s, &b.path, &["diff_id", &b.layer_digests[0]]);
}

#[test]
fn missing_blob() {
    let s = seeded();
    let b = one_layer(&s.scratch("bad"), vec![file("a", b"a")]);
    std::fs::remove_file(b.blob(&b.layer_digests[0])).unwrap();
    refused(&s, &b.path, &[&b.layer_digests[0], "missing"]);
    let b = one_layer(&s.scratch("bad2"), vec![file("a", b"a")]);
    std::fs::remove_file(b.blob(&b.config_digest)).unwrap();
    refused(&s, &b.path, &["config", &b.config_digest, "missing"]);
}

#[test]
fn bad_json() {
    let s = seeded();
    let b = one_layer(&s.scratch("bad"), vec![file("a", b"a")]);
    std::fs::write(b.path.join("index.json"), b"{not json").unwrap();
    refused(&s, &b.path, &["index.json", "invalid JSON"]);
    let bad = s.scratch("d2").join("d2.tar");
    {
        let mut out = tar::Builder::new(std::fs::File::create(&bad).unwrap());
        let mut h = tar::Header::new_ustar();
        h.set_path("manifest.json").unwrap();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        out.append(&h, &b"[{,}]"[..]).unwrap();
        out.finish().unwrap();
    }
    refused(&s, &bad, &["manifest.json", "invalid JSON"]);
}

#[test]
fn unknown_formats_and_missing_paths() {
    let s = seeded();
    let d = s.scratch("empty-dir");
    refused(&s, &d, &["unknown image format"]);
    let f = s.scratch("f").join("random.tar");
    std::fs::write(&f, vec![7u8; 4096]).unwrap();
    refused(&s, &f, &["unknown image format", "not a tar"]);
    let gz = s.scratch("g").join("img.tar");
    std::fs::write(&gz, Comp::Gzip.compress(b"whatever")).unwrap();
    refused(&s, &gz, &["compressed"]);
    let before = s.listing();
    let err = s.fail(&["load", "/nonexistent/image/dir"]);
    assert!(
        err.contains("/nonexistent/image/dir") && err.contains("no such file"),
        "{err}"
    );
    let err = s.fail(&["load", "oci:/nonexistent/x:latest"]);
    assert!(err.contains("no such file"), "{err}");
    assert_eq!(before, s.listing());
}

#[test]
fn unknown_references() {
    let s = seeded();
    for args in [
        vec!["inspect", "nosuchimage"],
        vec!["history", "nosuchimage:v9"],
        vec!["rmi", "nosuchimage"],
        vec!["inspect", "0123456789ab"],
    ] {
        let err = s.fail(&args);
        assert!(err.contains("unknown image"), "{args:?}: {err}");
    }
    let err = s.fail(&["inspect", "Not_A_Valid/Name"]);
    assert!(err.contains("invalid reference"), "{err}");
}

#[test]
fn unsupported_media_type() {
    let s = seeded();
    let b = one_layer(&s.scratch("bad"), vec![file("a", b"a")]);
    let mpath = b.blob(&b.manifest_digest);
    let m = std::fs::read_to_string(&mpath).unwrap().replace(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    );
    // Re-home the manifest under its new digest.
    let hex = sha256_hex(m.as_bytes());
    std::fs::write(b.path.join("blobs/sha256").join(&hex), &m).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = format!("sha256:{hex}").into();
    index["manifests"][0]["size"] = m.len().into();
    std::fs::write(
        b.path.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    refused(&s, &b.path, &["media type", "non-distributable"]);
}

#[test]
fn same_layer_whiteout_rules() {
    require_root("kernel-format whiteouts (char 0/0, trusted.overlay.opaque)");
    let s = TestStore::new();
    let b = one_layer(
        &s.scratch("img"),
        vec![
            // A name both deleted and created: kept, and a directory becomes opaque.
            file(".wh.keep-file", b""),
            file("keep-file", b"kept"),
            dir("keep-dir"),
            file("keep-dir/x", b"x"),
            file(".wh.keep-dir", b""),
            // A whiteout whose directory exists only implicitly.
            file("implicit/.wh.gone", b""),
            // The opaque marker before its directory's entry.
            file("late/.wh..wh..opq", b""),
            dir("late").mode(0o750),
            // A plain whiteout.
            file(".wh.deleted", b""),
            // AUFS metadata is skipped.
            file(".wh..wh.plnk/123.456", b"x"),
        ],
    );
    let id = s.load(&b.path.display().to_string());
    let l = &s.layer_dirs(&id)[0];
    let opaque = |p: &Path| {
        let o = Command::new("getfattr")
            .args([
                "--absolute-names",
                "--only-values",
                "-n",
                "trusted.overlay.opaque",
            ])
            .arg(p)
            .output()
            .unwrap();
        o.stdout == b"y"
    };
    assert_eq!(std::fs::read(l.join("keep-file")).unwrap(), b"kept");
    assert!(opaque(&l.join("keep-dir")), "keep-dir not opaque");
    assert!(!opaque(&l.join("implicit")));
    let m = std::fs::symlink_metadata(l.join("implicit/gone")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert!(opaque(&l.join("late")), "late not opaque");
    assert_eq!(
        std::fs::metadata(l.join("late")).unwrap().mode() & 0o7777,
        0o750
    );
    let m = std::fs::symlink_metadata(l.join("deleted")).unwrap();
    assert!(m.file_type().is_char_device() && m.rdev() == 0);
    assert!(!l.join(".wh..wh.plnk").exists());
    assert_eq!(
        names(l),
        ["deleted", "implicit", "keep-dir", "keep-file", "late"]
    );
}

#[test]
fn internal_overlay_xattrs_are_dropped() {
    require_root("reads trusted.* xattrs");
    let s = TestStore::new();
    let b = one_layer(
        &s.scratch("img"),
        vec![
            dir("forged").xattr("trusted.overlay.opaque", b"y"),
            file("f", b"f")
                .xattr("user.overlay.redirect", b"/x")
                .xattr("user.ok", b"1"),
        ],
    );
    let out = s
        .cmd()
        .args(["load", &b.path.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trusted.overlay.opaque") && stderr.contains("forged"),
        "no warning: {stderr}"
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let l = &s.layer_dirs(&id)[0];
    let dump = |p: &Path| {
        String::from_utf8(
            Command::new("getfattr")
                .args(["--absolute-names", "-d", "-m", "-"])
                .arg(p)
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    assert!(
        !dump(&l.join("forged")).contains("overlay"),
        "{}",
        dump(&l.join("forged"))
    );
    let f = dump(&l.join("f"));
    assert!(!f.contains("overlay") && f.contains("user.ok"), "{f}");
}

#[test]
fn duplicates_last_one_wins() {
    let s = TestStore::new();
    let b = one_layer(
        &s.scratch("img"),
        vec![
            file("x", b"first"),
            file("x", b"second"),
            dir("t"),
            file("t/child", b"c"),
            dir("t/sub"),
            file("t", b"now a file"),
            file("d", b"file first"),
            dir("d").mode(0o700),
            symlink("s", "/nowhere"),
            file("s", b"not a link"),
        ],
    );
    let id = s.load(&b.path.display().to_string());
    let l = &s.layer_dirs(&id)[0];
    assert_eq!(std::fs::read(l.join("x")).unwrap(), b"second");
    assert_eq!(std::fs::read(l.join("t")).unwrap(), b"now a file");
    assert!(l.join("d").is_dir());
    assert_eq!(
        std::fs::metadata(l.join("d")).unwrap().mode() & 0o777,
        0o700
    );
    assert!(std::fs::symlink_metadata(l.join("s")).unwrap().is_file());
}

#[test]
fn devices_times_and_long_names() {
    require_root("creates device nodes and owners");
    let s = TestStore::new();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let long_target = format!("/{}", "t".repeat(180));
    let b = one_layer(
        &s.scratch("img"),
        vec![
            chardev("null", 1, 3).mode(0o666),
            blockdev("loop9", 7, 9).owner(0, 6),
            fifo("pipe").mode(0o600).owner(1000, 1000),
            file("frac", b"t").pax("mtime", b"1700000000.25"),
            file(&long, b"long"),
            symlink("longlink", &long_target),
            file("ro-dir/inner", b"i"),
            dir("ro-dir").mode(0o555),
            file("sticky", b"s").mode(0o1755),
            dir("./").mode(0o711),
        ],
    );
    let id = s.load(&b.path.display().to_string());
    let l = &s.layer_dirs(&id)[0];
    let m = std::fs::symlink_metadata(l.join("null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(m.rdev()),
            nix::sys::stat::minor(m.rdev())
        ),
        (1, 3)
    );
    assert_eq!(m.mode() & 0o7777, 0o666);
    let m = std::fs::symlink_metadata(l.join("loop9")).unwrap();
    assert!(m.file_type().is_block_device() && m.gid() == 6);
    let m = std::fs::symlink_metadata(l.join("pipe")).unwrap();
    assert!(m.file_type().is_fifo() && m.uid() == 1000 && m.mode() & 0o777 == 0o600);
    let m = std::fs::metadata(l.join("frac")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert_eq!(std::fs::read(l.join(&long)).unwrap(), b"long");
    assert_eq!(
        std::fs::read_link(l.join("longlink"))
            .unwrap()
            .to_str()
            .unwrap(),
        long_target
    );
    let m = std::fs::metadata(l.join("ro-dir")).unwrap();
    assert_eq!((m.mode() & 0o777, m.mtime()), (0o555, 1_700_000_000));
    assert_eq!(std::fs::read(l.join("ro-dir/inner")).unwrap(), b"i");
    assert_eq!(
        std::fs::metadata(l.join("sticky")).unwrap().mode() & 0o7777,
        0o1755
    );
    assert_eq!(std::fs::metadata(l).unwrap().mode() & 0o777, 0o711);
}
