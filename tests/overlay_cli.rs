//! The fuse-overlayfs drop-in command line: containers-storage's `mount_program`
//! contract (cwd-relative lower dirs, escapes, unknown options), `mount -t fuse.layerfs`
//! through mount.fuse3, read-only without upperdir, and errors. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common {
    pub mod mount;
}

use std::fs;
use std::path::Path;
use std::process::Command;

use common::mount::*;

#[test]
fn mount_program_contract_with_relative_lowers_and_unknown_options() {
    require_fuse();
    let t = tempdir();
    let store = t.path();
    for (d, f) in [("l/AAA", "a"), ("l/B:B", "b")] {
        fs::create_dir_all(store.join(d)).unwrap();
        fs::write(store.join(d).join(f), f).unwrap();
    }
    fs::create_dir_all(store.join("diff")).unwrap();
    fs::create_dir_all(store.join("work")).unwrap();
    fs::create_dir_all(store.join("merged")).unwrap();
    let out = Command::new(overlay_bin())
        .current_dir(store)
        .args([
            "-o",
            "lowerdir=l/AAA:l/B\\:B,upperdir=diff,workdir=work,uidmapping=0:0:4294967295,gidmapping=0:0:4294967295,fsync=0",
            "merged",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mp = store.join("merged");
    struct G<'a>(&'a Path);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            umount(self.0);
        }
    }
    let _g = G(&mp);
    assert!(is_mounted(&mp));
    assert_eq!(ls(&mp), vec!["a", "b"]);
    fs::write(mp.join("c"), "c").unwrap();
    assert_eq!(read(&store.join("diff/c")), "c");
}

#[test]
fn mount_t_fuse_layerfs_through_mount_fuse3() {
    require_fuse();
    let mut l = Layers::new();
    l.add().file("x", "through mount.fuse3");
    let t = tempdir();
    let mp = t.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let bin_dir = overlay_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let lower = l.lowerdirs()[0].display().to_string();
    // `mount -t fuse.NAME` runs mount.fuse3 with a sanitized PATH (so NAME must be
    // installed); call mount.fuse3 as mount(8) would, with our build directory on PATH.
    for fstype in ["fuse.layerfs-overlay", "fuse.layerfs"] {
        let out = Command::new("mount.fuse3")
            .env("PATH", &path)
            .arg("overlay")
            .arg(&mp)
            .args(["-t", fstype, "-o", &format!("lowerdir={lower}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{fstype}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&mp), "{fstype}");
        assert_eq!(read(&mp.join("x")), "through mount.fuse3");
        let e = fs::write(mp.join("y"), "no upper").unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EROFS),
            "no upperdir means read-only"
        );
        umount(&mp);
        assert!(!is_mounted(&mp));
    }
}

#[test]
fn bad_command_lines_fail_with_a_message_and_mount_nothing() {
    require_fuse();
    let t = tempdir();
    let mp = t.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let run = |opts: &str| {
        Command::new(overlay_bin())
            .args(["-o", opts])
            .arg(&mp)
            .output()
            .unwrap()
    };
    for (opts, want) in [
        ("upperdir=/tmp", "lowerdir"),
        ("lowerdir=/does/not/exist", "/does/not/exist"),
        (
            &format!(
                "lowerdir={},upperdir={}",
                t.path().display(),
                t.path().display()
            ),
            "workdir",
        ),
        // Found by fuzzing: a timeout too large for a Duration panicked.
        (
            &format!("lowerdir={},timeout=1e300", t.path().display()),
            "invalid timeout=1e300",
        ),
    ] {
        let out = run(opts);
        assert!(!out.status.success(), "{opts}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{opts}: {err}");
        assert!(!err.contains("panicked"), "{opts}: {err}");
        assert!(!is_mounted(&mp));
    }
}
