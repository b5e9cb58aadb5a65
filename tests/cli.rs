//! The command line as a new user meets it: it never touches what is not its own, fails
//! with messages that say what to do, and behaves the way Docker habits expect.
//!
//! `umount` refuses other mounts; `mount` refuses a mount point unless `--overmount`; a
//! mount that fails (no usable /dev/fuse) leaves no container behind and names the fix;
//! a container whose daemon was killed shows as stale and `umount` cleans it up;
//! compressed archives load; `--root` never turns a file or a foreign directory into a
//! store; `images -q`, `ps -a`, `history -H`, `--format`, Docker's history sizes; help
//! with examples, completions, man pages, the install step and `mount -t fuse.layerfs`;
//! `export | head` and `diff | head` end quietly; a truncated archive says truncated.
//! Needs root, /dev/fuse, unshare (util-linux), gzip, zstd and Docker Engine (`.ci/run`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::tools::Docker;
use common::*;

/// Unmounts what a test mounted, also when it fails half-way.
struct Unmount(Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            while mount::is_mounted(p) {
                let _ = Command::new("umount").arg("-l").arg(p).status();
            }
        }
    }
}

/// Runs `sh -c SCRIPT` in a private mount namespace (what it mounts there stays there).
fn in_namespace(script: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("unshare (util-linux)")
}

/// The pid of the daemon serving container `name` of store `root`.
fn daemon_pid(root: &Path, name: &str) -> i32 {
    let root = root.display().to_string();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let has = |s: &str| args.iter().any(|a| a == s);
        if has(&root) && has("--foreground") && has(name) {
            return pid;
        }
    }
    panic!("no daemon for container {name}");
}

#[test]
fn umount_touches_only_layerfs_mounts_and_mount_does_not_stack() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let t = s.scratch("tmpfs");
    run_ok(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&t));
    let _u = Unmount(vec![t.clone()]);
    let err = s.fail(&["umount", t.to_str().unwrap()]);
    assert!(
        err.contains("not a layerfs mount") && err.contains("tmpfs"),
        "{err}"
    );
    assert!(mount::is_mounted(&t), "the tmpfs was unmounted");
    let err = s.fail(&["umount", s.dir.path().to_str().unwrap()]);
    assert!(err.contains("not a mount point"), "{err}");

    // Not over another mount, unless asked.
    let err = s.fail(&["mount", "busybox", t.to_str().unwrap(), "--name", "x"]);
    assert!(
        err.contains("already a mount point") && err.contains("--overmount"),
        "{err}"
    );
    assert!(names(&s.root.join("containers")).is_empty());
    s.ok(&[
        "mount",
        "busybox",
        t.to_str().unwrap(),
        "--name",
        "x",
        "--overmount",
    ]);
    assert!(t.join("bin/busybox").exists());
    // umount DIR takes the layerfs mount off, and only it.
    s.ok(&["umount", t.to_str().unwrap()]);
    assert!(mount::is_mounted(&t), "the tmpfs below went too");
    assert!(!t.join("bin").exists());
}

#[test]
fn a_mount_that_fails_leaves_no_container_and_names_the_fix() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("m");
    let bin = common::bin();
    let cmd = |setup: &str, name: &str| {
        format!(
            "{setup} && LAYERFS_ROOT={} {} mount busybox {} --name {name}",
            s.root.display(),
            bin.display(),
            mp.display()
        )
    };
    // No /dev/fuse at all.
    let out = in_namespace(&cmd("mount -t tmpfs none /dev", "a"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/dev/fuse") && err.contains("modprobe fuse"),
        "{err}"
    );
    // A /dev/fuse that is not the FUSE device: the mount itself fails.
    let out = in_namespace(&cmd("mount --bind /dev/null /dev/fuse", "b"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/fuse"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        names(&s.root.join("containers")).is_empty(),
        "a record was left"
    );
    assert!(!mount::is_mounted(&mp));
}

#[test]
fn a_container_whose_daemon_died_is_stale_until_umount() {
    require_fuse();
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let mp = s.scratch("m");
    let _u = Unmount(vec![mp.clone()]);
    s.ok(&["mount", "busybox", mp.to_str().unwrap(), "--name", "web"]);
    fs::write(mp.join("kept"), b"written before the kill").unwrap();
    let pid = daemon_pid(&s.root, "web");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = fs::metadata(&mp).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    let ps = s.ok(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web ") && l.contains("stale")),
        "{ps}"
    );
    let states = s.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(states.trim(), "web stale");
    // Mounting there again is refused with the way out.
    let err = s.fail(&["mount", "busybox", mp.to_str().unwrap(), "--name", "w2"]);
    assert!(err.contains("layerfs umount"), "{err}");
    let out = s.run(&["umount", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mount::is_mounted(&mp));
    let states = s.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(states.trim(), "web unmounted");
    assert!(s.ok(&["ps", "-q"]).trim().is_empty());
    // The container mounts again with what it held.
    s.ok(&["mount", "busybox", mp.to_str().unwrap(), "--name", "web"]);
    assert_eq!(
        fs::read(mp.join("kept")).unwrap(),
        b"written before the kill"
    );
    // The same by mount point.
    let pid = daemon_pid(&s.root, "web");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::metadata(&mp).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    s.ok(&["umount", mp.to_str().unwrap()]);
    assert!(!mount::is_mounted(&mp));
    assert_eq!(s.ok(&["ps", "-aq"]).trim(), "web");
}

#[test]
fn load_reads_gzip_and_zstd_archives() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let dir = s.scratch("z");
    let f = fixtures().join("busybox");
    let gz = dir.join("bb.tar.gz");
    let zst = dir.join("bb.oci.tar.zst");
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {} && zstd -q -c {} > {}",
        f.join("busybox.docker.tar").display(),
        gz.display(),
        f.join("busybox.oci.tar").display(),
        zst.display()
    )));
    let other = TestStore::new();
    let out = other.ok(&["load", gz.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: layerfs/busybox:latest") && out.contains(&id),
        "{out}"
    );
    assert_eq!(other.load(zst.to_str().unwrap()), id);
    assert_eq!(
        other.load(&format!(
            "docker-archive:{}:layerfs/busybox:latest",
            gz.display()
        )),
        id
    );
    // Named after the archive without its suffixes; nothing left in tmp/.
    assert!(
        other.ok(&["images"]).contains("bb "),
        "{}",
        other.ok(&["images"])
    );
    assert!(names(&other.root.join("tmp")).is_empty());
    // A truncated one is a clear error.
    let bytes = fs::read(&gz).unwrap();
    fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let err = other.fail(&["load", gz.to_str().unwrap()]);
    assert!(err.contains("bb.tar.gz"), "{err}");
}

#[test]
fn root_must_be_a_store_or_new() {
    let s = TestStore::new();
    let file = s.scratch("x").join("file");
    fs::write(&file, b"data").unwrap();
    let run = |root: &Path| {
        Command::new(common::bin())
            .args(["--root", root.to_str().unwrap(), "images"])
            .output()
            .unwrap()
    };
    let out = run(&file);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a layerfs store"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"data");
    let foreign = s.scratch("home");
    fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    let out = run(&foreign);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a layerfs store"));
    assert_eq!(names(&foreign), ["notes.txt"], "the directory was touched");
    // An empty directory becomes a store; a store opens again. A new path is no store
    // to read (only the commands that load or mount make one).
    let root = s.scratch("empty");
    assert!(run(&root).status.success());
    assert!(run(&root).status.success());
    assert!(root.join("VERSION").is_file());
    let new = s.dir.path().join("new/store");
    let out = run(&new);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));
    assert!(!new.exists() && !new.parent().unwrap().exists());
}

/// Regression: processes that create one new store at the same moment all succeed (one
/// of them used to see the other's staged VERSION file and call the directory foreign).
#[test]
fn concurrent_first_use_of_a_new_store() {
    let s = TestStore::new();
    for round in 0..20 {
        let root = s.dir.path().join(format!("fresh-{round}"));
        // (an empty directory: `images` makes no store at a new path)
        fs::create_dir(&root).unwrap();
        let children: Vec<_> = (0..8)
            .map(|_| {
                Command::new(common::bin())
                    .args(["--root", root.to_str().unwrap(), "images", "-q"])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(root.join("VERSION").is_file());
    }
}

#[test]
fn docker_habits() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    s.ok(&[
        "load",
        "-q",
        "--tag",
        "other:1",
        &bb("latest", Spelling::Oci),
    ]);
    let q = s.ok(&["images", "-q"]);
    assert_eq!(q.lines().collect::<Vec<_>>(), [&id[7..19], &id[7..19]]);
    let full = s.ok(&["images", "-q", "--no-trunc"]);
    assert!(full.lines().all(|l| l == id), "{full}");
    let f = s.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(f.contains(&format!("busybox:latest {}", &id[7..19])), "{f}");
    let t = s.ok(&["images", "--format", "table {{.Repository}}\\t{{.Size}}"]);
    assert!(t.starts_with("REPOSITORY   SIZE"), "{t}");
    let i = s.ok(&[
        "inspect",
        "--format",
        "{{.Id}} {{.Os}} {{json .RepoTags}}",
        "busybox",
    ]);
    assert_eq!(
        i.trim(),
        format!("{id} linux [\"busybox:latest\",\"other:1\"]")
    );
    let err = s.fail(&["inspect", "--format", "{{range .X}}{{end}}", "busybox"]);
    assert!(err.contains("supports"), "{err}");
    // ps -a / -q on a store without mounts.
    assert!(s.ok(&["ps", "-a", "-q"]).is_empty());
    assert!(s.ok(&["ps"]).starts_with("NAME"));
    // history: -H alone, -H=false, --human=false.
    let human = s.ok(&["history", "-H", "busybox"]);
    assert!(human.contains("3.03MB"), "{human}");
    for off in ["-H=false", "--human=false"] {
        let raw = s.ok(&["history", off, "busybox"]);
        assert!(
            raw.starts_with("IMAGE") && raw.contains("CREATED AT"),
            "{raw}"
        );
        assert!(raw.contains("2023-11-14T22:13:20Z"), "{raw}");
    }
    // Layer sizes as Docker computes them (symlinks count, hard links once).
    let ours: Vec<String> = s
        .ok(&["history", "-H=false", "--no-trunc", "busybox"])
        .lines()
        .skip(1)
        .map(size_column)
        .collect();
    let docker = Docker::start();
    docker.ok(&[
        "load",
        "-i",
        fixtures()
            .join("busybox/busybox.docker.tar")
            .to_str()
            .unwrap(),
    ]);
    let theirs: Vec<String> = docker
        .ok(&[
            "history",
            "-H=false",
            "--no-trunc",
            "layerfs/busybox:latest",
        ])
        .lines()
        .skip(1)
        .map(size_column)
        .collect();
    assert_eq!(ours, theirs);
    assert!(ours.iter().all(|s| !s.is_empty()), "{ours:?}");
    let human_theirs = docker.ok(&["history", "layerfs/busybox:latest"]);
    let human_ours = s.ok(&["history", "busybox"]);
    let sizes = |t: &str| -> Vec<String> { t.lines().map(size_column).collect() };
    assert_eq!(sizes(&human_ours), sizes(&human_theirs));
}

/// The SIZE column (the 4th) of a `history` row: columns are at least 3 spaces apart.
fn size_column(line: &str) -> String {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .nth(3)
        .unwrap_or("")
        .to_string()
}

#[test]
fn help_completions_man_pages_and_install() {
    let s = TestStore::new();
    let help = s.ok(&["--help"]);
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 12, "{commands:?}");
    for c in &commands {
        let h = s.ok(&[c, "--help"]);
        assert!(
            h.contains("Examples:\n  layerfs"),
            "{c} --help has no examples:\n{h}"
        );
    }
    for sh in ["bash", "zsh", "fish"] {
        let out = s.ok(&["completions", sh]);
        assert!(out.contains("layerfs") && out.contains("save"), "{sh}");
    }
    // The man pages and the install step (into a staging directory).
    let bin_dir = common::bin().parent().unwrap().to_path_buf();
    if !bin_dir.join("examples/man").is_file() {
        // `cargo test` builds examples; `cargo test --test cli` alone does not.
        run_ok(
            Command::new(env!("CARGO"))
                .args(["build", "--release", "--example", "man"])
                .current_dir(env!("CARGO_MANIFEST_DIR")),
        );
    }
    let dest = s.dir.path().join("dest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    run_ok(
        Command::new(&script)
            .arg("--no-build")
            .env("DESTDIR", &dest)
            .env("LAYERFS_BIN_DIR", &bin_dir),
    );
    let root = dest.join("usr/local");
    for p in [
        "bin/layerfs",
        "bin/layerfs-overlay",
        "share/man/man1/layerfs.1",
        "share/man/man1/layerfs-save.1",
        "share/bash-completion/completions/layerfs",
    ] {
        assert!(root.join(p).is_file(), "{p} not installed");
    }
    let page = fs::read_to_string(root.join("share/man/man1/layerfs-export.1")).unwrap();
    assert!(
        page.contains(".TH layerfs-export") && page.contains("Examples"),
        "{page}"
    );
    let helper = dest.join("sbin/mount.fuse.layerfs");
    assert!(fs::read_link(&helper).unwrap().ends_with("mount.fuse3"));

    // `mount -t fuse.layerfs` through mount(8) with the installed binaries (in a
    // private namespace, where they stand in for /usr/local/bin), and through the
    // helper link as mount(8) runs it.
    require_fuse();
    let lower = s.scratch("lower");
    fs::write(lower.join("x"), b"through mount(8)").unwrap();
    let mp = s.scratch("mp");
    let out = in_namespace(&format!(
        "mount --bind {bin} /usr/local/bin && mount -t fuse.layerfs overlay {mp} -o lowerdir={l} \
         && cat {mp}/x && umount {mp} && env -i PATH={bin}:/usr/sbin:/usr/bin:/sbin:/bin \
         {helper} overlay {mp} -o lowerdir={l} && cat {mp}/x && umount {mp}",
        bin = root.join("bin").display(),
        mp = mp.display(),
        l = lower.display(),
        helper = helper.display(),
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through mount(8)through mount(8)"
    );
}

/// `layerfs export C | head` and `layerfs diff C | head`: a reader that stops early ends
/// the command without a word, with SIGPIPE's status (141), as `tar c . | head` does —
/// never "Broken pipe (os error 32)".
#[test]
fn a_reader_that_stops_early_ends_export_and_diff_quietly() {
    require_root("to mount");
    let lab = common::lab::Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Oci));
    let m = lab.mount(&["--name", "piped", "busybox:latest"], "m");
    // Far more than a pipe holds, in both outputs.
    sh_in(
        &m,
        "mkdir -p srv/many && i=0; while [ $i -lt 3000 ]; do \
         echo $i > srv/many/a-file-with-a-long-name-to-fill-the-pipe-$i; i=$((i+1)); done",
    );
    lab.umount(&m);
    for (cmd, reads) in [("export piped", "head -c 100"), ("diff piped", "head -n 1")] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; \"$LFS\" {cmd} | {reads} >/dev/null"
            ))
            .env("LFS", bin())
            .env("LAYERFS_ROOT", &s.root)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{cmd}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{cmd}");
    }
    // A reader that takes it all still gets it all.
    let all = s.ok(&["diff", "piped"]);
    assert_eq!(
        all.lines().filter(|l| l.contains("/srv/many/")).count(),
        3000
    );
}

/// A truncated archive says so (which entry, how many bytes are missing), not that it
/// lacks a manifest; nothing of it is stored.
#[test]
fn a_truncated_archive_says_truncated() {
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let whole = s.scratch("out").join("bb.tar");
    s.ok(&["save", "busybox:latest", "-o", whole.to_str().unwrap()]);
    let bytes = fs::read(&whole).unwrap();
    let fresh = TestStore::new();
    // A store to look into afterwards (an empty directory becomes one).
    fs::create_dir(&fresh.root).unwrap();
    for cut in [3000, bytes.len() / 3, bytes.len() * 2 / 3] {
        let part = fresh.scratch(&format!("cut-{cut}")).join("part.tar");
        fs::write(&part, &bytes[..cut]).unwrap();
        let err = fresh.fail(&["load", part.to_str().unwrap()]);
        assert!(
            err.contains("the archive is truncated") && err.contains("bytes missing"),
            "cut at {cut}: {err}"
        );
        assert!(!err.contains("without manifest.json"), "{err}");
        assert_eq!(fresh.ok(&["images", "-q"]), "", "cut at {cut}");
    }
    // Cut inside a header near the end (the last entries' headers): truncated too, not
    // "not a readable tar archive".
    let from_end = bytes.len() - 1024 - 700;
    let part = fresh.scratch("cut-header").join("part.tar");
    fs::write(&part, &bytes[..from_end]).unwrap();
    let err = fresh.fail(&["load", part.to_str().unwrap()]);
    assert!(
        err.contains("the archive is truncated") && err.contains("inside a tar header"),
        "{err}"
    );
    // The whole archive loads.
    fresh.ok(&["load", whole.to_str().unwrap()]);
}

/// Docker's spellings: `load -i FILE`, `system df`, `system prune`.
#[test]
fn docker_spellings_of_load_df_and_prune() {
    let s = TestStore::new();
    let src = TestStore::new();
    src.load(&bb("latest", Spelling::Oci));
    let tar = src.scratch("out").join("bb.tar");
    src.ok(&["save", "busybox:latest", "-o", tar.to_str().unwrap()]);
    let id = s.ok(&["load", "-q", "-i", tar.to_str().unwrap()]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(s.ok(&["images", "-q", "--no-trunc"]).trim(), id.trim());
    // Both is a usage error (clap's status 2).
    let both = s.run(&["load", "-i", tar.to_str().unwrap(), tar.to_str().unwrap()]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    assert_eq!(s.ok(&["system", "df"]), s.ok(&["df"]));
    assert!(s.ok(&["system", "prune"]).contains("reclaimed"));
}

/// `images REPOSITORY[:TAG]`, as `docker images busybox`: only the rows of that name.
#[test]
fn images_of_one_repository_or_tag() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    s.ok(&["tag", "busybox:latest", "busybox:2"]);
    s.ok(&["tag", "busybox:latest", "other:1"]);
    let rows = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        a.extend_from_slice(args);
        let mut v: Vec<String> = s.ok(&a).lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(rows(&[]), ["busybox:2", "busybox:latest", "other:1"]);
    assert_eq!(rows(&["busybox"]), ["busybox:2", "busybox:latest"]);
    assert_eq!(rows(&["busybox:2"]), ["busybox:2"]);
    assert_eq!(rows(&["docker.io/library/other:1"]), ["other:1"]);
    assert!(rows(&["nosuch"]).is_empty());
    let q = s.ok(&["images", "-q", "--no-trunc", "other"]);
    assert_eq!(q.trim(), id.trim());
    let table = s.ok(&["images", "nosuch"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
}

/// `umount NAME` when there is no such container (and no such path) says that, not that
/// ./NAME is not a mount point.
#[test]
fn umount_of_an_unknown_name_says_no_such_container() {
    let s = TestStore::new();
    // A store (an empty directory becomes one).
    fs::create_dir(&s.root).unwrap();
    let err = s.fail(&["umount", "nosuch"]);
    assert!(
        err.contains("no container or mount point named nosuch"),
        "{err}"
    );
    // A path is still a path.
    let dir = s.scratch("plain");
    let err = s.fail(&["umount", dir.to_str().unwrap()]);
    assert!(err.contains("is not a mount point"), "{err}");
}

/// `history -q` and `history --format`, as Docker spells them.
#[test]
fn history_quiet_and_format() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let table = s.ok(&["history", "busybox"]);
    let rows = table.lines().count() - 1;
    let q = s.ok(&["-q", "history", "busybox"]);
    let ids: Vec<&str> = q.lines().collect();
    assert_eq!(ids.len(), rows, "{q}");
    assert_eq!(ids[0], &id.trim()[7..19]);
    assert!(ids[1..].iter().all(|i| *i == "<missing>"), "{q}");
    let f = s.ok(&["history", "--format", "{{.ID}}|{{.Size}}", "busybox"]);
    let lines: Vec<&str> = f.lines().collect();
    assert_eq!(lines.len(), rows, "{f}");
    assert!(
        lines[0].starts_with(&format!("{}|", &id.trim()[7..19])),
        "{f}"
    );
    let t = s.ok(&[
        "history",
        "--format",
        "table {{.ID}}\\t{{.CreatedBy}}",
        "busybox",
    ]);
    assert!(t.starts_with("IMAGE"), "{t}");
}
