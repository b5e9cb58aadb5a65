//! POSIX behaviour of the merged view where union filesystems go wrong (TRAPS.md):
//! O_TRUNC, long names and paths, the caller's umask, parent timestamps, privilege bits,
//! sticky directories and rename permissions, copy-up staging. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test
#![allow(unsafe_code)]

mod common;

use std::fs;
use std::io::Write;

use common::mount::*;
use common::{NOBODY, python_as, sh, sh_as};

#[test]
fn o_trunc_truncates_files_that_already_have_an_upper_copy() {
    let mut l = Layers::new();
    l.add()
        .file("low", "lower content")
        .file("low2", "lower content");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), "long upper content").unwrap();
    fs::write(m.p("up"), "x").unwrap();
    assert_eq!(read(&m.p("up")), "x", "upper-only file");
    fs::write(m.p("low"), "copied up").unwrap();
    fs::write(m.p("low"), "y").unwrap();
    assert_eq!(read(&m.p("low")), "y", "copied-up file");
    // metadata-only copy-up first, then O_TRUNC
    sh(&format!("chmod 600 {}", m.p("low2").display()));
    fs::write(m.p("low2"), "z").unwrap();
    assert_eq!(read(&m.p("low2")), "z", "metacopy file");
    // O_TRUNC without writing anything
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("low"))
        .unwrap();
    assert_eq!(read(&m.p("low")), "");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("up"))
        .unwrap();
    f.write_all(b"ab").unwrap();
    drop(f);
    m.remount();
    assert_eq!(read(&m.p("up")), "ab");
    assert_eq!(read(&m.p("low")), "");
    assert_eq!(read(&m.p("low2")), "z");
    assert_eq!(
        fs::read_to_string(l.layers[0].p("low")).unwrap(),
        "lower content",
        "the lower layer is never truncated"
    );
}

fn name(c: char, len: usize) -> String {
    std::iter::repeat_n(c, len).collect()
}

#[test]
fn names_of_255_bytes_work_everywhere_and_256_is_enametoolong() {
    let n255 = name('a', 255);
    let l255 = name('l', 255);
    let d255 = name('d', 255);
    let n256 = name('b', 256);
    let mut l = Layers::new();
    l.add()
        .file(&l255, "lower")
        .file(&format!("{d255}/{l255}"), "deep lower")
        .file(&name('x', 255), "x");
    let mut m = Mount::new(&l.lowerdirs());
    assert_eq!(read(&m.p(&l255)), "lower");
    // create, write, rename, link, delete with 255 bytes
    fs::write(m.p(&n255), "new").expect("create a 255-byte name");
    fs::create_dir(m.p(&name('e', 255))).expect("mkdir a 255-byte name");
    std::os::unix::fs::symlink(&n255, m.p(&name('s', 255))).expect("symlink");
    fs::hard_link(m.p(&n255), m.p(&name('h', 255))).expect("link to a 255-byte name");
    fs::rename(m.p(&n255), m.p(&name('r', 255))).expect("rename to a 255-byte name");
    // lower 255-byte names: copy-up, rename (leaves a whiteout), delete
    fs::write(m.p(&format!("{d255}/{l255}")), "changed").expect("copy-up");
    fs::rename(m.p(&l255), m.p(&name('m', 255))).expect("rename a lower 255-byte name");
    assert!(is_whiteout(&m.up(&l255)));
    fs::remove_file(m.p(&name('x', 255))).expect("unlink a lower 255-byte name");
    assert!(is_whiteout(&m.up(&name('x', 255))));
    fs::remove_file(m.p(&format!("{d255}/{l255}"))).unwrap();
    fs::remove_dir(m.p(&d255)).expect("rmdir a lower 255-byte name");
    fs::write(m.p(&l255), "again").expect("re-create over a 255-byte whiteout");
    fs::create_dir(m.p(&d255)).expect("mkdir over a 255-byte whiteout");
    assert!(ls(&m.p(&d255)).is_empty());
    fs::remove_file(m.p(&name('h', 255))).unwrap();

    for (what, r) in [
        ("create", fs::write(m.p(&n256), "")),
        ("mkdir", fs::create_dir(m.p(&n256))),
        ("rename", fs::rename(m.p(&l255), m.p(&n256))),
        ("link", fs::hard_link(m.p(&l255), m.p(&n256))),
        ("symlink", std::os::unix::fs::symlink("t", m.p(&n256))),
        ("stat", fs::metadata(m.p(&n256)).map(|_| ())),
    ] {
        assert_eq!(errno(r), libc::ENAMETOOLONG, "{what} with 256 bytes");
    }
    let mut expect = vec![
        l255.clone(),
        d255.clone(),
        name('e', 255),
        name('m', 255),
        name('r', 255),
        name('s', 255),
    ];
    expect.sort();
    assert_eq!(ls(&m.p("")), expect);
    m.remount();
    assert_eq!(ls(&m.p("")), expect);
    assert_eq!(read(&m.p(&name('r', 255))), "new");
    assert_eq!(read(&m.p(&name('m', 255))), "lower");
    assert_eq!(read(&m.p(&l255)), "again");
    assert!(staged(&m).is_empty());
}

/// Builds (or walks) a chain of 40 directories of 200-byte names below argv[1] with
/// relative mkdir + chdir, so its depth (> 8000 bytes) is past PATH_MAX.
const DEEP: &str = r#"
import os, sys
os.chdir(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "build"
n = "d" * 200
for i in range(40):
    if mode == "build":
        os.mkdir(n)
    os.chdir(n)
if mode == "build":
    with open("leaf", "w") as f:
        f.write("deep")
print(open("leaf").read())
path = os.getcwd()
print(len(path))
"#;

#[test]
fn trees_deeper_than_path_max() {
    let mut l = Layers::new();
    let low = l.add();
    python_as(0, DEEP, &[&low.path]);
    let mut m = Mount::new(&l.lowerdirs());
    // a deep lower tree: read, then write (copies up 40 parents), rename inside it
    let out = python_as(
        0,
        r#"
import os, sys
os.chdir(sys.argv[1])
n = "d" * 200
for i in range(40):
    os.chdir(n)
assert open("leaf").read() == "deep"
with open("leaf", "a") as f:
    f.write("+up")
os.rename("leaf", "leaf2")
os.mkdir("more")
os.chdir("more")
with open("new", "w") as f:
    f.write("new")
print(len(os.getcwd()))
"#,
        &[&m.p("")],
    );
    let depth: usize = out.trim().parse().unwrap();
    assert!(depth > 4096, "deeper than PATH_MAX: {depth}");
    // a deep tree built through the mount
    fs::create_dir(m.p("new")).unwrap();
    let out = python_as(0, DEEP, &[&m.p("new")]);
    assert!(out.starts_with("deep"), "{out}");
    m.remount();
    let out = python_as(
        0,
        r#"
import os, sys
os.chdir(sys.argv[1])
n = "d" * 200
for i in range(40):
    os.chdir(n)
print(open("leaf2").read(), open("more/new").read())
"#,
        &[&m.p("")],
    );
    assert_eq!(out.trim(), "deep+up new");
    let out = python_as(0, DEEP, &[&m.p("new"), &"walk"]);
    assert!(out.starts_with("deep"), "{out}");
    // remove both trees with fd-relative calls (rm -rf does)
    let out = sh(&format!("cd {} && rm -rf new dddd*", m.p("").display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ls(&m.p("")).is_empty());
    assert!(staged(&m).is_empty());
}

/// Mode of `p` without the file type.
fn perm(p: &std::path::Path) -> u32 {
    mode(p) & 0o7777
}

#[test]
fn the_callers_umask_is_honoured_exactly() {
    let mut l = Layers::new();
    l.add().dir("low").mode("low", 0o777);
    let m = Mount::new(&l.lowerdirs());
    for (umask, file, dir) in [
        (0o022, 0o644, 0o755),
        (0o077, 0o600, 0o700),
        (0o000, 0o666, 0o777),
        (0o027, 0o640, 0o750),
    ] {
        // in the (upper) root as root, in a lower dir (copied up) as root and as nobody
        for (parent, who) in [("", "root"), ("low", "root"), ("low", "nobody")] {
            let tag = format!("{who}{umask:03o}");
            let base = m.p(parent);
            let script = format!(
                "cd {} && umask {umask:03o} && : > f{tag} && mkdir d{tag} && mkfifo p{tag} && \
                 python3 -c 'import os; os.mknod(\"n{tag}\", 0o100666)'",
                base.display()
            );
            let out = if who == "root" {
                sh(&script)
            } else {
                sh_as(NOBODY, &script)
            };
            assert!(
                out.status.success(),
                "{tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let at = |c: char| base.join(format!("{c}{tag}"));
            assert_eq!(perm(&at('f')), file, "create, {tag} in /{parent}");
            assert_eq!(perm(&at('d')), dir, "mkdir, {tag} in /{parent}");
            assert_eq!(perm(&at('p')), file, "mkfifo, {tag} in /{parent}");
            assert_eq!(perm(&at('n')), file, "mknod, {tag} in /{parent}");
            let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata(at('f')).unwrap());
            assert_eq!(uid, if who == "root" { 0 } else { 65534 });
        }
    }
}

/// (mtime, ctime) of `p` in nanoseconds.
fn times(p: &std::path::Path) -> (i128, i128) {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (
        i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
    )
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// The filesystem clock is coarse (a jiffy behind `now`): times within this of a moment
/// count as that moment.
const SLACK: i128 = 50_000_000;

/// Lets the coarse filesystem clock move well past the last change.
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(120));
}

#[test]
fn parent_times_follow_create_unlink_rename_also_through_copy_up() {
    let mut l = Layers::new();
    let low = l.add();
    for d in ["c", "u", "r1", "r2", "m", "k", "cu", "x"] {
        low.dir(d);
    }
    low.file("u/f1", "f")
        .file("u/f2", "f")
        .file("r1/f1", "f")
        .file("r1/f2", "f")
        .file("k/sub/f", "f")
        .file("cu/f", "f")
        .file("x/f", "f");
    // old lower times, so that any update shows
    sh(&format!(
        "find {} -exec touch -h -d @1000000000 {{}} +",
        low.path.display()
    ));
    let m = Mount::new(&l.lowerdirs());
    let old = times(&m.p("c"));
    assert_eq!(old.0, 1_000_000_000 * 1_000_000_000, "lower times show");

    // `op` changes entries of `dirs`: their mtime and ctime move to now
    let changes = |dirs: &[&str], what: &str, op: &dyn Fn()| {
        let before: Vec<_> = dirs.iter().map(|d| times(&m.p(d))).collect();
        tick();
        let t0 = now_ns();
        op();
        for (dir, before) in dirs.iter().zip(before) {
            let (mt, ct) = times(&m.p(dir));
            for (which, t, b) in [("mtime", mt, before.0), ("ctime", ct, before.1)] {
                assert!(
                    t > b && t >= t0 - SLACK && t <= now_ns(),
                    "{what}: {which} of /{dir} not updated ({t}, before {b}, now {t0})"
                );
            }
        }
    };
    // twice: first each parent is a lower dir that the change copies up, then it has
    // an upper copy already
    for (round, n) in [("lower parent", "1"), ("upper parent", "2")] {
        let create = format!("create, {round}");
        changes(&["c"], &create, &|| {
            fs::write(m.p(&format!("c/n{n}")), "n").unwrap()
        });
        let unlink = format!("unlink, {round}");
        changes(&["u"], &unlink, &|| {
            fs::remove_file(m.p(&format!("u/f{n}"))).unwrap()
        });
        let mkdir = format!("mkdir, {round}");
        changes(&["m"], &mkdir, &|| {
            fs::create_dir(m.p(&format!("m/d{n}"))).unwrap()
        });
        let rename = format!("rename, {round}");
        changes(&["r1", "r2"], &rename, &|| {
            fs::rename(m.p(&format!("r1/f{n}")), m.p(&format!("r2/g{n}"))).unwrap()
        });
    }
    changes(&["r2"], "rename within", &|| {
        fs::rename(m.p("r2/g1"), m.p("r2/h")).unwrap()
    });
    changes(&["k"], "rmdir", &|| {
        sh(&format!("rm -rf {}", m.p("k/sub").display()));
    });
    assert!(!exists(&m.p("k/sub")));

    // a new entry's times are now
    let t0 = now_ns();
    fs::write(m.p("c/new"), "n").unwrap();
    let md = fs::metadata(m.p("c/new")).unwrap();
    use std::os::unix::fs::MetadataExt;
    for (which, sec, nsec) in [
        ("atime", md.atime(), md.atime_nsec()),
        ("mtime", md.mtime(), md.mtime_nsec()),
        ("ctime", md.ctime(), md.ctime_nsec()),
    ] {
        let t = i128::from(sec) * 1_000_000_000 + i128::from(nsec);
        assert!(
            t >= t0 - SLACK && t <= now_ns(),
            "a new entry's {which} is now"
        );
    }

    // a copy-up alone is not a change of the parent (kernel overlayfs keeps its times)
    fs::write(m.p("cu/f"), "changed").unwrap();
    assert_eq!(
        times(&m.p("cu")).0,
        old.0,
        "copy-up leaves the parent's mtime"
    );
    sh(&format!("chmod 600 {}", m.p("x/f").display()));
    assert_eq!(
        times(&m.p("x")).0,
        old.0,
        "metacopy leaves the parent's mtime"
    );
}

#[test]
fn write_and_truncate_by_a_non_owner_clear_setuid_and_setgid() {
    let mut l = Layers::new();
    let low = l.add();
    // world-writable so that nobody may write; owned by root
    for f in ["w", "t", "o", "ot", "g", "gnx", "l", "fa"] {
        low.file(f, "data");
    }
    low.mode("w", 0o6777)
        .mode("t", 0o6777)
        .mode("o", 0o6777)
        .mode("ot", 0o6777)
        .mode("g", 0o2777)
        .mode("gnx", 0o2767)
        .mode("l", 0o6777)
        .mode("fa", 0o6666);
    let m = Mount::new(&l.lowerdirs());
    fs::write(m.p("u"), "upper").unwrap();
    fs::set_permissions(
        m.p("u"),
        std::os::unix::fs::PermissionsExt::from_mode(0o6777),
    )
    .unwrap();
    assert_eq!(perm(&m.p("u")), 0o6777);

    let run = |cmd: String| {
        let out = sh_as(NOBODY, &cmd);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(format!("echo more >> {}", m.p("w").display()));
    assert_eq!(perm(&m.p("w")), 0o777, "append by a non-owner (lower file)");
    run(format!("echo more >> {}", m.p("u").display()));
    assert_eq!(perm(&m.p("u")), 0o777, "append by a non-owner (upper file)");
    run(format!("truncate -s 1 {}", m.p("t").display()));
    assert_eq!(perm(&m.p("t")), 0o777, "truncate by a non-owner");
    run(format!("echo x > {}", m.p("o").display()));
    assert_eq!(perm(&m.p("o")), 0o777, "O_TRUNC rewrite by a non-owner");
    run(format!(": > {}", m.p("ot").display()));
    assert_eq!(
        perm(&m.p("ot")),
        0o777,
        "O_TRUNC open by a non-owner (lower file)"
    );
    fs::set_permissions(
        m.p("u"),
        std::os::unix::fs::PermissionsExt::from_mode(0o6777),
    )
    .unwrap();
    run(format!(": > {}", m.p("u").display()));
    assert_eq!(
        perm(&m.p("u")),
        0o777,
        "O_TRUNC open by a non-owner (upper file)"
    );
    run(format!("echo x >> {}", m.p("g").display()));
    assert_eq!(perm(&m.p("g")), 0o777, "setgid with group-exec is cleared");
    // Setgid without group-exec goes too for a writer outside the file's group, as the
    // kernel's file_remove_privs does (FUSE alone kept it: issue 26); so for fallocate.
    run(format!("echo x >> {}", m.p("gnx").display()));
    assert_eq!(
        perm(&m.p("gnx")),
        0o767,
        "setgid without group-exec, writer outside"
    );
    run(format!("fallocate -p -o 0 -l 1 {}", m.p("fa").display()));
    assert_eq!(
        perm(&m.p("fa")),
        0o666,
        "fallocate by a non-owner outside the group"
    );
    // root writing keeps them (CAP_FSETID)
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("l"))
        .unwrap()
        .write_all(b"root")
        .unwrap();
    assert_eq!(perm(&m.p("l")), 0o6777, "a write by root keeps the bits");
    // chown clears both (setgid with group-exec)
    std::os::unix::fs::chown(m.p("l"), Some(1), Some(1)).unwrap();
    assert_eq!(perm(&m.p("l")), 0o777, "chown clears setuid and setgid");
    // data written is all there
    assert_eq!(read(&m.p("w")), "datamore\n");
    assert_eq!(read(&m.p("t")), "d");
    assert_eq!(read(&m.p("o")), "x\n");
}

#[test]
fn sticky_directories_and_moving_directories_need_permission() {
    let mut l = Layers::new();
    let low = l.add();
    low.dir("tmp").mode("tmp", 0o1777);
    low.file("tmp/roots", "r").file("tmp/other", "o");
    low.owner("tmp/other", 1, 1);
    low.file("tmp/nobodys", "n")
        .owner("tmp/nobodys", 65534, 65534);
    // nobody owns p1, p2 and q; p1/d is root's
    low.dir("p1/d").dir("p2").dir("q/e");
    for d in ["p1", "p2", "q", "q/e"] {
        low.owner(d, 65534, 65534);
    }
    let m = Mount::new(&l.lowerdirs());
    let as_nobody = |cmd: String| sh_as(NOBODY, &cmd);
    let p = |r: &str| m.p(r).display().to_string();

    let out = as_nobody(format!("rm -f {}", p("tmp/roots")));
    assert!(
        !out.status.success(),
        "nobody removed root's file in a sticky dir"
    );
    assert!(exists(&m.p("tmp/roots")));
    let out = as_nobody(format!("mv {} {}", p("tmp/other"), p("tmp/mine")));
    assert!(
        !out.status.success(),
        "nobody renamed another user's file in a sticky dir"
    );
    let out = as_nobody(format!("mv {} {}", p("tmp/nobodys"), p("tmp/renamed")));
    assert!(
        out.status.success(),
        "own file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(format!("touch {} && rm {}", p("tmp/new"), p("tmp/new")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // root may, of course
    fs::rename(m.p("tmp/other"), m.p("tmp/other2")).unwrap();

    let out = as_nobody(format!("mv {} {}", p("p1/d"), p("p2/d")));
    assert!(
        !out.status.success(),
        "moving a directory to another parent needs write permission on it (its ..)"
    );
    assert!(exists(&m.p("p1/d")));
    let out = as_nobody(format!("mv {} {}", p("p1/d"), p("p1/d2")));
    assert!(
        out.status.success(),
        "same parent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(format!("mv {} {}", p("q/e"), p("p2/e")));
    assert!(
        out.status.success(),
        "own dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ls(&m.p("p2")), vec!["e"]);
    assert_eq!(ls(&m.p("tmp")), vec!["other2", "renamed", "roots"]);
}

#[test]
fn leftover_staging_entries_are_cleaned_at_mount_and_never_visible() {
    let mut l = Layers::new();
    l.add().file("f", "lower").file("d/g", "g");
    let mut m = Mount::new(&l.lowerdirs());
    fs::write(m.p("f"), "upper").unwrap();
    m.umount();
    // what a crash mid copy-up or mid rename could leave
    let tmp = m.work.as_ref().unwrap().join("layerfs-tmp");
    fs::write(tmp.join("#7"), "half a copy").unwrap();
    fs::create_dir_all(tmp.join("#8/sub")).unwrap();
    fs::write(tmp.join("#8/sub/x"), "x").unwrap();
    nix::sys::stat::mknod(
        &tmp.join("#9"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    m.mount();
    assert!(staged(&m).is_empty(), "staging is emptied at mount");
    assert_eq!(ls(&m.p("")), vec!["d", "f"]);
    assert_eq!(read(&m.p("f")), "upper");
    // a burst of copy-ups, renames and removals leaves nothing staged
    for i in 0..20 {
        fs::write(m.p(&format!("d/n{i}")), "n").unwrap();
        fs::rename(m.p(&format!("d/n{i}")), m.p(&format!("n{i}"))).unwrap();
    }
    fs::write(m.p("d/g"), "changed").unwrap();
    sh(&format!("rm -rf {}", m.p("d").display()));
    fs::create_dir(m.p("d")).unwrap();
    assert!(staged(&m).is_empty());
}

#[test]
fn data_of_an_unlinked_open_file_is_freed_at_the_last_close() {
    let mut l = Layers::new();
    l.add().file("low", "lower");
    let m = Mount::new(&l.lowerdirs());
    fs::write(m.p("up"), vec![b'x'; 1 << 20]).unwrap();
    let a = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("up"))
        .unwrap();
    let b = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("low"))
        .unwrap();
    fs::remove_file(m.p("up")).unwrap();
    fs::remove_file(m.p("low")).unwrap();
    let daemon_deleted_fds = || {
        let out = sh(&format!(
            "for p in $(pgrep -f '[l]ayerfs-overlay.*{}'); do ls -l /proc/$p/fd; done",
            m.mp.display()
        ));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("(deleted)"))
            .count()
    };
    assert!(daemon_deleted_fds() >= 2, "the data lives while open");
    use std::io::{Read, Seek};
    (&b).write_all(b"L").unwrap();
    (&b).rewind().unwrap();
    let mut s = String::new();
    (&b).read_to_string(&mut s).unwrap();
    assert_eq!(s, "Lower");
    drop(a);
    drop(b);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(daemon_deleted_fds(), 0, "freed at the last close");
}

/// A directory stream read through libc, so that changes can happen between getdents
/// calls of one open directory.
struct DirStream(*mut libc::DIR);

impl DirStream {
    fn open(p: &std::path::Path) -> DirStream {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(!d.is_null(), "opendir {}", p.display());
        DirStream(d)
    }

    /// Up to `n` more names (without . and ..).
    fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            // SAFETY: the stream is open; the entry is copied out before the next call.
            let e = unsafe { libc::readdir(self.0) };
            if e.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*e).d_name.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out
    }

    fn tell(&self) -> libc::c_long {
        // SAFETY: the stream is open.
        unsafe { libc::telldir(self.0) }
    }

    fn seek(&mut self, pos: libc::c_long) {
        // SAFETY: the stream is open and pos came from telldir on it.
        unsafe { libc::seekdir(self.0, pos) }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: opened by opendir, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

#[test]
fn readdir_neither_repeats_nor_skips_while_the_directory_changes() {
    let mut l = Layers::new();
    let layers = [l.add(), l.add(), l.add()];
    let mut all = Vec::new();
    for i in 0..900 {
        let n = format!("{i:04}{}", name('x', 150));
        layers[i % 3].file(&format!("big/{n}"), "x");
        if i % 5 == 0 {
            layers[(i + 1) % 3].file(&format!("big/{n}"), "dup");
        }
        all.push(n);
    }
    let m = Mount::new(&l.lowerdirs());
    let dir = m.p("big");
    let mut d = DirStream::open(&dir);
    let mut seen = d.take(300);
    let mark = d.tell();
    let rest_before: Vec<String> = {
        let mut d2 = DirStream::open(&dir);
        let v = d2.take(usize::MAX);
        v[300..].to_vec()
    };
    // remove some names already read and some not yet read, create new ones
    let removed: Vec<&String> = all.iter().step_by(6).collect();
    for n in &removed {
        fs::remove_file(dir.join(n)).unwrap();
    }
    for i in 0..150 {
        fs::write(dir.join(format!("new{i:03}")), "n").unwrap();
    }
    // copy-ups of names not yet read must not move them either
    for n in all
        .iter()
        .skip(3)
        .step_by(7)
        .filter(|n| !removed.contains(n))
        .take(60)
    {
        fs::write(dir.join(n), "changed").unwrap();
    }
    seen.extend(d.take(usize::MAX));
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no name twice in one pass");
    for n in &all {
        if !removed.contains(&n) {
            assert!(seen.contains(n), "{n} was there all along and was skipped");
        }
    }
    // seekdir back to a telldir position taken before the changes
    d.seek(mark);
    let again = d.take(usize::MAX);
    let mut again_sorted = again.clone();
    again_sorted.sort();
    again_sorted.dedup();
    assert_eq!(
        again_sorted.len(),
        again.len(),
        "no name twice after seekdir"
    );
    for n in &rest_before {
        if !removed.contains(&n) {
            assert!(again.contains(n), "{n} skipped after seekdir");
        }
    }
    // a fresh listing shows the new state exactly
    let now = ls(&dir);
    let mut expect: Vec<String> = all
        .iter()
        .filter(|n| !removed.contains(n))
        .cloned()
        .chain((0..150).map(|i| format!("new{i:03}")))
        .collect();
    expect.sort();
    let extra: Vec<&String> = now.iter().filter(|n| !expect.contains(n)).collect();
    let missing: Vec<&String> = expect.iter().filter(|n| !now.contains(n)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "fresh listing: extra {extra:?}, missing {missing:?}"
    );
    assert_eq!(now, expect);
}

#[test]
fn the_end_of_an_old_session_does_not_unmount_a_new_mount_at_the_same_place() {
    let mut l = Layers::new();
    l.add().file("f", "lower");
    let mut m = Mount::new(&l.lowerdirs());
    // keep the first session alive past its (lazy) unmount with an open file
    let f = fs::File::open(m.p("f")).unwrap();
    let out = sh(&format!("umount -l {}", m.mp.display()));
    assert!(out.status.success());
    m.mount();
    fs::write(m.p("new"), "n").unwrap();
    // the first session ends now; its daemon exits
    drop(f);
    let old_gone = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let daemons = sh(&format!(
            "pgrep -f '[l]ayerfs-overlay.*{}' | wc -l",
            m.mp.display()
        ));
        if String::from_utf8_lossy(&daemons.stdout).trim() == "1"
            || std::time::Instant::now() > old_gone
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        is_mounted(&m.mp),
        "the old daemon's exit unmounted the new mount"
    );
    assert_eq!(read(&m.p("new")), "n");
}
