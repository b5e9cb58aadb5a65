//! File attributes as the union reports them, independent of FUSE.

use nix::sys::stat::{FileStat, SFlag};

/// The type of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl FileKind {
    pub fn from_mode(mode: u32) -> FileKind {
        match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            SFlag::S_IFSOCK => FileKind::Socket,
            _ => FileKind::Regular,
        }
    }

    /// From a `d_type` of getdents; `None` when the filesystem did not say.
    pub fn from_dirent(t: Option<nix::dir::Type>) -> Option<FileKind> {
        use nix::dir::Type;
        Some(match t? {
            Type::Directory => FileKind::Directory,
            Type::Symlink => FileKind::Symlink,
            Type::Fifo => FileKind::Fifo,
            Type::CharacterDevice => FileKind::CharDevice,
            Type::BlockDevice => FileKind::BlockDevice,
            Type::Socket => FileKind::Socket,
            Type::File => FileKind::Regular,
        })
    }

    pub fn is_dir(self) -> bool {
        self == FileKind::Directory
    }
}

/// A point in time, as (seconds, nanoseconds) since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// What `stat` shows through the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    /// The attributes sent with a negative entry (ignored by the kernel).
    pub fn negative() -> Attr {
        Attr {
            ino: 0,
            size: 0,
            blocks: 0,
            atime: Time::default(),
            mtime: Time::default(),
            ctime: Time::default(),
            kind: FileKind::Regular,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 0,
        }
    }

    pub fn from_stat(st: &FileStat, ino: u64) -> Attr {
        Attr {
            ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: Time {
                sec: st.st_atime,
                nsec: st.st_atime_nsec as u32,
            },
            mtime: Time {
                sec: st.st_mtime,
                nsec: st.st_mtime_nsec as u32,
            },
            ctime: Time {
                sec: st.st_ctime,
                nsec: st.st_ctime_nsec as u32,
            },
            kind: FileKind::from_mode(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
        }
    }
}
