//! `layerfs umount DIR|CONTAINER`: unmounts a layerfs mount and waits until the daemon
//! has let go of the container (or, for a read-only mount, of its image), so that it can
//! be mounted again, or its image removed, at once. `umount DIR` and `fusermount3 -u DIR`
//! work too. A container's unmount is [`crate::container::umount`]'s; this finds what
//! the argument names, waits for a container held for a moment (a daemon starting or
//! letting go, a mount being set up, an `rm`) and looks again.
//!
//! Only layerfs mounts are touched (see `mountinfo.rs`): any other mount at DIR is
//! refused with what it is. A container whose daemon was killed leaves a dead mount
//! behind ("Transport endpoint is not connected"); `umount` of the container or of its
//! directory detaches that mount and clears the container's record.

use std::path::Path;

use anyhow::{Context as _, bail};

use super::Context;
use crate::container::holder::{self, Held, Waiter, Why};
use crate::container::umount::{
    DAEMON_EXIT_WAIT, Unmounted, unmount, unmount_container, unmount_dead,
};
use crate::container::{self, umount};
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

/// What one look at what to unmount gave.
enum Step {
    Done,
    /// Container `name` is held for a moment by another command: wait and look again.
    Wait(String, Why),
}

/// Container `c`, which no daemon serves: cleans up after a daemon that died with its
/// mount left behind, else "not mounted".
fn clean_stale(store: &Store, c: container::Container) -> anyhow::Result<Step> {
    let name = c.record.name.clone();
    Ok(match umount::clean_stale(store, c)? {
        Ok(()) => Step::Done,
        Err(why) => Step::Wait(name, why),
    })
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
        Held::Mounted(m) => Ok(unmount_container(store, &c, &m).map(|()| Step::Done)?),
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
                return Ok(unmount_container(store, &c, &m).map(|()| Step::Done)?);
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
    let store = Store::open_existing(&ctx.root)?;
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
            // Neither a container nor a path: say so, not that ./NAME is no mount point.
            None if container::valid_name(&args.target)
                && std::fs::symlink_metadata(&args.target).is_err() =>
            {
                bail!(
                    "no container or mount point named {} (see `layerfs ps -a`)",
                    args.target
                )
            }
            None => by_dir(&store, &args.target)?,
        };
        match step {
            Step::Done => return Ok(()),
            Step::Wait(name, why) => waiter.get_or_insert_with(|| Waiter::new(&name)).wait(why)?,
        }
    }
}

/// True when `e` says a container is gone.
fn is_unknown_container(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<crate::error::Error>(),
        Some(crate::error::Error::UnknownContainer(_))
    )
}
