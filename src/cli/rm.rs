//! `layerfs rm NAME…`: removes containers, record and writable layer in one step. A
//! mounted container is refused unless `--force`, which unmounts it first. Afterwards
//! nothing holds its image: `rmi` of the image works, `prune` frees what nothing uses.

use anyhow::bail;

use super::Context;
use super::umount::{DAEMON_EXIT_WAIT, container_mount, detach_stale, unmount};
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
    if c.is_mounted() {
        if !force {
            let at = c.at_mountpoint();
            bail!("container {name} is mounted{at}: unmount it first, or use --force");
        }
        let mp = container_mount(&c)?;
        unmount(&mp)?;
        if !c.wait_unlocked(DAEMON_EXIT_WAIT) {
            bail!(
                "{} is unmounted but the daemon of {name} has not exited",
                mp.display()
            );
        }
    } else {
        // A daemon killed with the mount left behind: the dead mount goes first.
        detach_stale(store, &mut c)?;
    }
    containers::remove(store, &c)?;
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
