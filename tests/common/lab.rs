//! Containers through the real binary: a store (from `mod.rs`) and `layerfs mount` of a
//! container at a mount point that is unmounted when the test ends (also when it fails).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub use super::mount::is_mounted;
use super::{TestStore, require_fuse};

/// A store with mounted containers that are unmounted on drop.
pub struct Lab {
    pub s: TestStore,
    mounted: std::cell::RefCell<Vec<PathBuf>>,
}

impl Lab {
    pub fn new() -> Lab {
        require_fuse();
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
