//! unlink and rmdir through a real mount (issue 3, item 5): whiteouts left for lower
//! entries and nothing for upper-only ones, rmdir of lower and merged directories
//! (whiteouts inside do not count), opaque re-creation that survives a remount, and
//! `rm -rf` of a big tree merged from three layers. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use common::mount::*;
use common::sh;

#[test]
fn unlink_lower_file_leaves_a_whiteout_upper_file_leaves_nothing() {
    let mut l = Layers::new();
    l.add()
        .file("low", "l")
        .file("d/low", "l")
        .file("both", "1");
    l.add().file("both", "2");
    let m = Mount::new(&l.lowerdirs());
    fs::write(m.p("new"), "n").unwrap();
    fs::write(m.p("d/new"), "n").unwrap();

    fs::remove_file(m.p("low")).unwrap();
    fs::remove_file(m.p("d/low")).unwrap();
    fs::remove_file(m.p("both")).unwrap();
    fs::remove_file(m.p("new")).unwrap();
    fs::remove_file(m.p("d/new")).unwrap();

    assert!(!exists(&m.p("low")) && !exists(&m.p("both")) && !exists(&m.p("d/low")));
    assert_eq!(ls(&m.p("")), vec!["d"]);
    assert!(ls(&m.p("d")).is_empty());
    assert!(is_whiteout(&m.up("low")), "lower file: whiteout in upper");
    assert!(is_whiteout(&m.up("d/low")));
    assert!(
        is_whiteout(&m.up("both")),
        "name in two lower layers: one whiteout"
    );
    assert!(!exists(&m.up("new")), "upper-only file: nothing left");
    assert!(!exists(&m.up("d/new")));
    assert_eq!(
        errno(fs::remove_file(m.p("low"))),
        libc::ENOENT,
        "a whited-out name is gone"
    );
    assert_eq!(errno(fs::remove_file(m.p("d"))), libc::EISDIR);
    assert!(staged(&m).is_empty(), "nothing left in staging");
}

#[test]
fn unlink_a_copied_up_file_and_special_files() {
    let mut l = Layers::new();
    l.add()
        .file("f", "lower")
        .symlink("s", "f")
        .fifo("p")
        .file("meta", "m");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("f"), "changed").unwrap(); // full copy-up
    sh(&format!("chmod 600 {}", m.p("meta").display())); // metadata-only copy-up
    for n in ["f", "s", "p", "meta"] {
        fs::remove_file(m.p(n)).unwrap_or_else(|e| panic!("rm {n}: {e}"));
        assert!(!exists(&m.p(n)), "{n}");
        assert!(
            is_whiteout(&m.up(n)),
            "{n}: whiteout replaces the upper copy"
        );
    }
    assert!(ls(&m.p("")).is_empty());
    m.remount();
    assert!(ls(&m.p("")).is_empty(), "still gone after remount");
    assert!(staged(&m).is_empty());
}

#[test]
fn unlink_then_recreate_the_same_name() {
    let mut l = Layers::new();
    l.add().file("f", "lower").file("d/g", "lower");
    let mut m = Mount::new(&l.lowerdirs());
    fs::remove_file(m.p("f")).unwrap();
    fs::write(m.p("f"), "new").unwrap();
    assert_eq!(read(&m.p("f")), "new");
    assert!(!is_whiteout(&m.up("f")));
    assert_eq!(ls(&m.p("")), vec!["d", "f"]);
    // and again, with a different type
    fs::remove_file(m.p("f")).unwrap();
    assert!(is_whiteout(&m.up("f")));
    std::os::unix::fs::symlink("target", m.p("f")).unwrap();
    assert_eq!(fs::read_link(m.p("f")).unwrap().to_str(), Some("target"));
    fs::remove_file(m.p("f")).unwrap();
    fs::create_dir(m.p("f")).unwrap();
    assert!(m.p("f").is_dir());
    // upper file created, removed, created again
    fs::remove_file(m.p("d/g")).unwrap();
    for i in 0..3 {
        fs::write(m.p("d/g"), format!("v{i}")).unwrap();
        assert_eq!(read(&m.p("d/g")), format!("v{i}"));
        fs::remove_file(m.p("d/g")).unwrap();
        assert!(!exists(&m.p("d/g")));
        assert!(is_whiteout(&m.up("d/g")), "the lower g stays hidden");
    }
    fs::write(m.p("d/g"), "last").unwrap();
    m.remount();
    assert_eq!(read(&m.p("d/g")), "last");
    assert!(m.p("f").is_dir());
    assert!(ls(&m.p("f")).is_empty());
    assert!(staged(&m).is_empty());
}

#[test]
fn rmdir_of_lower_merged_and_non_empty_directories() {
    let mut l = Layers::new();
    let a = l.add();
    a.dir("lower_only")
        .file("merged/a", "a")
        .file("full/a", "a")
        .dir("merged_empty");
    let b = l.add();
    b.file("merged/b", "b")
        .whiteout("merged/a")
        .dir("merged_empty")
        .file("full/b", "b");
    let c = l.add();
    c.dir("merged").whiteout("merged/b").dir("full");
    let mut m = Mount::new(&l.lowerdirs());

    fs::remove_dir(m.p("lower_only")).unwrap();
    assert!(is_whiteout(&m.up("lower_only")));
    assert!(ls(&m.p("merged")).is_empty(), "all whited out below");
    fs::remove_dir(m.p("merged")).expect("whiteouts inside do not count");
    assert!(is_whiteout(&m.up("merged")));
    fs::remove_dir(m.p("merged_empty")).unwrap();

    assert_eq!(errno(fs::remove_dir(m.p("full"))), libc::ENOTEMPTY);
    fs::remove_file(m.p("full/a")).unwrap();
    assert_eq!(
        errno(fs::remove_dir(m.p("full"))),
        libc::ENOTEMPTY,
        "b is still there in another layer"
    );
    fs::remove_file(m.p("full/b")).unwrap();
    fs::remove_dir(m.p("full")).expect("empty once every layer's entry is gone");
    assert_eq!(ls(&m.p("")), Vec::<String>::new());
    assert_eq!(errno(fs::remove_dir(m.p("full"))), libc::ENOENT);

    // an upper-only directory leaves nothing
    fs::create_dir(m.p("newdir")).unwrap();
    fs::write(m.p("newdir/x"), "x").unwrap();
    assert_eq!(errno(fs::remove_dir(m.p("newdir"))), libc::ENOTEMPTY);
    fs::remove_file(m.p("newdir/x")).unwrap();
    fs::remove_dir(m.p("newdir")).unwrap();
    assert!(!exists(&m.up("newdir")));

    // a file is not a directory
    fs::write(m.p("file"), "").unwrap();
    assert_eq!(errno(fs::remove_dir(m.p("file"))), libc::ENOTDIR);
    m.remount();
    assert_eq!(ls(&m.p("")), vec!["file"]);
    assert!(staged(&m).is_empty());
}

#[test]
fn directory_recreated_over_a_deleted_one_is_opaque_also_after_remount() {
    let mut l = Layers::new();
    l.add()
        .file("d/old1", "1")
        .file("d/sub/old2", "2")
        .file("e/x", "x");
    l.add().file("d/old3", "3");
    let mut m = Mount::new(&l.lowerdirs());
    sh(&format!("rm -rf {}", m.p("d").display()));
    assert!(!exists(&m.p("d")));
    fs::create_dir(m.p("d")).unwrap();
    assert!(
        ls(&m.p("d")).is_empty(),
        "old lower content must not reappear"
    );
    assert_eq!(
        getxattr(&m.up("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    fs::write(m.p("d/new"), "n").unwrap();
    assert_eq!(ls(&m.p("d")), vec!["new"]);
    assert!(!exists(&m.p("d/sub/old2")));
    // a file replaced by a directory and back
    fs::remove_file(m.p("e/x")).unwrap();
    fs::create_dir(m.p("e/x")).unwrap();
    assert!(ls(&m.p("e/x")).is_empty());
    m.remount();
    assert_eq!(ls(&m.p("d")), vec!["new"]);
    assert!(!exists(&m.p("d/old1")));
    assert!(!exists(&m.p("d/sub")));
    assert!(m.p("e/x").is_dir());
    // a second rmdir + mkdir cycle stays opaque
    fs::remove_file(m.p("d/new")).unwrap();
    fs::remove_dir(m.p("d")).unwrap();
    assert!(is_whiteout(&m.up("d")));
    fs::create_dir(m.p("d")).unwrap();
    assert!(ls(&m.p("d")).is_empty());
    m.remount();
    assert!(ls(&m.p("d")).is_empty());
    assert!(staged(&m).is_empty());
}

#[test]
fn rm_rf_of_a_big_tree_merged_from_three_layers() {
    let mut l = Layers::new();
    let layers = [l.add(), l.add(), l.add()];
    // 25 dirs x 90 files spread over 3 layers, every tenth in all of them, plus some
    // deeper dirs and symlinks
    for (li, layer) in layers.iter().enumerate() {
        for d in 0..25 {
            for f in 0..90 {
                if f % 3 == li || f % 10 == 0 {
                    layer.file(&format!("tree/d{d:02}/f{f:03}"), "x");
                }
            }
            layer.file(&format!("tree/d{d:02}/deep/l{li}/file"), "y");
            layer.symlink(&format!("tree/d{d:02}/link{li}"), "f001");
        }
    }
    layers[2].whiteout("tree/d05/f001");
    let mut m = Mount::new(&l.lowerdirs());
    let before = sh(&format!("find {} | wc -l", m.p("tree").display()));
    let n: usize = String::from_utf8_lossy(&before.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(n > 2300, "big enough: {n} entries");
    // a few entries copied up or created first
    fs::write(m.p("tree/d00/f001"), "changed").unwrap();
    fs::write(m.p("tree/d01/newfile"), "new").unwrap();
    fs::create_dir(m.p("tree/d02/newdir")).unwrap();
    let out = sh(&format!("rm -rf {}", m.p("tree").display()));
    assert!(
        out.status.success(),
        "rm -rf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ls(&m.p("")).is_empty(), "an empty view");
    assert!(is_whiteout(&m.up("tree")));
    assert!(staged(&m).is_empty());
    m.remount();
    assert!(ls(&m.p("")).is_empty());
    // the lower layers are untouched
    assert!(layers[0].p("tree/d00/f000").exists());
    assert_eq!(
        fs::read_to_string(layers[1].p("tree/d00/f001")).unwrap(),
        "x"
    );
}

#[test]
fn unlink_while_open_keeps_the_data_reachable_through_the_fd() {
    let mut l = Layers::new();
    l.add()
        .file("low", "lower data")
        .file("low_rw", "lower data");
    let m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), "upper data").unwrap();

    let r_low = fs::File::open(m.p("low")).unwrap();
    let mut rw_low = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("low_rw"))
        .unwrap();
    let mut rw_up = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(m.p("up"))
        .unwrap();
    for n in ["low", "low_rw", "up"] {
        fs::remove_file(m.p(n)).unwrap();
    }
    assert!(ls(&m.p("")).is_empty());
    use std::io::{Read, Seek, SeekFrom};
    let mut s = String::new();
    (&r_low).read_to_string(&mut s).unwrap();
    assert_eq!(s, "lower data");
    assert_eq!(r_low.metadata().unwrap().nlink(), 0);

    rw_low.write_all(b"LOWER").unwrap();
    rw_low.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    rw_low.read_to_string(&mut s).unwrap();
    assert_eq!(s, "LOWER data");
    assert_eq!(rw_low.metadata().unwrap().nlink(), 0);
    assert_eq!(rw_low.metadata().unwrap().len(), 10);

    rw_up.write_all(b"+more").unwrap();
    rw_up.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    rw_up.read_to_string(&mut s).unwrap();
    assert_eq!(s, "upper data+more");
    let meta = rw_up.metadata().unwrap();
    assert_eq!(meta.nlink(), 0);
    assert_eq!(meta.len(), 15);
    // new files with the same names are new files
    fs::write(m.p("up"), "other").unwrap();
    s.clear();
    rw_up.seek(SeekFrom::Start(0)).unwrap();
    rw_up.read_to_string(&mut s).unwrap();
    assert_eq!(s, "upper data+more", "the open file is not the new one");
    assert_eq!(read(&m.p("up")), "other");
    drop((r_low, rw_low, rw_up));
    assert!(
        staged(&m).is_empty(),
        "the staged copies went with the last close"
    );
}
