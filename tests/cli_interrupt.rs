//! Interrupted work: Ctrl-C (SIGINT) or SIGTERM during a load stops it, removes what it
//! staged in the store's `tmp/` and says `layerfs: interrupted` (exit 130 / 143); what a
//! `kill -9` leaves there is counted by `df` (its own row) and reported by `prune` with
//! its size; a staging entry of a load still running is counted in use, never
//! reclaimable. Needs root (the fixtures' owners).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TMP_ROW: &str = "Temporary (interrupted work)";

/// An OCI layout of one layer big enough to take seconds to load (zeros: a small blob).
fn big_image(s: &TestStore) -> PathBuf {
    let (blob, diff_id) = big_zero_layer(1 << 30);
    let mut spec = ImageSpec::new(vec![]);
    spec.diff_ids = Some(vec![diff_id]);
    write_oci_blobs(&s.scratch("big"), &spec, &[blob], "latest").path
}

/// Starts `layerfs load` of `image` and waits until it is unpacking (a staged layer with
/// data in `tmp/`); then stops it (SIGSTOP), so that what follows sees it mid-way.
fn stopped_load(s: &TestStore, image: &Path) -> Child {
    stopped(s, &["load", "-q", &image.display().to_string()])
}

/// Starts `layerfs ARGS`, which loads a big image first, and stops it once it unpacks.
fn stopped(s: &TestStore, args: &[&str]) -> Child {
    let mut child = s
        .cmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = s.root.join("tmp");
    let start = Instant::now();
    loop {
        let busy = names(&tmp).iter().any(|n| {
            n.starts_with("layer-")
                && std::fs::metadata(tmp.join(n).join("diff/big")).is_ok_and(|m| m.len() > 0)
        });
        if busy {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("load ended ({st}) before it could be interrupted; make the layer bigger");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "load never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, "STOP");
    child
}

fn signal(child: &Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits for `child` (at most a minute); its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "did not stop after the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `df --json`'s row for `tmp/`.
fn tmp_row(s: &TestStore) -> Value {
    let df: Value = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();
    df["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == TMP_ROW)
        .cloned()
        .unwrap_or_else(|| panic!("no {TMP_ROW} row: {df}"))
}

fn interrupted_load_cleans_up(sig: &str, code: i32) {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    s.load(&bb("l1", Spelling::Oci));
    let image = big_image(&s);
    let child = stopped_load(&s, &image);
    // Mid-way, the staging is in use: counted, not reclaimable.
    let row = tmp_row(&s);
    assert!(row["size"].as_u64().unwrap() > 0, "{row}");
    assert!(row["active"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(row["reclaimable"], 0, "a running load's staging: {row}");
    signal(&child, sig);
    signal(&child, "CONT");
    let (status, err) = finish(child);
    assert_eq!(status, Some(code), "stderr: {err}");
    assert_eq!(err.trim_end(), "layerfs: interrupted", "stderr: {err}");
    assert_eq!(
        names(&s.root.join("tmp")),
        Vec::<String>::new(),
        "tmp/ left"
    );
    // Nothing of it was installed; the image loaded before is whole.
    assert_eq!(s.ok(&["images", "-q"]).lines().count(), 1);
    assert_eq!(s.layer_names().len(), 1);
}

#[test]
fn sigint_during_load_cleans_up() {
    interrupted_load_cleans_up("INT", 130);
}

#[test]
fn sigterm_during_load_cleans_up() {
    interrupted_load_cleans_up("TERM", 143);
}

/// `mount` of an image it must load first: interrupted in the load, it cleans up the
/// same way, and neither a container nor a mount is left.
#[test]
fn sigint_during_the_load_of_a_mount_cleans_up() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("l1", Spelling::Oci));
    let image = big_image(&s);
    let mnt = s.scratch("mnt");
    let child = stopped(
        &s,
        &[
            "mount",
            &image.display().to_string(),
            mnt.to_str().unwrap(),
            "--name",
            "big",
        ],
    );
    signal(&child, "INT");
    signal(&child, "CONT");
    let (status, err) = finish(child);
    assert_eq!(status, Some(130), "stderr: {err}");
    assert_eq!(err.trim_end(), "layerfs: interrupted", "stderr: {err}");
    assert_eq!(
        names(&s.root.join("tmp")),
        Vec::<String>::new(),
        "tmp/ left"
    );
    assert_eq!(s.ok(&["ps", "-a", "-q"]), "", "a container was left");
    assert!(names(&mnt).is_empty(), "something is mounted");
}

#[test]
fn what_a_kill_leaves_is_counted_and_pruned() {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    let image = big_image(&s);
    let child = stopped_load(&s, &image);
    signal(&child, "KILL");
    let (status, _) = finish(child);
    assert_eq!(status, None, "killed by a signal");
    let left = names(&s.root.join("tmp"));
    assert!(!left.is_empty(), "kill -9 left nothing to count");

    let row = tmp_row(&s);
    let size = row["size"].as_u64().unwrap();
    assert!(size > 1 << 20, "{row}");
    assert_eq!(row["total"], left.len(), "{row}");
    assert_eq!(row["active"], 0, "nobody uses it: {row}");
    assert_eq!(row["reclaimable"], size, "{row}");
    // The table shows the row, its size as the other rows are shown.
    let table = s.ok(&["df"]);
    let line = table
        .lines()
        .find(|l| l.starts_with(TMP_ROW))
        .unwrap_or_else(|| panic!("{table}"));
    let shown = line[TMP_ROW.len()..]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert_ne!(shown, "0B", "{table}");

    let pruned = s.ok(&["prune"]);
    assert!(
        pruned.contains(&format!("Total reclaimed space: {shown}\n")),
        "prune should report the {shown} of tmp/: {pruned}"
    );
    assert!(pruned.contains(&format!("({shown})")), "{pruned}");
    assert_eq!(names(&s.root.join("tmp")), Vec::<String>::new());
    assert_eq!(tmp_row(&s)["size"], 0);
}
