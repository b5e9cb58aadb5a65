//! The FUSE adapter: decodes each request, calls the union core, replies once.
//!
//! No logic lives here beyond translation (attributes, flags, errnos) and the mount
//! configuration; every operation answers an errno and nothing on the request path can
//! panic (errors from the core are `FsError`s, logged at debug level).

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};
use log::{debug, trace};

use crate::union::{Attr, Caller, Entry, FileKind, FsError, SetAttr, Time, TimeSet, Union};

/// Who besides the mounting user may enter a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Only processes whose uids and gids are all the mounting user's (the kernel checks
    /// it before any request reaches us). For a mount made by root: root processes, such
    /// as a container that runc runs as root.
    #[default]
    Owner,
    /// The mounting user and root (`allow_root`).
    OwnerAndRoot,
    /// Every local user (`allow_other`); permissions are then checked by the kernel
    /// (`default_permissions`) from the owners and modes we report.
    All,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Shown as the source in /proc/mounts.
    pub fsname: String,
    pub read_only: bool,
    /// Who may enter the mount.
    pub access: Access,
    /// Honour device nodes (`dev`): whoever may enter the mount can open the devices
    /// the layers hold, with their modes. Off: `nodev`, opening one fails with EACCES.
    pub dev: bool,
    /// Honour setuid/setgid bits (`suid`): whoever may enter the mount can run the
    /// layers' setuid-root binaries as root. Off: `nosuid`.
    pub suid: bool,
    pub threads: usize,
}

impl MountConfig {
    pub fn fuser_config(&self) -> Config {
        let mut c = Config::default();
        c.mount_options = vec![
            MountOption::FSName(self.fsname.clone()),
            MountOption::Subtype("layerfs".into()),
            MountOption::DefaultPermissions,
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
            // Always said explicitly: fuser's defaults differ between its mount paths.
            if self.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
            if self.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
        ];
        c.acl = match self.access {
            Access::Owner => SessionACL::Owner,
            Access::OwnerAndRoot => SessionACL::RootAndOwner,
            Access::All => SessionACL::All,
        };
        c.n_threads = Some(self.threads.max(1));
        c.clone_fd = self.threads > 1;
        c
    }
}

/// The union as a `fuser::Filesystem`.
#[derive(Debug)]
pub struct FuseFs {
    union: Arc<Union>,
}

impl FuseFs {
    pub fn new(union: Arc<Union>) -> FuseFs {
        FuseFs { union }
    }

    /// Mounts at `mountpoint`; the returned session is live (INIT done) and waits for
    /// `run()`.
    pub fn mount(self, mountpoint: &Path, cfg: &MountConfig) -> io::Result<fuser::Session<FuseFs>> {
        fuser::Session::new(self, mountpoint, &cfg.fuser_config())
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn system_time(t: Time) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs())
            + Duration::from_nanos(u64::from(t.nsec))
    }
}

fn time_of(t: SystemTime) -> Time {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Time {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Time { sec, nsec }
        }
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The attributes as the kernel gets them: the node id is the inode number we report.
fn entry_attr(e: &Entry) -> FileAttr {
    let mut a = file_attr(&e.attr);
    a.ino = INodeNo(e.id);
    a
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(time_of(t)),
    }
}

fn reply_entry(op: &str, r: Result<Entry, FsError>, reply: ReplyEntry) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &entry_attr(&e), Generation(e.generation)),
        Err(e) => {
            debug!("{op}: {e:?}");
            reply.error(errno(e))
        }
    }
}

fn reply_empty(op: &str, r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => {
            debug!("{op}: {e:?}");
            reply.error(errno(e))
        }
    }
}

/// Answers a getxattr/listxattr with the size protocol: size 0 asks for the length.
fn reply_xattr(op: &str, r: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => {
            debug!("{op}: {e:?}");
            reply.error(errno(e))
        }
    }
}

impl FuseFs {
    /// Answers with a node's attributes (its node id is the inode number the kernel knows).
    fn reply_attr(&self, op: &str, ino: INodeNo, r: Result<Attr, FsError>, reply: ReplyAttr) {
        match r {
            Ok(a) => {
                let mut fa = file_attr(&a);
                fa.ino = ino;
                reply.attr(&self.union.ttl_of(ino.0), &fa)
            }
            Err(e) => {
                debug!("{op}({}): {e:?}", ino.0);
                reply.error(errno(e))
            }
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // PARALLEL_DIROPS: lookups and readdirs of one directory may run at once; the core
        // is made for it. ATOMIC_O_TRUNC: an O_TRUNC open copies up no data at all.
        // POSIX_ACL: the kernel enforces ACLs and caches them (also their absence), which
        // saves `ls -l` one getxattr round trip per file. CACHE_SYMLINKS: a symlink's target
        // never changes in place. READDIRPLUS(_AUTO): a listing followed by stats (ls -l,
        // du, tar) gets the entries' attributes with it instead of a LOOKUP each.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        trace!("lookup({}, {name:?})", parent.0);
        match self.union.lookup(parent.0, name) {
            Ok(e) => reply.entry(&e.ttl, &entry_attr(&e), Generation(e.generation)),
            Err(e) if e == FsError::ENOENT => {
                // A negative entry (node id 0) the kernel may cache: names only change
                // through this mount, and the kernel drops it itself when one is created.
                let ttl = self.union.ttl_of(parent.0);
                let mut attr = file_attr(&crate::union::Attr::negative());
                attr.ino = INodeNo(0);
                reply.entry(&ttl, &attr, Generation(0))
            }
            Err(e) => {
                debug!("lookup: {e:?}");
                reply.error(errno(e))
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.union.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(
            "getattr",
            ino,
            self.union.getattr(ino.0, fh.map(|f| f.0)),
            reply,
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ch = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            fh: fh.map(|f| f.0),
        };
        self.reply_attr("setattr", ino, self.union.setattr(ino.0, &ch), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.union.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .union
            .mknod(parent.0, name, mode, u64::from(rdev), &caller(req, umask));
        reply_entry("mknod", r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            "mkdir",
            self.union.mkdir(parent.0, name, mode, &caller(req, umask)),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty("unlink", self.union.unlink(parent.0, name), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty("rmdir", self.union.rmdir(parent.0, name), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self
            .union
            .symlink(parent.0, link_name, target.as_os_str(), &caller(req, 0));
        reply_entry("symlink", r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self
            .union
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        reply_empty("rename", r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry("link", self.union.link(ino.0, newparent.0, newname), reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.union.open(ino.0, flags.0).and_then(|o| {
            // Without CAP_FSETID (we can only tell root), truncating drops setuid/setgid.
            if flags.0 & libc::O_TRUNC != 0
                && req.uid() != 0
                && let Err(e) = self.union.kill_privs_after_trunc(ino.0)
            {
                self.union.release(o.fh);
                return Err(e);
            }
            Ok(o)
        });
        match opened {
            Ok(o) => {
                // FLUSH does nothing here (data goes straight to the layer): spare the round trip.
                let mut f = FopenFlags::FOPEN_NOFLUSH;
                if o.keep_cache {
                    f |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(o.fh), f)
            }
            Err(e) => {
                debug!("open({}): {e:?}", ino.0);
                reply.error(errno(e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.union.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.union.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.union.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty("fsync", self.union.fsync(fh.0, datasync), reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.union.opendir(ino.0) {
            // The kernel may cache listings: every change goes through this mount, and the
            // kernel drops a directory's cache when it changes it.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.union.readdir(fh.0, offset, |next, e| {
            reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self
            .union
            .readdirplus(fh.0, offset, |next, e, entry| match entry {
                Some(en) => reply.add(
                    INodeNo(en.id),
                    next,
                    &e.name,
                    &en.ttl,
                    &entry_attr(en),
                    Generation(en.generation),
                ),
                // "." and "..": the kernel takes only the name and inode number.
                None => {
                    let mut a = file_attr(&Attr::negative());
                    a.ino = INodeNo(e.ino);
                    a.kind = FileType::Directory;
                    reply.add(
                        INodeNo(e.ino),
                        next,
                        &e.name,
                        &Duration::ZERO,
                        &a,
                        Generation(0),
                    )
                }
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => {
                debug!("readdirplus({}): {e:?}", ino.0);
                reply.error(errno(e))
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.union.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty("fsyncdir", self.union.fsyncdir(ino.0), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.union.statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            "setxattr",
            self.union.setxattr(ino.0, name, value, flags),
            reply,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(
            "getxattr",
            self.union.getxattr(ino.0, name, size),
            size,
            reply,
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr("listxattr", self.union.listxattr(ino.0), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty("removexattr", self.union.removexattr(ino.0, name), reply);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // isatty() probes (TCGETS) and lsattr land here: a plain file answers ENOTTY.
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel has already checked.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .union
            .create(parent.0, name, mode, flags, &caller(req, umask))
        {
            Ok((e, o)) => reply.created(
                &e.ttl,
                &entry_attr(&e),
                Generation(e.generation),
                FileHandle(o.fh),
                FopenFlags::FOPEN_NOFLUSH,
            ),
            Err(e) => {
                debug!("create: {e:?}");
                reply.error(errno(e))
            }
        }
    }
}
