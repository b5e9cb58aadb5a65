//! "Which layer serves this file", answered through the mount (issue 25): reading the
//! xattr `user.layerfs.layer` by name gives the serving layer's digest (`upper` once the
//! container changed it). It is never listed, so `cp -a`, `tar --xattrs` and commit never
//! carry it; it cannot be set; `--no-layer-xattr` (`-o layer_xattr=0` for
//! layerfs-overlay) turns it off. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// `getfattr -n user.layerfs.layer` of `p` (not following a symlink): the value, or the
/// error getfattr prints.
fn layer_of(p: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-h", "--only-values", "-n", "user.layerfs.layer"])
        .arg(p)
        .output()
        .unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }
}

#[test]
fn the_layer_xattr_names_the_serving_layer() {
    require_fuse();
    let s = TestStore::new();
    let spec = ImageSpec::new(vec![
        vec![
            file("a", b"1"),
            file("b", b"1"),
            dir("d"),
            file("d/x", b"1"),
        ],
        vec![file("a", b"2"), file("c", b"2"), symlink("l", "a")],
        vec![file(".wh.b", b""), file("e", b"3")],
    ])
    .comp(Comp::Plain);
    let b = write_oci(&s.scratch("img"), &spec, "latest");
    s.load(&format!("oci:{}:latest", b.path.display()));
    let ids = &b.diff_ids;
    let mnt = s.scratch("mnt");
    s.ok(&["mount", "--name", "c", "img:latest", mnt.to_str().unwrap()]);
    let at = |rel: &str| layer_of(&mnt.join(rel));
    assert_eq!(at("a"), ids[1], "the topmost version serves");
    assert_eq!(at("c"), ids[1]);
    // (the kernel allows `user.*` xattrs on regular files and directories only)
    assert!(at("l").contains("No such attribute"), "{}", at("l"));
    assert_eq!(at("e"), ids[2]);
    assert_eq!(at("d"), ids[0]);
    assert_eq!(at("d/x"), ids[0]);
    assert!(
        at("b").contains("No such file"),
        "b is deleted: {}",
        at("b")
    );
    // What the container changes is its own layer's.
    std::fs::write(mnt.join("a"), "changed").unwrap();
    sh_in(&mnt, "chmod 600 c; touch new");
    for rel in ["a", "c", "new"] {
        assert_eq!(at(rel), "upper", "{rel}");
    }
    // Never listed, so never copied or stored; and not settable.
    let listed = run_ok(
        Command::new("getfattr")
            .args(["-d", "-m", "-"])
            .arg(mnt.join("e")),
    );
    assert!(!listed.contains("layerfs"), "{listed}");
    let copy = s.scratch("copy");
    run_ok(Command::new("cp").arg("-a").arg(mnt.join("e")).arg(&copy));
    assert!(layer_of(&copy.join("e")).contains("No such attribute"));
    let set = Command::new("setfattr")
        .args(["-n", "user.layerfs.layer", "-v", "x"])
        .arg(mnt.join("e"))
        .output()
        .unwrap();
    assert!(!set.status.success(), "setting it must fail");
    s.ok(&["umount", "c"]);
    s.ok(&["commit", "c", "committed:1"]);
    let tar = s.dir.path().join("c.tar");
    s.ok(&["save", "committed:1", "-o", tar.to_str().unwrap()]);
    let bytes = std::fs::read(&tar).unwrap();
    assert!(
        !bytes.windows(13).any(|w| w == b"layerfs.layer"),
        "a committed layer carries the xattr"
    );
    // Turned off.
    s.ok(&["mount", "--no-layer-xattr", "c", mnt.to_str().unwrap()]);
    assert!(at("e").contains("No such attribute"), "{}", at("e"));
    s.ok(&["umount", "c"]);
}

#[test]
fn layerfs_overlay_names_lower_directories_and_can_be_told_not_to() {
    use common::mount::{Layers, Mount};
    let mut l = Layers::new();
    l.add().file("a", "1").file("b", "1");
    l.add().file("a", "2");
    let lowers = l.lowerdirs();
    let m = Mount::new(&lowers);
    assert_eq!(layer_of(&m.p("a")), lowers[0].display().to_string());
    assert_eq!(layer_of(&m.p("b")), lowers[1].display().to_string());
    let off = Mount::with(&lowers, true, &["layer_xattr=0"]);
    assert!(layer_of(&off.p("a")).contains("No such attribute"));
}
