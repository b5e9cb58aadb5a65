//! Who holds a container (issue 19, found by `tests/store_stress.rs`): a container lock
//! held exclusive is not "mounted". A container held for a moment — a mount being set
//! up, an `rm`, a daemon starting or letting go — is waited for by `mount`, `rm` and
//! `umount` (as a serial order puts the other command first), never refused as mounted;
//! only what a live daemon says it serves is mounted; `umount` and `rm --force` wait for
//! the daemon they unmounted, not for whoever holds the lock next; two `mount IMAGE DIR
//! --name C` of a new C never fail "already exists". The holders here are stand-ins, a
//! small program that takes the container's lock (and, as a daemon, answers on its
//! control socket), so that each state lasts as long as the test needs. Needs root and
//! /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::*;
use common::*;

/// Stands in for a holder of container `dir`'s lock: takes it exclusive, and, when
/// `answer` is given, answers `state` on the container's control socket with it (and
/// `idle` with `idle`), as a daemon does. Lets go (exits) after `life` seconds; with
/// `handover`, leaves the lock to a child that keeps it (the same open file, as a daemon
/// inherits it) that much longer.
const HOLDER: &str = r#"
import fcntl, os, socket, sys, time
d, answer, life, handover = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
os.chdir(d)
fd = os.open('lock', os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
s = None
if answer:
    if os.path.exists('control.sock'):
        os.unlink('control.sock')
    s = socket.socket(socket.AF_UNIX)
    s.bind('control.sock')
    s.listen(16)
    s.settimeout(0.02)
if handover > 0 and os.fork() == 0:
    if s:
        s.close()
    os.close(1)
    time.sleep(life + handover)
    os._exit(0)
print('holding', flush=True)
end = time.time() + life
while time.time() < end:
    if not s:
        time.sleep(0.02)
        continue
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    c.settimeout(5)
    line = c.makefile().readline().strip()
    if line == 'state':
        c.sendall((answer + '\n').encode())
    elif line == 'idle':
        c.sendall(b'idle\n')
    c.close()
os._exit(0)
"#;

/// Starts a stand-in holder of container `name` (see [`HOLDER`]) and waits until it holds.
fn hold(s: &TestStore, name: &str, answer: &str, life: f64, handover: f64) -> Child {
    let dir = s.root.join("containers").join(name);
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(HOLDER)
        .arg(&dir)
        .arg(answer)
        .arg(life.to_string())
        .arg(handover.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "holding", "the stand-in holder did not start");
    child
}

/// `layerfs ARGS`, timed.
fn timed(s: &TestStore, args: &[&str]) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = s.run(args);
    (out, t.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A container made and unmounted again, with a file in its writable layer.
fn made(lab: &Lab, name: &str) {
    let m = lab.mount(&["busybox", "--name", name], &format!("made-{name}"));
    std::fs::write(m.join("mine"), name).unwrap();
    lab.umount(&m);
}

#[test]
fn mount_rm_and_umount_wait_for_a_container_held_for_a_moment() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    made(&lab, "c");
    let m = lab.dir("m");

    // Held with no daemon answering: a mount being set up, an rm under way.
    let mut h = hold(s, "c", "", 1.5, 0.0);
    let (out, took) = timed(s, &["mount", "c", m.to_str().unwrap()]);
    h.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(took >= Duration::from_millis(900), "did not wait: {took:?}");
    assert!(
        text(&out.stderr).contains(
            "waiting for container c: another layerfs command is mounting or removing it"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(m.join("mine")).unwrap(), "c");
    lab.umount(&m);

    // Held by a daemon that is starting: not mounted yet.
    let mut h = hold(s, "c", "starting", 1.5, 0.0);
    let out = s.run(&["umount", "c"]);
    h.wait().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("waiting for container c: its mount daemon is starting")
            && err.contains("container c is not mounted"),
        "{err}"
    );

    // Held by a daemon whose mount has ended: it lets go, then rm removes it.
    let mut h = hold(s, "c", "ended", 1.5, 0.0);
    let out = s.run(&["rm", "c"]);
    h.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("its mount has ended and its daemon is letting go of it"),
        "{}",
        text(&out.stderr)
    );
    assert!(!s.root.join("containers/c").exists());
}

#[test]
fn a_container_its_daemon_serves_is_mounted_and_refused() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    made(&lab, "c");
    let elsewhere = lab.dir("elsewhere");
    let answer = format!("mounted \"{}\"", elsewhere.display());
    let mut h = hold(s, "c", &answer, 3.0, 0.0);
    let m = lab.dir("m");
    let err = s.fail(&["mount", "c", m.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "container c is already mounted at {}",
            elsewhere.display()
        )),
        "{err}"
    );
    let err = s.fail(&["rm", "c"]);
    assert!(
        err.contains(&format!(
            "container c is mounted at {}",
            elsewhere.display()
        )) && err.contains("--force"),
        "{err}"
    );
    let ps: serde_json::Value = serde_json::from_str(&s.ok(&["ps", "-a", "--json"])).unwrap();
    assert_eq!(ps[0]["state"], "mounted", "{ps}");
    assert_eq!(ps[0]["mountpoint"], elsewhere.to_str().unwrap(), "{ps}");
    h.kill().unwrap();
    h.wait().unwrap();
}

/// `umount` (and `rm --force`) of a container whose mount has ended meanwhile (another
/// `umount`, a signal) waits for that daemon to exit, and succeeds; the daemon is told
/// by its process, not by the lock, which the next holder (here a child it handed the
/// lock to; elsewhere a new mount) may hold at once.
#[test]
fn umount_waits_for_the_daemon_it_unmounted_not_for_the_lock() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    made(&lab, "c");
    // Mounted, it says, at a directory where nothing is mounted any more.
    let gone = lab.dir("gone");
    let answer = format!("mounted \"{}\"", gone.display());
    let mut h = hold(s, "c", &answer, 0.5, 60.0);
    let (out, took) = timed(s, &["umount", "c"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        took < Duration::from_secs(20),
        "waited for the lock: {took:?}"
    );
    h.wait().unwrap();
    // The lock's next holder is no daemon: umount now waits for it, then "not mounted".
    // Let it go (the whole process group of the stand-in: its child keeps the lock).
    let pids = Command::new("pgrep")
        .arg("-f")
        .arg(s.root.join("containers/c").to_str().unwrap())
        .output()
        .unwrap();
    for pid in text(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill").arg("-9").arg(pid).status();
    }

    // rm --force: the same, then the container goes.
    let mut h = hold(s, "c", &answer, 0.5, 1.0);
    let (out, took) = timed(s, &["rm", "--force", "c"]);
    h.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(!s.root.join("containers/c").exists());
}

/// `umount C` whose daemon said it served DIR, where another command has unmounted it
/// and mounted something else since: C is unmounted already (its daemon stops serving
/// and exits), and the other mount is left alone. A daemon that goes on saying it serves
/// DIR under another mount is refused.
#[test]
fn umount_leaves_alone_what_was_mounted_where_the_container_was() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    made(&lab, "c");
    let ro = lab.mount(&["--read-only", "busybox"], "ro");
    let answer = format!("mounted \"{}\"", ro.display());

    let mut h = hold(s, "c", &answer, 0.5, 0.0);
    let out = s.run(&["umount", "c"]);
    h.wait().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(is_mounted(&ro), "the read-only mount was unmounted");

    let mut h = hold(s, "c", &answer, 8.0, 0.0);
    let err = s.fail(&["umount", "c"]);
    h.kill().unwrap();
    h.wait().unwrap();
    assert!(err.contains("not container c's mount"), "{err}");
    assert!(is_mounted(&ro));
    lab.umount(&ro);
}

/// Two `mount IMAGE DIR --name C` of a C that does not exist yet: serially, the second
/// mounts the container the first made (and finds it mounted): never "already exists".
#[test]
fn racing_mounts_of_a_new_container_name_never_say_it_exists() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let (a, b) = (lab.dir("a"), lab.dir("b"));
    for round in 0..20 {
        let name = format!("n{round}");
        let start = |d: &Path| {
            s.cmd()
                .args(["mount", "busybox", d.to_str().unwrap(), "--name", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (start(&a), start(&b));
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        let ok = [&oa, &ob].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            ok,
            1,
            "round {round}: {} / {}",
            text(&oa.stderr),
            text(&ob.stderr)
        );
        for o in [&oa, &ob] {
            let err = text(&o.stderr);
            assert!(
                o.status.success() || err.contains(&format!("container {name} is already mounted")),
                "round {round}: {err}"
            );
        }
        s.ok(&["rm", "--force", &name]);
        assert!(!is_mounted(&a) && !is_mounted(&b), "round {round}");
    }
}
