//! Micro-benchmarks of the union core's hot paths, through the library API (no FUSE):
//! lookup and merged readdir of large directories spread over four lower layers.
//!
//! Setup (once, in a temp dir): for each size N (1k and 10k entries) a directory `dN`
//! in four lower layers, bottom to top 40 %, 30 % (plus every 10th bottom name again,
//! shadowing it), 20 % (plus whiteouts of every 20th bottom name) and 10 % of the names,
//! an empty upper layer and a work directory. Whiteouts are char 0/0 devices as root,
//! `.wh.` files otherwise.
//!
//! - `lookup/{top,bottom,miss}`: one name in `d10000`, served by the top lower layer, by
//!   the bottom one (every layer probed), or absent (every layer probed, ENOENT); each
//!   lookup is paired with the `forget` the kernel would send.
//! - `readdir_build/N`: the first listing of a directory (lookup, opendir, readdir from
//!   offset 0, releasedir, forget), which merges all layers.
//! - `readdir_cached/N`: opendir + readdir(0) + releasedir of a directory whose merged
//!   listing is cached on its node.
//! - `readdir_kernel_pass/N`: a whole cached listing read the way the FUSE adapter is
//!   driven: one readdir call per 32 KiB READDIR reply (about 800 entries here), at
//!   increasing offsets, keeping what fits.
//!
//! Run: `cargo bench --bench union` (add `-- --quick` for a fast pass).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use layerfs::union::{LayerSpec, NodeId, Options, ROOT_ID, Stack, Union};
use nix::sys::stat::{Mode, SFlag, mknod};

/// Entries of the big directories.
const SIZES: [usize; 2] = [1_000, 10_000];
/// The directory the lookups go to.
const LOOKUP_SIZE: usize = 10_000;
/// Lower layers, top first.
const LAYERS: usize = 4;
/// Bytes the kernel asks for per FUSE READDIR here (seen in the daemon's request log).
const READDIR_BYTES: usize = 32 * 1024;
/// A `fuse_dirent` header; the name follows, padded to 8 bytes.
const DIRENT_HEADER: usize = 24;

struct Fixture {
    _tmp: tempfile::TempDir,
    union: Union,
}

fn name(i: usize) -> String {
    format!("file-{i:06}")
}

/// Index range of the names first added by lower layer `l` (0 = top) in a dir of `n`.
fn layer_range(l: usize, n: usize) -> std::ops::Range<usize> {
    // bottom first: 40 %, 30 %, 20 %, 10 %
    let bounds = [0, n * 4 / 10, n * 7 / 10, n * 9 / 10, n];
    let from_bottom = LAYERS - 1 - l;
    bounds[from_bottom]..bounds[from_bottom + 1]
}

fn is_whited_out(i: usize, n: usize) -> bool {
    layer_range(LAYERS - 1, n).contains(&i) && i % 20 == 0
}

fn touch(path: &Path) {
    fs::write(path, b"").expect("creating a layer file");
}

/// A whiteout for `name` in `dir`; returns whether `.wh.` files had to be used.
fn whiteout(dir: &Path, name: &str) -> bool {
    let dev = dir.join(name);
    match mknod(&dev, SFlag::S_IFCHR, Mode::empty(), 0) {
        Ok(()) => false,
        Err(_) => {
            touch(&dir.join(format!(".wh.{name}")));
            true
        }
    }
}

fn fixture() -> Fixture {
    let tmp = tempfile::Builder::new()
        .prefix("layerfs-bench-union")
        .tempdir()
        .expect("creating a temp dir");
    let root = tmp.path();
    let lowers: Vec<PathBuf> = (0..LAYERS)
        .map(|l| root.join(format!("lower{l}")))
        .collect();
    let mut wh_files = false;
    for n in SIZES {
        let dir = format!("d{n}");
        for (l, lower) in lowers.iter().enumerate() {
            let d = lower.join(&dir);
            fs::create_dir_all(&d).expect("creating a layer dir");
            for i in layer_range(l, n) {
                touch(&d.join(name(i)));
            }
        }
        // Shadowing: layer 2 (from the top) has every 10th bottom name again.
        for i in layer_range(LAYERS - 1, n).step_by(10) {
            touch(&lowers[2].join(&dir).join(name(i)));
        }
        // Whiteouts in layer 1 hide every 20th bottom name.
        for i in layer_range(LAYERS - 1, n).filter(|&i| is_whited_out(i, n)) {
            wh_files |= whiteout(&lowers[1].join(&dir), &name(i));
        }
    }
    let upper = root.join("upper");
    let work = root.join("work");
    fs::create_dir_all(&upper).expect("creating upper");
    fs::create_dir_all(&work).expect("creating work");

    let specs: Vec<LayerSpec> = lowers
        .iter()
        .map(|p| LayerSpec::new(p.clone(), wh_files))
        .collect();
    let upper_spec = LayerSpec::new(upper, false);
    let stack = Stack::open(&specs, Some((&upper_spec, &work.as_path().into())))
        .expect("opening the stack");
    let union = Union::new(stack, Options::default()).expect("building the union");
    Fixture { _tmp: tmp, union }
}

fn dir_name(n: usize) -> OsString {
    format!("d{n}").into()
}

fn bench_lookup(c: &mut Criterion, f: &Fixture) {
    let u = &f.union;
    let n = LOOKUP_SIZE;
    let dir = u
        .lookup(ROOT_ID, &dir_name(n))
        .expect("lookup of the big dir")
        .id;
    let top: Vec<OsString> = layer_range(0, n).map(|i| name(i).into()).collect();
    let bottom: Vec<OsString> = layer_range(LAYERS - 1, n)
        .filter(|&i| i % 10 != 0)
        .map(|i| name(i).into())
        .collect();
    let miss: Vec<OsString> = (0..1000).map(|i| format!("absent-{i}").into()).collect();

    let mut g = c.benchmark_group("lookup");
    for (what, names) in [("top", &top), ("bottom", &bottom)] {
        g.bench_function(what, |b| {
            let mut i = 0;
            b.iter(|| {
                let e = u
                    .lookup(dir, black_box(&names[i % names.len()]))
                    .expect("lookup of a present name");
                u.forget(e.id, 1);
                i += 1;
            })
        });
    }
    g.bench_function("miss", |b| {
        let mut i = 0;
        b.iter(|| {
            let r = u.lookup(dir, black_box(&miss[i % miss.len()]));
            assert!(r.is_err());
            i += 1;
        })
    });
    g.finish();
    u.forget(dir, 1);
}

/// Reads a whole listing from an open directory, at most `bytes` of FUSE dirents per
/// call (as a READDIR reply buffer is filled).
fn read_all(u: &Union, dir: NodeId, bytes: usize) -> usize {
    let mut offset = 0;
    let mut seen = 0;
    loop {
        let mut used = 0;
        let mut took = 0;
        let mut next_offset = offset;
        u.readdir(dir, offset, |next, e| {
            let size = (DIRENT_HEADER + e.name.len() + 7) & !7;
            if took > 0 && used + size > bytes {
                return true;
            }
            used += size;
            took += 1;
            next_offset = next;
            black_box(e);
            false
        })
        .expect("readdir");
        if took == 0 {
            return seen;
        }
        seen += took;
        offset = next_offset;
    }
}

/// Every name of a directory, "." and ".." included.
fn names(u: &Union, dir: NodeId) -> Vec<OsString> {
    let mut out = Vec::new();
    u.readdir(dir, 0, |_, e| {
        out.push(e.name.clone());
        false
    })
    .expect("readdir");
    out
}

fn bench_readdir(c: &mut Criterion, f: &Fixture) {
    let u = &f.union;
    let mut g = c.benchmark_group("readdir_build");
    for n in SIZES {
        let dname = dir_name(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &dname, |b, dname| {
            b.iter(|| {
                let id = u.lookup(ROOT_ID, dname).expect("lookup").id;
                black_box(names(u, id).len());
                u.forget(id, 1);
            })
        });
    }
    g.finish();

    for (group, chunk) in [
        ("readdir_cached", usize::MAX),
        ("readdir_kernel_pass", READDIR_BYTES),
    ] {
        let mut g = c.benchmark_group(group);
        for n in SIZES {
            let id = u.lookup(ROOT_ID, &dir_name(n)).expect("lookup").id;
            // Build and cache the listing once.
            let total = read_all(u, id, usize::MAX);
            g.throughput(Throughput::Elements(total as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &id, |b, &id| {
                b.iter(|| black_box(read_all(u, id, chunk)))
            });
            u.forget(id, 1);
        }
        g.finish();
    }
}

/// Checks the fixture merges as designed, so a benchmark never measures a wrong result.
fn check(f: &Fixture) {
    let u = &f.union;
    for n in SIZES {
        let id = u.lookup(ROOT_ID, &dir_name(n)).expect("lookup").id;
        let names: Vec<OsString> = names(u, id)
            .into_iter()
            .filter(|s| s != OsStr::new(".") && s != OsStr::new(".."))
            .collect();
        u.forget(id, 1);
        let want = (0..n).filter(|&i| !is_whited_out(i, n)).count();
        assert_eq!(names.len(), want, "merged entries of d{n}");
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    check(&f);
    bench_lookup(c, &f);
    bench_readdir(c, &f);
}

criterion_group! {
    name = union;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(union);
