//! Inode numbers through a real mount (issue 3, item 8): unique across layers (only hard
//! links share one), stable across copy-up of every kind, rename and remount, and the
//! d_ino of readdir equal to st_ino for lower, copied-up, merged, renamed and new
//! entries. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::*;
use common::{sh, walk_tree};

/// Every entry below `root` (relative path → (st_ino, d_ino from its parent's readdir,
/// st_nlink, is_dir)).
fn inodes(root: &Path) -> BTreeMap<String, (u64, u64, u64, bool)> {
    let mut out = BTreeMap::new();
    walk_tree(root, &mut |rel, e, md| {
        out.insert(
            rel.to_string(),
            (md.ino(), e.ino(), md.nlink(), md.is_dir()),
        );
        true
    });
    out
}

/// d_ino of every entry equals its st_ino.
fn assert_d_ino_matches(root: &Path, when: &str) {
    for (path, (st, d, _, _)) in inodes(root) {
        assert_eq!(st, d, "{when}: {path}: st_ino {st} but d_ino {d}");
    }
}

/// No two entries share an inode number unless they are hard links of one file.
fn assert_unique(root: &Path, when: &str) {
    let mut by_ino: HashMap<u64, Vec<String>> = HashMap::new();
    let all = inodes(root);
    for (path, (st, _, _, _)) in &all {
        by_ino.entry(*st).or_default().push(path.clone());
    }
    assert!(
        !by_ino.contains_key(&ino(root)),
        "{when}: root's inode reused"
    );
    for (i, paths) in by_ino {
        if paths.len() > 1 {
            for p in &paths {
                let (_, _, nlink, is_dir) = all[p];
                assert!(
                    !is_dir && nlink as usize >= paths.len(),
                    "{when}: inode {i} shared by {paths:?}"
                );
            }
        }
    }
}

fn three_layers() -> Layers {
    let mut l = Layers::new();
    let a = l.add();
    let b = l.add();
    let c = l.add();
    for (n, layer) in [&a, &b, &c].iter().enumerate() {
        for d in 0..8 {
            for f in 0..40 {
                if f % 3 == n || f == 0 {
                    layer.file(&format!("t/d{d}/f{f}"), &format!("{n}"));
                }
            }
            layer.dir(&format!("t/d{d}/sub{n}"));
            layer.file(&format!("only{n}/d{d}/x"), "x");
        }
        layer.file(&format!("t/mine{n}"), "m");
    }
    a.hardlink("t/d0/f30", "t/d1/link")
        .hardlink("t/d0/f30", "t/link2");
    b.symlink("t/sym", "d0/f0").fifo("t/fifo");
    c.whiteout("t/d2/f4");
    c.opaque("t/d3").file("t/d3/f0", "opaque");
    l
}

#[test]
fn unique_across_layers_and_readdir_agrees() {
    let l = three_layers();
    let mut m = Mount::new(&l.lowerdirs());
    assert_unique(&m.p(""), "fresh");
    assert_d_ino_matches(&m.p(""), "fresh");
    let before = inodes(&m.p(""));
    assert_eq!(
        before["t/d1/link"].0, before["t/d0/f30"].0,
        "hard links share"
    );
    assert_eq!(before["t/link2"].0, before["t/d0/f30"].0);
    m.remount();
    assert_eq!(inodes(&m.p("")), before, "same numbers after remount");
}

#[test]
fn stable_across_every_kind_of_copy_up_and_remount() {
    let l = three_layers();
    let mut m = Mount::new(&l.lowerdirs());
    let before = inodes(&m.p(""));
    // metadata-only copy-ups
    fs::set_permissions(m.p("t/d0/f3"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(m.p("t/sym"), Some(1), Some(1)).unwrap();
    std::os::unix::fs::chown(m.p("t/fifo"), Some(2), Some(2)).unwrap();
    sh(&format!(
        "setfattr -n user.x -v 1 {}",
        m.p("t/d0/f2").display()
    ));
    sh(&format!("touch -d @1000 {}", m.p("t/d0/f9").display()));
    // data copy-ups
    fs::write(m.p("t/d4/f0"), "rewritten").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("t/d4/f1"))
        .unwrap();
    sh(&format!("truncate -s 0 {}", m.p("t/d4/f2").display()));
    fs::write(m.p("t/link2"), "via a hard link").unwrap();
    // directories copied up by creating in them, by chmod, by a rename inside
    fs::write(m.p("t/d5/new"), "new").unwrap();
    fs::set_permissions(m.p("t/d6"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::rename(m.p("only0/d1/x"), m.p("only0/d1/y")).unwrap();
    // a metadata copy-up completed by a write
    fs::write(m.p("t/d0/f3"), "after chmod").unwrap();

    let after = inodes(&m.p(""));
    for (path, (st, _, _, _)) in &before {
        let moved = path == "only0/d1/x";
        if !moved {
            assert_eq!(after[path].0, *st, "{path}: st_ino changed by copy-up");
        }
    }
    assert_eq!(
        after["only0/d1/y"].0, before["only0/d1/x"].0,
        "rename keeps st_ino"
    );
    assert_unique(&m.p(""), "after copy-ups");
    assert_d_ino_matches(&m.p(""), "after copy-ups");
    m.remount();
    assert_eq!(inodes(&m.p("")), after, "same numbers after remount");
    assert_d_ino_matches(&m.p(""), "after remount");
}

#[test]
fn renamed_and_new_entries_readdir_matches_stat() {
    let l = three_layers();
    let mut m = Mount::new(&l.lowerdirs());
    let before = inodes(&m.p(""));
    // a merged dir renamed in place, into another merged dir, and into a new upper dir
    fs::rename(m.p("t/d0"), m.p("t/r0")).unwrap();
    fs::rename(m.p("t/d1"), m.p("only1/r1")).unwrap();
    fs::create_dir(m.p("newdir")).unwrap();
    fs::rename(m.p("t/d2"), m.p("newdir/r2")).unwrap();
    fs::rename(m.p("t/d7/f5"), m.p("newdir/f5")).unwrap();
    fs::rename(m.p("only2"), m.p("newdir/only2")).unwrap();
    // new entries, also over whiteouts
    fs::write(m.p("t/new"), "n").unwrap();
    fs::remove_file(m.p("t/d3/f0")).unwrap();
    fs::create_dir(m.p("t/d3/f0")).unwrap();
    sh(&format!("rm -rf {}", m.p("t/d4").display()));
    fs::create_dir(m.p("t/d4")).unwrap();
    fs::hard_link(m.p("t/mine0"), m.p("newdir/mine0.link")).unwrap();

    let after = inodes(&m.p(""));
    assert_eq!(after["t/r0"].0, before["t/d0"].0);
    assert_eq!(after["only1/r1"].0, before["t/d1"].0);
    assert_eq!(after["newdir/r2"].0, before["t/d2"].0);
    assert_eq!(after["newdir/only2"].0, before["only2"].0);
    assert_eq!(after["newdir/only2/d3/x"].0, before["only2/d3/x"].0);
    assert_eq!(after["newdir/f5"].0, before["t/d7/f5"].0);
    assert_eq!(after["newdir/mine0.link"].0, before["t/mine0"].0);
    assert_eq!(after["t/r0/f7"].0, before["t/d0/f7"].0);
    assert_d_ino_matches(&m.p(""), "after renames");
    assert_unique(&m.p(""), "after renames");
    m.remount();
    assert_eq!(inodes(&m.p("")), after, "same numbers after remount");
    assert_d_ino_matches(&m.p(""), "after remount");
}

/// Layer rotation (containers-storage makes a container's upper the next layer): marks
/// in lower layers count — a metacopy file's data is below it, copied-up files keep
/// their `origin`, merged directories their bottom directory's inode.
#[test]
fn stable_when_the_upper_layer_becomes_a_lower_layer() {
    // layer rotation: what one mount wrote is a lower layer of the next
    let mut l = Layers::new();
    l.add()
        .file("d/f", "f")
        .file("d/g", "g")
        .file("e/h", "h")
        .file("chm", "c");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("d/f"), "changed").unwrap();
    fs::set_permissions(m.p("chm"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.p("new"), "new").unwrap();
    fs::write(m.p("d/new"), "new").unwrap();
    let before = inodes(&m.p(""));
    m.umount();
    let mut lowers = vec![m.up("")];
    lowers.extend(l.lowerdirs());
    let m2 = Mount::new(&lowers);
    let after = inodes(&m2.p(""));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(read(&m2.p("d/f")), "changed");
    assert_eq!(
        read(&m2.p("chm")),
        "c",
        "a metacopy upper file as a lower layer"
    );
    assert_eq!(mode(&m2.p("chm")) & 0o777, 0o600);
    let changed: Vec<&String> = before
        .iter()
        .filter(|(path, (st, _, _, _))| after[*path].0 != *st)
        .map(|(path, _)| path)
        .collect();
    assert!(
        changed.is_empty(),
        "st_ino changed by layer rotation: {changed:?}"
    );
    assert_d_ino_matches(&m2.p(""), "rotated");
}

#[test]
fn copied_up_files_in_the_root_keep_d_ino_after_remount() {
    let mut l = Layers::new();
    l.add().file("f", "f").file("g", "g").file("d/h", "h");
    let mut m = Mount::new(&l.lowerdirs());
    let before = inodes(&m.p(""));
    fs::write(m.p("f"), "changed").unwrap();
    fs::set_permissions(m.p("g"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_d_ino_matches(&m.p(""), "after copy-up");
    m.remount();
    assert_d_ino_matches(&m.p(""), "after remount");
    assert_eq!(inodes(&m.p("")), before);
}

#[test]
fn a_renamed_directory_still_merges_after_layer_rotation() {
    let mut l = Layers::new();
    l.add()
        .file("a/x", "x")
        .file("a/y", "y")
        .file("a/sub/s", "s");
    let mut m = Mount::new(&l.lowerdirs());
    fs::rename(m.p("a"), m.p("b")).unwrap();
    fs::write(m.p("b/z"), "z").unwrap();
    fs::remove_file(m.p("b/y")).unwrap();
    let before = inodes(&m.p(""));
    m.umount();
    let mut lowers = vec![m.up("")];
    lowers.extend(l.lowerdirs());
    let m2 = Mount::new(&lowers);
    assert_eq!(ls(&m2.p("")), vec!["b"]);
    assert_eq!(ls(&m2.p("b")), vec!["sub", "x", "z"]);
    assert_eq!(read(&m2.p("b/sub/s")), "s");
    assert_eq!(
        inodes(&m2.p("")),
        before,
        "st_ino unchanged by the rotation"
    );
    assert_d_ino_matches(&m2.p(""), "rotated");
    // and it keeps working as a lower: rename it again in the new mount
    fs::rename(m2.p("b"), m2.p("c")).unwrap();
    assert_eq!(ls(&m2.p("c")), vec!["sub", "x", "z"]);
}
