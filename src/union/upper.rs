//! The one writer of the upper layer: every change an operation makes to the upper and
//! work directories goes through a [`Writer`], which exists only when the mount has an
//! upper layer (so "read-only" is answered once, by [`Union::writer`]). A copy-up builds
//! its copy in the writer's staging directory (content and metadata are the copy-up's
//! business, in `copyup.rs`) and puts it in place with [`Writer::place_staged`]; hard
//! links go through the index ([`Writer::make_index_entry`]).
//!
//! It owns the spellings and the staging: fresh staging names in `WORK/layerfs-tmp`
//! (never derived from a user's name, so 255-byte names stay creatable), whiteouts (links
//! of one shared whiteout inode, kernel overlayfs' trick: a link costs far less than a
//! mknod), the state of a name about to be taken ([`Slot`]), moving an entry aside,
//! renaming with a whiteout left behind, placing and dropping what was staged.

use std::ffi::OsStr;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::whiteout::{self, WhiteoutStyle};

use super::Union;
use super::error::{Context, FsError, Result};
use super::layer::{Upper, empty_dir};
use super::lookup::stat_at;

/// The shared whiteout inode, in the work directory.
const SHARED_WHITEOUT: &str = "layerfs-whiteout";

/// What occupies a name in the upper directory, for an entry about to land there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Empty,
    /// A char 0/0 whiteout.
    Whiteout,
    /// A `.wh.NAME` file beside an empty slot.
    WhFile,
}

/// Write access to the upper layer.
pub(crate) struct Writer<'a> {
    pub u: &'a Union,
    pub up: &'a Upper,
}

impl Deref for Writer<'_> {
    type Target = Union;

    fn deref(&self) -> &Union {
        self.u
    }
}

impl Union {
    /// The writer of the upper layer; EROFS on a read-only mount or a frozen stack.
    pub(crate) fn writer(&self) -> Result<Writer<'_>> {
        match &self.stack.upper {
            Some(up) if !up.frozen => Ok(Writer { u: self, up }),
            _ => Err(FsError::EROFS),
        }
    }
}

impl Writer<'_> {
    /// A fresh name in the staging directory.
    pub fn tmp_name(&self) -> String {
        self.up.tmp_name()
    }

    /// What is at `name` in upper directory `pfd`: EEXIST when a real entry is.
    pub fn slot(&self, pfd: &OwnedFd, name: &OsStr) -> Result<Slot> {
        match stat_at(pfd, name)? {
            Some(st) if whiteout::is_whiteout_device(&st) => Ok(Slot::Whiteout),
            Some(_) => Err(FsError::EEXIST),
            None => {
                if self.stack.wh_files(0)
                    && stat_at(pfd, &whiteout::whiteout_file_name(name))?.is_some()
                {
                    Ok(Slot::WhFile)
                } else {
                    Ok(Slot::Empty)
                }
            }
        }
    }

    /// Removes the `.wh.NAME` file of `name` in `dir`, if this layer spells whiteouts so.
    pub fn clear_wh_file(&self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        if !self.stack.wh_files(0) {
            return Ok(());
        }
        let wh = whiteout::whiteout_file_name(name);
        match unlinkat(dir, wh.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            // (a 255-byte name has no `.wh.` spelling: there is none to remove)
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::ENAMETOOLONG) => Ok(()),
            Err(e) => Err(e).ctx(|| format!("remove whiteout file of {name:?}")),
        }
    }

    /// Makes `name` in upper directory `dir` a whiteout.
    pub fn put_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        if self.up.styles.whiteout == WhiteoutStyle::CharDevice {
            for _ in 0..2 {
                match nix::unistd::linkat(
                    &self.up.work,
                    SHARED_WHITEOUT,
                    dir,
                    name,
                    AtFlags::empty(),
                ) {
                    Ok(()) => return Ok(()),
                    // None yet, or too many links on it.
                    Err(Errno::ENOENT) | Err(Errno::EMLINK) => self.new_shared_whiteout()?,
                    Err(e) => return Err(e).ctx(|| format!("whiteout {name:?}")),
                }
            }
        }
        whiteout::create_whiteout(dir.as_fd(), name, self.up.styles.whiteout)
            .ctx(|| format!("whiteout {name:?}"))
    }

    /// Replaces the shared whiteout inode by a fresh one.
    fn new_shared_whiteout(&self) -> Result<()> {
        let t = self.tmp_name();
        whiteout::create_whiteout(
            self.up.tmp.as_fd(),
            OsStr::new(&t),
            WhiteoutStyle::CharDevice,
        )?;
        renameat(&*self.up.tmp, t.as_str(), &self.up.work, SHARED_WHITEOUT)?;
        Ok(())
    }

    /// Swaps upper entry `name` of `dir` with a whiteout in one step; returns the staged
    /// name the entry now has.
    pub fn swap_with_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Result<String> {
        let t = self.tmp_name();
        self.put_whiteout(&self.up.tmp, OsStr::new(&t))?;
        match renameat2(
            dir,
            name,
            &*self.up.tmp,
            t.as_str(),
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => Ok(t),
            Err(_) => {
                // No RENAME_EXCHANGE here: rename with a whiteout left behind instead.
                let _ = unlinkat(&*self.up.tmp, t.as_str(), UnlinkatFlags::NoRemoveDir);
                self.move_aside(dir, name, true)
            }
        }
    }

    /// Moves upper entry `name` of `pfd` into the staging directory, leaving a whiteout
    /// in its place when `whiteout` is set; returns the staged name.
    pub fn move_aside(&self, pfd: &OwnedFd, name: &OsStr, whiteout: bool) -> Result<String> {
        let t = self.tmp_name();
        self.rename_leaving(pfd, name, &self.up.tmp, OsStr::new(&t), whiteout)?;
        Ok(t)
    }

    /// Renames within the upper layer, leaving a whiteout at the source if asked: in one
    /// step with RENAME_WHITEOUT, else (no CAP_MKNOD) rename then whiteout.
    pub fn rename_leaving(
        &self,
        from_dir: &OwnedFd,
        from: &OsStr,
        to_dir: &OwnedFd,
        to: &OsStr,
        whiteout: bool,
    ) -> Result<()> {
        if !whiteout {
            renameat(from_dir, from, to_dir, to)?;
            return Ok(());
        }
        if self.up.styles.whiteout == WhiteoutStyle::CharDevice {
            match renameat2(from_dir, from, to_dir, to, RenameFlags::RENAME_WHITEOUT) {
                Ok(()) => return Ok(()),
                Err(Errno::EINVAL) | Err(Errno::EPERM) | Err(Errno::EOPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
        }
        renameat(from_dir, from, to_dir, to)?;
        whiteout::create_whiteout(from_dir.as_fd(), from, self.up.styles.whiteout)
            .ctx(|| format!("whiteout {from:?}"))
    }

    /// Puts staged entry `staged` in place as `name` in upper directory `pfd`, never over
    /// an existing entry (the atomic step of a copy-up: until here the copy is invisible).
    pub fn place_staged(&self, staged: &OsStr, pfd: &OwnedFd, name: &OsStr) -> nix::Result<()> {
        renameat2(
            &*self.up.tmp,
            staged,
            pfd,
            name,
            RenameFlags::RENAME_NOREPLACE,
        )
    }

    /// Removes a staged entry (a file, or a directory that only holds whiteouts).
    pub fn drop_staged(&self, name: &str) -> Result<()> {
        match unlinkat(&*self.up.tmp, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(()),
            Err(Errno::EISDIR) => {
                let fd = openat(
                    &*self.up.tmp,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                empty_dir(fd.as_fd())?;
                unlinkat(&*self.up.tmp, name, UnlinkatFlags::RemoveDir)?;
                Ok(())
            }
            Err(e) => Err(e).ctx(|| format!("drop staged {name}")),
        }
    }

    /// Best-effort removal of a staged entry after a failure (the failure is what counts).
    pub fn discard_staged(&self, name: &OsStr, dir: bool) {
        let flag = if dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        let _ = unlinkat(&*self.up.tmp, name, flag);
    }
}
