//! `layerfs commit`: a container changed through its mount (writes, appends, deletes, an
//! opaque directory re-created, a renamed lower directory, hard links, chmod/chown, xattrs,
//! a metadata-only copy-up) becomes an image whose mount shows exactly the same tree; the
//! base image stays as it was; the same changes give the same diff_id; a mounted container
//! is committed as one consistent snapshot; every failure leaves the store unchanged.
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::lab::*;
use common::*;
use serde_json::Value;

/// Every kind of change a container makes.
const CHANGES: &str = "
echo new > data/added.txt
echo more >> data/modify-me
rm data/original.txt
rm -rf opaque-dir; mkdir opaque-dir; echo x > opaque-dir/fresh
mv usr/local usr/moved-local
ln data/new-file data/new-link
echo through-a-link >> data/hardlink-to-lower
ln data/cap-file data/cap-link
chmod 600 data/random-1MiB+1
chmod 4711 data/empty
chown 1:2 data/sticky-dir data/fifo
chown 3000000:3000001 data/uid-100000
touch -h -d @-86400 data/rel-symlink
setfattr -n user.added -v hello data/xattr-file
setfattr -x user.layerfs.test data/xattr-file
mkdir -p newdir/sub; echo y > newdir/sub/f; ln -s ../sub newdir/sub/link
mknod newdir/null c 1 3
mkfifo newdir/fifo
rm -rf readd-dir; echo now-a-file > readd-dir
rm readd-file; mkdir readd-file; echo inside > readd-file/inside
mv data data2
mkdir data; echo again > data/again
";

fn image_id(out: &str) -> String {
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    id
}

fn top_diff_id(s: &TestStore, image: &str) -> String {
    let v = s.inspect(image);
    v["layers"].as_array().unwrap().last().unwrap()["diff_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_new_image_shows_what_the_container_showed() {
    let lab = Lab::new();
    let s = &lab.s;
    let base = s.load(&bb("latest", Spelling::Path));
    let base_layers = s.inspect(&base)["layers"].clone();
    let before = manifest(&lab.mount(&["busybox", "--read-only"], "base0"), &[]);

    let m = lab.mount(&["busybox", "--name", "web"], "m");
    sh_in(&m, CHANGES);
    let shown = manifest(&m, &[]);
    assert_ne!(shown, before);

    // Committed while mounted.
    let out = s.ok(&[
        "commit",
        "web",
        "myapp:v2",
        "-m",
        "add app",
        "--author",
        "A <a@b>",
        "--change",
        r#"CMD ["/app"]"#,
        "--change",
        "ENV K=V",
        "--change",
        "EXPOSE 8080",
        "--change",
        "WORKDIR /srv",
        "--change",
        "LABEL team=core",
        "--change",
        "USER 1000",
        "--change",
        "VOLUME /cache",
    ]);
    let id = image_id(&out);
    assert!(is_mounted(&m));
    // The container goes on as before.
    fs::write(m.join("after-commit"), "x").unwrap();

    let n = lab.mount(&["myapp:v2", "--name", "copy"], "n");
    assert_same_tree(&shown, &manifest(&n, &[]), "container vs committed image");
    assert_eq!(s.ok(&["diff", "copy"]), "");

    // The base image is as it was.
    assert_eq!(s.inspect(&base)["layers"], base_layers);
    let b = lab.mount(&["busybox", "--read-only"], "base1");
    assert_same_tree(&before, &manifest(&b, &[]), "base image after the commit");

    let v = s.inspect("myapp:v2");
    assert_eq!(v["id"], id.as_str());
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers.as_array().unwrap().len() + 1);
    assert_eq!(
        layers.last().unwrap()["media_type"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let cfg = &v["config"];
    assert_eq!(cfg["Cmd"], serde_json::json!(["/app"]));
    assert!(cfg["Env"].as_array().unwrap().contains(&"K=V".into()));
    assert_eq!(cfg["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(cfg["Labels"]["team"], "core");
    assert_eq!(cfg["User"], "1000");
    assert_eq!(cfg["Volumes"], serde_json::json!({"/cache": {}}));
    assert_eq!(v["author"], "A <a@b>");
    let h = v["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(h["comment"], "add app");
    assert_eq!(h["author"], "A <a@b>");
    assert_eq!(h["created_by"], "layerfs commit");
    assert_eq!(h["created"], v["created"]);
    // The store keeps no blob, but the layer's tar can be written again, byte for byte.
    let store = layerfs::store::Store::open(&s.root).unwrap();
    let rec = store.resolve_image("myapp:v2").unwrap();
    let top = rec.layers.len() - 1;
    let (bytes, digest, size) = layerfs::commit::layer_tar(&store, &rec, top, Vec::new()).unwrap();
    assert_eq!(digest, rec.layers[top].diff_id);
    assert_eq!(Some(size), rec.layers[top].size);
    assert_eq!(bytes.len() as u64, size);
    let hist = s.ok(&["history", "myapp:v2"]);
    assert!(hist.lines().nth(1).unwrap().contains("add app"), "{hist}");
    // Docker's config survives (the base's rootfs, plus one).
    let cfg: Value = serde_json::from_slice(
        &fs::read(s.root.join("images").join(&id[7..]).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
        layers.len()
    );
    assert!(names(&s.root.join("tmp")).is_empty());
}

/// Regression: a hard-linked file inside a renamed directory, whose other name outside
/// it the container never touched, stays one inode in the committed image (the layer
/// used to write the renamed copy as a file of its own). Also when the layer's tar is
/// written again from the store (as `save` does without a recorded layout).
#[test]
fn a_hard_link_out_of_a_renamed_directory_stays_one_inode() {
    use std::os::unix::fs::MetadataExt;
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    // An image whose layer has the two names: keep/f and moveme/g.
    let m = lab.mount(&["busybox", "--name", "one"], "m");
    sh_in(
        &m,
        "mkdir keep moveme; echo linked > keep/f; ln keep/f moveme/g; echo alone > moveme/h",
    );
    s.ok(&["commit", "one", "linked:1"]);
    // A container of it renames the directory holding one of the names.
    let n = lab.mount(&["linked:1", "--name", "two"], "n");
    sh_in(&n, "mv moveme moved");
    let ino = |dir: &Path, p: &str| fs::metadata(dir.join(p)).unwrap().ino();
    assert_eq!(ino(&n, "moved/g"), ino(&n, "keep/f"));
    let shown = manifest(&n, &[]);
    s.ok(&["commit", "two", "linked:2"]);
    let diff = s.ok(&["diff", "two"]);
    assert!(!diff.contains("/keep"), "an untouched name listed:\n{diff}");

    let o = lab.mount(&["linked:2", "--read-only"], "o");
    assert_same_tree(&shown, &manifest(&o, &[]), "container vs committed image");
    assert_eq!(ino(&o, "moved/g"), ino(&o, "keep/f"));
    assert_eq!(fs::metadata(o.join("keep/f")).unwrap().nlink(), 2);
    assert_eq!(fs::read(o.join("moved/g")).unwrap(), b"linked\n");

    let store = layerfs::store::Store::open(&s.root).unwrap();
    let rec = store.resolve_image("linked:2").unwrap();
    let top = rec.layers.len() - 1;
    let (_, digest, _) = layerfs::commit::layer_tar(&store, &rec, top, Vec::new()).unwrap();
    assert_eq!(digest, rec.layers[top].diff_id);
}

#[test]
fn the_same_changes_give_the_same_layer() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c1"], "m1");
    sh_in(&m, CHANGES);
    let a = image_id(&s.ok(&["commit", "c1"]));
    let b = image_id(&s.ok(&["commit", "c1"]));
    // Committing again: the same layer (not unpacked again), a new image (a new time).
    assert_eq!(top_diff_id(s, &a), top_diff_id(s, &b));
    let layers = s.layer_names().len();
    assert_eq!(layers, 4);
    lab.umount(&m);
    let c = image_id(&s.ok(&["commit", "c1"]));
    assert_eq!(top_diff_id(s, &a), top_diff_id(s, &c));

    // Another container making the same changes later: the same diff_id once mtimes are
    // clamped (SOURCE_DATE_EPOCH), and then the same image id too.
    std::thread::sleep(Duration::from_millis(1100));
    let m2 = lab.mount(&["busybox", "--name", "c2"], "m2");
    sh_in(&m2, CHANGES);
    let epoch = |c: &str| {
        let out = s
            .cmd()
            .env("SOURCE_DATE_EPOCH", "1000000000")
            .args(["commit", c])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        image_id(&String::from_utf8_lossy(&out.stdout))
    };
    let (x, y) = (epoch("c1"), epoch("c2"));
    assert_eq!(top_diff_id(s, &x), top_diff_id(s, &y));
    assert_eq!(x, y);
    assert_eq!(s.inspect(&x)["created"], "2001-09-09T01:46:40Z");
}

#[test]
fn a_container_mounted_read_only_is_committed_too() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    sh_in(&m, "echo hi > hello");
    lab.umount(&m);
    let r = lab.mount(&["busybox", "--read-only", "--name", "c"], "r");
    let shown = manifest(&r, &[]);
    s.ok(&["commit", "c", "ro:1"]);
    let n = lab.mount(&["ro:1", "--read-only"], "n");
    assert_same_tree(&shown, &manifest(&n, &[]), "read-only container");
}

#[test]
fn an_unchanged_container_commits_its_root_only() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    let shown = manifest(&m, &[]);
    let id = image_id(&s.ok(&["commit", "c", "same:1"]));
    let v = s.inspect(&id);
    assert_eq!(
        v["layers"].as_array().unwrap().last().unwrap()["unpacked_size"],
        0
    );
    let n = lab.mount(&["same:1", "--name", "d"], "n");
    assert_same_tree(&shown, &manifest(&n, &[]), "unchanged");
}

/// A writer overwrites `a` then `b` with the same counter, again and again, while the
/// container is committed: in the snapshot `b` is `a` or one behind, never ahead — which
/// a copy made while writes go on shows, as `a` is read long before `b`.
#[test]
fn a_mounted_container_is_committed_as_one_snapshot() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "busy"], "m");
    // Between `a` and `b` in the layer: reading it takes a while.
    sh_in(
        &m,
        "mkdir am; i=0; while [ $i -lt 3000 ]; do echo $i > am/$i; i=$((i+1)); done",
    );
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("i=0; while :; do printf '%08d' $i 1<>a; printf '%08d' $i 1<>b; i=$((i+1)); done")
        .current_dir(&m)
        .spawn()
        .unwrap();
    let value = |dir: &Path, f: &str| -> u64 {
        fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .parse()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&m, "b") < 200 {
        assert!(Instant::now() < deadline, "the writer does not write");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Several commits at once (each closes the write gate; the gate opens when the last
    // one is done), then one alone.
    let commits: Vec<_> = (0..3)
        .map(|i| {
            s.cmd()
                .args(["commit", "busy", &format!("snap:{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in commits {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.ok(&["commit", "busy", "snap:3"]);
    // Writes go on after the commits.
    let v = value(&m, "b");
    std::thread::sleep(Duration::from_millis(300));
    assert!(value(&m, "b") > v, "writes stay held");
    writer.kill().unwrap();
    writer.wait().unwrap();
    for i in 0..4 {
        let n = lab.mount(&[&format!("snap:{i}"), "--read-only"], &format!("snap{i}"));
        let (a, b) = (value(&n, "a"), value(&n, "b"));
        assert!(b == a || b + 1 == a, "not one snapshot: a is {a}, b is {b}");
    }
}

#[test]
fn failed_commits_leave_the_store_unchanged() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    s.ok(&["tag", "busybox", "taken:1"]);
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    sh_in(&m, "echo x > new");
    lab.umount(&m);
    let before = s.listing();

    let err = s.fail(&["commit", "nosuch", "x:1"]);
    assert!(err.contains("no such container"), "{err}");
    let err = s.fail(&["commit", "web", "taken:1"]);
    assert!(err.contains("taken:1") && err.contains("taken by"), "{err}");
    for bad in ["RUN make", "EXPOSE 70000", "ENV"] {
        let err = s.fail(&["commit", "web", "--change", bad]);
        assert!(err.contains("--change"), "{err}");
    }
    let err = s.fail(&["commit", "web", "Bad:Name:1"]);
    assert!(err.contains("Bad:Name:1"), "{err}");
    assert_eq!(s.listing(), before, "a refused commit changed the store");

    // The container's image is gone from the store (removed behind its back).
    let id = s.inspect("busybox")["id"].as_str().unwrap()[7..].to_string();
    let img = s.root.join("images").join(&id);
    let aside = s.dir.path().join("image-aside");
    fs::rename(&img, &aside).unwrap();
    let err = s.fail(&["commit", "web"]);
    assert!(err.contains("no longer in the store"), "{err}");
    fs::rename(&aside, &img).unwrap();
    assert_eq!(s.listing(), before);
}

#[test]
fn a_full_disk_fails_cleanly() {
    let lab = Lab::new();
    let small = lab.dir("small");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=7m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _u = Unmount(small.clone());
    let root = small.join("store");
    let run = |args: &[&str]| {
        Command::new(bin())
            .env("LAYERFS_ROOT", &root)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        run(&["load", "-q", &bb("latest", Spelling::Path)])
            .status
            .success()
    );
    let m = lab.dir("m");
    let out = run(&["mount", "busybox", m.to_str().unwrap(), "--name", "big"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Fills most of what is left: the layer cannot be written (or unpacked) beside it.
    let wrote = fs::write(m.join("big"), vec![1u8; 2_500_000]);
    let _ = Command::new("umount").arg(&m).status();
    std::thread::sleep(Duration::from_millis(200));
    wrote.unwrap();
    let before = listing(&root);
    let out = run(&["commit", "big", "full:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(listing(&root), before, "a failed commit changed the store");
    assert!(names(&root.join("tmp")).is_empty());
}

/// Waits for `child` at most `limit` — a guard against a hang, not a timing check: past
/// it, the child is killed and the test fails.
fn wait_guarded(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hangs (killed after {} s): {}",
                limit.as_secs(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn spawn_commit(s: &TestStore, args: &[&str]) -> std::process::Child {
    s.cmd()
        .arg("commit")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1000000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Issue 19, defect 3: while a commit reads a container, the container is unmounted
/// (`layerfs umount`, or the kernel's `umount DIR`), mounted again as soon as that
/// succeeds, and written. The image must be the container as the commit found it, or
/// the commit fails: never files from after the unmount. A third kind of round commits
/// the container unmounted, and mounts it meanwhile. The layer starts with a big sparse
/// file (the walk is sorted: it is read first), so the mount and the writes come while
/// the commit still reads.
#[test]
fn a_commit_is_a_snapshot_across_umount_and_a_new_mount() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.dir("m");
    let tmp = s.root.join("tmp");
    for round in 0..12 {
        let (by_layerfs, by_kernel) = (round % 3 == 0, round % 3 == 1);
        let name = format!("c{round}");
        lab.mount(&["busybox", "--name", &name], "m");
        lab.umount(&m);
        let upper = s.root.join("containers").join(&name).join("upper");
        fs::File::create(upper.join("0big"))
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        fs::create_dir(upper.join("z")).unwrap();
        for i in 0..200 {
            fs::write(upper.join(format!("z/{i:03}")), "old").unwrap();
        }
        if by_layerfs || by_kernel {
            lab.mount(&[&name], "m");
        }
        let snap = format!("snap:{round}");
        let commit = spawn_commit(s, &[&name, &snap]);
        // Its tar in tmp/: the commit holds the container and reads it.
        let end = Instant::now() + Duration::from_secs(60);
        while !names(&tmp)
            .iter()
            .any(|d| tmp.join(d).join("layer.tar").exists())
        {
            assert!(
                Instant::now() < end,
                "round {round}: the commit never began"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if by_layerfs {
            // Waits for the commit (or refuses: busy).
            let out = s.run(&["umount", &name]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("busy"),
                "round {round}: {err}"
            );
        } else if by_kernel {
            let st = Command::new("umount").arg(&m).status().unwrap();
            assert!(st.success(), "round {round}: umount {}", m.display());
        }
        // Mounted again as soon as it may be (a hang guard bounds the tries).
        let end = Instant::now() + Duration::from_secs(300);
        while !s
            .run(&["mount", &name, m.to_str().unwrap()])
            .status
            .success()
        {
            assert!(Instant::now() < end, "round {round}: never mounted again");
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..200 {
            fs::write(m.join(format!("z/{i:03}")), "new").unwrap();
        }
        let out = wait_guarded(commit, Duration::from_secs(300), "commit");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            let n = lab.mount(&[&snap, "--read-only"], "n");
            for i in 0..200 {
                let got = fs::read_to_string(n.join(format!("z/{i:03}"))).unwrap();
                assert_eq!(
                    got, "old",
                    "round {round}: the image has z/{i:03} as written after the container \
                     was mounted again during the commit"
                );
            }
            assert_eq!(fs::metadata(n.join("0big")).unwrap().len(), 512 << 20);
            lab.umount(&n);
        } else {
            assert_eq!(out.status.code(), Some(1), "round {round}: {err}");
            assert!(!err.contains("panicked"), "round {round}: {err}");
        }
        s.ok(&["rm", "--force", &name]);
    }
}

/// Issue 19, defect 7: a control client that connects and says nothing blocks no commit
/// (clients are served at once), and the daemon sends it away after a few seconds.
#[test]
fn a_silent_control_client_blocks_no_commit() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    fs::write(m.join("hello"), "hi").unwrap();
    let sock = s.root.join("containers/c/control.sock");
    let mut silent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let out = wait_guarded(
        spawn_commit(s, &["c", "after:1"]),
        Duration::from_secs(60),
        "commit with a silent control client connected",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = lab.mount(&["after:1", "--read-only"], "n");
    assert_eq!(fs::read_to_string(n.join("hello")).unwrap(), "hi");
    // Sent away: its connection ends (a guard, not a timing check).
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut silent, &mut said).unwrap();
    assert!(said.starts_with("error: nothing asked"), "{said:?}");
    // Writes were let go.
    fs::write(m.join("later"), "x").unwrap();
}

/// Issue 19, defect 7: while one client holds a container's writes, a commit waits for it
/// (saying so), then gets them: the daemon serves both at once, one freeze at a time.
#[test]
fn a_commit_waits_for_the_freeze_another_client_holds() {
    use std::io::{BufRead, BufReader, Write};
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    fs::write(m.join("hello"), "hi").unwrap();
    let sock = s.root.join("containers/c/control.sock");
    let mut holder = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    holder.write_all(b"freeze\n").unwrap();
    holder
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut lines = BufReader::new(holder.try_clone().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "frozen");
    let mut commit = spawn_commit(s, &["c", "after:1"]);
    // The commit says it waits (a hang guard on our read: it must say so, not hang).
    let stderr = commit.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let _ = tx.send(l.unwrap());
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the commit neither says it waits nor finishes");
    assert!(
        first.contains("waiting for another commit of container c"),
        "{first}"
    );
    holder.write_all(b"thaw\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "thawed");
    let out = wait_guarded(commit, Duration::from_secs(60), "commit");
    assert!(
        out.status.success(),
        "{:?}",
        rx.try_iter().collect::<Vec<_>>()
    );
    let n = lab.mount(&["after:1", "--read-only"], "n");
    assert_eq!(fs::read_to_string(n.join("hello")).unwrap(), "hi");
}

/// Issue 19, defect 7: only the store's owner (and root) may hold a mount's writes. With
/// the socket and its directories opened up to everyone, another user is still refused
/// (the daemon checks the peer's credentials).
#[test]
fn another_user_may_not_freeze_a_mount() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    let sock = s.root.join("containers/c/control.sock");
    let mut d = sock.parent().unwrap().to_path_buf();
    while d != *s.dir.path().parent().unwrap() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o711)).unwrap();
        d = d.parent().unwrap().to_path_buf();
    }
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.settimeout(60)\n\
        try: s.sendall(b'freeze\\n')\n\
        except OSError: pass\n\
        print(s.makefile().readline().strip())\n";
    let answer = python_as(NOBODY, script, &[&sock]);
    assert!(
        answer.starts_with("error:") && answer.contains(&format!("uid {NOBODY}")),
        "another user got {answer:?}"
    );
    // Writes flow, and the owner still commits.
    fs::write(m.join("x"), "x").unwrap();
    s.ok(&["commit", "c"]);
}
