//! The concurrent differential stress test (`tests/stress/union_stress.py`): ten processes,
//! as root and as two other users, churn a layerfs-overlay mount for a bounded time;
//! private workers' operations are replayed on kernel overlayfs over the same lower layers
//! and must give the same results and trees; shared workers check that only errnos of
//! concurrent use come back and that no read returns another file's data; a host file
//! reachable through symlinks must be untouched; the daemon must stay alive and small.
//! Needs root, /dev/fuse, kernel overlayfs and python3. For a release, run it for minutes:
//! `python3 tests/stress/union_stress.py target/release/layerfs-overlay DIR SEED 300`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common {
    pub mod mount;
}

use std::path::Path;
use std::process::Command;

use common::mount::*;

fn run(seed: u32, seconds: u32) {
    require_fuse();
    let dir = tempdir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stress/union_stress.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(overlay_bin())
        .arg(dir.path())
        .arg(seed.to_string())
        .arg(seconds.to_string())
        .output()
        .expect("python3");
    for m in ["k", "f"] {
        let p = dir.path().join(m);
        if is_mounted(&p) {
            umount(&p);
        }
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "the stress run failed (rerun: python3 {} {} DIR {seed} {seconds}):\n{text}",
        script.display(),
        overlay_bin().display(),
    );
}

#[test]
fn concurrent_users_and_churn_agree_with_kernel_overlayfs() {
    run(1, 10);
}
