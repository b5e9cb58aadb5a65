//! `layerfs export`: a container's merged view as one tar, compared with what a mount of
//! the container shows after every kind of change (write, delete, opaque re-create,
//! rename of a lower directory, hard link, chmod/chown of a big lower file, xattrs), and
//! `docker import` of it; and `save` of layers without a recorded tar layout (an older
//! store). Needs root, /dev/fuse, GNU tar, python3 and Docker Engine (`.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::tools::Docker;
use common::*;

/// Extracts `tar` into a new directory the way a container runtime would (owners,
/// modes, xattrs, devices, hard links) and returns its tree manifest.
fn extracted_tree(tar: &Path, into: &Path) -> Vec<String> {
    fs::create_dir_all(into).unwrap();
    run_ok(
        Command::new("tar")
            .args(["-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(into)
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "--same-owner",
            ]),
    );
    manifest(into, &[])
}

/// Makes every kind of change through the mount of container `c`.
fn change_everything(mp: &Path) {
    sh_in(
        mp,
        "echo new > new-file && echo more >> etc/hostname 2>/dev/null || echo more > etc/hostname",
    );
    sh_in(mp, "rm -rf data && rm -f bin/ls");
    sh_in(
        mp,
        "rm -rf opaque-dir && mkdir opaque-dir && echo again > opaque-dir/x",
    );
    sh_in(
        mp,
        "mv readd-dir renamed-dir && mkdir -p deep/a/b && echo d > deep/a/b/f",
    );
    sh_in(mp, "ln new-file new-link && ln bin/busybox busybox-link");
    sh_in(mp, "chmod 4711 bin/busybox && chown 1234:5678 bin/busybox");
    sh_in(
        mp,
        "setfattr -n user.export -v yes new-file && setfattr -n user.empty new-file",
    );
    sh_in(mp, "mkfifo fifo && mknod null-dev c 1 3");
    fs::set_permissions(mp.join("deep/a"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn export_is_the_merged_tree_of_a_mount() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("mnt");
    let _u = mount::Unmount(vec![mp.clone()]);
    s.ok(&[
        "mount",
        "busybox:latest",
        mp.to_str().unwrap(),
        "--name",
        "web",
    ]);
    change_everything(&mp);
    let mounted = manifest(&mp, &[]);
    // Exported while mounted, and after.
    let live = s.dir.path().join("live.tar");
    s.ok(&["export", "web", "-o", live.to_str().unwrap()]);
    s.ok(&["umount", "web"]);
    let out = s.dir.path().join("web.tar");
    s.ok(&["export", "web", "-o", out.to_str().unwrap()]);
    assert_eq!(extracted_tree(&out, &s.dir.path().join("x")), mounted);
    assert_eq!(extracted_tree(&live, &s.dir.path().join("y")), mounted);
    // No overlay marks, whiteouts or layerfs' own xattrs in the tar.
    let list = run_ok(Command::new("tar").arg("tvf").arg(&out));
    assert!(!list.contains(".wh."), "{list}");
    let bytes = fs::read(&out).unwrap();
    for mark in [&b"trusted.overlay."[..], b"user.overlay."] {
        assert!(
            !bytes.windows(mark.len()).any(|w| w == mark),
            "{} in the tar",
            String::from_utf8_lossy(mark)
        );
    }
    // Exporting changed nothing: the container shows the same tree again.
    s.ok(&[
        "mount",
        "busybox:latest",
        mp.to_str().unwrap(),
        "--name",
        "web",
    ]);
    assert_eq!(manifest(&mp, &[]), mounted);
    s.ok(&["umount", "web"]);
    // To stdout when it is not a terminal.
    let piped = Command::new(common::bin())
        .env("LAYERFS_ROOT", &s.root)
        .args(["export", "web"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stdout == fs::read(&out).unwrap(),
        "stdout export differs"
    );
}

#[test]
fn docker_import_of_an_export_gives_the_same_tree() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("mnt");
    let _u = mount::Unmount(vec![mp.clone()]);
    s.ok(&[
        "mount",
        "busybox:latest",
        mp.to_str().unwrap(),
        "--name",
        "web",
    ]);
    change_everything(&mp);
    let mounted = manifest(&mp, &[]);
    s.ok(&["umount", "web"]);
    let out = s.dir.path().join("web.tar");
    s.ok(&["export", "web", "-o", out.to_str().unwrap()]);
    let docker = Docker::start();
    docker.ok(&["import", out.to_str().unwrap(), "web-flat:1"]);
    let ran = docker.ok(&[
        "run",
        "--rm",
        "--network=none",
        "web-flat:1",
        "/bin/busybox",
        "cat",
        "/new-file",
        "/renamed-dir/new",
    ]);
    assert!(ran.starts_with("new\n"), "{ran}");
    // The layer Docker stored is the tree we exported.
    let saved = docker.dir().join("flat.tar");
    docker.ok(&["save", "-o", saved.to_str().unwrap(), "web-flat:1"]);
    let unpacked = s.dir.path().join("docker-save");
    fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&saved)
            .arg("-C")
            .arg(&unpacked),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    let layer = unpacked.join(manifest[0]["Layers"][0].as_str().unwrap());
    assert_eq!(extracted_tree(&layer, &s.dir.path().join("z")), mounted);
}

#[test]
fn export_errors_leave_nothing() {
    let s = TestStore::new();
    // A store (an empty directory becomes one; a missing one is "no store at").
    std::fs::create_dir(&s.root).unwrap();
    let dir = s.scratch("o");
    let err = s.fail(&[
        "export",
        "nosuch",
        "-o",
        dir.join("x.tar").to_str().unwrap(),
    ]);
    assert!(err.contains("no such container"), "{err}");
    assert!(names(&dir).is_empty());
    let err = s.fail(&["export", "nosuch", "-o", dir.to_str().unwrap()]);
    assert!(err.contains("is a directory"), "{err}");
    // A full disk: a clear error, nothing half-written, an older file left as it was.
    require_fuse();
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
    let small = s.scratch("small");
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&small),
    );
    let _u = mount::Unmount(vec![small.clone()]);
    fs::write(small.join("web.tar"), b"old").unwrap();
    let out = small.join("web.tar");
    let err = s.fail(&["export", "web", "-o", out.to_str().unwrap()]);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(names(&small), ["web.tar"]);
    assert_eq!(fs::read(&out).unwrap(), b"old");
}

#[test]
fn save_without_a_recorded_layout() {
    require_fuse();
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    // A store from before layouts were recorded: saving says what to do ...
    for l in s.layer_dirs(&id) {
        fs::remove_file(l.parent().unwrap().join("tar-split.zst")).unwrap();
    }
    let out = s.dir.path().join("a.tar");
    let err = s.fail(&["save", &id, "-o", out.to_str().unwrap()]);
    assert!(err.contains("load its image again"), "{err}");
    assert!(!out.exists());
    // ... and loading it again records them (nothing is unpacked again).
    s.load(&bb("latest", Spelling::Oci));
    s.ok(&["save", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(TestStore::new().load(out.to_str().unwrap()), id);

    // A layer whose tar was written the way layerfs writes trees (an export) is
    // written again byte for byte from its files, layout or not.
    let mp = s.scratch("mnt");
    let _u = mount::Unmount(vec![mp.clone()]);
    s.ok(&["mount", &id, mp.to_str().unwrap(), "--name", "c"]);
    change_everything(&mp);
    s.ok(&["umount", "c"]);
    let flat = s.dir.path().join("flat.tar");
    s.ok(&["export", "c", "-o", flat.to_str().unwrap()]);
    let spec_dir = s.scratch("flat-oci");
    let mut spec = ImageSpec::new(Vec::new()).comp(Comp::Plain);
    spec.layers = vec![fs::read(&flat).unwrap()];
    let built = write_oci(&spec_dir, &spec, "flat");
    let flat_id = s.load(&format!("oci:{}:flat", spec_dir.display()));
    assert_eq!(flat_id, built.config_digest);
    for l in s.layer_dirs(&flat_id) {
        fs::remove_file(l.parent().unwrap().join("tar-split.zst")).unwrap();
    }
    let again = s.dir.path().join("flat-again");
    s.ok(&[
        "save",
        &flat_id,
        "--format",
        "oci",
        "-o",
        again.to_str().unwrap(),
    ]);
    let layer = again
        .join("blobs/sha256")
        .join(sha256_hex(&fs::read(&flat).unwrap()));
    assert!(fs::read(layer).unwrap() == fs::read(&flat).unwrap());
}
