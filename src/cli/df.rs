//! `layerfs df`: disk usage like `docker system df`: images, containers and layers, with
//! shared layers counted once; `-v` (the global flag, as in `docker system df -v`) lists
//! each image (size, shared, unique, containers), container (and read-only mount of an
//! image alone) and layer.

use super::Context;
use super::load::{human_size, print_table};
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  layerfs df\n  layerfs df -v      (every image, container and layer)\n  layerfs df --json"
)]
pub struct Args {
    // `-v` (every image, container and layer) is the global -v/--verbose flag.
    /// Print JSON (sizes in bytes).
    #[arg(long)]
    pub json: bool,
}

/// Docker's RECLAIMABLE cell: "2.1MB (45%)".
fn reclaimable(part: u64, total: u64) -> String {
    if total == 0 {
        return human_size(part);
    }
    format!("{} ({}%)", human_size(part), part * 100 / total)
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let u = crate::container::usage(&store)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&u)?);
        return Ok(());
    }
    if ctx.verbose == 0 {
        let rows: Vec<Vec<String>> = u
            .summary
            .iter()
            .map(|s| {
                vec![
                    s.kind.to_string(),
                    s.total.to_string(),
                    s.active.to_string(),
                    human_size(s.size),
                    reclaimable(s.reclaimable, s.size),
                ]
            })
            .collect();
        print_table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
        return Ok(());
    }
    let now = crate::time::now_unix();
    println!("Images space usage:\n");
    let mut rows = Vec::new();
    for i in &u.images {
        let names: Vec<(String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((r, tag)) if !tag.contains('/') => (r.to_string(), tag.to_string()),
                    _ => (t.clone(), "<none>".into()),
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                i.id.short(),
                crate::time::human_since_str(i.created.as_deref(), now),
                human_size(i.size),
                human_size(i.shared_size),
                human_size(i.unique_size),
                i.containers.to_string(),
            ]);
        }
    }
    print_table(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ],
        &rows,
    );
    println!("\nContainers space usage:\n");
    let names: std::collections::BTreeMap<String, String> = u
        .images
        .iter()
        .map(|i| {
            let n = i.tags.first().cloned().unwrap_or_else(|| i.id.short());
            (i.id.to_string(), n)
        })
        .collect();
    let mut rows: Vec<Vec<String>> = u
        .containers
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                names
                    .get(&c.image)
                    .cloned()
                    .unwrap_or_else(|| c.image.clone()),
                human_size(c.size),
                crate::time::human_since_str(Some(&c.created), now),
                match &c.mountpoint {
                    Some(m) => format!("mounted at {m}"),
                    None => "not mounted".into(),
                },
            ]
        })
        .collect();
    // Read-only mounts of an image alone: no container, nothing written.
    rows.extend(u.read_only_mounts.iter().map(|m| {
        vec![
            "-".to_string(),
            names
                .get(&m.image)
                .cloned()
                .unwrap_or_else(|| m.image.clone()),
            human_size(0),
            crate::time::human_since_str(Some(&m.created), now),
            format!("mounted (read-only) at {}", m.mountpoint),
        ]
    }));
    print_table(&["NAME", "IMAGE", "SIZE", "CREATED", "STATUS"], &rows);
    println!("\nLayers space usage:\n");
    let rows: Vec<Vec<String>> = u
        .layers
        .iter()
        .map(|l| {
            vec![
                l.diff_id.short(),
                human_size(l.size),
                l.images.to_string(),
                if l.active { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    print_table(&["LAYER", "SIZE", "IMAGES", "ACTIVE"], &rows);
    Ok(())
}
