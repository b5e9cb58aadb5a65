//! What a Docker user types, and what a new user trips over (issue 22 items 5-7), each as
//! the command line they would type, checked on its output and exit status: `load < FILE`,
//! `save IMAGE > FILE`, `--format` with an unknown field, `inspect`'s Size and `history`'s
//! ids as Docker shows them (Docker itself is the reference where it can be: a private
//! dockerd), `--allow-other`/`--suid` as a plain user, a non-empty mount point, read-only
//! mounts in `ps` and `df`, the `ps` IMAGE column after `rmi`, and a mistyped `--root`.
//! Needs root (the fixtures hold files of other owners) and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::lab::*;
use common::tools::Docker;
use common::*;

/// `sh -c script` (bash with `bash`) with `$L` the layerfs binary and the store of `s`.
fn shell(s: &TestStore, bash: bool, script: &str) -> Output {
    Command::new(if bash { "bash" } else { "sh" })
        .arg("-c")
        .arg(script)
        .env("LAYERFS_ROOT", &s.root)
        .env("L", bin())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `layerfs ARGS` with stdin and stdout a terminal (a pty from script(1)); its exit status
/// and everything it wrote.
fn on_a_terminal(s: &TestStore, args: &str) -> (Option<i32>, String) {
    let out = shell(
        s,
        false,
        &format!("script -qec \"$L {args}\" /dev/null < /dev/null"),
    );
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

fn tmp_is_empty(s: &TestStore) {
    assert_eq!(names(&s.root.join("tmp")), Vec::<String>::new(), "tmp/");
}

const DOCKER_TAR: &str = "busybox/busybox.docker.tar";

/// Docker's `Size` of the busybox fixture (docker inspect, Engine 20.10): the sum of the
/// layer sizes `docker history` shows.
const DOCKER_SIZE: u64 = 3_034_691;

#[test]
fn load_reads_an_archive_on_stdin() {
    require_root("the fixtures hold files of other owners");
    let id = TestStore::new().load(&bb("latest", Spelling::Oci));
    let s = TestStore::new();
    let tar = fixtures().join(DOCKER_TAR);
    let out = shell(&s, false, &format!("$L load < {}", tar.display()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Loaded image: layerfs/busybox:latest"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().last(), Some(id.as_str()), "{stdout}");
    tmp_is_empty(&s);
    // Compressed, and an OCI archive, as `docker load` takes them.
    for script in [
        format!("gzip -c {} | $L load -q", tar.display()),
        format!(
            "$L load -q < {}",
            fixtures().join("busybox/busybox.oci.tar").display()
        ),
    ] {
        let fresh = TestStore::new();
        let out = shell(&fresh, false, &script);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{script}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout).trim(), id, "{script}");
        tmp_is_empty(&fresh);
    }
    // Nothing, or not an archive: a clear error, nothing left behind.
    let out = shell(&s, false, "$L load < /dev/null");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("stdin is empty"), "{out:?}");
    let out = shell(&s, false, "echo not an archive | $L load");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("stdin"), "{out:?}");
    tmp_is_empty(&s);
    // No source and stdin a terminal: say how to give one.
    let (code, said) = on_a_terminal(&s, "load");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("stdin is a terminal") && said.contains("layerfs load < FILE"),
        "{said}"
    );
}

#[test]
fn save_writes_an_archive_to_stdout_unless_it_is_a_terminal() {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let dir = s.scratch("out");
    for (format, file) in [("docker-archive", "a.tar"), ("oci-archive", "b.tar")] {
        let out_file = dir.join(file);
        let out = shell(
            &s,
            false,
            &format!("$L save --format {format} busybox > {}", out_file.display()),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(TestStore::new().load(out_file.to_str().unwrap()), id);
    }
    let listing = run_ok(Command::new("tar").arg("tf").arg(dir.join("a.tar")));
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    tmp_is_empty(&s);
    // A reader that stops early: the status of SIGPIPE, without a word.
    let out = shell(
        &s,
        true,
        "$L save busybox | head -c 100 > /dev/null; echo ${PIPESTATUS[0]}",
    );
    assert_eq!(text(&out.stdout).trim(), "141");
    assert_eq!(text(&out.stderr), "");
    tmp_is_empty(&s);
    // A layout directory cannot go to stdout; nor an archive to a terminal.
    let out = shell(&s, false, "$L save --format oci busybox > /dev/null");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot go to stdout"), "{out:?}");
    let (code, said) = on_a_terminal(&s, "save busybox");
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains("refusing to write an archive to a terminal"),
        "{said}"
    );
    tmp_is_empty(&s);
}

#[test]
fn format_fails_on_an_unknown_field_of_a_row() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Oci));
    lab.mount(&["busybox", "--name", "web"], "m");
    for (args, a_known_field) in [
        (&["images"][..], ".Repository"),
        (&["ps", "-a"], ".MountPoint"),
        (&["history", "busybox"], ".CreatedBy"),
        (&["inspect", "busybox"], ".repo_tags"),
    ] {
        for format in ["{{.Nope}}", "{{json .Nope}}", "table {{.Nope}}"] {
            let mut a = args.to_vec();
            a.extend(["--format", format]);
            let err = s.fail(&a);
            assert!(
                err.contains("field Nope") && err.contains(a_known_field),
                "{a:?}: {err}"
            );
        }
    }
    // A key under a map-valued field is Go's <no value>, not an error.
    let v = s.ok(&["inspect", "--format", "{{.Config.Labels.nope}}", "busybox"]);
    assert_eq!(v, "<no value>\n");
    // No rows, nothing rendered: no error (as Docker).
    assert_eq!(s.ok(&["images", "nosuch", "--format", "{{.Nope}}"]), "");
}

/// The size a `history -H=false` row shows, in bytes.
fn history_sizes(out: &str) -> Vec<u64> {
    out.lines().map(|l| l.trim().parse().unwrap()).collect()
}

#[test]
fn inspect_size_is_dockers_the_history_total() {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    s.load(&bb("latest", Spelling::Oci));
    let size: u64 = s
        .ok(&["inspect", "--format", "{{.Size}}", "busybox"])
        .trim()
        .parse()
        .unwrap();
    let rows = s.ok(&["history", "-H=false", "--format", "{{.Size}}", "busybox"]);
    assert_eq!(size, history_sizes(&rows).iter().sum::<u64>(), "{rows}");
    assert_eq!(size, DOCKER_SIZE);
}

/// Docker as the reference: the same archive loaded in both, the same Size, the same
/// history sizes, and both refuse an unknown field.
#[test]
fn size_history_and_unknown_fields_as_docker_has_them() {
    require_root("the fixtures hold files of other owners; dockerd");
    let engine = Docker::start();
    let tar = fixtures().join(DOCKER_TAR);
    engine.ok(&["load", "-i", tar.to_str().unwrap()]);
    let s = TestStore::new();
    s.load(tar.to_str().unwrap());
    let image = "layerfs/busybox:latest";
    for args in [
        &["inspect", "--format", "{{.Size}}", image][..],
        &["history", "-H=false", "--format", "{{.Size}}", image],
        &["history", "--format", "{{.ID}}", image],
    ] {
        assert_eq!(s.ok(args), engine.ok(args), "{args:?}");
    }
    for args in [
        &["images", "--format", "{{.Nope}}"][..],
        &["history", "--format", "{{.Nope}}", image],
    ] {
        assert_eq!(engine.run(args).status.code(), Some(1), "docker {args:?}");
        s.fail(args);
    }
}

#[test]
fn history_names_the_local_images_below() {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    let ids: Vec<String> = ["l1", "l2", "l3"]
        .iter()
        .map(|t| s.load(&bb(t, Spelling::Oci)))
        .collect();
    let short = |id: &str| id[7..19].to_string();
    let q = s.ok(&["-q", "history", "busybox:l3"]);
    assert_eq!(
        q.lines().collect::<Vec<_>>(),
        [short(&ids[2]), short(&ids[1]), short(&ids[0])],
        "{q}"
    );
    let full = s.ok(&["history", "--no-trunc", "--format", "{{.ID}}", "busybox:l2"]);
    assert_eq!(full.lines().collect::<Vec<_>>(), [&ids[1], &ids[0]]);
    // Without the middle image, its row has no local id.
    s.ok(&["rmi", "busybox:l2"]);
    let q = s.ok(&["-q", "history", "busybox:l3"]);
    assert_eq!(
        q.lines().collect::<Vec<_>>(),
        [short(&ids[2]), "<missing>".into(), short(&ids[0])],
        "{q}"
    );
}

#[test]
fn a_mistyped_root_is_not_made_a_store() {
    let t = tempfile::tempdir().unwrap();
    let typo = t.path().join("stroe");
    let layerfs = |args: &[&str]| {
        Command::new(bin())
            .arg("--root")
            .arg(&typo)
            .args(args)
            .env_remove("LAYERFS_ROOT")
            .output()
            .unwrap()
    };
    let o = t.path().join("o.tar");
    let o = o.to_str().unwrap();
    for args in [
        &["images"][..],
        &["ps", "-a"],
        &["df"],
        &["prune"],
        &["rmi", "busybox"],
        &["tag", "busybox", "b:1"],
        &["inspect", "busybox"],
        &["history", "busybox"],
        &["save", "busybox", "-o", o],
        &["export", "web", "-o", o],
        &["diff", "web"],
        &["rm", "web"],
        &["umount", "web"],
    ] {
        let out = layerfs(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "layerfs: error: no store at {} (load an image first: layerfs load SOURCE)",
                typo.display()
            ),
            "{args:?}"
        );
        assert!(!typo.exists(), "{args:?} made a store");
    }
    // What loads an image makes one.
    require_root("the fixtures hold files of other owners");
    let out = layerfs(&["inspect", &bb("latest", Spelling::Oci)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(typo.join("VERSION").is_file());
}

#[test]
fn read_only_mounts_show_in_ps_and_df() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Oci));
    let ro = lab.mount(&["--read-only", "busybox"], "ro");
    let mp = ro.display().to_string();
    for args in [&["ps"][..], &["ps", "-a"]] {
        let ps = s.ok(args);
        let row = ps
            .lines()
            .find(|l| l.ends_with(&mp))
            .unwrap_or_else(|| panic!("{args:?}: no row for {mp}:\n{ps}"));
        let cells: Vec<&str> = row
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[0], "-", "{row}");
        assert_eq!(cells[1], "busybox:latest", "{row}");
        assert!(row.contains("mounted (read-only)"), "{row}");
    }
    assert_eq!(
        s.ok(&["ps", "-a", "-q"]),
        "",
        "a read-only mount has no name"
    );
    let df = s.ok(&["-v", "df"]);
    assert!(df.contains(&format!("mounted (read-only) at {mp}")), "{df}");
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();
    assert_eq!(
        json["read_only_mounts"][0]["mountpoint"],
        mp.as_str(),
        "{json}"
    );
    lab.umount(&ro);
    assert!(!s.ok(&["ps", "-a"]).contains(&mp));
    assert!(!s.ok(&["-v", "df"]).contains("read-only"));
}

#[test]
fn ps_shows_the_name_used_while_it_names_the_image_else_the_id() {
    let lab = Lab::new();
    let s = &lab.s;
    let id = s.load(&bb("latest", Spelling::Oci));
    s.ok(&["tag", "busybox", "web:1"]);
    let m = lab.mount(&["web:1", "--name", "w"], "m");
    lab.umount(&m);
    let by_id = lab.mount(&[&id[7..19], "--name", "i"], "i");
    lab.umount(&by_id);
    let image_of = |name: &str| {
        s.ok(&["ps", "-a", "--format", "{{.Name}} {{.Image}}"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")).map(String::from))
            .unwrap_or_default()
    };
    assert_eq!(image_of("w"), "web:1");
    assert_eq!(image_of("i"), &id[7..19], "made from an id: the id");
    // busybox:latest still names the image; the container's name does not any more.
    s.ok(&["rmi", "web:1"]);
    assert_eq!(image_of("w"), &id[7..19]);
    let table = s.ok(&["ps", "-a"]);
    assert!(
        table.contains(&format!("w         {}", &id[7..19])),
        "{table}"
    );
    // Named again: shown again.
    s.ok(&["tag", "busybox", "web:1"]);
    assert_eq!(image_of("w"), "web:1");
}

#[test]
fn mounting_onto_a_non_empty_directory_warns() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Oci));
    let full = lab.dir("full");
    std::fs::write(full.join("mine.txt"), b"x").unwrap();
    let out = s.run(&["mount", "busybox", full.to_str().unwrap(), "--read-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    lab.umount(&full);
    assert_eq!(
        text(&out.stderr),
        format!(
            "layerfs: warning: {} is not empty: its files are hidden while the mount is there\n",
            full.display()
        )
    );
    assert!(full.join("mine.txt").is_file(), "hidden, never touched");
    let empty = lab.dir("empty");
    let out = s.run(&["mount", "busybox", empty.to_str().unwrap(), "--read-only"]);
    assert_eq!(out.status.code(), Some(0));
    lab.umount(&empty);
    assert_eq!(text(&out.stderr), "");
}

/// `layerfs ARGS` as nobody, with /etc/fuse.conf replaced by `conf` (in a mount namespace
/// of its own: the host's file is left alone), `dir` HOME.
fn as_nobody_with_fuse_conf(conf: &str, dir: &Path, args: &str) -> Output {
    let file = dir.join("fuse.conf");
    std::fs::write(&file, conf).unwrap();
    Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mount --bind {f} /etc/fuse.conf && exec setpriv --reuid={NOBODY} \
             --regid={NOBODY} --clear-groups env HOME={d} {bin} --root {d}/store {args}",
            f = file.display(),
            d = dir.display(),
            bin = bin().display()
        ))
        .env_remove("LAYERFS_ROOT")
        .output()
        .unwrap()
}

#[test]
fn allow_other_as_a_plain_user_needs_user_allow_other() {
    fuse_for_users();
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(t.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(NOBODY), Some(NOBODY)).unwrap();
    let args = format!("mount --allow-other nosuch {}", mnt.display());
    let out = as_nobody_with_fuse_conf("#user_allow_other\n", t.path(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--allow-other needs `user_allow_other` in /etc/fuse.conf"),
        "{err}"
    );
    assert!(
        !t.path().join("store").exists(),
        "refused after making things"
    );
    // Allowed there: on to the next question (the image).
    let out = as_nobody_with_fuse_conf("user_allow_other\n", t.path(), &args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unknown image") && !err.contains("user_allow_other"),
        "{err}"
    );
}

#[test]
fn suid_and_dev_as_a_plain_user_are_said_to_do_nothing() {
    fuse_for_users();
    let s = TestStore::new();
    std::os::unix::fs::chown(s.dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let mnt = s.dir.path().join("m");
    let script = format!(
        "export HOME={d}; L='{bin} --root {d}/store'; set -e; $L load -q {src} >/dev/null 2>&1; \
         mkdir {m}; $L mount --suid --dev --name c busybox {m} 2>{d}/err >/dev/null; \
         findmnt -no OPTIONS {m}; $L umount c; cat {d}/err",
        d = s.dir.path().display(),
        bin = bin().display(),
        src = bb("latest", Spelling::Oci),
        m = mnt.display()
    );
    let out = sh_ok_as(NOBODY, &script);
    let (options, said) = out.split_once('\n').unwrap();
    assert!(
        options.contains("nosuid") && options.contains("nodev"),
        "{options}"
    );
    assert_eq!(
        said,
        "layerfs: warning: --suid and --dev have no effect: fusermount3 mounts a plain user's \
         FUSE filesystems nosuid,nodev\n"
    );
    // Root's --suid does what it says: no warning.
    let lab = Lab::new();
    lab.s.load(&bb("latest", Spelling::Oci));
    let m = lab.dir("root-m");
    let out = lab
        .s
        .run(&["mount", "--suid", "busybox", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    lab.umount(&m);
    assert_eq!(text(&out.stderr), "");
}
