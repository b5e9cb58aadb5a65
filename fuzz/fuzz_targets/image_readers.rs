//! The image readers on arbitrary documents: an OCI `index.json`, image manifest or
//! config, a docker-archive `manifest.json` or config, and image references. The first
//! byte picks which document the rest is (low 3 bits) and whether a tag is asked for
//! (bit 3); the other documents of the image are valid and point at it (digests and sizes
//! computed here), so the fuzzed one is read as deep as the readers go. Never a panic.
#![no_main]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use layerfs::digest::Digest;
use layerfs::image::files::{ImageFiles, MemFiles};
use layerfs::image::{self, Reference, docker, oci};
use libfuzzer_sys::fuzz_target;

const DIFF_ID: &str = "sha256:5b0d9f5cd4b1a5c4f5e5f9d0c9b2e3f1a6d7c8b9a0e1f2d3c4b5a6978877665a";
const LAYER: &[u8] = b"layer blob (never read by the readers)";

fn config() -> Vec<u8> {
    format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{DIFF_ID}"]}},"history":[{{"created_by":"x"}}]}}"#,
        oci::host_arch()
    )
    .into_bytes()
}

fn blob_name(bytes: &[u8]) -> (Digest, String) {
    let d = Digest::of(bytes);
    (d, format!("blobs/sha256/{}", d.hex()))
}

fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        Digest::of(config),
        config.len(),
        Digest::of(layer),
        layer.len()
    )
    .into_bytes()
}

fn index(manifest: &[u8]) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
        Digest::of(manifest),
        manifest.len()
    )
    .into_bytes()
}

/// An OCI layout in memory: `index.json` → `manifest` → `config` + one layer.
fn layout(index_doc: Option<&[u8]>, manifest_doc: &[u8], config_doc: &[u8]) -> MemFiles {
    let mut files = HashMap::new();
    files.insert(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    for b in [manifest_doc, config_doc, LAYER] {
        files.insert(blob_name(b).1, b.to_vec());
    }
    let index_doc = index_doc.map_or_else(|| index(manifest_doc), <[u8]>::to_vec);
    files.insert("index.json".to_string(), index_doc);
    MemFiles { files }
}

fn docker(manifest_json: &[u8], config_doc: &[u8]) -> MemFiles {
    let mut files = HashMap::new();
    files.insert("manifest.json".to_string(), manifest_json.to_vec());
    files.insert("config.json".to_string(), config_doc.to_vec());
    files.insert("layer/layer.tar".to_string(), LAYER.to_vec());
    MemFiles { files }
}

const DOCKER_MANIFEST: &[u8] =
    br#"[{"Config":"config.json","RepoTags":["fuzz/image:latest"],"Layers":["layer/layer.tar"]}]"#;

fn read_oci(files: MemFiles, tag: Option<&str>) {
    let files: Arc<dyn ImageFiles> = Arc::new(files);
    let _ = oci::read(&files, Path::new("/fuzz/oci"), tag, Some("fuzz"));
}

fn read_docker(files: MemFiles, tag: Option<&str>) {
    let files: Arc<dyn ImageFiles> = Arc::new(files);
    let _ = docker::read(&files, Path::new("/fuzz/docker"), tag);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, doc)) = data.split_first() else {
        return;
    };
    let tag = (mode & 8 != 0).then_some("latest");
    let config = config();
    match mode & 7 {
        0 => read_oci(layout(Some(doc), &manifest(&config, LAYER), &config), tag),
        1 => read_oci(layout(None, doc, &config), tag),
        2 => read_oci(layout(None, &manifest(doc, LAYER), doc), tag),
        3 => read_docker(docker(doc, &config), tag),
        4 => read_docker(docker(DOCKER_MANIFEST, doc), tag),
        _ => {
            let s = String::from_utf8_lossy(doc);
            if let Ok(r) = Reference::parse(&s) {
                // What parses prints and parses back the same.
                let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
                assert_eq!(again, r);
                let _ = r.familiar();
            }
            let _ = image::parse_config(doc, "fuzz");
            let _ = Digest::parse(&s);
        }
    }
});
