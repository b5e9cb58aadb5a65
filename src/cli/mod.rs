//! The command line: parse, set up logging, run one subcommand, turn errors into a
//! message and an exit code. Each subcommand lives in its own file and wires the library
//! together (a container's mount lifecycle is `crate::container`'s); `daemon.rs` runs a
//! FUSE daemon for `mount` and `layerfs-overlay` alike: detached, with its readiness pipe.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commit;
mod completions;
pub mod daemon;
mod df;
mod diff;
mod export;
mod format;
mod history;
mod image_arg;
mod images;
mod inspect;
mod layers;
mod load;
mod mount;
pub mod overlay;
mod piped;
mod prune;
mod ps;
mod rm;
mod rmi;
mod run;
mod save;
mod tag;
mod umount;
mod which;

/// layerfs: container images as a union filesystem.
#[derive(Debug, Parser)]
#[command(
    name = "layerfs",
    version,
    about,
    propagate_version = true,
    after_help = "\
Examples:
  layerfs load busybox.tar && layerfs images
  layerfs mount busybox /mnt/web --name web && layerfs ps
  layerfs export web -o rootfs.tar && layerfs umount web
  layerfs save busybox --format oci -o busybox-oci
  layerfs help mount                   # each command's options and examples"
)]
pub struct Cli {
    /// The store directory [default: /var/lib/layerfs as root, else $XDG_DATA_HOME/layerfs]
    #[arg(long, global = true, env = "LAYERFS_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// No progress bars, only results and errors; for `images` and `ps`, only ids and
    /// names (as `docker images -q`, `docker ps -q`).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load an image (OCI layout, OCI archive, docker-archive) into the store.
    Load(load::Args),
    /// List images: REPOSITORY TAG IMAGE ID CREATED SIZE.
    Images(images::Args),
    /// Print an image's metadata as JSON.
    Inspect(inspect::Args),
    /// Show an image's history, like `docker history`.
    History(history::Args),
    /// Remove an image reference; layers go once nothing uses them.
    Rmi(rmi::Args),
    /// Remove unreferenced layers and leftovers of interrupted work.
    Prune(prune::Args),
    /// Mount an image with a writable container layer.
    Mount(mount::Args),
    /// Unmount a container (or any layerfs mount point).
    Umount(umount::Args),
    /// List containers (-s: with their sizes).
    Ps(ps::Args),
    /// Remove containers (their writable layers).
    Rm(rm::Args),
    /// Make a new image from a container's changes.
    Commit(commit::Args),
    /// List what a container changed: A (added), C (changed), D (deleted).
    Diff(diff::Args),
    /// Which layer a path comes from, and what the other layers say about it.
    Which(which::Args),
    /// Per layer: size, files added / changed / deleted, bytes later layers hide.
    Layers(layers::Args),
    /// Give an image another name.
    Tag(tag::Args),
    /// Show disk usage: images, containers, layers (shared layers counted once).
    Df(df::Args),
    /// Save images as a docker-archive, an OCI layout or an OCI archive.
    Save(save::Args),
    /// Write a container's merged tree as one tar, like `docker export`.
    Export(export::Args),
    /// Mount a container as an OCI runtime bundle: DIR/rootfs and DIR/config.json.
    Bundle(run::BundleArgs),
    /// Run an image's command in a container with crun or runc (no networking).
    Run(run::RunArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// `df` and `prune` as Docker spells them: `system df`, `system prune`.
    #[command(after_help = "\
Examples:
  layerfs system df        # the same as `layerfs df`
  layerfs system prune     # the same as `layerfs prune`")]
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

/// `layerfs system …`, for Docker habits.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// The same as `layerfs df`.
    Df(df::Args),
    /// The same as `layerfs prune`.
    Prune(prune::Args),
}

/// What every subcommand gets besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub quiet: bool,
    pub verbose: u8,
}

/// Default store location: `/var/lib/layerfs` for the host's root, else the XDG data
/// dir (root of a user namespace included: `unshare -Urm` keeps the caller's HOME, and
/// /var/lib is not its to write).
pub fn default_root() -> PathBuf {
    if crate::sys::is_host_root() {
        return PathBuf::from("/var/lib/layerfs");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("layerfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/layerfs")
}

/// Sets up `env_logger`: RUST_LOG wins, else the -v count.
pub fn init_logging(verbose: u8) {
    // fuser's own warnings (e.g. its unmount after an external `umount`) are noise below -vv.
    let level = match verbose {
        0 => "warn,fuser=error",
        1 => "info,fuser=error",
        2 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// Raises the soft limit of open files to the hard one, as Go programs do at start: the
/// mount daemon keeps an fd per directory the kernel holds, and nothing here should fail
/// for want of fds the user may have. No walk counts on it: each holds a bounded number
/// of fds ([`crate::fdtree`]). Failing to raise it is no error.
pub fn raise_nofile_limit() {
    if let Err(e) = crate::sys::raise_nofile_limit() {
        log::debug!("raising the limit of open files: {e}");
    }
}

/// Prints an error chain the way users read it and returns the failure exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(ExitWith(code)) = err.downcast_ref::<ExitWith>() {
        return ExitCode::from(*code);
    }
    if err.downcast_ref::<StdoutClosed>().is_some() {
        log::debug!("stdout was closed by its reader");
        return ExitCode::from(128 + libc::SIGPIPE as u8);
    }
    eprintln!("layerfs: error: {err:#}");
    ExitCode::FAILURE
}

/// The command ends with this status and nothing more to say (`run` passes on the
/// container's).
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Stdout was closed by its reader (`layerfs export C | head`): the command ends without a
/// word, with the status of a process that SIGPIPE ended, as tar and other tools do.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// `r` of writing to stdout, a broken pipe in its causes taken for [`StdoutClosed`].
pub fn on_stdout<T>(r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| {
        let broken = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken { StdoutClosed.into() } else { e }
    })
}

/// Entry point of the `layerfs` binary.
pub fn main() -> ExitCode {
    raise_nofile_limit();
    // `mount -t fuse.layerfs SRC DIR -o lowerdir=…` (mount.fuse3) runs this binary with the
    // fuse-overlayfs command line: hand it to the drop-in.
    if overlay::looks_like_overlay_invocation(std::env::args_os().skip(1)) {
        return overlay::main();
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let ctx = Context {
        root: cli.root.clone().unwrap_or_else(default_root),
        quiet: cli.quiet,
        verbose: cli.verbose,
    };
    // Commands that write stop cleanly on Ctrl-C/SIGTERM (see `crate::interrupt`); the
    // mount daemon has its own signal handling, the rest are quick.
    let stoppable = match &cli.command {
        Command::Load(_)
        | Command::Save(_)
        | Command::Commit(_)
        | Command::Export(_)
        | Command::Inspect(_)
        | Command::History(_) => true,
        // A mount that loads its image first; not one that serves (`-f`, and the
        // detached daemon, which runs as `mount … --foreground`): the daemon waits for
        // these signals itself.
        Command::Mount(a) => !a.foreground,
        _ => false,
    };
    if stoppable && let Err(e) = crate::interrupt::arm() {
        log::warn!("Ctrl-C will not clean up: {e}");
    }
    let result = match cli.command {
        Command::Load(a) => load::run(&ctx, a),
        Command::Images(a) => images::run(&ctx, a),
        Command::Inspect(a) => inspect::run(&ctx, a),
        Command::History(a) => history::run(&ctx, a),
        Command::Rmi(a) => rmi::run(&ctx, a),
        Command::Prune(a) => prune::run(&ctx, a),
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Umount(a) => umount::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Rm(a) => rm::run(&ctx, a),
        Command::Commit(a) => commit::run(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Which(a) => which::run(&ctx, a),
        Command::Layers(a) => layers::run(&ctx, a),
        Command::Tag(a) => tag::run(&ctx, a),
        Command::Df(a) => df::run(&ctx, a),
        Command::Save(a) => save::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Bundle(a) => run::bundle(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::Completions(a) => completions::run(a),
        Command::System { command } => match command {
            SystemCommand::Df(a) => df::run(&ctx, a),
            SystemCommand::Prune(a) => prune::run(&ctx, a),
        },
    };
    finish(result)
}

/// The exit of a command: an error reported, or an interruption (see `crate::interrupt`).
fn finish(result: anyhow::Result<()>) -> ExitCode {
    if !crate::interrupt::settle() {
        // The signal thread is ending the process.
        loop {
            std::thread::park();
        }
    }
    match (result, crate::interrupt::requested()) {
        (Ok(()), _) => ExitCode::SUCCESS,
        // Whatever failed after a stop was asked for failed because of it.
        (Err(e), Some(sig)) => {
            log::debug!("after a stop was asked for: {e:#}");
            crate::interrupt::remove_own_staging();
            eprintln!("layerfs: interrupted");
            ExitCode::from(128u8.saturating_add(u8::try_from(sig).unwrap_or(0)))
        }
        (Err(e), None) => report(&e),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (unique flags, valid defaults), which only debug
    /// builds run by themselves.
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
