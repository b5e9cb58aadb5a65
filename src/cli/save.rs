//! `layerfs save IMAGE… -o OUT`: images as a docker-archive, an OCI layout or an OCI
//! archive (see `store/save.rs`).

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::{Context as _, bail};

use super::Context;
use super::image_arg::{note_if_path_too, resolve, spelled_as_path};
use crate::image::output::Target;
use crate::image::{Compression, Reference};
use crate::store::Store;
use crate::store::save::{self, SaveFormat, SaveImage, SaveOptions};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// `docker save`'s archive (`docker load -i`), layers uncompressed by default.
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// A tar archive of an OCI image layout.
    OciArchive,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompressArg {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs save myapp:v2 -o myapp.tar                        # docker-archive, for docker load
  layerfs save myapp:v2 base:1 -o both.tar                  # several images, shared layers once
  layerfs save myapp:v2 | gzip > myapp.tar.gz              # to stdout when not a terminal
  layerfs save myapp:v2 --format oci -o myapp-oci/          # OCI layout (tags in index.json)
  layerfs save myapp:v2 --format oci-archive --compress zstd -o myapp.oci.tar
  skopeo copy oci:myapp-oci:v2 docker://registry.local/myapp:v2")]
pub struct Args {
    /// Images: name[:tag] (a name without a tag: every tag of that repository), id, id
    /// prefix, or anything `load` accepts.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Where to write: a file (archives; a regular file there is replaced, mode 0600) or
    /// a new or empty directory (--format oci, mode 0700); never a symlink, device or FIFO.
    /// Without -o: an archive to stdout when it is not a terminal, as `docker save`.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: FormatArg,
    /// Layer compression [default: none for docker-archive, else as each layer was loaded].
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Compression threads [default: number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// True when `arg` names a repository without a tag (`busybox`, `localhost:5000/x`).
fn is_name_only(arg: &str) -> bool {
    let last = arg.rsplit('/').next().unwrap_or(arg);
    !last.contains(':') && !arg.contains('@')
}

/// The images an argument stands for, with the names to save them under (Docker's rules:
/// `repo:tag` that name; `repo` every tag of the repository; an id no name).
fn requests_for(ctx: &Context, store: &Store, arg: &str) -> anyhow::Result<Vec<SaveImage>> {
    // A name in the store wins over a path of that spelling (see `image_arg`).
    if !spelled_as_path(arg)
        && is_name_only(arg)
        && let Ok(wanted) = Reference::parse(arg)
    {
        let mut out: Vec<SaveImage> = Vec::new();
        for (name, id) in store.refs()? {
            let Ok(r) = Reference::parse(&name) else {
                continue;
            };
            if r.familiar_name() != wanted.familiar_name() {
                continue;
            }
            let Some(image) = store.image(&id)? else {
                continue;
            };
            out.push(SaveImage {
                image,
                names: vec![r],
            });
        }
        if !out.is_empty() {
            note_if_path_too(arg, &format!("repository {}", wanted.familiar_name()));
            return Ok(out);
        }
    }
    let (image, loaded) = resolve(ctx, store, arg)?;
    let names = match Reference::parse(arg) {
        // Loaded from a source: the names it was given.
        _ if loaded => image.tags.clone(),
        Ok(r) if image.tags.contains(&r) => vec![r],
        _ => Vec::new(),
    };
    Ok(vec![SaveImage { image, names }])
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let format = match args.format {
        FormatArg::DockerArchive => SaveFormat::DockerArchive,
        FormatArg::Oci => SaveFormat::Oci,
        FormatArg::OciArchive => SaveFormat::OciArchive,
    };
    // Before any work: an output we may not write is refused at once.
    let target = match format {
        SaveFormat::Oci => Target::SaveLayout,
        _ => Target::SaveArchive,
    };
    match &args.output {
        Some(out) => crate::image::output::check(out, target)?,
        None if format == SaveFormat::Oci => bail!(
            "--format oci writes a directory, which cannot go to stdout: give -o DIR (or \
             --format oci-archive for one file)"
        ),
        None if std::io::stdout().is_terminal() => bail!(
            "refusing to write an archive to a terminal: give -o FILE or redirect stdout \
             (layerfs save IMAGE > FILE)"
        ),
        None => {}
    }
    let store = super::image_arg::store_for(ctx, &args.images)?;
    // Shared from the lookup on: no rmi or prune removes an image between its lookup and
    // its saving (which would fail on a store file that is gone); nor, while an archive
    // for stdout is staged in `tmp/`, clears it.
    let _lock = store.lock_shared()?;
    let mut requests = Vec::new();
    for arg in &args.images {
        requests.extend(requests_for(ctx, &store, arg)?);
    }
    let compress = args.compress.map(|c| match c {
        CompressArg::Zstd => Compression::Zstd,
        CompressArg::Gzip => Compression::Gzip,
        CompressArg::None => Compression::None,
    });
    if let Some(w) = readers_warning(format, compress) {
        eprintln!("layerfs: warning: {w}");
    }
    let opts = SaveOptions {
        format,
        compress,
        threads: args
            .threads
            .unwrap_or_else(crate::image::compress::default_threads),
        rewrite_commit: Some(crate::commit::rewrite_layer),
    };
    let Some(out) = &args.output else {
        // The archive's writer seeks back to blob headers: it is staged, then copied.
        let staged = super::piped::Staged::new(&store, "save", "archive.tar")?;
        save::save(&store, requests, &staged.path, &opts).context("cannot save to stdout")?;
        return staged.drain_to_stdout();
    };
    let saved = save::save(&store, requests, out, &opts)
        .with_context(|| format!("cannot save to {}", out.display()))?;
    log::info!(
        "saved {} image(s), {} layer blob(s) ({} bytes) to {}",
        saved.images,
        saved.layers,
        saved.layer_bytes,
        out.display()
    );
    Ok(())
}

/// Common readers that cannot read what is about to be written (checked in
/// tests/save_readers.rs): said as a warning, the archive is still what was asked for.
fn readers_warning(format: SaveFormat, compress: Option<Compression>) -> Option<&'static str> {
    match (format, compress) {
        (SaveFormat::DockerArchive, Some(Compression::Zstd)) => Some(
            "zstd layers in a docker-archive: Docker Engine before 23.0 (Debian 12's 20.10 \
             included) cannot `docker load` it; podman, skopeo and layerfs can \
             (--compress gzip or none: every docker load)",
        ),
        (SaveFormat::Oci | SaveFormat::OciArchive, Some(Compression::Zstd)) => Some(
            "zstd layers: umoci 0.4 (Debian 12's) cannot unpack them; skopeo, podman, \
             containerd 1.5+ and layerfs can (--compress gzip: every OCI reader)",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_only() {
        assert!(is_name_only("busybox"));
        assert!(is_name_only("localhost:5000/x"));
        assert!(!is_name_only("busybox:1"));
        assert!(!is_name_only("localhost:5000/x:2"));
    }
}
