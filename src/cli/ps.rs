//! `layerfs ps`: containers, their image, when they were made, their state and where they
//! are mounted, as `docker ps` lists containers. As `docker ps` lists running containers
//! and `-a` all of them, `ps` lists the mounted containers (and those whose daemon died
//! with their mount left behind: `stale`) and `-a` all of them. Sizes cost a walk of each
//! writable layer, so, as with Docker, they come only when asked: `-s` shows them as
//! `docker ps -s` does, the writable layer then the virtual size (the image below it too);
//! a `--format` that names a size asks for them too. Read-only mounts of an image alone
//! (no container) are listed too, without a name, STATUS `mounted (read-only)`.

use serde_json::{Value, json};

use super::Context;
use super::format::Template;
use super::load::{human_size, print_table};
use crate::container;
use crate::container::holder;
use crate::mountinfo::{self, MountEntry};
use crate::store::{Store, mounts as store_mounts};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs ps                                   # mounted containers (and stale ones)
  layerfs ps -a                                # every container
  layerfs ps -aq                               # names only
  layerfs ps -s                                # with sizes: 2kB (virtual 3.03MB)
  layerfs ps --format '{{.Names}}\\t{{.Status}}'
  layerfs ps -a --size --json

Fields for --format: .Names .Image .ImageID .State .Status .MountPoint .CreatedAt
.RunningFor .Size .VirtualSize (a size field computes sizes, as -s does)")]
pub struct Args {
    /// Show every container, not only mounted ones.
    #[arg(short, long)]
    pub all: bool,
    /// Show sizes: the writable layer, and (virtual) with the image below it.
    #[arg(short, long)]
    pub size: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Go-template-like format (see the examples).
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "json")]
    pub format: Option<String>,
}

/// What a container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A daemon serves it.
    Mounted,
    /// Its daemon is gone but its mount is still there (reads fail with ENOTCONN).
    Stale,
    Unmounted,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Mounted => "mounted",
            State::Stale => "stale",
            State::Unmounted => "unmounted",
        }
    }

    fn status(self, name: &str) -> String {
        match self {
            State::Mounted => "mounted".into(),
            State::Stale => format!("stale: daemon gone (layerfs umount {name})"),
            State::Unmounted => "unmounted".into(),
        }
    }
}

/// The state of container `c` and where it is mounted, given what is mounted (`mounts`,
/// read with `c`'s record before its daemon is asked here). Mounted is what its daemon
/// says (`crate::container::holder`): a daemon that is starting, or whose mount has ended, does not
/// count. Stale is a mount of it left behind with no daemon: a daemon that unmounts and
/// exits in between (it clears the record's mount point, then lets go of the lock) would
/// look stale on those older reads, so a stale look is checked again on a fresh record
/// and mount table.
pub fn state(
    store: &Store,
    c: &container::Container,
    mounts: &[MountEntry],
) -> (State, Option<String>) {
    let daemon_says = |c: &container::Container| {
        holder::mounted_now(c).ok().flatten().map(|m| {
            m.mountpoint
                .map(|p| p.display().to_string())
                .or_else(|| c.record.mountpoint.clone())
        })
    };
    if let Some(mp) = daemon_says(c) {
        return (State::Mounted, mp);
    }
    if !left_mounted(c, mounts) {
        return (State::Unmounted, None);
    }
    let fresh = container::open(store, &c.record.name).ok().flatten();
    let mounts = mountinfo::read().unwrap_or_default();
    match fresh {
        Some(f)
            if !f.held_exclusive() && daemon_says(&f).is_none() && left_mounted(&f, &mounts) =>
        {
            (State::Stale, f.record.mountpoint)
        }
        _ => (State::Unmounted, None),
    }
}

/// True when `c`'s record names a mount point that holds a layerfs mount of `c`.
fn left_mounted(c: &container::Container, mounts: &[MountEntry]) -> bool {
    let source = format!("{}:{}", mountinfo::LAYERFS_SOURCE_PREFIX, c.record.name);
    c.record.mountpoint.as_ref().is_some_and(|mp| {
        mounts
            .iter()
            .any(|m| m.mount_point.as_os_str() == mp.as_str() && m.source == source)
    })
}

/// STATUS of a read-only mount of an image alone.
const READ_ONLY_STATUS: &str = "mounted (read-only)";

/// The NAME cell: `-` for a read-only mount of an image alone.
fn name_cell(r: &Value) -> String {
    r["name"].as_str().unwrap_or("-").to_string()
}

/// `sha256:<hex>` as Docker shows ids: 12 hex digits.
fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

/// The IMAGE column of container `c`, as Docker's: the image as it was named when the
/// container was made while that name still points to it, else the short image id
/// (after `rmi` of that tag, even when another tag of the image remains). Records of
/// older versions, which did not keep the name, show the image's first name.
fn image_column(
    c: &crate::store::containers::ContainerRecord,
    image: Option<&crate::store::ImageRecord>,
    refs: &std::collections::BTreeMap<String, crate::digest::Digest>,
) -> String {
    match (&c.image_name, image) {
        (Some(n), _) if refs.get(n).is_some_and(|d| d.to_string() == c.image) => {
            crate::image::Reference::parse(n).map_or_else(|_| n.clone(), |r| r.familiar())
        }
        (None, Some(i)) => i.display_name(),
        _ => short_id(&c.image),
    }
}

/// `docker ps -s`'s SIZE: the writable layer, then the virtual size.
fn size_cell(size: u64, virtual_size: u64) -> String {
    format!(
        "{} (virtual {})",
        human_size(size),
        human_size(virtual_size)
    )
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open_existing(&ctx.root)?;
    let template = args.format.as_deref().map(Template::parse).transpose()?;
    // As `docker ps --format '{{.Size}}'`: a template that shows a size computes sizes.
    let sizes = !ctx.quiet
        && (args.size
            || args
                .format
                .as_deref()
                .is_some_and(|f| f.to_ascii_lowercase().contains("size")));
    let mounts = mountinfo::read().unwrap_or_default();
    let now = crate::time::now_unix();
    let refs = store.refs()?;
    let mut rows: Vec<Value> = Vec::new();
    for c in container::all(&store)? {
        let (st, mp) = state(&store, &c, &mounts);
        if !args.all && st == State::Unmounted {
            continue;
        }
        let image = container::image_of(&c)
            .ok()
            .and_then(|id| store.image(&id).ok().flatten());
        let image_size = image.as_ref().map_or(0, |i| i.size());
        let image_name = image_column(&c.record, image.as_ref(), &refs);
        let mut row = json!({
            "name": c.record.name,
            "image": image_name,
            "image_id": c.record.image,
            "state": st.name(),
            "status": st.status(&c.record.name),
            "mountpoint": mp,
            "created": c.record.created,
            "running_for": crate::time::human_since_str(Some(&c.record.created), now),
        });
        if sizes {
            let size = c.size();
            row["size"] = size.into();
            row["virtual_size"] = (image_size + size).into();
        }
        rows.push(row);
    }
    // Read-only mounts of an image alone: mounted, with no container (no name).
    for m in store_mounts::live(&store)? {
        let r = &m.record;
        let image = crate::digest::Digest::parse(&r.image)
            .ok()
            .and_then(|id| store.image(&id).ok().flatten());
        let mut row = json!({
            "name": Value::Null,
            "image": image.as_ref().map_or_else(|| short_id(&r.image), |i| i.display_name()),
            "image_id": r.image,
            "state": "mounted",
            "status": READ_ONLY_STATUS,
            "mountpoint": r.mountpoint,
            "created": r.created,
            "running_for": crate::time::human_since_str(Some(&r.created), now),
            "read_only": true,
        });
        if sizes {
            let size = image.as_ref().map_or(0, |i| i.size());
            row["size"] = 0.into();
            row["virtual_size"] = size.into();
        }
        rows.push(row);
    }
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |v: &Value, k: &str| v[k].as_u64();
    let mountpoint = |v: &Value| v["mountpoint"].as_str().unwrap_or("-").to_string();
    // `-q` (global): names only, as `docker ps -q` prints ids (a read-only mount of an
    // image has none: nothing to give `rm` or `commit`).
    if ctx.quiet {
        for r in rows.iter().filter(|r| !r["name"].is_null()) {
            println!("{}", s(r, "name"));
        }
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if let Some(t) = template {
        let values: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = json!({
                    "Names": name_cell(r),
                    "Name": name_cell(r),
                    "Image": s(r, "image"),
                    "ImageID": s(r, "image_id"),
                    "State": s(r, "state"),
                    "Status": s(r, "status"),
                    "MountPoint": mountpoint(r),
                    "CreatedAt": s(r, "created"),
                    "RunningFor": s(r, "running_for"),
                });
                if let (Some(size), Some(virt)) = (n(r, "size"), n(r, "virtual_size")) {
                    v["Size"] = size_cell(size, virt).into();
                    v["VirtualSize"] = human_size(virt).into();
                }
                v
            })
            .collect();
        return t.print(
            &values,
            &[
                ("Names", "NAMES"),
                ("Name", "NAME"),
                ("ImageID", "IMAGE ID"),
                ("MountPoint", "MOUNTPOINT"),
                ("VirtualSize", "VIRTUAL SIZE"),
                ("CreatedAt", "CREATED AT"),
                ("RunningFor", "CREATED"),
            ],
        );
    }
    let mut header = vec!["NAME", "IMAGE", "CREATED", "STATUS", "MOUNTPOINT"];
    if sizes {
        header.push("SIZE");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                name_cell(r),
                s(r, "image"),
                s(r, "running_for"),
                s(r, "status"),
                mountpoint(r),
            ];
            if let (Some(size), Some(virt)) = (n(r, "size"), n(r, "virtual_size")) {
                cells.push(size_cell(size, virt));
            }
            cells
        })
        .collect();
    print_table(&header, &table);
    Ok(())
}
