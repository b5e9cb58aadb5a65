//! Many processes at once on one mount (the daemon is multi-threaded): copy-up races,
//! creates and deletes in one directory, listings while it changes. Needs root and
//! /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::thread;

use common::mount::*;

#[test]
fn concurrent_copy_up_of_one_file_copies_once_and_loses_no_write() {
    let mut l = Layers::new();
    let data = vec![b'.'; 4 << 20];
    l.add().bytes("shared", &data);
    let m = Mount::new(&l.lowerdirs());
    let path = m.p("shared");
    let ino_before = ino(&path);
    thread::scope(|s| {
        for t in 0..8 {
            let path = path.clone();
            s.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(format!("<{t}>").as_bytes()).unwrap();
            });
        }
    });
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len(), data.len() + 8 * 3, "every append landed once");
    assert!(got[..data.len()].iter().all(|b| *b == b'.'));
    for t in 0..8 {
        let needle = format!("<{t}>");
        assert!(
            got[data.len()..].windows(3).any(|w| w == needle.as_bytes()),
            "{needle} missing"
        );
    }
    assert_eq!(ino(&path), ino_before);
    assert!(ls(&m.work.as_ref().unwrap().join("layerfs-tmp")).is_empty());
}

#[test]
fn concurrent_creates_deletes_and_listings_in_one_directory() {
    let mut l = Layers::new();
    let low = l.add();
    for i in 0..200 {
        low.file(&format!("d/lower{i}"), "l");
    }
    let m = Mount::new(&l.lowerdirs());
    let dir = m.p("d");
    thread::scope(|s| {
        for t in 0..4 {
            let dir = dir.clone();
            s.spawn(move || {
                for i in 0..200 {
                    let p = dir.join(format!("t{t}-{i}"));
                    fs::write(&p, "x").unwrap();
                    if i % 2 == 0 {
                        fs::remove_file(&p).unwrap();
                    }
                }
                // each thread also deletes its share of the lower files
                for i in (t..200).step_by(4) {
                    if i % 5 == 0 {
                        fs::remove_file(dir.join(format!("lower{i}"))).unwrap();
                    }
                }
            });
        }
        let dir = dir.clone();
        s.spawn(move || {
            for _ in 0..20 {
                let names = ls(&dir);
                let mut sorted = names.clone();
                sorted.dedup();
                assert_eq!(names.len(), sorted.len(), "a listing never repeats a name");
            }
        });
    });
    let names = ls(&dir);
    assert_eq!(names.len(), 4 * 100 + 200 - 40);
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("lower") || n[5..].parse::<u32>().unwrap() % 5 != 0)
    );
    for n in &names {
        assert!(fs::symlink_metadata(dir.join(n)).unwrap().nlink() >= 1);
    }
}

#[test]
fn parallel_readers_of_lower_files() {
    let mut l = Layers::new();
    let low = l.add();
    let data: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 241) as u8).collect();
    low.bytes("big", &data);
    let m = Mount::new(&l.lowerdirs());
    thread::scope(|s| {
        for _ in 0..4 {
            let p = m.p("big");
            let data = &data;
            s.spawn(move || assert_eq!(&fs::read(&p).unwrap(), data));
        }
    });
}
