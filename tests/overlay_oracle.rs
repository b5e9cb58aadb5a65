//! Kernel overlayfs as the oracle: seeded random sequences of creates, writes, truncates,
//! unlinks, rmdirs, renames (plain, NOREPLACE, EXCHANGE), links, chmods, xattrs, fifos,
//! `rm -rf` and unlink-while-open, applied to a layerfs-overlay mount and to
//! `mount -t overlay` (redirect_dir, index, metacopy) over the same three random lower
//! layers. After every step the trees, errnos, hard-link groups and st_ino stability
//! must agree, also across remounts. The driver is `tests/oracle/overlay_fuzz.py`.
//! Needs root, /dev/fuse, kernel overlayfs and python3.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::ffi::OsStr;

use common::mount::*;
use common::require_fuse;

fn run_seed(seed: u32, steps: u32) {
    require_fuse();
    let dir = tempdir();
    let (ok, text) = run_driver(
        "oracle/overlay_fuzz.py",
        &[
            overlay_bin().as_os_str(),
            dir.path().as_os_str(),
            OsStr::new(&seed.to_string()),
            OsStr::new(&steps.to_string()),
        ],
        dir.path(),
        &["k", "f"],
    );
    assert!(
        ok,
        "layerfs and kernel overlayfs differ (rerun: python3 tests/oracle/overlay_fuzz.py {} DIR {seed} {steps}):\n{text}",
        overlay_bin().display(),
    );
}

#[test]
fn random_operations_agree_with_kernel_overlayfs_seeds_1_and_2() {
    for seed in 1..=2 {
        run_seed(seed, 150);
    }
}

#[test]
fn random_operations_agree_with_kernel_overlayfs_seeds_3_and_4() {
    for seed in 3..=4 {
        run_seed(seed, 150);
    }
}
