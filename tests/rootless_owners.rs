//! Image ownership for a plain user (issue 21): a rootless store keeps the owners the host
//! refuses in `user.containers.override_stat` records, and the mount, diff, commit, save
//! and export all see the image's owners, never the host's. Outside a user namespace the
//! mount shows everything as the user's (so they can write it); in one (`unshare
//! --map-auto --map-root-user`, with the subuid range the tests give nobody) it shows the
//! image exactly as a rootful mount does.
//!
//! Needs root (to act as nobody with setpriv, give it subuids, make /dev/fuse usable),
//! /dev/fuse, fusermount3, newuidmap (package uidmap), getfattr/setfattr (attr) and jq:
//! all installed by `.ci/run`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;

/// A store and scratch directory nobody owns, /dev/fuse usable by users, and the
/// `layerfs` command line nobody runs in scripts (`$L`, `$D` the directory).
struct Rootless {
    s: TestStore,
}

impl Rootless {
    fn new() -> Rootless {
        fuse_for_users();
        subids_for("nobody");
        let s = TestStore::new();
        std::os::unix::fs::chown(s.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        Rootless { s }
    }

    fn dir(&self) -> &Path {
        self.s.dir.path()
    }

    /// `script` as nobody (sh -e), in a user namespace mapping it to root and its
    /// subuids to 1… when `userns`; returns stdout, failing the test on failure.
    fn sh(&self, userns: bool, script: &str) -> String {
        let prelude = format!(
            "set -e; export HOME={d} D={d}; L='{bin} --root {d}/store'; ",
            d = self.dir().display(),
            bin = bin().display()
        );
        let full = format!("{prelude}{script}");
        if userns {
            run_ok(command_as(NOBODY, "unshare").args([
                "--map-auto",
                "--map-root-user",
                "-m",
                "sh",
                "-c",
                &full,
            ]))
        } else {
            sh_ok_as(NOBODY, &full)
        }
    }

    /// `tar tvn` of the top layer of `image` saved as a docker-archive: type, mode,
    /// owner and name columns (times and sizes left out), one line per entry.
    fn top_layer(&self, image: &str, userns: bool) -> Vec<String> {
        let out = self.sh(
            userns,
            &format!("{}; tar tvnf $T", save_top_layer(image, "$D")),
        );
        columns(&out)
    }

    /// The sha256 of the top layer's tar of `image` (what its diff_id says).
    fn top_layer_digest(&self, image: &str) -> String {
        self.sh(
            false,
            &format!("{}; sha256sum < $T", save_top_layer(image, "$D")),
        )
    }
}

/// A script that saves `image` as a docker-archive under `dir` and sets `T` to its top
/// layer's tar.
fn save_top_layer(image: &str, dir: &str) -> String {
    format!(
        "rm -rf {dir}/x; mkdir {dir}/x; $L save {image} -o {dir}/x.tar; tar -C {dir}/x -xf {dir}/x.tar; \
         T={dir}/x/$(jq -r '.[0].Layers[-1]' {dir}/x/manifest.json)"
    )
}

/// `tar tv` lines as "MODE OWNER NAME".
fn columns(tv: &str) -> Vec<String> {
    tv.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[5..].join(" "))
        })
        .collect()
}

/// The rootful reference: the same changes made as root in a store of root's; the top
/// layer's `tar tv` columns and sha256.
fn rootful_top_layer(script: &str) -> (Vec<String>, String) {
    require_fuse();
    let s = TestStore::new();
    let d = s.dir.path();
    let mnt = s.scratch("mnt");
    s.load(&bb("latest", Spelling::Oci));
    s.ok(&[
        "mount",
        "--name",
        "c",
        "busybox:latest",
        mnt.to_str().unwrap(),
    ]);
    sh_in(&mnt, script);
    s.ok(&["umount", "c"]);
    s.ok(&["commit", "c", "ref:1"]);
    let script = format!(
        "L='{} --root {}'; {}",
        bin().display(),
        s.root.display(),
        save_top_layer("ref:1", &d.display().to_string())
    );
    let tv = run_ok(
        std::process::Command::new("sh")
            .arg("-ec")
            .arg(format!("{script}; tar tvnf $T")),
    );
    let sum = run_ok(
        std::process::Command::new("sh")
            .arg("-ec")
            .arg(format!("{script}; sha256sum < $T")),
    );
    (columns(&tv), sum)
}

/// The shared script that lists a tree as the fixtures' expected manifests do.
fn tree_manifest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scripts/lib/tree-manifest.py")
}

/// A manifest without the lines and values a rootless load cannot keep or the reference
/// tool drops: the root's line, the file capability (a plain user's unpack outside a user
/// namespace lacks the privilege: warned), the empty-valued xattr umoci drops (fixtures
/// README).
fn norm(m: &str) -> Vec<String> {
    m.lines()
        .filter(|l| !l.starts_with(".\t"))
        .map(|l| {
            l.replace(
                "security.capability=0100000200200000000000000000000000000000",
                "-",
            )
            .replace("user.layerfs.empty=,", "")
        })
        .collect()
}

/// Every fixture image, loaded by a plain user and mounted in a user namespace, shows
/// what its reference listing says (a rootful mount's view).
#[test]
fn every_fixture_image_shows_its_owners_rootless() {
    let r = Rootless::new();
    for image in [
        "busybox-zstd",
        "busybox-uncompressed",
        "busybox-umoci",
        "busybox-buildah-vfs",
    ] {
        let src = fixture_ref(image, "latest", Spelling::Oci);
        let manifest = r.sh(
            true,
            &format!(
                "$L load -q --tag {image}:x {src} >/dev/null 2>&1; mkdir -p $D/ro; \
                 $L mount --read-only {image}:x $D/ro >/dev/null; python3 {} $D/ro; \
                 $L umount $D/ro",
                tree_manifest().display()
            ),
        );
        let expected =
            std::fs::read_to_string(fixtures().join(format!("expected/{image}.manifest"))).unwrap();
        assert_same_tree(&norm(&manifest), &norm(&expected), image);
    }
}

/// The issue's own reproduction: a plain user appends to a file of uid 1000, commits and
/// saves; the layer must say 1000 (and root for the parents), as a rootful commit does,
/// never the user's own uid. With the times of what changed set alike, the two layers are
/// the same bytes.
#[test]
fn rootless_commit_writes_the_images_owners() {
    let r = Rootless::new();
    let change = "echo x >> home/user/.profile; mkdir -p etc/new; echo n > etc/new/f; \
                  touch -h -d @1700000000 home/user/.profile home/user home etc/new/f etc/new etc .";
    r.sh(
        false,
        &format!(
            "$L load -q {src} >/dev/null 2>&1; mkdir $D/mnt; \
             $L mount --name u1 busybox:latest $D/mnt >/dev/null; \
             cd $D/mnt; {change}; cd /; $L umount u1; $L commit u1 rootless:v1 >/dev/null",
            src = bb("latest", Spelling::Oci)
        ),
    );
    let got = r.top_layer("rootless:v1", false);
    assert!(
        got.iter()
            .any(|l| l.starts_with("-rw-r--r-- 1000/1000 home/user/.profile")),
        "{got:#?}"
    );
    let (want, want_sum) = rootful_top_layer(change);
    assert_eq!(got, want);
    assert_eq!(
        r.top_layer_digest("rootless:v1"),
        want_sum,
        "a rootless commit writes other bytes than a rootful one"
    );
}

/// Outside a user namespace the mount is the user's: every file shows as theirs and they
/// may write what the image's modes let an owner write, while the records stay hidden.
#[test]
fn outside_a_user_namespace_the_mount_is_the_users() {
    let r = Rootless::new();
    let out = r.sh(
        false,
        &format!(
            "$L load -q {src} >/dev/null 2>&1; mkdir $D/mnt; \
             $L mount --name u1 busybox:latest $D/mnt >/dev/null; \
             stat -c '%u:%g %a %n' $D/mnt/etc $D/mnt/home/user $D/mnt/data/uid-100000; \
             echo ok > $D/mnt/etc/new; echo more >> $D/mnt/data/uid-100000; \
             getfattr -d -m - --absolute-names $D/mnt/home/user; \
             $L diff u1; $L umount u1",
            src = bb("latest", Spelling::Oci)
        ),
    );
    for want in [
        "65534:65534 755 ",
        "65534:65534 750 ",
        "65534:65534 644 ",
        "A /etc/new",
        "C /data/uid-100000",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert!(!out.contains("override_stat"), "record listed:\n{out}");
}

/// In a user namespace with a full subuid map the mount shows the image exactly as the
/// fixture's reference listing says (a rootful mount's view), and what is changed inside
/// it (chown to an image id, chmod, new files of another owner) reaches commit and save
/// run outside the namespace with the ids the container saw.
#[test]
fn in_a_user_namespace_the_mount_shows_the_image() {
    let r = Rootless::new();
    r.sh(
        false,
        &format!("$L load -q {} >/dev/null 2>&1", bb("latest", Spelling::Oci)),
    );
    let manifest = r.sh(
        true,
        &format!(
            "mkdir -p $D/ro; $L mount --read-only busybox:latest $D/ro >/dev/null; \
             python3 {} $D/ro; $L umount $D/ro",
            tree_manifest().display()
        ),
    );
    let expected = std::fs::read_to_string(fixtures().join("expected/busybox.manifest")).unwrap();
    assert_same_tree(
        &norm(&manifest),
        &norm(&expected),
        "rootless mount in a user namespace",
    );
    let out = r.sh(
        true,
        "mkdir -p $D/mnt; $L mount --allow-other --name c busybox:latest $D/mnt >/dev/null; cd $D/mnt; \
         chown 1000:1000 etc/motd; chmod 4711 etc/hostname; mkdir -m 2770 srv; \
         chown 100000:1000 srv; setpriv --reuid=1000 --regid=1000 --clear-groups touch tmp/by-1000; \
         setfattr -n user.mine -v yes etc/passwd; \
         if setfattr -n user.containers.override_stat -v 0:0:0777 etc/passwd 2>/dev/null; \
         then echo FORGED; fi; \
         getfattr -d -m - --absolute-names etc/passwd; stat -c '%u:%g %a %n' etc/motd srv tmp/by-1000; \
         cd /; $L umount c",
    );
    assert!(!out.contains("FORGED"), "{out}");
    assert!(
        out.contains("user.mine=\"yes\"") && !out.contains("override_stat"),
        "{out}"
    );
    for want in [
        "1000:1000 600 etc/motd",
        "100000:1000 2770 srv",
        "1000:1000 644 tmp/by-1000",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    // Commit and save outside the namespace: the ids the container saw.
    r.sh(false, "$L commit c changed:1 >/dev/null");
    let got = r.top_layer("changed:1", false);
    for want in [
        "-rw------- 1000/1000 etc/motd",
        "-rws--x--x 0/0 etc/hostname",
        "drwxrws--- 100000/1000 srv/",
        "-rw-r--r-- 1000/1000 tmp/by-1000",
    ] {
        assert!(got.iter().any(|l| l == want), "{want:?} not in {got:#?}");
    }
}

/// A layer cannot forge a rootless store's records: an image whose tar carries its own
/// `user.containers.override_stat` (claiming root and setuid for a file of uid 1000) is
/// loaded with the record the tar's header gives, and the mount shows that.
#[test]
fn a_layer_cannot_forge_the_records() {
    let r = Rootless::new();
    let oci = r.dir().join("forged");
    let spec = ImageSpec::new(vec![vec![
        dir("home").mode(0o755),
        file("home/x", b"x")
            .mode(0o644)
            .owner(1000, 1000)
            .xattr("user.containers.override_stat", b"0:0:04755"),
    ]]);
    write_oci(&oci, &spec, "1");
    std::os::unix::fs::chown(&oci, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = r.sh(
        true,
        &format!(
            "$L load -q oci:{}:1 >/dev/null 2>$D/warn; mkdir $D/m; \
             $L mount --read-only oci:{}:1 $D/m >/dev/null; stat -c '%u:%g %a' $D/m/home/x; \
             $L umount $D/m; cat $D/warn",
            oci.display(),
            oci.display()
        ),
    );
    assert!(out.starts_with("1000:1000 644\n"), "{out}");
    assert!(
        out.contains("dropping xattr user.containers.override_stat"),
        "{out}"
    );
}

/// A store on a filesystem without user xattrs cannot keep a plain user's owners: load
/// says so and what to do, and leaves nothing behind.
#[test]
fn a_store_without_user_xattrs_is_refused_clearly() {
    let r = Rootless::new();
    let fs = r.dir().join("ramfs");
    std::fs::create_dir(&fs).unwrap();
    run_ok(
        std::process::Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(&fs),
    );
    let _umount = common::mount::Unmount(vec![fs.clone()]);
    std::os::unix::fs::chown(&fs, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = command_as(NOBODY, bin())
        .arg("--root")
        .arg(fs.join("store"))
        .args(["load", "-q", &bb("latest", Spelling::Oci)])
        .env("HOME", r.dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("keeps no user extended attributes") && err.contains("--root DIR"),
        "{err}"
    );
    for d in ["layers", "tmp"] {
        assert!(names(&fs.join("store").join(d)).is_empty(), "{d} not empty");
    }
}

/// Device nodes, which a plain user may not make: kept as empty files whose records name
/// the device (as containers-storage keeps them), shown through the mount as the devices
/// (type, numbers, mode, owner) and written back as devices by export.
#[test]
fn rootless_device_nodes_are_kept_in_records() {
    let r = Rootless::new();
    let oci = r.dir().join("devs");
    let spec = ImageSpec::new(vec![vec![
        dir("dev").mode(0o755),
        chardev("dev/null", 1, 3).mode(0o666),
        blockdev("dev/sda", 8, 0).mode(0o660).owner(0, 6),
    ]]);
    write_oci(&oci, &spec, "1");
    run_ok(
        std::process::Command::new("chown")
            .args(["-R", "nobody"])
            .arg(&oci),
    );
    let out = r.sh(
        true,
        &format!(
            "$L load -q oci:{oci}:1 >/dev/null; mkdir $D/m; \
             $L mount --name c oci:{oci}:1 $D/m >/dev/null; \
             stat -c '%F %t:%T %a %u:%g %n' $D/m/dev/null $D/m/dev/sda; $L umount c; \
             $L export c -o $D/c.tar; tar tvnf $D/c.tar dev/null dev/sda",
            oci = oci.display()
        ),
    );
    assert!(
        out.contains("character special file 1:3 666 0:0 ")
            && out.contains("block special file 8:0 660 0:6 "),
        "{out}"
    );
    assert!(
        out.contains("crw-rw-rw- 0/0") && out.contains("1,3") && out.contains("brw-rw---- 0/6"),
        "{out}"
    );
}

/// A rootless store's layers stay readable by fuse-overlayfs (1.10, which fails a
/// listing of a lower root that carries a record with ENODATA: the layer root keeps none
/// when it is root's).
#[test]
fn fuse_overlayfs_reads_a_rootless_stores_layers() {
    let r = Rootless::new();
    let lowers = r.sh(
        false,
        &format!(
            "$L load -q {} >/dev/null 2>&1; $L inspect busybox:latest | \
             jq -r '.[0].layers | reverse | map(.path) | join(\":\")'",
            bb("latest", Spelling::Oci)
        ),
    );
    let mnt = r.dir().join("fo");
    std::fs::create_dir(&mnt).unwrap();
    run_ok(
        std::process::Command::new("fuse-overlayfs")
            .arg("-o")
            .arg(format!("lowerdir={}", lowers.trim()))
            .arg(&mnt),
    );
    let _umount = common::mount::Unmount(vec![mnt.clone()]);
    let listed = names(&mnt);
    assert!(
        listed.contains(&"bin".to_string()) && listed.contains(&"home".to_string()),
        "{listed:?}"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/layer3-marker"))
            .unwrap()
            .len(),
        8
    );
}
