//! The merged listing of a directory, as data: built and cached (on the directory's node)
//! by `readdir.rs`, read by `Union::readdir`.

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

/// A merged directory listing (without "." and ".."), in the order of its offsets.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    /// The readdir offset of each entry (its cookie), ascending.
    pub offsets: Vec<u64>,
    pub subdirs: u32,
}
