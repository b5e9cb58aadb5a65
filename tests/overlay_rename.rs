//! rename(2) and renameat2(2) through a real mount (issue 3, item 6): files and
//! directories from every layer, merged directories, across and into deeper
//! directories, never EXDEV; RENAME_NOREPLACE and RENAME_EXCHANGE; renames onto
//! whiteouts, over lower entries, over empty and non-empty merged directories; repeated
//! renames; everything checked again after a remount. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::mount::*;
use common::{sh, walk_tree};

/// A whole tree below `root`: relative path → content ("<dir>" for directories,
/// "-> target" for symlinks).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk_tree(root, &mut |rel, e, _| {
        let ft = e.file_type().unwrap();
        let shown = if ft.is_dir() {
            "<dir>".into()
        } else if ft.is_symlink() {
            format!("-> {}", fs::read_link(e.path()).unwrap().display())
        } else {
            fs::read_to_string(e.path()).unwrap()
        };
        out.insert(rel.to_string(), shown);
        true
    });
    out
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A directory `m` with content in three layers, whiteouts and a subdirectory that is
/// merged too.
fn three_layer_dir(l: &mut Layers) {
    let a = l.add();
    a.file("m/a", "a1")
        .file("m/gone", "g")
        .file("m/sub/s1", "s1")
        .file("m/sub/deep/x", "x")
        .file("other/o", "o");
    let b = l.add();
    b.file("m/b", "b2")
        .file("m/a", "a2")
        .whiteout("m/gone")
        .file("m/sub/s2", "s2")
        .symlink("m/link", "b");
    let c = l.add();
    c.file("m/c", "c3").file("m/sub/s3", "s3").dir("deeper/x");
}

fn three_layer_content() -> BTreeMap<String, String> {
    map(&[
        ("a", "a2"),
        ("b", "b2"),
        ("c", "c3"),
        ("link", "-> b"),
        ("sub", "<dir>"),
        ("sub/s1", "s1"),
        ("sub/s2", "s2"),
        ("sub/s3", "s3"),
        ("sub/deep", "<dir>"),
        ("sub/deep/x", "x"),
    ])
}

#[test]
fn rename_files_from_every_layer_across_directories() {
    let mut l = Layers::new();
    l.add()
        .file("low", "low")
        .file("d1/low2", "low2")
        .dir("d2/deep/er")
        .file("hidden", "old lower");
    l.add().file("mid", "mid");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), "up").unwrap();
    let ino_low = ino(&m.p("low"));
    let ino_mid = ino(&m.p("mid"));
    let ino_low2 = ino(&m.p("d1/low2"));

    fs::rename(m.p("low"), m.p("low.renamed")).unwrap();
    fs::rename(m.p("mid"), m.p("d1/mid")).unwrap();
    fs::rename(m.p("up"), m.p("d2/deep/er/up")).unwrap();
    fs::rename(m.p("d1/low2"), m.p("d2/deep/low2")).unwrap();
    fs::remove_file(m.p("hidden")).unwrap();
    fs::rename(m.p("d2/deep/low2"), m.p("hidden")).unwrap();

    let expect = map(&[
        ("low.renamed", "low"),
        ("d1", "<dir>"),
        ("d1/mid", "mid"),
        ("d2", "<dir>"),
        ("d2/deep", "<dir>"),
        ("d2/deep/er", "<dir>"),
        ("d2/deep/er/up", "up"),
        ("hidden", "low2"),
    ]);
    assert_eq!(tree(&m.p("")), expect);
    assert!(is_whiteout(&m.up("low")));
    assert!(is_whiteout(&m.up("mid")));
    assert!(is_whiteout(&m.up("d1/low2")));
    assert!(!exists(&m.up("up")), "an upper-only name leaves nothing");
    assert_eq!(ino(&m.p("low.renamed")), ino_low, "st_ino survives rename");
    assert_eq!(ino(&m.p("d1/mid")), ino_mid);
    assert_eq!(ino(&m.p("hidden")), ino_low2);
    m.remount();
    assert_eq!(tree(&m.p("")), expect);
    assert_eq!(ino(&m.p("low.renamed")), ino_low);
    assert_eq!(ino(&m.p("hidden")), ino_low2);
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_a_merged_directory_never_exdev_and_keeps_its_content() {
    let mut l = Layers::new();
    three_layer_dir(&mut l);
    let mut m = Mount::new(&l.lowerdirs());
    let content = three_layer_content();
    assert_eq!(tree(&m.p("m")), content);
    let dir_ino = ino(&m.p("m"));
    let sub_ino = ino(&m.p("m/sub"));

    fs::rename(m.p("m"), m.p("n")).expect("rename of a merged directory");
    assert!(!exists(&m.p("m")));
    assert_eq!(tree(&m.p("n")), content);
    assert_eq!(ino(&m.p("n")), dir_ino, "a renamed directory keeps st_ino");
    assert_eq!(ino(&m.p("n/sub")), sub_ino);
    assert!(getxattr(&m.up("n"), "trusted.overlay.redirect").is_some());

    // into a deeper directory of another merged parent
    fs::rename(m.p("n"), m.p("deeper/x/n2")).unwrap();
    assert_eq!(tree(&m.p("deeper/x/n2")), content);
    // a subdirectory of the moved directory moves on its own
    fs::rename(m.p("deeper/x/n2/sub"), m.p("sub_moved")).unwrap();
    let mut rest = content.clone();
    rest.retain(|k, _| !k.starts_with("sub"));
    assert_eq!(tree(&m.p("deeper/x/n2")), rest);
    assert_eq!(
        tree(&m.p("sub_moved")),
        map(&[
            ("s1", "s1"),
            ("s2", "s2"),
            ("s3", "s3"),
            ("deep", "<dir>"),
            ("deep/x", "x")
        ])
    );
    // changes inside the moved directories
    fs::write(m.p("deeper/x/n2/a"), "a-new").unwrap();
    fs::remove_file(m.p("deeper/x/n2/b")).unwrap();
    fs::write(m.p("sub_moved/deep/y"), "y").unwrap();
    let before = tree(&m.p(""));
    assert!(!before.contains_key("m"));
    m.remount();
    assert_eq!(tree(&m.p("")), before, "same tree after remount");
    assert_eq!(read(&m.p("deeper/x/n2/a")), "a-new");
    assert_eq!(ino(&m.p("deeper/x/n2")), dir_ino);
    assert_eq!(ino(&m.p("sub_moved")), sub_ino);
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_a_directory_twice_back_and_inside() {
    let mut l = Layers::new();
    three_layer_dir(&mut l);
    let mut m = Mount::new(&l.lowerdirs());
    let content = three_layer_content();
    fs::rename(m.p("m"), m.p("x")).unwrap();
    fs::rename(m.p("x"), m.p("y")).unwrap();
    assert_eq!(tree(&m.p("y")), content, "renamed twice");
    fs::rename(m.p("y/a"), m.p("y/a2")).unwrap();
    fs::rename(m.p("y/sub"), m.p("y/sub2")).unwrap();
    fs::rename(m.p("y/sub2/s1"), m.p("y/s1")).unwrap();
    fs::rename(m.p("y"), m.p("m")).unwrap();
    let expect2 = map(&[
        ("a2", "a2"),
        ("b", "b2"),
        ("c", "c3"),
        ("link", "-> b"),
        ("s1", "s1"),
        ("sub2", "<dir>"),
        ("sub2/s2", "s2"),
        ("sub2/s3", "s3"),
        ("sub2/deep", "<dir>"),
        ("sub2/deep/x", "x"),
    ]);
    assert_eq!(tree(&m.p("m")), expect2, "back at the original name");
    assert_eq!(ls(&m.p("")), vec!["deeper", "m", "other"]);
    m.remount();
    assert_eq!(tree(&m.p("m")), expect2);
    assert_eq!(ls(&m.p("")), vec!["deeper", "m", "other"]);
    // and once more after the remount
    fs::rename(m.p("m"), m.p("z")).unwrap();
    fs::rename(m.p("z/sub2"), m.p("sub")).unwrap();
    assert_eq!(ls(&m.p("sub")), vec!["deep", "s2", "s3"]);
    m.remount();
    assert_eq!(ls(&m.p("sub")), vec!["deep", "s2", "s3"]);
    assert_eq!(ls(&m.p("z")), vec!["a2", "b", "c", "link", "s1"]);
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_noreplace() {
    let mut l = Layers::new();
    l.add().file("a", "a").file("b", "b").dir("d").dir("e");
    let mut m = Mount::new(&l.lowerdirs());
    let np = libc::RENAME_NOREPLACE;
    assert_eq!(errno(rename2(&m.p("a"), &m.p("b"), np)), libc::EEXIST);
    assert_eq!(errno(rename2(&m.p("d"), &m.p("e"), np)), libc::EEXIST);
    assert_eq!(errno(rename2(&m.p("a"), &m.p("d"), np)), libc::EEXIST);
    fs::write(m.p("u"), "u").unwrap();
    assert_eq!(errno(rename2(&m.p("u"), &m.p("a"), np)), libc::EEXIST);
    assert_eq!(errno(rename2(&m.p("a"), &m.p("u"), np)), libc::EEXIST);
    rename2(&m.p("a"), &m.p("c"), np).unwrap();
    rename2(&m.p("d"), &m.p("f"), np).unwrap();
    // onto a name that was deleted: free
    fs::remove_file(m.p("b")).unwrap();
    rename2(&m.p("c"), &m.p("b"), np).unwrap();
    assert_eq!(read(&m.p("b")), "a");
    assert_eq!(errno(rename2(&m.p("nope"), &m.p("x"), np)), libc::ENOENT);
    m.remount();
    assert_eq!(ls(&m.p("")), vec!["b", "e", "f", "u"]);
    assert_eq!(read(&m.p("b")), "a");
}

#[test]
fn rename_exchange_in_every_combination() {
    let mut l = Layers::new();
    let a = l.add();
    a.file("f1", "f1").file("f2", "f2").file("d1/x", "d1x");
    a.file("d2/y", "d2y").file("g", "g").file("dd/z", "low z");
    let b = l.add();
    b.file("d1/x2", "d1x2").file("h", "h");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), "up").unwrap();
    fs::create_dir(m.p("updir")).unwrap();
    fs::write(m.p("updir/u"), "u").unwrap();
    let ex = libc::RENAME_EXCHANGE;
    let i_f1 = ino(&m.p("f1"));
    let i_d1 = ino(&m.p("d1"));

    rename2(&m.p("f1"), &m.p("f2"), ex).expect("file <-> file (both lower)");
    assert_eq!(read(&m.p("f1")), "f2");
    assert_eq!(read(&m.p("f2")), "f1");
    assert_eq!(ino(&m.p("f2")), i_f1);
    rename2(&m.p("d1"), &m.p("d2"), ex).expect("dir <-> dir (merged, lower)");
    assert_eq!(ls(&m.p("d1")), vec!["y"]);
    assert_eq!(ls(&m.p("d2")), vec!["x", "x2"]);
    assert_eq!(ino(&m.p("d2")), i_d1);
    rename2(&m.p("g"), &m.p("d2"), ex).expect("file <-> dir");
    assert_eq!(read(&m.p("d2")), "g");
    assert_eq!(ls(&m.p("g")), vec!["x", "x2"]);
    rename2(&m.p("up"), &m.p("h"), ex).expect("upper <-> lower");
    assert_eq!(read(&m.p("up")), "h");
    assert_eq!(read(&m.p("h")), "up");
    rename2(&m.p("updir"), &m.p("dd"), ex).expect("upper dir <-> lower dir");
    assert_eq!(tree(&m.p("dd")), map(&[("u", "u")]));
    assert_eq!(tree(&m.p("updir")), map(&[("z", "low z")]));
    fs::create_dir(m.p("sub")).unwrap();
    rename2(&m.p("f1"), &m.p("sub/f"), ex).expect_err("no such target");
    fs::write(m.p("sub/f"), "subf").unwrap();
    rename2(&m.p("f1"), &m.p("sub/f"), ex).expect("across directories");
    assert_eq!(read(&m.p("f1")), "subf");
    assert_eq!(read(&m.p("sub/f")), "f2");

    let expect = tree(&m.p(""));
    m.remount();
    assert_eq!(tree(&m.p("")), expect);
    assert_eq!(ino(&m.p("f2")), i_f1);
    assert_eq!(ino(&m.p("g")), i_d1);
    assert_eq!(
        ls(&m.p("")),
        vec!["d1", "d2", "dd", "f1", "f2", "g", "h", "sub", "up", "updir"]
    );
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_onto_whiteouts_and_over_lower_entries() {
    let mut l = Layers::new();
    l.add()
        .file("victim", "old")
        .file("vdir/old1", "o1")
        .file("vdir/sub/old2", "o2")
        .file("src", "src")
        .file("srcdir/s", "s")
        .file("target", "lower target")
        .file("dir2/t", "t");
    l.add().file("srcdir/s2", "s2");
    let mut m = Mount::new(&l.lowerdirs());

    // a file onto a deleted file name
    fs::remove_file(m.p("victim")).unwrap();
    fs::rename(m.p("src"), m.p("victim")).unwrap();
    assert_eq!(read(&m.p("victim")), "src");
    // a merged directory onto a deleted directory name: the old content stays hidden
    sh(&format!("rm -rf {}", m.p("vdir").display()));
    fs::rename(m.p("srcdir"), m.p("vdir")).unwrap();
    assert_eq!(ls(&m.p("vdir")), vec!["s", "s2"]);
    // an upper directory onto a deleted directory name
    fs::remove_dir(m.p("vdir")).unwrap_err();
    fs::create_dir(m.p("newdir")).unwrap();
    fs::write(m.p("newdir/n"), "n").unwrap();
    sh(&format!("rm -rf {}", m.p("dir2").display()));
    fs::rename(m.p("newdir"), m.p("dir2")).unwrap();
    assert_eq!(ls(&m.p("dir2")), vec!["n"]);
    // a copied-up file over a lower one
    fs::write(m.p("victim"), "copied up").unwrap();
    fs::rename(m.p("victim"), m.p("target")).unwrap();
    assert_eq!(read(&m.p("target")), "copied up");
    assert!(!exists(&m.p("victim")));
    assert!(is_whiteout(&m.up("victim")));
    assert!(is_whiteout(&m.up("src")));
    assert!(is_whiteout(&m.up("srcdir")));
    let expect = map(&[
        ("target", "copied up"),
        ("vdir", "<dir>"),
        ("vdir/s", "s"),
        ("vdir/s2", "s2"),
        ("dir2", "<dir>"),
        ("dir2/n", "n"),
    ]);
    assert_eq!(tree(&m.p("")), expect);
    m.remount();
    assert_eq!(tree(&m.p("")), expect);
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_over_directories_and_type_errors() {
    let mut l = Layers::new();
    let a = l.add();
    a.file("src/a", "a")
        .file("empty_merged/x", "x")
        .file("full/x", "x")
        .dir("empty_lower")
        .file("file", "f")
        .dir("dir");
    let b = l.add();
    b.whiteout("empty_merged/x").file("empty_merged/y", "y");
    b.file("full/z", "z");
    let mut m = Mount::new(&l.lowerdirs());
    fs::remove_file(m.p("empty_merged/y")).unwrap();
    assert!(ls(&m.p("empty_merged")).is_empty());

    assert_eq!(errno(fs::rename(m.p("src"), m.p("full"))), libc::ENOTEMPTY);
    fs::remove_file(m.p("full/x")).unwrap();
    assert_eq!(
        errno(fs::rename(m.p("src"), m.p("full"))),
        libc::ENOTEMPTY,
        "z is still there"
    );
    assert_eq!(errno(fs::rename(m.p("src"), m.p("file"))), libc::ENOTDIR);
    assert_eq!(errno(fs::rename(m.p("file"), m.p("dir"))), libc::EISDIR);
    fs::write(m.p("upfile"), "u").unwrap();
    assert_eq!(errno(fs::rename(m.p("upfile"), m.p("dir"))), libc::EISDIR);
    fs::create_dir(m.p("updir")).unwrap();
    assert_eq!(errno(fs::rename(m.p("updir"), m.p("file"))), libc::ENOTDIR);

    fs::rename(m.p("src"), m.p("empty_merged")).expect("over an empty merged dir");
    assert_eq!(tree(&m.p("empty_merged")), map(&[("a", "a")]));
    fs::rename(m.p("updir"), m.p("empty_lower")).expect("over an empty lower dir");
    assert!(ls(&m.p("empty_lower")).is_empty());
    fs::rename(m.p("empty_merged"), m.p("empty_lower")).expect("over an empty upper dir");
    assert_eq!(tree(&m.p("empty_lower")), map(&[("a", "a")]));
    assert!(!exists(&m.p("empty_merged")));
    let expect = tree(&m.p(""));
    assert_eq!(
        ls(&m.p("")),
        vec!["dir", "empty_lower", "file", "full", "upfile"]
    );
    m.remount();
    assert_eq!(tree(&m.p("")), expect);
    assert!(staged(&m).is_empty());
}

#[test]
fn rename_is_visible_at_once_to_open_directories_and_files() {
    let mut l = Layers::new();
    l.add().file("d/f", "content").file("d/g", "g");
    let m = Mount::new(&l.lowerdirs());
    let f = fs::File::open(m.p("d/f")).unwrap();
    fs::rename(m.p("d"), m.p("e")).unwrap();
    use std::io::Read;
    let mut s = String::new();
    (&f).read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "content",
        "an open file survives the rename of its directory"
    );
    // writing to the file after its directory moved copies it up at the new place
    fs::write(m.p("e/f"), "changed").unwrap();
    assert_eq!(read(&m.p("e/f")), "changed");
    assert_eq!(ls(&m.p("e")), vec!["f", "g"]);
    assert!(exists(&m.up("e/f")));
    assert!(!exists(&m.p("d")));
}
