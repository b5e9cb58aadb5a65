//! `layerfs rm NAME…`: removes containers, record and writable layer in one step, with
//! the container's lock held (see `container/dir.rs`): a mount of it cannot start
//! meanwhile. A container held for a moment — a commit reading it, a mount being set up,
//! a daemon starting or letting go, another `rm` — is waited for (`crate::container::holder`). A
//! mounted container is refused unless `--force`, which unmounts it first and waits for
//! its daemon to exit. Afterwards nothing holds its image: `rmi` of the image works,
//! `prune` frees what nothing uses.

use anyhow::bail;

use super::Context;
use crate::container;
use crate::container::holder::{self, Take, Waiter};
use crate::container::umount::{detach_stale, unmount_container};
use crate::error::Error;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  layerfs rm web\n  layerfs rm --force web db")]
pub struct Args {
    /// Containers to remove.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
    /// Unmount a mounted container first.
    #[arg(short, long)]
    pub force: bool,
}

/// How often `rm --force` unmounts a container that is mounted again each time before
/// it gives up.
const FORCED_UNMOUNTS: usize = 5;

fn remove_one(store: &Store, name: &str, force: bool) -> anyhow::Result<()> {
    let mut waiter = Waiter::new(name);
    let mut unmounts = 0;
    loop {
        let Some(mut c) = container::open(store, name)? else {
            bail!("no such container: {name} (see `layerfs ps -a`)");
        };
        let take = {
            // Shared, for the removal only: rmi and prune (exclusive) see the container
            // either whole or gone. Never held while waiting or unmounting.
            let _lock = store.lock_shared()?;
            match holder::try_take(&c) {
                // The lock is held until the container is gone: no mount of it starts
                // meanwhile (see `container/dir.rs`).
                Ok(Take::Got(lock)) => {
                    // A daemon killed with the mount left behind: the dead mount goes first.
                    detach_stale(store, &mut c)?;
                    container::remove(store, &c, lock)?;
                    return Ok(());
                }
                // Removed meanwhile: look again ("no such container").
                Err(Error::UnknownContainer(_)) => continue,
                Ok(other) => other,
                Err(e) => return Err(e.into()),
            }
        };
        match take {
            Take::Got(_) => {}
            Take::Mounted(m) if !force => {
                let at = match &m.mountpoint {
                    Some(mp) => format!(" at {}", mp.display()),
                    None => c.at_mountpoint(),
                };
                bail!("container {name} is mounted{at}: unmount it first, or use --force");
            }
            Take::Mounted(m) => {
                unmounts += 1;
                if unmounts > FORCED_UNMOUNTS {
                    bail!(
                        "container {name} was mounted again each time it was unmounted \
                         ({FORCED_UNMOUNTS} times)"
                    );
                }
                match unmount_container(store, &c, &m) {
                    Err(Error::UnknownContainer(_)) => {}
                    r => r?,
                }
            }
            // A commit reads it, a mount or an `rm` is under way, its daemon starts or
            // lets go: in a serial order that comes first.
            Take::Wait(why) => waiter.wait(why)?,
        }
    }
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let mut failed = 0;
    for name in &args.names {
        match remove_one(&store, name, args.force) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                if args.names.len() == 1 {
                    return Err(e);
                }
                eprintln!("layerfs: error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} containers were not removed",
            args.names.len()
        );
    }
    Ok(())
}
