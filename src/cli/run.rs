//! `layerfs bundle` and `layerfs run`: a container's mount as an OCI runtime bundle, and a
//! convenience that runs one with crun or runc. Not an engine: no networking (the
//! container gets an empty network namespace), no image building, no restart policy.
//!
//! Both mount through `layerfs mount` (this binary, as a child), so the container is
//! the same as any other: `ps`, `diff`, `commit` and `umount` see it.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::Context;
use super::image_arg::image_arg;
use crate::container::bundle::{self, BundleOptions};
use crate::store::Store;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs bundle busybox ./bb --name web     # ./bb/rootfs mounted, ./bb/config.json
  runc run --bundle ./bb web                 # (crun run --bundle ./bb web)
  layerfs umount web")]
pub struct BundleArgs {
    /// Image: name[:tag], id, or anything `load` accepts.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The bundle directory (made if missing): DIR/rootfs and DIR/config.json.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Container name (default: one is made up).
    #[arg(long)]
    pub name: Option<String>,
    /// Run as this user instead of the image's: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Replaces the image's Cmd in config.json.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  layerfs run --rm busybox echo hello       # prints hello; nothing is kept
  layerfs run --name web busybox            # the image's command; web's layer is kept
  layerfs diff web                          # what it changed")]
pub struct RunArgs {
    /// Remove the container (its writable layer) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name (default: one is made up).
    #[arg(long)]
    pub name: Option<String>,
    /// The OCI runtime: crun or runc, or a path [default: crun if installed, else runc].
    #[arg(long)]
    pub runtime: Option<String>,
    /// Run as this user instead of the image's: name, uid, name:group or uid:gid.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Image: name[:tag], id, or anything `load` accepts.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The command, replacing the image's Cmd.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

/// This binary, run again for a subcommand against the same store.
fn layerfs(ctx: &Context) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("finding the layerfs binary")?;
    let mut c = Command::new(exe);
    c.arg("--root").arg(&ctx.root);
    for _ in 0..ctx.verbose {
        c.arg("-v");
    }
    Ok(c)
}

/// Runs `layerfs ARGS`; its stdout.
fn layerfs_ok(ctx: &Context, args: &[OsString]) -> anyhow::Result<String> {
    let out = layerfs(ctx)?
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running layerfs")?;
    if !out.status.success() {
        bail!(
            "`layerfs {}` failed",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the image's `User` is someone other than root: the mount must then let other
/// users in (the container's processes are not the mounting user's).
fn runs_as_other_user(spec: &str) -> bool {
    spec.split(':').any(|p| !matches!(p, "" | "0" | "root"))
}

/// Makes the bundle at `dir`; returns the container's name.
/// What the container is to run.
struct Process<'a> {
    cmd: &'a [String],
    user: Option<&'a str>,
}

fn make_bundle(
    ctx: &Context,
    image: &str,
    dir: &Path,
    name: Option<&str>,
    process: &Process<'_>,
) -> anyhow::Result<String> {
    let store = Store::open(&ctx.root)?;
    let typed = image;
    let image = image_arg(ctx, &store, typed)?;
    // The child mount is given the name typed when it is one of the image's (the
    // container then records it, for `ps`), else the id (a path is not loaded twice).
    let named = crate::image::Reference::parse(typed)
        .ok()
        .filter(|r| image.tags.contains(r))
        .map_or_else(|| image.id.to_string(), |r| r.to_string());
    let config = store.image_config(&image.id)?;
    let user = match process.user {
        Some(u) => u.to_string(),
        None => config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default(),
    };
    // Root of a user namespace: the container shares it (every id its map gives); a
    // plain user: the container gets one mapping its root to them.
    let in_userns = crate::sys::is_root() && !crate::sys::is_host_root();
    let rootless = !crate::sys::is_root();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("rootfs"))
        .with_context(|| format!("making {}", dir.join("rootfs").display()))?;
    let mut args: Vec<OsString> = vec![
        "-q".into(),
        "mount".into(),
        named.into(),
        dir.join("rootfs").into(),
    ];
    if let Some(n) = name {
        args.extend(["--name".into(), n.into()]);
    }
    if runs_as_other_user(&user) && !rootless {
        // Kept private by the bundle directory's 0700.
        args.push("--allow-other".into());
    }
    let made = layerfs_ok(ctx, &args)?;
    let container = made.lines().last().unwrap_or_default().trim().to_string();
    let result = (|| -> anyhow::Result<()> {
        let rootfs = std::fs::File::open(dir.join("rootfs")).context("opening the mount")?;
        let opts = BundleOptions {
            hostname: container.clone(),
            cmd: process.cmd.to_vec(),
            user: process.user.map(str::to_string),
            rootless: rootless.then(crate::ownership::own_ids),
            in_userns,
        };
        let spec = bundle::runtime_config(&config, rootfs.as_fd(), &opts)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join("config.json"))
            .context("writing config.json")?;
        f.write_all(&serde_json::to_vec_pretty(&spec)?)
            .context("writing config.json")?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = layerfs_ok(ctx, &["umount".into(), container.clone().into()]);
        return Err(e);
    }
    Ok(container)
}

pub fn bundle(ctx: &Context, a: BundleArgs) -> anyhow::Result<()> {
    let process = Process {
        cmd: &a.cmd,
        user: a.user.as_deref(),
    };
    let name = make_bundle(ctx, &a.image, &a.dir, a.name.as_deref(), &process)?;
    println!("{name}");
    Ok(())
}

/// The runtime to use: as asked, else crun when installed, else runc. crun refuses a
/// host whose cgroup v2 hierarchy has controllers while v1 is mounted too (the "hybrid"
/// layout of systemd before v247, still found): runc then, when it is there.
fn runtime(asked: Option<&str>) -> String {
    if let Some(r) = asked {
        return r.to_string();
    }
    let installed = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty());
    if installed("crun") && !(hybrid && installed("runc")) {
        "crun"
    } else {
        "runc"
    }
    .to_string()
}

/// Where a plain user's runtime keeps its state (root's runtime uses its default).
fn state_dir(rt: &str) -> anyhow::Result<Option<PathBuf>> {
    if crate::sys::is_host_root() {
        return Ok(None);
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty() && Path::new(d).is_dir())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("layerfs-{}", nix::unistd::geteuid()))
        });
    let name = Path::new(rt)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "runtime".into());
    let d = base.join(format!("layerfs-{name}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
        .with_context(|| format!("making the runtime's state directory {}", d.display()))?;
    Ok(Some(d))
}

pub fn run(ctx: &Context, a: RunArgs) -> anyhow::Result<()> {
    let rt = runtime(a.runtime.as_deref());
    let state = state_dir(&rt)?;
    let dir = std::env::temp_dir().join(format!("layerfs-run-{}", std::process::id()));
    let process = Process {
        cmd: &a.cmd,
        user: a.user.as_deref(),
    };
    let name = make_bundle(ctx, &a.image, &dir, a.name.as_deref(), &process)?;
    let mut c = Command::new(&rt);
    if let Some(s) = &state {
        c.arg("--root").arg(s);
    }
    c.args(["run", "--bundle"])
        .arg(&dir)
        .arg(format!("layerfs-{name}"));
    let status = c.status();
    // However the container ended, the mount goes, and with --rm the container.
    let mut cleanup = Vec::new();
    if let Err(e) = layerfs_ok(ctx, &["umount".into(), name.clone().into()]) {
        cleanup.push(e);
    }
    if a.rm
        && let Err(e) = layerfs_ok(ctx, &["rm".into(), name.clone().into()])
    {
        cleanup.push(e);
    }
    let _ = std::fs::remove_file(dir.join("config.json"));
    let _ = std::fs::remove_dir(dir.join("rootfs"));
    let _ = std::fs::remove_dir(&dir);
    let status = status.with_context(|| {
        format!("running {rt} (install crun or runc, or name one with --runtime)")
    })?;
    if let Some(e) = cleanup.into_iter().next() {
        return Err(e);
    }
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    if code != 0 {
        return Err(super::ExitWith(u8::try_from(code).unwrap_or(1)).into());
    }
    Ok(())
}
