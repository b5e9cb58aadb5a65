//! What a test needs of its host (root, FUSE, subordinate ids) and running commands as
//! root or as another user.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

/// Fails the test (never skips it) when not root; `what` says why root is needed.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root ({what}); run the tests as root (CI does)"
    );
}

/// Fails the test unless this process may mount FUSE filesystems: root and /dev/fuse. A
/// mount test that is skipped is a test that cannot fail.
pub fn require_fuse() {
    require_root("it mounts FUSE");
    assert!(
        Path::new("/dev/fuse").exists(),
        "this test mounts FUSE and needs /dev/fuse"
    );
}

/// Lets unprivileged users mount FUSE: /dev/fuse is 0600 on these machines, 0666 where
/// the fuse3 package set it up (the usual mode).
pub fn fuse_for_users() {
    require_fuse();
    run_ok(Command::new("chmod").args(["666", "/dev/fuse"]));
}

/// Gives `user` a subordinate id range of 200000 ids from 1000000 (in /etc/subuid and
/// /etc/subgid, once), so that `unshare --map-auto` maps every id of the fixtures (the
/// busybox image has a uid 100000 file).
pub fn subids_for(user: &str) {
    require_root("it writes /etc/subuid and /etc/subgid");
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    for f in ["/etc/subuid", "/etc/subgid"] {
        let have = fs::read_to_string(f).unwrap_or_default();
        if !have.lines().any(|l| l.starts_with(&format!("{user}:"))) {
            let mut w = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(f)
                .unwrap();
            w.write_all(format!("{user}:1000000:200000\n").as_bytes())
                .unwrap();
        }
    }
}

/// The unprivileged user tests act as (nobody).
pub const NOBODY: u32 = 65534;

/// `program` to run as `uid`: as this process for 0 (root: the tests run as root), else
/// through setpriv (util-linux) with that uid and gid and no supplementary groups.
pub fn command_as(uid: u32, program: impl AsRef<OsStr>) -> Command {
    if uid == 0 {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(program);
    c
}

/// Runs a command and asserts success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? .ci/run installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sh -c script` as `uid` (see [`command_as`]); its output, success not checked.
pub fn sh_as(uid: u32, script: &str) -> Output {
    command_as(uid, "sh")
        .args(["-c", script])
        .output()
        .expect("sh (as another user: setpriv, util-linux)")
}

/// Runs `sh -c script` as this process; its output, success not checked.
pub fn sh(script: &str) -> Output {
    sh_as(0, script)
}

/// Runs `sh -c script` as `uid`, failing the test unless it succeeds; returns stdout.
pub fn sh_ok_as(uid: u32, script: &str) -> String {
    run_ok(command_as(uid, "sh").args(["-c", script]))
}

/// Runs `sh -ec script` in `dir` (a mount, say), failing the test unless it succeeds.
pub fn sh_in(dir: &Path, script: &str) {
    run_ok(Command::new("sh").arg("-ec").arg(script).current_dir(dir));
}

/// Runs `python3 -c script args…` as `uid` (see [`command_as`]); returns its stdout and
/// fails the test if it fails.
pub fn python_as(uid: u32, script: &str, args: &[&dyn AsRef<OsStr>]) -> String {
    run_ok(
        command_as(uid, "/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .args(args.iter().map(|a| a.as_ref())),
    )
}
