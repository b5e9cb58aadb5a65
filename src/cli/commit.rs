//! `layerfs commit CONTAINER [REPO[:TAG]]`: a new image from a container's changes, as
//! `docker commit` makes it. Prints the new image's id.

use super::Context;
use crate::commit::{self, CommitOptions};
use crate::image::Reference;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  layerfs commit web myapp:v2 -m \"add app\" --author \"A <a@b>\"
  layerfs commit web myapp:v2 --change 'CMD [\"/app\"]' --change 'ENV K=V' --change 'EXPOSE 8080'
  SOURCE_DATE_EPOCH=0 layerfs commit web   # the same changes give the same image id

A mounted container is committed as it is at that moment: its writes wait until the layer
is written (as `docker commit` pauses a container); `umount`, `rm` and `mount` of the
container wait for the commit too.")]
pub struct Args {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// A name for the new image.
    #[arg(value_name = "REPO[:TAG]")]
    pub name: Option<String>,
    /// Commit message (the history entry's comment).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author ("Name <email>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// A Dockerfile instruction for the new config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, USER, VOLUME, WORKDIR (repeatable, applied in order).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    let name = match &args.name {
        Some(n) => Some(Reference::parse(n)?),
        None => None,
    };
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number"))?,
        ),
        _ => None,
    };
    let opts = CommitOptions {
        name,
        message: args.message,
        author: args.author,
        changes: args.changes,
        source_date_epoch,
    };
    let done = commit::commit(&store, &args.container, &opts)?;
    println!("{}", done.id);
    Ok(())
}
