//! `layerfs tag SOURCE TARGET`: one more name for an image (Docker's name normalization:
//! `busybox` is `docker.io/library/busybox:latest`). A name that already belongs to
//! another image is refused unless `--force` moves it.

use super::Context;
use crate::image::Reference;
use crate::store::{Store, images};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  layerfs tag myapp:v2 registry.local/team/myapp:v2\n  layerfs tag 3f4e5d6c7b8a myapp:latest --force"
)]
pub struct Args {
    /// Image: name[:tag], id or id prefix.
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// The new name, NAME[:TAG].
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Move TARGET when it names another image.
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let target = Reference::parse(&args.target)?;
    // Shared: the image cannot be removed between its lookup and its new name.
    let _lock = store.lock_shared()?;
    let image = store.resolve_image(&args.source)?;
    images::tag_checked(&store, &image.id, &target, args.force)?;
    Ok(())
}
