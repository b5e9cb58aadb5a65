//! The layer unpacker on arbitrary tar bytes: never a panic, and nothing written outside
//! the destination. Each input unpacks into `RUN/dest`; `RUN/canary` (a sibling that
//! seeds reach with `../canary` symlinks) must stay empty and `RUN` must hold nothing
//! else afterwards.
#![no_main]

#[path = "common/layer.rs"]
mod layer;

use std::os::fd::AsFd;
use std::path::Path;

use layer::{base, opts};
use layerfs::store::unpack::unpack;
use libfuzzer_sys::fuzz_target;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let opts = opts();
    let run = tempfile::tempdir_in(base()).expect("run directory");
    let dest = run.path().join("dest");
    let canary = run.path().join("canary");
    std::fs::create_dir(&dest).expect("dest");
    std::fs::create_dir(&canary).expect("canary");
    let fd = std::fs::File::open(&dest).expect("open dest");
    let _ = unpack(data, fd.as_fd(), opts);
    drop(fd);
    assert_eq!(
        names(run.path()),
        ["canary", "dest"],
        "wrote beside the destination"
    );
    assert!(
        names(&canary).is_empty(),
        "wrote through a symlink out of the destination"
    );
    // Everything unpacked goes with the run directory (removal copes with modes 000).
    let _ = layerfs::store::fsops::remove_tree(run.path());
});
