//! Docker as the oracle of `layerfs diff`: the same changes made in a Docker container of
//! the same image (the shared busybox fixture, `docker load`ed) and in a layerfs container
//! list the same paths with the same kinds (Docker's order within a directory is random,
//! so the lines are compared as sets, after checking that ours follow Docker's structure).
//!
//! The test starts a private `dockerd` (its own data root, exec root, socket and containerd
//! namespace; `--iptables=false --bridge=none`) and stops it afterwards. Without a Docker
//! engine it fails, saying so (`.ci/run` installs `docker.io`); it never skips. Needs root
//! and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::lab::*;
use common::tools::Docker;
use common::*;

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
    let engine = Docker::start();
    let archive = fixtures().join("busybox/busybox.docker.tar");
    let loaded = engine.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("layerfs/busybox:latest"), "{loaded}");
    engine.ok(&[
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
        .ok(&["diff", "lfs-diff"])
        .lines()
        .map(String::from)
        .collect();

    let lab = Lab::new();
    lab.s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "lfs-diff"], "m");
    sh_in(&m, SCRIPT);
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
    let _ = engine.ok(&["rm", "-f", "lfs-diff"]);
}
