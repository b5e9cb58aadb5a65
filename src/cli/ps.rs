//! `layerfs ps`: containers, their image, where they are mounted and their sizes.

use super::Context;
use super::load::human_size;
use crate::digest::Digest;
use crate::store::{Store, containers};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
        let mounted = c.is_mounted();
        let mp = if mounted {
            c.record.mountpoint.clone().unwrap_or_else(|| "?".into())
        } else {
            "-".into()
        };
        let size = c.size();
        rows.push((
            c.record.name.clone(),
            image_name,
            mp,
            size,
            image_size + size,
            c.record.created.clone(),
        ));
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, i, m, s, v, c)| {
                serde_json::json!({"name": n, "image": i, "mountpoint": m, "size": s, "virtual_size": v, "created": c})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(4);
    let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(10);
    println!(
        "{:w0$}  {:w1$}  {:w2$}  {:>10}  {:>12}",
        "NAME", "IMAGE", "MOUNTPOINT", "SIZE", "VIRTUAL SIZE"
    );
    for (n, i, m, s, v, _) in rows {
        println!(
            "{n:w0$}  {i:w1$}  {m:w2$}  {:>10}  {:>12}",
            human_size(s),
            human_size(v)
        );
    }
    Ok(())
}
