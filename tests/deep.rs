//! Trees deeper than PATH_MAX (3000 levels, built with mkdir and a relative open as a
//! shell's `mkdir d && cd d` would) under a limit of 1024 open files, soft and hard, so
//! that raising the limit cannot help: every walk (diff, export, commit and the unpack of
//! its layer, save, load, history, ps -s, df, rm, prune) holds a bounded number of fds and reaches
//! entries through directory fds. And a removal whose deletion cannot finish leaves
//! either the container or nothing, never a store that later loads and prunes fail on.
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::lab::*;
use common::*;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use serde_json::Value;

const DEPTH: usize = 3000;

/// Runs `layerfs ARGS` on `s` with at most 1024 open files, soft and hard.
fn limited(s: &TestStore, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 1024 && exec "$0" "$@""#)
        .arg(bin())
        .args(args)
        .env("LAYERFS_ROOT", &s.root)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// [`limited`], asserting success; returns stdout.
fn limited_ok(s: &TestStore, args: &[&str]) -> String {
    let out = limited(s, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "layerfs {args:?} failed under 1024 open files ({}): {}",
        out.status,
        &err[..err.len().min(2000)]
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The limit [`limited`] sets is the one the command gets (else nothing here tests it).
fn check_the_limit_holds() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 1024 && exec "$0" "$@""#)
        .arg("cat")
        .arg("/proc/self/limits")
        .output()
        .unwrap();
    let limits = String::from_utf8_lossy(&out.stdout);
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1024", "1024"],
        "{line}"
    );
}

// Every fd the tests open is close-on-exec: the other tests of this binary start
// processes meanwhile, and one that inherited an fd into a mount would keep it busy.
fn open_dir(p: &Path) -> OwnedFd {
    open(
        p,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn sub(dir: &OwnedFd, name: &str) -> OwnedFd {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

/// `depth` directories `d` below `root`, made one below the other through a directory fd
/// (one open at a time), and the file `f` holding `deep` at the bottom.
fn build_deep(root: &Path, depth: usize) {
    let mut fd = open_dir(root);
    for _ in 0..depth {
        nix::sys::stat::mkdirat(&fd, "d", Mode::from_bits_truncate(0o755)).unwrap();
        fd = sub(&fd, "d");
    }
    write_at(&fd, "f", b"deep\n");
}

fn write_at(dir: &OwnedFd, name: &str, data: &[u8]) {
    let f = openat(
        dir,
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_EXCL | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let mut f = std::fs::File::from(f);
    std::io::Write::write_all(&mut f, data).unwrap();
}

/// The content of `name` at the bottom of a chain of `depth` directories `d` below `root`.
fn read_deep(root: &Path, depth: usize, name: &str) -> String {
    let mut fd = open_dir(root);
    for _ in 0..depth {
        fd = sub(&fd, "d");
    }
    let f = openat(
        &fd,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let mut s = String::new();
    std::fs::File::from(f).read_to_string(&mut s).unwrap();
    s
}

/// `/d/d/…/d` (`depth` levels), as diff prints it, and `d/…/d` as a tar names it.
fn deep_path(depth: usize) -> String {
    "/d".repeat(depth)
}

/// The entries of a tar file: (path, content of regular files).
fn tar_entries(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(p).unwrap());
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        if e.header().entry_type() == tar::EntryType::Regular {
            e.read_to_end(&mut data).unwrap();
        }
        out.push((path, data));
    }
    out
}

/// The directory of the top layer of `image` in store `s`.
fn top_layer(s: &TestStore, image: &str) -> PathBuf {
    s.layer_dirs(image).pop().unwrap()
}

fn container_size(s: &TestStore, name: &str) -> u64 {
    let ps: Value = serde_json::from_str(&limited_ok(s, &["ps", "-a", "-s", "--json"])).unwrap();
    let c = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    c["size"].as_u64().unwrap()
}

#[test]
fn a_container_3000_levels_deep_under_1024_open_files() {
    check_the_limit_holds();
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "deep"], "m");
    build_deep(&m, DEPTH);
    lab.umount(&m);

    // diff: every level added, the file at the bottom last.
    let diff = limited_ok(s, &["diff", "deep"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines.len(), DEPTH + 1, "{}", &diff[..diff.len().min(500)]);
    assert_eq!(lines[0], "A /d");
    assert_eq!(lines[DEPTH - 1], format!("A {}", deep_path(DEPTH)));
    assert_eq!(lines[DEPTH], format!("A {}/f", deep_path(DEPTH)));

    // export: the merged tree, the deepest file with its content.
    let out = s.dir.path().join("export.tar");
    limited_ok(s, &["export", "deep", "-o", out.to_str().unwrap()]);
    let deepest = format!("{}f", "d/".repeat(DEPTH));
    let entries = tar_entries(&out);
    assert!(
        entries
            .iter()
            .any(|(p, data)| *p == deepest && data == b"deep\n"),
        "the export lacks the deepest file"
    );
    assert!(entries.iter().any(|(p, _)| p == "bin/busybox"));

    // ps -s and df count the file at the bottom.
    assert_eq!(container_size(s, "deep"), 5);
    let df: Value = serde_json::from_str(&limited_ok(s, &["df", "--json"])).unwrap();
    assert_eq!(df["containers"][0]["size"], 5, "{df}");

    // commit, save, and load into a fresh store: the layer holds the deep tree.
    let id = limited_ok(s, &["commit", "deep", "deep:1"]);
    let id = id.trim();
    assert_eq!(read_deep(&top_layer(s, "deep:1"), DEPTH, "f"), "deep\n");
    let saved = s.dir.path().join("deep-image.tar");
    limited_ok(s, &["save", "deep:1", "-o", saved.to_str().unwrap()]);
    let fresh = TestStore::new();
    let out = limited_ok(&fresh, &["load", "-q", saved.to_str().unwrap()]);
    assert_eq!(out.lines().last(), Some(id));
    assert_eq!(
        read_deep(&top_layer(&fresh, "deep:1"), DEPTH, "f"),
        "deep\n"
    );
    limited_ok(&fresh, &["rmi", "deep:1"]);
    limited_ok(&fresh, &["prune"]);
    assert!(fresh.layer_names().is_empty());
    // Without its recorded layout, save writes the committed layer again by the same
    // walk, byte for byte.
    let layout = top_layer(s, "deep:1")
        .parent()
        .unwrap()
        .join("tar-split.zst");
    std::fs::remove_file(&layout).unwrap();
    std::fs::remove_file(&saved).unwrap();
    limited_ok(s, &["save", "deep:1", "-o", saved.to_str().unwrap()]);
    let out = limited_ok(&fresh, &["load", "-q", saved.to_str().unwrap()]);
    assert_eq!(out.lines().last(), Some(id));

    // rm: the container goes whole, nothing is left in tmp/, and the store works on.
    assert_eq!(limited_ok(s, &["rm", "deep"]), "deep\n");
    let ps: Value = serde_json::from_str(&limited_ok(s, &["ps", "-a", "--json"])).unwrap();
    assert_eq!(ps, serde_json::json!([]));
    assert!(
        names(&s.root.join("tmp")).is_empty(),
        "{:?}",
        names(&s.root.join("tmp"))
    );
    limited_ok(s, &["rmi", "deep:1"]);
    limited_ok(s, &["prune"]);
    limited_ok(s, &["load", "-q", &bb("latest", Spelling::Path)]);
    assert_eq!(s.layer_names().len(), 3);
}

/// A layer 3000 directories deep made by the image builder: a file at the bottom and a
/// hard link to it at the top (its target longer than PATH_MAX); and a tree 1500 deep
/// that a later entry of the same name replaces.
fn deep_image(dir: &Path) -> Built {
    let mut entries = Vec::new();
    let replaced = format!("x{}", "/d".repeat(1500));
    for (i, _) in replaced.match_indices('/') {
        entries.push(dir_entry(&replaced[..i]));
    }
    entries.push(dir_entry(&replaced));
    entries.push(file("x", b"replaced\n"));
    let mut p = String::new();
    for _ in 0..DEPTH {
        p.push_str(if p.is_empty() { "d" } else { "/d" });
        entries.push(dir_entry(&p));
    }
    let bottom = format!("{p}/f");
    entries.push(file(&bottom, b"from below\n"));
    entries.push(hardlink("h", &bottom));
    one_layer(dir, entries)
}

fn dir_entry(p: &str) -> Entry {
    common::dir(p)
}

#[test]
fn a_layer_3000_levels_deep_loads_mounts_and_changes_under_1024_open_files() {
    check_the_limit_holds();
    let lab = Lab::new();
    let s = &lab.s;
    let src = deep_image(&s.scratch("deep-oci"));
    let id = limited_ok(s, &["load", "-q", &src.path.display().to_string()]);
    let id = id.lines().last().unwrap().to_string();
    let layer = top_layer(s, &id);
    assert_eq!(read_deep(&layer, DEPTH, "f"), "from below\n");
    assert_eq!(std::fs::read(layer.join("h")).unwrap(), b"from below\n");
    assert_eq!(std::fs::read(layer.join("x")).unwrap(), b"replaced\n");
    // history counts the file at the bottom (and its hard link once).
    let h: Value = serde_json::from_str(&limited_ok(s, &["history", "--json", &id])).unwrap();
    assert_eq!(h[0]["size"], 11 + 9, "{h}");

    // Mounted: read at the bottom, and written there (copy-up of 3000 directories).
    let m = lab.mount(&[&id, "--name", "low"], "m");
    assert_eq!(read_deep(&m, DEPTH, "f"), "from below\n");
    {
        let mut fd = open_dir(&m);
        for _ in 0..DEPTH {
            fd = sub(&fd, "d");
        }
        write_at(&fd, "new", b"from above\n");
    }
    // Written through the top name of the hard link: the deep name shows it too, which
    // diff finds by a pass over the image layer.
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("h"))
        .unwrap()
        .write_all(b"changed\n")
        .unwrap();
    lab.umount(&m);

    // Every directory on the way changed (copied up), the linked file changed at both
    // names, the new file added.
    let diff = limited_ok(s, &["diff", "low"]);
    let lines: Vec<&str> = diff.lines().collect();
    assert_eq!(lines.len(), DEPTH + 3, "{}", &diff[..diff.len().min(500)]);
    assert_eq!(lines[DEPTH - 1], format!("C {}", deep_path(DEPTH)));
    assert_eq!(lines[DEPTH], format!("C {}/f", deep_path(DEPTH)));
    assert_eq!(lines[DEPTH + 1], format!("A {}/new", deep_path(DEPTH)));
    assert_eq!(lines[DEPTH + 2], "C /h");

    let out = s.dir.path().join("low.tar");
    limited_ok(s, &["export", "low", "-o", out.to_str().unwrap()]);
    let entries = tar_entries(&out);
    let bottom = "d/".repeat(DEPTH);
    for (name, want) in [
        ("f", &b"from below\nchanged\n"[..]),
        ("new", b"from above\n"),
    ] {
        let p = format!("{bottom}{name}");
        assert!(
            entries.iter().any(|(e, data)| *e == p && data == want),
            "the export lacks {name} at the bottom"
        );
    }
    // The hard link is written once, its other name as a link (no content again).
    assert!(entries.iter().any(|(e, data)| e == "h" && data.is_empty()));

    limited_ok(s, &["commit", "low", "low:1"]);
    assert_eq!(
        read_deep(&top_layer(s, "low:1"), DEPTH, "new"),
        "from above\n"
    );
    assert_eq!(limited_ok(s, &["rm", "low"]), "low\n");
    limited_ok(s, &["rmi", "low:1", &id]);
    limited_ok(s, &["prune"]);
    assert!(s.layer_names().is_empty());
    assert!(names(&s.root.join("tmp")).is_empty());
}

/// Unmounts a tmpfs when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn at(p: &Path) -> Tmpfs {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", p.display());
        Tmpfs(p.to_path_buf())
    }

    fn moved(&mut self, to: PathBuf) {
        self.0 = to;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
}

#[test]
fn a_removal_whose_deletion_cannot_finish_is_done_and_never_blocks_load_or_prune() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "stuck"], "m");
    std::fs::create_dir(m.join("busy")).unwrap();
    lab.umount(&m);
    // A mount inside its writable layer: the directory renames, its deletion cannot end.
    let busy = s.root.join("containers/stuck/upper/busy");
    let mut tmpfs = Tmpfs::at(&busy);
    std::fs::write(busy.join("file"), "x").unwrap();

    // rm is done once the container is renamed away: gone from ps -a, not an error.
    let out = s.run(&["rm", "stuck"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rm failed: {err}");
    assert!(
        err.contains("layerfs prune"),
        "no word of the leftover: {err}"
    );
    let ps: Value = serde_json::from_str(&s.ok(&["ps", "-a", "--json"])).unwrap();
    assert_eq!(ps, serde_json::json!([]));
    let left = names(&s.root.join("tmp"));
    assert_eq!(left.len(), 1, "{left:?}");
    tmpfs.moved(s.root.join("tmp").join(&left[0]).join("x/upper/busy"));
    assert!(is_mounted(&tmpfs.0), "the tmpfs moved with its directory");

    // What cannot be deleted fails neither load nor prune (each says so), ...
    let out = s.run(&["load", "-q", &bb("latest", Spelling::Path)]);
    assert!(
        out.status.success(),
        "load failed on a leftover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.run(&["prune"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "prune failed on a leftover: {err}");
    assert!(err.contains("cannot remove a leftover"), "{err}");
    assert_eq!(names(&s.root.join("tmp")), left);

    // ... and prune removes it once it can.
    drop(tmpfs);
    let out = s.ok(&["prune"]);
    assert!(out.contains("Removed 1 leftover"), "{out}");
    assert!(names(&s.root.join("tmp")).is_empty());
}
