//! `layerfs save` read back by other tools: skopeo (inspect and copy) of every format,
//! umoci unpack of the OCI layout (the same tree as a layerfs mount), `layerfs load`
//! (the same image id), Docker (`docker load` + `docker run`); several images with
//! shared layers; reproducible output; and the failures (unknown image, unwritable or
//! full output, a layer changed on disk) leave nothing behind and the store unchanged.
//! Needs root, /dev/fuse, skopeo, umoci, python3 and Docker Engine (`.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::tools::{Docker, without_empty_xattr};
use common::*;

/// The skopeo name of a saved output.
fn transport(format: &str, out: &Path, tag: &str) -> String {
    match format {
        "docker-archive" => format!("docker-archive:{}", out.display()),
        "oci" => format!("oci:{}:{tag}", out.display()),
        _ => format!("oci-archive:{}:{tag}", out.display()),
    }
}

/// The config skopeo reads from `src`, byte for byte, as a sha256 id.
fn skopeo_config_id(src: &str) -> String {
    let raw = Command::new("skopeo")
        .args(["inspect", "--config", "--raw", src])
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        raw.status.success(),
        "skopeo inspect {src}: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    format!("sha256:{}", sha256_hex(&raw.stdout))
}

#[test]
fn every_format_reads_back_with_skopeo_and_layerfs_load() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let out_dir = s.scratch("out");
    for (format, compress) in [
        ("docker-archive", None),
        ("docker-archive", Some("gzip")),
        ("oci", None),
        ("oci", Some("zstd")),
        ("oci", Some("none")),
        ("oci-archive", None),
        ("oci-archive", Some("zstd")),
    ] {
        let what = format!("{format} {compress:?}");
        let out = out_dir.join(format!("{format}-{}", compress.unwrap_or("default")));
        let mut args = vec!["save", "busybox:latest", "--format", format, "-o"];
        let out_s = out.display().to_string();
        args.push(&out_s);
        if let Some(c) = compress {
            args.extend(["--compress", c]);
        }
        s.ok(&args);
        let src = transport(format, &out, "latest");
        // skopeo sees the same config (hence image id) and the layers it names.
        assert_eq!(skopeo_config_id(&src), id, "{what}");
        let inspect: serde_json::Value =
            serde_json::from_str(&run_ok(Command::new("skopeo").args(["inspect", &src]))).unwrap();
        assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3, "{what}");
        // skopeo copies it (reading and checking every blob) ...
        let copy = out_dir.join(format!("copy-{format}-{}", compress.unwrap_or("default")));
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &src,
            &format!("oci:{}:copied", copy.display()),
        ]));
        // ... and layerfs loads both, as the same image, with its name.
        let other = TestStore::new();
        assert_eq!(other.load(&out.display().to_string()), id, "{what}");
        assert_eq!(other.inspect("busybox:latest")["id"], id.as_str(), "{what}");
        assert_eq!(
            other.load(&format!("oci:{}:copied", copy.display())),
            id,
            "{what}"
        );
        // The layer media types say what the blobs are.
        let want = match (format, compress) {
            ("docker-archive", None) | (_, Some("none")) => "tar",
            (_, Some("zstd")) => "tar+zstd",
            _ => "tar+gzip",
        };
        for l in other.inspect("busybox:latest")["layers"]
            .as_array()
            .unwrap()
        {
            let mt = l["media_type"].as_str().unwrap();
            assert!(mt.ends_with(want), "{what}: {mt}");
        }
    }
}

#[test]
fn an_uncompressed_layer_is_its_original_blob_and_output_is_reproducible() {
    let s = TestStore::new();
    let src = format!(
        "oci:{}:latest",
        fixtures().join("busybox-uncompressed/oci").display()
    );
    let id = s.load(&src);
    let out = s.scratch("o").join("layout");
    s.ok(&["save", &id, "--format", "oci", "-o", out.to_str().unwrap()]);
    // Written as is: every layer blob of the source is in the output, byte for byte, and
    // the stored manifest is reused (same manifest digest).
    let orig = fixtures().join("busybox-uncompressed/oci/blobs/sha256");
    let ours = out.join("blobs/sha256");
    for name in names(&orig) {
        assert_eq!(
            fs::read(orig.join(&name)).unwrap(),
            fs::read(ours.join(&name)).unwrap_or_default(),
            "blob {name}"
        );
    }
    // Saving again gives the same bytes, compressed or not.
    for (format, c) in [("oci-archive", "gzip"), ("docker-archive", "zstd")] {
        let a = s.scratch("a").join(format);
        let b = s.scratch("b").join(format);
        for o in [&a, &b] {
            s.ok(&[
                "save",
                &id,
                "--format",
                format,
                "--compress",
                c,
                "-o",
                o.to_str().unwrap(),
            ]);
        }
        assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "{format}");
    }
}

#[test]
fn umoci_unpacks_the_layout_into_the_mounted_tree() {
    require_fuse();
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("mnt");
    s.ok(&["mount", "--read-only", &id, mp.to_str().unwrap()]);
    let mounted = without_empty_xattr(manifest(&mp, &[]));
    s.ok(&["umount", mp.to_str().unwrap()]);
    assert!(mounted.len() > 10, "{mounted:?}");
    for c in ["gzip", "none"] {
        let out = s.scratch(c).join("layout");
        s.ok(&[
            "save",
            "busybox:latest",
            "--format",
            "oci",
            "--compress",
            c,
            "-o",
            out.to_str().unwrap(),
        ]);
        let bundle = s.dir.path().join(format!("bundle-{c}"));
        run_ok(
            Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:latest", out.display()))
                .arg(&bundle),
        );
        assert_eq!(
            manifest(&bundle.join("rootfs"), &[]),
            mounted,
            "umoci unpack ({c})"
        );
    }
}

#[test]
fn several_images_in_one_archive_share_layers_once() {
    let s = TestStore::new();
    let l1 = s.load(&bb("l1", Spelling::Oci));
    let l3 = s.load(&bb("latest", Spelling::Oci));
    let out = s.scratch("o").join("both.tar");
    s.ok(&[
        "save",
        "busybox:l1",
        "busybox:latest",
        "-o",
        out.to_str().unwrap(),
    ]);
    let list = run_ok(Command::new("tar").arg("tf").arg(&out));
    let blobs: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with("blobs/sha256/") && l.len() > 13)
        .collect();
    // 3 layers (layer 1 shared), 2 configs, 2 manifests.
    assert_eq!(blobs.len(), 7, "{list}");
    let other = TestStore::new();
    let loaded = other.ok(&["load", out.to_str().unwrap()]);
    assert!(loaded.contains(&l1) && loaded.contains(&l3), "{loaded}");
    assert_eq!(other.inspect("busybox:l1")["id"], l1.as_str());
    assert_eq!(other.inspect("busybox:latest")["id"], l3.as_str());
    // A name without a tag is every tag of that repository, as with docker save.
    let all = s.scratch("all").join("all.tar");
    s.ok(&["save", "busybox", "-o", all.to_str().unwrap()]);
    let m: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("tar")
            .arg("xOf")
            .arg(&all)
            .arg("manifest.json"),
    ))
    .unwrap();
    assert_eq!(m.as_array().unwrap().len(), 2, "{m}");
}

#[test]
fn docker_loads_and_runs_the_docker_archive() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let docker = Docker::start();
    for c in ["none", "gzip"] {
        let out = s.scratch(c).join("bb.tar");
        s.ok(&[
            "save",
            "busybox:latest",
            "--compress",
            c,
            "-o",
            out.to_str().unwrap(),
        ]);
        let loaded = docker.ok(&["load", "-i", out.to_str().unwrap()]);
        assert!(loaded.contains("busybox:latest"), "{loaded}");
        assert_eq!(
            docker
                .ok(&["inspect", "--format", "{{.Id}}", "busybox:latest"])
                .trim(),
            id
        );
        let got = docker.ok(&[
            "run",
            "--rm",
            "--network=none",
            "busybox:latest",
            "sh",
            "-c",
            "ls /readd-dir; cat /etc/hostname 2>/dev/null; echo ran",
        ]);
        assert!(got.trim_end().ends_with("ran"), "{got}");
        docker.ok(&["rmi", "busybox:latest"]);
    }
}

#[test]
fn failures_leave_nothing_and_the_store_unchanged() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let before = s.listing();
    let dir = s.scratch("o");
    let out = dir.join("x.tar");
    let err = s.fail(&["save", "nosuch:image", "-o", out.to_str().unwrap()]);
    assert!(err.contains("unknown image"), "{err}");
    let err = s.fail(&["save", &id, "-o", "/nonexistent/dir/x.tar"]);
    assert!(err.contains("/nonexistent/dir"), "{err}");
    // An archive is never written over a directory; a layout never into a full one.
    let err = s.fail(&["save", &id, "-o", dir.to_str().unwrap()]);
    assert!(err.contains("is a directory"), "{err}");
    fs::write(dir.join("keep"), b"x").unwrap();
    let err = s.fail(&["save", &id, "--format", "oci", "-o", dir.to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(names(&dir), ["keep"]);

    // A full disk and a read-only one: a clear error, nothing half-written left.
    require_root("mounts tmpfs");
    for (opts, want) in [("size=64k", "No space left"), ("ro", "Read-only")] {
        let small = s.scratch(&format!("fs-{opts}"));
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
                .arg(&small),
        );
        let _g = mount::Unmount(vec![small.clone()]);
        for format in ["docker-archive", "oci"] {
            let o = small.join("out");
            let err = s.fail(&["save", &id, "--format", format, "-o", o.to_str().unwrap()]);
            assert!(err.contains(want), "{opts} {format}: {err}");
            assert!(
                names(&small).is_empty(),
                "{opts} {format}: {:?}",
                names(&small)
            );
        }
    }
    // An existing archive stays as it was when a save over it fails.
    fs::write(&out, b"old").unwrap();
    let err = s.fail(&["save", "nosuch:image", "-o", out.to_str().unwrap()]);
    assert!(err.contains("unknown image"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"old");
    assert_eq!(s.listing(), before);

    // A layer changed on disk (in place, then in size) is refused, not saved wrong.
    let diff = s.layer_dirs(&id).pop().unwrap();
    let victim = first_file(&diff).expect("a regular file in the top layer");
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 1;
    fs::write(&victim, &bytes).unwrap();
    let err = s.fail(&["save", &id, "-o", out.to_str().unwrap()]);
    assert!(err.contains("changed on disk"), "{err}");
    bytes[0] ^= 1;
    bytes.push(b'!');
    fs::write(&victim, &bytes).unwrap();
    let err = s.fail(&["save", &id, "-o", out.to_str().unwrap()]);
    assert!(err.contains("changed on disk"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"old");
}
