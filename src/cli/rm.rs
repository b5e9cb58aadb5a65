//! `layerfs rm NAME…`: removes containers, record and writable layer in one step, with
//! the container's lock held (see `store/containers.rs`): a mount of it cannot start
//! meanwhile, and a commit reading it is waited for. A mounted container is refused
//! unless `--force`, which unmounts it first. Afterwards nothing holds its image: `rmi`
//! of the image works, `prune` frees what nothing uses.

use anyhow::bail;

use super::Context;
use super::umount::{container_mount, detach_stale, unmount_container};
use crate::store::{Store, containers};

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

fn remove_one(store: &Store, name: &str, force: bool) -> anyhow::Result<()> {
    let Some(mut c) = containers::open(store, name)? else {
        bail!("no such container: {name} (see `layerfs ps -a`)");
    };
    // Held until the container is gone: no mount of it starts meanwhile (see
    // `store/containers.rs`); a commit reading it is waited for.
    let lock = match c.lock(containers::BUSY_WAIT)? {
        Some(lock) => lock,
        None if !force => match c.record.mountpoint {
            Some(_) => bail!(
                "container {name} is mounted{}: unmount it first, or use --force",
                c.at_mountpoint()
            ),
            None => bail!(
                "container {name} is mounted, or being mounted or removed by another layerfs \
                 command: unmount it first, or use --force"
            ),
        },
        None => {
            let mp = container_mount(&c)?;
            unmount_container(&c, &mp)?;
            match c.lock(containers::BUSY_WAIT)? {
                Some(lock) => lock,
                None => bail!("container {name} was mounted again meanwhile"),
            }
        }
    };
    // A daemon killed with the mount left behind: the dead mount goes first.
    detach_stale(store, &mut c)?;
    containers::remove(store, &c, lock)?;
    Ok(())
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    // Shared: rmi and prune (exclusive) see the container either whole or gone.
    let _lock = store.lock_shared()?;
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
