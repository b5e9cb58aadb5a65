//! `layerfs inspect`: an image's metadata as JSON (an array, one object per argument).

use serde_json::{Value, json};

use super::Context;
use super::format::Template;
use super::image_arg::image_arg;
use crate::store::{at, layers};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs inspect busybox                              # JSON, one object per image
  layerfs inspect --format '{{.Id}}' busybox
  layerfs inspect --format '{{json .Config.Env}}' busybox
  layerfs inspect --format '{{.Os}}/{{.Architecture}} {{.RepoTags}}' busybox alpine

--format fields are the JSON's keys, matched loosely (.RepoTags finds repo_tags).")]
pub struct Args {
    /// Images: name[:tag], id, id prefix, or anything `load` accepts.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Go-template-like format applied to each image (see the examples).
    #[arg(short, long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let store = super::image_arg::store_for(ctx, &args.images)?;
    let mut out = Vec::new();
    for arg in &args.images {
        let rec = image_arg(ctx, &store, arg)?;
        let cpath = store.shown(at::image(&rec.id).join("config.json"));
        let config: Value = serde_json::from_slice(&store.image_config_bytes(&rec.id)?)
            .map_err(|e| anyhow::anyhow!("{}: invalid JSON: {e}", cpath.display()))?;
        let field = |k: &str| config.get(k).cloned().unwrap_or(Value::Null);
        out.push(json!({
            "id": rec.id.to_string(),
            "repo_tags": rec.tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "names": rec.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "manifest_digest": rec.manifest_digest.map(|d| d.to_string()),
            "manifest_media_type": rec.manifest_media_type,
            "created": field("created"),
            "author": field("author"),
            "os": field("os"),
            "architecture": field("architecture"),
            "variant": field("variant"),
            // Docker's Size: its layers as `history` sizes them (not the unpacked bytes).
            "size": rec.layers.iter().map(|l| layers::docker_size(&store, &l.diff_id)).sum::<u64>(),
            "loaded": rec.loaded,
            "origin": rec.origin,
            "config": field("config"),
            "rootfs": field("rootfs"),
            "layers": rec.layers.iter().map(|l| json!({
                "digest": l.digest.map(|d| d.to_string()),
                "diff_id": l.diff_id.to_string(),
                "chain_id": l.chain_id.to_string(),
                "media_type": l.media_type,
                "size": l.size,
                "unpacked_size": l.unpacked_size,
                "path": store.shown(at::layer_diff(&l.diff_id)).display().to_string(),
            })).collect::<Vec<_>>(),
            "history": field("history"),
        }));
    }
    if let Some(t) = template {
        return t.print(&out, &[]);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
