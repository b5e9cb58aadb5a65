//! The layer stack a union mount merges: an optional writable upper layer (with its work
//! directory) on top of read-only lower layers, each held as an `O_PATH` directory fd so
//! that every later access is an `*at` call relative to it.
//!
//! Inode numbers: when every layer lives on one filesystem (the layer store, and the usual
//! containers-storage setup) the real inode numbers are already unique across layers, so
//! they are reported as they are, which keeps them stable across remounts and across layer
//! rotation (an upper becoming a lower). Layers on other filesystems get their device's
//! index in the high bits, like overlayfs' `xino`.
//!
//! Work directory layout (ours, beside what the kernel would create):
//! `WORK/layerfs-tmp/` staging for atomic copy-up and whiteout swaps, emptied at mount;
//! `WORK/layerfs-index/<st_ino hex>` one name per hard-linked upper inode, so that every
//! name of an inode reaches the same copy (kernel overlayfs' `index` idea);
//! `WORK/layerfs-whiteout` the whiteout inode that new whiteouts are links of.
//!
//! An upper layer is written in the spellings a probe of the work directory finds
//! ([`Stack::open`]), or in spellings fixed for it ([`Stack::open_styled`]: a container's,
//! refused where they cannot be written, so that its `.wh.` names never change meaning).
//! A stack opened [`Stack::open_frozen`] reads a container's layers exactly as its mount
//! shows them (the upper layer, its index of hard links) while that mount may be live:
//! it writes nothing (no staging cleanup, no probe), and every change answers EROFS.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fstat};

use crate::whiteout::{Styles, XattrNs};

/// The work directory's staging subdirectory.
pub const WORK_TMP: &str = "layerfs-tmp";
/// The work directory's index of hard-linked upper inodes.
pub const WORK_INDEX: &str = "layerfs-index";

/// Number of low bits of a reported inode number that hold the real one when layers
/// span several filesystems.
const XINO_SHIFT: u32 = 48;

/// Where to find one layer, as given on a command line.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub path: PathBuf,
    /// The layer may spell whiteouts and opaque markers as `.wh.` files
    /// (OCI/fuse-overlayfs dialect): such names are then marks, not files. Layers whose
    /// writer used char-device whiteouts and xattrs set this to false: a `.wh.` name there
    /// is a plain file (and no probe per missed lookup is needed).
    pub wh_files: bool,
    /// Already opened (a store opens its layers beneath its verified root): `path` then
    /// only names the layer in messages and is never opened.
    pub opened: Option<Arc<OwnedFd>>,
    /// What names the layer to users asking which layer serves a file (the
    /// `user.layerfs.layer` xattr): a store layer's digest; its path when unset.
    pub label: Option<String>,
}

impl LayerSpec {
    /// A layer at `path`, opened (following the path as given) when the stack opens.
    pub fn new(path: impl Into<PathBuf>, wh_files: bool) -> LayerSpec {
        LayerSpec {
            path: path.into(),
            wh_files,
            opened: None,
            label: None,
        }
    }

    /// A layer already opened as `fd` (a directory fd), shown as `shown`.
    pub fn opened(fd: OwnedFd, shown: impl Into<PathBuf>, wh_files: bool) -> LayerSpec {
        LayerSpec {
            path: shown.into(),
            wh_files,
            opened: Some(Arc::new(fd)),
            label: None,
        }
    }

    /// The same layer, named `label` to users (see [`LayerSpec::label`]).
    pub fn labeled(mut self, label: impl Into<String>) -> LayerSpec {
        self.label = Some(label.into());
        self
    }

    fn open(&self) -> io::Result<OwnedFd> {
        match &self.opened {
            Some(fd) => fd.try_clone(),
            None => open_dir_path(&self.path),
        }
    }

    /// The layer's root directory, opened for reading (listings, `*at` calls).
    pub fn open_readable(&self) -> io::Result<OwnedFd> {
        open_readable_dir(self.open()?).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("{}: {e}", self.path.display()),
            )
        })
    }
}

/// A work directory: by path, or already opened (`path` then only names it).
#[derive(Debug, Clone)]
pub struct WorkSpec {
    pub path: PathBuf,
    pub opened: Option<Arc<OwnedFd>>,
}

impl WorkSpec {
    /// The work directory `fd` (a directory fd open for reading), shown as `shown`.
    pub fn opened(fd: OwnedFd, shown: impl Into<PathBuf>) -> WorkSpec {
        WorkSpec {
            path: shown.into(),
            opened: Some(Arc::new(fd)),
        }
    }

    /// The work directory, opened for reading.
    pub fn open(&self) -> io::Result<OwnedFd> {
        match &self.opened {
            Some(fd) => fd.try_clone(),
            None => open_work(&self.path),
        }
    }
}

impl From<&Path> for WorkSpec {
    fn from(p: &Path) -> WorkSpec {
        WorkSpec {
            path: p.to_path_buf(),
            opened: None,
        }
    }
}

impl LayerSpec {
    /// A layer directory written with `styles` (a store layer, a container's writable
    /// layer), already opened as `fd` and shown as `shown`: exactly the `.wh.` names those
    /// styles write are marks. The one rule for every reader of such a directory, so that
    /// they all see the same names.
    pub fn written_with(fd: OwnedFd, shown: impl Into<PathBuf>, styles: Styles) -> LayerSpec {
        LayerSpec::opened(fd, shown, styles.writes_wh_files())
    }
}

/// Where the spellings of a writable upper layer come from.
enum UpperStyles {
    /// Probed on the work directory (a layer of another tool's: `layerfs-overlay`).
    Probe,
    /// Fixed for that layer (a container's): checked to be writable here.
    Fixed(Styles),
    /// Fixed, and the stack only reads (see [`Stack::open_frozen`]).
    Frozen(Styles),
}

/// One directory of the stack.
#[derive(Debug)]
pub struct Layer {
    pub root: Arc<OwnedFd>,
    pub path: PathBuf,
    /// See [`LayerSpec::label`] (the path when the spec had none).
    pub label: String,
    pub dev: u64,
    pub(crate) dev_idx: u64,
    pub wh_files: bool,
}

/// The writable part: upper directory, work directory and how we spell things there.
#[derive(Debug)]
pub struct Upper {
    pub work: OwnedFd,
    pub tmp: Arc<OwnedFd>,
    pub index: Arc<OwnedFd>,
    pub styles: Styles,
    next_tmp: AtomicU64,
    /// Read, never written (see [`Stack::open_frozen`]).
    pub frozen: bool,
}

impl Upper {
    /// A fresh name for a staging entry in `tmp`. Never derived from a user's name, so
    /// 255-byte names stay creatable.
    pub fn tmp_name(&self) -> String {
        format!("#{:x}", self.next_tmp.fetch_add(1, Ordering::Relaxed))
    }

    pub fn ns(&self) -> XattrNs {
        self.styles.xattr_ns()
    }
}

/// The merged stack. `layers[0]` is the upper layer when there is one.
#[derive(Debug)]
pub struct Stack {
    pub layers: Vec<Layer>,
    pub upper: Option<Upper>,
    single_dev: bool,
}

fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", path.display()),
        )
    })
}

/// Opens (creating it if needed) directory `name` inside `parent` as a readable fd.
fn ensure_subdir(parent: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// A readable fd of the directory `dir` refers to (which may be an `O_PATH` fd): for
/// getdents, fsync, futimens, fchmod and the like.
pub(crate) fn open_readable_dir(dir: impl AsFd) -> nix::Result<OwnedFd> {
    openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// A readable fd of directory `dir` for listing it, without touching its atime when
/// `noatime` (falling back to a plain open where `O_NOATIME` is refused: not our inode).
pub(crate) fn open_listing_dir(dir: impl AsFd, noatime: bool) -> nix::Result<OwnedFd> {
    if noatime {
        match openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOATIME,
            Mode::empty(),
        ) {
            Err(nix::errno::Errno::EPERM) => {}
            r => return r,
        }
    }
    open_readable_dir(dir)
}

/// Removes everything inside directory `dir` (an fd opened for reading).
pub(crate) fn empty_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for e in crate::sys::dir_entries(open_readable_dir(dir)?)? {
        let n = e.name.as_os_str();
        match nix::unistd::unlinkat(dir, n, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(nix::errno::Errno::EISDIR) | Err(nix::errno::Errno::EPERM) => {
                let sub = openat(
                    dir,
                    n,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                empty_dir(sub.as_fd())?;
                nix::unistd::unlinkat(dir, n, nix::unistd::UnlinkatFlags::RemoveDir)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn open_work(work_path: &Path) -> io::Result<OwnedFd> {
    open(
        work_path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {e}", work_path.display()),
        )
    })
}

impl Stack {
    /// Opens the layers: `upper` (with `work`) on top of `lowers` (top first); the upper
    /// layer is written in the spellings a probe of the work directory finds.
    pub fn open(lowers: &[LayerSpec], upper: Option<(&LayerSpec, &WorkSpec)>) -> io::Result<Stack> {
        Stack::open_with(lowers, upper, UpperStyles::Probe)
    }

    /// Opens the layers with a writable `upper` whose spellings are fixed, `styles` (a
    /// container's: its layer must read the same to every later reader, so the mount
    /// never writes it in others); refused where this process cannot write them.
    pub fn open_styled(
        lowers: &[LayerSpec],
        upper: &LayerSpec,
        work: &WorkSpec,
        styles: Styles,
    ) -> io::Result<Stack> {
        Stack::open_with(lowers, Some((upper, work)), UpperStyles::Fixed(styles))
    }

    /// Opens a container's layers to read them as its mount shows them, without writing
    /// anything, also while the mount is live: `styles` are the spellings its mount
    /// writes (the store's), so no probe is needed. Every change answers EROFS.
    pub fn open_frozen(
        lowers: &[LayerSpec],
        upper: &LayerSpec,
        work: &WorkSpec,
        styles: Styles,
    ) -> io::Result<Stack> {
        Stack::open_with(lowers, Some((upper, work)), UpperStyles::Frozen(styles))
    }

    fn open_with(
        lowers: &[LayerSpec],
        upper: Option<(&LayerSpec, &WorkSpec)>,
        styles: UpperStyles,
    ) -> io::Result<Stack> {
        let mut specs: Vec<&LayerSpec> = Vec::new();
        if let Some((u, _)) = upper {
            specs.push(u);
        }
        specs.extend(lowers.iter());
        if lowers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no lower layer given",
            ));
        }
        let mut devs: Vec<u64> = Vec::new();
        let mut layers = Vec::with_capacity(specs.len());
        for spec in specs {
            let fd = spec.open()?;
            let st = fstat(&fd)?;
            let dev = st.st_dev;
            let dev_idx = match devs.iter().position(|d| *d == dev) {
                Some(i) => i as u64,
                None => {
                    devs.push(dev);
                    (devs.len() - 1) as u64
                }
            };
            layers.push(Layer {
                root: Arc::new(fd),
                path: spec.path.clone(),
                label: spec
                    .label
                    .clone()
                    .unwrap_or_else(|| spec.path.display().to_string()),
                dev,
                dev_idx,
                wh_files: spec.wh_files,
            });
        }
        let upper = match upper {
            None => None,
            Some((_, work_spec)) => {
                let work = work_spec.open()?;
                if fstat(&work)?.st_dev != layers[0].dev {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "upperdir and workdir must be on the same filesystem",
                    ));
                }
                if let UpperStyles::Frozen(styles) = styles {
                    // Nothing is staged here, and a work directory that never had an
                    // index (no mount yet) has no hard links: the work directory itself
                    // stands in, holding no entry named like an index key.
                    let index = match openat(
                        &work,
                        WORK_INDEX,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => fd,
                        Err(nix::errno::Errno::ENOENT) => work_spec.open()?,
                        Err(e) => return Err(e.into()),
                    };
                    // The upper layer's own marks are marks, whatever the spec said.
                    layers[0].wh_files |= styles.writes_wh_files();
                    let tmp = Arc::new(work_spec.open()?);
                    return Ok(Stack {
                        single_dev: devs.len() == 1,
                        layers,
                        upper: Some(Upper {
                            work,
                            tmp,
                            index: Arc::new(index),
                            styles,
                            next_tmp: AtomicU64::new(1),
                            frozen: true,
                        }),
                    });
                }
                let tmp = ensure_subdir(work.as_fd(), WORK_TMP)?;
                // Leftovers of an interrupted copy-up: never visible, safe to drop.
                empty_dir(tmp.as_fd())?;
                let index = ensure_subdir(work.as_fd(), WORK_INDEX)?;
                let styles = match styles {
                    UpperStyles::Fixed(s) => {
                        crate::whiteout::check_writable(tmp.as_fd(), s)?;
                        s
                    }
                    _ => crate::whiteout::probe_styles(tmp.as_fd()),
                };
                // We will write these `.wh.` names there ourselves.
                layers[0].wh_files |= styles.writes_wh_files();
                Some(Upper {
                    work,
                    tmp: Arc::new(tmp),
                    index: Arc::new(index),
                    styles,
                    next_tmp: AtomicU64::new(1),
                    frozen: false,
                })
            }
        };
        Ok(Stack {
            single_dev: devs.len() == 1,
            layers,
            upper,
        })
    }

    /// Index of the topmost lower layer.
    pub fn first_lower(&self) -> usize {
        usize::from(self.upper.is_some())
    }

    pub fn is_upper(&self, layer: usize) -> bool {
        self.upper.is_some() && layer == 0
    }

    /// The inode number reported for real inode `ino` of layer `layer`.
    pub fn map_ino(&self, layer: usize, ino: u64) -> u64 {
        let idx = if self.single_dev {
            0
        } else {
            self.layers.get(layer).map(|l| l.dev_idx).unwrap_or(0)
        };
        let mapped = if idx == 0 {
            ino
        } else {
            (idx << XINO_SHIFT) ^ ino
        };
        // 1 is the root's node id and 0 is no inode: keep both free.
        if mapped <= 1 {
            u64::MAX - mapped
        } else {
            mapped
        }
    }

    /// The root fd of layer `layer`.
    pub fn root(&self, layer: usize) -> &Arc<OwnedFd> {
        &self.layers[layer].root
    }

    pub fn wh_files(&self, layer: usize) -> bool {
        self.layers.get(layer).is_some_and(|l| l.wh_files)
    }

    /// True when any layer may hold `.wh.` files: such names are then reserved.
    pub fn any_wh_files(&self) -> bool {
        self.layers.iter().any(|l| l.wh_files)
    }
}
