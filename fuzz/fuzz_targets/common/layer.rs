//! What the layer fuzz targets (`unpack`, `tarsplit`) share: a scratch directory for the
//! process, and the unpack options this machine gives a store.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::OnceLock;

use layerfs::store::unpack::{Ownership, UnpackOptions};
use layerfs::whiteout::probe_styles;

/// Small enough that no input can fill the disk (sparse files are holes anyway).
const MAX_SIZE: u64 = 256 << 20;

/// The process's scratch directory (each input works in a directory of its own below).
pub fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("layerfs-fuzz-")
            .tempdir()
            .expect("temporary directory")
    })
    .path()
}

/// Whiteout spellings probed on the scratch directory, ownership as root or rootless.
pub fn opts() -> &'static UnpackOptions {
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
