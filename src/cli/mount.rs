//! `layerfs mount IMAGE DIR`: the image's stored layers, merged, with the container's
//! writable layer on top (or none with `--read-only`). `layerfs mount CONTAINER DIR`
//! mounts an existing container again by its name alone.
//!
//! Before anything is created: DIR must be a directory and not a mount point already
//! (unless `--overmount`; a non-empty DIR is only warned about), and `/dev/fuse` must be
//! usable (else the message says how to make it so); a plain user's `--allow-other`
//! needs `user_allow_other` in /etc/fuse.conf, and `--suid`/`--dev` are said to do
//! nothing for them. A container created for a mount that then fails is removed again.
//!
//! The container is picked and locked by [`crate::container::mount`] (which says how a
//! container held by another command is waited for); the detached daemon inherits the
//! very lock this command took. A detached daemon's error, whenever it comes before the
//! mount is live, is this command's; a daemon that fails before it mounts leaves the
//! lock to this command, which removes a container it made while still holding it.
//!
//! Without `--foreground` this re-runs itself detached (see `daemon.rs`) and returns once
//! the mount is live, printing the container name.
//!
//! Exposure: the mount goes wherever the user says, not under a private directory as
//! Docker's and podman's do, so by default only the mounting user's processes may enter
//! it (for root: root processes, such as a container that runc runs as root), and it is
//! `nosuid,nodev`: the image's setuid binaries and device nodes do nothing on the host.
//! `--allow-other`, `--suid` and `--dev` opt in, one by one.
//!
//! A read-only mount holds its image through a record its daemon keeps locked (see
//! `store/mounts.rs`), as a container does through its record: `rmi` and `prune` leave
//! the image and its layers alone while it is mounted.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use super::daemon::{self, Ready, Serve};
use super::image_arg::image_arg;
use crate::container::mount::Request;
use crate::container::{self, mount};
use crate::fuse::{Access, IdMap, Ids, MountConfig};
use crate::mountinfo;
use crate::store::{ImageRecord, Store, mounts};
use crate::union::{Options, Stack};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs mount busybox /mnt/web --name web          # new container web (or web again)
  layerfs mount web /mnt/web                         # container web again, by its name
  layerfs mount --read-only --name web busybox /mnt/ro   # web's layer, read-only
  layerfs mount --read-only alpine:3 /mnt/alpine     # the image alone, read-only
  layerfs mount oci:./app-oci:v2 /mnt/app            # load and mount in one go
  layerfs mount busybox /mnt/x -f -v                 # in the foreground, with logs
  runc run --bundle ./bundle web                     # with /mnt/web as the bundle's rootfs
  layerfs umount web")]
pub struct Args {
    /// Image: name[:tag], id, id prefix, or anything `load` accepts (loaded first); or,
    /// without --name, the name of an existing container, which is mounted again.
    #[arg(value_name = "IMAGE|CONTAINER")]
    pub image: String,
    /// Where to mount.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Container name: mounts that container again if it exists, else creates it.
    #[arg(long)]
    pub name: Option<String>,
    /// Mount the image alone, read-only, without a container layer (with --name, or a
    /// container named alone: that container's layer, read-only).
    #[arg(long)]
    pub read_only: bool,
    /// Stay attached and log to stderr (-v, RUST_LOG) until unmounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Worker threads of the daemon [default: number of cores, 2 to 8].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Let every local user enter the mount (else only the mounting user's processes:
    /// for root, root processes such as runc's container run as root). Needed when a
    /// container runs as another user or in a user namespace. Risk: anyone who can reach
    /// DIR reads what the image's modes allow, and, with --suid/--dev, gets root through
    /// its setuid binaries and opens its devices; keep DIR under a private 0700 directory.
    #[arg(long)]
    pub allow_other: bool,
    /// Honour the image's setuid/setgid bits (default: nosuid). Risk: whoever may enter
    /// the mount runs the image's setuid-root binaries as root on the host.
    #[arg(long)]
    pub suid: bool,
    /// Honour the image's device nodes (default: nodev, opening one fails). Risk: whoever
    /// may enter the mount opens host devices through them (/dev/kmsg, disks), as far as
    /// the nodes' modes allow.
    #[arg(long)]
    pub dev: bool,
    /// Mount even when DIR is already a mount point (the new mount hides the old one
    /// until it is unmounted).
    #[arg(long)]
    pub overmount: bool,
    /// Show owner ids through a mapping, as podman's --uidmap does:
    /// CONTAINER:HOST:COUNT[:CONTAINER:HOST:COUNT…] (the image's id CONTAINER shows as
    /// HOST; ids outside every range show as 65534). Nothing is copied or re-owned.
    #[arg(long, value_name = "MAP", value_parser = check_ids)]
    pub uidmap: Option<String>,
    /// The same for group ids.
    #[arg(long, value_name = "MAP", value_parser = check_ids)]
    pub gidmap: Option<String>,
    /// Do not answer the `user.layerfs.layer` xattr (which layer serves a file, read by
    /// name with `getfattr -n user.layerfs.layer FILE`; never listed or stored).
    #[arg(long)]
    pub no_layer_xattr: bool,
}

fn check_ids(s: &str) -> Result<String, String> {
    Ids::parse(s).map(|_| s.to_string())
}

/// How owners show by default: as the image says, except for a plain user outside a
/// user namespace, to whom every file shows as theirs (squashed, as fuse-overlayfs'
/// `squash_to_uid` does), so the mount is theirs to read and write while diff and commit
/// still see the image's owners; they act as the container's root (see
/// [`Ids::user_as_root`]), which is what a rootless runc container's root is.
fn default_ids() -> IdMap {
    if crate::sys::is_root() || crate::sys::in_user_namespace() {
        return IdMap::default();
    }
    IdMap {
        uid: Ids::user_as_root(nix::unistd::geteuid().as_raw()),
        gid: Ids::user_as_root(nix::unistd::getegid().as_raw()),
    }
}

impl Args {
    /// The union options these flags ask for.
    fn union_options(&self) -> Options {
        Options {
            layer_xattr: !self.no_layer_xattr,
            ..Options::default()
        }
    }

    /// The FUSE settings these flags ask for.
    fn mount_config(&self, fsname: String, read_only: bool) -> MountConfig {
        MountConfig {
            fsname,
            read_only,
            access: if self.allow_other {
                Access::All
            } else {
                Access::Owner
            },
            dev: self.dev,
            suid: self.suid,
            noatime: false,
            threads: self.threads.unwrap_or_else(super::overlay::default_threads),
            ids: match (&self.uidmap, &self.gidmap) {
                (None, None) => default_ids(),
                (u, g) => {
                    let ids = |m: &Option<String>| {
                        m.as_deref()
                            .and_then(|m| Ids::parse(m).ok())
                            .unwrap_or_default()
                    };
                    IdMap {
                        uid: ids(u),
                        gid: ids(g),
                    }
                }
            },
        }
    }

    /// The flags the detached daemon is given again.
    fn exposure_args(&self) -> Vec<OsString> {
        [
            (self.allow_other, "--allow-other"),
            (self.suid, "--suid"),
            (self.dev, "--dev"),
            (self.overmount, "--overmount"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| flag.into())
        .chain(
            [("--uidmap", &self.uidmap), ("--gidmap", &self.gidmap)]
                .into_iter()
                .filter_map(|(f, v)| v.as_ref().map(|v| format!("{f}={v}").into())),
        )
        .collect()
    }
}

/// The mount point, resolved; refused when it is not a directory, is a dead mount, or
/// is a mount point already (unless `overmount`).
fn check_dir(dir: &Path, overmount: bool) -> anyhow::Result<PathBuf> {
    let dead = |e: &std::io::Error| {
        anyhow::anyhow!(
            "mount point {}: {e}: a mount whose daemon died is there; `layerfs umount {}` \
             removes it (umount(8) for other filesystems)",
            dir.display(),
            dir.display()
        )
    };
    let is_dead = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTCONN);
    let abs = match std::fs::canonicalize(dir) {
        Ok(a) => a,
        Err(e) if is_dead(&e) => return Err(dead(&e)),
        Err(e) => return Err(e).with_context(|| format!("mount point {}", dir.display())),
    };
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("mount point {} is not a directory", dir.display()),
        Err(e) if is_dead(&e) => return Err(dead(&e)),
        Err(e) => return Err(e).with_context(|| format!("mount point {}", dir.display())),
    }
    if !overmount && let Some(m) = mountinfo::at(&abs).context("reading /proc/self/mountinfo")? {
        bail!(
            "{} is already a mount point ({}): a mount there would hide it. Unmount it \
             first, or pass --overmount to mount on top of it",
            abs.display(),
            m.describe()
        );
    }
    Ok(abs)
}

/// Checks that FUSE can be used here before anything is created, and says what to do
/// when it cannot. Without root, fusermount3 (setuid root) opens the device itself, so
/// a device only root may open is fine when fusermount3 is installed.
fn check_fuse() -> anyhow::Result<()> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(FUSE_DEVICE);
    let e = match opened {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let denied = matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
    if denied && !crate::sys::is_root() && fusermount3_installed() {
        return Ok(());
    }
    let hint = daemon::fuse_hint(&e);
    Err(anyhow::Error::new(e).context(format!("cannot open {FUSE_DEVICE} ({hint})")))
}

/// True when `fusermount3` is on PATH.
fn fusermount3_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
}

/// The FUSE device.
const FUSE_DEVICE: &str = "/dev/fuse";

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let mut ready = Ready::from_env();
    let result = run_with(ctx, &args, &mut ready);
    if let Err(e) = &result {
        // A detached daemon's error, whenever it comes before the mount is live, is what
        // `layerfs mount` says (a no-op once the pipe has had its answer).
        ready.fail(e);
    }
    result
}

fn run_with(ctx: &Context, args: &Args, ready: &mut Ready) -> anyhow::Result<()> {
    let detached = ready.detached();
    if !detached {
        check_plain_user(ctx, args, std::path::Path::new(FUSE_CONF))?;
    }
    let store = Store::open(&ctx.root)?;
    let dir = check_dir(&args.dir, args.overmount)?;
    let serving = args.foreground || detached;
    if !detached {
        check_fuse()?;
        warn_if_not_empty(ctx, args, &dir);
    }
    let inherited = if detached {
        daemon::inherited_lock()
    } else {
        None
    };
    let inherited = match (inherited, args.name.as_deref()) {
        (Some(file), Some(name)) => Some((name, file)),
        (Some(_), None) => bail!("a container lock was handed over without a container name"),
        (None, _) => None,
    };
    let req = Request {
        image: &args.image,
        name: args.name.as_deref(),
        read_only: args.read_only,
    };
    let ((image, container, created), hold) = mount::pick(
        &store,
        &req,
        inherited,
        |arg| image_arg(ctx, &store, arg),
        |(image, container, _)| {
            // Only the process that serves the mount holds its image (a container's
            // record holds it otherwise).
            if args.read_only && serving && container.is_none() {
                mounts::hold(&store, &image.id, &dir)
                    .map(Some)
                    .context("recording the read-only mount in the store")
            } else {
                Ok(None)
            }
        },
    )?;

    if !serving {
        warn_exposure(ctx, args, &dir);
        let mut a: Vec<OsString> = vec!["--root".into(), ctx.root.clone().into()];
        for _ in 0..ctx.verbose {
            a.push("-v".into());
        }
        a.extend([
            "mount".into(),
            image.id.to_string().into(),
            dir.clone().into(),
            "--foreground".into(),
        ]);
        if let Some((c, _)) = &container {
            a.extend(["--name".into(), c.record.name.clone().into()]);
        }
        if args.read_only {
            a.push("--read-only".into());
        }
        if let Some(t) = args.threads {
            a.extend(["--threads".into(), t.to_string().into()]);
        }
        if args.no_layer_xattr {
            a.push("--no-layer-xattr".into());
        }
        a.extend(args.exposure_args());
        let log = match &container {
            Some((c, _)) => Some(c.open_log().context("opening the daemon's log file")?),
            None => None,
        };
        // The daemon holds the container's lock from here on (this very lock).
        let spawned = daemon::spawn_detached(&a, log, container.as_ref().map(|(_, l)| l.file()));
        if let Err(e) = spawned {
            // A container made for this mount does not outlive its failure. A daemon
            // that failed before it mounted has left the lock to us (see
            // `container/dir.rs`).
            if created && let Some((c, lock)) = container {
                mount::discard(&store, c, lock);
            }
            return Err(e);
        }
        match container {
            Some((c, lock)) => {
                println!("{}", c.record.name);
                // The daemon's now; unlocking it here would unlock it for the daemon too.
                lock.hand_over();
            }
            None => println!("{}", image.display_name()),
        }
        return Ok(());
    }

    let live = std::cell::Cell::new(false);
    // The container's lock is held until serving is over (see `container/dir.rs`).
    let served = container.as_ref().map(|(c, _)| c);
    let result = serve_container(&store, &image, served, &dir, args, ready, &live);
    if let Err(e) = &result {
        ready.fail(e);
        match container {
            // Only a mount that never went live leaves nothing worth keeping.
            Some((c, lock)) if created && !live.get() => mount::discard(&store, c, lock),
            // A detached daemon that never mounted leaves the lock to the `layerfs mount`
            // that handed it over (it still holds the open file): unlocking it here would
            // let another command in before that one has removed a container it made.
            Some((_, lock)) if detached && !live.get() => lock.hand_over(),
            _ => {}
        }
    }
    drop(hold);
    result
}

/// fusermount3's configuration: whether plain users may pass `allow_other`.
const FUSE_CONF: &str = "/etc/fuse.conf";

/// True when `conf` (fuse.conf's text) has a `user_allow_other` line (`#` starts a comment).
fn allows_other(conf: &str) -> bool {
    conf.lines()
        .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
}

/// What a plain user's mount cannot do, said before anything is made. Outside a user
/// namespace a plain user's mount goes through fusermount3, which refuses `allow_other`
/// unless `conf` allows it (after the store and container were set up, with a message
/// of its own) and always mounts nosuid,nodev. In a user namespace mount(2) is used
/// directly and neither applies.
fn check_plain_user(ctx: &Context, args: &Args, conf: &Path) -> anyhow::Result<()> {
    if crate::sys::is_root() || crate::sys::in_user_namespace() {
        return Ok(());
    }
    if args.allow_other && !allows_other(&std::fs::read_to_string(conf).unwrap_or_default()) {
        bail!(
            "--allow-other needs `user_allow_other` in {}: fusermount3 refuses it to users \
             other than root without it; add that line (as root), or mount without \
             --allow-other",
            conf.display()
        );
    }
    let ignored: Vec<&str> = [(args.suid, "--suid"), (args.dev, "--dev")]
        .into_iter()
        .filter_map(|(on, flag)| on.then_some(flag))
        .collect();
    if !ctx.quiet && !ignored.is_empty() {
        eprintln!(
            "layerfs: warning: {} {} no effect: fusermount3 mounts a plain user's FUSE \
             filesystems nosuid,nodev",
            ignored.join(" and "),
            if ignored.len() > 1 { "have" } else { "has" }
        );
    }
    Ok(())
}

/// Says on stderr that what DIR holds is hidden while the mount is there (the kernel
/// mounts over a non-empty directory without a word); not with --overmount, which
/// consents to hiding.
fn warn_if_not_empty(ctx: &Context, args: &Args, dir: &Path) {
    if ctx.quiet || args.overmount {
        return;
    }
    let holds = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if holds {
        eprintln!(
            "layerfs: warning: {} is not empty: its files are hidden while the mount is there",
            dir.display()
        );
    }
}

/// Says on stderr what the opt-in flags expose (unless `-q`).
fn warn_exposure(ctx: &Context, args: &Args, dir: &Path) {
    if ctx.quiet || !args.allow_other || !(args.suid || args.dev) {
        return;
    }
    let what = match (args.suid, args.dev) {
        (true, true) => "run the image's setuid binaries as their owners and open its devices",
        (true, false) => "run the image's setuid binaries as their owners (root)",
        _ => "open the image's device nodes",
    };
    eprintln!(
        "layerfs: warning: --allow-other: every local user who can reach {} can {what}",
        dir.display()
    );
}

/// Serves the mount; `container`, when there is one, is locked by the caller.
fn serve_container(
    store: &Store,
    image: &ImageRecord,
    container: Option<&container::Container>,
    dir: &Path,
    args: &Args,
    ready: &mut Ready,
    live: &std::cell::Cell<bool>,
) -> anyhow::Result<()> {
    let mut mount = args.mount_config(format!("layerfs:{}", image.display_name()), args.read_only);
    let Some(c) = container else {
        let stack =
            Stack::open(&store.lower_specs(image)?, None).context("opening the image layers")?;
        let serve = Serve {
            stack,
            options: args.union_options(),
            mountpoint: dir.to_path_buf(),
            mount,
        };
        return daemon::serve(serve, ready, || {
            live.set(true);
            println!("{}", image.display_name())
        });
    };
    let mut c = c.clone();
    mount.fsname = format!("layerfs:{}", c.record.name);
    let stack = container::mount::stack(store, &mut c, image, args.read_only)?;
    let serve = Serve {
        stack,
        options: args.union_options(),
        mountpoint: dir.to_path_buf(),
        mount,
    };
    let name = c.record.name.clone();
    let mut record = c.clone();
    let control = c.open_dir()?;
    let result = daemon::serve_with_control(serve, Some(control), ready, || {
        live.set(true);
        if let Err(e) = record.set_mountpoint(store, Some(dir)) {
            log::warn!("recording the mount point of {name}: {e}");
        }
        println!("{name}");
    });
    if let Err(e) = c.set_mountpoint(store, None) {
        log::warn!("clearing the mount point of {}: {e}", c.record.name);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::allows_other;

    #[test]
    fn fuse_conf_user_allow_other() {
        assert!(allows_other("# comment\n  user_allow_other  \n"));
        assert!(allows_other("user_allow_other # users may\n"));
        assert!(!allows_other("#user_allow_other\nmount_max = 1000\n"));
        assert!(!allows_other(""));
    }
}
