//! `layerfs rmi`: remove image references; images and layers go once nothing uses them.

use super::Context;
use crate::store::{Store, gc};

#[derive(Debug, clap::Args)]
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
    let store = Store::open(&ctx.root)?;
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
