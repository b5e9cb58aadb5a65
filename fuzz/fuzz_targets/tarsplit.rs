//! The tar layout recorder (`store::tarsplit`) on arbitrary tar bytes, as `load` runs it:
//! the stream goes through the recorder while the unpacker unpacks it. Never a panic;
//! and whenever the unpacker accepts the stream and the recorder keeps a layout, playing
//! it back from the unpacked files gives the input again, byte for byte (what `save`
//! relies on for the same diff_id).
#![no_main]

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;

use layerfs::digest::Digest;
use layerfs::store::Store;
use layerfs::store::tarsplit::{LayerTar, Recorder, Shared, TAR_SPLIT, Tee};
use layerfs::store::unpack::{Ownership, UnpackOptions, unpack_recording};
use layerfs::whiteout::probe_styles;
use libfuzzer_sys::fuzz_target;

/// Small enough that no input can fill the disk (sparse files are holes anyway).
const MAX_SIZE: u64 = 256 << 20;

fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("layerfs-fuzz-tarsplit-")
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

fuzz_target!(|data: &[u8]| {
    let run = tempfile::tempdir_in(base()).expect("run directory");
    let store = Store::open(&run.path().join("s")).expect("store");
    let diff_id = Digest::of(data);
    let lp = store.layer_path(&diff_id);
    std::fs::create_dir_all(lp.join("diff")).expect("diff");
    let layout = std::fs::File::create(lp.join(TAR_SPLIT)).expect("layout file");
    let rec = Shared::new(Recorder::new(layout).expect("recorder"));
    let dest = std::fs::File::open(lp.join("diff")).expect("open diff");
    let unpacked = {
        let mut tee = Tee::new(data, &rec);
        let r = unpack_recording(&mut tee, dest.as_fd(), opts(), Some(&rec));
        if r.is_ok() {
            io::copy(&mut tee, &mut io::sink()).expect("drain");
        }
        r.is_ok()
    };
    drop(dest);
    let kept = rec.into_inner().finish().expect("finish");
    if unpacked && kept {
        let mut back = Vec::new();
        LayerTar::open(&store, &diff_id)
            .expect("open layout")
            .expect("a layout")
            .read_to_end(&mut back)
            .expect("play back");
        assert!(back == data, "played back {} bytes of {}", back.len(), data.len());
    }
    let _ = layerfs::store::fsops::remove_tree(run.path());
});
