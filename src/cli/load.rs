//! `layerfs load`: load an image source into the store; print its id last.

use anyhow::Context as _;

use super::Context;
use crate::image::Source;
use crate::store::{ImageRecord, Store, load};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs load busybox.tar                       # docker save archive (all its images)
  layerfs load busybox.tar.gz                    # gzip- or zstd-compressed, as docker load
  layerfs load oci:./busybox-oci:latest          # one tag of an OCI layout
  layerfs load alpine.oci.tar --tag alpine:3     # an OCI archive, named
  skopeo copy docker://alpine oci:alpine:3 && layerfs load oci:alpine:3")]
pub struct Args {
    /// What to load: an OCI layout directory, an OCI archive, a docker-archive (format
    /// detected), or oci:PATH[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF].
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Name the image NAME[:TAG]. Replaces the name a tag-only ref name would get from
    /// the directory or archive name; full names in the source (RepoTags) are kept too.
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub tag: Option<String>,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let source = Source::parse(&args.source)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no such file or directory (give a path, or oci:PATH[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF])",
            args.source
        )
    })?;
    let store = Store::open(&ctx.root)?;
    let opts = load::LoadOptions {
        tag: args.tag,
        quiet: ctx.quiet,
    };
    let loaded =
        load::load_all(&store, &source, &opts).with_context(|| format!("cannot load {source}"))?;
    for l in loaded {
        if !ctx.quiet {
            for n in &l.names {
                println!("Loaded image: {}", n.familiar());
            }
        }
        println!("{}", l.id);
    }
    Ok(())
}

/// An IMAGE argument of any command: something `load` accepts (loaded first, quietly
/// unless progress is wanted), else a name, id or id prefix in the store.
pub(crate) fn image_arg(ctx: &Context, store: &Store, arg: &str) -> anyhow::Result<ImageRecord> {
    if let Some(source) = Source::parse(arg)? {
        let opts = load::LoadOptions {
            tag: None,
            quiet: ctx.quiet,
        };
        let id =
            load::load(store, &source, &opts).with_context(|| format!("cannot load {source}"))?;
        return store
            .image(&id)?
            .ok_or_else(|| anyhow::anyhow!("image {id} vanished from the store"));
    }
    Ok(store.resolve_image(arg)?)
}

/// Docker's `HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant digits.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[unit])
}

/// Prints rows as columns the way Docker's tabwriter does: each column as wide as its
/// widest cell plus 3 spaces, at least 10, the last column unpadded.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            s.push_str(c);
            if i < last {
                let col = (widths[i] + PADDING).max(MIN_WIDTH);
                s.push_str(&" ".repeat(col - c.chars().count()));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(131), "131B");
        assert_eq!(human_size(1982256), "1.98MB");
        assert_eq!(human_size(4_270_000), "4.27MB");
        assert_eq!(human_size(5_000_000), "5MB");
        assert_eq!(human_size(12_340_000), "12.3MB");
    }
}
