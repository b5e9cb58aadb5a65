//! Formats beyond the shared fixtures: Docker 25+ hybrid archives, image indexes with
//! several platforms, legacy docker-archives with several images, zstd and plain layers
//! built in code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// Tars up a directory (relative names), as `docker save` / `skopeo` write archives.
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_dir_all(".", dir).unwrap();
    b.finish().unwrap();
}

#[test]
fn docker_25_hybrid_archive() {
    let s = TestStore::new();
    let spec = ImageSpec::new(vec![vec![file("a", b"a")], vec![file("b", b"b")]]).comp(Comp::Plain);
    let dir = s.scratch("hybrid");
    let built = write_oci(&dir, &spec, "latest");
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", &built.config_digest[7..]),
        "RepoTags": ["example.org/hy/brid:25"],
        "Layers": built.layer_digests.iter().map(|d| format!("blobs/sha256/{}", &d[7..])).collect::<Vec<_>>(),
    }]);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("repositories"),
        br#"{"example.org/hy/brid":{"25":"x"}}"#,
    )
    .unwrap();
    let tar = s.scratch("out").join("hybrid.tar");
    tar_dir(&dir, &tar);
    let id = s.load(&tar.display().to_string());
    assert_eq!(id, built.config_digest);
    let v = s.inspect("example.org/hy/brid:25");
    assert_eq!(v["manifest_digest"], built.manifest_digest.as_str());
    assert_eq!(v["layers"][1]["digest"], built.layer_digests[1].as_str());
    assert_eq!(
        v["layers"][0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    // Read in place: nothing of the archive is extracted into the store's tmp/.
    assert!(names(&s.root.join("tmp")).is_empty());
    // The same directory loads too (docker-archive detected from manifest.json).
    assert_eq!(s.load(&dir.display().to_string()), id);
    // Forced OCI reading of the same directory gives the same image.
    assert_eq!(s.load(&format!("oci:{}:latest", dir.display())), id);
}

#[test]
fn image_index_picks_this_platform() {
    let s = TestStore::new();
    let dir = s.scratch("multi");
    let ours = write_oci(
        &dir,
        &ImageSpec::new(vec![vec![file("which", b"ours")]]),
        "x",
    );
    let other_dir = s.scratch("other");
    let other = write_oci(
        &other_dir,
        &ImageSpec::new(vec![vec![file("which", b"other")]]),
        "x",
    );
    // Copy the other image's blobs over, then index both under one manifest list.
    for e in std::fs::read_dir(other_dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    let size = |d: &str| {
        std::fs::metadata(dir.join("blobs/sha256").join(&d[7..]))
            .unwrap()
            .len()
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.manifest_digest,
             "size": size(&other.manifest_digest), "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": ours.manifest_digest,
             "size": size(&ours.manifest_digest), "platform": {"os": "linux", "architecture": host_arch()}},
        ],
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    let hex = sha256_hex(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"),
        "size": bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "v2"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let id = s.load(&dir.display().to_string());
    assert_eq!(id, ours.config_digest);
    assert_eq!(s.inspect("multi:v2")["id"], ours.config_digest.as_str());
    // No image for this machine: the error lists what there is.
    let index = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.manifest_digest,
         "size": size(&other.manifest_digest), "platform": {"os": "linux", "architecture": "s390x"}}]});
    let bytes = serde_json::to_vec(&index).unwrap();
    let hex = sha256_hex(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"),
        "size": bytes.len(), "annotations": {"org.opencontainers.image.ref.name": "v3"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let err = s.fail(&["load", &dir.display().to_string()]);
    assert!(
        err.contains("linux/s390x") && err.contains(&format!("linux/{}", host_arch())),
        "{err}"
    );
}

#[test]
fn docker_archive_with_several_images() {
    let s = TestStore::new();
    let a = ImageSpec::new(vec![vec![file("a", b"a")]]);
    let b = ImageSpec::new(vec![vec![file("a", b"a")], vec![file("b", b"b")]]).comp(Comp::Zstd);
    let dir = s.scratch("two");
    // Two images in one archive: write each, then merge the manifests.
    let one = write_docker_archive(&dir.join("one.tar"), &a, &["one:1"]);
    let two = write_docker_archive(&dir.join("two.tar"), &b, &["two:2", "two:latest"]);
    let merged = dir.join("both.tar");
    {
        let mut out = tar::Builder::new(std::fs::File::create(&merged).unwrap());
        let mut manifests: Vec<Value> = Vec::new();
        for (src, prefix) in [(&one.path, "one"), (&two.path, "two")] {
            let mut ar = tar::Archive::new(std::fs::File::open(src).unwrap());
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                if name == "manifest.json" {
                    let mut m: Vec<Value> = serde_json::from_slice(&data).unwrap();
                    for entry in &mut m {
                        let layers: Vec<String> = entry["Layers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|l| format!("{prefix}-{}", l.as_str().unwrap()))
                            .collect();
                        entry["Layers"] = json!(layers);
                    }
                    manifests.extend(m);
                    continue;
                }
                let name = if name.ends_with("layer.tar") {
                    format!("{prefix}-{name}")
                } else {
                    name
                };
                let mut h = tar::Header::new_ustar();
                h.set_path(&name).unwrap();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                out.append(&h, &data[..]).unwrap();
            }
        }
        let data = serde_json::to_vec(&manifests).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("manifest.json").unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append(&h, &data[..]).unwrap();
        out.finish().unwrap();
    }
    // `load` takes every image, as `docker load` does; the last line is the last id.
    let out = s.ok(&["load", &merged.display().to_string()]);
    assert_eq!(out.lines().last().unwrap(), two.config_digest);
    assert!(
        out.contains(&one.config_digest) && out.contains("Loaded image: two:latest"),
        "{out}"
    );
    // The shared first layer is stored once.
    assert_eq!(s.layer_names().len(), 2);
    // An IMAGE argument must name one image: docker-archive:PATH:REF picks it.
    let err = s.fail(&["inspect", &merged.display().to_string()]);
    assert!(err.contains("2 images"), "{err}");
    let v = s.inspect(&format!("docker-archive:{}:one:1", merged.display()));
    assert_eq!(v["id"], one.config_digest.as_str());
    // Media types of docker-archive layers are sniffed.
    assert_eq!(
        s.inspect("two:2")["layers"][1]["media_type"],
        "application/vnd.docker.image.rootfs.diff.tar.zstd"
    );
}

#[test]
fn every_compression_gives_the_same_layer() {
    let s = TestStore::new();
    let entries = vec![
        dir("d"),
        file("d/f", &vec![7u8; 100_000]),
        symlink("l", "d/f"),
    ];
    let mut ids = Vec::new();
    let mut digests = Vec::new();
    for (i, c) in [Comp::Plain, Comp::Gzip, Comp::Zstd]
        .into_iter()
        .enumerate()
    {
        let b = write_oci(
            &s.scratch(&format!("c{i}")),
            &ImageSpec::new(vec![entries.clone()]).comp(c),
            "latest",
        );
        ids.push(s.load(&b.path.display().to_string()));
        // Same config, same image: the record keeps the form it was first loaded from.
        let v = s.inspect(&b.config_digest);
        assert_eq!(v["layers"][0]["media_type"], Comp::Plain.media_type());
        assert_eq!(v["layers"][0]["unpacked_size"], 100_000);
        digests.push(b.layer_digests[0].clone());
    }
    // The layer knows every form it came in.
    let layer = &s.layer_names()[0];
    let info: Value = serde_json::from_slice(
        &std::fs::read(s.root.join("layers").join(layer).join("layer.json")).unwrap(),
    )
    .unwrap();
    for (c, d) in [Comp::Plain, Comp::Gzip, Comp::Zstd].iter().zip(&digests) {
        assert!(
            info["sources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["media_type"] == c.media_type() && x["digest"] == d.as_str()),
            "{info}"
        );
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(s.layer_names().len(), 1);
}
