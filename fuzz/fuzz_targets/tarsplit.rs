//! The tar layout recorder (`store::tarsplit`) on arbitrary tar bytes, as `load` runs it:
//! the stream goes through the recorder while the unpacker unpacks it. Never a panic;
//! and whenever the unpacker accepts the stream and the recorder keeps a layout, playing
//! it back from the unpacked files gives the input again, byte for byte (what `save`
//! relies on for the same diff_id).
#![no_main]

#[path = "common/layer.rs"]
mod layer;

use std::io::{self, Read};
use std::os::fd::AsFd;

use layer::{base, opts};
use layerfs::digest::Digest;
use layerfs::store::Store;
use layerfs::store::tarsplit::{LayerTar, Recorder, Shared, TAR_SPLIT, Tee};
use layerfs::store::unpack::unpack_recording;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let run = tempfile::tempdir_in(base()).expect("run directory");
    let store = Store::open(&run.path().join("s")).expect("store");
    let diff_id = Digest::of(data);
    let lp = store.root().join(layerfs::store::at::layer(&diff_id));
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
        assert!(
            back == data,
            "played back {} bytes of {}",
            back.len(),
            data.len()
        );
    }
    let _ = layerfs::store::fsops::remove_tree(run.path());
});
