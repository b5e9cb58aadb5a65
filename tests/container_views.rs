//! Every view of a container shows the same tree: its writable mount, its read-only
//! mount, `export` and the image `commit` makes. The case that once told them apart: a
//! hard-linked file of the image written through one of its names. The writable layer
//! then holds that name only; its other names reach the copy through the hard-link index
//! (`work/index`), which the read-only mount used to skip (it read the writable layer as
//! a plain lower layer), showing the image's old content there. Needs root, /dev/fuse,
//! GNU tar and python3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::lab::*;
use common::*;

#[test]
fn read_only_mount_export_and_commit_show_what_the_mount_shows() {
    let lab = Lab::new();
    let s = &lab.s;
    let b = one_layer(
        &s.scratch("img"),
        vec![
            dir("d"),
            file("d/a", b"old\n"),
            hardlink("d/b", "d/a"),
            file("d/c", b"left alone\n"),
        ],
    );
    let image = s.load(&b.path.display().to_string());
    let m = lab.mount(&[&image, "--name", "web"], "m");
    // Written through one name: the other shows it too (one inode).
    sh_in(&m, "echo new > d/a && echo more > d/fresh && rm d/c");
    assert_eq!(fs::read_to_string(m.join("d/b")).unwrap(), "new\n");
    assert_eq!(
        fs::metadata(m.join("d/a")).unwrap().ino(),
        fs::metadata(m.join("d/b")).unwrap().ino()
    );
    let mounted = manifest(&m, &[]);
    lab.umount(&m);

    let ro = lab.mount(&["web", "--read-only"], "ro");
    assert_eq!(fs::read_to_string(ro.join("d/b")).unwrap(), "new\n");
    assert_same_tree(&manifest(&ro, &[]), &mounted, "read-only mount vs mount");
    lab.umount(&ro);

    let (_, tree) = export(s, "web", "exported");
    assert_same_tree(&manifest(&tree, &[]), &mounted, "export vs mount");

    s.ok(&["commit", "web", "web:1"]);
    let img = lab.mount(&["web:1", "--read-only"], "img");
    assert_same_tree(&manifest(&img, &[]), &mounted, "committed image vs mount");

    // Mounted writable again: still the same.
    let again = lab.mount(&["web"], "again");
    assert_same_tree(&manifest(&again, &[]), &mounted, "mount again vs mount");
}
