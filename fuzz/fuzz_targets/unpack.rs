//! The layer unpacker on arbitrary tar bytes: never a panic, and nothing written outside
//! the destination. Each input unpacks into `RUN/dest`; `RUN/canary` (a sibling that
//! seeds reach with `../canary` symlinks) must stay empty and `RUN` must hold nothing
//! else afterwards.
#![no_main]

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;

use layerfs::store::unpack::{Ownership, UnpackOptions, unpack};
use layerfs::whiteout::probe_styles;
use libfuzzer_sys::fuzz_target;

/// Small enough that no input can fill the disk (sparse files are holes anyway).
const MAX_SIZE: u64 = 256 << 20;

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("layerfs-fuzz-unpack-")
            .tempdir()
            .expect("temporary directory")
    })
    .path()
}

fn opts() -> &'static UnpackOptions {
    static OPTS: OnceLock<UnpackOptions> = OnceLock::new();
    OPTS.get_or_init(|| {
        let probe = tempfile::tempdir_in(base()).expect("probe directory");
        let styles = probe_styles(std::fs::File::open(probe.path()).expect("probe").as_fd());
        let ownership = if layerfs::sys::is_root() {
            Ownership::Chown
        } else {
            Ownership::OverrideStat
        };
        UnpackOptions {
            styles,
            ownership,
            max_size: MAX_SIZE,
        }
    })
}

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
