//! `layerfs which IMAGE|CONTAINER PATH`: the layer a path comes from, and what every
//! other layer says about it (versions it shadows or merges, whiteouts and opaque
//! directories that deleted older ones), newest first. A container's writable layer is
//! its top layer, whether it is mounted or not.

use std::ffi::OsStr;

use anyhow::{Context as _, bail};

use super::Context;
use super::image_arg::image_arg;
use super::load::{human_size, print_table};
use crate::changes::container_image;
use crate::container::{self, Layers};
use crate::inspect::which::{Hides, Row, Status, components, which};
use crate::store::{ImageRecord, Store};
use crate::union::Stack;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs which debian:12 /etc/passwd     # which layer of the image it comes from
  layerfs which web /etc/nginx/nginx.conf # a container: its own layer first
  layerfs which --json busybox /bin/sh

Inside a mount, `getfattr -n user.layerfs.layer FILE` answers the first line alone.")]
pub struct Args {
    /// An image (name[:tag], id, id prefix) or a container's name.
    #[arg(value_name = "IMAGE|CONTAINER")]
    pub target: String,
    /// The path, from the root of the image.
    #[arg(value_name = "PATH")]
    pub path: std::path::PathBuf,
    /// Print JSON: one object per layer that says something, newest first.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let comps = components(args.path.as_os_str()).map_err(anyhow::Error::msg)?;
    if comps.is_empty() {
        bail!("{}: name a path below the root", args.path.display());
    }
    let t = open_target(ctx, &store, &args.target)?;
    let (stack, what) = (&t.stack, &t.what);
    let layers = t.stack.layers.len();
    let refs: Vec<&OsStr> = comps.iter().map(|c| c.as_os_str()).collect();
    let rows = which(stack, &refs).with_context(|| format!("reading the layers of {what}"))?;
    let shown = format!(
        "/{}",
        refs.iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    );
    let served = rows.iter().any(|r| r.status == Some(Status::Serves));
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut o = serde_json::to_value(r).unwrap_or_default();
                o["number"] = serde_json::json!(number(r, layers, stack.upper.is_some()));
                o
            })
            .collect();
        super::on_stdout(print_json(&serde_json::Value::from(v)))?;
    } else {
        super::on_stdout(print_rows(&rows, layers, stack.upper.is_some()))?;
    }
    if !served {
        match rows.iter().find(|r| r.hides.is_some()) {
            Some(r) if !rows.is_empty() => bail!(
                "{shown} is not in {what}: deleted in layer {}",
                short(&r.layer)
            ),
            _ => bail!("{shown} is not in any layer of {what}"),
        }
    }
    Ok(())
}

/// The layer's number as `history` and `inspect` count them (1: the bottom), or
/// `upper` for a container's own.
fn number(r: &Row, layers: usize, has_upper: bool) -> String {
    if has_upper && r.index == 0 {
        return "upper".into();
    }
    let below_upper = r.index - usize::from(has_upper);
    let n = if has_upper { layers - 1 } else { layers };
    n.saturating_sub(below_upper).to_string()
}

/// The layers of a container (its own on top) or of an image.
pub(super) struct Target {
    pub stack: Stack,
    pub image: ImageRecord,
    /// "container NAME" or "image NAME".
    pub what: String,
}

/// `target` as a container's name first (what `ps` lists), else as an image.
pub(super) fn open_target(ctx: &Context, store: &Store, target: &str) -> anyhow::Result<Target> {
    let as_container = if crate::store::containers::valid_name(target) {
        container::open(store, target)?
    } else {
        None
    };
    Ok(match as_container {
        Some(c) => {
            let image = container_image(store, &c)?;
            let stack = Layers::of(store, &c, &image)?
                .frozen()
                .context("opening the container's layers")?;
            Target {
                stack,
                image,
                what: format!("container {}", c.record.name),
            }
        }
        None => {
            let image = image_arg(ctx, store, target)?;
            let stack = Stack::open(&store.lower_specs(&image)?, None)
                .context("opening the image's layers")?;
            let what = format!("image {}", image.display_name());
            Target { stack, image, what }
        }
    })
}

/// A layer's label with its digest shortened as `images` shows ids.
pub(super) fn short(label: &str) -> String {
    match crate::digest::Digest::parse(label) {
        Ok(d) => format!("sha256:{}", d.short()),
        Err(_) => label.to_string(),
    }
}

pub(super) fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    use std::io::Write;
    writeln!(out)?;
    Ok(())
}

fn print_rows(rows: &[Row], layers: usize, has_upper: bool) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let layer = if has_upper && r.index == 0 {
                "(container)".to_string()
            } else {
                short(&r.layer)
            };
            let what = match (&r.status, &r.hides) {
                (Some(Status::Serves), _) => "serves".to_string(),
                (Some(Status::Merged), _) => "merged".to_string(),
                (Some(Status::Shadowed), _) => "shadowed".to_string(),
                (Some(Status::Deleted), _) => {
                    format!(
                        "deleted by {}",
                        r.by.as_deref().map(short).unwrap_or_default()
                    )
                }
                (None, Some(Hides::Whiteout)) => "deletes (whiteout)".to_string(),
                (None, Some(Hides::Opaque)) => "deletes (opaque directory)".to_string(),
                (None, Some(Hides::Replaced)) => "deletes (replaced by a file)".to_string(),
                (None, None) => String::new(),
            };
            let (kind, size, mode, owner) = match &r.entry {
                Some(e) => (
                    e.kind.to_string(),
                    if e.kind == "file" {
                        human_size(e.size)
                    } else {
                        "-".into()
                    },
                    format!("{:04o}", e.mode),
                    format!("{}:{}", e.uid, e.gid),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            vec![
                number(r, layers, has_upper),
                layer,
                what,
                kind,
                size,
                mode,
                owner,
            ]
        })
        .collect();
    print_table(
        &[
            "LAYER", "DIFF ID", "STATUS", "TYPE", "SIZE", "MODE", "OWNER",
        ],
        &table,
    );
    Ok(())
}
