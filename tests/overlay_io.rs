//! File I/O beyond read and write through a real mount, against kernel overlayfs over the
//! same lower layer (`tests/oracle/io_ops.py` runs the same steps on both): fallocate in
//! every mode, SEEK_DATA/SEEK_HOLE, O_DIRECT (aligned and misaligned), and fio with
//! `--direct=1`. Needs root, /dev/fuse, kernel overlayfs, python3 and fio.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::run_ok;

fn io_ops(mp: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/io_ops.py");
    run_ok(Command::new("python3").arg(script).arg(mp))
}

#[test]
fn fallocate_seek_data_and_o_direct_match_kernel_overlayfs() {
    let mut l = Layers::new();
    // 40 blocks of data with a hole in the middle, so SEEK_HOLE has something to find
    let mut data = vec![b'l'; 40 * 4096];
    data[16 * 4096..24 * 4096].fill(0);
    l.add()
        .bytes("lower", &data)
        .bytes("lower2", &vec![b'x'; 3 * 4096]);
    let hole = l.layers[0].p("lower");
    let f = std::fs::OpenOptions::new().write(true).open(&hole).unwrap();
    nix::fcntl::fallocate(
        &f,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        16 * 4096,
        8 * 4096,
    )
    .unwrap();
    drop(f);
    let lowers = l.lowerdirs();
    let k = KernelOverlay::new(&lowers, true);
    let m = Mount::new(&lowers);
    let want = io_ops(&k.mp);
    let got = io_ops(&m.mp);
    for (kl, fl) in want.lines().zip(got.lines()) {
        if kl.contains(" collapse ") || kl.contains(" insert ") {
            // Linux's FUSE module refuses COLLAPSE_RANGE and INSERT_RANGE before asking
            // the filesystem (fs/fuse/file.c, fuse_file_fallocate): no FUSE filesystem
            // can offer them.
            assert!(fl.contains(" EOPNOTSUPP "), "{fl}");
            continue;
        }
        assert_eq!(fl, kl, "layerfs differs from kernel overlayfs");
    }
    assert_eq!(want.lines().count(), got.lines().count());
    // the steps really ran: the modes ext4 has succeeded, the bogus one did not
    assert!(want.contains("/lower punch ok"), "{want}");
    assert!(want.contains("/new insert ok"), "{want}");
    assert!(want.contains("bad-mode EOPNOTSUPP"), "{want}");
    assert!(want.contains("direct-misaligned-offset EINVAL"), "{want}");
}

#[test]
fn fio_with_direct_io_runs_to_completion() {
    let mut l = Layers::new();
    l.add().file("readme", "x");
    let m = Mount::new(&l.lowerdirs());
    let out = run_ok(
        Command::new("fio")
            .args([
                "--name=direct",
                "--rw=randrw",
                "--bs=4k",
                "--size=8m",
                "--direct=1",
                "--ioengine=psync",
                "--numjobs=2",
                "--time_based=0",
                "--group_reporting",
                "--output-format=terse",
            ])
            .arg(format!("--directory={}", m.mp.display())),
    );
    // terse v3: field 6 is the read KiB, field 47 the write KiB; both moved data
    let fields: Vec<&str> = out.trim().split(';').collect();
    let read_kib: u64 = fields[5].parse().unwrap();
    let write_kib: u64 = fields[46].parse().unwrap();
    assert!(read_kib > 0 && write_kib > 0, "{fields:?}");
}
