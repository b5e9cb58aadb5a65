//! `layerfs load` of the shared fixtures (every format and transport), what the unpacked
//! layers hold, the merged view through kernel overlayfs, and the listing commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Every image the fixtures hold, by every way of naming it.
fn fixture_sources() -> Vec<String> {
    let f = fixtures();
    let f = f.display();
    let mut v = Vec::new();
    for t in ["l1", "l2", "l3", "latest"] {
        v.push(bb(t, Spelling::Path));
        v.push(fixture_ref("busybox-umoci", t, Spelling::Oci));
    }
    for t in ["l1", "l2", "l3", "latest", "run-l4"] {
        v.push(fixture_ref("busybox-buildah-vfs", t, Spelling::Oci));
    }
    v.extend([
        format!("{f}/busybox-zstd/oci"),
        format!("oci:{f}/busybox-zstd/oci:latest"),
        format!("{f}/busybox-uncompressed/oci"),
        format!("{f}/busybox/busybox.docker.tar"),
        format!("docker-archive:{f}/busybox/busybox.docker.tar"),
        format!("docker-archive:{f}/busybox/busybox.docker.tar:layerfs/busybox:latest"),
        format!("{f}/busybox/busybox.oci.tar"),
        format!("oci-archive:{f}/busybox/busybox.oci.tar:latest"),
    ]);
    v
}

#[test]
fn every_fixture_loads_in_every_form() {
    let s = TestStore::new();
    let busybox_id = s.load(&bb("latest", Spelling::Path));
    for src in fixture_sources() {
        let id = s.load(&src);
        // The same image through every transport and compression has the same config.
        if src.contains("busybox/") && src.contains("latest") || src.contains("busybox.") {
            assert_eq!(id, busybox_id, "{src}");
        }
    }
    let images = s.ok(&["images"]);
    for name in [
        "busybox",
        "busybox-umoci",
        "busybox-buildah-vfs",
        "layerfs/busybox",
        "busybox-zstd",
    ] {
        assert!(
            images
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from:\n{images}"
        );
    }
    assert!(
        names(&s.root.join("tmp")).is_empty(),
        "tmp/ not empty after loads"
    );
}

#[test]
fn compressed_forms_share_their_layers() {
    let s = TestStore::new();
    let f = fixtures();
    s.load(&bb("latest", Spelling::Path));
    let layers = s.layer_names();
    assert_eq!(layers.len(), 3, "{layers:?}");
    let before = listing(&s.root.join("layers"));
    for src in [
        "busybox-zstd/oci",
        "busybox-uncompressed/oci",
        "busybox/busybox.docker.tar",
    ] {
        let out = s.ok(&["load", "-q", &format!("{}/{src}", f.display())]);
        assert!(out.lines().last().unwrap().starts_with("sha256:"));
    }
    assert_eq!(
        s.layer_names(),
        layers,
        "zstd/plain/docker forms added layers"
    );
    // Nothing was unpacked again: the layer trees did not change (only layer.json
    // may have learned new source digests).
    let after = listing(&s.root.join("layers"));
    let strip = |m: &BTreeMap<String, String>| {
        m.iter()
            .filter(|(k, _)| !k.ends_with("layer.json"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(strip(&before), strip(&after));
    // The zstd blob digests are recorded as sources of the same diff_ids.
    let info: Value = serde_json::from_slice(
        &std::fs::read(s.root.join("layers").join(&layers[0]).join("layer.json")).unwrap(),
    )
    .unwrap();
    let sources = info["sources"].as_array().unwrap();
    assert!(
        sources
            .iter()
            .any(|x| x["media_type"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{info}"
    );
}

/// One line of `listings/<image>/layer-N.entries.txt`.
#[derive(Debug)]
struct Listed {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    path: String,
    link: Option<String>,
    xattrs: Vec<String>,
}

fn parse_entries(text: &str) -> Vec<Listed> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut rest = line;
        let mut field = || {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            let f = &rest[..end];
            rest = &rest[end..];
            f.to_string()
        };
        let kind = field();
        let mode = u32::from_str_radix(&field(), 8).unwrap();
        let owner = field();
        let size: u64 = field().parse().unwrap();
        let (uid, gid) = owner.split_once(':').unwrap();
        let mut path = rest.strip_prefix(' ').unwrap_or(rest).to_string();
        let mut xattrs = Vec::new();
        if let Some((p, x)) = path.clone().split_once("  xattrs=") {
            path = p.to_string();
            xattrs = x.split(',').map(str::to_string).collect();
        }
        let mut link = None;
        if let Some((p, l)) = path.clone().split_once(" -> ") {
            path = p.to_string();
            link = Some(l.to_string());
        }
        out.push(Listed {
            kind,
            mode,
            uid: uid.parse().unwrap(),
            gid: gid.parse().unwrap(),
            size,
            path,
            link,
            xattrs,
        });
    }
    out
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    xattr_list(p).contains(&name.to_string()).then(|| {
        let out = Command::new("getfattr")
            .args(["--absolute-names", "--only-values", "-h", "-n", name])
            .arg(p)
            .output()
            .unwrap();
        out.stdout
    })
}

fn xattr_list(p: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "-h", "-d", "-m", "-"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect()
}

/// Checks an unpacked layer against the fixture's entry listing of that layer.
/// `mtime`: the one timestamp every entry of the image has (buildah commits with a fixed
/// one), when it has one.
fn check_layer(dir: &Path, listed: &[Listed], what: &str, mtime: Option<i64>) {
    let listed_paths: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
    for e in listed {
        let p = dir.join(&e.path);
        let ctx = format!("{what}: {}", e.path);
        match e.kind.as_str() {
            "WHITEOUT" => {
                let (parent, name) = match e.path.rsplit_once('/') {
                    Some((d, n)) => (format!("{d}/"), n),
                    None => (String::new(), e.path.as_str()),
                };
                let target = name.strip_prefix(".wh.").unwrap();
                let tp = format!("{parent}{target}");
                assert!(
                    !p.exists() && std::fs::symlink_metadata(&p).is_err(),
                    "{ctx}: .wh. file kept"
                );
                if listed_paths.contains(&tp.as_str()) {
                    continue; // the layer also creates the name: no whiteout
                }
                let m = std::fs::symlink_metadata(dir.join(&tp))
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert!(
                    m.file_type().is_char_device() && m.rdev() == 0,
                    "{ctx}: not a char 0/0 whiteout"
                );
            }
            "OPAQUE" => {
                let d = p.parent().unwrap();
                assert!(
                    std::fs::symlink_metadata(&p).is_err(),
                    "{ctx}: opaque marker file kept"
                );
                assert_eq!(
                    xattr(d, "trusted.overlay.opaque").as_deref(),
                    Some(&b"y"[..]),
                    "{ctx}"
                );
            }
            kind => {
                let m = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{ctx}: {err}"));
                let t = m.file_type();
                let ok = match kind {
                    "FILE" => t.is_file(),
                    "DIR" => t.is_dir(),
                    "SYMLINK" => t.is_symlink(),
                    "HARDLINK" => t.is_file(),
                    "FIFO" => t.is_fifo(),
                    "CHAR" => t.is_char_device(),
                    "BLOCK" => t.is_block_device(),
                    other => panic!("{ctx}: unknown kind {other}"),
                };
                assert!(ok, "{ctx}: wrong type {t:?}, want {kind}");
                assert_eq!((m.uid(), m.gid()), (e.uid, e.gid), "{ctx}: owner");
                if kind != "SYMLINK" {
                    assert_eq!(
                        m.mode() & 0o7777,
                        e.mode,
                        "{ctx}: mode {:o}",
                        m.mode() & 0o7777
                    );
                }
                if kind == "FILE" {
                    assert_eq!(m.len(), e.size, "{ctx}: size");
                }
                if kind == "SYMLINK" {
                    assert_eq!(
                        std::fs::read_link(&p).unwrap().to_str(),
                        e.link.as_deref(),
                        "{ctx}: target"
                    );
                }
                if kind == "HARDLINK" {
                    let t = std::fs::metadata(dir.join(e.link.as_deref().unwrap())).unwrap();
                    assert_eq!(
                        (t.dev(), t.ino()),
                        (m.dev(), m.ino()),
                        "{ctx}: not the same inode"
                    );
                }
                if kind != "DIR"
                    && let Some(t) = mtime
                {
                    assert_eq!(m.mtime(), t, "{ctx}: mtime");
                }
                let have = xattr_list(&p);
                for x in &e.xattrs {
                    assert!(have.contains(x), "{ctx}: xattr {x} missing (has {have:?})");
                }
            }
        }
    }
    // Directory mtimes are applied after their children were created.
    if let Some(t) = mtime {
        for e in listed.iter().filter(|e| e.kind == "DIR") {
            let m = std::fs::symlink_metadata(dir.join(&e.path)).unwrap();
            assert_eq!(m.mtime(), t, "{what}: {} dir mtime", e.path);
        }
    }
    // No OCI whiteout spelling is left in a kernel-format layer.
    let out = Command::new("find")
        .arg(dir)
        .args(["-name", ".wh.*"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{what}: .wh. names left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn check_fixture_layers(image_dir: &str, source: &str, mtime: Option<i64>) {
    require_root("layers keep uids, device whiteouts and trusted.overlay xattrs");
    let s = TestStore::new();
    let id = s.load(source);
    let dirs = s.layer_dirs(&id);
    let listings = fixtures().join("listings").join(image_dir);
    assert_eq!(dirs.len(), names(&listings).len() / 2, "layer count");
    for (i, d) in dirs.iter().enumerate() {
        let text =
            std::fs::read_to_string(listings.join(format!("layer-{}.entries.txt", i + 1))).unwrap();
        check_layer(
            d,
            &parse_entries(&text),
            &format!("{image_dir} layer {}", i + 1),
            mtime,
        );
    }
}

#[test]
fn busybox_layers_hold_what_the_listings_say() {
    check_fixture_layers(
        "busybox",
        &bb("latest", Spelling::Path),
        Some(1_700_000_000),
    );
}

#[test]
fn umoci_layers_hold_what_the_listings_say() {
    // umoci keeps the real mtimes of the build: not checked.
    check_fixture_layers(
        "busybox-umoci",
        &fixture_ref("busybox-umoci", "latest", Spelling::Path),
        None,
    );
}

#[test]
fn buildah_run_layers_hold_what_the_listings_say() {
    check_fixture_layers(
        "busybox-buildah-vfs-run-l4",
        &fixture_ref("busybox-buildah-vfs", "run-l4", Spelling::Path),
        Some(1_700_000_000),
    );
}

#[test]
fn busybox_layer2_details() {
    require_root("layers keep uids and trusted.overlay xattrs");
    let s = TestStore::new();
    let id = s.load(&format!(
        "{}/busybox/busybox.docker.tar",
        fixtures().display()
    ));
    let dirs = s.layer_dirs(&id);
    let l2 = &dirs[1];
    // The empty xattr value survives (umoci drops it; we must not).
    assert_eq!(
        xattr(&l2.join("data/xattr-file"), "user.layerfs.empty").as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        xattr(&l2.join("data/xattr-file"), "user.layerfs.test").as_deref(),
        Some(&b"hello"[..])
    );
    // security.capability survives chown (set after it).
    assert!(xattr(&l2.join("data/cap-file"), "security.capability").is_some());
    let m = std::fs::metadata(l2.join("usr/local/bin/suid-script")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    let m = std::fs::metadata(l2.join("data/uid-100000")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100_000, 100_000));
    // Long names and deep paths of layer 1.
    let l1 = &dirs[0];
    assert!(l1.join(format!("data/{}", "L".repeat(200))).is_file());
    let mut deep = l1.join("data/deep");
    for i in 1..=10 {
        deep = deep.join(format!("component-{i}-abcdefghijklmnopqrst"));
    }
    assert_eq!(
        std::fs::read_to_string(deep.join("leaf.txt")).unwrap(),
        "deep\n"
    );
    // Layer 3 re-creates a name layer 2 whited out and makes typechange/ opaque.
    let l3 = &dirs[2];
    assert_eq!(
        xattr(&l3.join("typechange"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(l3.join("readd-file").is_file());
}

/// Mounts `dirs` (bottom first) read-only with kernel overlayfs and returns the
/// tree manifest of the merged view.
fn overlay_manifest(dirs: &[PathBuf], scratch: &Path) -> String {
    // Overlayfs wants two lower dirs without an upper: an empty one goes at the bottom.
    let empty = scratch.join("empty-lower");
    std::fs::create_dir_all(&empty).unwrap();
    let lowers: Vec<PathBuf> = dirs
        .iter()
        .rev()
        .chain(std::iter::once(&empty))
        .cloned()
        .collect();
    let merged = common::mount::KernelOverlay::new(&lowers, false);
    manifest(&merged.mp, &[])
        .into_iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn compare_merged(source: &str, expected: &str, drop_empty_xattr: bool) {
    require_root("mounts kernel overlayfs over the layer directories");
    let s = TestStore::new();
    let id = s.load(source);
    let got = overlay_manifest(&s.layer_dirs(&id), s.dir.path());
    // umoci (which made expected/<image>.manifest) drops empty xattr values; we keep
    // them, so for those references the single `user.layerfs.empty=` is removed from ours.
    let got = if drop_empty_xattr {
        got.replace("user.layerfs.empty=,", "")
    } else {
        got
    };
    let want = std::fs::read_to_string(fixtures().join("expected").join(expected)).unwrap();
    if got != want {
        let g: Vec<&str> = got.lines().collect();
        let w: Vec<&str> = want.lines().collect();
        let missing: Vec<_> = w.iter().filter(|l| !g.contains(l)).take(10).collect();
        let extra: Vec<_> = g.iter().filter(|l| !w.contains(l)).take(10).collect();
        panic!(
            "{source}: merged view differs from {expected}\nmissing: {missing:#?}\nextra: {extra:#?}"
        );
    }
}

#[test]
fn merged_busybox_matches_expected_via_kernel_overlay() {
    // expected/busybox-zstd.manifest was made with kernel overlayfs and keeps the empty
    // xattr, so it is compared exactly.
    compare_merged(
        &bb("latest", Spelling::Path),
        "busybox-zstd.manifest",
        false,
    );
}

#[test]
fn merged_views_match_umoci_for_every_builder() {
    let f = fixtures();
    compare_merged(&bb("latest", Spelling::Path), "busybox.manifest", true);
    compare_merged(
        &fixture_ref("busybox-umoci", "latest", Spelling::Path),
        "busybox-umoci.manifest",
        true,
    );
    compare_merged(
        &fixture_ref("busybox-buildah-vfs", "latest", Spelling::Path),
        "busybox-buildah-vfs.manifest",
        true,
    );
    compare_merged(
        &format!("{}/busybox-uncompressed/oci", f.display()),
        "busybox-uncompressed.manifest",
        true,
    );
    compare_merged(&bb("l1", Spelling::Path), "busybox-l1.manifest", true);
    compare_merged(&bb("l2", Spelling::Path), "busybox-l2.manifest", true);
}

/// The config and manifest blobs of a layout's tag.
fn fixture_blobs(layout: &Path, tag: &str) -> (Value, Value, String) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let blob = |d: &Value| -> Vec<u8> {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
    };
    let manifest: Value = serde_json::from_slice(&blob(&desc["digest"])).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let config: Value = serde_json::from_slice(&blob(&manifest["config"]["digest"])).unwrap();
    (manifest, config, config_digest)
}

#[test]
fn inspect_matches_the_fixture_config() {
    let s = TestStore::new();
    let layout = fixtures().join("busybox/oci");
    let (manifest, config, config_digest) = fixture_blobs(&layout, "latest");
    let id = s.load(&bb("latest", Spelling::Path));
    assert_eq!(id, config_digest);
    let v = s.inspect("busybox");
    assert_eq!(v["id"], config_digest);
    assert_eq!(v["repo_tags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(v["os"], config["os"]);
    assert_eq!(v["architecture"], config["architecture"]);
    assert_eq!(v["created"], config["created"]);
    assert_eq!(v["config"], config["config"]);
    assert_eq!(v["history"], config["history"]);
    let layers = v["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let mut chain = String::new();
    for (i, l) in layers.iter().enumerate() {
        let m = &manifest["layers"][i];
        assert_eq!(l["digest"], m["digest"]);
        assert_eq!(l["media_type"], m["mediaType"]);
        assert_eq!(l["size"], m["size"]);
        assert_eq!(l["diff_id"], diff_ids[i]);
        chain = if i == 0 {
            diff_ids[0].as_str().unwrap().to_string()
        } else {
            format!(
                "sha256:{}",
                sha256_hex(format!("{chain} {}", diff_ids[i].as_str().unwrap()).as_bytes())
            )
        };
        assert_eq!(l["chain_id"], chain.as_str());
        assert!(l["unpacked_size"].as_u64().unwrap() > 0);
    }
    // Layer 1 holds busybox itself: its unpacked size is at least that binary.
    assert!(layers[0]["unpacked_size"].as_u64().unwrap() >= 1_982_256);
    // By id prefix and full id too.
    assert_eq!(s.inspect(&id[7..19])["id"], config_digest);
    assert_eq!(s.inspect(&id)["id"], config_digest);
}

#[test]
fn history_is_like_docker() {
    let s = TestStore::new();
    let layout = fixtures().join("busybox/oci");
    let (_, config, _) = fixture_blobs(&layout, "latest");
    let id = s.load(&bb("latest", Spelling::Path));
    let out = s.ok(&["history", "busybox"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE")
            && lines[0].contains("CREATED BY")
            && lines[0].contains("COMMENT")
    );
    let hist = config["history"].as_array().unwrap();
    assert_eq!(lines.len() - 1, hist.len());
    // Newest first; the top row carries the image id, the others <missing>.
    assert!(lines[1].starts_with(&id[7..19]), "{out}");
    assert!(
        lines[2].starts_with("<missing>") && lines[3].starts_with("<missing>"),
        "{out}"
    );
    for (line, h) in lines[1..].iter().zip(hist.iter().rev()) {
        assert!(line.contains(h["created_by"].as_str().unwrap()), "{line}");
    }
    let full = s.ok(&["history", "--no-trunc", &id]);
    assert!(full.lines().nth(1).unwrap().starts_with(&id));
    let json: Value = serde_json::from_str(&s.ok(&["history", "--json", "busybox"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), hist.len());
}

#[test]
fn history_shows_empty_layers() {
    let s = TestStore::new();
    let mut spec = ImageSpec::new(vec![vec![file("a", b"a")], vec![file("b", b"bb")]]);
    spec.history = Some(serde_json::json!([
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD a"},
        {"created": "2024-01-01T00:00:01Z", "created_by": "ENV X=1", "empty_layer": true},
        {"created": "2024-01-01T00:00:02Z", "created_by": "ADD b", "comment": "the b layer"},
        {"created": "2024-01-01T00:00:03Z", "created_by": "CMD [\"sh\"]", "empty_layer": true},
    ]));
    let b = write_oci(&s.scratch("img"), &spec, "v1");
    s.load(&b.path.display().to_string());
    let out = s.ok(&["history", "--human=false", "img:v1"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert_eq!(
        rows[0][1..],
        ["2024-01-01T00:00:03Z", "CMD [\"sh\"]", "0"],
        "{out}"
    );
    assert_eq!(
        rows[1][1..],
        ["2024-01-01T00:00:02Z", "ADD b", "2", "the b layer"],
        "{out}"
    );
    assert_eq!(
        rows[2],
        ["<missing>", "2024-01-01T00:00:01Z", "ENV X=1", "0"],
        "{out}"
    );
    assert_eq!(
        rows[3],
        ["<missing>", "2024-01-01T00:00:00Z", "ADD a", "1"],
        "{out}"
    );
}

#[test]
fn images_shortens_names_and_shows_untagged() {
    let s = TestStore::new();
    let id = s.load(&format!(
        "{}/busybox/busybox.docker.tar",
        fixtures().display()
    ));
    let spec = ImageSpec::new(vec![vec![file("x", b"x")]]);
    let untagged = write_docker_archive(&s.scratch("u").join("u.tar"), &spec, &[]);
    s.load(&untagged.path.display().to_string());
    let out = s.ok(&["images"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    );
    assert!(
        rows.iter()
            .any(|r| r[..3] == ["layerfs/busybox", "latest", &id[7..19]]),
        "{out}"
    );
    let short = &untagged.config_digest[7..19];
    assert!(
        rows.iter().any(|r| r[..3] == ["<none>", "<none>", short]),
        "{out}"
    );
    let json: Value = serde_json::from_str(&s.ok(&["images", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
}

#[test]
fn load_names_and_tags() {
    let s = TestStore::new();
    let f = fixtures();
    // --tag adds a name; the last stdout line is the id.
    let out = s.ok(&[
        "load",
        "--tag",
        "example.com/team/bb:v1",
        &bb("l1", Spelling::Path),
    ]);
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("sha256:"), "{out}");
    assert!(
        out.contains("Loaded image: example.com/team/bb:v1"),
        "{out}"
    );
    // --tag replaces the name a tag-only ref name would get from the directory.
    assert!(!out.contains("busybox:l1"), "{out}");
    assert_eq!(s.inspect("example.com/team/bb:v1")["id"], last);
    s.fail(&["inspect", "busybox:l1"]);
    // Without --tag, the layout's directory names it.
    s.ok(&["load", "-q", &bb("l1", Spelling::Path)]);
    assert_eq!(s.inspect("docker.io/library/busybox:l1")["id"], last);
    // An image argument may be something to load.
    // (`-q` would print ids only, as `docker history -q`)
    let hist = s.ok(&["history", &format!("{}/busybox-zstd/oci", f.display())]);
    assert!(hist.contains("bb_layer3"), "{hist}");
}

#[test]
fn tag_required_for_multi_image_layouts() {
    let s = TestStore::new();
    let err = s.fail(&["load", &format!("{}/busybox/oci", fixtures().display())]);
    for t in ["l1", "l2", "l3", "latest"] {
        assert!(err.contains(t), "tag {t} not listed: {err}");
    }
    let err = s.fail(&["load", &bb("nope", Spelling::Path)]);
    assert!(err.contains("nope") && err.contains("latest"), "{err}");
}
