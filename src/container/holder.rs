//! Who holds a container, and waiting for it: what `mount`, `rm`, `umount`, `ps` and `df`
//! make of a container's lock (`container/dir.rs`) and of its daemon's answer to
//! `state` (`crate::container::control`).
//!
//! A container lock held exclusive says only that *someone* holds the container: its
//! daemon serving the mount, but also a daemon still starting or letting go after its
//! mount ended, a `layerfs mount` setting it up, an `rm` removing it. Only the first is
//! "mounted"; the others are short, and in a serial order they come first: a command that
//! meets one waits (up to [`BUSY_WAIT`], saying so after a moment) and looks again, as it
//! waits for the commits that hold the lock shared. So:
//!
//! - **mounted** ([`Held::Mounted`]): the daemon answers `mounted "DIR"`. `mount` and `rm`
//!   refuse ("is mounted at DIR"); `umount` and `rm --force` unmount DIR and wait for
//!   *that* daemon to exit (its pidfd, taken from the socket: never a later daemon of the
//!   same container);
//! - **changing** ([`Held::Changing`]): held exclusive, and no daemon says it is mounted
//!   (it starts, or its mount has ended, or no daemon listens: a mount being set up, an
//!   `rm`): everybody waits;
//! - **read** ([`Held::Read`]): held shared by commits of the unmounted container:
//!   `mount` and `rm` wait; `umount` finds it not mounted;
//! - **free**.
//!
//! Nobody waits for a container while holding the store lock: a caller that must wait
//! lets go of it first (an `rmi` or `prune` would wait behind it).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::container::control::{self, Phase};
use crate::container::{BUSY_WAIT, Container};
use crate::error::{Error, Result};
use crate::store::LockGuard;

/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(20);

/// After this long a waiting command says on stderr what it waits for (shorter waits are
/// an instant's probe, not worth a line).
const SAY_WAITING_AFTER: Duration = Duration::from_millis(500);

/// How long a daemon may take to answer `state` (it answers at once, on a thread of its
/// own, whatever its mount is doing).
const STATE_WAIT: Duration = Duration::from_secs(10);

/// Longest answer read: `mounted "DIR"` with DIR up to PATH_MAX, JSON-escaped.
const MAX_ANSWER: u64 = 6 * 4096 + 64;

/// A live daemon of a container, as reached through its control socket.
#[derive(Debug)]
pub struct Daemon {
    /// A pidfd of that very process (`SO_PEERPIDFD`, else `pidfd_open` of its pid), when
    /// the kernel gives one.
    pidfd: Option<OwnedFd>,
}

impl Daemon {
    /// Waits up to `timeout` for this daemon to exit (by then it has let go of its
    /// container's lock: a process closes its files before it is reported gone). `None`
    /// when that cannot be told (no pidfd): the caller watches the lock instead.
    pub fn wait_exit(&self, timeout: Duration) -> Option<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let fd = self.pidfd.as_ref()?;
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as u32)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(0) if left.is_zero() => return Some(false),
                Ok(0) | Err(nix::errno::Errno::EINTR) => {}
                Ok(_) => return Some(true),
                Err(_) => return None,
            }
        }
    }
}

/// A container mounted by a live daemon.
#[derive(Debug)]
pub struct Mounted {
    /// Where (`None` from a daemon of an older layerfs, which does not say: its record
    /// does).
    pub mountpoint: Option<PathBuf>,
    pub daemon: Daemon,
}

/// Why a container is held by somebody else for a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Commits of the unmounted container read it (its lock held shared).
    Commit,
    /// Its daemon is starting: not mounted yet.
    Starting,
    /// Its mount has ended; its daemon lets go of it (after a commit, if one holds it).
    Ending,
    /// Held exclusive with no daemon answering: another `layerfs mount` sets it up, or
    /// an `rm` removes it.
    Changing,
}

impl Why {
    fn waiting(self, name: &str) -> String {
        match self {
            Why::Commit => format!("layerfs: waiting for the commit of container {name} to finish"),
            Why::Starting => {
                format!("layerfs: waiting for container {name}: its mount daemon is starting")
            }
            Why::Ending => format!(
                "layerfs: waiting for container {name}: its mount has ended and its daemon is \
                 letting go of it"
            ),
            Why::Changing => format!(
                "layerfs: waiting for container {name}: another layerfs command is mounting \
                 or removing it"
            ),
        }
    }

    fn busy(self, secs: u64) -> String {
        match self {
            Why::Commit => format!(
                "a commit of it has been reading it for over {secs} s; try again once it is done"
            ),
            Why::Starting => format!("its mount daemon has been starting for over {secs} s"),
            Why::Ending => format!(
                "its mount has ended, but for over {secs} s its daemon has not let go of it (a \
                 commit of it may still be reading it)"
            ),
            Why::Changing => format!(
                "another layerfs command has been mounting or removing it for over {secs} s"
            ),
        }
    }
}

/// What holds a container (see the module docs).
#[derive(Debug)]
pub enum Held {
    Free,
    Read,
    Mounted(Mounted),
    Changing(Why),
}

/// What an exclusive taker ([`try_take`]) got.
#[derive(Debug)]
pub enum Take {
    /// The container lock, exclusive.
    Got(LockGuard),
    /// A daemon serves the container.
    Mounted(Mounted),
    /// Somebody holds it for a moment: wait ([`Waiter`]) and try again.
    Wait(Why),
}

/// How often [`ask`] asks again a daemon that serves as many control clients as it may.
const BUSY_RETRIES: usize = 50;

/// The daemon of `c`, asked what it does; `None` when no daemon listens (none runs, one
/// is being set up, or one has just exited). [`Error::UnknownContainer`] when `c` is gone.
pub fn ask(c: &Container) -> Result<Option<(Phase, Daemon)>> {
    for _ in 0..BUSY_RETRIES {
        match ask_once(c)? {
            Answer::Busy => std::thread::sleep(POLL),
            Answer::Said(a) => return Ok(a),
        }
    }
    // A daemon that busy serves a mount: the one its record names.
    Ok(Some((
        Phase::Serving(PathBuf::new()),
        Daemon { pidfd: None },
    )))
}

/// One answer of a daemon to `state`.
enum Answer {
    Said(Option<(Phase, Daemon)>),
    /// It serves as many control clients as it may: ask again.
    Busy,
}

fn ask_once(c: &Container) -> Result<Answer> {
    let dir = c.open_dir()?;
    let failed = |e: io::Error| {
        Error::io_what(
            format!("container {}: asking its mount daemon", c.record.name),
            e,
        )
    };
    let mut s = match UnixStream::connect(control::socket_path(&dir)) {
        Ok(s) => s,
        Err(e) if control::no_daemon(&e) => return Ok(Answer::Said(None)),
        Err(e) => return Err(failed(e)),
    };
    let daemon = Daemon {
        pidfd: peer_pidfd(&s),
    };
    s.set_read_timeout(Some(STATE_WAIT)).map_err(failed)?;
    match s.write_all(b"state\n") {
        Ok(()) => {}
        // A daemon that refuses us answers before it reads, and hangs up: read on.
        Err(e) if control::no_daemon(&e) => {}
        Err(e) => return Err(failed(e)),
    }
    let mut line = String::new();
    match BufReader::new(s).take(MAX_ANSWER).read_line(&mut line) {
        Ok(_) => {}
        Err(e) if control::no_daemon(&e) => return Ok(Answer::Said(None)),
        Err(e) => return Err(failed(e)),
    }
    let line = line.trim();
    if line.is_empty() {
        // It exited between our connect and its answer.
        return Ok(Answer::Said(None));
    }
    if line.starts_with("busy:") {
        return Ok(Answer::Busy);
    }
    // A daemon of an older layerfs does not know `state` (nor one that refuses us): it
    // serves the mount its record names.
    let phase = Phase::parse(line).unwrap_or(Phase::Serving(PathBuf::new()));
    Ok(Answer::Said(Some((phase, daemon))))
}

/// A pidfd of the process at the other end of `s`.
fn peer_pidfd(s: &UnixStream) -> Option<OwnedFd> {
    use nix::sys::socket::{getsockopt, sockopt};
    if let Ok(fd) = getsockopt(s, sockopt::PeerPidfd) {
        return Some(fd);
    }
    // Before Linux 6.5: its pid, which names it while we are connected to it.
    let pid = getsockopt(s, sockopt::PeerCredentials).ok()?.pid();
    crate::sys::pidfd_open(pid).ok()
}

fn mounted(mp: PathBuf, daemon: Daemon) -> Mounted {
    Mounted {
        mountpoint: (!mp.as_os_str().is_empty()).then_some(mp),
        daemon,
    }
}

/// The container's daemon, when it says it is mounted: what `ps` and `df` show. Takes no
/// lock.
pub fn mounted_now(c: &Container) -> Result<Option<Mounted>> {
    Ok(match ask(c)? {
        Some((Phase::Serving(mp), d)) => Some(mounted(mp, d)),
        _ => None,
    })
}

/// Why `c`, whose lock is held exclusive, is held (or who serves it), as its daemon says.
fn exclusive_holder(c: &Container) -> Result<std::result::Result<Mounted, Why>> {
    Ok(match ask(c)? {
        Some((Phase::Serving(mp), d)) => Ok(mounted(mp, d)),
        Some((Phase::Starting, _)) => Err(Why::Starting),
        Some((Phase::Ended, _)) => Err(Why::Ending),
        None => Err(Why::Changing),
    })
}

/// Who holds `c` now (see the module docs). Takes its lock for an instant when no daemon
/// says it is mounted.
pub fn probe(c: &Container) -> Result<Held> {
    if let Some(m) = mounted_now(c)? {
        return Ok(Held::Mounted(m));
    }
    if c.try_exclusive()?.is_some() {
        return Ok(Held::Free);
    }
    if c.lock_shared()?.is_some() {
        return Ok(Held::Read);
    }
    Ok(match exclusive_holder(c)? {
        Ok(m) => Held::Mounted(m),
        Err(why) => Held::Changing(why),
    })
}

/// Takes `c`'s lock exclusive (`mount`, `rm`), without waiting: the lock, or who serves
/// `c`, or why to wait. [`Error::UnknownContainer`] when `c` was removed (or removed and
/// made again) meanwhile.
pub fn try_take(c: &Container) -> Result<Take> {
    if let Some(g) = c.try_exclusive()? {
        return Ok(Take::Got(g));
    }
    // Held shared: commits (or an instant's probe).
    if c.lock_shared()?.is_some() {
        return Ok(Take::Wait(Why::Commit));
    }
    Ok(match exclusive_holder(c)? {
        Ok(m) => Take::Mounted(m),
        Err(why) => Take::Wait(why),
    })
}

/// A command waiting for a container held for a moment: up to [`BUSY_WAIT`] in all,
/// saying what it waits for once it has waited a little.
#[derive(Debug)]
pub struct Waiter {
    name: String,
    start: Instant,
    said: Option<Why>,
}

impl Waiter {
    pub fn new(name: &str) -> Waiter {
        Waiter {
            name: name.to_string(),
            start: Instant::now(),
            said: None,
        }
    }

    /// Waits a moment for a container held because of `why`; [`Error::ContainerBusy`]
    /// once it has waited [`BUSY_WAIT`].
    pub fn wait(&mut self, why: Why) -> Result<()> {
        let waited = self.start.elapsed();
        if waited >= BUSY_WAIT {
            return Err(Error::ContainerBusy {
                name: self.name.clone(),
                detail: why.busy(BUSY_WAIT.as_secs()),
            });
        }
        if waited >= SAY_WAITING_AFTER && self.said != Some(why) {
            eprintln!("{}", why.waiting(&self.name));
            self.said = Some(why);
        }
        std::thread::sleep(POLL);
        Ok(())
    }
}
