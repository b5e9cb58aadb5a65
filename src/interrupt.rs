//! Ctrl-C and SIGTERM for commands that write (load, save, commit, export): they stop,
//! remove what they staged and say `layerfs: interrupted` (exit 128 + the signal).
//!
//! [`arm`] blocks SIGINT and SIGTERM before any other thread starts (threads inherit the
//! mask; child processes get a clean one from `std::process`) and waits for them on a
//! thread of its own, so no `unsafe` handler is needed. The first signal sets a flag that
//! the long loops check ([`check`], [`Checked`]): the command fails as on any error, its
//! usual cleanup runs (staging dirs, temporary outputs), and `cli::main` reports it.
//! A command blocked where no loop checks (a read that does not return) is ended after
//! [`GRACE`], or at once by a second signal: the signal thread then removes this
//! process's staging directories in each store's `tmp/` (named `WHAT-PID-N` by
//! `Store::staging_dir`) and exits. Whatever a `kill -9` leaves there is counted by `df`
//! and removed by `prune` or the next load.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::store::{Root, at, staging_pid};

/// How long a command may take to stop by itself after the first signal.
pub const GRACE: Duration = Duration::from_secs(5);

static ARMED: AtomicBool = AtomicBool::new(false);
/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by whoever ends the process: the main thread or the signal thread, never both.
static FINISHING: AtomicBool = AtomicBool::new(false);
/// The stores this process staged in (only while armed).
static STORES: Mutex<Vec<Arc<Root>>> = Mutex::new(Vec::new());

/// The command stopped because of a signal.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Takes SIGINT and SIGTERM over for the rest of the process; call it before any thread
/// is started.
pub fn arm() -> io::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().map_err(io::Error::from)?;
    ARMED.store(true, Ordering::SeqCst);
    std::thread::Builder::new()
        .name("layerfs-signals".into())
        .spawn(move || {
            let Ok(first) = set.wait() else { return };
            let sig = first as i32;
            SIGNAL.store(sig, Ordering::SeqCst);
            let _ = std::thread::Builder::new()
                .name("layerfs-grace".into())
                .spawn(move || {
                    std::thread::sleep(GRACE);
                    finish_now(sig);
                });
            // A second signal: no more waiting.
            if set.wait().is_ok() {
                finish_now(sig);
            }
        })?;
    Ok(())
}

/// The signal that asked this process to stop, if one did.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Fails once a stop was asked for; for the long loops.
pub fn check() -> io::Result<()> {
    match requested() {
        Some(_) => Err(io::Error::other(Interrupted)),
        None => Ok(()),
    }
}

/// A reader or writer that fails once a stop was asked for.
pub struct Checked<T>(pub T);

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check()?;
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check()?;
        self.0.read(buf)
    }
}

/// Remembers a store this process stages in, to clean its `tmp/` if ended early.
pub(crate) fn note_store(root: &Arc<Root>) {
    if !ARMED.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(mut stores) = STORES.lock()
        && !stores.iter().any(|r| Arc::ptr_eq(r, root))
    {
        stores.push(Arc::clone(root));
    }
}

/// Removes what this process staged in the `tmp/` of every store it staged in. Threads
/// may still be writing there: a removal is tried again until the entry is gone.
pub fn remove_own_staging() {
    let pid = std::process::id();
    let stores = match STORES.lock() {
        Ok(s) => s.clone(),
        Err(_) => return,
    };
    for root in stores {
        let Ok(names) = root.entries(at::TMP) else {
            continue;
        };
        for name in names.iter().filter(|n| staging_pid(n) == Some(pid)) {
            let rel = Path::new(at::TMP).join(name);
            for _ in 0..20 {
                if root.remove_tree(&rel).is_ok() || matches!(root.stat(&rel), Ok(None)) {
                    break;
                }
            }
        }
    }
}

/// For the main thread once the command has returned: false when the signal thread is
/// already ending the process (the caller must then wait for that, not exit).
pub fn settle() -> bool {
    !ARMED.load(Ordering::SeqCst) || !FINISHING.swap(true, Ordering::SeqCst)
}

/// Ends the process from the signal thread, unless the main thread is already ending it.
fn finish_now(sig: i32) {
    if FINISHING.swap(true, Ordering::SeqCst) {
        return;
    }
    remove_own_staging();
    eprintln!("layerfs: interrupted");
    std::process::exit(128 + sig);
}
