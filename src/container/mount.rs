//! Picking the container of a mount, and what its daemon serves: the library side of
//! `layerfs mount` (the CLI parses, checks the mount point and FUSE, starts the daemon
//! and prints).
//!
//! The container is locked from the moment it is picked (looked up by name, or created
//! locked) until its daemon is done with it: the detached daemon inherits the very lock
//! its `layerfs mount` took ([`adopt`]), so `rm` (or another mount) never finds it free
//! in between (see `container/dir.rs`). A container its daemon serves is refused
//! ([`Error::AlreadyMounted`]); one held for a moment — a commit reading it, a mount
//! being set up, a daemon starting or letting go, an `rm` — is waited for, without the
//! store lock, and looked up again ([`super::holder`]); so is a container made under the
//! name asked for since it was looked up (then it is the one mounted, if it is of the
//! image asked for). A container made for a mount that fails is removed again
//! ([`discard`]).

use std::fs::File;

use super::holder::{self, Take, Waiter, Why};
use super::{Container, Layers};
use crate::error::{Error, Result};
use crate::store::{ImageRecord, LockGuard, Store};
use crate::union::Stack;

/// What to mount, as asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// An image, or (without `name`) maybe the name of an existing container.
    pub image: &'a str,
    /// The container's name: mounted again if it exists, else created.
    pub name: Option<&'a str>,
    pub read_only: bool,
}

/// A container picked for a mount, with its lock held.
pub type Locked = (Container, LockGuard);

/// What a mount serves: the image, and the container (locked) unless the image alone is
/// mounted read-only; `true` when the container was created for this mount.
pub type Picked = (ImageRecord, Option<Locked>, bool);

/// What one look at the request gave.
enum Look<T> {
    /// Found, and locked.
    Ready(T),
    /// The container was removed, or one was made under its name, meanwhile: look again,
    /// as if this command had come after that one.
    Again,
    /// Container `name` is held for a moment by another command: wait (without the store
    /// lock) and look again.
    Wait(String, Why),
}

impl<T> Look<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Look<U> {
        match self {
            Look::Ready(t) => Look::Ready(f(t)),
            Look::Again => Look::Again,
            Look::Wait(n, why) => Look::Wait(n, why),
        }
    }
}

/// Takes the lock of container `c` for a mount.
fn lock_for_mount(c: &Container) -> Result<Look<LockGuard>> {
    match holder::try_take(c) {
        Ok(Take::Got(g)) => Ok(Look::Ready(g)),
        Ok(Take::Mounted(m)) => Err(already_mounted(c, &m)),
        Ok(Take::Wait(why)) => Ok(Look::Wait(c.record.name.clone(), why)),
        Err(Error::UnknownContainer(_)) => Ok(Look::Again),
        Err(e) => Err(e),
    }
}

/// Refuses container `c` for `image` unless it was made from it.
fn check_image(c: &Container, image: &ImageRecord) -> Result<()> {
    if c.record.image != image.id.to_string() {
        return Err(Error::OtherImage {
            name: c.record.name.clone(),
            image: c.record.image.clone(),
            wanted: image.id.to_string(),
            wanted_name: image.display_name(),
        });
    }
    Ok(())
}

/// Container `name`, which must exist and be of `image`, locked.
fn existing_container(store: &Store, name: &str, image: &ImageRecord) -> Result<Look<Locked>> {
    match super::open(store, name)? {
        Some(c) => {
            check_image(&c, image)?;
            Ok(lock_for_mount(&c)?.map(|g| (c, g)))
        }
        None => Err(Error::NoContainerToMount(name.to_string())),
    }
}

/// The container to mount, locked: the named one (checked against the image), or a new
/// one (`true`: created now).
fn container_for(
    store: &Store,
    req: &Request<'_>,
    image: &ImageRecord,
) -> Result<Look<(Locked, bool)>> {
    let name = req.name;
    if let Some(n) = name
        && let Some(c) = super::open(store, n)?
    {
        check_image(&c, image)?;
        return Ok(lock_for_mount(&c)?.map(|g| ((c, g), false)));
    }
    match super::create(store, name, image, &created_as(req.image, image)) {
        Ok(l) => Ok(Look::Ready((l, true))),
        // Made by another command since we looked: that one is mounted (or refused).
        Err(Error::ContainerExists(_)) if name.is_some() => Ok(Look::Again),
        Err(e) => Err(e),
    }
}

/// What a new container records as the image it was made from (Docker's `Config.Image`,
/// which `ps` shows while it still names that image): the name typed when it is one of
/// the image's, the id when an id was typed, else (a path loaded) the image's first name.
fn created_as(typed: &str, image: &ImageRecord) -> String {
    if let Ok(r) = crate::image::Reference::parse(typed)
        && image.tags.contains(&r)
    {
        return r.to_string();
    }
    let hex = typed.strip_prefix("sha256:").unwrap_or(typed);
    if hex.is_empty() || !image.id.hex().starts_with(hex) {
        if let Some(t) = image.tags.first() {
            return t.to_string();
        }
    }
    image.id.to_string()
}

/// `mount NAME DIR` where NAME is an existing container: that container and its image.
fn container_by_name(store: &Store, arg: &str) -> Result<Option<(Container, ImageRecord)>> {
    if !super::valid_name(arg) {
        return Ok(None);
    }
    let Some(c) = super::open(store, arg)? else {
        return Ok(None);
    };
    let Some(image) = super::image_record(store, &c)? else {
        return Err(Error::ImageGone {
            container: arg.to_string(),
            image: c.record.image.clone(),
        });
    };
    Ok(Some((c, image)))
}

/// Looks the request up and locks the container; `image_arg` finds (or loads) the image
/// the request names.
fn pick_once<E: From<Error>>(
    store: &Store,
    req: &Request<'_>,
    image_arg: &impl Fn(&str) -> std::result::Result<ImageRecord, E>,
) -> std::result::Result<Look<Picked>, E> {
    let by_name = match req.name {
        None => container_by_name(store, req.image)?,
        Some(_) => None,
    };
    if let Some((c, image)) = by_name {
        // A container named alone: mounted again (read-only with --read-only).
        return Ok(lock_for_mount(&c)?.map(|g| (image, Some((c, g)), false)));
    }
    let image = image_arg(req.image)?;
    Ok(match (req.read_only, req.name) {
        // The image alone.
        (true, None) => Look::Ready((image, None, false)),
        // An existing container's layer, read-only.
        (true, Some(n)) => existing_container(store, n, &image)?.map(|l| (image, Some(l), false)),
        (false, _) => {
            container_for(store, req, &image)?.map(|(l, created)| (image, Some(l), created))
        }
    })
}

/// The lock `layerfs mount` took for container `name` and handed to this detached daemon
/// (`inherited`): its container exists, and is never created here.
fn adopt<E: From<Error>>(
    store: &Store,
    req: &Request<'_>,
    name: &str,
    inherited: File,
    image_arg: &impl Fn(&str) -> std::result::Result<ImageRecord, E>,
) -> std::result::Result<Picked, E> {
    let image = image_arg(req.image)?;
    let Some(c) = super::open(store, name)? else {
        return Err(Error::UnknownContainer(name.into()).into());
    };
    check_image(&c, &image)?;
    let g = c.adopt_lock(inherited)?;
    Ok((image, Some((c, g)), false))
}

/// How often [`pick`] looks again after a container vanished under it (each time, an
/// `rm` won) or appeared (another mount made it).
const PICK_ATTEMPTS: usize = 5;

/// Looks the request up and locks the container, with the store lock held shared (a
/// concurrent rmi/prune cannot remove the image between the lookup and the container
/// record, or, read-only, the mount record, that protects it); again while containers
/// vanish or appear under it, and after waiting, without the store lock, while another
/// command holds the container for a moment. `inherited`: the lock of container `name`,
/// handed over by the `layerfs mount` that started this daemon. `hold` records a
/// read-only mount of the image alone (by the process that serves it).
pub fn pick<H, E: From<Error>>(
    store: &Store,
    req: &Request<'_>,
    inherited: Option<(&str, File)>,
    image_arg: impl Fn(&str) -> std::result::Result<ImageRecord, E>,
    hold: impl Fn(&Picked) -> std::result::Result<H, E>,
) -> std::result::Result<(Picked, H), E> {
    if let Some((name, file)) = inherited {
        let _lock = store.lock_shared()?;
        let r = adopt(store, req, name, file, &image_arg)?;
        let h = hold(&r)?;
        return Ok((r, h));
    }
    let mut again = 0;
    let mut waiter: Option<Waiter> = None;
    loop {
        let look = {
            let _lock = store.lock_shared()?;
            match pick_once(store, req, &image_arg)? {
                Look::Ready(r) => {
                    let h = hold(&r)?;
                    return Ok((r, h));
                }
                other => other,
            }
        };
        match look {
            Look::Wait(name, why) => waiter.get_or_insert_with(|| Waiter::new(&name)).wait(why)?,
            _ => {
                again += 1;
                if again >= PICK_ATTEMPTS {
                    return Err(Error::MountRaced(req.image.to_string()).into());
                }
            }
        }
    }
}

/// Container `c` is mounted (`m`): by its daemon, which says where.
fn already_mounted(c: &Container, m: &holder::Mounted) -> Error {
    let at = match &m.mountpoint {
        Some(mp) => format!(" at {}", mp.display()),
        None => c.at_mountpoint(),
    };
    Error::AlreadyMounted {
        name: c.record.name.clone(),
        at,
    }
}

/// Removes a container that was created for a mount that failed (nothing was written
/// to it); a failure to do so is only logged, the mount's error is what matters.
pub fn discard(store: &Store, c: Container, lock: LockGuard) {
    let name = c.record.name.clone();
    if let Err(e) = super::discard_new(store, c, lock) {
        log::warn!("removing container {name} after its mount failed: {e}");
    }
}

/// The stack a mount of container `c` of `image` serves: writable, or `read_only` (read
/// as every reader of the container reads it: frozen, its hard-link index included,
/// nothing written). `c`'s record keeps its spellings from now on (a record of an older
/// version has none yet).
pub fn stack(
    store: &Store,
    c: &mut Container,
    image: &ImageRecord,
    read_only: bool,
) -> Result<Stack> {
    let layers = Layers::of(store, c, image)?;
    c.record.styles = Some(layers.styles);
    let name = &c.record.name;
    if read_only {
        layers
            .frozen()
            .map_err(|e| Error::io_what(format!("opening the layers of container {name}"), e))
    } else {
        layers.writable().map_err(|e| {
            Error::io_what(
                format!("opening the layers of container {name} for writing"),
                e,
            )
        })
    }
}
