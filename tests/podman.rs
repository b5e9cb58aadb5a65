//! podman with `mount_program = layerfs-overlay` (containers-storage's overlay driver
//! with a FUSE mount program, as it runs fuse-overlayfs): `podman load` and `podman run`
//! rootful, and rootless as a plain user with a subuid range, where `--userns=keep-id`
//! makes containers-storage pass `uidmapping=`/`gidmapping=` instead of copying the image
//! (issue 21). Each container must show the image's owners.
//!
//! Needs root (for the rootful run, and to act as nobody with subuids), /dev/fuse,
//! podman, runc and newuidmap (installed by .ci/run). As the fixtures README says, root
//! here lacks CAP_SYS_RESOURCE: containers.conf drops the default ulimits and runs use
//! `--ulimit host`; `/dev/net/tun` is closed to users: `--network=none`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::mount::overlay_bin;
use common::*;

/// storage.conf and containers.conf for a podman of its own under `dir`, owned by `uid`.
fn podman_env(dir: &Path, uid: u32) -> Vec<(String, String)> {
    let storage = dir.join("storage.conf");
    let key = if uid == 0 {
        "graphroot"
    } else {
        "rootless_storage_path"
    };
    fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"overlay\"\n{key} = \"{d}/storage\"\nrunroot = \"{d}/runroot\"\n\
             [storage.options.overlay]\nmount_program = \"{p}\"\n",
            d = dir.display(),
            p = overlay_bin().display()
        ),
    )
    .unwrap();
    let containers = dir.join("containers.conf");
    fs::write(&containers, "[containers]\ndefault_ulimits = []\n").unwrap();
    let run = dir.join("xdg-run");
    fs::create_dir_all(&run).unwrap();
    fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for p in [dir, &storage, &containers, &run] {
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    vec![
        ("HOME".into(), dir.display().to_string()),
        ("XDG_RUNTIME_DIR".into(), run.display().to_string()),
        (
            "CONTAINERS_STORAGE_CONF".into(),
            storage.display().to_string(),
        ),
        ("CONTAINERS_CONF".into(), containers.display().to_string()),
    ]
}

fn podman(uid: u32, env: &[(String, String)], args: &[&str]) -> String {
    let mut c = command_as(uid, "podman");
    c.envs(env.iter().map(|(k, v)| (k, v))).args(args);
    run_ok(&mut c)
}

fn owners_in(uid: u32, env: &[(String, String)], extra: &[&str]) -> String {
    let mut args = vec![
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network=none",
        "--ulimit",
        "host",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "layerfs/busybox:latest",
        "stat",
        "-c",
        "%u:%g %a %n",
        "/etc/passwd",
        "/home/user",
        "/data/owned-by-nobody",
        "/data/uid-100000",
        "/usr/local/bin/suid-script",
    ]);
    podman(uid, env, &args)
}

const IMAGE_OWNERS: &str = "0:0 644 /etc/passwd\n1000:1000 750 /home/user\n\
                            65534:65534 644 /data/owned-by-nobody\n\
                            100000:100000 644 /data/uid-100000\n\
                            0:0 4755 /usr/local/bin/suid-script\n";

fn require_podman() {
    assert!(
        Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs podman (apt-get install podman; .ci/run installs it)"
    );
}

#[test]
fn podman_runs_on_layerfs_overlay_as_root() {
    require_fuse();
    require_podman();
    let t = common::mount::tempdir();
    let env = podman_env(t.path(), 0);
    let tar = fixtures().join("busybox/busybox.docker.tar");
    podman(0, &env, &["load", "-q", "-i", tar.to_str().unwrap()]);
    assert_eq!(owners_in(0, &env, &[]), IMAGE_OWNERS);
    let mounts = podman(0, &env, &["info", "--format", "{{.Store.GraphOptions}}"]);
    assert!(
        mounts.contains("layerfs-overlay"),
        "not our mount program: {mounts}"
    );
    let _ = podman(0, &env, &["system", "reset", "-f"]);
}

#[test]
fn rootless_podman_runs_on_layerfs_overlay_with_keep_id() {
    require_podman();
    fuse_for_users();
    subids_for("nobody");
    let t = common::mount::tempdir();
    let env = podman_env(t.path(), NOBODY);
    let tar = fixtures().join("busybox/busybox.docker.tar");
    podman(NOBODY, &env, &["load", "-q", "-i", tar.to_str().unwrap()]);
    assert_eq!(owners_in(NOBODY, &env, &[]), IMAGE_OWNERS, "rootless");
    // keep-id: containers-storage passes a mapping to the mount program, copies nothing.
    assert_eq!(
        owners_in(NOBODY, &env, &["--userns=keep-id"]),
        IMAGE_OWNERS,
        "rootless, --userns=keep-id"
    );
    let made = podman(
        NOBODY,
        &env,
        &[
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--network=none",
            "--ulimit",
            "host",
            "--userns=keep-id",
            "--user",
            "0",
            "layerfs/busybox:latest",
            "sh",
            "-c",
            "touch /tmp/new && chown 1000:1000 /tmp/new && stat -c '%u:%g' /tmp/new",
        ],
    );
    assert_eq!(made, "1000:1000\n");
    let _ = podman(NOBODY, &env, &["system", "reset", "-f"]);
}
