//! The walk behind [`Views::walk`]: depth first, iterative, with a bounded number of fds
//! whatever the depth.
//!
//! Each directory the walk is in is a [`Frame`]: its nodes in both views (lookups it
//! holds), the fd of its upper directory when its children come from there, and the
//! names still to visit. A child is looked up only when its turn comes and given back
//! (forgotten, by dropping its [`Looked`] guards) right after its visit or its subtree, so a directory's children never
//! hold fds all at once. Only the deepest few frames ([`crate::fdtree::window`]) keep
//! their nodes and fds; the others let them go (the views name a node's parent by id,
//! `union::Options::hold_parents`) and are looked up again from the root by name when
//! the walk comes back to them with children left to visit. A directory gone meanwhile
//! (a live container) has nothing left to visit.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use super::links::Extra;
use super::{Found, Raw, Views, Visit, fs_err, listing, raw_names, show};
use crate::container::read::Looked;
use crate::error::{Error, Result};
use crate::sys::At;
use crate::union::{self, FileKind, FsError, NodeId, Union};
use crate::whiteout::{self, NameKind};

/// The visitor of a walk.
pub(super) type Visitor<'v> = dyn FnMut(&Views, Visit<'_>) -> Result<()> + 'v;

/// The fd of a frame's upper directory, when its children are read from there.
enum UpperFd {
    None,
    Open(OwnedFd),
    /// Let go (outside the window): opened again from the parent's when needed.
    LetGo,
}

/// One directory the walk is in.
struct Frame<'e> {
    /// Length of the walk's path up to this directory (its name included).
    path_len: usize,
    /// Its name in its parent (the root: empty).
    name: OsString,
    ctr: Found,
    /// The image's directory at this path, if it has one.
    img: Option<Found>,
    /// The lookups of `ctr` and `img` (none for the root, which is never forgotten),
    /// given back when dropped.
    held: Option<Child<'e>>,
    /// Its nodes and upper fd are held (else let go, or gone).
    live: bool,
    upper: UpperFd,
    /// Names the hard-link pass found below it.
    extra: Option<&'e Extra>,
    /// Its children are written in full (it or a directory above it is replaced).
    full: bool,
    /// Children still to visit, by name; those the container lacks go to `lost`.
    names: std::vec::IntoIter<(OsString, Raw)>,
    lost: Vec<OsString>,
    /// Visiting `lost` (what the image has and the container lost).
    losing: bool,
}

impl Frame<'_> {
    /// The next child to visit: (name, how the upper layer holds it, is it lost).
    fn next(&mut self) -> Option<(OsString, Raw, bool)> {
        if !self.losing {
            if let Some((n, r)) = self.names.next() {
                return Some((n, r, false));
            }
            self.losing = true;
            self.lost.reverse();
        }
        self.lost.pop().map(|n| (n, Raw::Entry, true))
    }

    /// Nothing left to visit (its directory is gone).
    fn clear(&mut self) {
        self.names = Vec::new().into_iter();
        self.lost.clear();
        self.losing = true;
    }
}

/// A child as both views show it: its lookups, given back when dropped.
struct Child<'v> {
    ctr: Option<Looked<'v>>,
    img: Option<Looked<'v>>,
}

impl Child<'_> {
    fn ctr(&self) -> Option<Found> {
        self.ctr.as_ref().map(found)
    }

    fn img(&self) -> Option<Found> {
        self.img.as_ref().map(found)
    }
}

fn found(l: &Looked<'_>) -> Found {
    Found {
        id: l.id,
        attr: l.attr,
    }
}

pub(super) struct Walk<'a> {
    v: &'a Views,
    deleted_in_full: bool,
    /// How many frames below the root keep their nodes and fds.
    window: usize,
}

/// Looks `name` up in directory `dir` of `u`; `None` when it is not there.
fn lookup<'u>(
    u: &'u Union,
    dir: NodeId,
    name: &OsString,
    path: &[u8],
) -> Result<Option<Looked<'u>>> {
    let at = || {
        let mut s = show(path);
        if !path.is_empty() {
            s.push('/');
        }
        s.push_str(&name.to_string_lossy());
        s
    };
    match Looked::lookup(u, dir, name) {
        Ok(l) => Ok(l),
        Err(e) if e == FsError::ENOTDIR => Ok(None),
        Err(e) => Err(fs_err(at(), e)),
    }
}

impl<'a> Walk<'a> {
    pub(super) fn new(v: &'a Views, deleted_in_full: bool) -> Walk<'a> {
        // A level holds the container's directory (upper and lower fds), the image's
        // (lower fds) and the upper directory opened for reading.
        let per_level = 2 + 2 * v.lowers.len();
        Walk {
            v,
            deleted_in_full,
            window: crate::fdtree::window(per_level),
        }
    }

    /// Walks from the root, whose nodes are `ctr`/`img` and upper directory `upper`
    /// (already visited, `replaced` and marked for xattr whiteouts as given).
    pub(super) fn run(
        &self,
        root: (Found, Found, OwnedFd),
        replaced: bool,
        xwhiteouts: bool,
        extra: &'a Extra,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let (ctr, img, upper) = root;
        let mut path = Vec::new();
        let upper = if replaced {
            UpperFd::None
        } else {
            UpperFd::Open(upper)
        };
        let mut frame = Frame {
            path_len: 0,
            name: OsString::new(),
            ctr,
            img: Some(img),
            held: None,
            live: true,
            upper,
            extra: Some(extra),
            full: replaced,
            names: Vec::new().into_iter(),
            lost: Vec::new(),
            losing: false,
        };
        frame.names = self.names(&frame, &path, xwhiteouts)?;
        let mut stack = vec![frame];
        let r = self.steps(&mut stack, &mut path, visit);
        for f in stack.iter_mut().rev() {
            self.let_go(f);
        }
        r
    }

    fn steps(
        &self,
        stack: &mut Vec<Frame<'a>>,
        path: &mut Vec<u8>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        while let Some(top) = stack.last_mut() {
            let Some((name, raw, lost)) = top.next() else {
                let Some(mut done) = stack.pop() else { break };
                self.let_go(&mut done);
                visit(self.v, Visit::Leave { path })?;
                path.truncate(stack.last().map_or(0, |p| p.path_len));
                continue;
            };
            self.reacquire(stack, path)?;
            let Some(top) = stack.last_mut() else { break };
            if !top.live {
                continue; // gone meanwhile: nothing left to visit
            }
            let Some(child) = self.look(top, &name, raw, lost, path)? else {
                continue;
            };
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let r = self.child(stack, path, name, raw, child, visit);
            if r.is_err() || stack.last().is_some_and(|f| f.path_len != path.len()) {
                // A leaf (or a failure): the path is its parent's again.
                path.truncate(len);
            }
            r?;
        }
        Ok(())
    }

    /// Looks child `name` of `top` up: in the container's view first (what it lacks is
    /// kept for after what it has, `lost`), then in the image's. `None`: nothing to visit
    /// now.
    fn look(
        &self,
        top: &mut Frame<'_>,
        name: &OsString,
        raw: Raw,
        lost: bool,
        path: &[u8],
    ) -> Result<Option<Child<'a>>> {
        let v = self.v;
        let img_dir = top.img.filter(|i| i.attr.kind.is_dir());
        let ctr = if lost {
            None
        } else {
            let mut c = lookup(&v.ctr, top.ctr.id, name, path)?;
            if raw == Raw::XattrWhiteout {
                // The kernel reads it as a whiteout; so does a layer made of it.
                c = None;
            }
            if c.is_none() {
                if img_dir.is_some() {
                    top.lost.push(name.clone());
                }
                return Ok(None);
            }
            c
        };
        let img = match img_dir {
            Some(d) => lookup(&v.img, d.id, name, path)?,
            None => None,
        };
        if ctr.is_none() && img.is_none() {
            return Ok(None);
        }
        Ok(Some(Child { ctr, img }))
    }

    /// Visits one child at `path`: a leaf, or a directory that becomes the new top frame.
    fn child(
        &self,
        stack: &mut Vec<Frame<'a>>,
        path: &[u8],
        name: OsString,
        raw: Raw,
        mut c: Child<'a>,
        visit: &mut Visitor<'_>,
    ) -> Result<()> {
        let v = self.v;
        let Some(top) = stack.last() else {
            return Ok(());
        };
        let in_full = top.full;
        let Some(ctr) = c.ctr().filter(|f| f.attr.kind == FileKind::Directory) else {
            return visit(
                v,
                Visit::Leaf {
                    path,
                    ctr: c.ctr(),
                    img: c.img(),
                    in_full,
                },
            );
        };
        let extra = top.extra.and_then(|e| e.children.get(&name));
        let (upper, replaced, xwhiteouts) = self.dir_source(top, path, &name, raw, c.img())?;
        let img = c.img();
        let img_dir = img.filter(|i| i.attr.kind.is_dir());
        let r = visit(
            v,
            Visit::Dir {
                path,
                ctr,
                img,
                replaced,
                in_full,
            },
        );
        // Only the visit looks at what the image has there when it is no directory.
        if img_dir.is_none() {
            c.img = None;
        }
        let mut frame = Frame {
            path_len: path.len(),
            name,
            ctr,
            img: img_dir,
            held: Some(c),
            live: true,
            upper,
            extra: extra.filter(|_| !(in_full || replaced)),
            full: in_full || replaced,
            names: Vec::new().into_iter(),
            lost: Vec::new(),
            losing: false,
        };
        let r = r.and_then(|()| self.names(&frame, path, xwhiteouts));
        match r {
            Ok(names) => frame.names = names,
            Err(e) => {
                self.let_go(&mut frame);
                return Err(e);
            }
        }
        stack.push(frame);
        // The frames above the window let their nodes and fds go.
        if let Some(end) = stack.len().checked_sub(self.window)
            && end > 1
        {
            for f in stack[1..end].iter_mut().rev() {
                if !f.live {
                    break;
                }
                self.let_go(f);
            }
        }
        Ok(())
    }

    /// Where the children of directory `name` of `top` (at `path`) come from: its upper
    /// directory, opened (unless it is replaced, or written in full); whether it is
    /// replaced; whether it holds xattr whiteouts.
    fn dir_source(
        &self,
        top: &Frame<'_>,
        path: &[u8],
        name: &OsString,
        raw: Raw,
        img: Option<Found>,
    ) -> Result<(UpperFd, bool, bool)> {
        if top.full {
            return Ok((UpperFd::None, false, false));
        }
        let img_is_dir = img.is_some_and(|i| i.attr.kind.is_dir());
        let sub = match (&top.upper, raw) {
            (UpperFd::Open(fd), Raw::Entry) => match openat(
                fd,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => None,
                Err(e) => {
                    return Err(Error::io_what(format!("opening {}", show(path)), e.into()));
                }
            },
            _ => None,
        };
        Ok(match sub {
            Some(fd) => {
                let marks = union::xattr::read_marks(At::Fd(fd.as_fd()))
                    .map_err(|e| fs_err(show(path), e))?;
                let opaque = marks.opaque || self.v.has_opaque_marker(&fd);
                if opaque || marks.redirect.is_some() || !img_is_dir {
                    (UpperFd::None, true, false)
                } else {
                    (UpperFd::Open(fd), false, marks.xwhiteouts)
                }
            }
            // Not in the upper layer: the image's directory, reached for names the
            // hard-link pass found below it.
            None if img_is_dir => (UpperFd::None, false, false),
            None => (UpperFd::None, true, false),
        })
    }

    /// The children of directory `f` (at `path`), by name.
    fn names(
        &self,
        f: &Frame<'_>,
        path: &[u8],
        xwhiteouts: bool,
    ) -> Result<std::vec::IntoIter<(OsString, Raw)>> {
        let v = self.v;
        let mut names: BTreeMap<OsString, Raw> = BTreeMap::new();
        if f.full {
            for n in listing(&v.ctr, f.ctr.id).map_err(|e| fs_err(show(path), e))? {
                names.insert(n, Raw::Entry);
            }
            if let Some(i) = f.img.filter(|_| self.deleted_in_full) {
                for n in listing(&v.img, i.id).map_err(|e| fs_err(show(path), e))? {
                    names.entry(n).or_insert(Raw::Entry);
                }
            }
        } else {
            if let UpperFd::Open(fd) = &f.upper {
                self.raw_children(fd, path, xwhiteouts, &mut names)?;
            }
            if let Some(e) = f.extra {
                for n in e.children.keys() {
                    names.entry(n.clone()).or_insert(Raw::Extra);
                }
            }
        }
        Ok(names.into_iter().collect::<Vec<_>>().into_iter())
    }

    /// The names upper directory `fd` holds, whiteouts by the name they hide.
    fn raw_children(
        &self,
        fd: &OwnedFd,
        path: &[u8],
        xwhiteouts: bool,
        names: &mut BTreeMap<OsString, Raw>,
    ) -> Result<()> {
        let raw = match raw_names(fd) {
            Ok(r) => r,
            // Removed meanwhile (a live container): nothing left to see here.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(Error::io_what(format!("listing {}", show(path)), e)),
        };
        for name in raw {
            if self.v.wh_files {
                match whiteout::classify(&name) {
                    NameKind::Entry => {}
                    NameKind::Whiteout(t) => {
                        names.insert(t.to_owned(), Raw::Whiteout);
                        continue;
                    }
                    NameKind::Opaque | NameKind::AufsMeta | NameKind::Invalid => continue,
                }
            }
            let Ok(st) = nix::sys::stat::fstatat(
                fd,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let raw = if whiteout::is_whiteout_device(&st) {
                Raw::Whiteout
            } else if xwhiteouts
                && whiteout::may_be_xattr_whiteout(&st)
                && whiteout::has_whiteout_xattr(At::Entry(fd.as_fd(), &name)).unwrap_or(false)
            {
                Raw::XattrWhiteout
            } else {
                Raw::Entry
            };
            // A `.wh.` file and the name it hides: the name wins.
            let slot = names.entry(name).or_insert(raw);
            if raw == Raw::Entry {
                *slot = raw;
            }
        }
        Ok(())
    }

    /// Gives back what frame `f` holds: its lookups (when counted) and its upper fd.
    fn let_go(&self, f: &mut Frame<'_>) {
        if !f.live {
            return;
        }
        f.live = false;
        f.held = None;
        if matches!(f.upper, UpperFd::Open(_)) {
            f.upper = UpperFd::LetGo;
        }
    }

    /// Makes the top frame live again if it let its nodes go: looked up again from the
    /// root, name by name (keeping the deepest `window` frames). A directory not found
    /// again as one (gone meanwhile) leaves it and the frames below it with nothing to
    /// visit.
    fn reacquire(&self, stack: &mut [Frame<'a>], path: &[u8]) -> Result<()> {
        let top = stack.len().saturating_sub(1);
        if stack.get(top).is_none_or(|f| f.live) {
            return Ok(());
        }
        // The frames above the top that let go (the live ones are a suffix and the root).
        let first = stack.iter().rposition(|f| f.live).map_or(1, |i| i + 1);
        let keep_from = (top + 1).saturating_sub(self.window).max(1);
        for m in first..=top {
            let (above, rest) = stack.split_at_mut(m);
            let (Some(parent), Some(f)) = (above.last_mut(), rest.first_mut()) else {
                break;
            };
            let at = &path[..f.path_len];
            if !self.find_again(parent, f, at)? {
                for g in rest.iter_mut() {
                    g.clear();
                }
                break;
            }
            if m - 1 < keep_from && m > 1 {
                self.let_go(parent);
            }
        }
        Ok(())
    }

    /// Looks frame `f` up again in `parent` (live); false when it is gone (or is no
    /// longer what it was: a directory in each view that had one, an upper directory).
    fn find_again(&self, parent: &Frame<'a>, f: &mut Frame<'a>, path: &[u8]) -> Result<bool> {
        let Some((got, upper)) = self.find_parts(parent, f, path)? else {
            return Ok(false);
        };
        if let Some(fd) = upper {
            f.upper = UpperFd::Open(fd);
        }
        if let Some(c) = got.ctr() {
            f.ctr.id = c.id;
        }
        if let (Some(i), Some(mine)) = (got.img(), f.img.as_mut()) {
            mine.id = i.id;
        }
        f.held = Some(got);
        f.live = true;
        Ok(true)
    }

    /// The lookups and upper fd of [`Walk::find_again`]; `None` when gone.
    #[allow(clippy::option_option)]
    fn find_parts(
        &self,
        parent: &Frame<'a>,
        f: &Frame<'a>,
        path: &[u8],
    ) -> Result<Option<(Child<'a>, Option<OwnedFd>)>> {
        let v = self.v;
        let is_dir = |x: &Option<Looked<'_>>| x.as_ref().is_some_and(|x| x.attr.kind.is_dir());
        let mut got = Child {
            ctr: lookup(&v.ctr, parent.ctr.id, &f.name, path)?,
            img: None,
        };
        if !is_dir(&got.ctr) {
            return Ok(None);
        }
        if f.img.is_some() {
            let Some(p) = parent.img else {
                return Ok(None);
            };
            got.img = lookup(&v.img, p.id, &f.name, path)?;
            if !is_dir(&got.img) {
                return Ok(None);
            }
        }
        if !matches!(f.upper, UpperFd::LetGo) {
            return Ok(Some((got, None)));
        }
        let UpperFd::Open(pfd) = &parent.upper else {
            return Ok(None);
        };
        Ok(openat(
            pfd,
            f.name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(|fd| (got, Some(fd))))
    }
}
