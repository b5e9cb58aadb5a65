//! Which common readers read what `save` writes (issue 22, item 4), each claim of the
//! README's table checked with the real tool: Docker Engine (Debian 12's 20.10) loads a
//! docker-archive with uncompressed or gzip layers and refuses zstd ones; umoci 0.4
//! unpacks an OCI layout with gzip layers and refuses zstd ones; skopeo reads all of them.
//! `save` warns for the combinations a common reader refuses, and only for those.
//!
//! Needs root, skopeo, umoci and Docker Engine (installed by .ci/run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::tools::Docker;
use common::*;

fn save(s: &TestStore, args: &[&str]) -> (std::path::PathBuf, String) {
    let name = args.join("-").replace("--", "");
    let out = s.dir.path().join(name);
    let mut all = vec!["save", "busybox:latest", "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = s.run(&all);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "save {args:?}: {err}");
    (out, err)
}

#[test]
fn docker_load_reads_gzip_and_plain_but_not_zstd() {
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let docker = Docker::start();
    for (compress, readable) in [("none", true), ("gzip", true), ("zstd", false)] {
        let (out, err) = save(&s, &["--compress", compress]);
        assert_eq!(
            err.contains("warning") && err.contains("docker load"),
            !readable,
            "{compress}: {err}"
        );
        let r = docker.run(&["load", "-i", out.to_str().unwrap()]);
        // docker load 20.10 reports a layer it cannot read in its output and exits 0.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        assert_eq!(
            r.status.success() && said.contains("Loaded image") && !said.contains("Error"),
            readable,
            "docker load of a {compress} docker-archive: {said}"
        );
        if readable {
            // The top layer's own file: all three layers were read.
            let ran = docker.ok(&[
                "run",
                "--rm",
                "--network=none",
                "busybox:latest",
                "cat",
                "/etc/layer3-marker",
            ]);
            assert!(!ran.is_empty(), "{compress}");
            docker.ok(&["rmi", "busybox:latest"]);
        }
        let sk = Command::new("skopeo")
            .args(["inspect", &format!("docker-archive:{}", out.display())])
            .output()
            .unwrap();
        assert!(sk.status.success(), "skopeo reads {compress}");
    }
}

#[test]
fn umoci_reads_gzip_but_not_zstd() {
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    for (compress, readable) in [("gzip", true), ("zstd", false)] {
        let (out, err) = save(&s, &["--format", "oci", "--compress", compress]);
        assert_eq!(
            err.contains("warning") && err.contains("umoci"),
            !readable,
            "{compress}: {err}"
        );
        let bundle = s.dir.path().join(format!("bundle-{compress}"));
        let r = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:latest", out.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert_eq!(
            r.status.success(),
            readable,
            "umoci unpack of {compress} layers: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let sk = Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:latest", out.display())])
            .output()
            .unwrap();
        assert!(sk.status.success(), "skopeo reads {compress}");
    }
}
