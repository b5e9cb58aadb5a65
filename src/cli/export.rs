//! `layerfs export CONTAINER [-o FILE]`: the container's merged view as one tar, like
//! `docker export` (see `container/export.rs`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::Context;
use crate::container::export;
use crate::image::output::{AtomicFile, Target};
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs export web -o rootfs.tar                # the merged tree, whiteouts applied
  layerfs export web | tar -t | head              # to stdout when it is not a terminal
  docker import rootfs.tar web-flat:1             # the same tree as a one-layer image")]
pub struct Args {
    /// The container (see `layerfs ps -a`).
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Write to FILE (under a temporary name, renamed when complete; mode 0600; a regular
    /// file there is replaced, never a symlink, device or FIFO) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let written = match &args.output {
        Some(path) => {
            let mut f = AtomicFile::create(path, Target::Export)?;
            let w =
                export::export_container(&store, &args.container, &mut f).with_context(|| {
                    format!("cannot export {} to {}", args.container, path.display())
                })?;
            f.commit()?;
            w
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write a tar to a terminal: give -o FILE or redirect stdout");
            }
            super::on_stdout(
                export::export_container(
                    &store,
                    &args.container,
                    crate::interrupt::Checked(stdout.lock()),
                )
                .with_context(|| format!("cannot export {}", args.container)),
            )?
        }
    };
    log::info!(
        "exported {}: {} entries, {} bytes of file content",
        args.container,
        written.entries,
        written.content
    );
    Ok(())
}
