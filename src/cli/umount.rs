//! `layerfs umount DIR|CONTAINER`: unmounts a layerfs mount and waits until the daemon
//! has let go of the container (or, for a read-only mount, of its image), so that it can
//! be mounted again, or its image removed, at once. `umount DIR` and `fusermount3 -u DIR`
//! work too. A commit of the container under way is waited for first (up to
//! `BUSY_WAIT`, else refused as busy, the mount left alone): its daemon would keep the
//! container until the commit is done anyway (see `crate::control`).
//!
//! Mounted is what the container's daemon says (`crate::container::holder`): the daemon unmounted
//! is the one waited for (by its pidfd), never a daemon that mounts the container again
//! right after. A container held for a moment (a daemon starting or letting go, a mount
//! being set up, an `rm`) is waited for, then looked at again; a mount that another
//! command unmounted meanwhile is not an error (its daemon is waited for all the same).
//!
//! Only layerfs mounts are touched (see `mountinfo.rs`): any other mount at DIR is
//! refused with what it is. A container whose daemon was killed leaves a dead mount
//! behind ("Transport endpoint is not connected"); `umount` of the container or of its
//! directory detaches that mount and clears the container's record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Context;
use crate::container;
use crate::container::holder::{self, Held, Waiter, Why};
use crate::mountinfo::{self, MountEntry};
use crate::store::{Store, mounts};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs umount web                   # by container name
  layerfs umount /mnt/web              # by mount point (layerfs mounts only)
  layerfs ps                           # a container whose daemon died shows as stale;
  layerfs umount web                   #   umount cleans it up")]
pub struct Args {
    /// A mount point, or the name of a mounted container.
    #[arg(value_name = "DIR|CONTAINER")]
    pub target: String,
}

/// How long to wait for the daemon to exit after the unmount.
pub(super) const DAEMON_EXIT_WAIT: Duration = Duration::from_secs(30);

/// What an unmount of a mount point did.
pub(super) enum Unmounted {
    Done,
    /// Nothing was mounted there any more (unmounted meanwhile by another command).
    WasNot,
}

pub(super) fn unmount(dir: &Path) -> anyhow::Result<Unmounted> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(Unmounted::Done),
        Err(nix::errno::Errno::EPERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(dir)
                .status()
                .context("running fusermount3")?;
            if !st.success() {
                bail!("fusermount3 -u {} failed", dir.display());
            }
            Ok(Unmounted::Done)
        }
        Err(nix::errno::Errno::EINVAL) => Ok(Unmounted::WasNot),
        Err(nix::errno::Errno::EBUSY) => bail!("{} is busy (a process uses it)", dir.display()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", dir.display())),
    }
}

/// Detaches the dead mount at `dir` (its daemon is gone: nothing to wait for).
fn unmount_dead(dir: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => unmount(dir).map(|_| ()),
        Err(_) => nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("detaching the dead mount at {}", dir.display())),
    }
}

/// The FUSE source of container `name`'s mounts.
fn container_source(name: &str) -> String {
    format!("{}:{name}", mountinfo::LAYERFS_SOURCE_PREFIX)
}

/// For container `c`, not served by a daemon: detaches the dead mount of `c` its record
/// names (its daemon was killed), if there is one, and clears the record's mount point.
/// Returns the mount point detached.
pub(super) fn detach_stale(
    store: &Store,
    c: &mut container::Container,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(mp) = c.record.mountpoint.clone().map(PathBuf::from) else {
        return Ok(None);
    };
    let top = mountinfo::at(&mp)?;
    let dead_here = top
        .as_ref()
        .is_some_and(|e| e.source == container_source(&c.record.name));
    if dead_here {
        unmount_dead(&mp)?;
    }
    c.set_mountpoint(store, None)
        .context("clearing the container's mount point")?;
    if dead_here {
        eprintln!(
            "layerfs: container {}: its daemon was gone; the dead mount at {} is removed",
            c.record.name,
            mp.display()
        );
    }
    Ok(dead_here.then_some(mp))
}

/// What one look at what to unmount gave.
enum Step {
    Done,
    /// Container `name` is held for a moment by another command: wait and look again.
    Wait(String, Why),
}

/// Container `c`, which no daemon serves: cleans up after a daemon that died with its
/// mount left behind (the record says mounted), else "not mounted".
fn clean_stale(store: &Store, mut c: container::Container) -> anyhow::Result<Step> {
    // Shared: no mount starts while the record is cleared (a commit may read on).
    let Some(_lock) = c.lock_shared()? else {
        // Mounted (or being mounted or removed) since we looked: look again.
        return Ok(Step::Wait(c.record.name.clone(), Why::Changing));
    };
    // The record as it is now, under the lock.
    if let Some(now) = container::open(store, &c.record.name)? {
        c.record = now.record;
    }
    match detach_stale(store, &mut c)? {
        Some(_) => Ok(Step::Done),
        None => bail!("container {} is not mounted", c.record.name),
    }
}

/// Where mounted container `c` is mounted, as its daemon (`m`), else its record, says.
fn mount_point_of(
    store: &Store,
    c: &container::Container,
    m: &holder::Mounted,
) -> anyhow::Result<PathBuf> {
    if let Some(mp) = &m.mountpoint {
        return Ok(mp.clone());
    }
    // A daemon of an older layerfs: its record says (it writes it once mounted).
    let now = container::open(store, &c.record.name)?;
    match now.and_then(|n| n.record.mountpoint) {
        Some(mp) => Ok(PathBuf::from(mp)),
        None => bail!(
            "container {} is mounted but its record names no mount point",
            c.record.name
        ),
    }
}

/// Unmounts container `c`, mounted by daemon `m`, and waits until that daemon has let go
/// of it (exited). A commit that holds it is waited for first (up to `BUSY_WAIT`, else
/// refused with "busy", the mount left alone): the daemon would keep the container until
/// the commit is done anyway, and the caller expects it free when we return. A mount that
/// has ended meanwhile (another `umount`, a signal) is not an error: its daemon is waited
/// for all the same. Only `c`'s own layerfs mount is ever unmounted in its name.
pub(super) fn unmount_container(
    store: &Store,
    c: &container::Container,
    m: &holder::Mounted,
) -> anyhow::Result<()> {
    let mp = mount_point_of(store, c, m)?;
    let mine = match mountinfo::at(&mp).context("reading /proc/self/mountinfo")? {
        None => false,
        Some(top) if top.source == container_source(&c.record.name) => true,
        // Unmounted meanwhile by another command, and something else mounted there since.
        Some(_) if ended_meanwhile(c, m, &mp) => false,
        Some(top) => bail!(
            "{} holds {}, not container {}'s mount: not unmounting it",
            mp.display(),
            top.describe(),
            c.record.name
        ),
    };
    if mine {
        crate::control::wait_idle(c)?;
        // (`WasNot`: unmounted by another command since we looked)
        unmount(&mp)?;
    }
    let exited = match m.daemon.wait_exit(DAEMON_EXIT_WAIT) {
        Some(exited) => exited,
        // No pidfd to watch: the lock tells (a later mount of it would hold it too).
        None => c.wait_unlocked(DAEMON_EXIT_WAIT),
    };
    if !exited {
        bail!(
            "{} is unmounted but the daemon of {} has not let go of it within {} s (a \
             commit of it may still be reading it)",
            mp.display(),
            c.record.name,
            DAEMON_EXIT_WAIT.as_secs()
        );
    }
    Ok(())
}

/// How long [`ended_meanwhile`] watches a daemon that still says it serves a mount
/// point that holds another mount.
const ENDING_WAIT: Duration = Duration::from_secs(2);

/// True when daemon `m` of `c`, which said it served `mp`, has stopped doing so (its
/// mount was unmounted by another command: it exits, or says its mount has ended), within
/// [`ENDING_WAIT`]; false when it goes on serving `mp` (a mount over its own).
fn ended_meanwhile(c: &container::Container, m: &holder::Mounted, mp: &Path) -> bool {
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

/// Refuses anything at `dir` that is not a layerfs mount.
fn layerfs_mount_at(dir: &Path) -> anyhow::Result<MountEntry> {
    let Some(top) = mountinfo::at(dir).context("reading /proc/self/mountinfo")? else {
        bail!("{} is not a mount point", dir.display());
    };
    if !top.is_layerfs() {
        bail!(
            "{} is not a layerfs mount (it is {}): not unmounting it; use umount(8) for \
             other mounts",
            dir.display(),
            top.describe()
        );
    }
    Ok(top)
}

/// `umount NAME` of container `c`.
fn by_name(store: &Store, c: container::Container) -> anyhow::Result<Step> {
    match holder::probe(&c)? {
        Held::Mounted(m) => unmount_container(store, &c, &m).map(|()| Step::Done),
        Held::Free | Held::Read => clean_stale(store, c),
        Held::Changing(why) => Ok(Step::Wait(c.record.name.clone(), why)),
    }
}

/// `umount DIR`.
fn by_dir(store: &Store, target: &str) -> anyhow::Result<Step> {
    let dir = mountinfo::resolve_mount_point(Path::new(target))
        .with_context(|| format!("mount point {target}"))?;
    let top = layerfs_mount_at(&dir)?;
    let at = dir.to_string_lossy();
    // A container's mount: its source names the container, whose record names DIR.
    let name = top
        .source
        .strip_prefix(mountinfo::LAYERFS_SOURCE_PREFIX)
        .and_then(|s| s.strip_prefix(':'))
        .filter(|n| container::valid_name(n));
    if let Some(name) = name
        && let Some(c) = container::open(store, name)?
    {
        let recorded = c.record.mountpoint.as_deref() == Some(at.as_ref());
        match holder::probe(&c) {
            Ok(Held::Mounted(m)) if m.mountpoint.as_deref().unwrap_or(&dir) == dir => {
                return unmount_container(store, &c, &m).map(|()| Step::Done);
            }
            Ok(Held::Changing(why)) => return Ok(Step::Wait(c.record.name.clone(), why)),
            Ok(Held::Free | Held::Read) if recorded => return clean_stale(store, c),
            // Removed since we looked, or mounted elsewhere: DIR holds another mount.
            Ok(_) | Err(crate::error::Error::UnknownContainer(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if mountinfo::is_dead_fuse(&dir) {
        // A dead layerfs mount the store has no live record of.
        unmount_dead(&dir)?;
        return Ok(Step::Done);
    }
    let read_only: Vec<mounts::Mount> = mounts::live(store)?
        .into_iter()
        .filter(|m| m.record.mountpoint == at)
        .collect();
    if let Unmounted::WasNot = unmount(&dir)? {
        bail!("{} is not mounted", dir.display());
    }
    // Several read-only mounts may be stacked at DIR: one of them went.
    if !mounts::wait_one_released(&read_only, DAEMON_EXIT_WAIT) {
        let pids: Vec<String> = read_only.iter().map(|m| m.record.pid.to_string()).collect();
        bail!(
            "{} is unmounted but its daemon (pid {}) has not exited",
            dir.display(),
            pids.join(", ")
        );
    }
    Ok(Step::Done)
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    let mut waiter: Option<Waiter> = None;
    loop {
        // A container of that name first (names never hold a '/'), else a path.
        let by_name_now = if container::valid_name(&args.target) {
            container::open(&store, &args.target)?
        } else {
            None
        };
        let step = match by_name_now {
            Some(c) => match by_name(&store, c) {
                // Removed meanwhile: as if we had come after the `rm`.
                Err(e) if is_unknown_container(&e) => continue,
                r => r?,
            },
            None => by_dir(&store, &args.target)?,
        };
        match step {
            Step::Done => return Ok(()),
            Step::Wait(name, why) => waiter.get_or_insert_with(|| Waiter::new(&name)).wait(why)?,
        }
    }
}

/// True when `e` says a container is gone.
pub(super) fn is_unknown_container(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<crate::error::Error>(),
        Some(crate::error::Error::UnknownContainer(_))
    )
}
