//! Files whose names look like whiteouts (`.wh.NAME`, `.wh..wh..opq`) written through a
//! container's mount: the mount, a read-only mount, `diff`, `export` and `commit` agree on
//! every name. Where the container spells whiteouts as devices (root), such a file is a
//! file: shown beside NAME, listed as added, exported as it is, and refused by `commit`
//! (a layer cannot carry it) with its path named and the store unchanged — also when
//! user nobody plants one in the sticky `/tmp` to hide root's file. Where the container
//! spells whiteouts as `.wh.` files (made where mknod is refused), it keeps that spelling on
//! every later mount, and a writable mount that cannot keep a container's spelling is
//! refused. Needs root, /dev/fuse, setpriv (util-linux), GNU tar, and python3 with
//! libseccomp (to refuse mknod).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::lab::*;
use common::*;

/// Runs `argv` under a seccomp filter that fails mknod(2) with EPERM, as a filesystem or
/// sandbox that refuses device nodes does (dropping CAP_MKNOD is not enough: Linux lets
/// anyone create a 0/0 whiteout device since 5.8).
const NO_MKNOD: &str = r#"
import ctypes, errno, os, sys
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
for name in (b"mknod", b"mknodat"):
    nr = lib.seccomp_syscall_resolve_name(name)
    assert lib.seccomp_rule_add(ctx, 0x00050000 | errno.EPERM, nr, 0) == 0  # SCMP_ACT_ERRNO
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[1], sys.argv[1:])
"#;

/// `layerfs ARGS` against `s` where mknod is refused.
fn without_mknod(s: &TestStore, args: &[&str]) -> Output {
    let out = Command::new("python3")
        .args(["-c", NO_MKNOD])
        .arg(bin())
        .args(args)
        .env("LAYERFS_ROOT", &s.root)
        .env_remove("RUST_LOG")
        .output()
        .expect("python3");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Traceback"),
        "the seccomp filter (python3, libseccomp.so.2) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts `layerfs commit C` fails naming `path`, leaving the store as it was.
fn commit_refused(s: &TestStore, c: &str, path: &str) {
    let before = s.listing();
    let images = s.ok(&["images", "-q", "--no-trunc"]);
    let err = s.fail(&["commit", c, "refused:1"]);
    assert!(
        err.contains(path) && err.contains("whiteout"),
        "commit should refuse naming {path}: {err}"
    );
    assert_eq!(s.listing(), before, "a refused commit changed the store");
    assert_eq!(s.ok(&["images", "-q", "--no-trunc"]), images);
}

#[test]
fn whiteout_looking_files_are_files_to_the_mount_diff_and_export_and_commit_refuses_them() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    sh_in(
        &m,
        "echo planted > etc/.wh.hostname; echo marker > bin/.wh..wh..opq",
    );
    // The mount shows them as files, hiding nothing (kernel overlayfs does the same).
    let etc = names(&m.join("etc"));
    assert!(
        etc.contains(&".wh.hostname".into()) && etc.contains(&"hostname".into()),
        "{etc:?}"
    );
    assert_eq!(
        fs::read_to_string(m.join("etc/.wh.hostname")).unwrap(),
        "planted\n"
    );
    let bin = names(&m.join("bin"));
    assert!(
        bin.contains(&".wh..wh..opq".into()) && bin.contains(&"busybox".into()),
        "{bin:?}"
    );
    let mounted = manifest(&m, &[]);

    // diff lists them as added, and nothing as deleted; mounted or not.
    let want = "C /bin\nA /bin/.wh..wh..opq\nC /etc\nA /etc/.wh.hostname\n";
    assert_eq!(s.ok(&["diff", "web"]), want);
    // export carries them as the files they are (a flat tree is not a layer).
    let (list, tree) = export(s, "web", "live");
    for p in [
        "etc/hostname",
        "etc/.wh.hostname",
        "bin/busybox",
        "bin/.wh..wh..opq",
    ] {
        assert!(
            list.lines().any(|l| l.trim_start_matches("./") == p),
            "{p} not exported:\n{list}"
        );
    }
    assert_same_tree(&manifest(&tree, &[]), &mounted, "export vs mount");
    // commit cannot put them into a layer: refused, naming the first such path.
    commit_refused(s, "web", "/bin/.wh..wh..opq");

    lab.umount(&m);
    assert_eq!(s.ok(&["diff", "web"]), want);
    let ro = lab.mount(&["web", "--read-only"], "ro");
    assert_same_tree(&manifest(&ro, &[]), &mounted, "read-only mount vs mount");
    lab.umount(&ro);
    let (_, tree) = export(s, "web", "unmounted");
    assert_same_tree(&manifest(&tree, &[]), &mounted, "export vs mount");
    commit_refused(s, "web", "/bin/.wh..wh..opq");

    // Renamed away, the next one is named; with none left the commit goes through.
    let m = lab.mount(&["web"], "m2");
    sh_in(&m, "mv bin/.wh..wh..opq bin/opq-marker");
    commit_refused(s, "web", "/etc/.wh.hostname");
    sh_in(&m, "rm etc/.wh.hostname");
    let id = s.ok(&["commit", "web", "clean:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let img = lab.mount(&["clean:1", "--read-only"], "img");
    assert!(img.join("etc/hostname").is_file());
    assert!(img.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_to_string(img.join("bin/opq-marker")).unwrap(),
        "marker\n"
    );
    assert!(!img.join("etc/.wh.hostname").exists());
}

#[test]
fn nobody_cannot_make_roots_file_vanish_from_the_sticky_tmp() {
    let lab = Lab::new();
    let s = &lab.s;
    // Other users must reach the mount point; the mount's own checks then apply.
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let b = one_layer(
        &s.scratch("img"),
        vec![
            dir("tmp").mode(0o1777),
            file("tmp/rootfile", b"root's\n").owner(0, 0),
        ],
    );
    let image = s.load(&b.path.display().to_string());
    let m = lab.mount(&[&image, "--name", "c", "--allow-other"], "m");
    let tmp = m.join("tmp");
    // The sticky bit keeps nobody from removing root's file...
    let out = sh_as(NOBODY, &format!("rm -f {}/rootfile", tmp.display()));
    assert!(
        !out.status.success(),
        "nobody removed root's file in sticky /tmp"
    );
    // ...and a file of a whiteout's name must not do it either.
    let out = sh_as(NOBODY, &format!("echo > {}/.wh.rootfile", tmp.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(&tmp), [".wh.rootfile", "rootfile"]);
    assert_eq!(s.ok(&["diff", "c"]), "C /tmp\nA /tmp/.wh.rootfile\n");
    let (list, tree) = export(s, "c", "x");
    assert!(
        list.lines()
            .any(|l| l.trim_start_matches("./") == "tmp/rootfile"),
        "root's file vanished from the export:\n{list}"
    );
    assert_eq!(
        fs::read_to_string(tree.join("tmp/rootfile")).unwrap(),
        "root's\n"
    );
    assert!(tree.join("tmp/.wh.rootfile").is_file());
    commit_refused(s, "c", "/tmp/.wh.rootfile");
}

#[test]
fn a_container_keeps_the_whiteout_spelling_it_was_made_with() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    // Made where mknod is refused: whiteouts are `.wh.` files in its layer.
    let m = lab.dir("m");
    let out = without_mknod(s, &["mount", "busybox", m.to_str().unwrap(), "--name", "c"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up = s.root.join("containers/c/upper");
    {
        let _g = mount::Unmount(vec![m.clone()]);
        sh_in(&m, "rm etc/hostname");
        assert!(
            up.join("etc/.wh.hostname").is_file(),
            "not the .wh. spelling"
        );
        // Such names are the layer's marks there: not for files.
        let out = Command::new("touch")
            .arg(m.join("etc/.wh.x"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "a .wh. file was created");
        assert!(!m.join("etc/hostname").exists());
        lab.umount(&m);
    }
    let gone = |dir: &Path| {
        let etc = names(&dir.join("etc"));
        assert!(
            !etc.iter().any(|n| n == "hostname" || n.starts_with(".wh.")),
            "{}: {etc:?}",
            dir.display()
        );
    };
    // Mounted again where mknod works, writable and read-only: the same spelling.
    let m2 = lab.mount(&["c"], "m2");
    gone(&m2);
    sh_in(&m2, "rm etc/motd");
    assert!(up.join("etc/.wh.motd").is_file(), "spelling changed");
    lab.umount(&m2);
    let ro = lab.mount(&["c", "--read-only"], "ro");
    gone(&ro);
    assert!(!ro.join("etc/motd").exists());
    lab.umount(&ro);
    assert_eq!(
        s.ok(&["diff", "c"]),
        "C /etc\nD /etc/hostname\nD /etc/motd\n"
    );
    let (list, _) = export(s, "c", "x");
    assert!(
        !list.contains(".wh.")
            && !list
                .lines()
                .any(|l| l.trim_start_matches("./") == "etc/hostname"),
        "{list}"
    );
}

#[test]
fn a_mount_that_cannot_keep_a_containers_spelling_is_refused() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c"], "m");
    sh_in(&m, "echo planted > etc/.wh.hostname");
    lab.umount(&m);
    // Writing `.wh.` whiteouts here would turn the planted file into one.
    let m2 = lab.dir("m2");
    let out = without_mknod(s, &["mount", "c", m2.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("container c") && err.contains("mknod"),
        "{err}"
    );
    assert!(!is_mounted(&m2));
    // Read-only it mounts, showing both files.
    let out = without_mknod(s, &["mount", "c", m2.to_str().unwrap(), "--read-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _g = mount::Unmount(vec![m2.clone()]);
    let etc = names(&m2.join("etc"));
    assert!(
        etc.contains(&"hostname".into()) && etc.contains(&".wh.hostname".into()),
        "{etc:?}"
    );
    lab.umount(&m2);
}
