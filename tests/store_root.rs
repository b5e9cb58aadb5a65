//! The store root as a hostile local user would attack it: a root directory another user
//! owns or may write, and symlinks planted where the store keeps its own directories.
//! Nothing outside the store may be chmodded, deleted or written, whatever the commands.
//!
//! Needs root (the attacker is uid 65534 through setpriv, util-linux).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Runs `layerfs --root ROOT ARGS` as root.
fn layerfs(root: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("LAYERFS_ROOT")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A root-owned directory with files, mode 0755: what the attacks aim at.
struct Victim {
    dir: PathBuf,
}

impl Victim {
    fn new(base: &Path) -> Victim {
        let dir = base.join("victim");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("precious"), b"keep me").unwrap();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/also"), b"and me").unwrap();
        Victim { dir }
    }

    /// Nothing in it changed: mode, files, contents.
    fn intact(&self, after: &str) {
        let m = fs::symlink_metadata(&self.dir).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755, "victim chmodded by {after}");
        assert_eq!(
            fs::read(self.dir.join("precious")).ok().as_deref(),
            Some(&b"keep me"[..]),
            "victim file deleted by {after}"
        );
        assert_eq!(
            fs::read(self.dir.join("sub/also")).ok().as_deref(),
            Some(&b"and me"[..]),
            "victim subdirectory emptied by {after}"
        );
        assert_eq!(
            names(&self.dir),
            ["precious", "sub"],
            "victim written by {after}"
        );
    }
}

/// A sticky, world-writable parent (like /tmp) in a fresh temporary directory.
fn sticky_tmp() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("layerfs-root-")
        .tempdir()
        .unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(t.path().join("tmp")).unwrap();
    fs::set_permissions(t.path().join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    t
}

/// The attack: nobody makes the directory root will use as a store, lets root
/// make a store in it, then swaps the store's `tmp/` for a symlink to a root directory.
/// Root's commands must refuse the foreign root from the start, and touch nothing.
#[test]
fn a_root_another_user_owns_is_refused_and_nothing_outside_is_touched() {
    require_root("acts as uid 65534 with setpriv");
    let t = sticky_tmp();
    let victim = Victim::new(t.path());
    let root = t.path().join("tmp/layerfs-demo");
    sh_ok_as(NOBODY, &format!("mkdir -m 777 {}", root.display()));

    let o = layerfs(&root, &["images"]);
    assert!(
        !o.status.success(),
        "a store root owned by nobody was accepted"
    );
    let err = stderr(&o);
    assert!(
        err.contains("owned by uid 65534") && err.contains(&root.display().to_string()),
        "the refusal does not say whose directory it is: {err}"
    );
    let m = fs::metadata(&root).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (NOBODY, 0o777),
        "refused root changed"
    );
    assert!(names(&root).is_empty(), "a refused root was written into");

    // What the attacker does next (only possible when the store was made there).
    sh_ok_as(
        NOBODY,
        &format!(
            "rm -rf {r}/tmp && ln -s {v} {r}/tmp",
            r = root.display(),
            v = victim.dir.display()
        ),
    );
    for args in [
        &["images"][..],
        &["prune"],
        &["load", "nosuch.tar"],
        &["df"],
    ] {
        let o = layerfs(&root, args);
        assert!(!o.status.success(), "{args:?} ran on a foreign root");
        victim.intact(&format!("layerfs {args:?}"));
    }
}

/// A directory of one's own that others may write: a new store there is fine once
/// tightened (what `mkdir -m 777 DIR` before the quick start gives); one that already
/// holds something is refused, since anyone could have put it there.
#[test]
fn a_root_writable_by_others_is_tightened_when_empty_and_refused_when_not() {
    require_root("root's own directories, as the issue's case");
    let t = sticky_tmp();
    let empty = t.path().join("tmp/mine");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o777)).unwrap();
    let o = layerfs(&empty, &["images"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(&empty).unwrap().mode() & 0o7777, 0o700);

    // The same store, widened again: refused, and left as it is.
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o777)).unwrap();
    let o = layerfs(&empty, &["images"]);
    assert!(!o.status.success(), "a populated 0777 store was accepted");
    let err = stderr(&o);
    assert!(
        err.contains("writable by other users") && err.contains("chmod 700"),
        "{err}"
    );
    assert_eq!(fs::metadata(&empty).unwrap().mode() & 0o7777, 0o777);

    // After the owner's chmod it is a store again; a root only others may read is
    // tightened quietly.
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o755)).unwrap();
    let o = layerfs(&empty, &["images"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(&empty).unwrap().mode() & 0o7777, 0o700);
}

/// The store's own directories replaced by symlinks (by whoever could: a damaged store,
/// a restore gone wrong): no command follows them out, whatever it does there.
#[test]
fn symlinks_inside_the_store_are_never_followed() {
    require_root("the victim is a root-owned directory");
    let s = TestStore::new();
    let b = one_layer(&s.scratch("img"), vec![dir("etc"), file("etc/a", b"a")]);
    s.load(&b.path.display().to_string());
    let victim = Victim::new(s.dir.path());
    for d in ["tmp", "layers", "images", "containers", "mounts"] {
        let p = s.root.join(d);
        let kept = s.root.join(format!("{d}.real"));
        fs::rename(&p, &kept).unwrap();
        std::os::unix::fs::symlink(&victim.dir, &p).unwrap();
        for args in [
            &["images"][..],
            &["prune"],
            &["ps", "-a"],
            &["df"],
            &["load", &b.path.display().to_string()],
            &[
                "rmi",
                "-f",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
        ] {
            let o = layerfs(&s.root, args);
            victim.intact(&format!("layerfs {args:?} with {d} a symlink"));
            assert!(
                !o.status.success(),
                "layerfs {args:?} succeeded with {d} a symlink"
            );
            assert!(
                stderr(&o).contains(&format!("{}: not a directory", p.display())),
                "{}",
                stderr(&o)
            );
        }
        fs::remove_file(&p).unwrap();
        fs::rename(&kept, &p).unwrap();
    }
    // Records planted as symlinks to host files are not read either.
    let refs = s.root.join("refs.json");
    fs::remove_file(&refs).ok();
    std::os::unix::fs::symlink("/etc/passwd", &refs).unwrap();
    let o = layerfs(&s.root, &["images"]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("root:x:0:0"), "{}", stderr(&o));
}

/// A plain user's store follows the same rule: a directory root made for them is refused;
/// their own new (empty) directory becomes a 0700 store.
#[test]
fn a_plain_users_store_follows_the_same_rule() {
    require_root("acts as uid 65534 with setpriv");
    let t = sticky_tmp();
    let foreign = t.path().join("tmp/by-root");
    fs::create_dir(&foreign).unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o777)).unwrap();
    let theirs = t.path().join("tmp/theirs");
    sh_ok_as(
        NOBODY,
        &format!(
            "! {bin} --root {f} images 2>{t}/err && grep -q 'owned by uid 0' {t}/err && \
         mkdir -m 755 {n} && {bin} --root {n} images && [ \"$(stat -c %a {n})\" = 700 ]",
            bin = bin().display(),
            f = foreign.display(),
            n = theirs.display(),
            t = t.path().join("tmp").display(),
        ),
    );
    assert!(names(&foreign).is_empty());
}
