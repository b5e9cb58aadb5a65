//! The concurrent differential stress test (`tests/stress/union_stress.py`): ten processes,
//! as root and as two other users, churn a layerfs-overlay mount for a bounded time;
//! private workers' operations are replayed on kernel overlayfs over the same lower layers
//! and must give the same results and trees; shared workers check that only errnos of
//! concurrent use come back and that no read returns another file's data; a host file
//! reachable through symlinks must be untouched; the daemon must stay alive and small.
//! Needs root, /dev/fuse, kernel overlayfs and python3. For a release, run it for minutes:
//! `python3 tests/stress/union_stress.py target/release/layerfs-overlay DIR SEED 300`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::ffi::OsStr;

use common::mount::*;
use common::require_fuse;

fn run(seed: u32, seconds: u32) {
    require_fuse();
    let dir = tempdir();
    let (ok, text) = run_driver(
        "stress/union_stress.py",
        &[
            overlay_bin().as_os_str(),
            dir.path().as_os_str(),
            OsStr::new(&seed.to_string()),
            OsStr::new(&seconds.to_string()),
        ],
        dir.path(),
        &["f", "k"],
    );
    println!("{text}");
    assert!(
        ok,
        "the stress run failed (rerun: python3 tests/stress/union_stress.py {} DIR {seed} {seconds}):\n{text}",
        overlay_bin().display(),
    );
}

#[test]
fn concurrent_users_and_churn_agree_with_kernel_overlayfs() {
    run(1, 10);
}
