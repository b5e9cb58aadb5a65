//! The merged listing of a directory, as data: built and cached (on the directory's node)
//! by `readdir.rs`, read by open directory handles.

use std::ffi::OsString;

use super::attr::FileKind;

/// One entry of a merged listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub kind: FileKind,
    /// st_ino the entry reports (d_ino).
    pub ino: u64,
}

/// A merged directory listing (without "." and "..").
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    pub subdirs: u32,
}
