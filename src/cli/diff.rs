//! `layerfs diff CONTAINER`: what a container changed against its image, as `docker diff`
//! prints it (`A /new`, `C /etc`, `D /etc/old.conf`), from its writable layer alone.

use std::io::Write;

use anyhow::bail;

use super::Context;
use crate::changes::{Views, diff};
use crate::container;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  layerfs diff web\n  layerfs diff web --json | jq -r '.[] | select(.kind == \"A\") | .path'"
)]
pub struct Args {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Print JSON: [{"kind": "A"|"C"|"D", "path": "/…"}].
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let Some(c) = container::open(&store, &args.container)? else {
        bail!(
            "no such container: {} (see `layerfs ps -a`)",
            args.container
        );
    };
    let views = Views::of_container(&store, &c)?;
    let changes = diff::changes(&views)?;
    super::on_stdout(print(&changes, args.json))
}

fn print(changes: &[diff::Change], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let v: Vec<_> = changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "kind": c.kind,
                    "path": String::from_utf8_lossy(&c.path),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        for c in changes {
            write!(out, "{} ", c.kind.letter())?;
            out.write_all(&c.path)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}
