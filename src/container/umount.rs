//! Unmounting a container: the library side of `layerfs umount` and `rm --force` (the CLI
//! finds what to unmount and prints).
//!
//! Mounted is what the container's daemon says ([`super::holder`]): the daemon unmounted
//! is the one waited for (by its pidfd), never a daemon that mounts the container again
//! right after. A commit of the container under way is waited for first (up to
//! [`super::BUSY_WAIT`], else refused as busy, the mount left alone): its daemon would
//! keep the container until the commit is done anyway (see `crate::container::control`). Only the
//! container's own layerfs mount is ever unmounted in its name. A container whose daemon
//! was killed leaves a dead mount behind ("Transport endpoint is not connected"):
//! [`detach_stale`] detaches it and clears the record.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Container;
use super::holder::{self, Why};
use crate::error::{Error, Result};
use crate::mountinfo;
use crate::store::Store;

/// How long to wait for the daemon to exit after the unmount.
pub const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(30);

/// What an unmount of a mount point did.
pub enum Unmounted {
    Done,
    /// Nothing was mounted there any more (unmounted meanwhile by another command).
    WasNot,
}

/// Unmounts `dir` (through `fusermount3 -u` where this process may not).
pub fn unmount(dir: &Path) -> Result<Unmounted> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(Unmounted::Done),
        // A plain user's mount: fusermount3 does it, and says what went wrong only in
        // words (the same cases as umount2's errnos below).
        Err(nix::errno::Errno::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| Error::io_what("running fusermount3", e))?;
            if out.status.success() {
                return Ok(Unmounted::Done);
            }
            let said = String::from_utf8_lossy(&out.stderr);
            if said.contains("Device or resource busy") {
                return Err(Error::MountPointBusy(dir.to_path_buf()));
            }
            // "Invalid argument": its umount2 found no mount there any more (EINVAL, as
            // below): another command unmounted it after fusermount3 checked (found by
            // the rootless store stress test).
            if said.contains("not found in /etc/mtab")
                || said.contains("not mounted")
                || said.contains("Invalid argument")
            {
                return Ok(Unmounted::WasNot);
            }
            log::warn!("fusermount3 -u {}: {}", dir.display(), said.trim());
            Err(Error::UnmountFailed(dir.to_path_buf()))
        }
        Err(nix::errno::Errno::EINVAL) => Ok(Unmounted::WasNot),
        Err(nix::errno::Errno::EBUSY) => Err(Error::MountPointBusy(dir.to_path_buf())),
        Err(e) => Err(Error::io_what(
            format!("unmounting {}", dir.display()),
            io::Error::from(e),
        )),
    }
}

/// Detaches the dead mount at `dir` (its daemon is gone: nothing to wait for).
pub fn unmount_dead(dir: &Path) -> Result<()> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => unmount(dir).map(|_| ()),
        Err(_) => nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
            Error::io_what(
                format!("detaching the dead mount at {}", dir.display()),
                io::Error::from(e),
            )
        }),
    }
}

/// The FUSE source of container `name`'s mounts.
pub fn source(name: &str) -> String {
    format!("{}:{name}", mountinfo::LAYERFS_SOURCE_PREFIX)
}

/// What is mounted at `dir`, as /proc/self/mountinfo says.
fn mounted_at(dir: &Path) -> Result<Option<mountinfo::MountEntry>> {
    mountinfo::at(dir).map_err(|e| Error::io_what("reading /proc/self/mountinfo", e))
}

/// For container `c`, not served by a daemon: detaches the dead mount of `c` its record
/// names (its daemon was killed), if there is one, and clears the record's mount point.
/// Returns the mount point detached.
pub fn detach_stale(store: &Store, c: &mut Container) -> Result<Option<PathBuf>> {
    let Some(mp) = c.record.mountpoint.clone().map(PathBuf::from) else {
        return Ok(None);
    };
    let top = mounted_at(&mp)?;
    let dead_here = top
        .as_ref()
        .is_some_and(|e| e.source == source(&c.record.name));
    if dead_here {
        unmount_dead(&mp)?;
    }
    c.set_mountpoint(store, None)?;
    if dead_here {
        eprintln!(
            "layerfs: container {}: its daemon was gone; the dead mount at {} is removed",
            c.record.name,
            mp.display()
        );
    }
    Ok(dead_here.then_some(mp))
}

/// Container `c`, which no daemon serves: cleans up after a daemon that died with its
/// mount left behind (the record says mounted), else "not mounted". `Err(Why)`: held by
/// another command since we looked: wait and look again.
pub fn clean_stale(store: &Store, mut c: Container) -> Result<std::result::Result<(), Why>> {
    // Shared: no mount starts while the record is cleared (a commit may read on).
    let Some(_lock) = c.lock_shared()? else {
        // Mounted (or being mounted or removed) since we looked: look again.
        return Ok(Err(Why::Changing));
    };
    // The record as it is now, under the lock.
    if let Some(now) = super::open(store, &c.record.name)? {
        c.record = now.record;
    }
    match detach_stale(store, &mut c)? {
        Some(_) => Ok(Ok(())),
        None => Err(Error::NotMounted(c.record.name.clone())),
    }
}

/// Where mounted container `c` is mounted, as its daemon (`m`), else its record, says.
fn mount_point_of(store: &Store, c: &Container, m: &holder::Mounted) -> Result<PathBuf> {
    if let Some(mp) = &m.mountpoint {
        return Ok(mp.clone());
    }
    // A daemon of an older layerfs: its record says (it writes it once mounted).
    let now = super::open(store, &c.record.name)?;
    match now.and_then(|n| n.record.mountpoint) {
        Some(mp) => Ok(PathBuf::from(mp)),
        None => Err(Error::NoMountPointRecorded(c.record.name.clone())),
    }
}

/// Unmounts container `c`, mounted by daemon `m`, and waits until that daemon has let go
/// of it (exited). A commit that holds it is waited for first (up to `BUSY_WAIT`, else
/// refused with "busy", the mount left alone): the daemon would keep the container until
/// the commit is done anyway, and the caller expects it free when we return. A mount that
/// has ended meanwhile (another `umount`, a signal) is not an error: its daemon is waited
/// for all the same.
pub fn unmount_container(store: &Store, c: &Container, m: &holder::Mounted) -> Result<()> {
    let mp = mount_point_of(store, c, m)?;
    let mine = match mounted_at(&mp)? {
        None => false,
        Some(top) if top.source == source(&c.record.name) => true,
        // Unmounted meanwhile by another command, and something else mounted there since.
        Some(_) if ended_meanwhile(c, m, &mp) => false,
        Some(top) => {
            return Err(Error::OtherMount {
                dir: mp,
                what: top.describe(),
                name: c.record.name.clone(),
            });
        }
    };
    if mine {
        crate::container::control::wait_idle(c)?;
        // (`WasNot`: unmounted by another command since we looked)
        unmount(&mp)?;
    }
    let exited = match m.daemon.wait_exit(DAEMON_EXIT_WAIT) {
        Some(exited) => exited,
        // No pidfd to watch: the lock tells (a later mount of it would hold it too).
        None => c.wait_unlocked(DAEMON_EXIT_WAIT),
    };
    if !exited {
        return Err(Error::DaemonKeeps {
            dir: mp,
            name: c.record.name.clone(),
            secs: DAEMON_EXIT_WAIT.as_secs(),
        });
    }
    Ok(())
}

/// How long [`ended_meanwhile`] watches a daemon that still says it serves a mount
/// point that holds another mount.
const ENDING_WAIT: Duration = Duration::from_secs(2);

/// True when daemon `m` of `c`, which said it served `mp`, has stopped doing so (its
/// mount was unmounted by another command: it exits, or says its mount has ended), within
/// [`ENDING_WAIT`]; false when it goes on serving `mp` (a mount over its own).
fn ended_meanwhile(c: &Container, m: &holder::Mounted, mp: &Path) -> bool {
    let end = std::time::Instant::now() + ENDING_WAIT;
    loop {
        if m.daemon.wait_exit(Duration::ZERO) == Some(true) {
            return true;
        }
        match holder::mounted_now(c) {
            Ok(Some(now)) if now.mountpoint.as_deref().is_none_or(|p| p == mp) => {}
            _ => return true,
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
