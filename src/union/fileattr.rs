//! Inode attribute flags (chattr: immutable, append-only, nodump, noatime…) in both
//! forms, `FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS` and `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR`.
//!
//! As in kernel overlayfs they belong to the upper inode: setting them copies the file or
//! directory up first, reading them reads the inode that serves it. The host filesystem
//! then enforces them on everything the union does to that inode (a write or truncate, a
//! chmod, chown or record update, an unlink, a rename, a link, a whiteout or copy-up
//! into an immutable directory all fail with EPERM there), so no union path goes around
//! them. Who may set which flag (the owner; CAP_LINUX_IMMUTABLE for `i` and `a`) the
//! kernel checks before it asks.

use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;

use crate::sys::{self, FileAttrIoctl};

use super::Union;
use super::copyup::CopyMode;
use super::error::{FsError, Result};
use super::layer::open_readable_dir;
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

    /// A readable fd of the inode that holds `node`'s attributes: its upper copy when it
    /// has one, else its topmost lower inode.
    fn attr_fd(&self, node: &Node) -> Result<OwnedFd> {
        if !node.is_dir() {
            return Ok(self.open_data(node, OFlag::O_RDONLY)?.0);
        }
        let dir = {
            let s = node.read();
            let d = s.dir().ok_or(FsError::ENOTDIR)?;
            d.upper()
                .cloned()
                .or_else(|| d.lowers().first().map(|l| l.fd.clone()))
                .ok_or(FsError::EIO)?
        };
        Ok(open_readable_dir(&dir)?)
    }
}
