//! Holding a container still, for a consistent snapshot (`commit`).
//!
//! Not mounted, a container is held by taking its mount lock: no mount can start until
//! it is let go. Mounted, its daemon does the holding: it listens on
//! `containers/<name>/control.sock` (a Unix socket inside the store's private `containers/`
//! directory, so only the store's owner reaches it). A client that writes `freeze\n` gets
//! `frozen\n` once every request that changes the mount and is already running has
//! finished; from then on such requests (writes, creates, renames, chmod…: everything
//! that reaches the upper layer) wait at the daemon's [`WriteGate`] until the client
//! writes `thaw\n` or goes away — closes the socket, or dies: a killed `commit` never
//! leaves a container frozen. This is `docker commit`'s pause, applied to the filesystem
//! rather than the processes: processes that only read go on while FUSE worker threads
//! are free (writers waiting at the gate take threads too). Data a process wrote into a
//! shared writable mapping and the kernel has not sent yet is not in the snapshot.
//!
//! The socket is reached through `/proc/self/fd/N/control.sock` (N an fd of the container
//! directory), so a store path longer than a socket address allows works too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::store::{LockGuard, Store, containers::Container};

/// The socket's name in the container directory.
pub const SOCKET: &str = "control.sock";

/// How long a client waits for a daemon that is still starting (its lock taken, its
/// socket not yet there).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Longest command line read from a client.
const MAX_LINE: u64 = 64;

/// What every request that changes a mount passes; `freeze` closes it.
#[derive(Debug, Default)]
pub struct WriteGate {
    lock: RwLock<()>,
}

impl WriteGate {
    /// Waits while frozen; holds the gate open for the caller's request.
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }
}

fn dir_fd(dir: &Path) -> io::Result<OwnedFd> {
    Ok(open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn socket_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd()))
}

/// Serves the control socket of the container in `dir` on a thread of its own, for as
/// long as the process lives.
pub fn serve(dir: &Path, gate: Arc<WriteGate>) -> io::Result<()> {
    let fd = dir_fd(dir)?;
    let path = socket_path(&fd);
    // Left by a daemon that died: nobody listens there any more (we hold the mount lock).
    match nix::unistd::unlinkat(&fd, SOCKET, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(&path)?;
    nix::sys::stat::fchmodat(
        &fd,
        SOCKET,
        Mode::from_bits_truncate(0o600),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )?;
    std::thread::Builder::new()
        .name("layerfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = client(s, &gate) {
                            log::warn!("control socket: {e}");
                        }
                    }
                    Err(e) => log::warn!("control socket: {e}"),
                }
            }
        })?;
    Ok(())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.take(MAX_LINE).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// One client: `freeze`, then hold until `thaw` or the end of the connection.
fn client(s: UnixStream, gate: &WriteGate) -> io::Result<()> {
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    match read_line(&mut r)?.as_str() {
        "freeze" => {}
        "" => return Ok(()),
        other => {
            let _ = writeln!(w, "error: unknown command {other:?}");
            return Ok(());
        }
    }
    let held = gate.lock.write().unwrap_or_else(|p| p.into_inner());
    log::info!("control: writes held for a snapshot");
    writeln!(w, "frozen")?;
    // Whatever comes next — thaw, end of file, an error — lets go.
    let _ = read_line(&mut r);
    drop(held);
    log::info!("control: writes go on");
    let _ = writeln!(w, "thawed");
    Ok(())
}

/// A container held still; let go when dropped.
#[derive(Debug)]
pub enum Hold {
    /// Not mounted: its mount lock, so no mount starts.
    Locked(LockGuard),
    /// Mounted: its daemon holds writes until we write `thaw` or go away.
    Frozen(UnixStream),
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Hold::Frozen(s) = self {
            let _ = s.write_all(b"thaw\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Wait until the daemon has let go, so what follows sees writes flow again.
            let mut buf = [0u8; 16];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
        }
    }
}

fn freeze(dir: &Path) -> io::Result<UnixStream> {
    let fd = dir_fd(dir)?;
    let mut s = UnixStream::connect(socket_path(&fd))?;
    s.write_all(b"freeze\n")?;
    let mut r = BufReader::new(s.try_clone()?);
    match read_line(&mut r)?.as_str() {
        "frozen" => Ok(s),
        other => Err(io::Error::other(format!(
            "the daemon answered {other:?} instead of freezing"
        ))),
    }
}

/// Holds container `c` still: its lock when it is not mounted, its daemon's write gate
/// when it is.
pub fn hold_still(_store: &Store, c: &Container) -> Result<Hold> {
    let end = Instant::now() + CONNECT_WAIT;
    loop {
        if let Some(g) = c.lock_shared()? {
            return Ok(Hold::Locked(g));
        }
        match freeze(&c.dir) {
            Ok(s) => return Ok(Hold::Frozen(s)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED)
                ) && Instant::now() < end =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(Error::io_what(
                    format!(
                        "container {} is mounted and its daemon does not hold writes for a \
                         snapshot (a daemon of an older layerfs?): unmount it, then commit",
                        c.record.name
                    ),
                    e,
                ));
            }
        }
    }
}
