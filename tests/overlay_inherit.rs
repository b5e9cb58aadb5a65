//! What a new entry inherits from its directory — default ACLs (the create mode masked
//! by the ACL, the umask ignored, the ACL passed on), setgid (the group, and the bit on
//! subdirectories) — checked against kernel overlayfs over the same lower layer, for
//! directories from a lower layer and made in the mount, and for names that were deleted
//! first (created over a whiteout, through the work directory). Needs root, /dev/fuse,
//! kernel overlayfs, python3 and getfacl/setfacl (package acl).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::python_as;

/// Creates entries under `root` as `uid` with several umasks and modes; prints what each
/// got (mode, owner, group, ACL).
fn creates(root: &Path, uid: u32) -> String {
    let script = format!(
        r#"
import os, subprocess
root = {root:?}
out = []
for d in ['acl', 'sg', 'aclsg', 'up_acl', 'acl/deleted_f', 'acl/deleted_d']:
    base = f'{{root}}/{{d}}'
    if d.startswith('acl/deleted'):
        base = f'{{root}}/acl'
    for i, (um, mode) in enumerate([(0o022, 0o666), (0o022, 0o777), (0o002, 0o775), (0o077, 0o755)]):
        os.umask(um)
        for kind in ('f', 'd'):
            name = f'{{d.replace("/", "_")}}-{{kind}}{{i}}'
            if d == 'acl/deleted_f':
                name = 'lowerfile' if (i, kind) == (0, 'f') else name
            if d == 'acl/deleted_d':
                name = 'lowerdir' if (i, kind) == (0, 'd') else name
            p = f'{{base}}/{{name}}'
            try:
                if os.path.lexists(p):
                    (os.rmdir if os.path.isdir(p) and not os.path.islink(p) else os.unlink)(p)
                if kind == 'd':
                    os.mkdir(p, mode)
                else:
                    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, mode))
                st = os.lstat(p)
                acl = subprocess.run(['getfacl', '-cp', p], capture_output=True, text=True).stdout
                out.append(f'{{p[len(root):]}} {{oct(st.st_mode)}} {{st.st_uid}} {{st.st_gid}} ' + acl.replace('\n', ' '))
            except OSError as e:
                out.append(f'{{p[len(root):]}} {{e.errno}}')
print('\n'.join(out))
"#,
        root = root.to_str().unwrap()
    );
    python_as(uid, &script, &[])
}

fn setfacl(p: &Path, spec: &str) {
    let ok = Command::new("setfacl")
        .args(["-d", "-m", spec])
        .arg(p)
        .status()
        .expect("setfacl (package acl)")
        .success();
    assert!(ok, "setfacl on {}", p.display());
}

#[test]
fn new_entries_inherit_default_acls_and_setgid_as_on_kernel_overlayfs() {
    for uid in [0, 65534] {
        let mut l = Layers::new();
        let low = l.add();
        low.dir("acl")
            .mode("acl", 0o777)
            .file("acl/lowerfile", "x")
            .dir("acl/lowerdir")
            .dir("sg")
            .owner("sg", 0, 100)
            .mode("sg", 0o2777)
            .dir("aclsg")
            .owner("aclsg", 0, 100)
            .mode("aclsg", 0o2777);
        setfacl(&low.p("acl"), "u::rwx,g::r-x,o::---,u:4242:rw-,m::rwx");
        setfacl(&low.p("aclsg"), "u::r--,g::rwx,o::r-x");
        let lowers = l.lowerdirs();
        let k = KernelOverlay::new(&lowers, true);
        let m = Mount::new(&lowers);
        // A directory made in the mount, given a default ACL there.
        for root in [&k.mp, &m.mp] {
            std::fs::create_dir(root.join("up_acl")).unwrap();
            std::fs::set_permissions(
                root.join("up_acl"),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
            setfacl(&root.join("up_acl"), "u::rw-,g::r--,o::r--");
        }
        let want = creates(&k.mp, uid);
        let got = creates(&m.mp, uid);
        assert!(want.lines().count() > 40, "{want}");
        for (kl, fl) in want.lines().zip(got.lines()) {
            assert_eq!(fl, kl, "uid {uid}: layerfs differs from kernel overlayfs");
        }
        // The umask did not apply, the ACL's mask did (0666 under umask 022 would be 0644).
        assert!(want.contains("/acl/acl-f0 0o100660"), "{want}");
    }
}
