//! The union core without FUSE, over temporary layer directories: merge rules, every
//! whiteout and opaque dialect, node identity (hard links, copy-up, stale names), the
//! hard-link index, and the core used from many threads at once. What lands on disk is
//! checked too. Needs root (trusted.* xattrs, char 0/0 whiteouts), not /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::mount::{Layers, is_whiteout};
use layerfs::union::{Caller, LayerSpec, NodeId, Options, ROOT_ID, SetAttr, Stack, Union};

const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

struct Fixture {
    _layers: Layers,
    upper: PathBuf,
    union: Union,
}

/// A union over `layers` (top last) with a fresh upper layer; `wh_files`: the lower
/// layers may spell whiteouts as `.wh.` files.
fn union_over(layers: Layers, wh_files: bool) -> Fixture {
    common::require_root("writes layers in the kernel's format: trusted.* xattrs, char 0/0");
    let upper = layers.root.path().join("upper");
    let work = layers.root.path().join("work");
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    let specs: Vec<LayerSpec> = layers
        .lowerdirs()
        .into_iter()
        .map(|path| LayerSpec::new(path, wh_files))
        .collect();
    let up = LayerSpec::new(upper.clone(), false);
    let stack = Stack::open(&specs, Some((&up, &work.as_path().into()))).unwrap();
    let union = Union::new(stack, Options::default()).unwrap();
    Fixture {
        _layers: layers,
        upper,
        union,
    }
}

fn os(s: &str) -> OsString {
    OsString::from(s)
}

/// Looks up a path of names from the root.
fn walk(u: &Union, path: &str) -> Result<NodeId, i32> {
    let mut id = ROOT_ID;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        id = u.lookup(id, OsStr::new(c)).map_err(|e| e.errno())?.id;
    }
    Ok(id)
}

fn names(u: &Union, dir: NodeId) -> Vec<String> {
    let mut v = Vec::new();
    u.readdir(dir, 0, |_, e| {
        if e.name != "." && e.name != ".." {
            v.push(e.name.to_string_lossy().into_owned());
        }
        false
    })
    .unwrap();
    v.sort();
    v
}

fn read_all(u: &Union, id: NodeId) -> String {
    let o = u.open(id, libc::O_RDONLY).unwrap();
    let data = u.read(o.fh, 0, 1 << 20).unwrap();
    u.release(o.fh);
    String::from_utf8(data).unwrap()
}

fn write_at(u: &Union, id: NodeId, data: &str) {
    let o = u.open(id, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    u.write(o.fh, 0, data.as_bytes()).unwrap();
    u.release(o.fh);
}

#[test]
fn merge_rules_and_every_whiteout_dialect() {
    let mut l = Layers::new();
    l.add()
        .file("keep", "bottom")
        .file("shadowed", "bottom")
        .file("wh_dev", "x")
        .file("wh_file", "x")
        .file("d/below", "x")
        .file("op_trusted/hidden", "x")
        .file("op_user/hidden", "x")
        .file("op_fo/hidden", "x")
        .file("op_marker/hidden", "x")
        .file("file_over_dir/inner", "x");
    l.add()
        .file("shadowed", "top")
        .whiteout("wh_dev")
        .wh_file("wh_file")
        .file("d/above", "y")
        .opaque("op_trusted")
        .file("op_trusted/seen", "y")
        .opaque_user("op_user")
        .dir("op_fo")
        .xattr("op_fo", "user.fuseoverlayfs.opaque", b"y")
        .opaque_wh("op_marker")
        .file("file_over_dir", "a file now");
    let f = union_over(l, true);
    let u = &f.union;
    assert_eq!(
        names(u, ROOT_ID),
        [
            "d",
            "file_over_dir",
            "keep",
            "op_fo",
            "op_marker",
            "op_trusted",
            "op_user",
            "shadowed"
        ]
    );
    assert_eq!(read_all(u, walk(u, "shadowed").unwrap()), "top");
    assert_eq!(read_all(u, walk(u, "keep").unwrap()), "bottom");
    assert_eq!(walk(u, "wh_dev"), Err(libc::ENOENT));
    assert_eq!(walk(u, "wh_file"), Err(libc::ENOENT));
    assert_eq!(
        walk(u, ".wh.wh_file"),
        Err(libc::ENOENT),
        "markers are not entries"
    );
    assert_eq!(names(u, walk(u, "d").unwrap()), ["above", "below"]);
    for op in ["op_trusted", "op_user", "op_fo", "op_marker"] {
        let seen: Vec<String> = names(u, walk(u, op).unwrap());
        assert!(!seen.contains(&"hidden".to_string()), "{op}: {seen:?}");
    }
    assert_eq!(names(u, walk(u, "op_trusted").unwrap()), ["seen"]);
    assert_eq!(walk(u, "file_over_dir/inner"), Err(libc::ENOTDIR));
}

#[test]
fn deletions_leave_whiteouts_on_disk_and_a_new_directory_there_is_opaque() {
    let mut l = Layers::new();
    l.add().file("f", "x").file("d/inner", "x");
    let f = union_over(l, false);
    let u = &f.union;
    u.unlink(ROOT_ID, OsStr::new("f")).unwrap();
    assert!(is_whiteout(&f.upper.join("f")));
    assert_eq!(walk(u, "f"), Err(libc::ENOENT));
    u.unlink(walk(u, "d").unwrap(), OsStr::new("inner"))
        .unwrap();
    u.rmdir(ROOT_ID, OsStr::new("d")).unwrap();
    assert!(is_whiteout(&f.upper.join("d")));
    u.mkdir(ROOT_ID, OsStr::new("d"), 0o755, &ROOT).unwrap();
    assert!(names(u, walk(u, "d").unwrap()).is_empty());
    assert_eq!(
        xattr(&f.upper.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    common::mount::getxattr(p, name)
}

#[test]
fn node_identity_survives_copy_up_and_hard_links_stay_one_inode() {
    let mut l = Layers::new();
    l.add()
        .file("a/h1", "lower")
        .hardlink("a/h1", "a/h2")
        .file("plain", "p");
    let f = union_over(l, false);
    let u = &f.union;
    let h1 = walk(u, "a/h1").unwrap();
    let h2 = walk(u, "a/h2").unwrap();
    assert_eq!(h1, h2, "two names of one lower inode are one node");
    write_at(u, h1, "new data");
    // Copied up once, into the index; every name sees it, as the same node.
    assert_eq!(walk(u, "a/h2").unwrap(), h1);
    assert_eq!(read_all(u, walk(u, "a/h2").unwrap()), "new data");
    let key = format!(
        "{:016x}",
        fs::metadata(f._layers.lowerdirs()[0].join("a/h1"))
            .unwrap()
            .ino()
    );
    let indexed = f
        .upper
        .parent()
        .unwrap()
        .join("work/layerfs-index")
        .join(key);
    assert_eq!(fs::read_to_string(indexed).unwrap(), "new data");
    // A copy-up keeps the node and its inode number.
    let p = walk(u, "plain").unwrap();
    let ino_before = u.getattr(p, None).unwrap().ino;
    let ch = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    u.setattr(p, &ch).unwrap();
    assert_eq!(walk(u, "plain").unwrap(), p);
    assert_eq!(u.getattr(p, None).unwrap().ino, ino_before);
    assert_eq!(
        fs::metadata(f.upper.join("plain")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(read_all(u, p), "p", "metacopy: data still from below");
}

#[test]
fn an_open_unlinked_file_is_changed_never_what_its_old_name_points_at() {
    let mut l = Layers::new();
    l.add();
    let f = union_over(l, false);
    let u = &f.union;
    let host = f.upper.parent().unwrap().join("host");
    fs::write(&host, "host").unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o600)).unwrap();
    let (e, o) = u
        .create(ROOT_ID, OsStr::new("x"), 0o644, libc::O_RDWR, &ROOT)
        .unwrap();
    u.unlink(ROOT_ID, OsStr::new("x")).unwrap();
    u.symlink(ROOT_ID, OsStr::new("x"), host.as_os_str(), &ROOT)
        .unwrap();
    let ch = SetAttr {
        mode: Some(0o777),
        uid: Some(4242),
        size: Some(1),
        fh: Some(o.fh),
        ..Default::default()
    };
    let a = u.setattr(e.id, &ch).unwrap();
    assert_eq!((a.perm, a.uid, a.size, a.nlink), (0o777, 4242, 1, 0));
    u.setxattr(e.id, OsStr::new("user.k"), b"v", 0).unwrap();
    let m = fs::metadata(&host).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.len()), (0o600, 0, 4));
    assert!(xattr(&host, "user.k").is_none());
    u.release(o.fh);
    // The symlink is what the name shows now.
    let s = walk(u, "x").unwrap();
    assert_ne!(s, e.id);
    assert_eq!(u.readlink(s).unwrap(), host.as_os_str().as_encoded_bytes());
}

#[test]
fn lookups_forgets_and_changes_from_many_threads() {
    let mut l = Layers::new();
    let low = l.add();
    for t in 0..8 {
        low.file(&format!("t{t}/lower"), &format!("lower {t}"));
    }
    let f = union_over(l, false);
    let u = Arc::new(f.union);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let u = u.clone();
            std::thread::spawn(move || {
                let dir = walk(&u, &format!("t{t}")).unwrap();
                for i in 0..300 {
                    let name = os(&format!("f{}", i % 7));
                    let data = format!("thread {t} round {i}");
                    match u.create(dir, &name, 0o600, libc::O_WRONLY, &ROOT) {
                        Ok((e, o)) => {
                            u.write(o.fh, 0, data.as_bytes()).unwrap();
                            u.release(o.fh);
                            let again = u.lookup(dir, &name).unwrap();
                            assert_eq!(again.id, e.id, "a new file is its own node");
                            assert_eq!(read_all(&u, again.id), data);
                            u.forget(again.id, 1);
                            if i % 3 == 0 {
                                u.unlink(dir, &name).unwrap();
                            }
                            u.forget(e.id, 1);
                        }
                        Err(e) => assert_eq!(e.errno(), libc::EEXIST),
                    }
                    if i % 5 == 0 {
                        let lower = u.lookup(dir, OsStr::new("lower")).unwrap();
                        assert_eq!(read_all(&u, lower.id), format!("lower {t}"));
                        u.forget(lower.id, 1);
                    }
                    if i % 11 == 0 {
                        let _ = u.rename(dir, &name, dir, OsStr::new("renamed"), 0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every lookup was forgotten: the directories (still looked up once) and the root.
    assert!(u.live_nodes() <= 9, "{} live nodes", u.live_nodes());
}

/// An overlay mark of ours on `p`, in whichever namespace the upper layer uses.
fn mark(p: &Path, suffix: &str) -> Option<String> {
    ["trusted", "user"]
        .iter()
        .find_map(|ns| xattr(p, &format!("{ns}.overlay.{suffix}")))
        .map(|v| String::from_utf8(v).unwrap())
}

/// Makes `p` claim to be the index entry of inode number `ino` (in both namespaces).
fn forge_origin(p: &Path, ino: u64) {
    for ns in ["trusted", "user"] {
        let ok = std::process::Command::new("setfattr")
            .args(["-n", &format!("{ns}.overlay.layerfs.origin"), "-v"])
            .arg(ino.to_string())
            .arg(p)
            .status()
            .expect("setfattr (package attr)")
            .success();
        assert!(ok);
    }
}

fn index_entry(f: &Fixture, ino: u64) -> PathBuf {
    f.upper
        .parent()
        .unwrap()
        .join("work/layerfs-index")
        .join(format!("{ino:016x}"))
}

#[test]
fn hard_links_made_outside_get_a_complete_index_entry_at_lookup() {
    let mut l = Layers::new();
    l.add().file("low", "l");
    let f = union_over(l, false);
    // An upper layer written by another tool: two names, one inode, no index.
    fs::write(f.upper.join("a"), "shared").unwrap();
    fs::hard_link(f.upper.join("a"), f.upper.join("b")).unwrap();
    let ino = fs::metadata(f.upper.join("a")).unwrap().ino();
    let u = &f.union;
    let a = walk(u, "a").unwrap();
    assert_eq!(walk(u, "b").unwrap(), a, "two names, one node");
    let entry = index_entry(&f, ino);
    assert_eq!(fs::metadata(&entry).unwrap().ino(), ino);
    assert_eq!(mark(&entry, "layerfs.origin"), Some(ino.to_string()));
    assert_eq!(mark(&entry, "layerfs.nlink"), Some("2".into()));
    u.unlink(ROOT_ID, OsStr::new("a")).unwrap();
    let b = walk(u, "b").unwrap();
    assert_eq!(read_all(u, b), "shared");
    assert_eq!(u.getattr(b, None).unwrap().nlink, 1);
}

#[test]
fn a_number_taken_in_the_index_leaves_the_file_reached_by_its_name() {
    let mut l = Layers::new();
    l.add();
    let f = union_over(l, false);
    fs::write(f.upper.join("a"), "shared").unwrap();
    fs::hard_link(f.upper.join("a"), f.upper.join("b")).unwrap();
    let ino = fs::metadata(f.upper.join("a")).unwrap().ino();
    // Another inode claims the number (a forged or damaged origin mark).
    let entry = index_entry(&f, ino);
    fs::write(&entry, "forged").unwrap();
    forge_origin(&entry, ino);
    let u = &f.union;
    // The lookup is not failed by it: the file is found and served by its name.
    let a = walk(u, "a").unwrap();
    assert_eq!(read_all(u, a), "shared");
    assert_eq!(walk(u, "b").unwrap(), a);
    assert_eq!(fs::read_to_string(&entry).unwrap(), "forged", "left alone");
    // A new link needs the index name, which is not its to take.
    let e = u.link(a, ROOT_ID, OsStr::new("c")).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(fs::read_to_string(&entry).unwrap(), "forged");
}

#[test]
fn link_replaces_an_index_name_that_is_not_an_index_entry() {
    let mut l = Layers::new();
    l.add();
    let f = union_over(l, false);
    let u = &f.union;
    let (e, o) = u
        .create(ROOT_ID, OsStr::new("up"), 0o644, libc::O_RDWR, &ROOT)
        .unwrap();
    u.write(o.fh, 0, b"data").unwrap();
    u.release(o.fh);
    let ino = fs::metadata(f.upper.join("up")).unwrap().ino();
    // Something at the index name that does not say it is an entry of this number.
    let entry = index_entry(&f, ino);
    fs::write(&entry, "stray").unwrap();
    let linked = u.link(e.id, ROOT_ID, OsStr::new("up2")).unwrap();
    assert_eq!(linked.id, e.id);
    assert_eq!(linked.attr.nlink, 2);
    assert_eq!(fs::metadata(&entry).unwrap().ino(), ino);
    assert_eq!(mark(&entry, "layerfs.origin"), Some(ino.to_string()));
    assert_eq!(read_all(u, walk(u, "up2").unwrap()), "data");
}

/// A frozen stack (`export`, `diff`, `commit` of a container whose mount may be live)
/// reads an upper layer another process writes: a name looked up, then renamed over or
/// removed by that process, is a file that changed meanwhile (ENOENT, and a new lookup
/// finds what is there now), never EIO "the upper layer changed behind the mount"
/// (issue 19, found by tests/store_stress.rs).
#[test]
fn a_frozen_stack_takes_a_name_changed_by_another_process_for_changed() {
    use layerfs::union::{FsError, WorkSpec};
    use layerfs::whiteout::Styles;
    common::require_root("writes layers in the kernel's format: trusted.* xattrs, char 0/0");
    let mut l = Layers::new();
    l.add().file("base", "x");
    let upper = l.root.path().join("upper");
    let work = l.root.path().join("work");
    fs::create_dir_all(&upper).unwrap();
    fs::create_dir_all(&work).unwrap();
    fs::write(upper.join("replaced"), "old").unwrap();
    fs::write(upper.join("removed"), "old").unwrap();
    let specs: Vec<LayerSpec> = l
        .lowerdirs()
        .into_iter()
        .map(|p| LayerSpec::new(p, false))
        .collect();
    let open = |p: &Path| fs::File::open(p).unwrap().into();
    let up = LayerSpec::written_with(open(&upper), upper.clone(), Styles::KERNEL);
    let wk = WorkSpec::opened(open(&work), work.clone());
    let stack = Stack::open_frozen(&specs, &up, &wk, Styles::KERNEL).unwrap();
    let u = Union::new(stack, Options::default()).unwrap();
    let replaced = walk(&u, "replaced").unwrap();
    let removed = walk(&u, "removed").unwrap();
    // The mount's daemon writes a new file and renames it over one name, removes another.
    fs::write(upper.join(".tmp"), "new!").unwrap();
    fs::rename(upper.join(".tmp"), upper.join("replaced")).unwrap();
    fs::remove_file(upper.join("removed")).unwrap();
    for id in [replaced, removed] {
        let opened = u.open(id, libc::O_RDONLY).map(|o| o.fh);
        assert_eq!(opened.err(), Some(FsError::ENOENT), "open");
        assert_eq!(u.listxattr(id).err(), Some(FsError::ENOENT), "listxattr");
        assert_eq!(
            u.getattr(id, None).err().map(|e| e.errno()),
            Some(libc::ENOENT)
        );
    }
    // Looked up again, the name gives the file there now.
    u.forget(replaced, 1);
    let again = walk(&u, "replaced").unwrap();
    assert_eq!(read_all(&u, again), "new!");
    assert_eq!(walk(&u, "removed"), Err(libc::ENOENT));
}
