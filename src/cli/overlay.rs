//! `layerfs-overlay`: fuse-overlayfs's command line, for containers-storage's
//! `mount_program` and `mount -t fuse.layerfs` (mount.fuse3 runs
//! `PROG SOURCE MOUNTPOINT -o rw,OPTS,dev,suid`).
//!
//! ```text
//! layerfs-overlay [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W[,opts] [SOURCE] MOUNTPOINT
//! ```
//! `lowerdir` is leftmost on top; `\:` escapes a colon and `\,` a comma; relative paths
//! resolve from the current directory; without `upperdir` the mount is read-only.
//! Options we do not support are ignored with a warning, as fuse-overlayfs does; warnings
//! go to syslog (to stderr with `-d`), never to the caller's output. `ro` with an
//! `upperdir` shows the upper layer, read-only. `relatime` (the default), `strictatime`,
//! `noatime` and `nodiratime` decide what reads do to access times. `uidmapping=`,
//! `gidmapping=` (`STORED:SHOWN:COUNT[:…]`, fuse-overlayfs' order, a leading colon allowed), `squash_to_root`,
//! `squash_to_uid=` and `squash_to_gid=` change how owners show, not what is stored;
//! `xattr_permissions=2` keeps ownership in `user.containers.override_stat` records.
//!
//! Who may enter the mount and whether device nodes and setuid bits count are
//! fuse-overlayfs's: as root `allow_other,suid` and `nodev` (libfuse's default), otherwise
//! the mounting user alone and `nosuid,nodev` (fusermount3 forces those); `dev`, `nodev`,
//! `suid`, `nosuid`, `allow_other` and `allow_root` given with `-o` override them, the last
//! one of a pair winning (mount.fuse3 appends `dev,suid`). The caller (containers-storage,
//! fstab) decides, as it does for fuse-overlayfs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::daemon::{self, Ready, Serve};
use crate::fuse::{Access, IdMap, Ids, MountConfig};
use crate::union::{Atime, LayerSpec, Options, Stack, WorkSpec};

/// True when argv (without argv[0]) is a fuse-overlayfs style invocation
/// (`-o …lowerdir=…`), as mount.fuse3 produces for `mount -t fuse.layerfs`.
pub fn looks_like_overlay_invocation(mut args: impl Iterator<Item = OsString>) -> bool {
    args.any(|a| a.to_string_lossy().contains("lowerdir="))
}

/// A parsed command line.
#[derive(Debug, Default, PartialEq)]
pub struct OverlayArgs {
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub source: Option<String>,
    pub foreground: bool,
    pub debug: bool,
    pub read_only: bool,
    /// `dev` / `nodev` as given (the last one wins); `None`: the default.
    pub dev: Option<bool>,
    /// `suid` / `nosuid` as given (the last one wins); `None`: the default.
    pub suid: Option<bool>,
    /// `allow_other` / `allow_root` as given (the last one wins); `None`: the default.
    pub access: Option<Access>,
    pub threads: Option<usize>,
    pub timeout: Option<Duration>,
    /// `relatime` / `strictatime` / `noatime` / `nodiratime` as given.
    pub atime: Option<Atime>,
    /// `uidmapping=` / `gidmapping=` / `squash_to_*`: how owners show.
    pub ids: IdMap,
    /// `xattr_permissions=2`: ownership kept in `user.containers.override_stat`.
    pub owner_marks: bool,
    /// `layer_xattr=0` (layerfs' own option): no `user.layerfs.layer` answer.
    pub no_layer_xattr: bool,
    pub warnings: Vec<String>,
}

/// Splits on `sep` outside `\`-escapes, removing the escapes of `sep` and `\`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep || n == '\\' => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Splits a `-o` value into options, keeping `\:` escapes for the path lists.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(',') => cur.push(','),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

fn absolute(p: &str, cwd: &Path) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

/// Parses fuse-overlayfs's arguments (without argv[0]).
pub fn parse(args: &[String], cwd: &Path) -> anyhow::Result<OverlayArgs> {
    let mut a = OverlayArgs::default();
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-f" => a.foreground = true,
            "-d" | "--debug" => {
                a.debug = true;
                a.foreground = true;
            }
            "-o" => opts.extend(split_options(it.next().context("-o needs a value")?)),
            s if s.starts_with("-o") => opts.extend(split_options(&s[2..])),
            "-s" => a.threads = Some(1),
            s if s.starts_with('-') && s.len() > 1 => {
                a.warnings.push(format!("unknown flag {s} ignored"))
            }
            s => positional.push(s.to_string()),
        }
    }
    for o in opts {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("lowerdir", Some(v)) => {
                a.lowerdirs = split_escaped(v, ':')
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| absolute(&p, cwd))
                    .collect()
            }
            ("upperdir", Some(v)) => {
                a.upperdir = Some(absolute(&split_escaped(v, ':').concat(), cwd))
            }
            ("workdir", Some(v)) => {
                a.workdir = Some(absolute(&split_escaped(v, ':').concat(), cwd))
            }
            ("ro", None) => a.read_only = true,
            ("rw", None) => {}
            ("dev", None) => a.dev = Some(true),
            ("nodev", None) => a.dev = Some(false),
            ("suid", None) => a.suid = Some(true),
            ("nosuid", None) => a.suid = Some(false),
            ("allow_other", None) => a.access = Some(Access::All),
            ("allow_root", None) => a.access = Some(Access::OwnerAndRoot),
            ("atime" | "relatime", None) => a.atime = Some(Atime::Relative),
            ("strictatime", None) => a.atime = Some(Atime::Strict),
            ("noatime", None) => a.atime = Some(Atime::Never),
            // (noatime covers directories already)
            ("nodiratime", None) if a.atime != Some(Atime::Never) => {
                a.atime = Some(Atime::NeverForDirs)
            }
            ("nodiratime" | "diratime", None) => {}
            (
                "exec"
                | "noexec"
                | "default_permissions"
                | "debug"
                | "volatile"
                | "fsync"
                | "async"
                | "sync",
                _,
            ) => {
                if k == "debug" {
                    a.debug = true;
                }
            }
            ("uidmapping", Some(v)) => a.ids.uid = Ids::parse(v).map_err(anyhow::Error::msg)?,
            ("gidmapping", Some(v)) => a.ids.gid = Ids::parse(v).map_err(anyhow::Error::msg)?,
            ("squash_to_root", None) => {
                a.ids.uid = Ids::squashed(0);
                a.ids.gid = Ids::squashed(0);
            }
            ("squash_to_uid", Some(v)) => {
                a.ids.uid = Ids::squashed(v.parse().with_context(|| format!("invalid {o}"))?)
            }
            ("squash_to_gid", Some(v)) => {
                a.ids.gid = Ids::squashed(v.parse().with_context(|| format!("invalid {o}"))?)
            }
            ("xattr_permissions", Some("0")) => a.owner_marks = false,
            ("xattr_permissions", Some("2")) => a.owner_marks = true,
            // layerfs' own: `layer_xattr=0` turns the `user.layerfs.layer` answer off.
            ("layer_xattr", Some("0")) => a.no_layer_xattr = true,
            ("layer_xattr", Some("1")) => a.no_layer_xattr = false,
            ("fsname", Some(v)) => a.source = Some(v.to_string()),
            ("subtype", _) => {}
            ("threaded", Some(v)) => {
                if v == "0" {
                    a.threads = Some(1)
                }
            }
            // try_from: a huge or infinite value is an error, not a panic (found by fuzzing).
            ("timeout", Some(v)) => match v.parse::<f64>().map(Duration::try_from_secs_f64) {
                Ok(Ok(t)) => a.timeout = Some(t),
                _ => bail!("invalid timeout={v}"),
            },
            _ => a
                .warnings
                .push(format!("option {o} is not supported and is ignored")),
        }
    }
    match positional.len() {
        1 => a.mountpoint = absolute(&positional[0], cwd),
        2 => {
            a.source.get_or_insert_with(|| positional[0].clone());
            a.mountpoint = absolute(&positional[1], cwd);
        }
        0 => bail!("no mount point given"),
        _ => bail!("too many arguments: {}", positional.join(" ")),
    }
    if a.lowerdirs.is_empty() {
        bail!("no lowerdir specified");
    }
    if a.upperdir.is_some() && a.workdir.is_none() {
        bail!("upperdir given without workdir");
    }
    Ok(a)
}

impl OverlayArgs {
    /// Who may enter, `dev`, `suid`: what was asked, else fuse-overlayfs's defaults for
    /// `root` (the caller is root) — `allow_other,suid,nodev` — or for anyone else — the
    /// mounting user alone, `nosuid,nodev`.
    pub fn exposure(&self, root: bool) -> (Access, bool, bool) {
        let access = self
            .access
            .unwrap_or(if root { Access::All } else { Access::Owner });
        (access, self.dev.unwrap_or(false), self.suid.unwrap_or(root))
    }

    /// The arguments that re-run this mount in the foreground (for the detached daemon).
    fn foreground_args(&self) -> Vec<OsString> {
        let esc = |p: &Path| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
                .replace(',', "\\,")
        };
        let mut o = format!(
            "lowerdir={}",
            self.lowerdirs
                .iter()
                .map(|p| esc(p))
                .collect::<Vec<_>>()
                .join(":")
        );
        if let (Some(u), Some(w)) = (&self.upperdir, &self.workdir) {
            o.push_str(&format!(",upperdir={},workdir={}", esc(u), esc(w)));
        }
        if self.read_only {
            o.push_str(",ro");
        }
        match self.dev {
            Some(true) => o.push_str(",dev"),
            Some(false) => o.push_str(",nodev"),
            None => {}
        }
        match self.suid {
            Some(true) => o.push_str(",suid"),
            Some(false) => o.push_str(",nosuid"),
            None => {}
        }
        match self.access {
            Some(Access::All) => o.push_str(",allow_other"),
            Some(Access::OwnerAndRoot) => o.push_str(",allow_root"),
            Some(Access::Owner) | None => {}
        }
        if self.threads == Some(1) {
            o.push_str(",threaded=0");
        }
        match self.atime {
            Some(Atime::Relative) => o.push_str(",relatime"),
            Some(Atime::Strict) => o.push_str(",strictatime"),
            Some(Atime::Never) => o.push_str(",noatime"),
            Some(Atime::NeverForDirs) => o.push_str(",nodiratime"),
            None => {}
        }
        if let Some(t) = self.timeout {
            o.push_str(&format!(",timeout={}", t.as_secs_f64()));
        }
        if let Some(s) = &self.source {
            o.push_str(&format!(",fsname={}", s.replace(',', "\\,")));
        }
        for opt in self
            .ids
            .uid
            .options("uid")
            .into_iter()
            .chain(self.ids.gid.options("gid"))
        {
            o.push(',');
            o.push_str(&opt);
        }
        if self.owner_marks {
            o.push_str(",xattr_permissions=2");
        }
        if self.no_layer_xattr {
            o.push_str(",layer_xattr=0");
        }
        vec![
            "-f".into(),
            "-o".into(),
            o.into(),
            self.mountpoint.clone().into(),
        ]
    }
}

/// Default worker threads: enough to overlap I/O, not more than the cores can use.
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("current directory")?;
    let a = parse(args, &cwd)?;
    // Warnings go to the log: callers (containers-storage, scripts) show our output.
    for w in &a.warnings {
        if a.debug {
            log::warn!("{w}");
        } else {
            crate::sys::syslog_warning(&format!("{}: {w}", a.mountpoint.display()));
        }
    }
    let mut ready = Ready::from_env();
    if !a.foreground && !ready.detached() {
        return daemon::spawn_detached(&a.foreground_args(), None, None);
    }
    let result = (|| -> anyhow::Result<()> {
        let mut lowers: Vec<LayerSpec> = a
            .lowerdirs
            .iter()
            .map(|p| LayerSpec::new(p.clone(), true))
            .collect();
        let upper_spec = a.upperdir.as_ref().map(|p| LayerSpec::new(p.clone(), true));
        let read_only = a.read_only || upper_spec.is_none();
        let work = a.workdir.as_deref().map(WorkSpec::from);
        let upper = match (&upper_spec, &work) {
            (Some(u), Some(w)) if !a.read_only => Some((u, w)),
            _ => None,
        };
        // Read-only with an upper directory: the upper layer is read, not written (as
        // the kernel does), so it is the topmost lower layer.
        if upper.is_none()
            && let Some(u) = &upper_spec
        {
            lowers.insert(0, u.clone());
        }
        let stack = Stack::open(&lowers, upper).context("opening the layers")?;
        let mut options = Options::default();
        if let Some(t) = a.timeout {
            options.lower_ttl = t;
            options.upper_ttl = t;
        }
        options.atime = a.atime.unwrap_or_default();
        options.owner_marks = a.owner_marks;
        options.layer_xattr = !a.no_layer_xattr;
        let (access, dev, suid) = a.exposure(nix::unistd::geteuid().is_root());
        let serve = Serve {
            stack,
            options,
            mountpoint: a.mountpoint.clone(),
            mount: MountConfig {
                fsname: a.source.clone().unwrap_or_else(|| "layerfs-overlay".into()),
                read_only,
                access,
                dev,
                suid,
                noatime: a.atime == Some(Atime::Never),
                threads: a.threads.unwrap_or_else(default_threads),
                ids: a.ids.clone(),
            },
        };
        daemon::serve(serve, &mut ready, || {})
    })();
    if let Err(e) = &result {
        ready.fail(e);
    }
    result
}

/// Entry point of `layerfs-overlay` (and of `layerfs` called the fuse-overlayfs way).
pub fn main() -> ExitCode {
    super::raise_nofile_limit();
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!(
            "layerfs-overlay {} (fuse-overlayfs compatible)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: layerfs-overlay [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W[,opts] [SOURCE] MOUNTPOINT\n\
             as fuse-overlayfs: as root allow_other,suid,nodev, else the mounting user alone and\n\
             nosuid,nodev; -o dev|nodev|suid|nosuid|allow_other|allow_root override them"
        );
        return ExitCode::SUCCESS;
    }
    super::init_logging(if args.iter().any(|a| a == "-d" || a.contains("debug")) {
        2
    } else {
        0
    });
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layerfs-overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn huge_or_odd_timeouts_are_errors() {
        for t in [
            "1e300",
            "inf",
            "NaN",
            "-1",
            "22222222222222222222222220.5",
            "x",
        ] {
            let args = s(&["-o", &format!("lowerdir=/l,timeout={t}"), "/m"]);
            assert!(parse(&args, Path::new("/")).is_err(), "timeout={t}");
        }
        let args = s(&["-o", "lowerdir=/l,timeout=0.5", "/m"]);
        let a = parse(&args, Path::new("/")).unwrap();
        assert_eq!(a.timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn parses_the_mount_program_contract() {
        let a = parse(
            &s(&[
                "-o",
                "lowerdir=l/A:l/B,upperdir=U,workdir=W,uidmapping=0:1:2",
                "/mnt/x",
            ]),
            Path::new("/store"),
        )
        .unwrap();
        assert_eq!(
            a.lowerdirs,
            vec![PathBuf::from("/store/l/A"), PathBuf::from("/store/l/B")]
        );
        assert_eq!(a.upperdir, Some(PathBuf::from("/store/U")));
        assert_eq!(a.workdir, Some(PathBuf::from("/store/W")));
        assert_eq!(a.mountpoint, PathBuf::from("/mnt/x"));
        assert_eq!(a.ids.uid.show(0), 1);
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn parses_mount_fuse3_style() {
        let a = parse(
            &s(&["src", "/mnt", "-o", "rw,lowerdir=/a\\:b:/c,dev,suid"]),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            a.lowerdirs,
            vec![PathBuf::from("/a:b"), PathBuf::from("/c")]
        );
        assert_eq!(a.source.as_deref(), Some("src"));
        assert!(a.upperdir.is_none());
    }

    #[test]
    fn rejects_missing_pieces() {
        assert!(parse(&s(&["/mnt"]), Path::new("/")).is_err());
        assert!(
            parse(
                &s(&["-o", "lowerdir=/a,upperdir=/u", "/mnt"]),
                Path::new("/")
            )
            .is_err()
        );
        assert!(parse(&s(&["-o", "lowerdir=/a"]), Path::new("/")).is_err());
    }

    #[test]
    fn dev_suid_and_access_follow_fuse_overlayfs() {
        let p = |o: &str| parse(&s(&["-o", o, "/m"]), Path::new("/")).unwrap();
        // fuse-overlayfs's defaults: as root allow_other,suid and libfuse's nodev.
        let a = p("lowerdir=/a");
        assert_eq!(a.exposure(true), (Access::All, false, true));
        assert_eq!(a.exposure(false), (Access::Owner, false, false));
        // mount.fuse3 appends dev,suid.
        assert_eq!(
            p("rw,lowerdir=/a,dev,suid").exposure(true),
            (Access::All, true, true)
        );
        // nosuid and nodev count separately; the last of a pair wins.
        assert_eq!(
            p("lowerdir=/a,nosuid").exposure(true),
            (Access::All, false, false)
        );
        assert_eq!(
            p("lowerdir=/a,dev,nosuid").exposure(true),
            (Access::All, true, false)
        );
        assert_eq!(
            p("lowerdir=/a,nodev,suid,dev").exposure(true),
            (Access::All, true, true)
        );
        assert_eq!(
            p("lowerdir=/a,suid,nosuid,nodev").exposure(true),
            (Access::All, false, false)
        );
        assert_eq!(
            p("lowerdir=/a,allow_root").exposure(true),
            (Access::OwnerAndRoot, false, true)
        );
        assert_eq!(
            p("lowerdir=/a,allow_other").exposure(false),
            (Access::All, false, false)
        );
        // The detached daemon gets the same answer.
        for o in [
            "lowerdir=/a,dev,nosuid,allow_root",
            "lowerdir=/a,nodev,suid",
        ] {
            let a = p(o);
            let again: Vec<String> = a
                .foreground_args()
                .iter()
                .map(|x| x.to_string_lossy().into_owned())
                .collect();
            let b = parse(&again, Path::new("/")).unwrap();
            assert_eq!(a.exposure(true), b.exposure(true), "{o}");
            assert_eq!(a.exposure(false), b.exposure(false), "{o}");
        }
    }

    #[test]
    fn foreground_args_round_trip() {
        let a = parse(
            &s(&[
                "-o",
                "lowerdir=/a\\:b:/c,upperdir=/u,workdir=/w,uidmapping=:0:1:5:5:0:1,squash_to_gid=7,xattr_permissions=2",
                "/m",
            ]),
            Path::new("/"),
        )
        .unwrap();
        let again: Vec<String> = a
            .foreground_args()
            .iter()
            .map(|x| x.to_string_lossy().into_owned())
            .collect();
        let b = parse(&again, Path::new("/")).unwrap();
        assert_eq!(a.lowerdirs, b.lowerdirs);
        assert_eq!(a.upperdir, b.upperdir);
        assert_eq!((&a.ids, a.owner_marks), (&b.ids, b.owner_marks));
        assert!(!b.ids.is_identity() && b.owner_marks);
        assert!(b.foreground);
    }
}
