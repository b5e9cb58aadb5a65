//! `layerfs-overlay`: fuse-overlayfs's command line.

use std::ffi::OsString;
use std::process::ExitCode;

/// True when argv (without argv[0]) is a fuse-overlayfs style invocation
/// (`-o …lowerdir=…`), as mount.fuse3 produces for `mount -t fuse.layerfs`.
pub fn looks_like_overlay_invocation(mut args: impl Iterator<Item = OsString>) -> bool {
    args.any(|a| a.to_string_lossy().contains("lowerdir="))
}

pub fn main() -> ExitCode {
    eprintln!("layerfs-overlay: not implemented yet");
    ExitCode::FAILURE
}
