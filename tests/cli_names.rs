//! IMAGE arguments as a user in a directory full of things types them: a name in the store
//! wins over a directory of that name (with a note saying so), a path is taken when it is
//! spelled as one (`./x`, `x/`, `oci:x`) or when no image has that name, and a bare name
//! that is neither says "unknown image". Needs root (the fixtures' owners).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// A store with busybox:latest (also tagged big:1) and a scratch directory holding the
/// directories `busybox/` and `big/` (not images), where commands run.
fn setup() -> (TestStore, PathBuf, String) {
    require_root("the fixtures hold files of other owners");
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    s.ok(&["tag", "busybox", "big:1"]);
    let cwd = s.scratch("cwd");
    std::fs::create_dir(cwd.join("busybox")).unwrap();
    std::fs::create_dir(cwd.join("big")).unwrap();
    (s, cwd, id)
}

/// `layerfs ARGS` run in `cwd`.
fn run_in(s: &TestStore, cwd: &Path, args: &[&str]) -> Output {
    s.cmd().current_dir(cwd).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The id `inspect` printed (its JSON's first image).
fn inspected_id(out: &Output) -> String {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_name_in_the_store_wins_over_a_directory() {
    let (s, cwd, id) = setup();
    let out = run_in(&s, &cwd, &["inspect", "busybox"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "inspect busybox: {err}");
    assert_eq!(inspected_id(&out), id);
    assert!(
        err.contains(
            r#"layerfs: note: "busybox" is the image busybox:latest in the store; write ./busybox for the directory"#
        ),
        "{err}"
    );
    // NAME:TAG where NAME is a directory (what `PATH:TAG` would load).
    let out = run_in(&s, &cwd, &["inspect", "big:1"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "inspect big:1: {err}");
    assert_eq!(inspected_id(&out), id);
    assert!(
        err.contains("write ./big:1 for the directory ./big"),
        "{err}"
    );
    // history and save take the same rule.
    let out = run_in(&s, &cwd, &["history", "-q", "busybox"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_in(&s, &cwd, &["save", "busybox", "-o", "out.tar"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("note:"), "{}", text(&out.stderr));
    assert!(cwd.join("out.tar").is_file());
    // No directory of that name: no note.
    let out = run_in(&s, &s.scratch("empty"), &["inspect", "busybox"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_path_spelled_as_one_is_read_as_a_path() {
    let (s, cwd, id) = setup();
    for arg in ["./busybox", "busybox/", "oci:busybox"] {
        let out = run_in(&s, &cwd, &["inspect", arg]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "inspect {arg}: {err}");
        assert!(
            err.contains("layerfs: error: ") && err.contains("unknown image format"),
            "inspect {arg}: {err}"
        );
    }
    // An image there is loaded from there.
    std::fs::remove_dir(cwd.join("busybox")).unwrap();
    copy_dir(&fixtures().join("busybox/oci"), &cwd.join("busybox"));
    let out = run_in(&s, &cwd, &["inspect", "./busybox:l1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(inspected_id(&out), id, "l1 is another image than latest");
    let out = run_in(&s, &cwd, &["inspect", "./busybox:latest"]);
    assert_eq!(inspected_id(&out), id);
}

#[test]
fn a_name_no_image_has_is_read_as_a_path() {
    let (s, cwd, _) = setup();
    let built = one_layer(&cwd.join("solo"), vec![file("hello", b"hi\n")]);
    let out = run_in(&s, &cwd, &["inspect", "solo"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(inspected_id(&out), built.config_digest);
    assert_eq!(
        text(&out.stderr),
        "",
        "nothing to note: only the path was meant"
    );
    // A directory that is no image, under a name no image has: both said.
    std::fs::create_dir(cwd.join("junk")).unwrap();
    let err = text(&run_in(&s, &cwd, &["inspect", "junk"]).stderr);
    assert!(
        err.contains(r#""junk" is no image in the store, and ./junk is no image to load"#),
        "{err}"
    );
    // Neither an image nor a path: the store's message.
    let out = run_in(&s, &cwd, &["inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(r#"unknown image "nosuch""#),
        "{}",
        text(&out.stderr)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}
