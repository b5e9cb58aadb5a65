//! fuse-overlayfs's command line (`-o lowerdir=…,upperdir=…`) as `layerfs-overlay` parses
//! it: arguments are the input split at NUL bytes. Never a panic; what parses is sane.
#![no_main]

use std::path::Path;

use layerfs::cli::overlay::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if let Ok(a) = parse(&args, Path::new("/cwd")) {
        assert!(!a.lowerdirs.is_empty());
        assert!(a.lowerdirs.iter().all(|p| p.is_absolute()));
        assert!(a.mountpoint.is_absolute());
        assert!(a.upperdir.is_none() || a.workdir.is_some());
    }
});
