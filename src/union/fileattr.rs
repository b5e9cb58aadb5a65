//! Inode attribute flags (chattr: immutable, append-only, nodump, noatime…) in both
//! forms, `FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS` and `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR`.
//!
//! As in kernel overlayfs they belong to the upper inode: setting them copies the file or
//! directory up first, reading them reads the inode its metadata comes from. The host filesystem
//! then enforces them on everything the union does to that inode (a write or truncate, a
//! chmod, chown or record update, an unlink, a rename, a link, a whiteout or copy-up
//! into an immutable directory all fail with EPERM there), so no union path goes around
//! them. Who may set which flag (the owner; CAP_LINUX_IMMUTABLE for `i` and `a`) the
//! kernel checks before it asks.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::sys::{self, FileAttrIoctl};

use super::Union;
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::inode::InodeRef;
use super::node::{Node, NodeId};

impl Union {
    /// Runs attribute ioctl `op` on node `id` with `arg`; returns its argument as left.
    pub fn fileattr(&self, id: NodeId, op: FileAttrIoctl, arg: &[u8]) -> Result<Vec<u8>> {
        let node = self.node(id)?;
        if op.sets() {
            if arg.len() < op.arg_size() {
                return Err(FsError::EINVAL);
            }
            // The data too: flags on a metacopy would sit on an inode reads never reach.
            self.copy_up(&node, CopyMode::Full)?;
        }
        let fd = self.attr_fd(&node)?;
        Ok(sys::fileattr_ioctl(fd.as_fd(), op, arg)?)
    }

    /// A readable fd (the ioctls refuse an `O_PATH` one) of the inode that holds
    /// `node`'s attributes: where its metadata is read from (`read_ref`).
    fn attr_fd(&self, node: &Node) -> Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        Ok(match self.read_ref(node)? {
            InodeRef::Fd(fd) => sys::reopen(fd.as_fd(), flags)?,
            InodeRef::Lower(dir, name) => openat(
                &*dir,
                name.as_os_str(),
                flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?,
        })
    }
}
