use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use sha2::Digest as _;

use super::*;

type Xattrs = Vec<(OsString, Vec<u8>)>;

/// Entries in memory: (path, leaf, content or link target, xattrs); a tree when read
/// through [`Tree`] (the root is the entry with the empty path).
struct Mem(Vec<(Vec<u8>, Leaf, Vec<u8>, Xattrs)>);

impl Source for Mem {
    type Node = usize;
    fn xattrs(&self, n: &usize) -> io::Result<Xattrs> {
        Ok(self.0[*n].3.clone())
    }
    fn read_link(&self, n: &usize) -> io::Result<Vec<u8>> {
        Ok(self.0[*n].2.clone())
    }
    /// Its size as its leaf says (as if by fstat), whatever its content.
    fn open(&self, n: &usize) -> io::Result<Content<'_>> {
        Ok(Content {
            data: Box::new(&self.0[*n].2[..]),
            size: self.0[*n].1.size,
        })
    }
}

impl Mem {
    fn prefix(&self, dir: usize) -> Vec<u8> {
        let mut p = self.0[dir].0.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p
    }
}

impl Tree for Mem {
    type Dir = usize;
    fn root(&self) -> io::Result<usize> {
        self.0
            .iter()
            .position(|e| e.0.is_empty())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn stat(&self, n: &usize) -> io::Result<Leaf> {
        Ok(self.0[*n].1)
    }
    fn open_dir(&self, n: usize) -> io::Result<usize> {
        Ok(n)
    }
    fn names(&self, dir: &usize) -> io::Result<Vec<OsString>> {
        let prefix = self.prefix(*dir);
        Ok(self
            .0
            .iter()
            .filter_map(|e| e.0.strip_prefix(&prefix[..]))
            .filter(|r| !r.is_empty() && !r.contains(&b'/'))
            .map(|r| OsStr::from_bytes(r).to_os_string())
            .rev()
            .collect())
    }
    fn child(&self, dir: &usize, name: &OsStr) -> io::Result<Option<usize>> {
        let mut path = self.prefix(*dir);
        path.extend_from_slice(name.as_bytes());
        Ok(self.0.iter().position(|e| e.0 == path))
    }
    fn dir_fds(&self) -> usize {
        // A window of 2: deep paths are opened again from the root.
        usize::MAX
    }
}

fn leaf(kind: FileKind, perm: u32, uid: u64, mtime: i64, ino: u64, nlink: u64) -> Leaf {
    Leaf {
        kind,
        perm,
        uid,
        gid: uid / 2,
        size: 0,
        mtime,
        rdev: (0, 0),
        ino,
        nlink,
    }
}

fn x(pairs: &[(&[u8], &[u8])]) -> Xattrs {
    pairs
        .iter()
        .map(|(k, v)| (OsStr::from_bytes(k).to_os_string(), v.to_vec()))
        .collect()
}

fn n(c: char, k: usize) -> Vec<u8> {
    c.to_string().repeat(k).into_bytes()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// `commit`'s entries of every kind and limit, written as [`Options::layer`]: the bytes
/// `commit/tar.rs` (the writer before this one) wrote for them, by their sha256.
#[test]
fn layer_bytes_are_what_commit_wrote() {
    let mut m = Mem(Vec::new());
    let mut add = |path: &[u8], l: Leaf, data: &[u8], xs: Xattrs| {
        m.0.push((path.to_vec(), l, data.to_vec(), xs));
    };
    let plain = |kind| leaf(kind, 0o644, 0, 1_700_000_000, 0, 1);
    let own = |kind, perm, uid, gid, mtime| Leaf {
        gid,
        ..leaf(kind, perm, uid, mtime, 0, 1)
    };
    add(
        b"./",
        own(FileKind::Directory, 0o755, 0, 0, 1_600_000_000),
        b"",
        vec![],
    );
    let d = own(FileKind::Directory, 0o4755, 5_000_000, 7, -5);
    add(b"d", d, b"", x(&[(b"user.a", b"1"), (b"user.b", b"")]));
    for len in [99usize, 100, 101, 150, 300] {
        let name = [&b"d/"[..], &n('n', len - 2)].concat();
        let file = Leaf {
            size: 5,
            ino: len as u64,
            nlink: 2,
            ..plain(FileKind::Regular)
        };
        add(&name, file, b"hello", vec![]);
        add(
            format!("l{len}").as_bytes(),
            plain(FileKind::Symlink),
            &n('t', len),
            vec![],
        );
        add(format!("h{len}").as_bytes(), file, b"hello", vec![]);
        let dir = [&n('D', len - 1)[..], b"/"].concat();
        add(&dir, plain(FileKind::Directory), b"", vec![]);
    }
    for t in [
        &b"./x"[..],
        b"a/./b",
        b"a//b",
        b"/abs",
        b"x/",
        b".",
        b"..",
        b"a/.",
    ] {
        add(b"sym", plain(FileKind::Symlink), t, vec![]);
    }
    add(b"\xff\xfe", plain(FileKind::Fifo), b"", vec![]);
    let bad = [&b"\xff"[..], &n('u', 120)].concat();
    add(&bad, plain(FileKind::Fifo), b"", vec![]);
    for (uid, gid) in [
        (2_097_151u64, 2_097_152u64),
        (4_294_967_295, 0),
        (1 << 40, 1),
    ] {
        add(b"own", own(FileKind::Fifo, 0o600, uid, gid, 0), b"", vec![]);
    }
    for mtime in [
        -1i64,
        0,
        0o77777777777,
        0o77777777777 + 1,
        i64::MIN,
        i64::MAX,
    ] {
        add(
            b"time",
            own(FileKind::Fifo, 0o600, 0, 0, mtime),
            b"",
            vec![],
        );
    }
    for (name, kind, rdev) in [
        (&b"c"[..], FileKind::CharDevice, (1, 3)),
        (b"b", FileKind::BlockDevice, (8, 1)),
        (b"big", FileKind::CharDevice, (4095, 1_048_575)),
        (b"huge", FileKind::BlockDevice, (1 << 30, 1 << 31)),
    ] {
        add(
            name,
            Leaf {
                rdev,
                ..plain(kind)
            },
            b"",
            vec![],
        );
    }
    add(b"mode", own(FileKind::Fifo, 0o7777, 0, 0, 0), b"", vec![]);
    for len in [80usize, 86, 87, 88, 89, 90, 95, 96, 97, 985, 986, 990] {
        let xs = x(&[
            (b"user.v", &n('v', len)),
            (b"user.\xff", b"bad"),
            (b"security.capability", b"\x00\x01"),
        ]);
        add(b"xa", own(FileKind::Fifo, 0o644, 0, 0, 0), b"", xs);
    }
    let mut w = Writer::new(Vec::new(), Options::layer(None));
    for (i, (path, l, ..)) in m.0.iter().enumerate() {
        assert_eq!(w.node(&m, path, &i, l).unwrap(), Put::Written);
    }
    w.marker(b".wh.gone").unwrap();
    w.marker(b"d/.wh..wh..opq").unwrap();
    let (out, written) = w.finish().unwrap();
    assert_eq!(written.entries, m.0.len() as u64 + 2);
    assert_eq!(out.len(), 71168);
    assert_eq!(
        sha256(&out),
        "167d2d8a5d0a7da1aa06190ad60ea5710629443a7695730be08082578b2da9ae"
    );
    // It reads back, and the same entries give the same bytes.
    let mut a = ::tar::Archive::new(&out[..]);
    let mut names = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
        if let Some(mut p) = e.pax_extensions().unwrap() {
            assert!(p.all(|r| r.is_ok()));
        }
    }
    assert_eq!(names[1], "d/");
    assert_eq!(names[2], format!("d/{}", "n".repeat(97)));
    assert_eq!(names[names.len() - 1], "d/.wh..wh..opq");
}

/// A tree of every kind and limit, written as [`Options::TREE`]: the bytes
/// `image/tree_tar.rs` (on the `tar` crate, the writer before this one) wrote for it, by
/// their sha256.
#[test]
fn tree_bytes_are_what_the_tar_crate_wrote() {
    let mut e = vec![(
        vec![],
        leaf(FileKind::Directory, 0o755, 0, 1, 1, 2),
        vec![],
        vec![],
    )];
    let mut add = |path: &[u8], l: Leaf, data: &[u8], xs: Xattrs| {
        e.push((path.to_vec(), l, data.to_vec(), xs));
    };
    let dir = leaf(FileKind::Directory, 0o4755, 5_000_000, -5, 2, 3);
    add(b"d", dir, b"", x(&[(b"user.b", b""), (b"user.a", b"1")]));
    let mut ino = 100;
    for len in [97usize, 98, 99, 100, 101, 150, 300] {
        ino += 10;
        let file = Leaf {
            size: 5,
            ..leaf(FileKind::Regular, 0o644, 0, 1_700_000_000, ino, 2)
        };
        add(
            &[&b"d/"[..], &n('n', len - 2)].concat(),
            file,
            b"hello",
            vec![],
        );
        add(
            &[&b"h"[..], &n('h', len - 1)].concat(),
            file,
            b"hello",
            vec![],
        );
        let sym = leaf(FileKind::Symlink, 0o777, 0, 1_700_000_000, ino + 1, 1);
        add(format!("l{len}").as_bytes(), sym, &n('t', len), vec![]);
        let dd = [&b"D"[..], &n('D', len - 1)].concat();
        let dir = leaf(FileKind::Directory, 0o755, 0, 1_700_000_000, ino + 2, 2);
        add(&dd, dir, b"", vec![]);
        let fifo = leaf(FileKind::Fifo, 0o644, 0, 1_700_000_000, ino + 3, 1);
        add(&[&dd[..], b"/f"].concat(), fifo, b"", vec![]);
    }
    let targets = [
        &b"./x"[..],
        b"a/./b",
        b"a//b",
        b"/abs/./p",
        b"x/",
        b".",
        b"..",
        b"a/.",
        b"/.",
        b"./",
    ];
    for (i, t) in targets.iter().enumerate() {
        let sym = leaf(FileKind::Symlink, 0o777, 0, 0, 200 + i as u64, 1);
        add(format!("s{i}").as_bytes(), sym, t, vec![]);
    }
    let sym = |ino| leaf(FileKind::Symlink, 0o777, 0, 0, ino, 1);
    add(
        b"s-long-dot",
        sym(220),
        &[&b"./"[..], &n('t', 99)].concat(),
        vec![],
    );
    add(
        b"s-long-mid",
        sym(221),
        &[&b"a/./"[..], &n('t', 97)].concat(),
        vec![],
    );
    add(b"s-manyk", sym(222), &b"k/".repeat(60), vec![]);
    let linked = |kind, ino| leaf(kind, 0o777, 0, 0, ino, 2);
    add(b"sym-a", linked(FileKind::Symlink, 300), b"target", vec![]);
    add(b"sym-b", linked(FileKind::Symlink, 300), b"target", vec![]);
    let xf = x(&[(b"user.f", b"1")]);
    let fifo = leaf(FileKind::Fifo, 0o600, 0, 0, 301, 2);
    add(b"fifo-a", fifo, b"", xf.clone());
    add(b"fifo-b", fifo, b"", xf);
    let c = Leaf {
        rdev: (1, 3),
        ..leaf(FileKind::CharDevice, 0o600, 0, 0, 302, 2)
    };
    add(b"chr-a", c, b"", vec![]);
    add(b"chr-b", c, b"", vec![]);
    let b = Leaf {
        rdev: (4095, 1_048_575),
        ..leaf(FileKind::BlockDevice, 0o600, 0, 0, 303, 1)
    };
    add(b"blk", b, b"", vec![]);
    let huge = Leaf {
        rdev: (1 << 30, u32::MAX),
        ..b
    };
    add(b"blk-huge", huge, b"", vec![]);
    add(
        b"sock",
        leaf(FileKind::Socket, 0o600, 0, 0, 304, 1),
        b"",
        vec![],
    );
    let one = Leaf {
        size: 1,
        ..leaf(FileKind::Regular, 0o600, 0, 0, 305, 1)
    };
    add(b"\xff\xfe", one, b"x", vec![]);
    let file = |ino| leaf(FileKind::Regular, 0o600, 0, 0, ino, 1);
    let dir = |ino| leaf(FileKind::Directory, 0o755, 0, 0, ino, 2);
    add(b"bad", dir(306), b"", vec![]);
    let p = [&b"bad/"[..], &n('v', 90), b"\xe2\x82tail"].concat();
    add(&p, file(307), b"", vec![]);
    let p = [&b"bad/"[..], &n('w', 95), b"/.hidden-after-cut"].concat();
    add(&p[..99], dir(308), b"", vec![]);
    add(&p, file(309), b"", vec![]);
    let p = [&b"bad/"[..], &n('y', 94)].concat();
    add(&p, dir(310), b"", vec![]);
    add(
        &[&p[..], b"/..dots-after-cut"].concat(),
        file(311),
        b"",
        vec![],
    );
    let owners = [
        (2_097_151u64, -1i64),
        (2_097_152, 0),
        (4_294_967_295, 0o77777777777),
        (1 << 40, 0o77777777777 + 1),
        (7, i64::MIN),
        (8, i64::MAX),
    ];
    for (i, (uid, mtime)) in owners.iter().enumerate() {
        let l = leaf(FileKind::Regular, 0o7777, *uid, *mtime, 400 + i as u64, 1);
        add(format!("o{i}").as_bytes(), l, b"", vec![]);
    }
    for len in [80usize, 86, 87, 88, 89, 90, 95, 96, 97, 985, 986, 990] {
        let xs = x(&[
            (b"user.v", &n('v', len)),
            (b"user.\xff", b"bad"),
            (b"security.capability", b"\x00\x01"),
            (b"trusted.a", b"z"),
        ]);
        let l = leaf(FileKind::Regular, 0o644, 0, 0, 500 + len as u64, 1);
        add(format!("x{len}").as_bytes(), l, b"", xs);
    }
    let mut out = Vec::new();
    let w = write_tree(&Mem(e), &mut out, Options::TREE).unwrap();
    assert_eq!((w.entries, w.content, w.skipped), (82, 36, 1));
    assert_eq!(out.len(), 90112);
    assert_eq!(
        sha256(&out),
        "2dbc83ce83c41a21dc612cc29c3c6979f5466f18a4e03c60fec6ed87f35488e8"
    );
}

#[test]
fn trees_come_out_in_order_with_links_and_xattrs() {
    let xs = x(&[(b"user.k", b"v")]);
    let file = Leaf {
        size: 5,
        ..leaf(FileKind::Regular, 0o755, 1, 1_700_000_000, 3, 2)
    };
    let tree = Mem(vec![
        (
            vec![],
            leaf(FileKind::Directory, 0o755, 1, 0, 1, 2),
            vec![],
            vec![],
        ),
        (
            b"b".to_vec(),
            leaf(FileKind::Directory, 0o755, 1, 0, 2, 2),
            vec![],
            vec![],
        ),
        (b"b/f".to_vec(), file, b"hello".to_vec(), xs.clone()),
        (b"a".to_vec(), file, b"hello".to_vec(), xs),
        (
            b"l".to_vec(),
            leaf(FileKind::Symlink, 0o777, 1, 0, 4, 1),
            b"b/f".to_vec(),
            vec![],
        ),
        (
            b"s".to_vec(),
            leaf(FileKind::Socket, 0o755, 1, 0, 5, 1),
            vec![],
            vec![],
        ),
    ]);
    let mut out = Vec::new();
    let w = write_tree(&tree, &mut out, Options::TREE).unwrap();
    assert_eq!((w.entries, w.content, w.skipped), (4, 5, 1));
    let mut a = ::tar::Archive::new(&out[..]);
    let mut seen = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let kind = e.header().entry_type();
        let xattrs = match e.pax_extensions().unwrap() {
            Some(x) => x
                .filter(|x| x.as_ref().unwrap().key().unwrap() == "SCHILY.xattr.user.k")
                .count(),
            None => 0,
        };
        seen.push((name, kind, xattrs));
    }
    assert_eq!(
        seen,
        [
            ("a".to_string(), ::tar::EntryType::Regular, 1),
            ("b/".to_string(), ::tar::EntryType::Directory, 0),
            ("b/f".to_string(), ::tar::EntryType::Link, 0),
            ("l".to_string(), ::tar::EntryType::Symlink, 0),
        ]
    );
}

/// Which names become links, and whether they carry xattrs, are the options' only.
#[test]
fn links_follow_the_options() {
    let xs = x(&[(b"user.k", b"v")]);
    let m = Mem(vec![
        (
            b"p1".to_vec(),
            leaf(FileKind::Fifo, 0o644, 0, 0, 7, 2),
            vec![],
            xs.clone(),
        ),
        (
            b"p2".to_vec(),
            leaf(FileKind::Fifo, 0o644, 0, 0, 7, 2),
            vec![],
            xs.clone(),
        ),
        (
            b"f1".to_vec(),
            leaf(FileKind::Regular, 0o644, 0, 0, 8, 2),
            vec![],
            xs.clone(),
        ),
        (
            b"f2".to_vec(),
            leaf(FileKind::Regular, 0o644, 0, 0, 8, 2),
            vec![],
            xs,
        ),
    ]);
    for (opts, want) in [
        (Options::TREE, [("p2", true, false), ("f2", true, false)]),
        (
            Options::layer(None),
            [("p2", false, true), ("f2", true, true)],
        ),
    ] {
        let mut w = Writer::new(Vec::new(), opts);
        for (i, (path, l, ..)) in m.0.iter().enumerate() {
            assert_eq!(w.node(&m, path, &i, l).unwrap(), Put::Written);
        }
        let (out, _) = w.finish().unwrap();
        let mut a = ::tar::Archive::new(&out[..]);
        let mut got = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let link = e.header().entry_type() == ::tar::EntryType::Link;
            let xattrs = e.pax_extensions().unwrap().is_some();
            if name.ends_with('2') {
                got.push((name, link, xattrs));
            }
        }
        let want: Vec<_> = want
            .iter()
            .map(|(n, l, x)| (n.to_string(), *l, *x))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn clamped_times_and_short_files() {
    // Opened at 10 bytes, 3 read: it shrank while it was read.
    let m = Mem(vec![(
        b"f".to_vec(),
        Leaf {
            size: 10,
            ..leaf(FileKind::Regular, 0o644, 0, 2_000_000_000, 1, 1)
        },
        b"abc".to_vec(),
        vec![],
    )]);
    // In a layer that is an error.
    let mut w = Writer::new(Vec::new(), Options::layer(Some(1_000)));
    let err = w.node(&m, b"f", &0, &m.0[0].1).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    // In a tree it is padded with zeros to the size announced.
    let mut w = Writer::new(Vec::new(), Options::TREE);
    assert_eq!(w.node(&m, b"f", &0, &m.0[0].1).unwrap(), Put::Written);
    let (out, _) = w.finish().unwrap();
    let mut a = ::tar::Archive::new(&out[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut data = Vec::new();
    e.read_to_end(&mut data).unwrap();
    assert_eq!(data, b"abc\0\0\0\0\0\0\0");
    // The size comes from the open file, not from the leaf the lookup saw.
    let m = Mem(vec![(
        b"f".to_vec(),
        Leaf {
            size: 3,
            ..m.0[0].1
        },
        b"abc".to_vec(),
        vec![],
    )]);
    let mut w = Writer::new(Vec::new(), Options::layer(Some(1_000)));
    let seen = Leaf {
        size: 7,
        ..m.0[0].1
    };
    assert_eq!(w.node(&m, b"f", &0, &seen).unwrap(), Put::Written);
    let (out, written) = w.finish().unwrap();
    assert_eq!(written.content, 3);
    let mut a = ::tar::Archive::new(&out[..]);
    let e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().mtime().unwrap(), 1_000);
    assert_eq!(e.header().size().unwrap(), 3);
}

/// A tree whose nodes in `gone` are not found when opened, as many times as the count
/// says (a file replaced by a rename between its lookup and its reading).
struct Flaky {
    mem: Mem,
    gone: std::cell::RefCell<std::collections::HashMap<usize, usize>>,
}

impl Source for Flaky {
    type Node = usize;
    fn xattrs(&self, n: &usize) -> io::Result<Xattrs> {
        self.mem.xattrs(n)
    }
    fn read_link(&self, n: &usize) -> io::Result<Vec<u8>> {
        self.mem.read_link(n)
    }
    fn open(&self, n: &usize) -> io::Result<Content<'_>> {
        if let Some(left) = self.gone.borrow_mut().get_mut(n)
            && *left > 0
        {
            *left -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.mem.open(n)
    }
}

impl Tree for Flaky {
    type Dir = usize;
    fn root(&self) -> io::Result<usize> {
        self.mem.root()
    }
    fn stat(&self, n: &usize) -> io::Result<Leaf> {
        self.mem.stat(n)
    }
    fn open_dir(&self, n: usize) -> io::Result<usize> {
        Ok(n)
    }
    fn names(&self, dir: &usize) -> io::Result<Vec<OsString>> {
        self.mem.names(dir)
    }
    fn child(&self, dir: &usize, name: &OsStr) -> io::Result<Option<usize>> {
        self.mem.child(dir, name)
    }
}

#[test]
fn entries_gone_while_read_are_looked_up_again_or_left_out() {
    let file = |ino, nlink| Leaf {
        size: 2,
        ..leaf(FileKind::Regular, 0o644, 0, 0, ino, nlink)
    };
    let m = Mem(vec![
        (
            vec![],
            leaf(FileKind::Directory, 0o755, 0, 0, 1, 2),
            vec![],
            vec![],
        ),
        (b"a".to_vec(), file(2, 2), b"aa".to_vec(), vec![]),
        (b"b".to_vec(), file(2, 2), b"aa".to_vec(), vec![]),
        (b"c".to_vec(), file(3, 1), b"cc".to_vec(), vec![]),
    ]);
    let names = |gone: &[(usize, usize)]| {
        let t = Flaky {
            mem: Mem(m.0.clone()),
            gone: std::cell::RefCell::new(gone.iter().copied().collect()),
        };
        let mut out = Vec::new();
        write_tree(&t, &mut out, Options::TREE).unwrap();
        let mut a = ::tar::Archive::new(&out[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name_bytes().map(|l| l.into_owned());
                (String::from_utf8_lossy(&e.path_bytes()).into_owned(), link)
            })
            .collect::<Vec<_>>()
    };
    let s = |n: &str| n.to_string();
    // Gone once: found again at the next lookup.
    assert_eq!(
        names(&[(3, 1)]),
        vec![
            (s("a"), None),
            (s("b"), Some(b"a".to_vec())),
            (s("c"), None)
        ]
    );
    // Gone for good: left out, and not the first name of its links either.
    assert_eq!(
        names(&[(1, tree::LOOKUPS)]),
        vec![(s("b"), None), (s("c"), None)]
    );
}

#[test]
fn deep_trees_come_out_whole_and_in_order_with_few_open_directories() {
    // Each level: a file before the subdirectory and one after it, so that every level
    // is come back to (and opened again: the window is 2).
    let depth = 12;
    let mut entries = vec![(vec![], leaf(FileKind::Directory, 0o755, 0, 0, 1, 2))];
    let mut want = Vec::new();
    let mut tail = Vec::new();
    let mut dir = String::new();
    for i in 0..depth {
        let p = |n: &str| format!("{dir}{n}");
        entries.push((
            p("a").into_bytes(),
            leaf(FileKind::Regular, 0o644, 0, 0, 10 + i, 1),
        ));
        entries.push((
            p("d").into_bytes(),
            leaf(FileKind::Directory, 0o755, 0, 0, 100 + i, 2),
        ));
        entries.push((
            p("z").into_bytes(),
            leaf(FileKind::Regular, 0o644, 0, 0, 1000 + i, 1),
        ));
        want.push(p("a"));
        want.push(p("d/"));
        tail.push(p("z"));
        dir = p("d/");
    }
    tail.reverse();
    want.extend(tail);
    let m = Mem(entries
        .into_iter()
        .map(|(p, l)| (p, l, Vec::new(), Vec::new()))
        .collect());
    let mut out = Vec::new();
    write_tree(&m, &mut out, Options::TREE).unwrap();
    let mut a = ::tar::Archive::new(&out[..]);
    let got: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect();
    assert_eq!(got, want);
}
