//! `layerfs umount DIR|CONTAINER`: unmounts a layerfs mount and waits until the daemon
//! has let go of the container (or, for a read-only mount, of its image), so that it can
//! be mounted again, or its image removed, at once. `umount DIR` and `fusermount3 -u DIR`
//! work too. A commit of the container under way is waited for first (up to
//! `BUSY_WAIT`, else refused as busy, the mount left alone): its daemon would keep the
//! container until the commit is done anyway (see `crate::control`).
//!
//! Only layerfs mounts are touched (see `mountinfo.rs`): any other mount at DIR is
//! refused with what it is. A container whose daemon was killed leaves a dead mount
//! behind ("Transport endpoint is not connected"); `umount` of the container or of its
//! directory detaches that mount and clears the container's record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Context;
use crate::mountinfo::{self, MountEntry};
use crate::store::{Store, containers, mounts};

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

pub(super) fn unmount(dir: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(dir)
                .status()
                .context("running fusermount3")?;
            if !st.success() {
                bail!("fusermount3 -u {} failed", dir.display());
            }
            Ok(())
        }
        Err(nix::errno::Errno::EINVAL) => bail!("{} is not mounted", dir.display()),
        Err(nix::errno::Errno::EBUSY) => bail!("{} is busy (a process uses it)", dir.display()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", dir.display())),
    }
}

/// Detaches the dead mount at `dir` (its daemon is gone: nothing to wait for).
fn unmount_dead(dir: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(dir, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => unmount(dir),
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
    c: &mut containers::Container,
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

/// Cleans up container `c` whose daemon is gone but whose record says it is mounted.
fn clean_stale(store: &Store, mut c: containers::Container) -> anyhow::Result<()> {
    // Shared: no mount starts while the record is cleared (a commit may read on).
    let Some(_lock) = c.lock_shared()? else {
        bail!("container {} was mounted meanwhile", c.record.name);
    };
    match detach_stale(store, &mut c)? {
        Some(_) => Ok(()),
        None => bail!("container {} is not mounted", c.record.name),
    }
}

/// The mount point of mounted container `c`, checked to hold `c`'s layerfs mount: no
/// other mount is ever unmounted in its name.
pub(super) fn container_mount(c: &containers::Container) -> anyhow::Result<PathBuf> {
    let Some(mp) = c.record.mountpoint.clone().map(PathBuf::from) else {
        bail!(
            "container {} is mounted but its record names no mount point",
            c.record.name
        );
    };
    let top = layerfs_mount_at(&mp)?;
    if top.source != container_source(&c.record.name) {
        bail!(
            "{} holds {}, not container {}'s mount: not unmounting it",
            mp.display(),
            top.describe(),
            c.record.name
        );
    }
    Ok(mp)
}

/// Unmounts mounted container `c` at `mp` and waits until its daemon has let go of it.
/// A commit that holds it is waited for first (up to `BUSY_WAIT`, else refused with
/// "busy", the mount left alone): the daemon would keep the container until the commit
/// is done anyway, and the caller expects it free when we return.
pub(super) fn unmount_container(c: &containers::Container, mp: &Path) -> anyhow::Result<()> {
    crate::control::wait_idle(c)?;
    unmount(mp)?;
    if !c.wait_unlocked(DAEMON_EXIT_WAIT) {
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

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    // A container of that name first (names never hold a '/'), else a path.
    let by_name = if containers::valid_name(&args.target) {
        containers::open(&store, &args.target)?
    } else {
        None
    };
    let (dir, container): (PathBuf, Option<containers::Container>) = match by_name {
        Some(c) if c.is_mounted() => (container_mount(&c)?, Some(c)),
        Some(c) => return clean_stale(&store, c),
        None => {
            let dir = mountinfo::resolve_mount_point(Path::new(&args.target))
                .with_context(|| format!("mount point {}", args.target))?;
            let top = layerfs_mount_at(&dir)?;
            let at = dir.to_string_lossy();
            let c = containers::all(&store)?.into_iter().find(|c| {
                c.record.mountpoint.as_deref() == Some(at.as_ref())
                    && top.source == container_source(&c.record.name)
            });
            if let Some(c) = c {
                if !c.is_mounted() {
                    return clean_stale(&store, c);
                }
                (dir, Some(c))
            } else {
                if mountinfo::is_dead_fuse(&dir) {
                    // A dead layerfs mount the store has no live record of.
                    unmount_dead(&dir)?;
                    return Ok(());
                }
                (dir, None)
            }
        }
    };
    layerfs_mount_at(&dir)?;
    let read_only: Vec<mounts::Mount> = if container.is_none() {
        let at = dir.to_string_lossy();
        mounts::live(&store)?
            .into_iter()
            .filter(|m| m.record.mountpoint == at)
            .collect()
    } else {
        Vec::new()
    };
    match &container {
        Some(c) => unmount_container(c, &dir)?,
        None => unmount(&dir)?,
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
    Ok(())
}
