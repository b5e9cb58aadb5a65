//! Running the mount daemon: in the foreground, or detached, with the launching command
//! returning only once the mount is live (or with the daemon's error).
//!
//! Detaching is done by re-executing ourselves with `--foreground`-style arguments and an
//! inherited pipe (`LAYERFS_READY_FD`): the daemon writes `ok` once the FUSE session is
//! mounted and initialized, or the error that stopped it. No fork in a threaded process.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SigSet, Signal};

use crate::fuse::{FuseFs, MountConfig};
use crate::union::{Options, Stack, Union};

const READY_ENV: &str = "LAYERFS_READY_FD";

/// Names the container lock a detached daemon inherits from `layerfs mount` (see
/// `container/dir.rs`).
const LOCK_ENV: &str = "LAYERFS_LOCK_FD";

/// The container lock handed over by the `layerfs mount` that started this daemon, if
/// any: the open lock file, whose lock this process now holds too.
pub fn inherited_lock() -> Option<File> {
    let file = File::from(crate::sys::inherited_fd(LOCK_ENV)?);
    // Not for the daemon's own children (fusermount3): they must not keep it locked.
    let _ = fcntl(&file, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Some(file)
}

/// The daemon's side of the readiness pipe (absent in plain foreground runs).
#[derive(Debug)]
pub struct Ready(Option<File>);

impl Ready {
    /// Takes the pipe named by `LAYERFS_READY_FD`, if this process was started detached.
    pub fn from_env() -> Ready {
        let file = crate::sys::inherited_fd(READY_ENV).map(File::from);
        if let Some(f) = &file {
            // Not for the daemon's own children.
            let _ = fcntl(f, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        Ready(file)
    }

    pub fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"ok\n");
        }
    }

    pub fn fail(&mut self, err: &anyhow::Error) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("{err:#}\n").as_bytes());
        }
    }

    pub fn detached(&self) -> bool {
        self.0.is_some()
    }
}

/// Starts `args` (our own executable's arguments) as a detached daemon and waits until
/// it reports the mount live. `log` (a file opened for appending) receives the daemon's
/// stderr; `lock`, a container lock this process holds, is held by the daemon too (see
/// [`inherited_lock`]).
pub fn spawn_detached(
    args: &[OsString],
    log: Option<File>,
    lock: Option<&File>,
) -> anyhow::Result<()> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating the readiness pipe")?;
    // The write end must survive exec in the child.
    fcntl(&w, FcntlArg::F_SETFD(FdFlag::empty())).context("readiness pipe")?;
    // A duplicate shares the open file, and with it the lock; dup() leaves it inheritable.
    let lock = match lock {
        Some(f) => Some(nix::unistd::dup(f).context("handing the container lock over")?),
        None => None,
    };
    let exe = std::env::current_exe().context("finding our own executable")?;
    let stderr = match log {
        Some(f) => Stdio::from(f),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(exe);
    match &lock {
        Some(l) => cmd.env(LOCK_ENV, l.as_raw_fd().to_string()),
        None => cmd.env_remove(LOCK_ENV),
    };
    let mut child = cmd
        .args(args)
        .env(READY_ENV, w.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting the mount daemon")?;
    drop(w);
    drop(lock);
    let mut msg = String::new();
    let mut rf = File::from(r);
    let _ = rf.read_to_string(&mut msg);
    let msg = msg.trim();
    if msg == "ok" {
        return Ok(());
    }
    let status = child.wait().ok();
    if !msg.is_empty() {
        bail!("{msg}");
    }
    match status {
        Some(s) => bail!("the mount daemon exited before mounting ({s})"),
        None => bail!("the mount daemon exited before mounting"),
    }
}

/// Everything a daemon needs to serve one mount.
#[derive(Debug)]
pub struct Serve {
    pub stack: Stack,
    pub options: Options,
    pub mountpoint: PathBuf,
    pub mount: MountConfig,
}

/// Mounts and serves until unmounted or told to stop (SIGTERM, SIGINT, SIGHUP).
/// `on_mounted` runs once the mount is live, before requests are served.
pub fn serve(s: Serve, ready: &mut Ready, on_mounted: impl FnOnce()) -> anyhow::Result<()> {
    serve_with_control(s, None, ready, on_mounted)
}

/// [`serve`], with the control socket of the container in `control` (its directory,
/// opened): `commit` asks there for writes to be held (see `crate::container::control`).
pub fn serve_with_control(
    s: Serve,
    control: Option<std::os::fd::OwnedFd>,
    ready: &mut Ready,
    on_mounted: impl FnOnce(),
) -> anyhow::Result<()> {
    if ready.detached() {
        let _ = nix::unistd::setsid();
    }
    // Our own umask must not bend the modes callers ask for.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let _ = crate::sys::raise_nofile_limit();
    // Block the stop signals before fuser starts its threads, so one thread waits for them.
    let mut stop = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(sig);
    }
    stop.thread_block().context("blocking signals")?;

    let union =
        Union::new(s.stack, s.options).map_err(|e| anyhow::anyhow!("setting up the union: {e}"))?;
    let union = Arc::new(union);
    let mp = s.mountpoint.clone();
    let gate = Arc::new(crate::container::control::WriteGate::default());
    // However serving ends, the caller lets go of the container only after this: once no
    // commit holds the gate (see `crate::container::control`).
    let _close = CloseGate(gate.clone());
    if let Some(dir) = control
        && let Err(e) = crate::container::control::serve(dir, gate.clone())
    {
        // The mount works without it; only a commit of it while mounted is refused.
        log::warn!("no control socket: {e}");
    }
    let session = FuseFs::with_gate(union, gate.clone())
        .mount(&s.mountpoint, &s.mount)
        .map_err(|e| {
            let hint = fuse_hint(&e);
            anyhow::Error::new(e)
                .context(format!("mounting on {} ({hint})", s.mountpoint.display()))
        })?;
    install_panic_unmount(mp.clone());
    let signal_mp = mp.clone();
    std::thread::Builder::new()
        .name("layerfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = stop.wait() {
                log::info!("{sig:?}: unmounting {}", signal_mp.display());
                unmount_path(&signal_mp);
            }
        })
        .context("starting the signal thread")?;
    on_mounted();
    // From now on `state` answers "mounted" (the record says where: `on_mounted`).
    gate.set_serving(&mp);
    ready.ok();
    // fuser 0.18 unmounts the mount point *path* when a session ends, even after the
    // kernel has unmounted it (its `is_mounted` check is inverted, fixed upstream in
    // cberner/fuser#703): after `umount DIR` and a quick new mount at DIR, our exit would
    // unmount the new mount. So the session's mount handle is never dropped: `spawn`
    // moves it into the `BackgroundSession`, which is leaked; we join its thread and do
    // every unmount ourselves (signals above, a failed session below).
    let bg: &'static mut fuser::BackgroundSession =
        Box::leak(Box::new(session.spawn().context("starting the session")?));
    let guard = std::mem::replace(&mut bg.guard, std::thread::spawn(|| Ok(())));
    let result = match guard.join() {
        Ok(r) => r.context("serving the mount"),
        Err(_) => Err(anyhow::anyhow!("the session thread panicked")),
    };
    // Not mounted any more, whatever the caller still does before it lets go.
    gate.set_ended();
    if result.is_err() {
        // The session died with the mount still there: do not leave it dead.
        let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
    }
    result
}

/// Closes the write gate for good when dropped (see [`crate::container::control::WriteGate::close`]).
struct CloseGate(Arc<crate::container::control::WriteGate>);

impl Drop for CloseGate {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What to do when FUSE cannot be used (`err` from opening `/dev/fuse` or mounting);
/// the error itself is not repeated.
pub fn fuse_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOENT) => {
            "/dev/fuse does not exist: FUSE is not available here. Load the fuse kernel \
             module (`modprobe fuse`; package fuse3); in a container, give it the device \
             (`docker run --device /dev/fuse --cap-add SYS_ADMIN …`)"
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            "mount as root, or give this user read-write access to /dev/fuse (the fuse3 \
             package makes it 0666) and install fusermount3 (package fuse3)"
        }
        Some(libc::ENXIO) | Some(libc::ENODEV) => {
            "/dev/fuse has no device behind it: load the fuse kernel module (`modprobe fuse`)"
        }
        _ => {
            "FUSE is not usable here: check /dev/fuse (it must be the FUSE character device \
             10,229, readable and writable by you) and the fuse kernel module"
        }
    }
}

/// Unmounts `mp` on request (a stop signal): plainly when possible, through fusermount3
/// without privilege, detached when busy.
fn unmount_path(mp: &Path) {
    match nix::mount::umount2(mp, nix::mount::MntFlags::empty()) {
        Ok(()) => {}
        Err(nix::errno::Errno::EPERM) => {
            let ok = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(mp)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                log::warn!("fusermount3 -u -z {} failed", mp.display());
            }
        }
        Err(e) => {
            log::warn!("unmount of {}: {e}; detaching it", mp.display());
            let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A panic must not leave a dead mount ("Transport endpoint is not connected") behind:
/// detach it and exit.
fn install_panic_unmount(mp: PathBuf) {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        prev(info);
        let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
        std::process::exit(101);
    }));
}
