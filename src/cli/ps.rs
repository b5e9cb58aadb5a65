//! `layerfs ps`: containers, their image and where they are mounted; with `-s`, their
//! sizes as `docker ps -s` shows them: the writable layer, and the virtual size (the image
//! below it too).

use super::Context;
use super::load::{human_size, print_table};
use crate::digest::Digest;
use crate::store::{Store, containers};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  layerfs ps\n  layerfs ps -s\n  layerfs ps --size --json")]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show sizes: the writable layer, and (virtual) with the image below it.
    #[arg(short, long)]
    pub size: bool,
}

struct Row {
    name: String,
    image: String,
    mountpoint: String,
    created: String,
    /// (writable layer, virtual) when asked.
    sizes: Option<(u64, u64)>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.root)?;
    let mut rows = Vec::new();
    for c in containers::all(&store)? {
        let image = Digest::parse(&c.record.image)
            .ok()
            .and_then(|id| store.image(&id).ok().flatten());
        let (image_name, image_size) = match &image {
            Some(i) => (i.display_name(), i.size()),
            None => (c.record.image.clone(), 0),
        };
        let mountpoint = if c.is_mounted() {
            c.record.mountpoint.clone().unwrap_or_else(|| "?".into())
        } else {
            "-".into()
        };
        let sizes = args.size.then(|| {
            let size = c.size();
            (size, image_size + size)
        });
        rows.push(Row {
            name: c.record.name.clone(),
            image: image_name,
            mountpoint,
            created: c.record.created.clone(),
            sizes,
        });
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut o = serde_json::json!({
                    "name": r.name,
                    "image": r.image,
                    "mountpoint": r.mountpoint,
                    "created": r.created,
                });
                if let Some((s, v)) = r.sizes {
                    o["size"] = s.into();
                    o["virtual_size"] = v.into();
                }
                o
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let now = crate::time::now_unix();
    let mut header = vec!["NAME", "IMAGE", "MOUNTPOINT", "CREATED"];
    if args.size {
        header.push("SIZE");
    }
    let table: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let created = crate::time::human_since_str(Some(&r.created), now);
            let mut cells = vec![r.name, r.image, r.mountpoint, created];
            if let Some((s, v)) = r.sizes {
                cells.push(format!("{} (virtual {})", human_size(s), human_size(v)));
            }
            cells
        })
        .collect();
    print_table(&header, &table);
    Ok(())
}
