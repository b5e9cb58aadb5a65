//! Ownership kept in metadata: `user.containers.override_stat`, containers-storage's and
//! fuse-overlayfs' record of the owner, group and mode the host refused to a rootless
//! writer (`uid:gid:mode[:type]`, mode in octal). One parser and one writer for the
//! store's unpacker, the union core (which presents the record as the entry's
//! attributes) and the store's layer-tar reader.

use std::ffi::OsStr;

use crate::sys::{self, At};
use crate::union::FileKind;

/// The xattr name, as containers-storage spells it.
pub const XATTR: &str = "user.containers.override_stat";

/// One record: what an entry's owner, group and permission bits are meant to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub perm: u32,
    /// The type the record names, when it names one (containers-storage's fourth field).
    pub kind: Option<FileKind>,
    /// Device numbers of a `block-M-m` / `char-M-m` type.
    pub rdev: Option<(u32, u32)>,
}

impl Override {
    pub fn new(uid: u32, gid: u32, perm: u32) -> Override {
        Override {
            uid,
            gid,
            perm: perm & 0o7777,
            kind: None,
            rdev: None,
        }
    }

    /// Parses `uid:gid:mode[:type]`; `None` for anything else (a record we cannot read is
    /// not applied). Devices are read in both spellings seen in the wild: `char-1-3` and
    /// `char1:3`.
    pub fn parse(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
        let mut it = s.splitn(4, ':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let mode = it.next()?;
        if mode.is_empty() || !mode.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        let mode = u32::from_str_radix(mode, 8).ok()?;
        let mut o = Override::new(uid, gid, mode);
        if let Some(t) = it.next() {
            let (kind, rdev) = parse_type(t)?;
            o.kind = Some(kind);
            o.rdev = rdev;
        }
        Some(o)
    }

    /// A device node kept as an empty regular file (the host refuses mknod to a user).
    pub fn device(uid: u32, gid: u32, perm: u32, kind: FileKind, rdev: (u32, u32)) -> Override {
        Override {
            kind: Some(kind),
            rdev: Some(rdev),
            ..Override::new(uid, gid, perm)
        }
    }

    /// The record as containers-storage writes it: the type only for a device (for a
    /// regular file or a directory it is the host entry's own, and older readers take
    /// three fields).
    pub fn format(&self) -> String {
        let base = format!("{}:{}:0{:o}", self.uid, self.gid, self.perm & 0o7777);
        match (self.kind, self.rdev) {
            (Some(FileKind::CharDevice), Some((ma, mi))) => format!("{base}:char-{ma}-{mi}"),
            (Some(FileKind::BlockDevice), Some((ma, mi))) => format!("{base}:block-{ma}-{mi}"),
            _ => base,
        }
    }

    /// Whether the record applies to a host entry of `kind`: its own type, or a device
    /// kept as a regular file.
    pub fn applies_to(&self, kind: FileKind) -> bool {
        self.kind
            .is_none_or(|k| k == kind || self.kept_device(kind).is_some())
    }

    /// The device a regular host file of `kind` stands for, if the record says it is one.
    pub fn kept_device(&self, kind: FileKind) -> Option<(FileKind, (u32, u32))> {
        match (kind, self.kind, self.rdev) {
            (
                FileKind::Regular,
                Some(k @ (FileKind::CharDevice | FileKind::BlockDevice)),
                Some(rdev),
            ) => Some((k, rdev)),
            _ => None,
        }
    }
}

/// The record of the entry at `at`, if it has one that parses (a missing or unreadable
/// record is no record: the entry is what the host says).
pub fn read(at: At<'_>) -> Option<Override> {
    match sys::getxattr(at, OsStr::new(XATTR)) {
        Ok(Some(v)) => Override::parse(&v),
        _ => None,
    }
}

/// Writes `o` as the record of the entry at `at`.
pub fn write(at: At<'_>, o: &Override) -> std::io::Result<()> {
    sys::setxattr(at, OsStr::new(XATTR), o.format().as_bytes(), 0)
}

/// This process's effective uid and gid (which a rootless union takes for root's).
pub fn own_ids() -> (u32, u32) {
    static OWN: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *OWN.get_or_init(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    })
}

fn parse_type(t: &str) -> Option<(FileKind, Option<(u32, u32)>)> {
    Some(match t {
        "file" => (FileKind::Regular, None),
        "dir" => (FileKind::Directory, None),
        "symlink" => (FileKind::Symlink, None),
        "pipe" => (FileKind::Fifo, None),
        "socket" => (FileKind::Socket, None),
        _ => {
            let (kind, nums) = if let Some(r) = t.strip_prefix("block") {
                (FileKind::BlockDevice, r)
            } else {
                (FileKind::CharDevice, t.strip_prefix("char")?)
            };
            let nums = nums.strip_prefix('-').unwrap_or(nums);
            let (maj, min) = nums.split_once(['-', ':'])?;
            (kind, Some((maj.parse().ok()?, min.parse().ok()?)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_containers_storage_writes() {
        assert_eq!(
            Override::parse(b"0:0:0755"),
            Some(Override::new(0, 0, 0o755))
        );
        assert_eq!(
            Override::parse(b"1000:100:04711"),
            Some(Override::new(1000, 100, 0o4711))
        );
        let d = Override::parse(b"0:6:0660:block-8-0").unwrap();
        assert_eq!(
            (d.kind, d.rdev),
            (Some(FileKind::BlockDevice), Some((8, 0)))
        );
        let c = Override::parse(b"0:0:0666:char1:3").unwrap();
        assert_eq!((c.kind, c.rdev), (Some(FileKind::CharDevice), Some((1, 3))));
        let f = Override::parse(b"5:5:0644:file").unwrap();
        assert_eq!(f.kind, Some(FileKind::Regular));
        assert!(f.applies_to(FileKind::Regular) && !f.applies_to(FileKind::Directory));
        for bad in [
            &b"x"[..],
            b"0:0",
            b"0:0:",
            b"0:0:0899",
            b"-1:0:0644",
            b"0:0:0644:weird",
            b"4294967296:0:0644",
        ] {
            assert_eq!(
                Override::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn format_round_trips() {
        let o = Override::new(65534, 1000, 0o2775);
        assert_eq!(o.format(), "65534:1000:02775");
        assert_eq!(Override::parse(o.format().as_bytes()), Some(o));
        let d = Override::device(0, 6, 0o660, FileKind::BlockDevice, (8, 1));
        assert_eq!(d.format(), "0:6:0660:block-8-1");
        assert_eq!(Override::parse(d.format().as_bytes()), Some(d));
        assert_eq!(
            d.kept_device(FileKind::Regular),
            Some((FileKind::BlockDevice, (8, 1)))
        );
        assert!(d.applies_to(FileKind::Regular) && !d.applies_to(FileKind::Directory));
    }
}
