//! `layerfs history`: IMAGE CREATED CREATED BY SIZE COMMENT, newest first, like
//! `docker history` (empty layers included; a row's id is the local image built up to it,
//! `<missing>` where there is none).

use serde::Serialize;

use super::Context;
use super::format::Template;
use super::image_arg::image_arg;
use super::load::{human_size, print_table};
use crate::digest::Digest;
use crate::store::{ImageRecord, LayerRecord, Store, layers};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs history busybox                  # newest first, sizes as Docker computes them
  layerfs history --no-trunc busybox       # full ids and commands
  layerfs history -H=false busybox         # bytes and RFC 3339 dates
  layerfs history --json busybox
  layerfs -q history busybox               # ids only (<missing> where Docker shows it)
  layerfs history --format '{{.ID}} {{.Size}} {{.CreatedBy}}' busybox

Fields for --format: .ID .CreatedSince .CreatedAt .CreatedBy .Size .Comment")]
pub struct Args {
    /// Image: name[:tag], id, id prefix, or anything `load` accepts.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate ids and commands.
    #[arg(long)]
    pub no_trunc: bool,
    /// Sizes and dates in human-readable form (`-H=false` or `--human=false`: bytes and
    /// RFC 3339 dates).
    #[arg(
        short = 'H',
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub human: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Go-template-like format (see the examples).
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "json")]
    pub format: Option<String>,
}

/// Docker truncates CREATED BY to this many characters.
const CREATED_BY_WIDTH: usize = 45;

#[derive(Serialize)]
struct Row {
    id: Option<String>,
    created: Option<String>,
    created_by: String,
    size: u64,
    comment: String,
    empty_layer: bool,
}

/// The size Docker shows for a layer (see [`layers::docker_size`]).
fn layer_size(store: &Store, l: &LayerRecord) -> u64 {
    layers::docker_size(store, &l.diff_id)
}

/// The image id of each row (oldest first), as Docker fills them in: the top row is the
/// image itself; an older row is the local image that the image was built on at that
/// step, i.e. one whose layers are exactly the image's layers up to that row and whose
/// rows are as many (else `None`: `<missing>`).
fn local_ids(
    store: &Store,
    rec: &ImageRecord,
    rows: &[Row],
) -> anyhow::Result<Vec<Option<Digest>>> {
    let mut ids = vec![None; rows.len()];
    let Some((top, older)) = ids.split_last_mut() else {
        return Ok(ids);
    };
    *top = Some(rec.id);
    if older.is_empty() {
        return Ok(ids);
    }
    let diff_ids = rec.diff_ids();
    // Candidates: other images whose layers are a proper or equal prefix of these.
    let mut candidates: Vec<(ImageRecord, usize)> = Vec::new();
    for img in store.list_images()? {
        let theirs = img.diff_ids();
        if img.id == rec.id
            || theirs.len() > diff_ids.len()
            || diff_ids[..theirs.len()] != theirs[..]
        {
            continue;
        }
        let Ok(config) = store.image_config(&img.id) else {
            continue;
        };
        let n_rows = match config.history() {
            Some(h) if !h.is_empty() => h.len(),
            _ => theirs.len(),
        };
        candidates.push((img, n_rows));
    }
    let mut layers = 0;
    for (k, (row, id)) in rows.iter().zip(older.iter_mut()).enumerate() {
        if !row.empty_layer {
            layers += 1;
        }
        *id = candidates
            .iter()
            .find(|(img, n_rows)| *n_rows == k + 1 && img.layers.len() == layers)
            .map(|(img, _)| img.id);
    }
    Ok(ids)
}

/// Docker's `stringutils.Ellipsis`.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = super::image_arg::store_for(ctx, std::slice::from_ref(&args.image))?;
    let rec = image_arg(ctx, &store, &args.image)?;
    let config = store.image_config(&rec.id)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut layer = rec.layers.iter();
    match config.history() {
        Some(h) if !h.is_empty() => {
            for e in h {
                let empty = e.empty_layer().unwrap_or(false);
                let size = if empty {
                    0
                } else {
                    layer.next().map_or(0, |l| layer_size(&store, l))
                };
                rows.push(Row {
                    id: None,
                    created: e.created().clone(),
                    created_by: e.created_by().clone().unwrap_or_default(),
                    size,
                    comment: e.comment().clone().unwrap_or_default(),
                    empty_layer: empty,
                });
            }
        }
        _ => {
            // No history: one row per layer, as Docker shows such images.
            for l in &rec.layers {
                rows.push(Row {
                    id: None,
                    created: config.created().clone(),
                    created_by: String::new(),
                    size: layer_size(&store, l),
                    comment: String::new(),
                    empty_layer: false,
                });
            }
        }
    }
    for (id, row) in local_ids(&store, &rec, &rows)?
        .into_iter()
        .zip(rows.iter_mut())
    {
        row.id = id.map(|d| d.to_string());
    }
    rows.reverse();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let now = crate::time::now_unix();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let id = match &r.id {
                Some(id) if args.no_trunc => id.clone(),
                Some(id) => id
                    .strip_prefix("sha256:")
                    .unwrap_or(id)
                    .chars()
                    .take(12)
                    .collect(),
                None => "<missing>".into(),
            };
            let created = if args.human {
                crate::time::human_since_str(r.created.as_deref(), now)
            } else {
                r.created.clone().unwrap_or_default()
            };
            let by = r.created_by.replace('\t', " ");
            let by = if args.no_trunc {
                by
            } else {
                ellipsis(&by, CREATED_BY_WIDTH)
            };
            let size = if args.human {
                human_size(r.size)
            } else {
                r.size.to_string()
            };
            vec![id, created, by, size, r.comment.clone()]
        })
        .collect();
    // `-q` (global): the IMAGE column only, as `docker history -q`.
    if ctx.quiet {
        for r in &table {
            println!("{}", r[0]);
        }
        return Ok(());
    }
    if let Some(t) = args.format.as_deref().map(Template::parse).transpose()? {
        let values: Vec<serde_json::Value> = table
            .iter()
            .zip(&rows)
            .map(|(r, row)| {
                serde_json::json!({
                    "ID": r[0],
                    "CreatedSince": crate::time::human_since_str(row.created.as_deref(), now),
                    "CreatedAt": row.created.clone().unwrap_or_default(),
                    "CreatedBy": r[2],
                    "Size": r[3],
                    "Comment": r[4],
                })
            })
            .collect();
        return t.print(
            &values,
            &[
                ("ID", "IMAGE"),
                ("CreatedSince", "CREATED"),
                ("CreatedAt", "CREATED AT"),
                ("CreatedBy", "CREATED BY"),
            ],
        );
    }
    let created = if args.human { "CREATED" } else { "CREATED AT" };
    print_table(&["IMAGE", created, "CREATED BY", "SIZE", "COMMENT"], &table);
    Ok(())
}
