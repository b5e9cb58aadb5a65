//! `docker diff`: Added, Changed and Deleted paths of a container against its image.
//!
//! Docker's rules (its archive package's tree comparison, what `docker diff` prints on an
//! overlay2 engine): a path only the container has is `A`, with everything below it; a
//! path only the image has is `D`, alone (nothing below a deleted directory is listed);
//! a path both have is `C` when its type, mode, owner or device differ, or, for a
//! non-directory, its size or mtime (a directory's size and mtime are not a measure of
//! change); a directory with any change below it is `C` too, listed just before its first
//! change. Beyond Docker, a change of extended attributes counts as `C` (Docker compares
//! `security.capability` only). A directory's changes come as: its own line, what it still
//! has (with subtrees), then what it lost; Docker orders names randomly, we bytewise.

use crate::error::Result;
use crate::union::{Attr, FileKind, Time};

use super::{Found, Views, Visit, fs_err, show};
use crate::container::read::user_xattrs;

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    #[serde(rename = "C")]
    Changed,
    #[serde(rename = "A")]
    Added,
    #[serde(rename = "D")]
    Deleted,
}

impl Kind {
    /// The letter `docker diff` prints.
    pub fn letter(self) -> char {
        match self {
            Kind::Changed => 'C',
            Kind::Added => 'A',
            Kind::Deleted => 'D',
        }
    }
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    /// Absolute, `/etc/passwd` (raw bytes: names need not be UTF-8).
    pub path: Vec<u8>,
}

/// Docker's `sameFsTime`: equal, or equal seconds where one side has no nanoseconds
/// (a filesystem or archive that keeps whole seconds).
fn same_time(a: Time, b: Time) -> bool {
    a == b || (a.sec == b.sec && (a.nsec == 0 || b.nsec == 0))
}

/// True when the attributes alone show a change (Docker's `statDifferent`).
fn attr_differs(img: &Attr, ctr: &Attr) -> bool {
    img.kind != ctr.kind
        || img.perm != ctr.perm
        || img.uid != ctr.uid
        || img.gid != ctr.gid
        || img.rdev != ctr.rdev
        || (ctr.kind != FileKind::Directory
            && (img.size != ctr.size || !same_time(img.mtime, ctr.mtime)))
}

/// True when the container's view of a path differs from the image's.
fn differs(v: &Views, path: &[u8], img: &Found, ctr: &Found) -> Result<bool> {
    if attr_differs(&img.attr, &ctr.attr) {
        return Ok(true);
    }
    let a = user_xattrs(&v.img, img.id).map_err(|e| fs_err(show(path), e))?;
    let b = user_xattrs(&v.ctr, ctr.id).map_err(|e| fs_err(show(path), e))?;
    Ok(a != b)
}

struct Lister {
    out: Vec<Change>,
    /// Open directories: absolute path, and whether a line names it already.
    dirs: Vec<(Vec<u8>, bool)>,
}

impl Lister {
    fn emit(&mut self, kind: Kind, path: &[u8]) {
        // Every enclosing directory not listed yet is changed, outermost first (the
        // root never is).
        for (p, listed) in self.dirs.iter_mut().skip(1) {
            if !*listed {
                *listed = true;
                self.out.push(Change {
                    kind: Kind::Changed,
                    path: p.clone(),
                });
            }
        }
        let mut abs = Vec::with_capacity(path.len() + 1);
        abs.push(b'/');
        abs.extend_from_slice(path);
        self.out.push(Change { kind, path: abs });
    }

    fn visit(&mut self, v: &Views, step: Visit<'_>) -> Result<()> {
        match step {
            Visit::Dir { path, ctr, img, .. } => {
                let own = match img {
                    None => Some(Kind::Added),
                    Some(i) if !path.is_empty() && differs(v, path, &i, &ctr)? => {
                        Some(Kind::Changed)
                    }
                    Some(_) => None,
                };
                if let Some(k) = own {
                    self.emit(k, path);
                }
                let mut abs = vec![b'/'];
                abs.extend_from_slice(path);
                self.dirs.push((abs, own.is_some()));
            }
            Visit::Leaf { path, ctr, img, .. } => {
                let kind = match (ctr, img) {
                    (Some(_), None) => Some(Kind::Added),
                    (None, Some(_)) => Some(Kind::Deleted),
                    (Some(c), Some(i)) => differs(v, path, &i, &c)?.then_some(Kind::Changed),
                    (None, None) => None,
                };
                if let Some(k) = kind {
                    self.emit(k, path);
                }
            }
            Visit::Leave { .. } => {
                self.dirs.pop();
            }
        }
        Ok(())
    }
}

/// The changes of a container, in `docker diff`'s order (see the module docs).
pub fn changes(v: &Views) -> Result<Vec<Change>> {
    let mut l = Lister {
        out: Vec::new(),
        dirs: Vec::new(),
    };
    v.walk(true, &mut |v, step| l.visit(v, step))?;
    Ok(l.out)
}
