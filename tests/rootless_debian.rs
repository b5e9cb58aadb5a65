//! Real work in a rootless container on layerfs (issue 21): as a plain user with a subuid
//! range, in a user namespace (`unshare --map-auto --map-root-user`), the Debian image
//! (`../shared/scripts/make-fixtures.sh`, STEPS="deps debian"; `.ci/run` builds it) runs
//! `dpkg -l`, `useradd`, `chown -R` and `dpkg -i` of a package whose maintainer script
//! adds a user and gives it files; the container is committed and saved, and Docker
//! Engine loads the result and sees the same owners.
//!
//! Needs root (to act as nobody and give it subuids), /dev/fuse, newuidmap (uidmap),
//! runc, dpkg-deb, jq, Docker Engine and the Debian image (LAYERFS_DEBIAN_OCI, default
//! /var/tmp/layerfs-fixtures/out/debian/oci).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::tools::Docker;
use common::*;

fn debian_oci() -> PathBuf {
    let p = std::env::var_os("LAYERFS_DEBIAN_OCI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/layerfs-fixtures/out/debian/oci"));
    assert!(
        p.join("index.json").is_file(),
        "this test needs the Debian image at {} (STEPS=\"deps debian\" \
         ../shared/scripts/make-fixtures.sh; .ci/run does it)",
        p.display()
    );
    p
}

/// A package whose postinst adds user svc (uid 1234) and gives it /opt/layerfs-test.
fn build_deb(dir: &std::path::Path) -> PathBuf {
    let root = dir.join("pkg");
    fs::create_dir_all(root.join("DEBIAN")).unwrap();
    fs::create_dir_all(root.join("opt/layerfs-test")).unwrap();
    fs::write(root.join("opt/layerfs-test/hello"), "hello\n").unwrap();
    fs::write(
        root.join("DEBIAN/control"),
        "Package: layerfs-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\n\
         Description: test\n",
    )
    .unwrap();
    let postinst = root.join("DEBIAN/postinst");
    fs::write(
        &postinst,
        "#!/bin/sh\nset -e\ngroupadd -g 1234 svc\nuseradd -r -u 1234 -g svc svc\nchown -R svc:svc /opt/layerfs-test\n",
    )
    .unwrap();
    run_ok(Command::new("chmod").args(["755"]).arg(&postinst));
    let deb = dir.join("layerfs-test.deb");
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb),
    );
    deb
}

#[test]
fn rootless_debian_container_does_real_work() {
    let oci = debian_oci();
    fuse_for_users();
    subids_for("nobody");
    let s = TestStore::new();
    let d = s.dir.path().to_path_buf();
    std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    let deb = build_deb(&d);
    // A copy nobody may read (make-fixtures.sh writes index.json 0600).
    let copy = d.join("debian-oci");
    run_ok(Command::new("cp").arg("-r").arg(&oci).arg(&copy));
    run_ok(
        Command::new("chown")
            .args(["-R", "nobody"])
            .arg(&copy)
            .arg(&deb),
    );
    let oci = copy;
    let script = format!(
        "set -e; export HOME={d} XDG_RUNTIME_DIR=; L='{bin} --root {d}/store'; \
         $L load -q --tag debian:latest oci:{oci}:latest >/dev/null; mkdir -p {d}/m; \
         $L mount --name dev debian:latest {d}/m >/dev/null; cp {deb} {d}/m/tmp/pkg.deb; \
         $L umount dev; \
         $L run --user 0 --name dev debian:latest sh -ec '\
           test $(dpkg -l | grep -c ^ii) -gt 50; \
           useradd -m -u 1500 -U alice; \
           mkdir -p /srv/data/sub && touch /srv/data/f /srv/data/sub/g; \
           chown -R alice:alice /srv/data; \
           dpkg -i /tmp/pkg.deb >/dev/null; rm /tmp/pkg.deb; \
           stat -c \"%u:%g %n\" /srv/data/sub/g /opt/layerfs-test/hello /home/alice'; \
         $L commit dev rootless-deb:1 >/dev/null; $L save rootless-deb:1 -o {d}/out.tar",
        d = d.display(),
        bin = bin().display(),
        oci = oci.display(),
        deb = deb.display()
    );
    let out = run_ok(command_as(NOBODY, "unshare").args([
        "--map-auto",
        "--map-root-user",
        "-m",
        "sh",
        "-c",
        &script,
    ]));
    assert_eq!(
        out,
        "1500:1500 /srv/data/sub/g\n1234:1234 /opt/layerfs-test/hello\n1500:1500 /home/alice\n"
    );
    // The layer holds the container's ids, never the host's subuids.
    let x = d.join("x");
    fs::create_dir(&x).unwrap();
    let tv = run_ok(Command::new("sh").arg("-ec").arg(format!(
        "tar -C {x} -xf {d}/out.tar; tar tvnf {x}/$(jq -r '.[0].Layers[-1]' {x}/manifest.json)",
        x = x.display(),
        d = d.display()
    )));
    for (name, owner) in [
        ("srv/data/sub/g", "1500/1500"),
        ("opt/layerfs-test/hello", "1234/1234"),
        ("home/alice/", "1500/1500"),
        ("etc/passwd", "0/0"),
    ] {
        let line = tv
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("no {name} in the layer:\n{tv}"));
        assert!(line.contains(&format!(" {owner} ")), "{line}");
    }
    assert!(!tv.contains("100"), "a host subuid in the layer:\n{tv}");
    let docker = Docker::start();
    docker.ok(&["load", "-i", d.join("out.tar").to_str().unwrap()]);
    let seen = docker.ok(&[
        "run",
        "--rm",
        "--network=none",
        "rootless-deb:1",
        "stat",
        "-c",
        "%u:%g %n",
        "/srv/data/sub/g",
        "/opt/layerfs-test/hello",
        "/home/alice",
    ]);
    assert_eq!(seen, out, "Docker sees other owners");
}
