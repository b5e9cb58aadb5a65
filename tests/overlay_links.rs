//! Hard links through a real mount (issue 3, item 7): names hard-linked in a layer share
//! st_ino and st_nlink; a write through any name (append, truncate, O_TRUNC rewrite,
//! chmod) shows in every name, also after unmount and remount (where fuse-overlayfs 1.10
//! returned the old data padded with NULs); link() of lower and upper files; unlinking
//! one name keeps the others with a consistent link count. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::*;
use common::sh;

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .nlink()
}

/// Every name shows `content`, one inode and `n` links.
fn same_inode(m: &Mount, names: &[&str], content: &str, n: u64) {
    let i = ino(&m.p(names[0]));
    for name in names {
        assert_eq!(read(&m.p(name)), content, "{name}");
        assert_eq!(ino(&m.p(name)), i, "{name}: st_ino");
        assert_eq!(nlink(&m.p(name)), n, "{name}: st_nlink");
    }
}

fn lower_with_links() -> Layers {
    let mut l = Layers::new();
    let a = l.add();
    a.file("a", "original")
        .hardlink("a", "b")
        .hardlink("a", "d/c")
        .file("x", "x");
    l.add().file("top", "t");
    l
}

#[test]
fn names_linked_in_a_layer_share_inode_and_link_count() {
    let l = lower_with_links();
    let m = Mount::new(&l.lowerdirs());
    same_inode(&m, &["a", "b", "d/c"], "original", 3);
    assert_ne!(ino(&m.p("a")), ino(&m.p("x")));
    assert_eq!(nlink(&m.p("x")), 1);
}

#[test]
fn append_through_one_name_shows_in_all_also_after_remount() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    let i = ino(&m.p("a"));
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("b"))
        .unwrap()
        .write_all(b"+appended")
        .unwrap();
    same_inode(&m, &["a", "b", "d/c"], "original+appended", 3);
    m.remount();
    same_inode(&m, &["a", "b", "d/c"], "original+appended", 3);
    assert_eq!(ino(&m.p("d/c")), i);
    // lower layer untouched
    assert_eq!(fs::read_to_string(l.layers[0].p("a")).unwrap(), "original");
}

#[test]
fn truncate_and_rewrite_through_one_name_after_remount_in_any_order() {
    // the name first looked up after the remount is not the one written before it
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("d/c"), "rewritten with O_TRUNC").unwrap();
    same_inode(&m, &["d/c", "a", "b"], "rewritten with O_TRUNC", 3);
    m.remount();
    same_inode(&m, &["b", "a", "d/c"], "rewritten with O_TRUNC", 3);
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("a"))
        .unwrap()
        .set_len(3)
        .unwrap();
    same_inode(&m, &["a", "b", "d/c"], "rew", 3);
    m.remount();
    same_inode(&m, &["d/c", "b", "a"], "rew", 3);
    // truncate(2) by path
    let out = sh(&format!("truncate -s 1 {}", m.p("b").display()));
    assert!(out.status.success());
    same_inode(&m, &["a", "b", "d/c"], "r", 3);
    m.remount();
    same_inode(&m, &["a", "b", "d/c"], "r", 3);
}

#[test]
fn metadata_change_through_one_name_shows_in_all() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    fs::set_permissions(m.p("b"), fs::Permissions::from_mode(0o600)).unwrap();
    for n in ["a", "b", "d/c"] {
        assert_eq!(mode(&m.p(n)) & 0o7777, 0o600, "{n}");
    }
    m.remount();
    for n in ["d/c", "a", "b"] {
        assert_eq!(mode(&m.p(n)) & 0o7777, 0o600, "{n}");
    }
    same_inode(&m, &["a", "b", "d/c"], "original", 3);
}

#[test]
fn a_written_name_then_a_name_never_looked_up_before_the_remount() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("a"), "via a").unwrap();
    m.remount();
    // d/c and b were never looked up in this mount before the write
    assert_eq!(read(&m.p("d/c")), "via a");
    assert_eq!(read(&m.p("b")), "via a");
    same_inode(&m, &["d/c", "b", "a"], "via a", 3);
}

#[test]
fn unlink_one_name_keeps_the_others() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    let i = ino(&m.p("a"));
    fs::remove_file(m.p("b")).unwrap();
    assert!(!exists(&m.p("b")));
    same_inode(&m, &["a", "d/c"], "original", 2);
    m.remount();
    same_inode(&m, &["a", "d/c"], "original", 2);
    assert!(!exists(&m.p("b")));
    assert_eq!(ino(&m.p("a")), i);
}

#[test]
fn unlink_the_first_looked_up_name_then_write_through_another() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    same_inode(&m, &["a", "b", "d/c"], "original", 3);
    fs::remove_file(m.p("a")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("b"))
        .expect("open the remaining name for writing")
        .write_all(b"+more")
        .unwrap();
    same_inode(&m, &["b", "d/c"], "original+more", 2);
    assert!(!exists(&m.p("a")));
    m.remount();
    assert!(!exists(&m.p("a")));
    same_inode(&m, &["d/c", "b"], "original+more", 2);
}

#[test]
fn unlink_after_copy_up_keeps_the_others() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("b"), "new").unwrap();
    fs::remove_file(m.p("a")).unwrap();
    same_inode(&m, &["b", "d/c"], "new", 2);
    fs::remove_file(m.p("b")).unwrap();
    same_inode(&m, &["d/c"], "new", 1);
    m.remount();
    same_inode(&m, &["d/c"], "new", 1);
    assert_eq!(ls(&m.p("")), vec!["d", "top", "x"]);
    fs::remove_file(m.p("d/c")).unwrap();
    let index = m.work.as_ref().unwrap().join("layerfs-index");
    assert!(ls(&index).is_empty(), "the last name takes the index entry");
}

#[test]
fn link_of_lower_and_upper_files() {
    let mut l = Layers::new();
    l.add().file("low", "lower").dir("d");
    let mut m = Mount::new(&l.lowerdirs());
    let i = ino(&m.p("low"));
    fs::hard_link(m.p("low"), m.p("d/low2")).expect("link() of a lower file");
    same_inode(&m, &["low", "d/low2"], "lower", 2);
    assert_eq!(ino(&m.p("low")), i, "st_ino unchanged by link");
    fs::write(m.p("d/low2"), "changed").unwrap();
    same_inode(&m, &["low", "d/low2"], "changed", 2);

    fs::write(m.p("up"), "upper").unwrap();
    let iu = ino(&m.p("up"));
    fs::hard_link(m.p("up"), m.p("up2")).unwrap();
    fs::hard_link(m.p("up2"), m.p("d/up3")).unwrap();
    same_inode(&m, &["up", "up2", "d/up3"], "upper", 3);
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("d/up3"))
        .unwrap()
        .write_all(b"!")
        .unwrap();
    same_inode(&m, &["up", "up2", "d/up3"], "upper!", 3);
    m.remount();
    same_inode(&m, &["d/low2", "low"], "changed", 2);
    same_inode(&m, &["d/up3", "up", "up2"], "upper!", 3);
    assert_eq!(ino(&m.p("low")), i);
    assert_eq!(ino(&m.p("up")), iu);
    fs::remove_file(m.p("up")).unwrap();
    same_inode(&m, &["up2", "d/up3"], "upper!", 2);
    // link over an existing name / to a deleted name
    let e = fs::hard_link(m.p("up2"), m.p("low")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    fs::remove_file(m.p("low")).unwrap();
    fs::hard_link(m.p("up2"), m.p("low")).expect("link onto a whiteout");
    same_inode(&m, &["up2", "d/up3", "low"], "upper!", 3);
    same_inode(&m, &["d/low2"], "changed", 1);
    m.remount();
    same_inode(&m, &["up2", "d/up3", "low"], "upper!", 3);
    same_inode(&m, &["d/low2"], "changed", 1);
}

#[test]
fn link_of_a_lower_hard_linked_file() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    fs::hard_link(m.p("b"), m.p("e")).unwrap();
    same_inode(&m, &["a", "b", "d/c", "e"], "original", 4);
    fs::write(m.p("e"), "via e").unwrap();
    same_inode(&m, &["a", "b", "d/c", "e"], "via e", 4);
    m.remount();
    same_inode(&m, &["d/c", "e", "a", "b"], "via e", 4);
}

#[test]
fn a_file_open_through_one_name_sees_writes_through_another() {
    let l = lower_with_links();
    let m = Mount::new(&l.lowerdirs());
    let reader = fs::File::open(m.p("a")).unwrap();
    fs::write(m.p("b"), "written via b").unwrap();
    use std::io::{Read, Seek};
    let mut s = String::new();
    (&reader).rewind().unwrap();
    (&reader).read_to_string(&mut s).unwrap();
    assert_eq!(s, "written via b");
}

#[test]
fn rename_over_one_name_and_exchange_another() {
    let l = lower_with_links();
    let mut m = Mount::new(&l.lowerdirs());
    same_inode(&m, &["a", "b", "d/c"], "original", 3);
    // x replaces b: a and d/c lose one link
    fs::rename(m.p("x"), m.p("b")).unwrap();
    assert_eq!(read(&m.p("b")), "x");
    same_inode(&m, &["a", "d/c"], "original", 2);
    // exchange d/c (not the name first looked up) with top
    rename2(&m.p("d/c"), &m.p("top"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(read(&m.p("d/c")), "t");
    same_inode(&m, &["a", "top"], "original", 2);
    m.remount();
    same_inode(&m, &["top", "a"], "original", 2);
    assert_eq!(read(&m.p("d/c")), "t");
    assert_eq!(read(&m.p("b")), "x");
}

#[test]
fn rename_of_hard_linked_and_same_inode_names() {
    let mut l = Layers::new();
    l.add().file("a", "data").hardlink("a", "b").file("c", "c");
    let mut m = Mount::new(&l.lowerdirs());
    // two names of one inode: rename does nothing
    fs::rename(m.p("a"), m.p("b")).unwrap();
    assert_eq!(ls(&m.p("")), vec!["a", "b", "c"]);
    // look a up first, then move b: b is the name that must move
    let i = ino(&m.p("a"));
    fs::rename(m.p("b"), m.p("b2")).expect("rename of the second name");
    assert_eq!(ls(&m.p("")), vec!["a", "b2", "c"]);
    assert_eq!(read(&m.p("b2")), "data");
    assert_eq!(ino(&m.p("b2")), i);
    assert_eq!(fs::metadata(m.p("a")).unwrap().nlink(), 2);
    fs::write(m.p("b2"), "new").unwrap();
    assert_eq!(read(&m.p("a")), "new");
    m.remount();
    assert_eq!(ls(&m.p("")), vec!["a", "b2", "c"]);
    assert_eq!(read(&m.p("a")), "new");
    assert_eq!(read(&m.p("b2")), "new");
    assert_eq!(ino(&m.p("b2")), i);
    assert_eq!(fs::metadata(m.p("b2")).unwrap().nlink(), 2);
}
