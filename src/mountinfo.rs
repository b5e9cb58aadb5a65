//! What is mounted where, from `/proc/self/mountinfo`: so that `umount` touches only
//! layerfs mounts, `mount` does not silently stack over another mount, and a mount whose
//! daemon died ("Transport endpoint is not connected") is recognised.
//!
//! A layerfs mount is a FUSE mount of type `fuse.layerfs*` (the subtype is shown when
//! fusermount3 mounted it), or of type `fuse`/`fuse.*` whose source (the FUSE `fsname`)
//! starts with `layerfs`: `layerfs:NAME` for `layerfs mount`, `layerfs-overlay` for the
//! drop-in's default. A drop-in mount made as root and given another `fsname` by its
//! caller (containers' `mount_program`) cannot be told from other FUSE mounts and is
//! not recognised as ours; umount(8) or `fusermount3 -u` unmount it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// The FUSE `fsname` prefix of every layerfs mount.
pub const LAYERFS_SOURCE_PREFIX: &str = "layerfs";

impl MountEntry {
    /// True for a mount made by layerfs (see the module docs).
    pub fn is_layerfs(&self) -> bool {
        let fuse = self.fstype == "fuse" || self.fstype.starts_with("fuse.");
        self.fstype.starts_with("fuse.layerfs")
            || (fuse && self.source.starts_with(LAYERFS_SOURCE_PREFIX))
    }

    /// How messages name it: `tmpfs (source tmpfs)`.
    pub fn describe(&self) -> String {
        format!("{} (source {})", self.fstype, self.source)
    }
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS…] - FSTYPE SOURCE SUPER`.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fstype: unescape(fstype),
                source: unescape(source),
            })
        })
        .collect()
}

/// Every mount of this process's namespace, in mount order.
pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount whose mount point is exactly `path` (absolute, resolved).
pub fn at(path: &Path) -> io::Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// `path` made absolute and resolved without touching `path` itself (only its parent):
/// a dead FUSE mount answers every stat with ENOTCONN.
pub fn resolve_mount_point(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)?.join(name)),
        _ => Ok(abs),
    }
}

/// True when `path` is a dead FUSE mount (its daemon is gone).
pub fn is_dead_fuse(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "\
22 1 0:21 / /proc rw,nosuid shared:5 - proc proc rw
44 27 0:39 / /tmp/with\\040space rw,nosuid,nodev,relatime - fuse layerfs:web rw,user_id=0
45 44 0:40 / /tmp/m ro,relatime - fuse.layerfs-overlay overlay ro
46 44 0:41 / /tmp/n ro,relatime - fuse overlay ro
";
        let m = parse(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, Path::new("/tmp/with space"));
        assert!(m[1].is_layerfs());
        assert!(!m[0].is_layerfs());
        assert!(m[2].is_layerfs(), "by its subtype");
        assert!(!m[3].is_layerfs(), "another fsname is not recognised");
    }
}
