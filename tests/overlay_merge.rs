//! The merged view through a real `layerfs-overlay` mount: lookup, getattr and readdir
//! over many layers, every whiteout and opaque dialect, big directories, reads (mmap
//! included), symlinks and xattrs. Needs root and /dev/fuse.
#![allow(unsafe_code, clippy::unwrap_used)]

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

use common::mount::*;

#[test]
fn upper_layers_win_and_every_whiteout_dialect_hides() {
    let mut ls_ = Layers::new();
    let l1 = ls_.add();
    l1.file("a", "a1")
        .file("b", "b1")
        .file("c", "c1")
        .file("d", "d1")
        .file("e", "e1");
    l1.file("dir/x", "x1")
        .file("dir/y", "y1")
        .file("keep/k", "k1");
    let l2 = ls_.add();
    l2.file("a", "a2")
        .whiteout("b")
        .wh_file("c")
        .file("dir/z", "z2")
        .whiteout("dir/x");
    let l3 = ls_.add();
    l3.file("a", "a3")
        .file("b", "b3-readded")
        .wh_file("dir/y")
        .file("e", "")
        .xattr("e", "trusted.overlay.whiteout", b"")
        // the layer root holds xattr whiteouts (Linux 6.8's marking)
        .xattr("", "trusted.overlay.opaque", b"x");
    let m = Mount::new(&ls_.lowerdirs());
    assert_eq!(read(&m.p("a")), "a3", "topmost layer wins");
    assert_eq!(
        read(&m.p("b")),
        "b3-readded",
        "a name whited out below can be added again"
    );
    assert!(!exists(&m.p("c")), ".wh. file hides the lower entry");
    assert_eq!(read(&m.p("d")), "d1");
    assert_eq!(
        ls(&m.p("dir")),
        vec!["z"],
        "char 0/0 and .wh. whiteouts both hide"
    );
    assert_eq!(ls(&m.p("")), vec!["a", "b", "d", "dir", "keep"]);
    assert!(
        !exists(&m.p("e")),
        "an xattr whiteout hides the lower entry"
    );
    assert!(!exists(&m.p(".wh.c")), "whiteout markers are never visible");
    assert!(!exists(&m.p("dir/.wh.y")));
}

#[test]
fn opaque_directories_in_every_dialect() {
    let mut l = Layers::new();
    let low = l.add();
    for d in ["t", "u", "w", "f"] {
        low.file(&format!("{d}/old"), "old")
            .file(&format!("{d}/same"), "old");
    }
    let top = l.add();
    top.opaque("t").file("t/new", "new").file("t/same", "new");
    top.opaque_user("u").file("u/new", "new");
    top.opaque_wh("w").file("w/new", "new");
    top.dir("f")
        .xattr("f", "user.fuseoverlayfs.opaque", b"y")
        .file("f/new", "new");
    let m = Mount::new(&l.lowerdirs());
    assert_eq!(ls(&m.p("t")), vec!["new", "same"]);
    assert_eq!(read(&m.p("t/same")), "new");
    assert_eq!(ls(&m.p("u")), vec!["new"]);
    assert_eq!(
        ls(&m.p("w")),
        vec!["new"],
        ".wh..wh..opq hides the lower entries and itself"
    );
    assert_eq!(ls(&m.p("f")), vec!["new"]);
    assert!(!exists(&m.p("t/old")));
    assert!(!exists(&m.p("w/.wh..wh..opq")));
    // The marker xattrs are internal.
    for d in ["t", "u", "f"] {
        let names = xattr_names(&m.p(d));
        assert!(
            names.iter().all(|n| !n.contains("overlay")),
            "{d}: {names:?}"
        );
    }
}

#[test]
fn a_hundred_layers() {
    let mut l = Layers::new();
    for i in 0..100 {
        let layer = l.add();
        layer.file(&format!("shared/f{i:03}"), &format!("{i}"));
        layer.file("top", &format!("{i}"));
        if i % 10 == 9 {
            // every tenth layer deletes the file of the layer below
            layer.whiteout(&format!("shared/f{:03}", i - 1));
        }
    }
    let m = Mount::new(&l.lowerdirs());
    assert_eq!(read(&m.p("top")), "99");
    let names = ls(&m.p("shared"));
    assert_eq!(names.len(), 90, "100 files minus 10 whited out");
    assert!(!names.contains(&"f008".to_string()));
    assert!(names.contains(&"f009".to_string()));
    assert_eq!(read(&m.p("shared/f000")), "0");
    // each name once, inode numbers distinct
    let mut inos: Vec<u64> = names
        .iter()
        .map(|n| ino(&m.p(&format!("shared/{n}"))))
        .collect();
    inos.sort();
    inos.dedup();
    assert_eq!(inos.len(), 90, "inode numbers are unique across layers");
}

/// Lists with telldir/seekdir through libc, to check offsets across getdents calls.
fn list_with_seek(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut all = Vec::new();
    let mut after_seek = Vec::new();
    // SAFETY: plain libc directory stream use on a path we own; entries are copied out
    // before the next readdir.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let mut mark = None;
        loop {
            if all.len() == 1500 {
                mark = Some(libc::telldir(d));
            }
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            all.push(name);
        }
        if let Some(pos) = mark {
            libc::seekdir(d, pos);
            loop {
                let e = libc::readdir(d);
                if e.is_null() {
                    break;
                }
                after_seek.push(
                    std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
        libc::closedir(d);
    }
    (all, after_seek)
}

#[test]
fn big_merged_directory_lists_every_name_once_with_stable_offsets() {
    let mut l = Layers::new();
    let a = l.add();
    let b = l.add();
    let c = l.add();
    for i in 0..3000 {
        // long names so the listing needs many getdents calls
        let name = format!("big/{:0>200}", i);
        match i % 3 {
            0 => a.file(&name, "a"),
            1 => b.file(&name, "b"),
            _ => c.file(&name, "c"),
        };
        if i % 7 == 0 {
            // also present in a lower layer: must show once
            a.file(&name, "dup");
        }
    }
    let m = Mount::new(&l.lowerdirs());
    let (all, after_seek) = list_with_seek(&m.p("big"));
    let mut names: Vec<&String> = all.iter().filter(|n| *n != "." && *n != "..").collect();
    assert_eq!(names.len(), 3000);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3000, "no duplicates");
    assert_eq!(
        after_seek,
        all[1500..].to_vec(),
        "seekdir to a telldir position resumes there"
    );
}

#[test]
fn reads_mmap_symlinks_and_xattrs() {
    let mut l = Layers::new();
    let low = l.add();
    let data: Vec<u8> = (0..(3 << 20)).map(|i: u32| (i % 251) as u8).collect();
    low.bytes("big.bin", &data);
    low.symlink("rel", "big.bin")
        .symlink("abs", "/etc/passwd")
        .symlink("dangling", "/nope");
    low.file("x", "x")
        .xattr("x", "user.test", b"hello")
        .xattr("x", "user.empty", b"");
    low.xattr("x", "trusted.overlay.layerfs.origin", b"1234");
    let top = l.add();
    top.file("y", "y");
    let m = Mount::new(&l.lowerdirs());
    assert_eq!(fs::read(m.p("big.bin")).unwrap(), data);
    assert_eq!(
        fs::read(m.p("rel")).unwrap(),
        data,
        "relative symlink resolves inside the mount"
    );
    assert_eq!(
        fs::read_link(m.p("abs")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(m.p("dangling")).unwrap().to_str(),
        Some("/nope")
    );
    // mmap of a lower file
    let f = fs::File::open(m.p("big.bin")).unwrap();
    // SAFETY: read-only private mapping of a file we keep open; unmapped before return.
    unsafe {
        use std::os::fd::AsRawFd;
        let len = data.len();
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts(p as *const u8, len);
        assert_eq!(s, &data[..]);
        libc::munmap(p, len);
    }
    assert_eq!(
        getxattr(&m.p("x"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(getxattr(&m.p("x"), "user.empty").as_deref(), Some(&b""[..]));
    let names = xattr_names(&m.p("x"));
    assert_eq!(
        names,
        vec!["user.empty", "user.test"],
        "internal xattrs are hidden"
    );
    assert_eq!(getxattr(&m.p("x"), "trusted.overlay.layerfs.origin"), None);
    let meta = fs::symlink_metadata(m.p("big.bin")).unwrap();
    assert_eq!(meta.len(), data.len() as u64);
    assert_eq!(meta.nlink(), 1);
}

#[test]
fn read_only_mount_refuses_writes() {
    let mut l = Layers::new();
    l.add().file("a", "a");
    let m = Mount::read_only(&l.lowerdirs());
    assert_eq!(read(&m.p("a")), "a");
    let e = fs::write(m.p("a"), "b").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::create_dir(m.p("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn directory_nlink_counts_merged_subdirectories() {
    let mut l = Layers::new();
    let a = l.add();
    a.dir("d/s1").dir("d/s2");
    let b = l.add();
    b.dir("d/s3").dir("d/s1").whiteout("d/s2");
    let m = Mount::new(&l.lowerdirs());
    assert_eq!(fs::metadata(m.p("d")).unwrap().nlink(), 2 + 2, "s1 and s3");
    fs::create_dir(m.p("d/s4")).unwrap();
    assert_eq!(fs::metadata(m.p("d")).unwrap().nlink(), 2 + 3);
}

#[test]
fn xattr_whiteouts_hide_where_kernel_overlayfs_hides_them() {
    let mut l = Layers::new();
    l.add()
        .file("d/gone", "below")
        .file("d/kept", "below")
        .file("d/plain", "below")
        .file("top", "below");
    l.add()
        // a directory marked as holding xattr whiteouts: empty files with the xattr hide
        .dir("d")
        .xattr("d", "trusted.overlay.opaque", b"x")
        .file("d/gone", "")
        .xattr("d/gone", "trusted.overlay.whiteout", b"")
        .file("d/new", "new")
        // not empty: not a whiteout
        .file("d/kept", "data")
        .xattr("d/kept", "trusted.overlay.whiteout", b"");
    let lowers = l.lowerdirs();
    let k = KernelOverlay::new(&lowers, false);
    let m = Mount::read_only(&lowers);
    for d in ["", "d"] {
        assert_eq!(ls(&m.p(d)), ls(&k.mp.join(d)), "listing of /{d}");
        for n in ls(&k.mp.join(d)) {
            let rel = if d.is_empty() { n } else { format!("{d}/{n}") };
            if std::fs::metadata(k.mp.join(&rel)).unwrap().is_file() {
                assert_eq!(read(&m.p(&rel)), read(&k.mp.join(&rel)), "{rel}");
            }
        }
    }
    assert!(!exists(&m.p("d/gone")));
    assert_eq!(read(&m.p("d/kept")), "data");
}
