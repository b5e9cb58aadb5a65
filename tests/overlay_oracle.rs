//! Kernel overlayfs as the oracle: seeded random sequences of creates, writes, truncates,
//! unlinks, rmdirs, renames (plain, NOREPLACE, EXCHANGE), links, chmods, xattrs, fifos,
//! `rm -rf` and unlink-while-open, applied to a layerfs-overlay mount and to
//! `mount -t overlay` (redirect_dir, index, metacopy) over the same three random lower
//! layers. After every step the trees, errnos, hard-link groups and st_ino stability
//! must agree, also across remounts. The driver is `tests/oracle/overlay_fuzz.py`.
//! Needs root, /dev/fuse, kernel overlayfs and python3.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common {
    pub mod mount;
}

use std::path::Path;
use std::process::Command;

use common::mount::*;

fn run_seed(seed: u32, steps: u32) {
    require_fuse();
    let dir = tempdir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/overlay_fuzz.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(overlay_bin())
        .arg(dir.path())
        .arg(seed.to_string())
        .arg(steps.to_string())
        .output()
        .expect("python3");
    // never leave a mount behind, whatever happened
    for m in ["k", "f"] {
        let p = dir.path().join(m);
        if is_mounted(&p) {
            umount(&p);
        }
    }
    assert!(
        out.status.success(),
        "layerfs and kernel overlayfs differ (rerun: python3 {} {} DIR {seed} {steps}):\n{}{}",
        script.display(),
        overlay_bin().display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
