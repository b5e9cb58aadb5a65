//! `layerfs images`: REPOSITORY TAG IMAGE ID CREATED SIZE, like `docker images`.

use serde::Serialize;
use serde_json::json;

use super::Context;
use super::format::Template;
use super::load::{human_size, print_table};
use crate::image::reference::Reference;
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs images                                        # REPOSITORY TAG IMAGE ID CREATED SIZE
  layerfs images busybox                                # every tag of one repository
  layerfs images busybox:1.36                           # one tag
  layerfs images -q                                     # ids only (one per row)
  layerfs images --format '{{.Repository}}:{{.Tag}}'
  layerfs images --format 'table {{.ID}}\\t{{.Size}}'
  layerfs rmi $(layerfs images -q)                       # remove them all

Fields for --format: .ID .Repository .Tag .CreatedSince .CreatedAt .Size .Layers")]
pub struct Args {
    /// Only the images named REPOSITORY (every tag of it), or REPOSITORY:TAG.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Print JSON (one object per image) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show full image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Go-template-like format (see the examples).
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "json")]
    pub format: Option<String>,
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
    let store = Store::open_existing(&ctx.root)?;
    let mut images = store.list_images()?;
    if let Some(r) = &args.reference {
        let want = Wanted::parse(r)?;
        // An image shows under the names that match only (untagged ones under none).
        images.retain_mut(|i| {
            i.tags.retain(|t| want.matches(t));
            !i.tags.is_empty()
        });
    }
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
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    let now = crate::time::now_unix();
    let mut rows = Vec::new();
    let mut values = Vec::new();
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
        if template.is_some() {
            values.extend(rows.drain(..).map(|r| {
                json!({
                    "Repository": r[0],
                    "Tag": r[1],
                    "ID": r[2],
                    "CreatedSince": r[3],
                    "CreatedAt": i.created.clone().unwrap_or_default(),
                    "Size": r[4],
                    "Layers": i.layers.len(),
                })
            }));
        }
    }
    // `-q` (global): ids only, as `docker images -q`.
    if ctx.quiet {
        for r in &rows {
            println!("{}", r[2]);
        }
        for v in &values {
            println!("{}", v["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    if let Some(t) = template {
        return t.print(
            &values,
            &[
                ("ID", "IMAGE ID"),
                ("CreatedSince", "CREATED"),
                ("CreatedAt", "CREATED AT"),
            ],
        );
    }
    print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
    Ok(())
}

/// `REPOSITORY[:TAG]` of `images`: without a tag, every tag of the repository (as
/// `docker images busybox`).
struct Wanted {
    reference: Reference,
    any_tag: bool,
}

impl Wanted {
    fn parse(s: &str) -> anyhow::Result<Wanted> {
        // (a tag follows the last ':' after the last '/': `localhost:5000/x` has none)
        let last = &s[s.rfind('/').map_or(0, |i| i + 1)..];
        Ok(Wanted {
            reference: Reference::parse(s)?,
            any_tag: !last.contains(':'),
        })
    }

    fn matches(&self, t: &Reference) -> bool {
        t.name() == self.reference.name() && (self.any_tag || t.tag() == self.reference.tag())
    }
}
