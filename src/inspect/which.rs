//! Which layer of a stack a path comes from, and what every other layer says about it:
//! each layer is a changeset, read here from its own directory (relative to its root fd,
//! never following a symlink), so that versions the merged view hides show too.
//!
//! A layer says one of: it has an entry at the path (which may also hide the versions
//! below, when a directory above it is opaque in that layer); it deletes the path (a
//! whiteout of it or of a directory above it, in any dialect, or a non-directory where a
//! directory above it was); it hides the path (an opaque directory above it); nothing.
//! Going down from the top, the first entry no layer above has deleted or hidden serves
//! the path; entries below it are shadowed (directories: merged, until one is hidden).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode};
use serde::Serialize;

use crate::ownership;
use crate::sys::At;
use crate::union::{FileKind, Stack, stat_at, xattr};
use crate::whiteout;

/// An entry a layer has at the path.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Why the versions below a layer are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hides {
    /// A whiteout of the path or of a directory above it.
    Whiteout,
    /// An opaque directory above the path.
    Opaque,
    /// A non-directory where a directory above the path was.
    Replaced,
}

/// How the merged view treats one layer's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// This is what the path shows.
    Serves,
    /// A directory merged below the one that serves.
    Merged,
    /// Below the one that serves.
    Shadowed,
    /// Gone from the view: a layer above deleted or hid it (`by`).
    Deleted,
}

/// What one layer says about the path.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Index in the stack (0: the top).
    #[serde(skip)]
    pub index: usize,
    pub layer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The layer (label) whose whiteout or opaque directory removed this entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// This layer removes what is below it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hides: Option<Hides>,
}

/// What the layers of `stack` say about `path` (components, none empty, `.` or `..`),
/// top first: only the layers that say something.
pub fn which(stack: &Stack, path: &[&OsStr]) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for i in 0..stack.layers.len() {
        let (entry, hides) = layer_says(stack, i, path)?;
        if entry.is_some() || hides.is_some() {
            rows.push(Row {
                index: i,
                layer: stack.layers[i].label.clone(),
                entry,
                status: None,
                by: None,
                hides,
            });
        }
    }
    let mut served: Option<bool> = None; // Some(is_dir) once something serves
    let mut gone: Option<String> = None;
    for r in &mut rows {
        if let Some(e) = &r.entry {
            let is_dir = e.kind == "directory";
            r.status = Some(match (&gone, served) {
                (Some(by), _) => {
                    r.by = Some(by.clone());
                    Status::Deleted
                }
                (None, None) => {
                    served = Some(is_dir);
                    Status::Serves
                }
                (None, Some(true)) if is_dir => Status::Merged,
                (None, Some(_)) => Status::Shadowed,
            });
        }
        if r.hides.is_some() && gone.is_none() {
            gone = Some(r.layer.clone());
        }
    }
    Ok(rows)
}

/// What layer `i` has at `path` and whether it removes the versions below it.
fn layer_says(
    stack: &Stack,
    i: usize,
    path: &[&OsStr],
) -> io::Result<(Option<Meta>, Option<Hides>)> {
    let wh_files = stack.wh_files(i);
    let mut dir: Arc<OwnedFd> = stack.root(i).clone();
    // The marks of `dir`, read once: its xattr whiteouts, and whether it is opaque.
    let mut marks = xattr::dir_marks(&dir, wh_files)?;
    let mut hides = None;
    for (k, comp) in path.iter().enumerate() {
        let last = k + 1 == path.len();
        let Some(st) = stat_at(&dir, comp)? else {
            if wh_files && stat_at(&dir, &whiteout::whiteout_file_name(comp))?.is_some() {
                return Ok((None, Some(Hides::Whiteout)));
            }
            return Ok((None, hides));
        };
        if whiteout::is_whiteout_device(&st)
            || xattr::is_xattr_whiteout(dir.as_fd(), marks.xwhiteouts, comp, &st)?
        {
            return Ok((None, Some(Hides::Whiteout)));
        }
        let kind = FileKind::from_mode(st.st_mode);
        if last && !kind.is_dir() {
            return Ok((Some(meta(&dir, comp, &st, kind)), hides));
        }
        if !kind.is_dir() {
            return Ok((None, Some(Hides::Replaced)));
        }
        let sub = Arc::new(openat(
            &*dir,
            *comp,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?);
        // An opaque directory (the path itself or one above it) hides what is below it.
        marks = xattr::dir_marks(&sub, wh_files)?;
        if marks.opaque {
            hides = Some(Hides::Opaque);
        }
        if last {
            return Ok((Some(meta(&dir, comp, &st, kind)), hides));
        }
        dir = sub;
    }
    Ok((None, hides))
}

fn meta(dir: &OwnedFd, name: &OsStr, st: &FileStat, kind: FileKind) -> Meta {
    // A rootless store keeps the image's owners in a record.
    let rec = if matches!(kind, FileKind::Regular | FileKind::Directory) {
        ownership::read(At::Entry(dir.as_fd(), name))
    } else {
        None
    };
    let kind = rec.and_then(|r| r.kind).unwrap_or(kind);
    Meta {
        kind: kind_name(kind),
        size: if kind == FileKind::Regular {
            st.st_size as u64
        } else {
            0
        },
        mode: rec.map_or(st.st_mode & 0o7777, |r| r.perm),
        uid: rec.map_or(st.st_uid, |r| r.uid),
        gid: rec.map_or(st.st_gid, |r| r.gid),
    }
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
    }
}

/// `path` (absolute or relative to the root) as checked components: `.` and empty ones
/// dropped, `..` refused.
pub fn components(path: &OsStr) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in path.as_bytes().split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(format!("{}: `..` is not allowed", path.to_string_lossy())),
            c => out.push(OsStr::from_bytes(c).to_owned()),
        }
    }
    Ok(out)
}
