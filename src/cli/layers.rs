//! `layerfs layers IMAGE|CONTAINER`: per layer, newest first, what it adds, changes and
//! deletes, its size, and how many of its bytes later layers hide (shipped, never seen):
//! the waste `dive` looks for. A container's writable layer is its top layer.

use anyhow::Context as _;

use super::Context;
use super::load::{human_size, print_table};
use super::which::{open_target, print_json, short};
use crate::inspect::stats::{LayerStats, layer_stats};
use crate::store::{ImageRecord, Store};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs layers debian:12          # which layer is big, which ships bytes later deleted
  layerfs layers web                # a container: its own layer first
  layerfs layers --json busybox | jq '.layers[] | select(.hidden > 0)'")]
pub struct Args {
    /// An image (name[:tag], id, id prefix) or a container's name.
    #[arg(value_name = "IMAGE|CONTAINER")]
    pub target: String,
    /// Print JSON: {"layers": [...], "size": N, "hidden": N}, layers newest first.
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let t = open_target(ctx, &store, &args.target)?;
    let (stack, image) = (&t.stack, &t.image);
    let upper = stack.upper.is_some();
    let stats = layer_stats(stack).context("reading the layers")?;
    let created_by = created_by(&store, image);
    // Numbered as `history` counts layers (1: the bottom); `upper`: the container's own.
    let number = |s: &LayerStats| -> String {
        if upper && s.index == 0 {
            "upper".into()
        } else {
            (stats.len() - s.index).to_string()
        }
    };
    let by = |s: &LayerStats| -> String {
        let k = stats.len() - s.index; // 1-based from the bottom, the upper past the end
        created_by.get(k - 1).cloned().unwrap_or_default()
    };
    let size: u64 = stats.iter().map(|s| s.size).sum();
    let hidden: u64 = stats.iter().map(|s| s.hidden).sum();
    if args.json {
        let layers: Vec<serde_json::Value> = stats
            .iter()
            .map(|s| {
                let mut o = serde_json::to_value(s).unwrap_or_default();
                o["number"] = serde_json::json!(number(s));
                o["created_by"] = serde_json::json!(by(s));
                o
            })
            .collect();
        let v = serde_json::json!({"layers": layers, "size": size, "hidden": hidden});
        return super::on_stdout(print_json(&v));
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let mut by = by(s).replace('\t', " ");
            if by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            vec![
                number(s),
                if upper && s.index == 0 {
                    "(container)".into()
                } else {
                    short(&s.layer)
                },
                human_size(s.size),
                s.added.to_string(),
                s.changed.to_string(),
                s.deleted.to_string(),
                human_size(s.hidden),
                by,
            ]
        })
        .collect();
    super::on_stdout(print_rows(&rows, size, hidden, stats.len()))
}

fn print_rows(rows: &[Vec<String>], size: u64, hidden: u64, n: usize) -> anyhow::Result<()> {
    print_table(
        &[
            "LAYER",
            "DIFF ID",
            "SIZE",
            "ADDED",
            "CHANGED",
            "DELETED",
            "HIDDEN",
            "CREATED BY",
        ],
        rows,
    );
    let pct = if size == 0 {
        0.0
    } else {
        hidden as f64 * 100.0 / size as f64
    };
    println!(
        "{} in {} layers; {} ({pct:.1}%) hidden by later layers",
        human_size(size),
        n,
        human_size(hidden)
    );
    Ok(())
}

/// The `created_by` of each layer, bottom first (history entries that made no layer
/// left out); empty where the config has no history for it.
fn created_by(store: &Store, image: &ImageRecord) -> Vec<String> {
    let Ok(config) = store.image_config(&image.id) else {
        return Vec::new();
    };
    config
        .history()
        .as_ref()
        .map(|h| {
            h.iter()
                .filter(|e| !e.empty_layer().unwrap_or(false))
                .map(|e| e.created_by().clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}
