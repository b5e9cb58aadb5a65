//! Containers through the real binary: a store (from `mod.rs`), `layerfs mount` of a
//! container at a mount point that is unmounted when the test ends (also when it fails),
//! and the tree manifest the shared fixtures' oracle prints, for comparing two trees.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::TestStore;

/// Runs `sh -ec SCRIPT` in `dir`, asserting success.
pub fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store with mounted containers that are unmounted on drop.
pub struct Lab {
    pub s: TestStore,
    mounted: std::cell::RefCell<Vec<PathBuf>>,
}

impl Lab {
    pub fn new() -> Lab {
        super::require_root("containers are mounted with FUSE");
        assert!(
            Path::new("/dev/fuse").exists(),
            "this test mounts FUSE and needs /dev/fuse"
        );
        Lab {
            s: TestStore::new(),
            mounted: Default::default(),
        }
    }

    /// A fresh empty directory next to the store.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.s.scratch(name)
    }

    /// `layerfs mount ARGS… DIR`, remembered for unmounting; returns DIR.
    pub fn mount(&self, args: &[&str], name: &str) -> PathBuf {
        let dir = self.dir(name);
        let mut a: Vec<&str> = vec!["mount"];
        a.extend_from_slice(args);
        a.push(dir.to_str().unwrap());
        self.s.ok(&a);
        self.mounted.borrow_mut().push(dir.clone());
        dir
    }

    /// `layerfs umount DIR`.
    pub fn umount(&self, dir: &Path) {
        self.s.ok(&["umount", dir.to_str().unwrap()]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in self.mounted.borrow().iter().rev() {
            if is_mounted(p) {
                let _ = Command::new("umount").arg(p).status();
                if is_mounted(p) {
                    let _ = Command::new("umount").arg("-l").arg(p).status();
                }
            }
        }
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let want = p.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_ref()))
}

/// The oracle's manifest of a tree (path, type, mode, owner, size, sha256, link target,
/// rdev, hard-link group, xattrs; no mtimes), root line and `excluded` paths left out.
pub fn manifest(dir: &Path, excluded: &[&str]) -> Vec<String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/lib/tree-manifest.py");
    let mut c = Command::new("python3");
    c.arg(&script);
    for e in excluded {
        c.arg("--exclude").arg(e);
    }
    let out = c.arg(dir).output().expect("python3 tree-manifest.py");
    assert!(
        out.status.success(),
        "tree-manifest.py {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with(".\t"))
        .map(String::from)
        .collect()
}

/// Asserts two manifests are equal, printing only the lines that differ.
pub fn assert_same_tree(a: &[String], b: &[String], what: &str) {
    if a == b {
        return;
    }
    let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    panic!(
        "{what}: trees differ\nonly in the first:\n  {}\nonly in the second:\n  {}",
        only_a
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_b
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Exports container `c` and extracts the tar; returns (tar listing, extracted dir).
pub fn export(s: &TestStore, c: &str, into: &str) -> (String, std::path::PathBuf) {
    let tar = s.dir.path().join(format!("{into}.tar"));
    s.ok(&["export", c, "-o", tar.to_str().unwrap()]);
    let out = s.scratch(into);
    let x = Command::new("tar")
        .arg("-xpf")
        .arg(&tar)
        .arg("-C")
        .arg(&out)
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--same-owner",
        ])
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let list = Command::new("tar").arg("tf").arg(&tar).output().unwrap();
    (String::from_utf8(list.stdout).unwrap(), out)
}
