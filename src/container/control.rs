//! Holding a container still, for a consistent snapshot (`commit`).
//!
//! Not mounted, a container is held by taking its lock shared (see `container/dir.rs`
//! for who holds the container lock, how and when): no mount and no `rm` starts until it
//! is let go. Mounted, its daemon does the holding: it listens on
//! `containers/<name>/control.sock` (a Unix socket, 0600, inside the store's private
//! `containers/` directory; the daemon also checks each client's credentials and answers
//! only its own user and root). Each client sends one line; the daemon answers a line at
//! a time:
//!
//! - `freeze`: `frozen` once no other client holds the mount's [`WriteGate`] closed and
//!   every request that changes the mount and is already running has finished; from then
//!   on such requests (writes, creates, renames, chmod…: everything that reaches the
//!   upper layer) wait at the gate until the client writes `thaw` or goes away — closes
//!   the socket, or dies: a killed `commit` never leaves a container frozen — and the
//!   daemon answers `thawed`. One client holds the gate at a time: another one is told
//!   `waiting` and gets the gate when it opens, or `busy: …` after
//!   [`BUSY_WAIT`](crate::store::container::BUSY_WAIT).
//! - `idle`: `idle` once no client holds the gate (`waiting` first if one does, `busy: …`
//!   after `BUSY_WAIT`): what `umount` asks before it unmounts.
//! - Either gets `closed` from a daemon whose mount has ended: it is letting go of the
//!   container, whose lock the client takes instead.
//! - `state`: what the daemon does with its mount, at once: `starting` (not mounted yet),
//!   `mounted "DIR"` (mounted at DIR, a JSON string, and recorded so in the container's
//!   record), or `ended` (its mount is gone; it lets go of the container once no commit
//!   holds it). This is how `umount`, `rm`, `mount`, `ps` and `df` tell a container
//!   really mounted from one whose lock a daemon holds while it starts or ends (see
//!   `crate::container::holder`).
//!
//! Clients are served at once, each on a thread of its own (at most [`MAX_CLIENTS`]); one
//! that says nothing for [`CLIENT_IDLE`] is sent away, so a silent client blocks nobody.
//!
//! This is `docker commit`'s pause, applied to the filesystem rather than the processes:
//! processes that only read go on while FUSE worker threads are free (writers waiting at
//! the gate take threads too). Data a process wrote into a shared writable mapping and
//! the kernel has not sent yet is not in the snapshot.
//!
//! The daemon keeps its container lock while the gate is held: when its mount ends, by
//! `umount DIR` or `fusermount3 -u` too, it closes the gate for good — after the commit
//! that holds it, if one does — and only then lets go ([`WriteGate::close`]). A commit
//! checks at the end that its daemon held the gate all along ([`Hold::release`]): one
//! killed meanwhile let writes and other mounts in, and that commit fails.
//!
//! The socket is reached through `/proc/self/fd/N/control.sock` (N an fd of the container
//! directory), so a store path longer than a socket address allows works too.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use nix::sys::stat::Mode;

use super::{BUSY_WAIT, Container};
use crate::error::{Error, Result};
use crate::store::LockGuard;

/// The socket's name in the container directory.
pub const SOCKET: &str = "control.sock";

/// How long a client waits for a daemon that is still starting (its lock taken, its
/// socket not yet there).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long a client may take to say what it wants.
pub const CLIENT_IDLE: Duration = Duration::from_secs(5);

/// Clients served at once; more are sent away with `busy: …`.
pub const MAX_CLIENTS: usize = 16;

/// How long a client waits for any answer: the daemon's own wait, and some.
const ANSWER_WAIT: Duration = Duration::from_secs(BUSY_WAIT.as_secs() + 10);

/// Longest command line read from a client.
const MAX_LINE: u64 = 64;

/// What every request that changes a mount passes; `freeze` closes it.
#[derive(Debug, Default)]
pub struct WriteGate {
    /// Requests that change the mount hold it shared; the client that froze the gate,
    /// exclusive.
    lock: RwLock<()>,
    state: Mutex<GateState>,
    /// Signalled when `state` changes.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// A client holds the gate closed (or is waiting for running requests to finish).
    frozen: bool,
    /// The mount has ended: no client gets the gate any more.
    closed: bool,
    /// What the daemon does with its mount (answered to `state`).
    phase: Phase,
}

/// What a daemon does with its mount: the answer to `state` (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not mounted yet.
    #[default]
    Starting,
    /// Mounted there, and recorded so in the container's record.
    Serving(PathBuf),
    /// The mount has ended: the daemon lets go of the container (once no commit holds it).
    Ended,
}

impl Phase {
    /// The answer line (without its newline).
    fn line(&self) -> String {
        match self {
            Phase::Starting => "starting".into(),
            Phase::Serving(mp) => format!(
                "mounted {}",
                serde_json::Value::String(mp.to_string_lossy().into_owned())
            ),
            Phase::Ended => "ended".into(),
        }
    }

    /// Reads an answer line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Phase> {
        match line {
            "starting" => Some(Phase::Starting),
            "ended" => Some(Phase::Ended),
            l => {
                let mp: String = serde_json::from_str(l.strip_prefix("mounted ")?).ok()?;
                Some(Phase::Serving(mp.into()))
            }
        }
    }
}

/// Why a client does not get the gate.
#[derive(Debug)]
enum Refused {
    /// Another client held it for longer than we wait.
    Busy,
    /// The mount has ended.
    Closed,
}

/// The gate held closed by one client; open again when dropped.
struct Frozen<'a> {
    gate: &'a WriteGate,
    held: Option<RwLockWriteGuard<'a, ()>>,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.held.take();
        self.gate.state().frozen = false;
        self.gate.changed.notify_all();
    }
}

impl WriteGate {
    /// Waits while frozen; holds the gate open for the caller's request.
    pub fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_frozen(&self) -> bool {
        self.state().frozen
    }

    /// The mount is live at `mp`, and the container's record says so.
    pub fn set_serving(&self, mp: &Path) {
        self.state().phase = Phase::Serving(mp.to_path_buf());
    }

    /// The mount has ended (the daemon lets go of the container after [`WriteGate::close`]).
    pub fn set_ended(&self) {
        self.state().phase = Phase::Ended;
    }

    fn phase(&self) -> Phase {
        self.state().phase.clone()
    }

    /// Waits up to `wait` while another client holds the gate.
    fn wait_open(&self, wait: Duration) -> std::result::Result<MutexGuard<'_, GateState>, Refused> {
        let end = Instant::now() + wait;
        let mut st = self.state();
        loop {
            if st.closed {
                return Err(Refused::Closed);
            }
            if !st.frozen {
                return Ok(st);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Refused::Busy);
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Closes the gate for one client, once no other one holds it (waiting up to
    /// `wait`) and the requests running have finished.
    fn freeze(&self, wait: Duration) -> std::result::Result<Frozen<'_>, Refused> {
        self.wait_open(wait)?.frozen = true;
        let held = self.lock.write().unwrap_or_else(|p| p.into_inner());
        Ok(Frozen {
            gate: self,
            held: Some(held),
        })
    }

    /// Closes the gate to clients for good, once none holds it (waiting as long as one
    /// does: its commit is reading the layer). The daemon calls this when its mount has
    /// ended, before it lets go of its container.
    pub fn close(&self) {
        let mut st = self.state();
        if st.frozen {
            log::info!("control: waiting for the commit that holds writes before letting go");
        }
        while st.frozen {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.closed = true;
        self.changed.notify_all();
    }
}

/// The socket's path through `fd`, an fd of the container directory.
pub(crate) fn socket_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd()))
}

/// Serves the control socket of the container in `dir` on threads of its own, for as
/// long as the process lives.
pub fn serve(fd: OwnedFd, gate: Arc<WriteGate>) -> io::Result<()> {
    let path = socket_path(&fd);
    // Left by a daemon that died: nobody listens there any more (we hold the lock).
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
    let clients = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("layerfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => admit(s, &gate, &clients),
                    Err(e) => log::warn!("control socket: {e}"),
                }
            }
        })?;
    Ok(())
}

/// One seat among [`MAX_CLIENTS`]; given back when dropped.
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves client `s` on a thread of its own, if a seat is free.
fn admit(mut s: UnixStream, gate: &Arc<WriteGate>, clients: &Arc<AtomicUsize>) {
    let seat = Seat(clients.clone());
    if clients.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
        let _ = writeln!(s, "busy: {MAX_CLIENTS} control clients are served already");
        return;
    }
    let gate = gate.clone();
    let spawned = std::thread::Builder::new()
        .name("layerfs-control-client".into())
        .spawn(move || {
            let _seat = seat;
            if let Err(e) = client(s, &gate) {
                log::warn!("control socket: {e}");
            }
        });
    if let Err(e) = spawned {
        log::warn!("control socket: no thread for a client: {e}");
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    r.take(MAX_LINE).read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Why the peer of `s` may not talk to us, if it may not: only our own user and root.
fn refused_peer(s: &UnixStream) -> io::Result<Option<String>> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let peer = getsockopt(s, PeerCredentials)?.uid();
    let me = nix::unistd::geteuid().as_raw();
    Ok((peer != me && peer != 0).then(|| {
        format!(
            "uid {peer} may not control this mount (only uid {me}, the store's owner, and root)"
        )
    }))
}

fn busy_line(wait: Duration) -> String {
    format!(
        "busy: a commit of it has held its writes for over {} s",
        wait.as_secs()
    )
}

/// One client: one command (see the module docs).
fn client(s: UnixStream, gate: &WriteGate) -> io::Result<()> {
    let mut w = s.try_clone()?;
    if let Some(why) = refused_peer(&s)? {
        log::warn!("control socket: {why}");
        let _ = writeln!(w, "error: {why}");
        return Ok(());
    }
    s.set_read_timeout(Some(CLIENT_IDLE))?;
    let mut r = BufReader::new(s);
    let command = match read_line(&mut r) {
        Ok(c) => c,
        Err(e) if is_timeout(&e) => {
            let _ = writeln!(w, "error: nothing asked within {} s", CLIENT_IDLE.as_secs());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match command.as_str() {
        "freeze" => hold_frozen(gate, &mut r, &mut w),
        "idle" => {
            if gate.is_frozen() {
                writeln!(w, "waiting")?;
            }
            match gate.wait_open(BUSY_WAIT) {
                Ok(_) => writeln!(w, "idle"),
                Err(Refused::Closed) => writeln!(w, "closed"),
                Err(Refused::Busy) => writeln!(w, "{}", busy_line(BUSY_WAIT)),
            }
        }
        "state" => writeln!(w, "{}", gate.phase().line()),
        "" => Ok(()),
        other => {
            let _ = writeln!(w, "error: unknown command {other:?}");
            Ok(())
        }
    }
}

/// `freeze`: holds the gate closed until `thaw` or the end of the connection.
fn hold_frozen(
    gate: &WriteGate,
    r: &mut BufReader<UnixStream>,
    w: &mut UnixStream,
) -> io::Result<()> {
    if gate.is_frozen() {
        writeln!(w, "waiting")?;
    }
    let frozen = match gate.freeze(BUSY_WAIT) {
        Ok(f) => f,
        Err(Refused::Closed) => return writeln!(w, "closed"),
        Err(Refused::Busy) => return writeln!(w, "{}", busy_line(BUSY_WAIT)),
    };
    log::info!("control: writes held for a snapshot");
    writeln!(w, "frozen")?;
    // For as long as the commit takes; whatever comes next — thaw, end of file, an
    // error — lets go.
    r.get_ref().set_read_timeout(None)?;
    let _ = read_line(r);
    drop(frozen);
    log::info!("control: writes go on");
    let _ = writeln!(w, "thawed");
    Ok(())
}

/// A container held still (see [`hold_still`]); let go by [`Hold::release`], or when
/// dropped (on the way out of a failure).
#[derive(Debug)]
pub struct Hold {
    name: String,
    how: How,
}

#[derive(Debug)]
enum How {
    /// Not mounted: its lock, shared, so no mount or `rm` starts.
    Locked {
        _lock: LockGuard,
    },
    /// Mounted: its daemon holds writes until we write `thaw` or go away.
    Frozen(BufReader<UnixStream>),
    Released,
}

/// How long the daemon may take to say `thawed`.
const THAW_WAIT: Duration = Duration::from_secs(30);

/// Lets the daemon's gate open, and checks that the daemon held it until now.
fn thaw(r: &mut BufReader<UnixStream>) -> io::Result<()> {
    let s = r.get_mut();
    s.write_all(b"thaw\n")?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    s.set_read_timeout(Some(THAW_WAIT))?;
    match read_line(r)?.as_str() {
        "thawed" => Ok(()),
        "" => Err(io::Error::other("the daemon is gone")),
        other => Err(io::Error::other(format!(
            "the daemon answered {other:?} instead of \"thawed\""
        ))),
    }
}

impl Hold {
    /// Lets the container go. Fails when its daemon did not hold its writes until now (it
    /// was killed: writes, even another mount, may have changed the layer meanwhile, so
    /// what was read is no snapshot).
    pub fn release(mut self) -> Result<()> {
        match std::mem::replace(&mut self.how, How::Released) {
            How::Frozen(mut r) => thaw(&mut r).map_err(|e| {
                Error::io_what(
                    format!(
                        "container {}: its mount daemon stopped holding its writes before \
                         the commit had read them all (was it killed?); nothing was \
                         committed: commit it again",
                        self.name
                    ),
                    e,
                )
            }),
            How::Locked { .. } | How::Released => Ok(()),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let How::Frozen(r) = &mut self.how {
            let _ = thaw(r);
        }
    }
}

/// What one attempt to freeze a mounted container's daemon gave.
enum Attempt {
    Frozen(BufReader<UnixStream>),
    /// No daemon listens (yet: a mount is starting; or any more): try again.
    Absent,
    /// The daemon's mount has ended and it is letting go of the container (once another
    /// commit is done, if one holds it): try again, then take the lock.
    Closing,
}

fn connect(c: &Container) -> io::Result<UnixStream> {
    let fd = c.open_dir().map_err(io::Error::other)?;
    let s = UnixStream::connect(socket_path(&fd))?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    Ok(s)
}

/// Nobody listens on the socket (or the daemon went away while we talked to it).
pub(crate) fn no_daemon(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::EPIPE) | Some(libc::ECONNRESET)
    )
}

/// Asks the daemon of `c` to hold its writes.
fn freeze(c: &Container) -> Result<Attempt> {
    let name = &c.record.name;
    let failed = |e: io::Error| {
        Error::io_what(
            format!("container {name}: asking its mount daemon to hold its writes"),
            e,
        )
    };
    let mut s = match connect(c) {
        Ok(s) => s,
        Err(e) if no_daemon(&e) => return Ok(Attempt::Absent),
        Err(e) => return Err(failed(e)),
    };
    match s.write_all(b"freeze\n") {
        Ok(()) => {}
        // A daemon that refuses us answers before it reads, and hangs up: read on.
        Err(e) if no_daemon(&e) => {}
        Err(e) => return Err(failed(e)),
    }
    let mut r = BufReader::new(s);
    loop {
        let line = match read_line(&mut r) {
            Ok(l) => l,
            Err(e) if is_timeout(&e) => {
                return Err(Error::ContainerBusy {
                    name: name.clone(),
                    detail: format!(
                        "its mount daemon did not hold its writes within {} s",
                        ANSWER_WAIT.as_secs()
                    ),
                });
            }
            Err(e) if no_daemon(&e) => return Ok(Attempt::Absent),
            Err(e) => return Err(failed(e)),
        };
        match line.as_str() {
            "frozen" => return Ok(Attempt::Frozen(r)),
            "waiting" => {
                eprintln!("layerfs: waiting for another commit of container {name} to finish")
            }
            "closed" => return Ok(Attempt::Closing),
            // Gone meanwhile.
            "" => return Ok(Attempt::Absent),
            l => {
                return Err(match l.strip_prefix("busy: ") {
                    Some(why) => Error::ContainerBusy {
                        name: name.clone(),
                        detail: format!("{why}; commit it once that is done"),
                    },
                    None => Error::SnapshotRefused {
                        name: name.clone(),
                        detail: l.to_string(),
                    },
                });
            }
        }
    }
}

/// Holds container `c` still: its lock (shared) when it is not mounted, its daemon's write
/// gate when it is.
pub fn hold_still(c: &Container) -> Result<Hold> {
    let start = Instant::now();
    let hold = |how| Hold {
        name: c.record.name.clone(),
        how,
    };
    let busy = |detail: String| Error::ContainerBusy {
        name: c.record.name.clone(),
        detail,
    };
    loop {
        if let Some(g) = c.lock_shared()? {
            return Ok(hold(How::Locked { _lock: g }));
        }
        let attempt = freeze(c)?;
        let limit = match attempt {
            Attempt::Frozen(r) => return Ok(hold(How::Frozen(r))),
            Attempt::Absent => CONNECT_WAIT,
            Attempt::Closing => BUSY_WAIT,
        };
        if start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let secs = limit.as_secs();
        return Err(busy(match attempt {
            Attempt::Closing => format!(
                "its mount has ended, and for {secs} s its daemon has not let go of it \
                 (another commit of it is still reading it); commit it once that is done"
            ),
            _ => format!(
                "it is mounted, or being mounted or removed, and no mount daemon of it \
                 answered on {SOCKET} for {secs} s (a daemon of an older layerfs? unmount \
                 it, then commit)"
            ),
        }));
    }
}

/// Waits until no commit holds mounted container `c` (its daemon's write gate), up to
/// `BUSY_WAIT`, saying so when it waits: what `umount` does before it unmounts. A daemon
/// that cannot be asked (gone, starting, of an older layerfs) is not waited for: the
/// daemon itself keeps the container until a commit is done.
pub fn wait_idle(c: &Container) -> Result<()> {
    let name = &c.record.name;
    let Ok(mut s) = connect(c) else {
        return Ok(());
    };
    if s.write_all(b"idle\n").is_err() {
        return Ok(());
    }
    let mut r = BufReader::new(s);
    loop {
        let line = match read_line(&mut r) {
            Ok(l) => l,
            Err(e) if is_timeout(&e) => {
                return Err(Error::ContainerBusy {
                    name: name.clone(),
                    detail: format!(
                        "its mount daemon did not answer within {} s",
                        ANSWER_WAIT.as_secs()
                    ),
                });
            }
            Err(_) => return Ok(()),
        };
        match line.as_str() {
            "waiting" => eprintln!("layerfs: waiting for the commit of container {name} to finish"),
            l => {
                return match l.strip_prefix("busy: ") {
                    Some(why) => Err(Error::ContainerBusy {
                        name: name.clone(),
                        detail: format!("{why}; unmount it once the commit is done"),
                    }),
                    None => Ok(()),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_answers_read_back() {
        for p in [
            Phase::Starting,
            Phase::Ended,
            Phase::Serving("/mnt/a dir/with \"quotes\"\nand a newline".into()),
        ] {
            let line = p.line();
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(Phase::parse(&line), Some(p));
        }
        assert_eq!(Phase::parse("mounted /not/json"), None);
        assert_eq!(Phase::parse("error: unknown command \"state\""), None);
    }

    #[test]
    fn one_freeze_at_a_time_and_none_after_close() {
        let gate = Arc::new(WriteGate::default());
        let first = gate.freeze(Duration::ZERO).ok();
        assert!(first.is_some());
        assert!(gate.is_frozen());
        // A second client waits, bounded, then is told the gate is busy.
        assert!(matches!(
            gate.freeze(Duration::from_millis(20)),
            Err(Refused::Busy)
        ));
        // close() waits for the holder: the daemon keeps the container meanwhile.
        let closer = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.close())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!closer.is_finished(), "close() did not wait for the freeze");
        drop(first);
        closer.join().unwrap();
        assert!(matches!(gate.freeze(Duration::ZERO), Err(Refused::Closed)));
        // Writes pass once the freeze is over.
        drop(gate.enter());
    }
}
