//! What `save -o` and `export -o` may write over (issue 19, defect 4): a new path or a
//! regular file (replaced, mode 0600 whatever the umask), an empty directory for an OCI
//! layout (0700, its files 0600); never a device node (copies of /dev/null and /dev/full
//! made with mknod in a temporary directory: the host's are never touched), a FIFO, a
//! socket, a symlink (neither followed nor replaced), or a directory for an archive. Each
//! refusal exits 1 with a message naming OUT and what it is, and leaves it as it was.
//! Needs root (mknod) and /dev/fuse (a container to export is made by mounting one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

/// A store with busybox and container `web` (mounted once, then unmounted).
fn store_with_container() -> TestStore {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("mnt");
    s.ok(&[
        "mount",
        "busybox:latest",
        mp.to_str().unwrap(),
        "--name",
        "web",
    ]);
    s.ok(&["umount", "web"]);
    s
}

/// Every way of writing an archive to `out`.
fn archive_commands(out: &Path) -> Vec<Vec<String>> {
    let o = out.display().to_string();
    let save = |f: &str| -> Vec<String> {
        ["save", "busybox:latest", "--format", f, "-o", &o]
            .map(String::from)
            .to_vec()
    };
    vec![
        save("docker-archive"),
        save("oci-archive"),
        ["export", "web", "-o", &o].map(String::from).to_vec(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Everything about a path that writing over it would change.
fn state(p: &Path) -> (u32, u64, u64, u64, Option<PathBuf>) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mode(), m.ino(), m.rdev(), m.size(), fs::read_link(p).ok())
}

/// Runs `layerfs ARGS` with umask `mask`; asserts success.
fn with_umask(s: &TestStore, mask: &str, a: &[&str]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {mask} && exec \"$LAYERFS_BIN\" \"$@\""))
        .arg("layerfs")
        .args(a)
        .env("LAYERFS_BIN", bin())
        .env("LAYERFS_ROOT", &s.root)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layerfs {a:?} (umask {mask}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn device_nodes_fifos_and_sockets_are_refused_and_left_alone() {
    require_root("makes device nodes with mknod");
    let s = store_with_container();
    let dir = s.scratch("o");
    let null = dir.join("null");
    let full = dir.join("full");
    let fifo = dir.join("fifo");
    let sock = dir.join("sock");
    mknod(
        &null,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknod(
        &full,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 7),
    )
    .unwrap();
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    for (out, what) in [
        (&null, "is a character device"),
        (&full, "is a character device"),
        (&fifo, "is a FIFO"),
        (&sock, "is a socket"),
    ] {
        let before = state(out);
        for cmd in archive_commands(out) {
            let err = s.fail(&args(&cmd));
            assert!(err.contains(what), "{cmd:?}: {err}");
            assert!(err.contains(&out.display().to_string()), "{cmd:?}: {err}");
            if cmd[0] == "export" {
                assert!(err.contains("redirect stdout"), "{cmd:?}: {err}");
            }
            assert_eq!(state(out), before, "{cmd:?} changed {}", out.display());
        }
        let o = out.display().to_string();
        let err = s.fail(&["save", "busybox:latest", "--format", "oci", "-o", &o]);
        assert!(err.contains(what), "{err}");
        assert_eq!(state(out), before);
    }
    assert_eq!(names(&dir), ["fifo", "full", "null", "sock"], "temp left");
}

#[test]
fn a_symlink_is_neither_followed_nor_replaced() {
    let s = store_with_container();
    let dir = s.scratch("o");
    let target = dir.join("target.tar");
    fs::write(&target, b"old").unwrap();
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    let to_file = dir.join("to-file");
    let to_dir = dir.join("to-dir");
    let dangling = dir.join("dangling");
    symlink(&target, &to_file).unwrap();
    symlink(&empty, &to_dir).unwrap();
    symlink(dir.join("nothing"), &dangling).unwrap();
    for link in [&to_file, &to_dir, &dangling] {
        let before = state(link);
        let mut cmds = archive_commands(link);
        let o = link.display().to_string();
        cmds.push(
            ["save", "busybox:latest", "--format", "oci", "-o", &o]
                .map(String::from)
                .to_vec(),
        );
        for cmd in cmds {
            let err = s.fail(&args(&cmd));
            assert!(err.contains("is a symlink"), "{cmd:?}: {err}");
            assert_eq!(state(link), before, "{cmd:?}");
        }
    }
    assert_eq!(fs::read(&target).unwrap(), b"old");
    assert!(names(&empty).is_empty());
    assert!(!dir.join("nothing").exists());
    assert_eq!(
        names(&dir),
        ["dangling", "empty", "target.tar", "to-dir", "to-file"],
        "temp left"
    );
}

#[test]
fn directories_take_a_layout_only_when_empty() {
    let s = store_with_container();
    let dir = s.scratch("o");
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    for cmd in archive_commands(&empty) {
        let err = s.fail(&args(&cmd));
        assert!(err.contains("is a directory"), "{cmd:?}: {err}");
    }
    let full = dir.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), b"x").unwrap();
    let err = s.fail(&[
        "save",
        "busybox:latest",
        "--format",
        "oci",
        "-o",
        full.to_str().unwrap(),
    ]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(names(&full), ["keep"]);
    let file = dir.join("file");
    fs::write(&file, b"x").unwrap();
    let err = s.fail(&[
        "save",
        "busybox:latest",
        "--format",
        "oci",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(err.contains("is a regular file"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"x");
    // An empty directory is replaced by the layout, private like any output.
    s.ok(&[
        "save",
        "busybox:latest",
        "--format",
        "oci",
        "-o",
        empty.to_str().unwrap(),
    ]);
    assert!(empty.join("index.json").is_file());
    assert_eq!(fs::metadata(&empty).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(names(&dir), ["empty", "file", "full"], "temp left");
}

/// Every entry under `root` with its permission bits.
fn modes(root: &Path) -> Vec<(String, u32)> {
    let mut out = vec![(
        String::from("."),
        fs::metadata(root).unwrap().mode() & 0o7777,
    )];
    walk_tree(root, &mut |rel, _, m| {
        out.push((rel.to_string(), m.mode() & 0o7777));
        true
    });
    out.sort();
    out
}

#[test]
fn outputs_are_private_whatever_the_umask() {
    let s = store_with_container();
    let dir = s.scratch("o");
    for mask in ["022", "0"] {
        // New archives, and archives over an existing world-readable file.
        for i in 0..3 {
            let out = dir.join(format!("new-{mask}-{i}"));
            let cmd = archive_commands(&out).swap_remove(i);
            with_umask(&s, mask, &args(&cmd));
            assert_eq!(
                fs::metadata(&out).unwrap().mode() & 0o7777,
                0o600,
                "{cmd:?}"
            );
            fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
            with_umask(&s, mask, &args(&cmd));
            assert_eq!(
                fs::metadata(&out).unwrap().mode() & 0o7777,
                0o600,
                "{cmd:?} over a file"
            );
        }
        // A layout: directories 0700, files 0600, new or over an empty directory.
        for existing in [false, true] {
            let out = dir.join(format!("layout-{mask}-{existing}"));
            if existing {
                fs::create_dir(&out).unwrap();
                fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
            }
            let o = out.display().to_string();
            with_umask(
                &s,
                mask,
                &["save", "busybox:latest", "--format", "oci", "-o", &o],
            );
            let got = modes(&out);
            assert!(got.len() > 5, "{got:?}");
            for (rel, mode) in got {
                let want = if out.join(&rel).is_dir() {
                    0o700
                } else {
                    0o600
                };
                assert_eq!(mode, want, "{o}/{rel} (umask {mask})");
            }
        }
    }
}
