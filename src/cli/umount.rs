//! `layerfs umount DIR|CONTAINER`: unmounts and waits until the daemon has let go of the
//! container (or, for a read-only mount, of its image), so that it can be mounted again,
//! or its image removed, at once. `umount DIR` and `fusermount3 -u DIR` work too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::Context;
use crate::store::{Store, containers, mounts};

#[derive(Debug, clap::Args)]
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

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    let by_name = if containers::valid_name(&args.target) && !Path::new(&args.target).exists() {
        containers::open(&store, &args.target)?
    } else {
        None
    };
    let (dir, container): (PathBuf, Option<containers::Container>) = match by_name {
        Some(c) => {
            let Some(mp) = c.record.mountpoint.clone().filter(|_| c.is_mounted()) else {
                bail!("container {} is not mounted", c.record.name);
            };
            (PathBuf::from(mp), Some(c))
        }
        None => {
            let dir = std::fs::canonicalize(&args.target)
                .with_context(|| format!("mount point {}", args.target))?;
            let c = containers::all(&store)?.into_iter().find(|c| {
                c.record.mountpoint.as_deref() == Some(dir.to_string_lossy().as_ref())
                    && c.is_mounted()
            });
            (dir, c)
        }
    };
    let read_only: Vec<mounts::Mount> = if container.is_none() {
        let at = dir.to_string_lossy();
        mounts::live(&store)?
            .into_iter()
            .filter(|m| m.record.mountpoint == at)
            .collect()
    } else {
        Vec::new()
    };
    unmount(&dir)?;
    if let Some(c) = container
        && !c.wait_unlocked(DAEMON_EXIT_WAIT)
    {
        bail!(
            "{} is unmounted but the daemon of {} has not exited",
            dir.display(),
            c.record.name
        );
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
