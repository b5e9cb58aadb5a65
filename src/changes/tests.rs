//! The walk and `diff` on layers built in code in a temporary directory, without root,
//! FUSE or Docker: an image's layers and a container's upper and work directories, in
//! every spelling a container's upper layer may hold, read through [`Views::open`] as
//! `layerfs diff` reads a container.
//!
//! Most upper layers are written here by hand, as another tool would write them (the
//! marks are input: this is what the walk must read). The container cases that depend on
//! the union core's own bookkeeping (a hard-linked inode copied up into the index, a
//! rename that leaves a redirect, a chmod that copies metadata only) are written by the
//! union core itself, through the calls a mount makes, then read back.
//!
//! What an unprivileged process may write, and so what these tests build: files,
//! directories, symlinks, hard links, `.wh.` names, `user.*` xattrs (on a filesystem that
//! keeps them: ext4, xfs, btrfs, tmpfs since Linux 6.6) and char 0/0 whiteouts (anyone
//! may create those since Linux 5.8). The `trusted.overlay.*` spelling of the same marks
//! needs CAP_SYS_ADMIN: the tests that read marks check it too when they run as root
//! (CI does), and say so on stderr when they cannot; the union reads both namespaces the
//! same way (`union::xattr::read_marks`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::os::fd::AsFd;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Views, Visit, diff};
use crate::sys::{self, At};
use crate::union::{Caller, LayerSpec, NodeId, Options, ROOT_ID, SetAttr, Stack, Union, WorkSpec};
use crate::whiteout::{OpaqueStyle, Styles, WhiteoutStyle, XattrNs};

/// The mtime of everything built here (a copy is unchanged unless a test changes it).
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A container whose whiteouts are devices and whose opaque directories are xattrs: its
/// `.wh.` names are files. (Reading needs no privilege whatever the namespace named.)
const DEVICES: Styles = Styles::KERNEL;

/// A container made where mknod and xattrs are refused: `.wh.` names are its marks.
const WH_FILES: Styles = Styles {
    whiteout: WhiteoutStyle::WhFile,
    opaque: OpaqueStyle::WhFile,
};

/// What an unprivileged process may write with the union core: device whiteouts (Linux
/// 5.8+), `user.overlay.*` marks.
const ROOTLESS: Styles = Styles {
    whiteout: WhiteoutStyle::CharDevice,
    opaque: OpaqueStyle::Xattr(XattrNs::User),
};

/// One directory tree under construction: an image layer or the container's upper layer.
struct Tree(PathBuf);

impl Tree {
    fn p(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn parent(&self, rel: &str) {
        if let Some(d) = self.p(rel).parent() {
            fs::create_dir_all(d).unwrap();
        }
    }

    /// A regular file with `content`, mtime [`t0`].
    fn file(&self, rel: &str, content: &str) -> &Tree {
        self.parent(rel);
        fs::write(self.p(rel), content).unwrap();
        self.mtime(rel, 0)
    }

    fn dir(&self, rel: &str) -> &Tree {
        fs::create_dir_all(self.p(rel)).unwrap();
        self
    }

    fn symlink(&self, rel: &str, target: &str) -> &Tree {
        self.parent(rel);
        symlink(target, self.p(rel)).unwrap();
        self
    }

    fn hardlink(&self, existing: &str, rel: &str) -> &Tree {
        self.parent(rel);
        fs::hard_link(self.p(existing), self.p(rel)).unwrap();
        self
    }

    fn mode(&self, rel: &str, mode: u32) -> &Tree {
        fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Sets the mtime of a file or directory to [`t0`] + `secs`.
    fn mtime(&self, rel: &str, secs: u64) -> &Tree {
        let f = File::open(self.p(rel)).unwrap();
        f.set_times(FileTimes::new().set_modified(t0() + Duration::from_secs(secs)))
            .unwrap();
        self
    }

    /// The kernel's whiteout: a character device 0/0 (unprivileged since Linux 5.8).
    fn whiteout(&self, rel: &str) -> &Tree {
        self.parent(rel);
        nix::sys::stat::mknod(
            &self.p(rel),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap_or_else(|e| {
            panic!(
                "mknod of a 0/0 whiteout: {e} (any user may since Linux 5.8; a sandbox refuses it?)"
            )
        });
        self
    }

    /// An OCI whiteout: an empty `.wh.NAME` file beside NAME.
    fn wh(&self, rel: &str) -> &Tree {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, "")
    }

    /// An xattr on a file or directory (never a symlink here).
    fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Tree {
        let f = File::open(self.p(rel)).unwrap();
        sys::setxattr(At::Fd(f.as_fd()), OsStr::new(name), value, 0)
            .unwrap_or_else(|e| panic!("setxattr {name} on {rel}: {e}"));
        self
    }
}

/// The namespaces overlay marks are spelled in that this process may write: `user`
/// always, `trusted` as root.
fn mark_namespaces() -> Vec<&'static str> {
    let dir = tempfile::tempdir().unwrap();
    let f = File::open(dir.path()).unwrap();
    let name = OsStr::new("trusted.overlay.layerfs-test");
    if sys::setxattr(At::Fd(f.as_fd()), name, b"y", 0).is_ok() {
        vec!["user", "trusted"]
    } else {
        eprintln!(
            "note: trusted.overlay.* marks need CAP_SYS_ADMIN: checked as root only \
             (their user.overlay.* spelling is checked here)"
        );
        vec!["user"]
    }
}

/// An image's layers and a container's upper and work directories in a temporary
/// directory.
struct Fixture {
    dir: tempfile::TempDir,
    layers: usize,
    /// The image layers may spell whiteouts and opaque markers as `.wh.` files.
    lower_wh: bool,
}

impl Fixture {
    /// `layers` empty image layers, an empty upper and work directory.
    fn new(layers: usize) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-changes-")
            .tempdir()
            .unwrap();
        for i in 0..layers {
            fs::create_dir(dir.path().join(format!("l{i}"))).unwrap();
        }
        fs::create_dir(dir.path().join("upper")).unwrap();
        fs::create_dir(dir.path().join("work")).unwrap();
        Fixture {
            dir,
            layers,
            lower_wh: false,
        }
    }

    /// Image layer `i`, 0 the bottom one.
    fn lower(&self, i: usize) -> Tree {
        assert!(i < self.layers);
        Tree(self.dir.path().join(format!("l{i}")))
    }

    fn upper(&self) -> Tree {
        Tree(self.dir.path().join("upper"))
    }

    fn lowers(&self) -> Vec<LayerSpec> {
        (0..self.layers)
            .rev()
            .map(|i| LayerSpec::new(self.lower(i).0, self.lower_wh))
            .collect()
    }

    fn work(&self) -> WorkSpec {
        WorkSpec::from(self.dir.path().join("work").as_path())
    }

    /// The views of the container, its upper layer written in `styles` (its `.wh.` names
    /// marks exactly when those write them, as `Container::upper_spec` says).
    fn views(&self, styles: Styles) -> Views {
        let upper = LayerSpec::new(self.upper().0, styles.writes_wh_files());
        Views::open(&crate::container::Layers {
            lowers: self.lowers(),
            upper,
            work: self.work(),
            styles,
        })
        .unwrap()
    }

    /// What `layerfs diff` prints for the container.
    fn diff(&self, styles: Styles) -> String {
        let v = self.views(styles);
        let out = diff::changes(&v)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}\n", c.kind.letter(), String::from_utf8_lossy(&c.path)))
            .collect();
        // Every lookup the walk made is given back: only the roots are left.
        assert_eq!(
            (v.ctr.live_nodes(), v.img.live_nodes()),
            (1, 1),
            "nodes left"
        );
        out
    }

    /// The steps of a walk (`deleted_in_full` as given), one line each.
    fn trace(&self, styles: Styles, deleted_in_full: bool) -> Vec<String> {
        let v = self.views(styles);
        let mut out = Vec::new();
        v.walk(deleted_in_full, &mut |_, step| {
            let show = |p: &[u8]| format!("/{}", String::from_utf8_lossy(p));
            let flag = |on: bool, s: &str| if on { format!(" {s}") } else { String::new() };
            out.push(match step {
                Visit::Dir {
                    path,
                    img,
                    replaced,
                    in_full,
                    ..
                } => format!(
                    "dir {}{}{}{}",
                    show(path),
                    flag(img.is_none(), "new"),
                    flag(replaced, "replaced"),
                    flag(in_full, "in-full")
                ),
                Visit::Leaf {
                    path,
                    ctr,
                    img,
                    in_full,
                } => format!(
                    "leaf {}{}{}{}",
                    show(path),
                    flag(ctr.is_some(), "ctr"),
                    flag(img.is_some(), "img"),
                    flag(in_full, "in-full")
                ),
                Visit::Leave { path } => format!("leave {}", show(path)),
            });
            Ok(())
        })
        .unwrap();
        // Every lookup the walk made is given back: only the roots are left.
        assert_eq!(
            (v.ctr.live_nodes(), v.img.live_nodes()),
            (1, 1),
            "nodes left"
        );
        out
    }

    /// The container's layers as its mount writes them: a writable union core over them
    /// (spelled [`ROOTLESS`], what any user may write), dropped when `ops` is done.
    fn write_as_mount(&self, ops: impl FnOnce(&Mounted)) {
        let upper = LayerSpec::new(self.upper().0, false);
        let stack = Stack::open_styled(&self.lowers(), &upper, &self.work(), ROOTLESS).unwrap();
        let m = Mounted(Union::new(stack, Options::default()).unwrap());
        ops(&m);
    }
}

/// A writable union core, driven by path as a shell in a mount would drive it.
struct Mounted(Union);

impl Mounted {
    fn caller() -> Caller {
        Caller {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            umask: 0o022,
        }
    }

    fn node(&self, path: &str) -> NodeId {
        let mut id = ROOT_ID;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            id = self
                .0
                .lookup(id, OsStr::new(c))
                .unwrap_or_else(|e| panic!("lookup {path}: {e:?}"))
                .id;
        }
        id
    }

    /// The directory node and last name of `path`.
    fn split<'p>(&self, path: &'p str) -> (NodeId, &'p OsStr) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        (self.node(dir), OsStr::new(name))
    }

    /// `echo -n data > path` (a new file).
    fn create(&self, path: &str, data: &str) {
        let (dir, name) = self.split(path);
        let (_, open) = self
            .0
            .create(dir, name, 0o644, libc::O_WRONLY, &Mounted::caller())
            .unwrap();
        self.0.write(open.fh, 0, data.as_bytes()).unwrap();
        self.0.release(open.fh);
    }

    /// `echo -n data >> path`.
    fn append(&self, path: &str, data: &str) {
        let id = self.node(path);
        let size = self.0.getattr(id, None).unwrap().size;
        let open = self.0.open(id, libc::O_WRONLY).unwrap();
        self.0.write(open.fh, size, data.as_bytes()).unwrap();
        self.0.release(open.fh);
    }

    fn rm(&self, path: &str) {
        let (dir, name) = self.split(path);
        self.0.unlink(dir, name).unwrap();
    }

    fn rmdir(&self, path: &str) {
        let (dir, name) = self.split(path);
        self.0.rmdir(dir, name).unwrap();
    }

    fn mkdir(&self, path: &str) {
        let (dir, name) = self.split(path);
        self.0.mkdir(dir, name, 0o755, &Mounted::caller()).unwrap();
    }

    fn mv(&self, from: &str, to: &str) {
        let (d1, n1) = self.split(from);
        let (d2, n2) = self.split(to);
        self.0.rename(d1, n1, d2, n2, 0).unwrap();
    }

    fn ln(&self, existing: &str, new: &str) {
        let id = self.node(existing);
        let (dir, name) = self.split(new);
        self.0.link(id, dir, name).unwrap();
    }

    fn chmod(&self, path: &str, mode: u32) {
        let ch = SetAttr {
            mode: Some(mode),
            ..Default::default()
        };
        self.0.setattr(self.node(path), &ch).unwrap();
    }
}

/// The content of `path` as the container's view shows it.
fn read_ctr(v: &Views, path: &str) -> String {
    let mut id = ROOT_ID;
    for c in path.split('/') {
        id = v.ctr.lookup(id, OsStr::new(c)).unwrap().id;
    }
    let open = v.ctr.open(id, libc::O_RDONLY).unwrap();
    let data = v.ctr.read(open.fh, 0, 1 << 20).unwrap();
    v.ctr.release(open.fh);
    String::from_utf8(data).unwrap()
}

#[test]
fn an_untouched_container_and_unchanged_copies_list_nothing() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("etc/passwd", "root\n")
        .file("bin/sh", "#!")
        .dir("usr/lib");
    assert_eq!(f.diff(DEVICES), "");
    // Copied up with nothing changed (as a chown to the same owner leaves them).
    f.upper().file("etc/passwd", "root\n").dir("usr/lib");
    assert_eq!(f.diff(DEVICES), "");
    assert_eq!(f.diff(WH_FILES), "");
}

#[test]
fn added_and_changed_paths_as_docker_compares_them() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("etc/hosts", "h\n")
        .file("etc/motd", "m\n")
        .file("etc/passwd", "root\n")
        .file("etc/same-size", "aaaa")
        .file("etc/shadow", "s\n")
        .symlink("etc/link", "a")
        .dir("usr/bin");
    f.upper()
        .file("etc/hosts", "h\n") // the same: unchanged
        .file("etc/motd", "m\n")
        .mtime("etc/motd", 5) // only the mtime
        .file("etc/new", "n")
        .file("etc/passwd", "root\nuser\n") // the size
        .file("etc/same-size", "bbbb") // size and mtime alike: unchanged, as for Docker
        .file("etc/shadow", "s\n")
        .mode("etc/shadow", 0o600) // only the mode
        .symlink("etc/link", "bb")
        .file("newdir/sub/f", "f")
        .dir("usr/bin");
    let want = "\
C /etc
C /etc/link
C /etc/motd
A /etc/new
C /etc/passwd
C /etc/shadow
A /newdir
A /newdir/sub
A /newdir/sub/f
";
    assert_eq!(f.diff(DEVICES), want);
    assert_eq!(f.diff(WH_FILES), want);
}

#[test]
fn device_whiteouts_delete_in_every_container_spelling() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("etc/hosts", "h")
        .file("etc/keep", "k")
        .file("old/a", "a")
        .file("old/b/c", "c");
    f.upper()
        .whiteout("etc/hosts")
        .whiteout("old")
        .whiteout("never-was"); // hides nothing: not listed
    let want = "\
C /etc
D /etc/hosts
D /old
";
    assert_eq!(f.diff(DEVICES), want);
    // Where `.wh.` names are the marks, a device is a whiteout all the same.
    assert_eq!(f.diff(WH_FILES), want);
}

#[test]
fn wh_files_are_marks_only_where_the_container_spells_whiteouts_so() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("etc/hosts", "h")
        .file("etc/keep", "k")
        .file("old/a", "a");
    f.upper()
        .wh("etc/hosts")
        .wh("old")
        .file("etc/.wh..wh.plnk", "") // AUFS bookkeeping: never content
        .wh("etc/keep")
        .file("etc/keep", "again"); // a `.wh.` file and the name it hides: the name wins
    assert_eq!(
        f.diff(WH_FILES),
        "\
C /etc
C /etc/keep
D /etc/hosts
D /old
"
    );
    // A container whose whiteouts are devices: its `.wh.` names are files like any other.
    assert_eq!(
        f.diff(DEVICES),
        "\
A /.wh.old
C /etc
A /etc/.wh..wh.plnk
A /etc/.wh.hosts
A /etc/.wh.keep
C /etc/keep
"
    );
}

#[test]
fn opaque_directories_in_every_spelling() {
    for ns in mark_namespaces() {
        let f = Fixture::new(1);
        for d in ["x-ovl", "x-fo", "x-marker"] {
            f.lower(0)
                .file(&format!("{d}/old"), "o")
                .file(&format!("{d}/same"), "s");
            f.upper()
                .file(&format!("{d}/fresh"), "f")
                .file(&format!("{d}/same"), "s"); // in both: compared, unchanged
        }
        f.upper()
            .xattr("x-ovl", &format!("{ns}.overlay.opaque"), b"y")
            .xattr("x-fo", "user.fuseoverlayfs.opaque", b"y")
            .file("x-marker/.wh..wh..opq", "");
        let opaque = |d: &str| format!("C /{d}\nA /{d}/fresh\nD /{d}/old\n");
        assert_eq!(
            f.diff(WH_FILES),
            [opaque("x-fo"), opaque("x-marker"), opaque("x-ovl")].concat(),
            "{ns}"
        );
        // Where `.wh.` names are files, the marker is one and hides nothing.
        assert_eq!(
            f.diff(DEVICES),
            [
                opaque("x-fo"),
                "C /x-marker\nA /x-marker/.wh..wh..opq\nA /x-marker/fresh\n".into(),
                opaque("x-ovl")
            ]
            .concat(),
            "{ns}"
        );
        // Walked for a layer (commit): the opaque directory whole, without what it lost.
        let steps = f.trace(DEVICES, false);
        let at = steps
            .iter()
            .position(|s| s.starts_with("dir /x-ovl"))
            .unwrap();
        assert_eq!(
            steps[at..at + 4],
            [
                "dir /x-ovl replaced",
                "leaf /x-ovl/fresh ctr in-full",
                "leaf /x-ovl/same ctr img in-full",
                "leave /x-ovl"
            ],
            "{ns}"
        );
        let steps = f.trace(DEVICES, true);
        assert!(
            steps.contains(&"leaf /x-ovl/old img in-full".to_string()),
            "{ns}: {steps:#?}"
        );
    }
}

#[test]
fn xattr_whiteouts_only_in_directories_marked_for_them() {
    for ns in mark_namespaces() {
        let f = Fixture::new(1);
        f.lower(0)
            .file("marked/gone", "g")
            .file("marked/kept", "k")
            .file("plain/gone", "g");
        f.upper()
            .file("marked/gone", "")
            .xattr("marked/gone", &format!("{ns}.overlay.whiteout"), b"")
            .xattr("marked", &format!("{ns}.overlay.opaque"), b"x")
            // Unmarked directory: the same empty file is a file (emptied: changed).
            .file("plain/gone", "")
            .xattr("plain/gone", &format!("{ns}.overlay.whiteout"), b"");
        assert_eq!(
            f.diff(DEVICES),
            "\
C /marked
D /marked/gone
C /plain
C /plain/gone
",
            "{ns}"
        );
    }
}

#[test]
fn renamed_directories_follow_their_redirects() {
    for ns in mark_namespaces() {
        let redirect = format!("{ns}.overlay.redirect");
        let f = Fixture::new(1);
        f.lower(0)
            .file("usr/local/bin/tool", "t")
            .file("usr/local/readme", "r")
            .file("a/b/f", "f")
            .file("m/n/g", "g")
            .dir("top")
            .file("src/f1", "1")
            .dir("dst");
        f.upper()
            // Moved within its parent: an absolute redirect, the old name whited out.
            .dir("usr/moved")
            .xattr("usr/moved", &redirect, b"/usr/local")
            .whiteout("usr/local")
            // A relative redirect (the kernel's spelling within one directory).
            .dir("a/b2")
            .xattr("a/b2", &redirect, b"b")
            .whiteout("a/b")
            // Into another directory, changed there too.
            .dir("top/n2")
            .xattr("top/n2", &redirect, b"/m/n")
            .file("top/n2/g", "changed")
            .whiteout("m/n")
            // Over a directory the image has (empty: rename(2) may replace it): its
            // contents are the redirect's, not merged with the image's directory.
            .dir("dst")
            .xattr("dst", &redirect, b"/src")
            .whiteout("src");
        // A renamed directory is new where it is, whole, and gone where it was.
        assert_eq!(
            f.diff(DEVICES),
            "\
C /a
A /a/b2
A /a/b2/f
D /a/b
C /dst
A /dst/f1
C /m
D /m/n
C /top
A /top/n2
A /top/n2/g
C /usr
A /usr/moved
A /usr/moved/bin
A /usr/moved/bin/tool
A /usr/moved/readme
D /usr/local
D /src
",
            "{ns}"
        );
        let steps = f.trace(DEVICES, false);
        assert!(
            steps.contains(&"dir /usr/moved new replaced".to_string())
                && steps.contains(&"dir /usr/moved/bin new in-full".to_string())
                && steps.contains(&"leaf /usr/local img".to_string())
                && steps.contains(&"dir /dst replaced".to_string()),
            "{ns}: {steps:#?}"
        );
        assert_eq!(read_ctr(&f.views(DEVICES), "usr/moved/bin/tool"), "t");
    }
}

#[test]
fn metadata_only_copies_read_their_data_from_below() {
    for ns in mark_namespaces() {
        let metacopy = format!("{ns}.overlay.metacopy");
        let data = "0123456789".repeat(100);
        let f = Fixture::new(1);
        f.lower(0)
            .file("data/chmodded", &data)
            .file("data/untouched", &data);
        for name in ["data/chmodded", "data/untouched"] {
            // What a metadata-only copy-up leaves: a sparse file of the same size.
            let p = f.upper().p(name);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            File::create(&p).unwrap().set_len(1000).unwrap();
            f.upper().mtime(name, 0).xattr(name, &metacopy, b"");
        }
        f.upper().mode("data/chmodded", 0o600);
        assert_eq!(f.diff(DEVICES), "C /data\nC /data/chmodded\n", "{ns}");
        assert_eq!(read_ctr(&f.views(DEVICES), "data/chmodded"), data, "{ns}");
    }
}

#[test]
fn type_changes_are_changes_and_a_directory_over_a_file_is_new_inside() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("dir-now-file/inner", "i")
        .file("file-now-dir", "f")
        .symlink("link-now-dir", "x");
    f.upper()
        .file("dir-now-file", "now a file")
        .file("file-now-dir/inside", "i")
        .file("link-now-dir/inside", "i");
    assert_eq!(
        f.diff(DEVICES),
        "\
C /dir-now-file
C /file-now-dir
A /file-now-dir/inside
C /link-now-dir
A /link-now-dir/inside
"
    );
}

#[test]
fn the_image_side_reads_every_dialect_of_its_layers() {
    let mut f = Fixture::new(3);
    f.lower(0)
        .file("a", "a")
        .file("b", "b")
        .file("c", "c")
        .file("d/x", "x")
        .file("d/y", "y")
        .file("e/z", "z");
    // The middle layer spelled as an OCI tar unpacked without mknod: `.wh.` files.
    f.lower(1)
        .wh("a")
        .file("d/.wh..wh..opq", "")
        .file("d/new", "n");
    // The top layer in the kernel's spelling (user namespace: any user may write it).
    f.lower(2)
        .whiteout("b")
        .file("e/w", "w")
        .xattr("e", "user.overlay.opaque", b"y");
    f.upper()
        .file("a", "again")
        .file("b", "again")
        .file("c", "c")
        .file("d/x", "again")
        .file("e/z", "again");
    f.lower_wh = true;
    // The image has no a, b, d/x, e/z any more: the container adds them.
    assert_eq!(
        f.diff(DEVICES),
        "\
A /a
A /b
C /d
A /d/x
C /e
A /e/z
"
    );
    // Layers written where `.wh.` names are files: the middle layer hides nothing.
    f.lower_wh = false;
    assert_eq!(
        f.diff(DEVICES),
        "\
C /a
A /b
C /d
C /d/x
C /e
A /e/z
"
    );
}

#[test]
fn a_directory_lists_what_it_has_then_what_it_lost_bytewise() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("d/A", "1")
        .file("d/b", "1")
        .file("d/B", "1")
        .file("d/é", "1")
        .file("d/z", "1");
    f.upper()
        .whiteout("d/z")
        .whiteout("d/A")
        .file("d/é", "22")
        .file("d/b", "22")
        .file("d/a", "new");
    assert_eq!(
        f.diff(DEVICES),
        "\
C /d
A /d/a
C /d/b
C /d/é
D /d/A
D /d/z
"
    );
}

#[test]
fn a_tree_deeper_than_the_walks_window_of_open_directories() {
    // One lower layer: the walk keeps 32 levels open (`fdtree::window`); below that it
    // lets directories go and finds them again from the root when it comes back up.
    const DEPTH: usize = 40;
    let f = Fixture::new(1);
    let level = |i: usize| vec!["d"; i].join("/");
    let under = |i: usize, name: &str| {
        if i == 0 {
            name.to_string()
        } else {
            format!("{}/{name}", level(i))
        }
    };
    for i in 0..=DEPTH {
        f.lower(0).file(&under(i, "z"), "z");
        f.upper().file(&under(i, "z"), "z").mtime(&under(i, "z"), 1);
    }
    f.upper().file(&under(DEPTH, "new"), "n");
    let mut want = String::new();
    for i in 1..=DEPTH {
        want.push_str(&format!("C /{}\n", level(i)));
    }
    want.push_str(&format!("A /{}\n", under(DEPTH, "new")));
    for i in (0..=DEPTH).rev() {
        want.push_str(&format!("C /{}\n", under(i, "z")));
    }
    assert_eq!(f.diff(DEVICES), want);
}

#[test]
fn hard_linked_names_left_below_show_the_copied_up_inode() {
    let f = Fixture::new(1);
    f.lower(0)
        .file("data/a", "one")
        .hardlink("data/a", "data/b")
        .file("data/c", "c");
    f.write_as_mount(|m| m.append("data/a", " two"));
    // Copied up once, into the index: `b` was never touched, so the upper layer lacks it.
    assert!(f.upper().p("data/a").exists() && !f.upper().p("data/b").exists());
    assert_eq!(f.diff(ROOTLESS), "C /data\nC /data/a\nC /data/b\n");
    assert_eq!(read_ctr(&f.views(ROOTLESS), "data/b"), "one two");
}

#[test]
fn what_a_mount_writes_lists_as_docker_lists_it() {
    // tests/diff.rs makes the same changes through a real mount of busybox and compares
    // with what Docker lists; here the union core writes them, no FUSE.
    let f = Fixture::new(1);
    f.lower(0)
        .file("data/modify-me", "m\n")
        .file("data/original.txt", "o\n")
        .file("data/empty", "")
        .file("data/new-file", "n\n")
        .file("opaque-dir/new1", "1")
        .file("opaque-dir/samename", "s")
        .file("usr/local/bin/tool", "t")
        .file("usr/local/readme", "r")
        .dir("home");
    f.write_as_mount(|m| {
        m.create("data/added.txt", "new\n");
        m.append("data/modify-me", "more\n");
        m.rm("data/original.txt");
        m.rm("opaque-dir/new1");
        m.rm("opaque-dir/samename");
        m.rmdir("opaque-dir");
        m.mkdir("opaque-dir");
        m.create("opaque-dir/fresh", "x\n");
        m.mv("usr/local", "usr/moved-local");
        m.ln("data/new-file", "data/new-link");
        m.chmod("data/empty", 0o600);
        m.mkdir("newdir");
        m.mkdir("newdir/sub");
        m.create("newdir/sub/f", "y\n");
    });
    let want = "\
C /data
A /data/added.txt
C /data/empty
C /data/modify-me
A /data/new-link
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
A /usr/moved-local/bin/tool
A /usr/moved-local/readme
D /usr/local
";
    assert_eq!(f.diff(ROOTLESS), want);
}
