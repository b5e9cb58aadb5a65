//! `layerfs diff`: a container changed through its mount (writes, appends, deletes, an
//! opaque directory re-created, a renamed lower directory, hard links, chmod/chown, a
//! metadata-only copy-up), and upper layers spelled in every dialect by other tools.
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::lab::*;
use common::*;
use serde_json::Value;

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    run_ok(
        Command::new("setfattr")
            .args(["-n", name, "-v"])
            .arg(format!("0x{}", hex::encode(value)))
            .arg(p),
    );
}

/// The changes Docker 20.10 lists for the same script in a container of this image
/// (its order within a directory is random; ours is sorted).
const EXPECTED: &str = "\
C /data
A /data/added.txt
C /data/empty
C /data/modify-me
A /data/new-link
C /data/sticky-dir
D /data/original.txt
A /newdir
A /newdir/sub
A /newdir/sub/f
C /opaque-dir
A /opaque-dir/fresh
D /opaque-dir/new1
D /opaque-dir/samename
C /usr
A /usr/moved-local
A /usr/moved-local/bin
A /usr/moved-local/bin/sgid-script
A /usr/moved-local/bin/suid-script
D /usr/local
";

pub const SCRIPT: &str = "
echo new > data/added.txt
echo more >> data/modify-me
rm data/original.txt
rm -rf opaque-dir; mkdir opaque-dir; echo x > opaque-dir/fresh
mv usr/local usr/moved-local
ln data/new-file data/new-link
chmod 600 data/empty
mkdir -p newdir/sub; echo y > newdir/sub/f
touch home
chown 1:1 data/sticky-dir
";

#[test]
fn diff_lists_what_docker_lists() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    assert_eq!(s.ok(&["diff", "web"]), "");
    sh_in(&m, SCRIPT);
    assert_eq!(s.ok(&["diff", "web"]), EXPECTED);
    let json: Value = serde_json::from_str(&s.ok(&["diff", "--json", "web"])).unwrap();
    assert_eq!(json[0], serde_json::json!({"kind": "C", "path": "/data"}));
    assert_eq!(json.as_array().unwrap().len(), EXPECTED.lines().count());
    // Unmounted: the same.
    lab.umount(&m);
    assert_eq!(s.ok(&["diff", "web"]), EXPECTED);
    let err = s.fail(&["diff", "nosuch"]);
    assert!(err.contains("no such container"), "{err}");
}

#[test]
fn diff_follows_hard_links_metacopy_and_type_changes() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    // data/original.txt is a second name of data/hardlink-to-lower: both change, though
    // only one is in the upper layer.
    sh_in(
        &m,
        "echo more >> data/hardlink-to-lower
         chmod 600 data/random-1MiB+1
         rm -rf readd-dir; echo now-a-file > readd-dir
         rm readd-file; mkdir readd-file; touch readd-file/inside
         touch -m -d @1000000000 data/xattr-file
         setfattr -n user.added -v 1 data/name\\ with\\ spaces",
    );
    let up = s.root.join("containers/web/upper");
    assert!(up.join("data/hardlink-to-lower").exists());
    assert!(!up.join("data/original.txt").exists());
    assert!(
        fs::metadata(up.join("data/random-1MiB+1"))
            .unwrap()
            .blocks()
            < 100,
        "chmod copied the data up"
    );
    assert_eq!(
        s.ok(&["diff", "web"]),
        "C /data
C /data/hardlink-to-lower
C /data/name with spaces
C /data/original.txt
C /data/random-1MiB+1
C /data/xattr-file
C /readd-dir
C /readd-file
A /readd-file/inside
"
    );
}

use std::os::unix::fs::MetadataExt;

#[test]
fn diff_reads_every_dialect_of_an_upper_layer() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    sh_in(&m, "touch etc/new-in-etc; rm bin/true");
    lab.umount(&m);
    // `.wh.` files are marks in a container whose layer is spelled so (one made where
    // mknod and xattrs are refused); elsewhere they are files (tests/whiteout_names.rs).
    let record = s.root.join("containers/web/container.json");
    let mut r: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    r["styles"] = serde_json::json!({"whiteout": "wh-file", "opaque": "wh-file"});
    fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    // Another tool's spellings, written into the upper layer directly.
    let up = s.root.join("containers/web/upper");
    // `.wh.` file whiteout and marker.
    fs::create_dir(up.join("data")).unwrap();
    fs::write(up.join("data/.wh.empty"), "").unwrap();
    fs::create_dir(up.join("readd-dir")).unwrap();
    fs::write(up.join("readd-dir/.wh..wh..opq"), "").unwrap();
    // fuse-overlayfs' opaque xattr.
    fs::create_dir(up.join("var")).unwrap();
    fs::set_permissions(up.join("var"), fs::Permissions::from_mode(0o755)).unwrap();
    setxattr(&up.join("var"), "user.fuseoverlayfs.opaque", b"y");
    // userxattr kernel opaque.
    fs::create_dir(up.join("opaque-dir")).unwrap();
    setxattr(&up.join("opaque-dir"), "user.overlay.opaque", b"y");
    // Kernel xattr whiteout in a directory marked for them.
    setxattr(&up.join("etc"), "trusted.overlay.opaque", b"x");
    fs::write(up.join("etc/group"), "").unwrap();
    setxattr(&up.join("etc/group"), "trusted.overlay.whiteout", b"");
    let out = s.ok(&["diff", "web"]);
    for want in [
        "D /bin/true",
        "A /etc/new-in-etc",
        "D /etc/group",
        "D /data/empty",
        "D /readd-dir/new",
        "D /var/log",
        "D /opaque-dir/new1",
        "D /opaque-dir/samename",
    ] {
        assert!(out.lines().any(|l| l == want), "{want} missing:\n{out}");
    }
    assert!(!out.contains(".wh."), "{out}");
    assert!(!out.contains("/etc/group\nA"), "{out}");
    // Its mount reads the `.wh.` spellings the same.
    let ro = lab.mount(&["web", "--read-only"], "ro");
    assert!(!ro.join("data/empty").exists() && !ro.join("data/.wh.empty").exists());
    assert!(!ro.join("readd-dir/new").exists());
}
