//! A load by an unprivileged user: owners the host refuses are kept in
//! `user.containers.override_stat`, whiteouts and opaque markers use what the kernel lets
//! an unprivileged user write, and privileged xattrs are dropped with a warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

use common::*;

fn getfattr(p: &std::path::Path, name: &str) -> String {
    let out = Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-h", "-n", name])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rootless_load_keeps_owners_in_xattrs() {
    require_root("drops to uid 65534 with setpriv to act as an unprivileged user");
    let s = TestStore::new();
    nix::unistd::chown(
        s.dir.path(),
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let src = bb("latest", Spelling::Path);
    let out = command_as(NOBODY, bin())
        .args(["--root"])
        .arg(&s.root)
        .args(["load", "-q", &src])
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rootless load failed: {stderr}");
    assert!(
        stderr.contains("security.capability"),
        "no warning about the dropped capability: {stderr}"
    );
    let layers = s.root.join("layers");
    let l2 = names(&layers)
        .into_iter()
        .map(|n| layers.join(n).join("diff"))
        .find(|d| d.join("usr/local/bin/suid-script").exists())
        .unwrap();
    let m = std::fs::metadata(l2.join("home/user")).unwrap();
    assert_eq!(m.uid(), NOBODY, "files belong to the unprivileged user");
    assert_eq!(
        getfattr(&l2.join("home/user"), "user.containers.override_stat"),
        "1000:1000:0750"
    );
    assert_eq!(
        getfattr(
            &l2.join("usr/local/bin/suid-script"),
            "user.containers.override_stat"
        ),
        "0:0:04755"
    );
    assert_eq!(getfattr(&l2.join("opaque-dir"), "user.overlay.opaque"), "y");
    let w = std::fs::symlink_metadata(l2.join("to-delete-file")).unwrap();
    assert!(
        w.file_type().is_char_device() && w.rdev() == 0,
        "whiteout is a 0/0 device (allowed unprivileged since Linux 5.8)"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l2.parent().unwrap().join("layer.json")).unwrap())
            .unwrap();
    assert_eq!(info["styles"]["opaque"]["xattr"], "user", "{info}");
}
