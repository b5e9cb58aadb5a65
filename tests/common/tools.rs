//! Other tools as oracles: a private Docker engine, skopeo, umoci (the shared tree
//! manifest script is [`super::manifest`]). Each fails the test loudly when the tool is
//! missing (`.ci/run` installs them all): a test that skips is a test that cannot fail.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::run_ok;
use std::time::{Duration, Instant};

/// umoci drops xattrs with an empty value; layerfs, tar and overlayfs keep them. Drops
/// `user.layerfs.empty` from a manifest for comparisons with umoci's trees.
pub fn without_empty_xattr(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            l.replace("user.layerfs.empty=,", "")
                .replace(",user.layerfs.empty=", "")
                .replace("\tuser.layerfs.empty=", "\t-")
        })
        .collect()
}

/// A Docker engine of our own (its own socket, data root and containerd namespace), so
/// that it neither needs nor disturbs a system one; stopped and removed on drop.
pub struct Docker {
    dir: tempfile::TempDir,
    child: Child,
    pub host: String,
}

impl Docker {
    /// Starts dockerd and waits until it answers. Fails the test when dockerd is not
    /// installed or does not start (`apt-get install docker.io`, as `.ci/run` does).
    pub fn start() -> Docker {
        let dir = tempfile::Builder::new()
            .prefix("lfs-dkr-")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = dir.path().join("sock");
        let host = format!("unix://{}", sock.display());
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let ns = format!("layerfs-test-{}", std::process::id());
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .args(["-H", &host])
            .args(["--iptables=false", "--bridge=none"])
            .args(["--containerd-namespace", &ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-p")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start dockerd: {e}: this test needs Docker Engine \
                     (apt-get install docker.io; .ci/run installs it)"
                )
            });
        let mut d = Docker { dir, child, host };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.cmd()
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "dockerd exited ({st}):\n{}",
                    fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `docker -H <ours>`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.host]);
        c
    }

    /// Runs `docker ARGS` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever dockerd left mounted under its roots goes before the files do.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let root = self.dir.path().display().to_string();
        let mut mps: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mps {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
