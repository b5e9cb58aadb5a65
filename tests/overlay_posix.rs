//! POSIX behaviour of the merged view where union filesystems go wrong (TRAPS.md):
//! O_TRUNC, long names and paths, the caller's umask, parent timestamps, privilege bits,
//! sticky directories and rename permissions, copy-up staging. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
#![allow(unsafe_code)]

mod common {
    pub mod mount;
}

use std::fs;
use std::io::Write;

use common::mount::*;

#[test]
fn o_trunc_truncates_files_that_already_have_an_upper_copy() {
    let mut l = Layers::new();
    l.add()
        .file("low", "lower content")
        .file("low2", "lower content");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), "long upper content").unwrap();
    fs::write(m.p("up"), "x").unwrap();
    assert_eq!(read(&m.p("up")), "x", "upper-only file");
    fs::write(m.p("low"), "copied up").unwrap();
    fs::write(m.p("low"), "y").unwrap();
    assert_eq!(read(&m.p("low")), "y", "copied-up file");
    // metadata-only copy-up first, then O_TRUNC
    sh(&format!("chmod 600 {}", m.p("low2").display()));
    fs::write(m.p("low2"), "z").unwrap();
    assert_eq!(read(&m.p("low2")), "z", "metacopy file");
    // O_TRUNC without writing anything
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("low"))
        .unwrap();
    assert_eq!(read(&m.p("low")), "");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("up"))
        .unwrap();
    f.write_all(b"ab").unwrap();
    drop(f);
    m.remount();
    assert_eq!(read(&m.p("up")), "ab");
    assert_eq!(read(&m.p("low")), "");
    assert_eq!(read(&m.p("low2")), "z");
    assert_eq!(
        fs::read_to_string(l.layers[0].p("low")).unwrap(),
        "lower content",
        "the lower layer is never truncated"
    );
}
