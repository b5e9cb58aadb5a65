//! The concurrent differential stress test of the store (`tests/stress/store_stress.py`):
//! seven processes run seeded random `load`, `tag`, `rmi`, `mount` (new container, by
//! name, read-only), writes through the mounts, `umount`, `commit`, `diff`, `save`,
//! `export`, `rm`, `prune` and listings against one store, on a small pool of image and
//! container names, killing some `load`, `commit`, `save`, `export` and `rm` commands
//! midway (SIGKILL) and stopping some commands for a while (SIGSTOP), among them commits
//! raced against an unmount, a mount and writes of their container (issue 19, defect 3).
//! Then, with everything unmounted (also when the run fails or hangs: this test sweeps
//! mounts and daemons of its store itself), a checker requires every image and
//! container to be whole (saved images load elsewhere with the same id, containers mount
//! and diff, each container's files are exactly what the writes logged for it leave),
//! `prune` to leave nothing half-done, each committed layer to be a snapshot, and every
//! command's result (and every failure's message, from an allow-list) to fit a serial
//! order consistent with real time, checked per name: container existence, container
//! mounted, tag. Needs root, /dev/fuse, python3 and the shared fixtures.
//!
//! CI runs one seed for 15 s (about 20–50 s of wall time in all, with the checks; an
//! unmount that waits for a daemon can add 30 s). Each run is seeded, so the choices of
//! each process repeat, but their interleaving does not: rerun a failure with its seed,
//! and read the report (each violation with the commands around it) and the command log
//! the failure message names. For a release, run it for minutes with a few seeds (as
//! root; SCRATCH is left in place, with the command log in SCRATCH/logs/all.json):
//! `for s in 1 2 3; do python3 tests/stress/store_stress.py target/release/layerfs
//! /tmp/store-stress-$s $s 120 || break; done`
//! or through this test: `STORE_STRESS_SEED=7 STORE_STRESS_SECONDS=120 cargo test
//! --release --test store_stress`.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::{is_mounted, tempdir, umount};
use common::{bin, require_fuse};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ").replace("\\134", "\\")))
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v
}

/// Pids of `layerfs` processes of the store under `dir` (their argv names it).
fn store_processes(dir: &Path) -> Vec<i32> {
    let store = dir.join("store");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if argv.first() == Some(&bin().as_os_str().as_encoded_bytes())
            && argv.contains(&store.as_os_str().as_encoded_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

/// Leaves nothing behind under `dir`, whatever the driver did: its mounts are
/// unmounted, and the daemons (and commands) of its store are killed, by pid. Returns
/// what had to be cleaned (the driver cleans up itself: anything here is a failure).
fn sweep(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for mp in mounts_under(dir) {
        left.push(format!("still mounted: {}", mp.display()));
        umount(&mp);
        if is_mounted(&mp) {
            let _ = Command::new("umount").arg("-l").arg(&mp).status();
        }
    }
    for pid in store_processes(dir) {
        left.push(format!("still running: layerfs pid {pid}"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    left
}

/// Runs the driver as `uid` (0, or a plain user whose store is then rootless). One run
/// at a time: two drivers of 7 workers each on a 2-core machine would time each other out.
fn run(seed: u32, seconds: u32, uid: u32) {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    require_fuse();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stress/store_stress.py");
    let tmp = tempdir();
    if uid != 0 {
        common::fuse_for_users();
        std::os::unix::fs::chown(tmp.path(), Some(uid), Some(uid)).unwrap();
    }
    let dir = tmp.path().join("s");
    let rerun = format!(
        "python3 {} {} DIR {seed} {seconds}",
        script.display(),
        bin().display()
    );
    println!("store stress: seed {seed}, {seconds} s (rerun: {rerun})");
    let mut child = common::command_as(uid, "/usr/bin/python3")
        .env("HOME", tmp.path())
        .arg(&script)
        .arg(bin())
        .arg(&dir)
        .arg(seed.to_string())
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    // Read the output on threads, so a full pipe never stalls the driver.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    // A hang guard only: the driver bounds each command itself (150 s), this bounds it all.
    let limit = Duration::from_secs(u64::from(seconds) + 600);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let left = sweep(&dir);
    println!("{}{}", out.join().unwrap(), err.join().unwrap());
    let ok = status.is_some_and(|s| s.success()) && left.is_empty();
    if !ok {
        // The command log is kept to look at (the store, its layers and mounts are not).
        let logs = tempfile::Builder::new()
            .prefix("layerfs-store-stress-logs-")
            .tempdir()
            .unwrap()
            .keep();
        let _ = std::fs::rename(dir.join("logs"), logs.join("logs"));
        panic!(
            "the store stress run failed ({}){}; its report is above\nrerun: {rerun}\n\
             command log: {}",
            match status {
                None => format!("hung: killed after {} s", limit.as_secs()),
                Some(s) => s.to_string(),
            },
            if left.is_empty() {
                String::new()
            } else {
                format!("; left behind: {}", left.join(", "))
            },
            logs.join("logs/all.json").display(),
        );
    }
}

#[test]
fn concurrent_store_commands_fit_a_serial_order() {
    run(
        env_u32("STORE_STRESS_SEED", 1),
        env_u32("STORE_STRESS_SECONDS", 15),
        0,
    );
}

/// The same as a plain user (nobody): a rootless store (owners in records), mounts
/// through fusermount3, unmounts through `fusermount3 -u`.
#[test]
fn concurrent_rootless_store_commands_fit_a_serial_order() {
    run(
        env_u32("STORE_STRESS_SEED", 2),
        env_u32("STORE_STRESS_SECONDS", 10),
        common::NOBODY,
    );
}
