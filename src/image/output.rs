//! Where `save` and `export` write: the one place that decides what `-o OUT` may be,
//! and puts the output there so that nothing half-written is ever visible at OUT.
//!
//! What is at OUT decides (its last component is looked at and never followed; the
//! directories on the way are the user's choice and are followed):
//! - nothing: the output is created;
//! - a regular file: replaced, as `docker save -o` replaces one (a new file renamed over
//!   it: its other hard links and open readers keep the old bytes; its mode and owner
//!   are not kept);
//! - a directory: refused for an archive; a layout (`save --format oci`) replaces an
//!   empty one, never a non-empty one;
//! - a symlink: refused. Following it (as Go's `os.Create` or `tar -f` would) would let
//!   whoever can write OUT's directory (a `/tmp`) aim a root `save` at any file;
//!   replacing it (Docker's rename does) would swap `-o /dev/stdout` for a file. The path
//!   it points to can be given instead;
//! - a character or block device, a FIFO, a socket: refused and left as it is (Docker
//!   refuses a device too). Renaming over one would replace it (`-o /dev/null` as root:
//!   the host's), and an archive cannot be written into one (`save` goes back to fill in
//!   each layer's size). `export` without `-o` writes to stdout, for pipes and devices.
//!
//! What is written is private to its writer, whatever the umask: an archive is 0600 (as
//! Docker writes it), a layout's directories 0700 and its files 0600. An image may hold
//! files only their owner may read, and its layers carry them.
//!
//! The rule holds for what is actually replaced, not only for what was there when the
//! command started: OUT's directory is opened once and everything happens relative to
//! it. An archive is put in place with `RENAME_NOREPLACE` where nothing is, and over a
//! regular file with `RENAME_EXCHANGE`, after which what it displaced is checked to be a
//! regular file before it is removed (anything else is swapped back and refused); on a
//! filesystem without those flags, a plain rename right after the check. A layout
//! directory is renamed with plain rename(2), which replaces an empty directory and
//! nothing else. [`check`] runs the same rule before any work, for an early message.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, renameat, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{Error, Result};
use crate::regular::kind_name;

/// Mode of everything written (see the module docs).
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a command writes at OUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `save` of an archive (docker-archive, oci-archive).
    SaveArchive,
    /// `save --format oci`: a layout directory.
    SaveLayout,
    /// `export -o`: a tar.
    Export,
}

impl Target {
    /// The rule, for refusals.
    fn rule(self) -> &'static str {
        match self {
            Target::SaveLayout => "an OCI layout is written to a new or empty directory",
            _ => "an archive is written to a new file or over a regular file",
        }
    }

    /// What to do instead when OUT is a pipe or a device.
    fn stream_hint(self) -> &'static str {
        match self {
            Target::Export => "; for a pipe or a device, leave out -o and redirect stdout",
            Target::SaveArchive => "; `save` cannot write into a pipe or a device: write a file",
            Target::SaveLayout => "",
        }
    }
}

/// Checks, before any work, that the output of `target` may be written at `out`.
pub fn check(out: &Path, target: Target) -> Result<()> {
    let place = Place::open(out)?;
    place.judge(target)
}

/// OUT's directory (opened, following the user's path) and OUT's last component.
struct Place {
    out: PathBuf,
    dir: OwnedFd,
    name: OsString,
}

impl Place {
    fn open(out: &Path) -> Result<Place> {
        let name = out.file_name().ok_or_else(|| Error::Invalid {
            file: out.display().to_string(),
            detail: "names no file (give a file name)".into(),
        })?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(parent, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOTDIR => Error::Invalid {
                file: parent.display().to_string(),
                detail: "not a directory".into(),
            },
            e => Error::io(parent, e.into()),
        })?;
        Ok(Place {
            out: out.to_path_buf(),
            dir,
            name: name.to_os_string(),
        })
    }

    fn d(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    fn refused(&self, detail: String) -> Error {
        Error::Invalid {
            file: self.out.display().to_string(),
            detail,
        }
    }

    fn io(&self, e: Errno) -> Error {
        Error::io(&self.out, e.into())
    }

    /// What is at `name` in the directory now (`None`: nothing), not following it.
    fn lstat(&self, name: &OsStr) -> Result<Option<FileStat>> {
        match fstatat(self.d(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The refusal of `st` at OUT, or `None` when `target` may replace it.
    fn refusal(&self, st: &FileStat, target: Target) -> Option<Error> {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let rule = target.rule();
        let detail = match (kind, target) {
            (SFlag::S_IFREG, Target::SaveArchive | Target::Export) => return None,
            (SFlag::S_IFDIR, Target::SaveLayout) => match self.is_empty_dir() {
                Ok(true) => return None,
                Ok(false) => format!("exists and is not empty: refused ({rule})"),
                Err(e) => return Some(e),
            },
            (SFlag::S_IFDIR, _) => {
                let alt = match target {
                    Target::SaveArchive => "; --format oci writes a layout directory",
                    _ => "",
                };
                format!("is a directory: refused ({rule}{alt})")
            }
            (SFlag::S_IFLNK, _) => "is a symlink: refused (-o neither follows nor replaces \
                 one; give the path it points to, or remove it)"
                .to_string(),
            (SFlag::S_IFREG, Target::SaveLayout) => {
                format!("exists and is a regular file: refused ({rule})")
            }
            _ => format!(
                "is {}: refused, left as it is ({rule}{})",
                kind_name(st.st_mode),
                target.stream_hint()
            ),
        };
        Some(self.refused(detail))
    }

    fn judge(&self, target: Target) -> Result<()> {
        match self.lstat(&self.name)? {
            Some(st) => self.refusal(&st, target).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    fn is_empty_dir(&self) -> Result<bool> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut dir = nix::dir::Dir::openat(self.d(), self.name.as_os_str(), flags, Mode::empty())
            .map_err(|e| self.io(e))?;
        for e in dir.iter() {
            let e = e.map_err(|e| self.io(e))?;
            if !matches!(e.file_name().to_bytes(), b"." | b"..") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Makes something under a fresh temporary name beside OUT (`.NAME.tmp-PID-N`; at
    /// most 100 bytes of NAME, so that a 255-byte name still has one).
    fn create_temp<T>(&self, make: impl Fn(&OsStr) -> nix::Result<T>) -> Result<(OsString, T)> {
        let stem = &self.name.as_bytes()[..self.name.len().min(100)];
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut t = b".".to_vec();
            t.extend_from_slice(stem);
            t.extend_from_slice(format!(".tmp-{}-{n}", std::process::id()).as_bytes());
            let t = OsString::from_vec(t);
            match make(&t) {
                Ok(v) => return Ok((t, v)),
                // (a leftover of an earlier process with our pid)
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(self.io(Errno::EEXIST))
    }

    /// Puts the file at temporary name `temp` in place of OUT (see the module docs).
    /// `ours` is cleared once `temp` no longer holds our file (installed, or a swap that
    /// could not be undone left something else there, which is then not removed).
    fn install_file(&self, temp: &OsStr, target: Target, ours: &mut bool) -> Result<()> {
        let (d, name) = (self.d(), self.name.as_os_str());
        for _ in 0..4 {
            let exchange = match self.lstat(name)? {
                None => false,
                Some(st) => match self.refusal(&st, target) {
                    Some(e) => return Err(e),
                    None => true,
                },
            };
            let flags = if exchange {
                RenameFlags::RENAME_EXCHANGE
            } else {
                RenameFlags::RENAME_NOREPLACE
            };
            match renameat2(d, temp, d, name, flags) {
                Ok(()) => {
                    *ours = false;
                    return match exchange {
                        true => self.settle_exchange(temp, target),
                        false => Ok(()),
                    };
                }
                // Something appeared, or went, since it was looked at: look again.
                Err(Errno::EEXIST | Errno::ENOENT) => continue,
                // A filesystem without those flags: a plain rename, right after the check.
                Err(Errno::EINVAL) => {
                    renameat(d, temp, d, name).map_err(|e| self.io(e))?;
                    *ours = false;
                    return Ok(());
                }
                Err(e) => return Err(self.io(e)),
            }
        }
        Err(self.refused("kept changing while the output was put in place".into()))
    }

    /// After the rename: `temp` holds what was at OUT, if anything. A regular file goes;
    /// anything else (it changed since it was looked at) is swapped back and refused.
    fn settle_exchange(&self, temp: &OsStr, target: Target) -> Result<()> {
        let (d, name) = (self.d(), self.name.as_os_str());
        let Some(st) = self.lstat(temp)? else {
            return Ok(());
        };
        let Some(refusal) = self.refusal(&st, target) else {
            if let Err(e) = unlinkat(d, temp, UnlinkatFlags::NoRemoveDir) {
                log::warn!(
                    "{}: the file it replaced is left at {}: {e}",
                    self.out.display(),
                    Path::new(temp).display()
                );
            }
            return Ok(());
        };
        match renameat2(d, temp, d, name, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => Err(refusal),
            Err(e) => Err(self.refused(format!(
                "was replaced while the output was put in place, and could not be put \
                 back: it is at {} ({e})",
                Path::new(temp).display()
            ))),
        }
    }

    /// Removes temporary entry `temp` (a file or a tree).
    fn remove(&self, temp: &OsStr) {
        // (through the directory fd's /proc link: the directory opened at the start)
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(temp);
        let res = match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
            Err(e) => Err(e),
        };
        if let Err(e) = res
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove {}: {e}", Path::new(temp).display());
        }
    }
}

/// Sets the mode of what `fd` holds whole (the mode asked at creation loses what the
/// umask takes).
fn set_mode(fd: BorrowedFd<'_>, mode: u32) -> nix::Result<()> {
    fchmod(fd, Mode::from_bits_truncate(mode))
}

/// Creates `name` in `dir` for writing, mode [`FILE_MODE`], never through a symlink.
fn create_file(dir: BorrowedFd<'_>, name: &OsStr, excl: bool) -> nix::Result<File> {
    let mut flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    flags |= if excl { OFlag::O_EXCL } else { OFlag::O_TRUNC };
    let fd = nix::fcntl::openat(dir, name, flags, Mode::from_bits_truncate(FILE_MODE))?;
    if let Err(e) = set_mode(fd.as_fd(), FILE_MODE) {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(File::from(fd))
}

/// Creates directory `name` in `dir`, mode [`DIR_MODE`], and opens it (or removes it
/// again).
fn make_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    mkdirat(dir, name, Mode::from_bits_truncate(DIR_MODE))?;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let opened = nix::fcntl::openat(dir, name, flags, Mode::empty())
        .and_then(|fd| set_mode(fd.as_fd(), DIR_MODE).map(|()| fd));
    if opened.is_err() {
        let _ = unlinkat(dir, name, UnlinkatFlags::RemoveDir);
    }
    opened
}

/// A file written under a temporary name beside OUT and put in place by
/// [`AtomicFile::commit`]; removed when dropped before.
pub struct AtomicFile {
    place: Place,
    target: Target,
    temp: OsString,
    file: Option<BufWriter<File>>,
    /// The temporary name still holds our file.
    ours: bool,
}

impl AtomicFile {
    /// Starts `out` (checked first: see the module docs).
    pub fn create(out: &Path, target: Target) -> Result<AtomicFile> {
        let place = Place::open(out)?;
        place.judge(target)?;
        let (temp, file) = place.create_temp(|t| create_file(place.d(), t, true))?;
        Ok(AtomicFile {
            place,
            target,
            temp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            ours: true,
        })
    }

    /// OUT, for messages.
    pub fn out(&self) -> &Path {
        &self.place.out
    }

    /// The buffered file, for writers that also seek.
    pub(crate) fn buffered(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("already closed"))
    }

    /// Flushes the file and puts it in place.
    pub fn commit(mut self) -> Result<()> {
        let w = self
            .file
            .take()
            .ok_or_else(|| Error::io(&self.place.out, io::Error::other("closed")))?;
        drop(
            w.into_inner()
                .map_err(|e| Error::io(&self.place.out, e.into_error()))?,
        );
        let (place, temp, target) = (&self.place, &self.temp, self.target);
        place.install_file(temp, target, &mut self.ours)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Ctrl-C: the temporary file is removed when dropped.
        crate::interrupt::check()?;
        self.buffered()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        drop(self.file.take());
        if self.ours {
            self.place.remove(&self.temp);
        }
    }
}

/// An OCI layout directory being built under a temporary name beside OUT, its files
/// reached through fds of its two directories (the root and `blobs/sha256`); renamed
/// into place by [`StageDir::commit`], removed when dropped before.
pub struct StageDir {
    place: Place,
    stage: OsString,
    root: OwnedFd,
    blobs: OwnedFd,
    done: bool,
}

impl StageDir {
    /// Starts a layout at `out` (checked first: see the module docs).
    pub fn create(out: &Path) -> Result<StageDir> {
        let place = Place::open(out)?;
        place.judge(Target::SaveLayout)?;
        let (stage, root) = place.create_temp(|t| make_dir(place.d(), t))?;
        let blobs = make_dir(root.as_fd(), OsStr::new("blobs"))
            .and_then(|b| make_dir(b.as_fd(), OsStr::new("sha256")));
        match blobs {
            Ok(blobs) => Ok(StageDir {
                place,
                stage,
                root,
                blobs,
                done: false,
            }),
            Err(e) => {
                place.remove(&stage);
                Err(place.io(e))
            }
        }
    }

    /// OUT, for messages.
    pub fn out(&self) -> &Path {
        &self.place.out
    }

    /// The directory and name of `rel` (`NAME` or `blobs/sha256/NAME`).
    fn at<'a>(&self, rel: &'a str) -> io::Result<(BorrowedFd<'_>, &'a OsStr)> {
        let (dir, name) = match rel.strip_prefix("blobs/sha256/") {
            Some(n) => (self.blobs.as_fd(), n),
            None => (self.root.as_fd(), rel),
        };
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::other(format!("no place for {rel} in a layout")));
        }
        Ok((dir, OsStr::new(name)))
    }

    /// Creates (or truncates) file `rel` of the layout for writing.
    pub fn create_file(&self, rel: &str) -> io::Result<File> {
        let (dir, name) = self.at(rel)?;
        Ok(create_file(dir, name, false)?)
    }

    /// Writes file `rel` of the layout.
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        self.create_file(rel)?.write_all(bytes)
    }

    /// Renames file `from` of the layout to `to`.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (fd, fname) = self.at(from)?;
        let (td, tname) = self.at(to)?;
        Ok(renameat(fd, fname, td, tname)?)
    }

    /// Removes file `rel` of the layout.
    pub fn remove_file(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.at(rel)?;
        Ok(unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// Renames the layout into place: over nothing or an empty directory, never
    /// anything else (rename(2) itself refuses).
    pub fn commit(mut self) -> Result<()> {
        let (d, name) = (self.place.d(), self.place.name.as_os_str());
        match renameat(d, self.stage.as_os_str(), d, name) {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(e @ (Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOTDIR | Errno::EISDIR)) => {
                let st = self.place.lstat(name)?;
                Err(st
                    .and_then(|st| self.place.refusal(&st, Target::SaveLayout))
                    .unwrap_or_else(|| self.place.io(e)))
            }
            Err(e) => Err(self.place.io(e)),
        }
    }
}

impl Drop for StageDir {
    fn drop(&mut self) {
        if !self.done {
            self.place.remove(&self.stage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};

    fn kinds(t: &Path) -> Vec<(PathBuf, &'static str)> {
        fs::create_dir(t.join("empty")).unwrap();
        fs::create_dir(t.join("full")).unwrap();
        fs::write(t.join("full/f"), b"").unwrap();
        fs::write(t.join("file"), b"old").unwrap();
        symlink("file", t.join("link")).unwrap();
        nix::unistd::mkfifo(&t.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        vec![
            (t.join("new"), "new"),
            (t.join("empty"), "empty"),
            (t.join("full"), "full"),
            (t.join("file"), "file"),
            (t.join("link"), "link"),
            (t.join("fifo"), "fifo"),
        ]
    }

    #[test]
    fn each_kind_of_target_by_the_rule() {
        let t = tempfile::tempdir().unwrap();
        for (p, what) in kinds(t.path()) {
            let archive = check(&p, Target::SaveArchive).is_ok();
            let layout = check(&p, Target::SaveLayout).is_ok();
            let want = match what {
                "new" => (true, true),
                "empty" => (false, true),
                "file" => (true, false),
                _ => (false, false),
            };
            assert_eq!((archive, layout), want, "{what}");
        }
        assert!(check(&t.path().join("nodir/x.tar"), Target::Export).is_err());
        assert!(check(&t.path().join("file/x.tar"), Target::Export).is_err());
    }

    #[test]
    fn an_archive_replaces_a_file_and_is_private() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("x.tar");
        fs::write(&out, b"old").unwrap();
        fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let mut f = AtomicFile::create(&out, Target::Export).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"old", "visible before commit");
        f.commit().unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"new");
        assert_eq!(fs::metadata(&out).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "temp left");
    }

    /// What a rename displaced is checked: a FIFO swapped in between the check and the
    /// rename (simulated here by doing the exchange by hand) is put back.
    #[test]
    fn a_fifo_displaced_by_the_exchange_is_put_back() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("x.tar");
        nix::unistd::mkfifo(&out, Mode::from_bits_truncate(0o600)).unwrap();
        let place = Place::open(&out).unwrap();
        let (temp, _) = place
            .create_temp(|n| create_file(place.d(), n, true))
            .unwrap();
        let d = place.d();
        renameat2(
            d,
            temp.as_os_str(),
            d,
            place.name.as_os_str(),
            RenameFlags::RENAME_EXCHANGE,
        )
        .unwrap();
        let e = place.settle_exchange(&temp, Target::Export).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        assert!(fs::symlink_metadata(&out).unwrap().file_type().is_fifo());
        assert!(
            fs::symlink_metadata(t.path().join(&temp))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn a_fifo_put_there_meanwhile_is_left_as_it_is() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("x.tar");
        fs::write(&out, b"old").unwrap();
        let f = AtomicFile::create(&out, Target::SaveArchive).unwrap();
        fs::remove_file(&out).unwrap();
        nix::unistd::mkfifo(&out, Mode::from_bits_truncate(0o600)).unwrap();
        let e = f.commit().unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        assert!(fs::symlink_metadata(&out).unwrap().file_type().is_fifo());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "temp left");
    }

    #[test]
    fn a_layout_is_private_and_replaces_only_an_empty_directory() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("layout");
        fs::create_dir(&out).unwrap();
        let s = StageDir::create(&out).unwrap();
        s.write_file("index.json", b"{}").unwrap();
        s.write_file("blobs/sha256/ab", b"x").unwrap();
        assert!(s.write_file("blobs/x/y", b"x").is_err());
        fs::write(out.join("late"), b"").unwrap();
        let e = s.commit().unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1, "stage left");
        fs::remove_file(out.join("late")).unwrap();
        let s = StageDir::create(&out).unwrap();
        s.write_file("index.json", b"{}").unwrap();
        s.commit().unwrap();
        for (p, mode) in [
            ("", 0o700),
            ("index.json", 0o600),
            ("blobs", 0o700),
            ("blobs/sha256", 0o700),
        ] {
            let m = fs::metadata(out.join(p)).unwrap().mode() & 0o7777;
            assert_eq!(m, mode, "{p}");
        }
    }
}
