//! What an IMAGE argument means: an image in the store, or a source to load first.
//!
//! Docker never reads a path where a name is meant, so a name in the store wins. A path is
//! taken when it is spelled as one (`./x`, `../x`, `/x`, `x/`, a transport such as
//! `oci:x`) or when no image has that name. When both could be meant (a store image and a
//! path of that bare spelling), the store image is used and stderr says so.

use std::path::Path;

use anyhow::Context as _;

use super::Context;
use super::load::{Bars, max_layer_size_from_env};
use crate::image::Source;
use crate::store::{ImageRecord, Store, load};

/// The transports [`Source::parse`] recognises.
const TRANSPORTS: [&str; 3] = ["oci:", "oci-archive:", "docker-archive:"];

/// True when `arg` can only be a path: the user spelled it as one.
pub(crate) fn spelled_as_path(arg: &str) -> bool {
    arg == "."
        || arg == ".."
        || arg.starts_with('/')
        || arg.starts_with("./")
        || arg.starts_with("../")
        || arg.ends_with('/')
        || TRANSPORTS.iter().any(|t| arg.starts_with(t))
}

/// The path a bare `arg` would be loaded from, when one exists there: `arg` itself, or
/// PATH of `PATH:TAG` (as [`Source::parse`] reads it).
fn existing_path(arg: &str) -> Option<&str> {
    if Path::new(arg).exists() {
        return Some(arg);
    }
    let (path, tag) = arg.rsplit_once(':')?;
    (!path.is_empty() && !tag.contains('/') && Path::new(path).exists()).then_some(path)
}

/// Says on stderr that the bare `arg` was taken for `what` in the store (`image NAME`)
/// although a path of that spelling exists, and how to write the path.
pub(crate) fn note_if_path_too(arg: &str, what: &str) {
    let Some(path) = existing_path(arg) else {
        return;
    };
    let kind = if Path::new(path).is_dir() {
        "directory"
    } else {
        "file"
    };
    let which = if path == arg {
        format!("the {kind}")
    } else {
        format!("the {kind} ./{path}")
    };
    eprintln!("layerfs: note: {arg:?} is the {what} in the store; write ./{arg} for {which}");
}

/// What an IMAGE argument stands for.
enum Meant {
    Stored(Box<ImageRecord>),
    Source(Source),
}

/// Decides what `arg` means (see the module docs); loads nothing.
fn meaning(store: &Store, arg: &str) -> anyhow::Result<Meant> {
    if spelled_as_path(arg) {
        return match Source::parse(arg)? {
            Some(s) => Ok(Meant::Source(s)),
            None => Err(crate::error::Error::NotFound(arg.into()).into()),
        };
    }
    let not_stored = match store.resolve_image(arg) {
        Ok(rec) => {
            // Named as it was found: by the tag `arg` means, else the image's own name.
            let name = crate::image::Reference::parse(arg)
                .ok()
                .filter(|r| rec.tags.contains(r))
                .map_or_else(|| rec.display_name(), |r| r.familiar());
            note_if_path_too(arg, &format!("image {name}"));
            return Ok(Meant::Stored(Box::new(rec)));
        }
        Err(e) => e,
    };
    // No such image: a path of that name, if there is one.
    match Source::parse(arg) {
        Ok(Some(s)) => Ok(Meant::Source(s)),
        Ok(None) => Err(not_stored.into()),
        Err(e) => match existing_path(arg) {
            Some(p) => Err(anyhow::Error::new(e).context(format!(
                "{arg:?} is no image in the store, and ./{p} is no image to load"
            ))),
            None => Err(not_stored.into()),
        },
    }
}

/// The image an IMAGE argument of any command stands for, loaded first (quietly unless
/// progress is wanted) when it is a source; also whether it was loaded.
pub(crate) fn resolve(
    ctx: &Context,
    store: &Store,
    arg: &str,
) -> anyhow::Result<(ImageRecord, bool)> {
    let source = match meaning(store, arg)? {
        Meant::Stored(rec) => return Ok((*rec, false)),
        Meant::Source(s) => s,
    };
    let opts = load::LoadOptions {
        tag: None,
        max_layer_size: max_layer_size_from_env()?,
        nameless: false,
    };
    let id = load::load(store, &source, &opts, &Bars::new(ctx.quiet))
        .with_context(|| format!("cannot load {source}"))?;
    let rec = store
        .image(&id)?
        .ok_or_else(|| anyhow::anyhow!("image {id} vanished from the store"))?;
    Ok((rec, true))
}

/// The store for a command whose IMAGE arguments may be sources to load (`inspect
/// ./x.tar`): made when missing only if one of `args` is such a source, since loading it
/// needs a store; otherwise a missing store is [`crate::error::Error::NoStore`].
pub(crate) fn store_for(ctx: &Context, args: &[String]) -> anyhow::Result<Store> {
    if ctx.root.symlink_metadata().is_err()
        && args.iter().any(|a| matches!(Source::parse(a), Ok(Some(_))))
    {
        return Ok(Store::open(&ctx.root)?);
    }
    Ok(Store::open_existing(&ctx.root)?)
}

/// [`resolve`], the image only.
pub(crate) fn image_arg(ctx: &Context, store: &Store, arg: &str) -> anyhow::Result<ImageRecord> {
    Ok(resolve(ctx, store, arg)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_spellings() {
        for p in [
            "./busybox",
            "../x",
            "/tmp/x",
            "busybox/",
            ".",
            "oci:x",
            "oci-archive:x.tar",
            "docker-archive:x.tar:a:1",
        ] {
            assert!(spelled_as_path(p), "{p}");
        }
        for n in [
            "busybox",
            "big:1",
            "big.tar",
            "localhost:5000/x:1",
            "sha256:0123",
        ] {
            assert!(!spelled_as_path(n), "{n}");
        }
    }
}
