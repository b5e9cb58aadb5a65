//! `layerfs run` and `layerfs bundle` (issue 21): an image's command in a real container
//! (runc) on a layerfs mount, as root and as a plain user, its output and exit status
//! passed through, the container kept or removed, and what it wrote committed with the
//! owners a rootful container gives them.
//!
//! Needs root (to act as nobody too), /dev/fuse, runc, crun, uidmap and jq (installed by
//! .ci/run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

fn layerfs_as(uid: u32, s: &TestStore) -> Command {
    let mut c = command_as(uid, bin());
    c.arg("--root")
        .arg(&s.root)
        .env("HOME", s.dir.path())
        .env("XDG_RUNTIME_DIR", "")
        .env_remove("RUST_LOG");
    c
}

fn store_for(uid: u32) -> TestStore {
    fuse_for_users();
    let s = TestStore::new();
    std::os::unix::fs::chown(s.dir.path(), Some(uid), Some(uid)).unwrap();
    run_ok(layerfs_as(uid, &s).args(["load", "-q", &bb("latest", Spelling::Oci)]));
    s
}

/// The command's output and status come through; --rm leaves nothing, --name keeps the
/// layer for diff and commit; the owners committed are root's, as the container's root
/// made the files — for root and, rootless, for nobody alike.
#[test]
fn run_passes_output_and_status_and_keeps_the_layer() {
    for uid in [0, NOBODY] {
        let s = store_for(uid);
        let out = layerfs_as(uid, &s)
            .args([
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                "echo hello; id -u; exit 3",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello\n0\n",
            "uid {uid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(3), "uid {uid}");
        let ps = run_ok(layerfs_as(uid, &s).args(["ps", "-a", "-q"]));
        assert_eq!(ps.trim(), "", "--rm left a container (uid {uid})");
        run_ok(layerfs_as(uid, &s).args([
            "run",
            "--name",
            "keep",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /srv/www && echo kept > /srv/www/k && ln -s k /srv/www/l",
        ]));
        let diff = run_ok(layerfs_as(uid, &s).args(["diff", "keep"]));
        assert!(diff.contains("A /srv/www/k"), "uid {uid}: {diff}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains("layerfs:keep"), "the mount outlived run");
        run_ok(layerfs_as(uid, &s).args(["commit", "keep", "kept:1"]));
        let tar = s.dir.path().join("kept.tar");
        run_ok(layerfs_as(uid, &s).args(["save", "kept:1", "-o"]).arg(&tar));
        let x = s.dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let tv = run_ok(Command::new("sh").arg("-ec").arg(format!(
            "tar -C {x} -xf {t}; tar tvnf {x}/$(jq -r '.[0].Layers[-1]' {x}/manifest.json)",
            x = x.display(),
            t = tar.display()
        )));
        for name in ["srv/", "srv/www/", "srv/www/k", "srv/www/l -> k"] {
            let line = tv.lines().find(|l| l.ends_with(name)).unwrap_or_else(|| {
                panic!("uid {uid}: no {name} in\n{tv}");
            });
            assert!(line.contains(" 0/0 "), "uid {uid}: {line}");
        }
    }
}

/// A bundle runc runs by itself: config.json from the image config (command replaced
/// after --), the rootfs the container's mount.
#[test]
fn bundle_runs_with_runc() {
    let s = store_for(0);
    let b = s.dir.path().join("b");
    let name = run_ok(layerfs_as(0, &s).args(["bundle", "busybox"]).arg(&b).args([
        "--name",
        "bb",
        "--",
        "sh",
        "-c",
        "cat /etc/hostname; echo $HOSTNAME",
    ]));
    assert_eq!(name.trim(), "bb");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["args"][0], "sh");
    assert_eq!(cfg["root"]["path"], "rootfs");
    let out = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&b)
        .arg(format!("layerfs-test-{}", std::process::id()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "layerfs-busybox\nbb\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(layerfs_as(0, &s).args(["umount", "bb"]));
}

/// A runtime that is not there: a clear error, and the mount does not stay behind.
#[test]
fn a_missing_runtime_is_named() {
    let s = store_for(0);
    let out = layerfs_as(0, &s)
        .args([
            "run",
            "--runtime",
            "/nonexistent/crun",
            "--name",
            "x",
            "busybox",
            "true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/nonexistent/crun") && err.contains("install crun or runc"),
        "{err}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("layerfs:x "), "the mount stayed");
}

/// crun runs a bundle too. This machine's cgroups are the v1/v2 hybrid crun refuses (so
/// `layerfs run` picks runc here, which the test above uses): the test hides the v2
/// hierarchy in a mount namespace of its own, as the fixtures README says, and asks for
/// crun by name.
#[test]
fn crun_runs_the_bundle_and_run_names_it() {
    assert!(
        Command::new("crun")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs crun (apt-get install crun; .ci/run installs it)"
    );
    let s = store_for(0);
    let b = s.dir.path().join("b");
    run_ok(layerfs_as(0, &s).args(["bundle", "busybox"]).arg(&b).args([
        "--name",
        "cb",
        "--",
        "sh",
        "-c",
        "echo in-crun",
    ]));
    let hide = "if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then \
                mount -t tmpfs none /sys/fs/cgroup/unified; fi";
    let out = run_ok(
        Command::new("unshare")
            .args(["-m", "sh", "-ec"])
            .arg(format!(
                "{hide}; crun run --bundle {} layerfs-crun-{}",
                b.display(),
                std::process::id()
            )),
    );
    assert_eq!(out, "in-crun\n");
    run_ok(layerfs_as(0, &s).args(["umount", "cb"]));
    let out = run_ok(
        Command::new("unshare")
            .args(["-m", "sh", "-ec"])
            .arg(format!(
                "{hide}; {} --root {} run --rm --runtime crun busybox echo via-run",
                bin().display(),
                s.root.display()
            )),
    );
    assert_eq!(out, "via-run\n");
}

/// Rootless crun: a plain user (nobody, with its subuid range) in a user namespace of its
/// own, where it can hide this machine's cgroup hybrid as root does above, bundles the
/// image and runs it with `crun run`, and `layerfs run --runtime crun` does the same.
#[test]
fn crun_runs_a_rootless_bundle_in_a_user_namespace() {
    subids_for("nobody");
    let s = store_for(NOBODY);
    let b = s.dir.path().join("rb");
    let script = format!(
        "if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then \
           mount -t tmpfs none /sys/fs/cgroup/unified; fi; \
         L='{bin} --root {root}'; \
         $L bundle busybox {b} --name rb -- sh -c 'echo bundled; id -u; stat -c %u /home/user' >/dev/null; \
         crun --root {state} run --bundle {b} layerfs-rcrun-{pid}; $L umount rb; \
         $L run --rm --runtime crun busybox sh -c 'echo via-run; id -u'",
        bin = bin().display(),
        root = s.root.display(),
        b = b.display(),
        state = s.dir.path().join("crun").display(),
        pid = std::process::id()
    );
    let out = run_ok(
        command_as(NOBODY, "unshare")
            .env("HOME", s.dir.path())
            .env("XDG_RUNTIME_DIR", "")
            .args(["--map-auto", "--map-root-user", "-m", "sh", "-ec", &script]),
    );
    // The image's owners inside (home/user is uid 1000's), root the container's user.
    assert_eq!(out, "bundled\n0\n1000\nvia-run\n0\n");
}
