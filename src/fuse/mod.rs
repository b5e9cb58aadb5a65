//! The FUSE adapter: decodes each request, calls the union core, replies once.
//!
//! No logic lives here beyond translation (attributes, flags, errnos) and the mount
//! configuration ([`config`]); every operation answers an errno and nothing on the request
//! path can panic. Errors of the core become errnos in one place ([`convert::fail`]),
//! which also logs them once.

mod config;
mod convert;
mod ids;

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::trace;

pub use config::{Access, MountConfig};
use convert::{caller, caller_groups, entry_attr, fail, file_attr, file_type, time_set};
pub use ids::{IdMap, Ids};

use crate::container::control::WriteGate;
use crate::sys::FileAttrIoctl;
use crate::union::{Attr, Caller, Entry, Fh, FsError, NodeId, OpenReply, SetAttr, Union};

/// The union as a `fuser::Filesystem`.
#[derive(Debug)]
pub struct FuseFs {
    union: Arc<Union>,
    /// Every request that changes the mount passes it (`crate::container::control` closes it for a
    /// snapshot).
    gate: Arc<WriteGate>,
    /// How owners show (the mount configuration's).
    ids: IdMap,
}

impl FuseFs {
    pub fn new(union: Arc<Union>) -> FuseFs {
        FuseFs::with_gate(union, Arc::default())
    }

    /// A mount whose writes wait while `gate` is frozen.
    pub fn with_gate(union: Arc<Union>, gate: Arc<WriteGate>) -> FuseFs {
        FuseFs {
            union,
            gate,
            ids: IdMap::default(),
        }
    }

    /// Mounts at `mountpoint`; the returned session is live (INIT done) and waits for
    /// `run()`.
    pub fn mount(
        mut self,
        mountpoint: &Path,
        cfg: &MountConfig,
    ) -> io::Result<fuser::Session<FuseFs>> {
        self.ids = cfg.ids.clone();
        fuser::Session::new(self, mountpoint, &cfg.fuser_config())
    }

    /// Attributes as the kernel gets them: owners as the mapping shows them.
    fn shown(&self, mut fa: FileAttr) -> FileAttr {
        if !self.ids.is_identity() {
            fa.uid = self.ids.uid.show(fa.uid);
            fa.gid = self.ids.gid.show(fa.gid);
        }
        fa
    }

    fn entry_attr(&self, e: &Entry) -> FileAttr {
        self.shown(entry_attr(e))
    }

    /// The caller, in the union's ids (EOVERFLOW when the mapping does not reach it, as
    /// on an idmapped mount).
    fn caller(&self, req: &Request, umask: u32) -> Result<Caller, FsError> {
        let mut c = caller(req, umask);
        c.uid = self.ids.uid.store(c.uid).ok_or(FsError::EOVERFLOW)?;
        c.gid = self.ids.gid.store(c.gid).ok_or(FsError::EOVERFLOW)?;
        Ok(c)
    }

    /// Whether the caller of `req` is in group `gid` (the union's ids): its own group or
    /// one of its supplementary groups, which only /proc says.
    fn in_group(&self, req: &Request, gid: u32) -> bool {
        let stored = |g: u32| self.ids.gid.store(g);
        stored(req.gid()) == Some(gid)
            || caller_groups(req.pid())
                .into_iter()
                .any(|g| stored(g) == Some(gid))
    }

    fn reply_entry(&self, op: &str, ino: INodeNo, r: Result<Entry, FsError>, reply: ReplyEntry) {
        match r {
            Ok(e) => reply.entry(&e.ttl, &self.entry_attr(&e), Generation(e.generation)),
            Err(e) => reply.error(fail(op, ino.0, e)),
        }
    }

    /// Answers with a node's attributes (its node id is the inode number the kernel knows).
    fn reply_attr(&self, op: &str, ino: INodeNo, r: Result<Attr, FsError>, reply: ReplyAttr) {
        match r {
            Ok(a) => {
                let mut fa = self.shown(file_attr(&a));
                fa.ino = ino;
                reply.attr(&self.union.ttl_of(NodeId(ino.0)), &fa)
            }
            Err(e) => reply.error(fail(op, ino.0, e)),
        }
    }
}

fn id(ino: INodeNo) -> NodeId {
    NodeId(ino.0)
}

fn fh(f: FileHandle) -> Fh {
    Fh(f.0)
}

/// The open flags the kernel gets for an open file. FLUSH does nothing here (data goes
/// straight to the layer): NOFLUSH spares its round trip.
fn open_flags(o: &OpenReply) -> FopenFlags {
    let mut f = FopenFlags::FOPEN_NOFLUSH;
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    f
}

fn reply_empty(op: &str, ino: INodeNo, r: Result<(), FsError>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(fail(op, ino.0, e)),
    }
}

/// Answers a getxattr/listxattr with the size protocol: size 0 asks for the length.
fn reply_xattr(op: &str, ino: INodeNo, r: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(fail(op, ino.0, e)),
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
        // DONT_MASK: the kernel passes the caller's mode and umask apart, so that the umask
        // is not applied under a default ACL (POSIX.1e; the core applies it otherwise).
        // EXPORT_SUPPORT: file handles (open_by_handle_at, NFS export) are decoded with
        // lookups of "." and "..", which the core answers for forgotten nodes too.
        // DIRECT_IO_ALLOW_MMAP (Linux 6.6): a file opened O_DIRECT (direct_io) can still be
        // mapped, as on any local filesystem; read and write keep bypassing the cache.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_EXPORT_SUPPORT
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_write(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        trace!("lookup({}, {name:?})", parent.0);
        match self.union.lookup(id(parent), name) {
            Ok(e) => reply.entry(&e.ttl, &self.entry_attr(&e), Generation(e.generation)),
            Err(e) if e == FsError::ENOENT => {
                // A negative entry (node id 0) the kernel may cache: names only change
                // through this mount, and the kernel drops it itself when one is created.
                let ttl = self.union.ttl_of(id(parent));
                let mut attr = file_attr(&Attr::negative());
                attr.ino = INodeNo(0);
                reply.entry(&ttl, &attr, Generation(0))
            }
            Err(e) => reply.error(fail("lookup", parent.0, e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.union.forget(id(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, f: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.union.getattr(id(ino), f.map(fh));
        self.reply_attr("getattr", ino, r, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        f: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _w = self.gate.enter();
        // Nothing to set: the kernel asks for privileges to go (see `Union::kill_privs`).
        if (mode, uid, gid, size) == (None, None, None, None)
            && atime.is_none()
            && mtime.is_none()
            && req.uid() != 0
        {
            let r = self.union.kill_privs(id(ino), &|g| self.in_group(req, g));
            return self.reply_attr("setattr", ino, r, reply);
        }
        let (Some(uid), Some(gid)) = (
            uid.map_or(Some(None), |u| self.ids.uid.chown(u)),
            gid.map_or(Some(None), |g| self.ids.gid.chown(g)),
        ) else {
            return reply.error(fail("setattr", ino.0, FsError::EINVAL));
        };
        // A mode a non-root caller outside the file's group sets keeps no setgid (the
        // kernel's chmod rule): what carries it here is the kernel killing setuid on a
        // write or fallocate, computed from the old mode, where file_remove_privs would
        // have taken setgid too.
        let mut mode = mode;
        if let Some(m) = mode
            && req.uid() != 0
            && m & libc::S_ISGID != 0
            && m & libc::S_IXGRP == 0
        {
            let file_gid = match gid {
                Some(g) => Ok(g),
                None => self.union.getattr(id(ino), None).map(|a| a.gid),
            };
            if file_gid.is_ok_and(|g| !self.in_group(req, g)) {
                mode = Some(m & !libc::S_ISGID);
            }
        }
        let ch = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            fh: f.map(fh),
        };
        self.reply_attr("setattr", ino, self.union.setattr(id(ino), &ch), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.union.readlink(id(ino)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fail("readlink", ino.0, e)),
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
        let _w = self.gate.enter();
        let r = self.caller(req, umask).and_then(|c| {
            self.union
                .mknod(id(parent), name, mode, u64::from(rdev), &c)
        });
        self.reply_entry("mknod", parent, r, reply);
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
        let _w = self.gate.enter();
        let r = self
            .caller(req, umask)
            .and_then(|c| self.union.mkdir(id(parent), name, mode, &c));
        self.reply_entry("mkdir", parent, r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _w = self.gate.enter();
        let r = self.union.unlink(id(parent), name);
        reply_empty("unlink", parent, r, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _w = self.gate.enter();
        let r = self.union.rmdir(id(parent), name);
        reply_empty("rmdir", parent, r, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _w = self.gate.enter();
        let r = self.caller(req, 0).and_then(|c| {
            self.union
                .symlink(id(parent), link_name, target.as_os_str(), &c)
        });
        self.reply_entry("symlink", parent, r, reply);
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
        let _w = self.gate.enter();
        let r = self
            .union
            .rename(id(parent), name, id(newparent), newname, flags.bits());
        reply_empty("rename", parent, r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _w = self.gate.enter();
        let r = self.union.link(id(ino), id(newparent), newname);
        self.reply_entry("link", ino, r, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Opening for writing (or truncating) copies up.
        let _w = (flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0)
            .then(|| self.gate.enter());
        let opened = self.union.open(id(ino), flags.0).and_then(|o| {
            // Without CAP_FSETID (we can only tell root), truncating drops setuid/setgid.
            if flags.0 & libc::O_TRUNC != 0
                && req.uid() != 0
                && let Err(e) = self.union.kill_privs(id(ino), &|g| self.in_group(req, g))
            {
                self.union.release(o.fh);
                return Err(e);
            }
            Ok(o)
        });
        match opened {
            Ok(o) => {
                // FLUSH does nothing here (data goes straight to the layer): spare the round trip.
                reply.opened(FileHandle(o.fh.0), open_flags(&o))
            }
            Err(e) => reply.error(fail("open", ino.0, e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        f: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.union.read(fh(f), offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(fail("read", ino.0, e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        f: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _w = self.gate.enter();
        match self.union.write(fh(f), offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(fail("write", ino.0, e)),
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
        f: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.union.release(fh(f));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        f: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.union.fsync(fh(f), datasync);
        reply_empty("fsync", ino, r, reply);
    }

    /// ENOSYS tells the kernel to open directories without asking from now on (and to
    /// send no releasedir): two round trips fewer per directory a walk enters. It then
    /// caches listings (`FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE`, its default for this case),
    /// which is right: every change goes through this mount, and the kernel drops a
    /// directory's cache when it changes it. Listings need no open state (`readdir`).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _f: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.union.readdir(id(ino), offset, |next, e| {
            reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("readdir", ino.0, e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _f: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self
            .union
            .readdirplus(id(ino), offset, |next, e, entry| match entry {
                Some(en) => reply.add(
                    INodeNo(en.id.0),
                    next,
                    &e.name,
                    &en.ttl,
                    &self.entry_attr(en),
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
            Err(e) => reply.error(fail("readdirplus", ino.0, e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty("fsyncdir", ino, self.union.fsyncdir(id(ino)), reply);
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
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
            Err(e) => reply.error(fail("statfs", ino.0, e)),
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
        let _w = self.gate.enter();
        let r = self.union.setxattr(id(ino), name, value, flags);
        reply_empty("setxattr", ino, r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.union.getxattr(id(ino), name, size);
        reply_xattr("getxattr", ino, r, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.union.listxattr(id(ino));
        reply_xattr("listxattr", ino, r, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _w = self.gate.enter();
        let r = self.union.removexattr(id(ino), name);
        reply_empty("removexattr", ino, r, reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        f: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _w = self.gate.enter();
        let r = self.union.fallocate(fh(f), offset, length, mode);
        reply_empty("fallocate", ino, r, reply);
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        f: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.union.lseek(fh(f), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(fail("lseek", ino.0, e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // chattr/lsattr (the kernel sends only these four, with the argument's size);
        // anything else (isatty()'s TCGETS) is what a plain file answers: ENOTTY.
        let Some(op) = FileAttrIoctl::from_cmd(cmd) else {
            reply.error(Errno::from_i32(libc::ENOTTY));
            return;
        };
        let _w = op.sets().then(|| self.gate.enter());
        match self.union.fileattr(id(ino), op, in_data) {
            // A set's reply carries no argument back: the kernel expects none.
            Ok(_) if op.sets() => reply.ioctl(0, &[]),
            Ok(out) => reply.ioctl(0, &out[..out.len().min(out_size as usize)]),
            Err(e) => reply.error(fail("ioctl", ino.0, e)),
        }
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
        let _w = self.gate.enter();
        match self
            .caller(req, umask)
            .and_then(|c| self.union.create(id(parent), name, mode, flags, &c))
        {
            Ok((e, o)) => reply.created(
                &e.ttl,
                &self.entry_attr(&e),
                Generation(e.generation),
                FileHandle(o.fh.0),
                open_flags(&o),
            ),
            Err(e) => reply.error(fail("create", parent.0, e)),
        }
    }
}
