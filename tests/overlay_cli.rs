//! The fuse-overlayfs drop-in command line: containers-storage's `mount_program`
//! contract (cwd-relative lower dirs, escapes, unknown options), `mount -t fuse.layerfs`
//! through mount.fuse3, read-only without upperdir, and errors. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::{require_fuse, sh};

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
        // mount.fuse3 appends `dev,suid`, as it does for fuse-overlayfs.
        let (opts, _) = mount_options(&mp);
        assert!(
            !opts.iter().any(|o| o == "nodev" || o == "nosuid"),
            "{fstype}: {opts:?}"
        );
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

#[test]
fn dev_suid_and_allow_other_are_fuse_overlayfs_s() {
    require_fuse();
    let mut l = Layers::new();
    let low = l.add();
    nix::sys::stat::mknod(
        &low.p("zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let has = |v: &[String], o: &str| v.iter().any(|x| x == o);
    // fuse-overlayfs as root: allow_other,suid and libfuse's nodev; -o overrides each,
    // the last of a pair winning.
    for (extra, nosuid, nodev, allow_other) in [
        (&[][..], false, true, true),
        (&["nosuid"][..], true, true, true),
        (&["dev"][..], false, false, true),
        (&["dev", "nosuid"][..], true, false, true),
        (&["suid", "nodev"][..], false, true, true),
        (&["dev", "suid", "nodev"][..], false, true, true),
        (&["nosuid", "suid", "dev"][..], false, false, true),
        (&["allow_root"][..], false, true, true),
    ] {
        let m = Mount::with(&l.lowerdirs(), false, extra);
        let (opts, super_opts) = mount_options(&m.mp);
        assert_eq!(has(&opts, "nosuid"), nosuid, "{extra:?}: {opts:?}");
        assert_eq!(has(&opts, "nodev"), nodev, "{extra:?}: {opts:?}");
        assert_eq!(
            has(&super_opts, "allow_other"),
            allow_other,
            "{extra:?}: {super_opts:?}"
        );
        let open = fs::File::open(m.p("zero"));
        if nodev {
            assert_eq!(
                open.unwrap_err().raw_os_error(),
                Some(libc::EACCES),
                "{extra:?}"
            );
        } else {
            open.unwrap();
        }
    }
}

#[test]
fn ro_with_an_upperdir_shows_the_upper_layer_read_only() {
    let mut l = Layers::new();
    l.add().file("lower", "lower").file("gone", "lower");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("upper-only"), "upper").unwrap();
    fs::remove_file(m.p("gone")).unwrap();
    m.umount();
    let ro = Mount::with_dirs(&l.lowerdirs(), &m, &["ro"]);
    assert_eq!(read(&ro.p("upper-only")), "upper");
    assert_eq!(read(&ro.p("lower")), "lower");
    assert!(!exists(&ro.p("gone")));
    let err = fs::write(ro.p("x"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn unsupported_options_are_not_printed_to_the_caller() {
    let mut l = Layers::new();
    l.add().file("f", "x");
    let dir = tempdir();
    let mp = dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let out = std::process::Command::new(overlay_bin())
        .arg("-o")
        .arg(format!(
            "lowerdir={},no_such_option=1,noatime",
            l.lowerdirs()[0].display()
        ))
        .arg(&mp)
        .output()
        .unwrap();
    let mounted = is_mounted(&mp);
    if mounted {
        umount(&mp);
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mounted);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "nothing on stderr"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// atime of `p` (seconds, nanoseconds).
fn atime(p: &std::path::Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

#[test]
fn atime_options_decide_what_reads_do() {
    // A file whose atime and mtime are old: relatime updates atime on the first read
    // (atime <= mtime) and not on the next one, strictatime on every read, noatime never.
    for (opt, first, second) in [
        ("relatime", true, false),
        ("strictatime", true, true),
        ("noatime", false, false),
    ] {
        let mut l = Layers::new();
        let low = l.add();
        low.file("f", "data");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let f = fs::File::options().write(true).open(low.p("f")).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
            .unwrap();
        drop(f);
        let m = Mount::with(&l.lowerdirs(), true, &[opt]);
        let t0 = atime(&m.p("f"));
        assert_eq!(t0.0, 1_000_000);
        read(&m.p("f"));
        let t1 = atime(&m.p("f"));
        assert_eq!(t1 > t0, first, "{opt}: first read");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // (a new open: the kernel's page cache of a lower file is kept, so drop it)
        sh("echo 1 > /proc/sys/vm/drop_caches");
        read(&m.p("f"));
        let t2 = atime(&m.p("f"));
        assert_eq!(t2 > t1, second, "{opt}: second read");
    }
}
