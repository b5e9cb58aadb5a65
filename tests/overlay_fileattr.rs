//! Inode attribute flags (chattr +i, +a, +d, +A, and the fsxattr form) through a real
//! mount, against kernel overlayfs over the same lower layer: `tests/oracle/fileattr_ops.py`
//! sets them on lower files and a lower directory (so they are copied up) and tries what
//! an immutable or append-only inode refuses; both mounts must answer alike (one known
//! difference, below). Needs root
//! (CAP_LINUX_IMMUTABLE), /dev/fuse, kernel overlayfs, python3 and chattr (e2fsprogs).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::run_ok;

fn fileattr_ops(mp: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/fileattr_ops.py");
    run_ok(Command::new("python3").arg(script).arg(mp))
}

/// Clears the flags left under `dir` (by a failed run), so that it can be removed.
fn clear_flags(dir: &Path) {
    let _ = Command::new("chattr")
        .arg("-R")
        .arg("-i")
        .arg("-a")
        .arg(dir)
        .output();
}

#[test]
fn chattr_flags_act_as_on_kernel_overlayfs() {
    let mut l = Layers::new();
    l.add()
        .file("f", "immutable")
        .file("a", "append")
        .file("n", "nodump")
        .file("o", "other")
        .file("d/x", "in d");
    let k = KernelOverlay::new(&l.lowerdirs(), true);
    let kernel = fileattr_ops(&k.mp);
    clear_flags(k.dir.path());
    drop(k);

    let m = Mount::new(&l.lowerdirs());
    let ours = fileattr_ops(&m.mp);
    clear_flags(m.dir.path());
    for (k, o) in kernel.lines().zip(ours.lines()) {
        if k == "d write x 1" {
            // The one known difference: the flags sit on the upper inode itself, so a
            // lower file cannot be copied up into an immutable directory. Kernel overlayfs
            // keeps `i` and `a` in an xattr and enforces them itself, so it can.
            assert_eq!(o, "d write x EPERM");
            continue;
        }
        assert_eq!(o, k, "layerfs (left) and kernel overlayfs (right) differ");
    }
    assert_eq!(ours.lines().count(), kernel.lines().count());
    assert!(
        kernel.contains("f unlink EPERM"),
        "the kernel run is a real one: {kernel}"
    );
}
