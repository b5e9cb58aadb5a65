//! What a container changed: the paths its writable layer touches, seen both as the
//! container's mount shows them and as its image alone shows them. `diff` lists them
//! ([`diff`]); `commit` writes them as a layer (`crate::commit`).
//!
//! Two read-only unions answer every question about a path: the container's view (the
//! image layers under the upper layer, opened frozen: exactly what the mount shows, its
//! hard-link index included, without writing anything, also while the mount is live) and
//! the image's view (the image layers alone). Neither is ever walked whole. The walk is
//! driven by the upper directory: only the names it holds are looked at, so a container
//! that touched three files of a 100k-file image costs a handful of lookups. Only where
//! the upper layer replaces a directory's contents — an opaque directory, a renamed one
//! (`redirect`), a directory over a non-directory, a new directory — is the container's
//! view of that directory listed, and its image counterpart for what it lost.
//!
//! Reading the upper layer's own spellings (whiteouts of every dialect, opaque markers)
//! goes through [`crate::whiteout`]; the overlay marks through the union's mark reader.
//! Whether its `.wh.` names are marks is not decided here: it is the container's
//! spelling (`Container::upper_spec`), the same its mount reads, so a `.wh.` file a
//! process made through a mount that spells whiteouts as devices is a file here too.
//! A lower file whose hard-linked inode was copied up keeps its lower name but shows the
//! copy (the index, `union/index.rs`): such names are found by one pass over the image
//! layers, made only when the index holds an inode with names outside the upper layer
//! ([`links`]).
//!
//! The walk hands each path to a visitor, depth first, in a fixed order: a directory, then
//! the children it still has (by name, bytewise), each with its subtree, then the children
//! it lost (by name), then the end of the directory. Docker lists a directory's changes
//! this way too, in Go's map order; ours is sorted, so the same changes always come out
//! the same.

pub mod diff;
mod links;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fstatat};

use crate::error::{Error, Result};
use crate::sys::At;
use crate::union::{
    self, Attr, FileKind, FsError, LayerSpec, NodeId, Options, Stack, Union, WorkSpec,
};
use crate::whiteout::{self, NameKind, Styles};

pub use links::Extra;

/// The error of a union operation on `what`.
pub(crate) fn fs_err(what: impl std::fmt::Display, e: FsError) -> Error {
    let what = match e.context() {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    };
    Error::io_what(what, io::Error::from_raw_os_error(e.errno()))
}

/// `/a/b` for the walk's path `a/b` (`/` for the root), for messages.
pub fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// The container's and the image's view of one container.
pub struct Views {
    /// What the container's mount shows.
    pub ctr: Union,
    /// What its image shows.
    pub img: Union,
    upper: LayerSpec,
    work: WorkSpec,
    /// The image's layer directories, top first.
    lowers: Vec<LayerSpec>,
    /// The upper layer may spell whiteouts and opaque markers as `.wh.` files.
    wh_files: bool,
}

/// A path as one view shows it: its node (looked up, forgotten after the visit) and
/// attributes.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub id: NodeId,
    pub attr: Attr,
}

/// One step of the walk. Paths are relative to the root, without a leading `/` (the root
/// is the empty path).
#[derive(Debug)]
pub enum Visit<'a> {
    /// A directory the container has; its children follow, then [`Visit::Leave`].
    Dir {
        path: &'a [u8],
        ctr: Found,
        img: Option<Found>,
        /// Its contents replace whatever the image had below it: everything it holds
        /// follows (not only what the upper layer touched), and a layer must mark it
        /// opaque when the image has a directory there (`img`).
        replaced: bool,
        /// Inside a replaced directory (a layer writes its contents whole, no marks).
        in_full: bool,
    },
    /// A non-directory the container has, or a path it no longer has (`ctr` is `None`;
    /// the image's view is in `img`).
    Leaf {
        path: &'a [u8],
        ctr: Option<Found>,
        img: Option<Found>,
        in_full: bool,
    },
    /// The end of the directory `path`.
    Leave { path: &'a [u8] },
}

/// What the upper directory holds at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raw {
    Entry,
    Whiteout,
    /// An empty file marked as a whiteout (kernel xattr whiteouts).
    XattrWhiteout,
    /// Not in the upper directory: a name found by the hard-link pass only.
    Extra,
}

/// Where a directory's children come from.
enum Source {
    /// The names its upper directory holds (if any) and the hard-link pass found.
    Upper(Option<OwnedFd>),
    /// Its whole listing in the container's view.
    Listing,
}

/// The raw entries of a directory (name, inode number, type when the filesystem gives
/// it), `.` and `..` left out.
fn raw_entries(dir: &OwnedFd) -> io::Result<Vec<crate::sys::DirEntry>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    crate::sys::dir_entries(fd)
}

/// The raw names of a directory, `.` and `..` left out.
fn raw_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    Ok(raw_entries(dir)?.into_iter().map(|e| e.name).collect())
}

fn absent_ok<T>(r: union::Result<T>) -> union::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e == FsError::ENOENT || e == FsError::ENOTDIR => Ok(None),
        Err(e) => Err(e),
    }
}

/// The image record of container `c`: an error naming it when the image is gone.
pub fn container_image(
    store: &crate::store::Store,
    c: &crate::store::containers::Container,
) -> Result<crate::store::ImageRecord> {
    let gone = || {
        Error::Conflict(format!(
            "container {} was made from image {}, which is no longer in the store",
            c.record.name, c.record.image
        ))
    };
    let id = crate::digest::Digest::parse(&c.record.image).map_err(|_| gone())?;
    store.image(&id)?.ok_or_else(gone)
}

impl Views {
    /// Opens the views of container `c` of `store`.
    pub fn of_container(
        store: &crate::store::Store,
        c: &crate::store::containers::Container,
    ) -> Result<Views> {
        let image = container_image(store, c)?;
        let lowers = store.lower_specs(&image)?;
        let (upper, styles) = c.upper_spec(store)?;
        Views::open(&lowers, &upper, &c.work_spec()?, styles)
    }

    /// Opens the views of a container whose upper layer is `upper`, written in `styles`,
    /// with work directory `work`, over image layers `lowers` (top first). Nothing is
    /// written, not even a probe. The upper layer's `.wh.` names are marks exactly when
    /// `upper` says so, as for its mount; otherwise they are files (which a layer cannot
    /// carry: `commit` refuses them).
    pub fn open(
        lowers: &[LayerSpec],
        upper: &LayerSpec,
        work: &WorkSpec,
        styles: Styles,
    ) -> Result<Views> {
        let opts = Options {
            atime: union::Atime::Never,
            dir_nlink: false,
            ..Options::default()
        };
        let stack = Stack::open_frozen(lowers, upper, work, styles)
            .map_err(|e| Error::io_what("opening the container's layers", e))?;
        let wh_files = stack.wh_files(0);
        let ctr = Union::new(stack, opts.clone())
            .map_err(|e| fs_err("reading the container's layers", e))?;
        let stack = Stack::open(lowers, None)
            .map_err(|e| Error::io_what("opening the image's layers", e))?;
        let img = Union::new(stack, opts).map_err(|e| fs_err("reading the image's layers", e))?;
        Ok(Views {
            ctr,
            img,
            upper: upper.clone(),
            work: work.clone(),
            lowers: lowers.to_vec(),
            wh_files,
        })
    }

    /// Walks what the upper layer touches, handing each path to `visit`. `deleted_in_full`:
    /// also visit what replaced directories lost (for `diff`; a layer's opaque marker
    /// says it without naming them).
    pub fn walk(
        &self,
        deleted_in_full: bool,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        self.walk_linked(deleted_in_full, &HashSet::new(), visit)
    }

    /// [`Views::walk`], also visiting every name the image layers give the inodes in
    /// `linked` (numbered as the container's view numbers them), changed or not: `commit`
    /// asks for the inodes of hard-linked files inside replaced directories, whose other
    /// names the upper layer may not hold, so that the layer keeps them one inode.
    pub fn walk_linked(
        &self,
        deleted_in_full: bool,
        linked: &HashSet<u64>,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        let extra = links::lower_names(self, linked)?;
        let ctr = Found {
            id: union::ROOT_ID,
            attr: self
                .ctr
                .getattr(union::ROOT_ID, None)
                .map_err(|e| fs_err("/", e))?,
        };
        let img = Found {
            id: union::ROOT_ID,
            attr: self
                .img
                .getattr(union::ROOT_ID, None)
                .map_err(|e| fs_err("/", e))?,
        };
        let root = self
            .upper
            .open_readable()
            .map_err(|e| Error::io_what("opening the upper layer", e))?;
        let marks = union::xattr::read_marks(At::Fd(root.as_fd()))
            .map_err(|e| fs_err(self.upper.path.display(), e))?;
        let replaced = marks.opaque || self.has_opaque_marker(&root);
        let w = Walk {
            v: self,
            deleted_in_full,
        };
        let mut path = Vec::new();
        visit(
            self,
            Visit::Dir {
                path: &path,
                ctr,
                img: Some(img),
                replaced,
                in_full: false,
            },
        )?;
        let source = if replaced {
            Source::Listing
        } else {
            Source::Upper(Some(root))
        };
        w.children(
            &mut path,
            ctr,
            Some(img),
            source,
            Some(&extra),
            replaced,
            marks.xwhiteouts,
            visit,
        )?;
        visit(self, Visit::Leave { path: &path })
    }

    fn has_opaque_marker(&self, dir: &OwnedFd) -> bool {
        self.wh_files
            && fstatat(
                dir,
                whiteout::OPAQUE_MARKER,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
    }

    /// The user-visible xattrs of `id` in `u`, sorted by name (the union's own marks and
    /// the store's rootless ownership record left out).
    pub fn xattrs(u: &Union, id: NodeId) -> union::Result<Vec<(OsString, Vec<u8>)>> {
        let list = u.listxattr(id)?;
        let mut out = Vec::new();
        for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = OsStr::from_bytes(name);
            if name == crate::store::unpack::OVERRIDE_STAT_XATTR {
                continue;
            }
            match u.getxattr(id, name, u32::MAX) {
                Ok(v) => out.push((name.to_owned(), v)),
                Err(e) if e == FsError::ENODATA => {}
                Err(e) => return Err(e),
            }
        }
        out.sort();
        Ok(out)
    }
}

struct Walk<'a> {
    v: &'a Views,
    deleted_in_full: bool,
}

/// One child of a directory being walked.
struct Child {
    name: OsString,
    raw: Raw,
    ctr: Option<Found>,
    img: Option<Found>,
}

impl Walk<'_> {
    /// Visits the children of directory `path` (`ctr`, and `img` when the image has a
    /// directory there too).
    #[allow(clippy::too_many_arguments)]
    fn children(
        &self,
        path: &mut Vec<u8>,
        ctr: Found,
        img: Option<Found>,
        source: Source,
        extra: Option<&Extra>,
        in_full: bool,
        xwhiteouts: bool,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        let v = self.v;
        let img_dir = img.filter(|i| i.attr.kind.is_dir());
        let mut names: BTreeMap<OsString, Raw> = BTreeMap::new();
        let upper_fd = match source {
            Source::Upper(fd) => {
                if let Some(fd) = &fd {
                    self.raw_children(fd, path, xwhiteouts, &mut names)?;
                }
                if let Some(e) = extra {
                    for n in e.children.keys() {
                        names.entry(n.clone()).or_insert(Raw::Extra);
                    }
                }
                fd
            }
            Source::Listing => {
                for n in listing(&v.ctr, ctr.id).map_err(|e| fs_err(show(path), e))? {
                    names.insert(n, Raw::Entry);
                }
                if let Some(i) = img_dir.filter(|_| self.deleted_in_full) {
                    for n in listing(&v.img, i.id).map_err(|e| fs_err(show(path), e))? {
                        names.entry(n).or_insert(Raw::Entry);
                    }
                }
                None
            }
        };
        let mut kids = Vec::with_capacity(names.len());
        for (name, raw) in names {
            let child = self.look(path, ctr, img_dir, name, raw)?;
            if child.ctr.is_some() || child.img.is_some() {
                kids.push(child);
            }
        }
        // What it still has, then what it lost.
        kids.sort_by_key(|c| c.ctr.is_none());
        let mut result = Ok(());
        let mut rest = kids.into_iter();
        for child in rest.by_ref() {
            let r = self.child(
                path,
                &child,
                upper_fd.as_ref(),
                extra.and_then(|e| e.children.get(&child.name)),
                in_full,
                visit,
            );
            self.forget(&child);
            if r.is_err() {
                result = r;
                break;
            }
        }
        for child in rest {
            self.forget(&child);
        }
        result
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
            let Ok(st) = fstatat(
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

    /// Looks `name` up in both views.
    fn look(
        &self,
        path: &[u8],
        ctr: Found,
        img_dir: Option<Found>,
        name: OsString,
        raw: Raw,
    ) -> Result<Child> {
        let v = self.v;
        let at = |p: &[u8]| {
            let mut s = show(p);
            if !p.is_empty() {
                s.push('/');
            }
            s.push_str(&name.to_string_lossy());
            s
        };
        let mut c = absent_ok(v.ctr.lookup(ctr.id, &name))
            .map_err(|e| fs_err(at(path), e))?
            .map(|e| Found {
                id: e.id,
                attr: e.attr,
            });
        if raw == Raw::XattrWhiteout
            && let Some(f) = c.take()
        {
            // The kernel reads it as a whiteout; so does a layer made of it.
            v.ctr.forget(f.id, 1);
        }
        let i = match img_dir {
            Some(d) => absent_ok(v.img.lookup(d.id, &name))
                .map_err(|e| fs_err(at(path), e))?
                .map(|e| Found {
                    id: e.id,
                    attr: e.attr,
                }),
            None => None,
        };
        Ok(Child {
            name,
            raw,
            ctr: c,
            img: i,
        })
    }

    fn forget(&self, c: &Child) {
        if let Some(f) = c.ctr {
            self.v.ctr.forget(f.id, 1);
        }
        if let Some(f) = c.img {
            self.v.img.forget(f.id, 1);
        }
    }

    /// Visits one child (and its subtree).
    fn child(
        &self,
        path: &mut Vec<u8>,
        c: &Child,
        upper: Option<&OwnedFd>,
        extra: Option<&Extra>,
        in_full: bool,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        let len = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(c.name.as_bytes());
        let r = self.child_at(path, c, upper, extra, in_full, visit);
        path.truncate(len);
        r
    }

    fn child_at(
        &self,
        path: &mut Vec<u8>,
        c: &Child,
        upper: Option<&OwnedFd>,
        extra: Option<&Extra>,
        in_full: bool,
        visit: &mut dyn FnMut(&Views, Visit<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(ctr) = c.ctr.filter(|f| f.attr.kind == FileKind::Directory) else {
            return visit(
                self.v,
                Visit::Leaf {
                    path,
                    ctr: c.ctr,
                    img: c.img,
                    in_full,
                },
            );
        };
        let img_is_dir = c.img.is_some_and(|i| i.attr.kind.is_dir());
        // How the directory's children are found.
        let (source, replaced, xwhiteouts) = if in_full {
            (Source::Listing, false, false)
        } else {
            let sub = match (upper, c.raw) {
                (Some(fd), Raw::Entry) => match openat(
                    fd,
                    c.name.as_os_str(),
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
            match sub {
                Some(fd) => {
                    let marks = union::xattr::read_marks(At::Fd(fd.as_fd()))
                        .map_err(|e| fs_err(show(path), e))?;
                    let opaque = marks.opaque || self.v.has_opaque_marker(&fd);
                    if opaque || marks.redirect.is_some() || !img_is_dir {
                        (Source::Listing, true, false)
                    } else {
                        (Source::Upper(Some(fd)), false, marks.xwhiteouts)
                    }
                }
                // Not in the upper layer: the image's directory, reached for names the
                // hard-link pass found below it.
                None if img_is_dir => (Source::Upper(None), false, false),
                None => (Source::Listing, true, false),
            }
        };
        visit(
            self.v,
            Visit::Dir {
                path,
                ctr,
                img: c.img,
                replaced,
                in_full,
            },
        )?;
        let full = in_full || replaced;
        self.children(
            path,
            ctr,
            c.img,
            source,
            extra.filter(|_| !full),
            full,
            xwhiteouts,
            visit,
        )?;
        visit(self.v, Visit::Leave { path })
    }
}

/// The names a directory node shows in union `u`.
fn listing(u: &Union, id: NodeId) -> union::Result<Vec<OsString>> {
    let fh = u.opendir(id)?;
    let mut names = Vec::new();
    let r = u.readdir(fh, 0, |_, e| {
        if e.name != "." && e.name != ".." {
            names.push(e.name.clone());
        }
        false
    });
    u.releasedir(fh);
    r.map(|()| names)
}
