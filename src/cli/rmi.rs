//! `layerfs rmi`: remove image references; images and layers go once nothing uses them.

use super::Context;
use crate::store::{Store, gc};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs rmi busybox                  # untag busybox:latest; the image goes with its last name
  layerfs rmi c43a07b65284             # by id prefix (refused when it has several names)
  layerfs rmi --force c43a07b65284     # every name of it
  layerfs rmi $(layerfs images -q)")]
pub struct Args {
    /// Images: name[:tag], id or id prefix.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Remove every tag of an image given by id; untag even when a container uses it
    /// (the image itself stays while a container uses it).
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let report = gc::rmi(&store, &args.images, args.force)?;
    for t in &report.untagged {
        println!("Untagged: {}", t.familiar());
    }
    for i in &report.deleted_images {
        println!("Deleted: {i}");
    }
    for l in &report.deleted_layers {
        println!("Deleted layer: {l}");
    }
    Ok(())
}
