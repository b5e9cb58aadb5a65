//! `layerfs images`: REPOSITORY TAG IMAGE ID CREATED SIZE, like `docker images`.

use serde::Serialize;

use super::Context;
use super::load::{human_size, print_table};
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one object per image) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Serialize)]
struct JsonImage {
    id: String,
    repo_tags: Vec<String>,
    created: Option<String>,
    size: u64,
    layers: usize,
    os: String,
    architecture: String,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    let images = store.list_images()?;
    if args.json {
        let out: Vec<JsonImage> = images
            .iter()
            .map(|i| JsonImage {
                id: i.id.to_string(),
                repo_tags: i.tags.iter().map(|t| t.familiar()).collect(),
                created: i.created.clone(),
                size: i.size(),
                layers: i.layers.len(),
                os: i.os.clone(),
                architecture: i.architecture.clone(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let now = crate::time::now_unix();
    let mut rows = Vec::new();
    for i in &images {
        let id = if args.no_trunc {
            i.id.to_string()
        } else {
            i.id.short()
        };
        let created = crate::time::human_since_str(i.created.as_deref(), now);
        let size = human_size(i.size());
        let names: Vec<(String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.tags
                .iter()
                .map(|t| (t.familiar_name(), t.tag().to_string()))
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![repo, tag, id.clone(), created.clone(), size.clone()]);
        }
    }
    print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(())
}
