//! A directory tree written as one tar stream, in a fixed order with fixed metadata: what
//! `layerfs export` writes from a container's merged view, and what a layer directory of
//! the store becomes when its original tar is not recorded.
//!
//! The tree is anything that implements [`Tree`] (the union core, a layer directory), so
//! this module knows tar and nothing of where the files come from. Entries: every
//! directory before its children, children in byte order of their names; names relative
//! to the root without a leading `./` (as `docker export` writes them); the root itself
//! only when asked. Each entry carries type, permission bits (setuid/setgid/sticky too),
//! numeric owner, mtime in whole seconds, device numbers, symlink targets, and xattrs as
//! PAX `SCHILY.xattr.*` records in name order (the [`Tree`] leaves out the union's own). A file with
//! more than one link is written once, then as hard links to its first name. Sockets
//! cannot be in a tar and are left out (as GNU tar and Docker do). Long names and link
//! targets use GNU long-name records, which every reader of image tars understands.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// What the tar needs to know of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky (mode & 0o7777).
    pub perm: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Identity of the inode, for hard links (only compared, never written).
    pub ino: u64,
    pub nlink: u64,
}

/// A tree to write. The writer holds one open directory per level only for the deepest
/// few levels ([`crate::fdtree::window`] of [`Tree::dir_fds`]); it opens the others
/// again, from the root down by name, when it comes back to them. A directory's entries
/// are looked up one at a time, each released once written, so a wide directory does not
/// hold them all either.
pub trait Tree {
    /// An entry, as looked up in its directory.
    type Node;
    /// A directory opened for reading its entries.
    type Dir;

    /// The root directory.
    fn root(&self) -> io::Result<Self::Node>;
    fn stat(&self, node: &Self::Node) -> io::Result<Stat>;
    /// Opens directory `node` (which it takes over).
    fn open_dir(&self, node: Self::Node) -> io::Result<Self::Dir>;
    /// The names of a directory's entries, in any order.
    fn names(&self, dir: &Self::Dir) -> io::Result<Vec<OsString>>;
    /// Entry `name` of `dir`; `None` when it is gone.
    fn child(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Option<Self::Node>>;
    fn read_link(&self, node: &Self::Node) -> io::Result<Vec<u8>>;
    /// The xattrs to write (name, value).
    fn xattrs(&self, node: &Self::Node) -> io::Result<Vec<(OsString, Vec<u8>)>>;
    /// The content of a regular file.
    fn open(&self, node: &Self::Node) -> io::Result<Box<dyn Read + '_>>;
    /// Called once a non-directory node is written.
    fn release(&self, _node: Self::Node) {}
    /// Called once a directory is done with (or let go until the walk comes back).
    fn close_dir(&self, _dir: Self::Dir) {}
    /// How many fds an open directory holds.
    fn dir_fds(&self) -> usize {
        1
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub entries: u64,
    /// Bytes of regular file content.
    pub content: u64,
}

/// Options of a tree tar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Write the root directory as a `./` entry.
    pub root_entry: bool,
}

/// PAX prefix of xattr records.
const PAX_XATTR: &str = "SCHILY.xattr.";

struct Writer<'t, T: Tree, W: Write> {
    tree: &'t T,
    tar: tar::Builder<W>,
    /// First name of each multiply linked inode.
    links: HashMap<u64, Vec<u8>>,
    written: Written,
}

/// A directory the writer is in.
struct Frame<D> {
    /// Length of the path of its entries' prefix (its path and a `/`; the root: 0).
    prefix: usize,
    name: OsString,
    /// Open, or let go (outside the window, or gone).
    dir: Option<D>,
    /// Entries still to write, in byte order of their names.
    names: std::vec::IntoIter<OsString>,
}

/// Writes `tree` as a tar stream into `out` (with the end-of-archive blocks).
pub fn write<T: Tree, W: Write>(tree: &T, out: W, opts: Options) -> io::Result<Written> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut w = Writer {
        tree,
        tar,
        links: HashMap::new(),
        written: Written::default(),
    };
    let root = tree.root()?;
    let st = tree.stat(&root)?;
    if opts.root_entry {
        if let Err(e) = w.entry(b"./", &root, &st) {
            tree.release(root);
            return Err(e);
        }
    }
    let root = tree.open_dir(root)?;
    let names = match sorted_names(tree, &root, b"") {
        Ok(n) => n,
        Err(e) => {
            tree.close_dir(root);
            return Err(e);
        }
    };
    let mut stack = vec![Frame {
        prefix: 0,
        name: OsString::new(),
        dir: Some(root),
        names,
    }];
    let r = w.walk(&mut stack, crate::fdtree::window(tree.dir_fds()));
    for f in stack.into_iter().rev() {
        if let Some(d) = f.dir {
            tree.close_dir(d);
        }
    }
    r?;
    w.tar.into_inner()?.flush()?;
    Ok(w.written)
}

/// The names of `dir` (at `prefix`) in byte order; an error names the directory.
fn sorted_names<T: Tree>(
    tree: &T,
    dir: &T::Dir,
    prefix: &[u8],
) -> io::Result<std::vec::IntoIter<OsString>> {
    let mut names = tree.names(dir).map_err(|e| {
        let shown = match String::from_utf8_lossy(prefix).trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        io::Error::new(e.kind(), format!("{shown}: {e}"))
    })?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter())
}

fn header(st: &Stat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.perm & 0o7777);
    h.set_uid(st.uid);
    h.set_gid(st.gid);
    h.set_mtime(u64::try_from(st.mtime).unwrap_or(0));
    h.set_size(size);
    h
}

impl<T: Tree, W: Write> Writer<'_, T, W> {
    /// Writes the entries below the directories of `stack` (their own entries written),
    /// keeping the deepest `window` of them open (see [`Tree`]).
    fn walk(&mut self, stack: &mut Vec<Frame<T::Dir>>, window: usize) -> io::Result<()> {
        let tree = self.tree;
        let mut path: Vec<u8> = Vec::new();
        while let Some(top) = stack.last_mut() {
            let Some(name) = top.names.next() else {
                if let Some(d) = stack.pop().and_then(|f| f.dir) {
                    tree.close_dir(d);
                }
                path.truncate(stack.last().map_or(0, |f| f.prefix));
                continue;
            };
            reopen(tree, stack, &path, window)?;
            let Some(dir) = stack.last().and_then(|f| f.dir.as_ref()) else {
                continue; // gone meanwhile
            };
            let Some(child) = tree.child(dir, &name)? else {
                continue;
            };
            let len = path.len();
            path.extend_from_slice(name.as_bytes());
            let st = match tree.stat(&child) {
                Ok(st) => st,
                Err(e) => {
                    tree.release(child);
                    return Err(e);
                }
            };
            if st.kind != Kind::Directory {
                let r = self.entry(&path, &child, &st);
                tree.release(child);
                path.truncate(len);
                r?;
                continue;
            }
            path.push(b'/');
            if let Err(e) = self.entry(&path, &child, &st) {
                tree.release(child);
                return Err(e);
            }
            let dir = tree.open_dir(child)?;
            let names = match sorted_names(tree, &dir, &path) {
                Ok(n) => n,
                Err(e) => {
                    tree.close_dir(dir);
                    return Err(e);
                }
            };
            stack.push(Frame {
                prefix: path.len(),
                name,
                dir: Some(dir),
                names,
            });
            // The directories above the window are let go (the root stays open).
            if let Some(end) = stack.len().checked_sub(window)
                && end > 1
            {
                for f in stack[1..end].iter_mut().rev() {
                    let Some(d) = f.dir.take() else { break };
                    tree.close_dir(d);
                }
            }
        }
        Ok(())
    }

    /// Writes one entry; an error names it.
    fn entry(&mut self, path: &[u8], node: &T::Node, st: &Stat) -> io::Result<()> {
        self.entry_inner(path, node, st).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: {e}",
                    String::from_utf8_lossy(path).trim_end_matches('/')
                ),
            )
        })
    }

    fn entry_inner(&mut self, path: &[u8], node: &T::Node, st: &Stat) -> io::Result<()> {
        let p = OsStr::from_bytes(path);
        if st.kind == Kind::Socket {
            log::debug!("leaving out socket {}", p.to_string_lossy());
            return Ok(());
        }
        if st.kind != Kind::Directory && st.nlink > 1 {
            if let Some(first) = self.links.get(&st.ino) {
                let first = first.clone();
                let mut h = header(st, tar::EntryType::Link, 0);
                self.tar.append_link(&mut h, p, OsStr::from_bytes(&first))?;
                self.written.entries += 1;
                return Ok(());
            }
            self.links.insert(st.ino, path.to_vec());
        }
        let mut xattrs = self.tree.xattrs(node)?;
        // In name order, whatever order the filesystem lists them in.
        xattrs.sort();
        if !xattrs.is_empty() {
            let keys: Vec<String> = xattrs
                .iter()
                .map(|(k, _)| format!("{PAX_XATTR}{}", k.to_string_lossy()))
                .collect();
            self.tar.append_pax_extensions(
                keys.iter()
                    .map(String::as_str)
                    .zip(xattrs.iter().map(|(_, v)| v.as_slice())),
            )?;
        }
        match st.kind {
            Kind::Regular => {
                let mut h = header(st, tar::EntryType::Regular, st.size);
                let data = self.tree.open(node)?;
                let mut exact = Exact {
                    inner: data,
                    left: st.size,
                };
                self.tar.append_data(&mut h, p, &mut exact)?;
                if exact.left != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while it was read", p.to_string_lossy()),
                    ));
                }
                self.written.content += st.size;
            }
            Kind::Directory => {
                let mut h = header(st, tar::EntryType::Directory, 0);
                self.tar.append_data(&mut h, p, io::empty())?;
            }
            Kind::Symlink => {
                let target = self.tree.read_link(node)?;
                let mut h = header(st, tar::EntryType::Symlink, 0);
                self.tar
                    .append_link(&mut h, p, OsStr::from_bytes(&target))?;
            }
            Kind::Fifo | Kind::CharDevice | Kind::BlockDevice => {
                let kind = match st.kind {
                    Kind::Fifo => tar::EntryType::Fifo,
                    Kind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                };
                let mut h = header(st, kind, 0);
                if st.kind != Kind::Fifo {
                    h.set_device_major(st.rdev_major)?;
                    h.set_device_minor(st.rdev_minor)?;
                }
                self.tar.append_data(&mut h, p, io::empty())?;
            }
            Kind::Socket => {}
        }
        self.written.entries += 1;
        Ok(())
    }
}

/// Opens the top directory of `stack` again if it was let go: from the deepest open one
/// above it, name by name, those within the deepest `window` staying open. A directory
/// not found again as one (gone meanwhile) leaves it and those below it with nothing to
/// write.
fn reopen<T: Tree>(
    tree: &T,
    stack: &mut [Frame<T::Dir>],
    path: &[u8],
    window: usize,
) -> io::Result<()> {
    let top = stack.len().saturating_sub(1);
    if stack.get(top).is_none_or(|f| f.dir.is_some()) {
        return Ok(());
    }
    let first = stack
        .iter()
        .rposition(|f| f.dir.is_some())
        .map_or(0, |i| i + 1);
    let keep_from = (top + 1).saturating_sub(window).max(1);
    for m in first.max(1)..=top {
        let (above, rest) = stack.split_at_mut(m);
        let (Some(parent), Some(f)) = (above.last_mut(), rest.first_mut()) else {
            break;
        };
        let found = match parent.dir.as_ref() {
            Some(pd) => tree.child(pd, &f.name)?,
            None => None,
        };
        let found = match found {
            Some(n) if tree.stat(&n).is_ok_and(|st| st.kind == Kind::Directory) => Some(n),
            Some(n) => {
                tree.release(n);
                None
            }
            None => None,
        };
        let Some(node) = found else {
            log::debug!(
                "{} is gone: nothing more written below it",
                String::from_utf8_lossy(&path[..f.prefix])
            );
            for g in rest.iter_mut() {
                g.names = Vec::new().into_iter();
            }
            break;
        };
        f.dir = Some(tree.open_dir(node)?);
        if m > 1
            && m - 1 < keep_from
            && let Some(d) = parent.dir.take()
        {
            tree.close_dir(d);
        }
    }
    Ok(())
}

/// Reads exactly the size the header announced: a file that grew is cut, one that
/// shrank fails (a tar entry's size is written before its content).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a file shrank while it was read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Xattrs = Vec<(OsString, Vec<u8>)>;

    /// A tree in memory: (path, stat, content or link target, xattrs).
    struct Mem(Vec<(&'static str, Stat, &'static [u8], Xattrs)>);

    fn st(kind: Kind, size: u64, ino: u64, nlink: u64) -> Stat {
        Stat {
            kind,
            perm: 0o755,
            uid: 1,
            gid: 2,
            size,
            mtime: 1_700_000_000,
            rdev_major: 0,
            rdev_minor: 0,
            ino,
            nlink,
        }
    }

    impl Tree for Mem {
        type Node = usize;
        type Dir = usize;
        fn root(&self) -> io::Result<usize> {
            Ok(0)
        }
        fn stat(&self, n: &usize) -> io::Result<Stat> {
            Ok(self.0[*n].1)
        }
        fn open_dir(&self, n: usize) -> io::Result<usize> {
            Ok(n)
        }
        fn names(&self, dir: &usize) -> io::Result<Vec<OsString>> {
            let prefix = match self.0[*dir].0 {
                "" => String::new(),
                p => format!("{p}/"),
            };
            Ok(self
                .0
                .iter()
                .filter_map(|e| e.0.strip_prefix(&prefix))
                .filter(|r| !r.is_empty() && !r.contains('/'))
                .map(OsString::from)
                .rev()
                .collect())
        }
        fn child(&self, dir: &usize, name: &OsStr) -> io::Result<Option<usize>> {
            let path = match self.0[*dir].0 {
                "" => name.to_string_lossy().into_owned(),
                p => format!("{p}/{}", name.to_string_lossy()),
            };
            Ok(self.0.iter().position(|e| e.0 == path))
        }
        fn read_link(&self, n: &usize) -> io::Result<Vec<u8>> {
            Ok(self.0[*n].2.to_vec())
        }
        fn xattrs(&self, n: &usize) -> io::Result<Vec<(OsString, Vec<u8>)>> {
            Ok(self.0[*n].3.clone())
        }
        fn open(&self, n: &usize) -> io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(self.0[*n].2))
        }
        fn dir_fds(&self) -> usize {
            // A window of 2: deep paths are opened again from the root.
            usize::MAX
        }
    }

    #[test]
    fn entries_in_order_with_links_and_xattrs() {
        let x = vec![(OsString::from("user.k"), b"v".to_vec())];
        let tree = Mem(vec![
            ("", st(Kind::Directory, 0, 1, 2), b"", vec![]),
            ("b", st(Kind::Directory, 0, 2, 2), b"", vec![]),
            ("b/f", st(Kind::Regular, 5, 3, 2), b"hello", x.clone()),
            ("a", st(Kind::Regular, 5, 3, 2), b"hello", x),
            ("l", st(Kind::Symlink, 0, 4, 1), b"b/f", vec![]),
            ("s", st(Kind::Socket, 0, 5, 1), b"", vec![]),
        ]);
        let mut out = Vec::new();
        let w = write(&tree, &mut out, Options::default()).unwrap();
        assert_eq!(w.entries, 4);
        let mut a = tar::Archive::new(&out[..]);
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
                ("a".to_string(), tar::EntryType::Regular, 1),
                ("b/".to_string(), tar::EntryType::Directory, 0),
                ("b/f".to_string(), tar::EntryType::Link, 0),
                ("l".to_string(), tar::EntryType::Symlink, 0),
            ]
        );
    }

    #[test]
    fn deep_trees_come_out_whole_and_in_order_with_few_open_directories() {
        // Each level: a file before the subdirectory and one after it, so that every
        // level is come back to (and opened again: the window is 2).
        let depth = 12;
        let mut entries = vec![("".to_string(), st(Kind::Directory, 0, 1, 2))];
        let mut want = Vec::new();
        let mut tail = Vec::new();
        let mut dir = String::new();
        for i in 0..depth {
            let p = |n: &str| format!("{dir}{n}");
            entries.push((p("a"), st(Kind::Regular, 0, 10 + i, 1)));
            entries.push((p("d"), st(Kind::Directory, 0, 100 + i, 2)));
            entries.push((p("z"), st(Kind::Regular, 0, 1000 + i, 1)));
            want.push(p("a"));
            want.push(p("d/"));
            tail.push(p("z"));
            dir = p("d/");
        }
        tail.reverse();
        want.extend(tail);
        let leaked: Vec<(&'static str, Stat, &'static [u8], Xattrs)> = entries
            .into_iter()
            .map(|(p, s)| {
                let p: &'static str =
                    Box::leak(p.trim_end_matches('/').to_string().into_boxed_str());
                (p, s, &b""[..], vec![])
            })
            .collect();
        let mut out = Vec::new();
        write(&Mem(leaked), &mut out, Options::default()).unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let got: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect();
        assert_eq!(got, want);
    }
}
