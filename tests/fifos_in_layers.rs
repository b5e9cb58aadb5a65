//! A FIFO where a layer held a regular file (issue 19, defect 6): reading a file's
//! content from a layer never blocks on one. `save` of a layer whose recorded layout
//! names the path fails at once, naming the layer and the path; through a mount, a lower
//! file replaced by a FIFO after it was looked up gives EIO to a read and to a copy-up
//! instead of hanging the caller and a daemon thread for good. A deadline on each
//! command only guards against the hang (a hang fails the test; nothing is timed).
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::stat::Mode;

/// A command that should finish at once gets this long before it counts as hung.
const HANG: Duration = Duration::from_secs(30);

/// Runs `cmd` with a deadline. On a hang, `fifo` is opened for writing (which lets a
/// reader blocked in open(2) go on), the child is killed, and the test fails.
fn run_bounded(cmd: &mut Command, fifo: &Path) -> Output {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > HANG {
            let _w = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} hung on the FIFO {} for {HANG:?}; stderr: {}",
                fifo.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o644)).unwrap();
}

#[test]
fn save_refuses_a_fifo_in_a_layer_without_blocking() {
    require_root("writes into the store's layer directories");
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Oci));
    let diff = s.layer_dirs(&id).pop().unwrap();
    let victim = first_file(&diff).expect("a regular file in the top layer");
    let rel = victim.strip_prefix(&diff).unwrap().display().to_string();
    fs::remove_file(&victim).unwrap();
    mkfifo(&victim);
    for format in ["docker-archive", "oci"] {
        let out = s.dir.path().join(format!("out-{format}"));
        let o = run_bounded(
            s.cmd()
                .args(["save", &id, "--format", format, "-o"])
                .arg(&out),
            &victim,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{format}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for needle in [
            rel.as_str(),
            "is a FIFO",
            "layer sha256:",
            "changed on disk",
        ] {
            assert!(err.contains(needle), "{format}: {needle:?} missing: {err}");
        }
        assert!(!out.exists(), "{format}: output left");
        assert!(fs::symlink_metadata(&victim).unwrap().file_type().is_fifo());
    }
}

#[test]
fn a_lower_file_turned_fifo_gives_eio_not_a_hang() {
    let mut layers = mount::Layers::new();
    let l = layers.add();
    l.file("read", "data").file("append", "data");
    let m = mount::Mount::new(&layers.lowerdirs());
    // Looked up (and cached by the kernel) as regular files, then replaced below.
    for name in ["read", "append"] {
        assert!(fs::metadata(m.p(name)).unwrap().is_file());
        fs::remove_file(l.p(name)).unwrap();
        mkfifo(&l.p(name));
    }
    let o = run_bounded(Command::new("cat").arg(m.p("read")), &l.p("read"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "cat read a FIFO's data?");
    assert!(err.contains("Input/output error"), "{err}");
    // A write copies the file up: its data is read from below the same way.
    let o = run_bounded(
        Command::new("sh")
            .arg("-c")
            .arg("echo more >> \"$0\"")
            .arg(m.p("append")),
        &l.p("append"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "appended to a FIFO's copy?");
    assert!(err.contains("Input/output error"), "{err}");
    assert!(
        !m.up("append").exists(),
        "a half copy-up is left in the upper layer"
    );
    // The daemon is still there for everything else.
    l.file("fine", "ok");
    assert_eq!(fs::read_to_string(m.p("fine")).unwrap(), "ok");
}
