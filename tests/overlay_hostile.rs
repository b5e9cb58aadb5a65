//! A hostile local user and hostile layer contents against a real mount (issue 13):
//! - changes through an fd whose name was replaced by a symlink to a host file reach the
//!   open file, never the host file (as an unprivileged user in a 1777 directory of a
//!   mount made by root, and as root);
//! - overlay marks are input: redirects that climb out of the layers, forged `origin`
//!   marks, forged index entries and damaged metacopy marks fail that one entry (or are
//!   ignored), never merge host files into the mount or make two files one.
//!
//! Needs root and /dev/fuse; the unprivileged steps run as uid 65534 through setpriv.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::{NOBODY, python_as};

/// Everything about a host file that a stray chmod/chown/truncate/xattr/utime changes.
fn host_state(p: &Path) -> (u32, u32, u32, u64, i64, Vec<u8>, Vec<String>) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.mode(),
        m.uid(),
        m.gid(),
        m.len(),
        m.mtime(),
        fs::read(p).unwrap(),
        xattr_names(p),
    )
}

/// Opens `name` in `dir`, replaces the name by a symlink to `victim` (by unlink+symlink
/// or by renaming a symlink over it), then changes everything it can through the fd.
/// Prints the fd's mode and size afterwards.
fn stale_fd_script(dir: &Path, name: &str, victim: &Path, by_rename: bool, chown: bool) -> String {
    format!(
        r#"
import os
os.chdir({dir:?})
fd = os.open({name:?}, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b'open file data')
if {by_rename}:
    os.symlink({victim:?}, {name:?} + '.s')
    os.rename({name:?} + '.s', {name:?})
else:
    os.unlink({name:?})
    os.symlink({victim:?}, {name:?})
os.fchmod(fd, 0o4777)
if {chown}:
    os.fchown(fd, 4242, 4242)
os.ftruncate(fd, 3)
os.setxattr(fd, 'user.stale', b'1')
os.utime(fd, (1, 1))
st = os.fstat(fd)
print(oct(st.st_mode & 0o7777), st.st_size, os.getxattr(fd, 'user.stale').decode())
"#,
        dir = dir.to_str().unwrap(),
        victim = victim.to_str().unwrap(),
        by_rename = if by_rename { "True" } else { "False" },
        chown = if chown { "True" } else { "False" },
    )
}

#[test]
fn changes_through_a_stale_fd_never_reach_a_symlink_target() {
    let mut l = Layers::new();
    l.add()
        .dir("tmp")
        .mode("tmp", 0o1777)
        .file("tmp/lower", "lower data");
    let m = Mount::new(&l.lowerdirs());
    // A root-owned host file outside the layers, like /etc/shadow or a setuid binary.
    let victim = m.dir.path().join("victim");
    fs::write(&victim, "host secret").unwrap();
    fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let before = host_state(&victim);
    let tmp = m.p("tmp");
    for (uid, by_rename) in [(65534, false), (65534, true), (0, false), (0, true)] {
        let name = format!("f{uid}{by_rename}");
        let out = python_as(
            uid,
            &stale_fd_script(&tmp, &name, &victim, by_rename, uid == 0),
            &[],
        );
        // Setuid goes with the chown (root) or the truncate (no CAP_FSETID).
        assert_eq!(
            out.trim(),
            "0o777 3 1",
            "uid {uid}, rename {by_rename}: the open file got the changes"
        );
        assert_eq!(
            host_state(&victim),
            before,
            "uid {uid}, rename {by_rename}: the host file was changed through the mount"
        );
        // The name is the symlink now, pointing at the host file as it was.
        assert_eq!(
            fs::read_link(tmp.join(&name)).unwrap(),
            victim,
            "the symlink is there"
        );
    }
}

#[test]
fn a_stale_fd_of_a_lower_file_does_not_reach_a_symlink_target() {
    let mut l = Layers::new();
    l.add()
        .dir("tmp")
        .mode("tmp", 0o1777)
        .file("tmp/mine", "lower data")
        .owner("tmp/mine", 65534, 65534);
    let m = Mount::new(&l.lowerdirs());
    let victim = m.dir.path().join("victim");
    fs::write(&victim, "host secret").unwrap();
    let before = host_state(&victim);
    // Opened read-only (not copied up), then the name becomes a symlink.
    let out = python_as(
        NOBODY,
        &format!(
            r#"
import os
os.chdir({tmp:?})
fd = os.open('mine', os.O_RDONLY)
os.unlink('mine')
os.symlink({victim:?}, 'mine')
for f in (lambda: os.fchmod(fd, 0o777), lambda: os.utime(fd, (1, 1)),
          lambda: os.setxattr(fd, 'user.x', b'1')):
    try:
        f()
        print('ok')
    except OSError as e:
        print(e.errno)
print(os.read(fd, 100).decode())
"#,
            tmp = m.p("tmp").to_str().unwrap(),
            victim = victim.to_str().unwrap()
        ),
        &[],
    );
    assert!(out.ends_with("lower data\n"), "{out}");
    assert_eq!(host_state(&victim), before);
}

/// A directory outside the layers that a redirect could climb to.
fn host_secret_beside(layers: &Layers) -> std::path::PathBuf {
    let root = layers.lowerdirs()[0].parent().unwrap().to_path_buf();
    let secret = root.join("hostdir");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("secret"), "host secret").unwrap();
    secret
}

#[test]
fn redirects_that_leave_the_layers_are_refused() {
    let mut l = Layers::new();
    l.add().dir("a/sub").file("a/sub/f", "lower").dir("good");
    let _secret = host_secret_beside(&l);
    let mut m = Mount::new(&l.lowerdirs());
    m.umount();
    let evil = [
        "/../hostdir",
        "/a/../../hostdir",
        "../hostdir",
        "a/sub",
        "/a//sub",
        "",
        ".",
        "..",
    ];
    for (i, r) in evil.iter().enumerate() {
        let d = m.up(&format!("evil{i}"));
        fs::create_dir(&d).unwrap();
        let ok = Command::new("setfattr")
            .args(["-n", "trusted.overlay.redirect", "-v"])
            .arg(if r.is_empty() {
                "\"\"".to_string()
            } else {
                r.to_string()
            })
            .arg(&d)
            .status()
            .unwrap()
            .success();
        assert!(ok, "setfattr {r:?}");
    }
    // A well-formed redirect beside them still works.
    fs::create_dir(m.up("moved")).unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "trusted.overlay.redirect", "-v", "/a"])
        .arg(m.up("moved"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    m.mount();
    // The root lists fine; the good redirect merges; the bad ones fail alone.
    let names = ls(&m.p(""));
    assert!(names.contains(&"moved".to_string()) && names.contains(&"good".to_string()));
    assert_eq!(read(&m.p("moved/sub/f")), "lower");
    for (i, r) in evil.iter().enumerate() {
        let p = m.p(&format!("evil{i}"));
        let listed = fs::read_dir(&p).map(|it| {
            it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        });
        match listed {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "redirect {r:?}: {e}"),
            Ok(v) => panic!("redirect {r:?} was followed: {v:?}"),
        }
        assert!(!exists(&m.p(&format!("evil{i}/secret"))), "redirect {r:?}");
    }
}

#[test]
fn forged_origin_marks_do_not_make_two_files_one() {
    let mut l = Layers::new();
    l.add().file("lowerfile", "lower");
    let mut m = Mount::new(&l.lowerdirs());
    m.umount();
    let lower_ino = fs::metadata(l.lowerdirs()[0].join("lowerfile"))
        .unwrap()
        .ino();
    fs::write(m.up("a"), "A").unwrap();
    fs::write(m.up("b"), "B").unwrap();
    fs::write(m.up("c"), "C").unwrap();
    let set = |p: &Path, name: &str, v: &str| {
        let ok = Command::new("setfattr")
            .args(["-n", name, "-v", v])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    set(&m.up(""), "trusted.overlay.impure", "y");
    set(&m.up("a"), "trusted.overlay.layerfs.origin", "777777");
    set(&m.up("b"), "trusted.overlay.layerfs.origin", "777777");
    set(
        &m.up("c"),
        "trusted.overlay.layerfs.origin",
        &lower_ino.to_string(),
    );
    m.mount();
    let inos: Vec<u64> = ["a", "b", "c", "lowerfile"]
        .iter()
        .map(|n| ino(&m.p(n)))
        .collect();
    let mut uniq = inos.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "two files share an inode number: {inos:?}");
    assert_eq!(read(&m.p("a")), "A");
    assert_eq!(read(&m.p("b")), "B");
    assert_eq!(read(&m.p("c")), "C");
    assert_eq!(read(&m.p("lowerfile")), "lower");
    fs::write(m.p("a"), "A2").unwrap();
    assert_eq!(read(&m.p("b")), "B");
    assert_eq!(read(&m.p("a")), "A2");
}

#[test]
fn forged_index_entries_are_ignored() {
    let mut l = Layers::new();
    l.add().file("h1", "lower data").hardlink("h1", "h2");
    let mut m = Mount::new(&l.lowerdirs());
    m.umount();
    let key = format!(
        "{:016x}",
        fs::metadata(l.lowerdirs()[0].join("h1")).unwrap().ino()
    );
    let index = m.work.as_ref().unwrap().join("layerfs-index");
    fs::create_dir_all(&index).unwrap();
    fs::write(index.join(&key), "forged").unwrap();
    m.mount();
    assert_eq!(read(&m.p("h1")), "lower data");
    assert_eq!(read(&m.p("h2")), "lower data");
    // The stray entry does not stand in the way of the real copy-up: still one inode
    // for both names, and a write reaches both.
    fs::write(m.p("h1"), "new").unwrap();
    assert_eq!(read(&m.p("h2")), "new");
    assert_eq!(ino(&m.p("h1")), ino(&m.p("h2")));
}

#[test]
fn a_damaged_metacopy_fails_that_entry_only() {
    let mut l = Layers::new();
    l.add().file("present", "p");
    let mut m = Mount::new(&l.lowerdirs());
    m.umount();
    fs::write(m.up("orphan"), "").unwrap();
    let ok = Command::new("setfattr")
        .args(["-n", "trusted.overlay.metacopy"])
        .arg(m.up("orphan"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    m.mount();
    let err = fs::metadata(m.p("orphan")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(read(&m.p("present")), "p");
    let names = ls(&m.p(""));
    assert!(names.contains(&"present".to_string()), "{names:?}");
}
