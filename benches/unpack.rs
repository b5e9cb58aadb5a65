//! Criterion benchmark of `store::unpack::unpack`: a generated layer of a few thousand
//! small files in a hundred directories plus a few big files, unpacked into a fresh
//! directory each iteration (the tar is in memory, so this measures the unpacker and the
//! filesystem, not decompression). Needs about 40 MiB of disk per iteration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::os::fd::AsFd;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use layerfs::store::unpack::{DEFAULT_MAX_LAYER_SIZE, Ownership, UnpackOptions, unpack};
use layerfs::whiteout::probe_styles;

const DIRS: usize = 100;
const FILES_PER_DIR: usize = 40;
const SMALL: usize = 2 << 10;
const BIG_FILES: usize = 4;
const BIG: usize = 8 << 20;

fn header(path: &str, size: usize, kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_size(size as u64);
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(u64::from(nix::unistd::geteuid().as_raw()));
    h.set_gid(u64::from(nix::unistd::getegid().as_raw()));
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let small: Vec<u8> = (0..SMALL).map(|i| (i % 251) as u8).collect();
    for d in 0..DIRS {
        let dir = format!("usr/share/pkg{d:03}/");
        b.append(&header(&dir, 0, tar::EntryType::Directory, 0o755), &[][..])
            .unwrap();
        for f in 0..FILES_PER_DIR {
            let p = format!("{dir}file{f:03}.txt");
            b.append(
                &header(&p, SMALL, tar::EntryType::Regular, 0o644),
                &small[..],
            )
            .unwrap();
        }
    }
    let big: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    for i in 0..BIG_FILES {
        let p = format!("opt/big{i}.bin");
        b.append(&header(&p, BIG, tar::EntryType::Regular, 0o755), &big[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn bench(c: &mut Criterion) {
    let tar = layer();
    let base = tempfile::tempdir().unwrap();
    let probe = tempfile::tempdir_in(base.path()).unwrap();
    let styles = probe_styles(std::fs::File::open(probe.path()).unwrap().as_fd());
    let opts = UnpackOptions {
        styles,
        ownership: Ownership::Chown,
        max_size: DEFAULT_MAX_LAYER_SIZE,
    };
    let mut g = c.benchmark_group("unpack");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(tar.len() as u64));
    // Unpacked trees are kept until the end: deleting thousands of files between
    // iterations sends ext4's inode allocator into its slow "recently deleted" scan,
    // which would be measured instead of the unpacker.
    let keep = std::cell::RefCell::new(Vec::new());
    g.bench_function("4000 small + 4x8MiB files", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(base.path()).unwrap(),
            |dest| {
                let fd = std::fs::File::open(dest.path()).unwrap();
                let stats = unpack(&tar[..], fd.as_fd(), &opts).unwrap();
                black_box(stats);
                keep.borrow_mut().push(dest);
            },
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
