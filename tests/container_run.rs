//! A real container on a layerfs root filesystem: `runc run` of busybox on
//! `layerfs mount`. Needs root, /dev/fuse and runc (installed by .ci/run).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::process::Command;

use common::mount::*;
use common::{Spelling, bb, bin, require_fuse, run_ok};

#[test]
fn runc_runs_busybox_on_a_layerfs_root() {
    require_fuse();
    assert!(
        Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs runc (apt-get install runc)"
    );
    let t = tempdir();
    let root = t.path().join("store");
    let bundle = t.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    let layerfs = |args: &[&str]| {
        run_ok(Command::new(bin()).arg("--root").arg(&root).args(args));
    };
    let src = bb("latest", Spelling::Oci);
    layerfs(&[
        "-q",
        "mount",
        &src,
        rootfs.to_str().unwrap(),
        "--name",
        "run1",
    ]);
    let _g = Unmount(vec![rootfs.clone()]);
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
    cfg["process"]["terminal"] = false.into();
    cfg["root"]["readonly"] = false.into();
    cfg["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        "cat /etc/hostname; echo from-container > /data/written; rm /etc/motd; ls /readd-dir; /usr/local/bin/suid-script"
    ]);
    fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let id = format!("layerfs-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", &id])
        .current_dir(&bundle)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &id]).output();
    assert!(
        out.status.success(),
        "runc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("layerfs-busybox"), "{stdout}");
    assert!(stdout.contains("new"), "ls /readd-dir: {stdout}");
    assert!(stdout.contains("suid"), "{stdout}");
    let upper = root.join("containers/run1/upper");
    assert_eq!(read(&upper.join("data/written")), "from-container\n");
    assert!(is_whiteout(&upper.join("etc/motd")));
}
