//! What a `layerfs mount` exposes, and what it holds, through real mounts of the real
//! binary: by default only the mounting user enters and the image's setuid binaries and
//! device nodes do nothing (`nosuid,nodev`); `--allow-other`, `--suid` and `--dev` opt
//! in one by one. A read-only mount holds its image against `rmi` and `prune` while it
//! lives, and not after. An image without layers mounts as an empty root.
//! Needs root, /dev/fuse and setpriv (util-linux); drops to uid 65534 for the outsider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::Unmount;
use common::*;

/// A store whose temporary directory other users may traverse (so that only the mount's
/// own options keep them out), and a mount point in it.
fn open_store() -> (TestStore, PathBuf) {
    require_fuse();
    let s = TestStore::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mp = s.scratch("mnt");
    (s, mp)
}

/// An image with a setuid-root copy of the host's `id`, a device node (1,3: null) that
/// anyone may open, and a world-readable file.
fn exposure_image(s: &TestStore) -> String {
    let id_bin = fs::read("/usr/bin/id").expect("/usr/bin/id (coreutils)");
    let b = one_layer(
        &s.scratch("img"),
        vec![
            dir("bin"),
            file("bin/id", &id_bin).mode(0o4755).owner(0, 0),
            dir("dev"),
            chardev("dev/null", 1, 3).mode(0o666),
            dir("etc"),
            file("etc/hostname", b"exposed\n"),
        ],
    );
    s.load(&b.path.display().to_string())
}

/// The per-mount options of the mount at `mp` (`rw,nosuid,nodev,relatime`).
fn mount_options(mp: &Path) -> Vec<String> {
    mount::mount_options(mp).0
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Opening the image's device node, as root, through the mount.
fn open_device(mp: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).open(mp.join("dev/null"))
}

#[test]
fn a_default_mount_is_the_owners_alone_and_nosuid_nodev() {
    let (s, mp) = open_store();
    let image = exposure_image(&s);
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", &image, mp.to_str().unwrap(), "--name", "c"]);
    let opts = mount_options(&mp);
    assert!(
        opts.contains(&"nosuid".to_string()) && opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    // Root (the owner) uses it; the device node cannot be opened.
    assert_eq!(mount::read(&mp.join("etc/hostname")), "exposed\n");
    let e = open_device(&mp).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "nodev: {e}");
    // Another user does not get in at all, so neither the setuid binary nor anything else.
    for cmd in [
        format!("cat {}/etc/hostname", mp.display()),
        format!("ls {}", mp.display()),
        format!("{}/bin/id -u", mp.display()),
    ] {
        let out = sh_as(NOBODY, &cmd);
        assert!(!out.status.success(), "{cmd} as nobody: {}", stdout(&out));
        assert!(
            stderr(&out).contains("Permission denied"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    // The same for a read-only mount.
    let ro = s.scratch("ro");
    let _g2 = Unmount(vec![ro.clone()]);
    s.ok(&["mount", &image, ro.to_str().unwrap(), "--read-only"]);
    let opts = mount_options(&ro);
    assert!(
        opts.contains(&"nosuid".to_string()) && opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    assert!(
        !sh_as(NOBODY, &format!("ls {}", ro.display()))
            .status
            .success()
    );
    s.ok(&["umount", ro.to_str().unwrap()]);
    s.ok(&["umount", "c"]);
}

#[test]
fn allow_other_lets_users_in_without_setuid_or_devices() {
    let (s, mp) = open_store();
    let image = exposure_image(&s);
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", &image, mp.to_str().unwrap(), "--allow-other"]);
    let opts = mount_options(&mp);
    assert!(
        opts.contains(&"nosuid".to_string()) && opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    let out = sh_as(NOBODY, &format!("cat {}/etc/hostname", mp.display()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "exposed");
    // The setuid-root binary runs, without privilege.
    let out = sh_as(NOBODY, &format!("{}/bin/id -u", mp.display()));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "65534", "nosuid: no euid 0");
    // The device node cannot be opened, by anyone.
    let out = sh_as(NOBODY, &format!("echo x > {}/dev/null", mp.display()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        open_device(&mp).unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );
    s.ok(&["umount", mp.to_str().unwrap()]);
}

#[test]
fn suid_and_dev_are_explicit_opt_ins() {
    let (s, mp) = open_store();
    let image = exposure_image(&s);
    let _g = Unmount(vec![mp.clone()]);
    let out = s.run(&[
        "mount",
        &image,
        mp.to_str().unwrap(),
        "--allow-other",
        "--suid",
        "--dev",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning") && stderr(&out).contains("setuid"),
        "the risky combination is pointed out: {}",
        stderr(&out)
    );
    let opts = mount_options(&mp);
    assert!(
        !opts.contains(&"nosuid".to_string()) && !opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    // What the defaults prevent: the test would catch them being dropped.
    let out = sh_as(NOBODY, &format!("{}/bin/id -u", mp.display()));
    assert_eq!(stdout(&out), "0", "suid: {}", stderr(&out));
    open_device(&mp).unwrap();
    s.ok(&["umount", mp.to_str().unwrap()]);
    // One without the other.
    s.ok(&[
        "mount",
        &image,
        mp.to_str().unwrap(),
        "--dev",
        "--read-only",
    ]);
    let opts = mount_options(&mp);
    assert!(
        opts.contains(&"nosuid".to_string()) && !opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    open_device(&mp).unwrap();
    s.ok(&["umount", mp.to_str().unwrap()]);
    s.ok(&[
        "mount",
        &image,
        mp.to_str().unwrap(),
        "--suid",
        "--read-only",
    ]);
    let opts = mount_options(&mp);
    assert!(
        !opts.contains(&"nosuid".to_string()) && opts.contains(&"nodev".to_string()),
        "{opts:?}"
    );
    s.ok(&["umount", mp.to_str().unwrap()]);
}

#[test]
fn store_files_are_private_whatever_the_umask() {
    let (s, mp) = open_store();
    let image = exposure_image(&s);
    let _g = Unmount(vec![mp.clone()]);
    // umask 0: the daemon's own, and a careless caller's.
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 0 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args(["mount", &image, mp.to_str().unwrap(), "--name", "u"])
        .env("LAYERFS_ROOT", &s.root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    fs::write(mp.join("new"), "n").unwrap();
    let ro = s.scratch("ro");
    let _g2 = Unmount(vec![ro.clone()]);
    s.ok(&["mount", &image, ro.to_str().unwrap(), "--read-only"]);
    s.ok(&["umount", "u"]);
    use std::os::unix::fs::MetadataExt;
    let mut seen = 0;
    walk_tree(&s.root, &mut |rel, _, m| {
        let rel = Path::new(rel);
        // Inside layers and the writable layer, modes are the image's; the work
        // directory's insides are the union's (the work directory itself is 0700).
        let in_layer = rel.starts_with("layers")
            && rel
                .components()
                .nth(2)
                .is_some_and(|c| c.as_os_str() == "diff");
        if in_layer
            || rel.starts_with("containers/u/upper")
            || rel.starts_with("containers/u/work") && rel != Path::new("containers/u/work")
        {
            return false;
        }
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            if rel.starts_with("empty") {
                return false;
            }
            assert_eq!(mode, 0o700, "{}", rel.display());
        } else {
            assert_eq!(mode, 0o600, "{}", rel.display());
        }
        seen += 1;
        true
    });
    assert!(seen > 10, "walked the store");
    for f in ["containers/u/container.json", "containers/u/daemon.log"] {
        assert!(s.root.join(f).is_file(), "{f}");
    }
    s.ok(&["umount", ro.to_str().unwrap()]);
}

#[test]
fn a_read_only_mount_holds_its_image_until_unmounted() {
    let (s, mp) = open_store();
    let id = s.load(&bb("latest", Spelling::Path));
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", "busybox", mp.to_str().unwrap(), "--read-only"]);
    let hostname = mp.join("etc/hostname");
    assert_eq!(mount::read(&hostname), "layerfs-busybox\n");
    // rmi refuses, by name and by id, saying why.
    let err = s.fail(&["rmi", "busybox"]);
    assert!(
        err.contains("read-only mount at") && err.contains(mp.to_str().unwrap()),
        "{err}"
    );
    let err = s.fail(&["rmi", &id]);
    assert!(err.contains("read-only mount at"), "{err}");
    // --force removes the name only.
    let out = s.ok(&["rmi", "--force", "busybox"]);
    assert!(
        out.contains("Untagged: busybox:latest") && !out.contains("Deleted"),
        "{out}"
    );
    assert_eq!(s.layer_names().len(), 3);
    assert_eq!(mount::read(&hostname), "layerfs-busybox\n");
    // prune keeps the (now dangling) image and its layers while mounted.
    let out = s.ok(&["prune"]);
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(s.layer_names().len(), 3);
    assert_eq!(s.inspect(&id)["id"], id.as_str());
    assert!(!fs::read(mp.join("bin/busybox")).unwrap().is_empty());
    // After the unmount, nothing holds it.
    s.ok(&["umount", mp.to_str().unwrap()]);
    let out = s.ok(&["prune"]);
    assert!(out.contains(&format!("Deleted image: {id}")), "{out}");
    assert!(s.layer_names().is_empty(), "{out}");
    assert!(names(&s.root.join("mounts")).is_empty());
}

#[test]
fn a_killed_read_only_daemon_holds_nothing() {
    let (s, mp) = open_store();
    let id = s.load(&bb("latest", Spelling::Path));
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", &id, mp.to_str().unwrap(), "--read-only"]);
    let records = names(&s.root.join("mounts"));
    assert_eq!(records.len(), 1, "{records:?}");
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root.join("mounts").join(&records[0])).unwrap())
            .unwrap();
    assert_eq!(rec["image"], id.as_str());
    let pid = rec["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    while fs::metadata(format!("/proc/{pid}")).is_ok() {
        assert!(t0.elapsed().as_secs() < 10, "daemon {pid} did not die");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = Command::new("umount").arg("-l").arg(&mp).status();
    // The record is left, unlocked: stale, it holds nothing, and rmi removes it.
    assert_eq!(names(&s.root.join("mounts")).len(), 1);
    let out = s.ok(&["rmi", &id]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(s.layer_names().is_empty(), "{out}");
    assert!(names(&s.root.join("mounts")).is_empty());
}

#[test]
fn an_image_without_layers_mounts_as_an_empty_root() {
    let (s, mp) = open_store();
    let b = write_oci(&s.scratch("empty-img"), &ImageSpec::new(vec![]), "latest");
    let id = s.load(&b.path.display().to_string());
    assert!(s.inspect(&id)["layers"].as_array().unwrap().is_empty());
    let _g = Unmount(vec![mp.clone()]);
    s.ok(&["mount", &id, mp.to_str().unwrap(), "--read-only"]);
    assert!(mount::ls(&mp).is_empty());
    assert_eq!(mount::mode(&mp) & 0o7777, 0o755);
    let e = fs::write(mp.join("x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    s.ok(&["umount", mp.to_str().unwrap()]);
    // With a container layer: writable, and what was written stays.
    s.ok(&["mount", &id, mp.to_str().unwrap(), "--name", "scratch"]);
    assert!(mount::ls(&mp).is_empty());
    assert_eq!(mount::mode(&mp) & 0o7777, 0o755);
    fs::create_dir(mp.join("d")).unwrap();
    fs::write(mp.join("d/f"), "written").unwrap();
    s.ok(&["umount", "scratch"]);
    s.ok(&["mount", &id, mp.to_str().unwrap(), "--name", "scratch"]);
    assert_eq!(mount::read(&mp.join("d/f")), "written");
    assert_eq!(mount::ls(&mp), vec!["d"]);
    s.ok(&["umount", "scratch"]);
    // prune keeps the empty root's directory alone.
    s.ok(&["prune"]);
    assert!(s.root.join("empty").is_dir());
}
