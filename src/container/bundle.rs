//! An OCI runtime bundle's `config.json` for a container's mount, from the image's
//! config: what `umoci unpack` writes and `runc run` / `crun run` read. The command is
//! the image's Entrypoint + Cmd (or Cmd replaced by the caller's), its Env, WorkingDir
//! and User; namespaces, mounts and capabilities are Docker's defaults with the network
//! namespace empty (loopback only: no networking is set up). A rootless bundle also gets
//! a user namespace mapping the container's root to the caller, as `runc spec
//! --rootless` writes it.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Docker's default capabilities for a container.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the bundle is for.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    pub hostname: String,
    /// Replaces the image's Cmd when not empty (as `docker run IMAGE CMD…` does).
    pub cmd: Vec<String>,
    /// Replaces the image's User (`docker run --user`).
    pub user: Option<String>,
    /// Rootless: the caller's uid and gid, which the container's root maps to.
    pub rootless: Option<(u32, u32)>,
    /// Not the host's root, but root of a user namespace already (`unshare
    /// --map-auto --map-root-user`, `podman unshare`): the container shares it, with
    /// every id its map gives, and cannot mount a sysfs of its own.
    pub in_userns: bool,
}

/// The process user: uid, gid and supplementary gids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional: Vec<u32>,
}

/// `config.json` for the image whose config is `img`, over `rootfs` (the mount, opened:
/// user and group names resolve in its /etc/passwd and /etc/group).
pub fn runtime_config(
    img: &ImageConfiguration,
    rootfs: BorrowedFd<'_>,
    opts: &BundleOptions,
) -> Result<Value> {
    let cfg = img.config().clone().unwrap_or_default();
    let mut args: Vec<String> = cfg.entrypoint().clone().unwrap_or_default();
    if opts.cmd.is_empty() {
        args.extend(cfg.cmd().clone().unwrap_or_default());
    } else {
        args.extend(opts.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(Error::Bundle(
            "the image has no Entrypoint or Cmd: give the command to run".into(),
        ));
    }
    let mut env: Vec<String> = cfg.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    env.push(format!("HOSTNAME={}", opts.hostname));
    let cwd = cfg
        .working_dir()
        .clone()
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let spec = opts.user.as_deref().or(cfg.user().as_deref()).unwrap_or("");
    let user = resolve_user(rootfs, spec)?;
    if opts.rootless.is_some() && (user.uid != 0 || user.gid != 0) {
        return Err(Error::Bundle(format!(
            "the image runs as uid {} gid {}: a rootless bundle maps only the container's root \
                 (to you) for now",
            user.uid, user.gid
        )));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "network"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    let mut linux = json!({
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
            "/proc/scsi"
        ],
        "readonlyPaths": [
            "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
        ],
    });
    // /sys: its own instance as root; rootless, a read-only bind of the host's (a user
    // namespace may not mount sysfs without owning the network namespace's sysfs).
    if let Some((uid, gid)) = opts.rootless {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    }
    let sys = if opts.rootless.is_some() || opts.in_userns {
        json!({"destination": "/sys", "type": "none", "source": "/sys",
               "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]})
    };
    linux["namespaces"] = Value::Array(namespaces);
    let caps: Vec<Value> = CAPS.iter().map(|c| json!(c)).collect();
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": opts.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            sys,
        ],
        "linux": linux,
    }))
}

/// The image's `User` (`uid`, `uid:gid`, `name`, `name:group`, empty for root) as ids,
/// names looked up in the root filesystem's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: BorrowedFd<'_>, spec: &str) -> Result<User> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = || read_in_root(rootfs, "etc/passwd");
    let (uid, primary) = if u.is_empty() {
        (0, 0)
    } else if let Ok(n) = u.parse::<u32>() {
        let gid = passwd()
            .ok()
            .and_then(|p| {
                find_entry(&p, |f| f.get(2) == Some(&u))
                    .and_then(|f| f.get(3).and_then(|g| g.parse().ok()))
            })
            .unwrap_or(0);
        (n, gid)
    } else {
        let p = passwd()?;
        let f = find_entry(&p, |f| f.first() == Some(&u)).ok_or_else(|| {
            Error::Bundle(format!("the image's user {u:?} is not in its /etc/passwd"))
        })?;
        let id = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok());
        match (id(2), id(3)) {
            (Some(uid), Some(gid)) => (uid, gid),
            _ => {
                return Err(Error::Bundle(format!(
                    "the image's /etc/passwd entry of {u:?} is malformed"
                )));
            }
        }
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = read_in_root(rootfs, "etc/group")?;
                find_entry(&groups, |f| f.first() == Some(&g))
                    .and_then(|f| f.get(2).and_then(|v| v.parse().ok()))
                    .ok_or_else(|| {
                        Error::Bundle(format!("the image's group {g:?} is not in its /etc/group"))
                    })?
            }
        },
    };
    Ok(User {
        uid,
        gid,
        additional: Vec::new(),
    })
}

/// The fields of the first line of `file` that `pick` accepts.
fn find_entry<'a>(file: &'a str, pick: impl Fn(&Vec<&'a str>) -> bool) -> Option<Vec<&'a str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| pick(f))
}

/// Reads `path` of the root filesystem, its symlinks resolved inside it (an image's
/// absolute symlink never reaches the host's files).
fn read_in_root(rootfs: BorrowedFd<'_>, path: &str) -> Result<String> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let what = |source: std::io::Error| Error::IoWhat {
        what: format!("the image's /{path}"),
        source,
    };
    let fd = nix::fcntl::openat2(rootfs, OsStr::new(path), how).map_err(|e| what(e.into()))?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| what(e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(what(std::io::Error::other("not a regular file")));
    }
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)
        .map_err(what)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> (tempfile::TempDir, std::fs::File) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nwww:x:34:\nstaff:x:50:\n",
        )
        .unwrap();
        let f = std::fs::File::open(t.path()).unwrap();
        (t, f)
    }

    #[test]
    fn users_resolve_in_the_images_files() {
        let (_t, f) = rootfs();
        let r = |s: &str| resolve_user(f.as_fd(), s).map(|u| (u.uid, u.gid));
        assert_eq!(r("").unwrap(), (0, 0));
        assert_eq!(r("web").unwrap(), (33, 34));
        assert_eq!(r("33").unwrap(), (33, 34));
        assert_eq!(r("1000").unwrap(), (1000, 0));
        assert_eq!(r("web:staff").unwrap(), (33, 50));
        assert_eq!(r("5:6").unwrap(), (5, 6));
        assert!(r("nobody-here").is_err());
        assert!(r("web:nogroup").is_err());
    }

    #[test]
    fn an_absolute_symlink_stays_in_the_root() {
        let (t, f) = rootfs();
        std::fs::remove_file(t.path().join("etc/passwd")).unwrap();
        // On the host this would be the host's passwd; in the root it is missing.
        std::os::unix::fs::symlink("/etc/hostname", t.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(f.as_fd(), "web").is_err());
    }

    #[test]
    fn config_takes_the_images_command_env_and_dir() {
        let (_t, f) = rootfs();
        let img: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"],
                       "WorkingDir": "/srv", "User": "web"},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap();
        let mut o = BundleOptions {
            hostname: "c1".into(),
            ..BundleOptions::default()
        };
        let c = runtime_config(&img, f.as_fd(), &o).unwrap();
        assert_eq!(c["process"]["args"], json!(["/bin/app", "--serve"]));
        assert_eq!(c["process"]["cwd"], "/srv");
        assert_eq!(c["process"]["user"]["uid"], 33);
        assert_eq!(c["process"]["env"][0], DEFAULT_PATH);
        assert_eq!(c["hostname"], "c1");
        o.cmd = vec!["--check".into()];
        let c = runtime_config(&img, f.as_fd(), &o).unwrap();
        assert_eq!(c["process"]["args"], json!(["/bin/app", "--check"]));
        o.rootless = Some((1004, 1004));
        assert!(
            runtime_config(&img, f.as_fd(), &o).is_err(),
            "non-root user rootless"
        );
    }
}
