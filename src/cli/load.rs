//! `layerfs load`: load an image source into the store; print its id last.

use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Context;
use crate::image::Source;
use crate::store::progress::{LayerEvent, Progress};
use crate::store::{Store, load};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs load busybox.tar                       # docker save archive (all its images)
  layerfs load busybox.tar.gz                    # gzip- or zstd-compressed, as docker load
  layerfs load < busybox.tar                     # from stdin, as docker load
  layerfs load oci:./busybox-oci:latest          # one tag of an OCI layout
  layerfs load alpine.oci.tar --tag alpine:3     # an OCI archive, named
  skopeo copy docker://alpine oci:alpine:3 && layerfs load oci:alpine:3")]
pub struct Args {
    /// What to load: an OCI layout directory, an OCI archive, a docker-archive (format
    /// detected), or oci:PATH[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF].
    /// Without SOURCE or -i: the archive on stdin (`layerfs load < FILE`).
    #[arg(value_name = "SOURCE")]
    pub source: Option<String>,
    /// The archive to load, as `docker load -i FILE` spells it (the same as SOURCE).
    #[arg(short, long, value_name = "FILE", conflicts_with = "source")]
    pub input: Option<String>,
    /// Name the image NAME[:TAG]. Replaces the name a tag-only ref name would get from
    /// the directory or archive name; full names in the source (RepoTags) are kept too.
    #[arg(short, long, value_name = "NAME[:TAG]")]
    pub tag: Option<String>,
    /// Refuse a layer whose files add up to more than SIZE (apparent sizes, sparse holes
    /// included): bytes, or with a binary unit K, M, G, T (64G = 64 GiB).
    #[arg(long, value_name = "SIZE", env = MAX_LAYER_SIZE_ENV, default_value = "64G", value_parser = parse_size)]
    pub max_layer_size: u64,
}

/// The environment variable that sets `--max-layer-size` (also for images that other
/// commands load, e.g. `layerfs mount oci:DIR`).
pub const MAX_LAYER_SIZE_ENV: &str = "LAYERFS_MAX_LAYER_SIZE";

/// Parses `123`, `512K`, `64G`, `1T` (binary units; `KiB`/`KB`/`k` spellings too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64G, 512M, 1073741824)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    num.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `--max-layer-size` for loads that other commands do: from the environment, else the
/// default.
pub(crate) fn max_layer_size_from_env() -> anyhow::Result<u64> {
    match std::env::var(MAX_LAYER_SIZE_ENV) {
        Ok(v) => parse_size(&v).map_err(|e| anyhow::anyhow!("{MAX_LAYER_SIZE_ENV}: {e}")),
        Err(_) => Ok(crate::store::unpack::DEFAULT_MAX_LAYER_SIZE),
    }
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let Some(given) = args.input.clone().or(args.source.clone()) else {
        return run_stdin(ctx, args);
    };
    let source = Source::parse(&given)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{given}: no such file or directory (give a path, or oci:PATH[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:REF])"
        )
    })?;
    let store = Store::open(&ctx.root)?;
    let opts = options(&args, false);
    // The bars are gone (drawn for the last time) before anything is printed.
    let loaded = load::load_all(&store, &source, &opts, &Bars::new(ctx.quiet))
        .with_context(|| format!("cannot load {source}"))?;
    print_loaded(ctx, &loaded);
    Ok(())
}

/// `layerfs load < FILE`, as `docker load` reads stdin: the archive (plain or
/// compressed) is staged in the store's `tmp/` first, since reading it seeks.
fn run_stdin(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        bail!(
            "nothing to load: give SOURCE (layerfs load FILE), -i FILE, or an archive on \
             stdin (layerfs load < FILE); stdin is a terminal"
        );
    }
    let store = Store::open(&ctx.root)?;
    // Held shared until the staged archive is gone: a load or prune clears `tmp/` only
    // with the lock exclusive.
    let _lock = store.lock_shared()?;
    let staged = super::piped::Staged::new(&store, "stdin", "archive")?;
    if staged.fill_from_stdin()? == 0 {
        bail!("nothing to load: stdin is empty (layerfs load < FILE)");
    }
    let source = Source {
        format: crate::image::detect(&staged.path).context("the archive on stdin")?,
        path: staged.path.clone(),
        selector: None,
    };
    let loaded = load::load_all(
        &store,
        &source,
        &options(&args, true),
        &Bars::new(ctx.quiet),
    )
    .context("cannot load the archive on stdin")?;
    print_loaded(ctx, &loaded);
    Ok(())
}

fn options(args: &Args, nameless: bool) -> load::LoadOptions {
    load::LoadOptions {
        tag: args.tag.clone(),
        max_layer_size: args.max_layer_size,
        nameless,
    }
}

/// `Loaded image: NAME` lines (unless `-q`), then each image id.
fn print_loaded(ctx: &Context, loaded: &[load::Loaded]) {
    for l in loaded {
        if !ctx.quiet {
            for n in &l.names {
                println!("Loaded image: {}", n.familiar());
            }
        }
        println!("{}", l.id);
    }
}

/// A load's progress on stderr when it is a terminal (and `-q` was not given): one bar
/// per layer of the image being loaded, in image order.
pub(crate) struct Bars {
    shown: bool,
    /// The current image's bars, each image under a display of its own.
    image: Mutex<Option<(MultiProgress, Vec<ProgressBar>)>>,
}

impl Bars {
    pub(crate) fn new(quiet: bool) -> Bars {
        Bars {
            shown: !quiet && std::io::stderr().is_terminal(),
            image: Mutex::new(None),
        }
    }

    fn bar(&self, i: usize) -> Option<ProgressBar> {
        if !self.shown {
            return None;
        }
        let image = self.image.lock().ok()?;
        image.as_ref()?.1.get(i).cloned()
    }
}

impl Progress for Bars {
    fn image(&self, labels: &[String]) {
        if !self.shown {
            return;
        }
        let Ok(mut image) = self.image.lock() else {
            return;
        };
        // The previous image's display ends before this one's starts.
        *image = None;
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let total = labels.len();
        let bars = labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let pb = multi.add(ProgressBar::new(0));
                pb.set_style(style.clone());
                // `sha256:` left out, 12 hex digits as Docker shows ids.
                let short: String = label.chars().skip(7).take(12).collect();
                pb.set_prefix(format!("layer {}/{total} {short}", i + 1));
                pb
            })
            .collect();
        *image = Some((multi, bars));
    }

    fn layer(&self, i: usize, event: LayerEvent) {
        let Some(b) = self.bar(i) else { return };
        match event {
            LayerEvent::Present => b.finish_with_message("already present"),
            LayerEvent::Start(size) => {
                b.set_message("unpacking");
                b.set_length(size);
            }
            LayerEvent::Read(n) => b.inc(n),
            LayerEvent::Done => b.finish_with_message("done"),
            LayerEvent::Failed => b.abandon_with_message("failed"),
        }
    }
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
    fn size_arguments() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("64G"), Ok(64 << 30));
        // The documented default of --max-layer-size is the library's.
        assert_eq!(
            parse_size("64G"),
            Ok(crate::store::unpack::DEFAULT_MAX_LAYER_SIZE)
        );
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

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
