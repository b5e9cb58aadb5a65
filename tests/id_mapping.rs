//! Owners shown through a mapping at no cost (issue 21): `layerfs-overlay`'s
//! `uidmapping=`/`gidmapping=` as containers-storage writes them for podman's
//! `--userns=keep-id`, `squash_to_*`, and `layerfs mount --uidmap/--gidmap`. What is
//! stored never changes: only what the mount shows, and what a chown through it stores.
//!
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::mount::{Layers, Mount};
use common::*;

fn owner(p: &std::path::Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// podman --userns=keep-id for uid 1006 with a subuid range, as containers-storage
/// writes it (STORED:SHOWN:COUNT): the container's own user namespace maps container id
/// c to podman's c+1 (c < 1006) and the user's 1006 to podman's 0, so what is stored as
/// s must show as the id that namespace turns back into s: stored 0 shows as 1, stored
/// 1006 as 0, 1007… as themselves, ids past every range as 65534. A chown through the
/// mount stores the stored id, a new file gets the caller's stored id, and the layers
/// never change.
#[test]
fn keep_id_mapping_shows_and_stores_through_the_ranges() {
    let mut l = Layers::new();
    l.add()
        .file("root-file", "r")
        .file("user-file", "u")
        .owner("user-file", 1006, 1006)
        .file("sub-file", "s")
        .owner("sub-file", 1007, 1007)
        .file("far-file", "f")
        .owner("far-file", 500000, 500000);
    let map = ":0:1:1006:1006:0:1:1007:1007:198994";
    let m = Mount::with(
        &l.lowerdirs(),
        true,
        &[&format!("uidmapping={map}"), &format!("gidmapping={map}")],
    );
    assert_eq!(owner(&m.p("root-file")), (1, 1));
    assert_eq!(owner(&m.p("user-file")), (0, 0));
    assert_eq!(owner(&m.p("sub-file")), (1007, 1007));
    assert_eq!(
        owner(&m.p("far-file")),
        (65534, 65534),
        "outside every range"
    );
    std::os::unix::fs::lchown(m.p("root-file"), Some(1007), Some(1007)).unwrap();
    std::os::unix::fs::lchown(m.p("sub-file"), Some(1), Some(1)).unwrap();
    assert_eq!(owner(&m.p("root-file")), (1007, 1007));
    assert_eq!(owner(&m.p("sub-file")), (1, 1));
    let up = m.upper.clone().unwrap();
    assert_eq!(owner(&up.join("root-file")), (1007, 1007));
    assert_eq!(owner(&up.join("sub-file")), (0, 0));
    // This process calls as uid 0 as the kernel sends it: stored 1006.
    fs::write(m.p("new"), "n").unwrap();
    assert_eq!(owner(&up.join("new")), (1006, 1006));
    assert_eq!(owner(&m.p("new")), (0, 0));
    let low = &l.lowerdirs()[0];
    assert_eq!(owner(&low.join("root-file")), (0, 0), "a layer changed");
    assert_eq!(
        owner(&low.join("sub-file")),
        (1007, 1007),
        "a layer changed"
    );
}

#[test]
fn squash_shows_every_file_as_one_owner() {
    let mut l = Layers::new();
    l.add()
        .file("a", "a")
        .owner("a", 1000, 1001)
        .dir("d")
        .owner("d", 7, 8);
    let m = Mount::with(
        &l.lowerdirs(),
        true,
        &["squash_to_uid=4242", "squash_to_gid=4343"],
    );
    assert_eq!(owner(&m.p("a")), (4242, 4343));
    assert_eq!(owner(&m.p("d")), (4242, 4343));
    drop(m);
    let m = Mount::with(&l.lowerdirs(), false, &["squash_to_root"]);
    assert_eq!(owner(&m.p("a")), (0, 0));
}

#[test]
fn layerfs_mount_takes_uidmap_and_gidmap() {
    require_fuse();
    let s = TestStore::new();
    let mnt = s.scratch("mnt");
    s.load(&bb("latest", Spelling::Oci));
    s.ok(&[
        "mount",
        "--name",
        "c",
        "--uidmap",
        "0:5000:1:1000:1000:1",
        "--gidmap",
        "0:5000:1:1000:1000:1",
        "busybox:latest",
        mnt.to_str().unwrap(),
    ]);
    let o = |p: &str| owner(&mnt.join(p));
    assert_eq!(o("etc/passwd"), (5000, 5000));
    assert_eq!(o("home/user"), (1000, 1000));
    assert_eq!(o("data/uid-100000"), (65534, 65534));
    // Root (0) is outside the map (the image's root shows as 5000): it cannot create
    // files there, as on an idmapped mount.
    let e = fs::write(mnt.join("tmp/new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOVERFLOW), "{e}");
    std::os::unix::fs::lchown(mnt.join("etc/passwd"), Some(1000), None).unwrap();
    s.ok(&["umount", "c"]);
    let diff = s.ok(&["diff", "c"]);
    assert!(diff.contains("C /etc/passwd"), "{diff}");
    s.ok(&["commit", "c", "mapped:1"]);
    let out = s.dir.path().join("m.tar");
    s.ok(&["export", "c", "-o", out.to_str().unwrap()]);
    let tv = run_ok(std::process::Command::new("tar").args(["tvnf"]).arg(&out));
    let line = tv.lines().find(|l| l.ends_with(" etc/passwd")).unwrap();
    assert!(
        line.contains(" 1000/0 "),
        "stored ids are the unmapped ones: {line}"
    );
    let bad = s.run(&[
        "mount",
        "--uidmap",
        "0:1",
        "busybox:latest",
        mnt.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid id mapping"));
}
