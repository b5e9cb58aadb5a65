//! Docker as the oracle of `layerfs diff`: the same changes made in a Docker container of
//! the same image (the shared busybox fixture, `docker load`ed) and in a layerfs container
//! list the same paths with the same kinds (Docker's order within a directory is random,
//! so the lines are compared as sets, after checking that ours follow Docker's structure).
//!
//! The test starts a private `dockerd` (its own data root, exec root, socket and containerd
//! namespace; `--iptables=false --bridge=none`) and stops it afterwards. Without a Docker
//! engine it fails, saying so — `.ci/run` installs `docker.io` — unless
//! `LAYERFS_SKIP_DOCKER=1` asks to skip it, which it then says loudly. Needs root and
//! /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/lab.rs"]
mod lab;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lab::*;

/// Changes both engines can make alike. Left out on purpose, where layerfs differs from
/// Docker by design: writing through one name of a hard-linked image file (Docker's
/// copy-up breaks the link, so only that name changes; layerfs keeps it, so every name
/// does) and xattr-only changes (Docker compares `security.capability` only).
const SCRIPT: &str = "
echo new > data/added.txt
echo more >> data/modify-me
rm data/original.txt
rm -rf opaque-dir; mkdir opaque-dir; echo x > opaque-dir/fresh
mv usr/local usr/moved-local
ln data/new-file data/new-link
chmod 600 data/empty
chmod 600 data/random-1MiB+1
mkdir -p newdir/sub; echo y > newdir/sub/f; ln -s f newdir/sub/link
mkfifo newdir/fifo
touch home
chown 1:1 data/sticky-dir
rm -rf readd-dir; echo now-a-file > readd-dir
rm readd-file; mkdir readd-file; touch readd-file/inside
mv etc/group etc/group.moved
rm -rf var
";

struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn host(&self) -> String {
        format!("unix://{}/sock", self.dir.path().display())
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .expect("docker");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a private engine; `Err` says why there is none.
    fn start() -> Result<Dockerd, String> {
        for bin in ["dockerd", "docker"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {bin}"))
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !found {
                return Err(format!(
                    "{bin} is not installed (apt-get install docker.io)"
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("lfs-dockerd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let ns = format!("layerfs-test-{}", std::process::id());
        let log = std::fs::File::create(d.join("log")).map_err(|e| e.to_string())?;
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}/sock", d.display()))
            .args(["--iptables=false", "--bridge=none"])
            .args(["--containerd-namespace", &ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-p")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let mut engine = Dockerd { child, dir };
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = Command::new("docker")
                .arg("-H")
                .arg(engine.host())
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(engine);
            }
            if let Ok(Some(st)) = engine.child.try_wait() {
                let log =
                    std::fs::read_to_string(engine.dir.path().join("log")).unwrap_or_default();
                return Err(format!("dockerd exited ({st}):\n{log}"));
            }
            if Instant::now() > end {
                return Err("dockerd did not answer within 90 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever the engine left mounted under its directories.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut left: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn engine() -> Option<Dockerd> {
    match Dockerd::start() {
        Ok(d) => Some(d),
        Err(why) if std::env::var_os("LAYERFS_SKIP_DOCKER").is_some() => {
            eprintln!("\n*** SKIPPED: no Docker engine to compare with: {why} ***\n");
            None
        }
        Err(why) => panic!(
            "no Docker engine to compare with: {why}\n(.ci/run installs docker.io; set \
             LAYERFS_SKIP_DOCKER=1 to skip this comparison explicitly)"
        ),
    }
}

/// Checks Docker's structure in our listing: a directory's own line comes before
/// anything below it, and within a directory what it lost comes after what it has.
fn assert_docker_structure(lines: &[String]) {
    for (i, l) in lines.iter().enumerate() {
        let path = &l[2..];
        let parent = Path::new(path)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if parent != "/" {
            let at = lines.iter().position(|x| x[2..] == parent);
            assert!(
                at.is_some_and(|p| p < i),
                "{l}: its directory is not listed before it"
            );
        }
        if l.starts_with("D ") {
            for later in &lines[i + 1..] {
                let lp = Path::new(&later[2..])
                    .parent()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    lp != parent || later.starts_with("D "),
                    "{later} comes after the deletion {l}"
                );
            }
        }
    }
}

#[test]
fn layerfs_diff_lists_what_docker_diff_lists() {
    let Some(engine) = engine() else { return };
    let archive = fixtures().join("busybox/busybox.docker.tar");
    let loaded = engine.docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("layerfs/busybox:latest"), "{loaded}");
    engine.docker(&[
        "run",
        "--network=none",
        "--name",
        "lfs-diff",
        "docker.io/layerfs/busybox:latest",
        "sh",
        "-ec",
        SCRIPT,
    ]);
    let theirs: BTreeSet<String> = engine
        .docker(&["diff", "lfs-diff"])
        .lines()
        .map(String::from)
        .collect();

    let lab = Lab::new();
    lab.s
        .load(&format!("{}/busybox/oci:latest", fixtures().display()));
    let m = lab.mount(&["busybox", "--name", "lfs-diff"], "m");
    let out = Command::new("sh")
        .arg("-ec")
        .arg(SCRIPT)
        .current_dir(&m)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Vec<String> = lab
        .s
        .ok(&["diff", "lfs-diff"])
        .lines()
        .map(String::from)
        .collect();
    assert_docker_structure(&ours);
    let ours_set: BTreeSet<String> = ours.iter().cloned().collect();
    let only_theirs: Vec<&String> = theirs.difference(&ours_set).collect();
    let only_ours: Vec<&String> = ours_set.difference(&theirs).collect();
    assert!(
        only_theirs.is_empty() && only_ours.is_empty(),
        "docker diff and layerfs diff differ\nonly docker: {only_theirs:?}\nonly layerfs: {only_ours:?}"
    );
    assert!(ours.len() > 20, "{ours:?}");
    let _ = engine.docker(&["rm", "-f", "lfs-diff"]);
}
