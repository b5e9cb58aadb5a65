//! `layerfs mount` of real images from the store: every fixture's merged view against the
//! expected manifest, containers (writes, remount, isolation, one mount at a time),
//! read-only mounts, the image left untouched, clean shutdown and clear errors.
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::mount::*;
use common::{Spelling, bb, bin, fixture_ref, fixtures, manifest, require_fuse};

/// A store in a temp dir and the `layerfs` binary pointed at it.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        require_fuse();
        Store { dir: tempdir() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--root")
            .arg(self.root())
            .arg("-q")
            .args(args)
            .output()
            .expect("run layerfs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "layerfs {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `layerfs ps ARGS` (without the `-q` of [`Store::run`]).
    fn ps(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("--root")
            .arg(self.root())
            .arg("ps")
            .args(args)
            .output()
            .expect("run layerfs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

/// umoci (which made the expected manifests) drops empty xattr values; tar, overlayfs and
/// layerfs keep `user.layerfs.empty`. Drop it from our side when the oracle lacks it.
fn normalize(ours: Vec<String>, expected: &[String]) -> Vec<String> {
    if expected.iter().any(|l| l.contains("user.layerfs.empty=")) {
        return ours;
    }
    ours.into_iter()
        .map(|l| {
            l.replace("user.layerfs.empty=,", "")
                .replace("\tuser.layerfs.empty=", "\t-")
        })
        .collect()
}

fn expected(name: &str) -> Vec<String> {
    let p = fixtures().join("expected").join(format!("{name}.manifest"));
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.starts_with(".\t"))
        .map(String::from)
        .collect()
}

fn assert_same_tree(got: Vec<String>, want: &[String], what: &str) {
    let got = normalize(got, want);
    if got != want {
        let extra: Vec<_> = got.iter().filter(|l| !want.contains(l)).take(10).collect();
        let missing: Vec<_> = want.iter().filter(|l| !got.contains(l)).take(10).collect();
        panic!("{what}: merged view differs\nunexpected: {extra:#?}\nmissing: {missing:#?}");
    }
}

#[test]
fn every_fixture_mounts_to_its_expected_tree() {
    let s = Store::new();
    let f = fixtures();
    let cases: Vec<(String, &str)> = vec![
        (bb("latest", Spelling::Oci), "busybox"),
        (bb("l1", Spelling::Oci), "busybox-l1"),
        (bb("l2", Spelling::Oci), "busybox-l2"),
        (
            f.join("busybox/busybox.docker.tar").display().to_string(),
            "busybox",
        ),
        (
            format!(
                "oci-archive:{}:latest",
                f.join("busybox/busybox.oci.tar").display()
            ),
            "busybox",
        ),
        (
            fixture_ref("busybox-zstd", "latest", Spelling::Oci),
            "busybox-zstd",
        ),
        (
            format!(
                "oci:{}:latest",
                f.join("busybox-uncompressed/oci").display()
            ),
            "busybox-uncompressed",
        ),
        (
            fixture_ref("busybox-umoci", "latest", Spelling::Oci),
            "busybox-umoci",
        ),
        (
            fixture_ref("busybox-buildah-vfs", "latest", Spelling::Oci),
            "busybox-buildah-vfs",
        ),
    ];
    let mut guard = Unmount(Vec::new());
    for (i, (source, name)) in cases.iter().enumerate() {
        let mp = s.mountpoint(&format!("m{i}"));
        guard.0.push(mp.clone());
        s.ok(&["mount", source, mp.to_str().unwrap(), "--read-only"]);
        assert_same_tree(
            manifest(&mp, &[]),
            &expected(name),
            &format!("{source} (read-only)"),
        );
        s.ok(&["umount", mp.to_str().unwrap()]);
        // and with a container layer on top
        s.ok(&[
            "mount",
            source,
            mp.to_str().unwrap(),
            "--name",
            &format!("c{i}"),
        ]);
        assert_same_tree(
            manifest(&mp, &[]),
            &expected(name),
            &format!("{source} (container)"),
        );
        s.ok(&["umount", mp.to_str().unwrap()]);
        assert!(!is_mounted(&mp));
    }
}

#[test]
fn containers_keep_their_writes_are_isolated_and_leave_the_image_alone() {
    let s = Store::new();
    let src = bb("latest", Spelling::Oci);
    let loaded = s.ok(&["load", &src, "--tag", "bb"]);
    let id = loaded.lines().last().unwrap().trim().to_string();
    let layers_before = manifest(&s.root().join("layers"), &[]);
    let m1 = s.mountpoint("m1");
    let m2 = s.mountpoint("m2");
    let _g = Unmount(vec![m1.clone(), m2.clone()]);
    let name = s.ok(&["mount", "bb", m1.to_str().unwrap(), "--name", "web"]);
    assert_eq!(name.trim(), "web", "mount prints the container name");
    let other = s.ok(&["mount", "bb", m2.to_str().unwrap()]);
    let other = other.trim().to_string();
    assert!(other.starts_with("bb-"), "generated name: {other}");

    // a workload in web
    fs::write(m1.join("etc/hostname"), "web\n").unwrap();
    fs::write(m1.join("new-file"), "new").unwrap();
    fs::remove_file(m1.join("etc/motd")).unwrap();
    fs::rename(m1.join("data"), m1.join("data-moved")).unwrap();
    fs::remove_dir_all(m1.join("usr")).unwrap();
    std::os::unix::fs::chown(m1.join("bin/busybox"), Some(1234), None).unwrap();
    // the other container does not see it
    assert_eq!(read(&m2.join("etc/hostname")), "layerfs-busybox\n");
    assert!(!exists(&m2.join("new-file")));
    assert!(exists(&m2.join("etc/motd")));
    assert!(exists(&m2.join("data/new-file")));
    // the writes land in web's upper directory
    let upper = s.root().join("containers/web/upper");
    assert_eq!(read(&upper.join("new-file")), "new");
    assert!(is_whiteout(&upper.join("etc/motd")));

    // one container cannot be mounted twice at once
    let m3 = s.mountpoint("m3");
    let out = s.run(&["mount", "bb", m3.to_str().unwrap(), "--name", "web"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m3));

    // ps shows both, mounted (without -q: `ps -q` lists names only)
    let ps = s.ps(&[]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web ") && l.contains(m1.to_str().unwrap())),
        "{ps}"
    );
    assert!(ps.lines().any(|l| l.starts_with(&other)), "{ps}");

    // remount shows everything written before
    s.ok(&["umount", m1.to_str().unwrap()]);
    assert!(!is_mounted(&m1));
    let ps = s.ps(&["-a"]);
    assert!(
        ps.lines().any(|l| l.starts_with("web ")
            && l.contains("unmounted")
            && l.split("  ").any(|col| col.trim() == "-")),
        "{ps}"
    );
    s.ok(&["mount", "--name", "web", "bb", m1.to_str().unwrap()]);
    assert_eq!(read(&m1.join("etc/hostname")), "web\n");
    assert_eq!(read(&m1.join("new-file")), "new");
    assert!(!exists(&m1.join("etc/motd")));
    assert!(!exists(&m1.join("data")));
    assert_eq!(read(&m1.join("data-moved/new-file")), "new in layer 2\n");
    assert!(!exists(&m1.join("usr")));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(m1.join("bin/busybox")).unwrap().uid(), 1234);
    s.ok(&["umount", "web"]);
    s.ok(&["umount", m2.to_str().unwrap()]);

    // the image layers are byte for byte what they were
    assert_eq!(manifest(&s.root().join("layers"), &[]), layers_before);
    // rmi drops the name, but the image and its layers stay while containers use them
    let _ = s.run(&["rmi", "bb"]);
    let _ = s.run(&["prune"]);
    assert_eq!(manifest(&s.root().join("layers"), &[]), layers_before);
    s.ok(&["mount", &id, m1.to_str().unwrap(), "--name", "web"]);
    assert_eq!(read(&m1.join("new-file")), "new");
    s.ok(&["umount", "web"]);
}

#[test]
fn sigterm_unmounts_cleanly_and_frees_the_container() {
    let s = Store::new();
    let src = bb("latest", Spelling::Oci);
    let mp = s.mountpoint("m");
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", &src, mp.to_str().unwrap(), "--name", "t"]);
    let pid = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(pid.contains(mp.to_str().unwrap()));
    // find the daemon: the process holding the container lock
    let out = Command::new("fuser")
        .arg(s.root().join("containers/t/lock"))
        .output();
    let pids: Vec<i32> = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    let pids = if pids.is_empty() {
        // psmisc missing: look through /proc for our daemon
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(mp.to_str().unwrap()))
                    .unwrap_or(false)
            })
            .collect()
    } else {
        pids
    };
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    while is_mounted(&mp) && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!is_mounted(&mp), "SIGTERM unmounts");
    // the container can be mounted again right away
    let t0 = std::time::Instant::now();
    loop {
        let out = s.run(&["mount", &src, mp.to_str().unwrap(), "--name", "t"]);
        if out.status.success() {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 10,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s.ok(&["umount", "t"]);
}

#[test]
fn bad_input_fails_clearly_and_mounts_nothing() {
    let s = Store::new();
    let mp = s.mountpoint("m");
    let _g = Unmount(vec![mp.clone()]);
    let out = s.run(&["mount", "no-such-image", mp.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-image"), "{err}");
    assert!(!is_mounted(&mp));
    let src = bb("latest", Spelling::Oci);
    let out = s.run(&["mount", &src, "/nonexistent/dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
    let out = s.run(&[
        "mount",
        &src,
        mp.to_str().unwrap(),
        "--read-only",
        "--name",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(!is_mounted(&mp));
}

#[test]
fn foreground_mount_stays_attached_and_stops_on_sigint() {
    let s = Store::new();
    let src = bb("latest", Spelling::Oci);
    let mp = s.mountpoint("m");
    let _g = Unmount(vec![mp.clone()]);
    let mut child = Command::new(bin())
        .arg("--root")
        .arg(s.root())
        .args(["-q", "mount", &src])
        .arg(&mp)
        .args(["--name", "fg", "--foreground"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !is_mounted(&mp) {
        assert!(
            t0.elapsed().as_secs() < 20,
            "foreground mount did not come up"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "foreground mount exited early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(read(&mp.join("etc/hostname")), "layerfs-busybox\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "stays attached while mounted"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGINT: {status}");
    assert!(!is_mounted(&mp));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(out.trim(), "fg", "prints the container name");
}

#[test]
fn read_only_mount_of_a_container_shows_its_layer_and_writes_nothing() {
    let s = Store::new();
    let src = bb("latest", Spelling::Oci);
    s.ok(&["load", &src, "--tag", "bb"]);
    let m = s.mountpoint("m");
    let _g = Unmount(vec![m.clone()]);
    s.ok(&["mount", "bb", m.to_str().unwrap(), "--name", "web"]);
    fs::write(m.join("only-in-upper"), "container data").unwrap();
    fs::remove_file(m.join("etc/motd")).unwrap();
    s.ok(&["umount", "web"]);
    let upper = s.root().join("containers/web/upper");
    let before = manifest(&upper, &[]);
    s.ok(&[
        "mount",
        "bb",
        m.to_str().unwrap(),
        "--name",
        "web",
        "--read-only",
    ]);
    assert_eq!(read(&m.join("only-in-upper")), "container data");
    assert!(!exists(&m.join("etc/motd")), "its whiteouts count");
    let err = fs::write(m.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    // while it is mounted, the container cannot be mounted writable elsewhere
    let m2 = s.mountpoint("m2");
    let out = s.run(&["mount", "bb", m2.to_str().unwrap(), "--name", "web"]);
    assert!(!out.status.success());
    s.ok(&["umount", m.to_str().unwrap()]);
    assert_eq!(
        manifest(&upper, &[]),
        before,
        "the upper layer was not written"
    );
    // a container that does not exist is an error, not a new container
    let out = s.run(&[
        "mount",
        "bb",
        m.to_str().unwrap(),
        "--name",
        "nope",
        "--read-only",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no container nope"));
    assert!(!s.root().join("containers/nope").exists());
}
