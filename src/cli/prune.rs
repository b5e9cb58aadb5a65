//! `layerfs prune`: remove dangling images, unused layers and leftovers of interrupted
//! work; print what went.

use super::Context;
use super::load::human_size;
use crate::store::{Store, at, gc};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs prune                        # dangling images, unused layers, leftovers
  layerfs rmi old:1 && layerfs prune")]
pub struct Args {}

pub fn run(ctx: &Context, _args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let report = gc::prune(&store)?;
    for i in &report.deleted_images {
        println!("Deleted image: {i}");
    }
    for l in &report.deleted_layers {
        println!("Deleted layer: {l}");
    }
    if report.tmp_entries > 0 {
        println!(
            "Removed {} leftover(s) of interrupted work ({}) from {}",
            report.tmp_entries,
            human_size(report.tmp_bytes),
            store.shown(at::TMP).display()
        );
    }
    println!("Total reclaimed space: {}", human_size(report.freed));
    Ok(())
}
