//! Test support for real mounts: layer directories built in code (in the kernel overlay
//! format and the `.wh.` dialect), a mount of `layerfs-overlay` over them that unmounts
//! on drop, and small helpers to look at the result.
//!
//! These tests need root and /dev/fuse. They fail loudly without them: a mount test that
//! is skipped is a test that cannot fail ([`require_fuse`]).
#![allow(dead_code, unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::require_fuse;

pub fn overlay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_layerfs-overlay"))
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("layerfs-test-")
        .tempdir()
        .expect("tempdir")
}

/// One layer directory under construction.
#[derive(Debug, Clone)]
pub struct Layer {
    pub path: PathBuf,
}

impl Layer {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    fn parent(&self, rel: &str) {
        if let Some(parent) = self.p(rel).parent() {
            fs::create_dir_all(parent).expect("create parent");
        }
    }

    pub fn file(&self, rel: &str, content: &str) -> &Self {
        self.bytes(rel, content.as_bytes())
    }

    pub fn bytes(&self, rel: &str, content: &[u8]) -> &Self {
        self.parent(rel);
        fs::write(self.p(rel), content).expect("write file");
        self
    }

    pub fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.p(rel)).expect("mkdir");
        self
    }

    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        self.parent(rel);
        symlink(target, self.p(rel)).expect("symlink");
        self
    }

    pub fn hardlink(&self, existing: &str, rel: &str) -> &Self {
        self.parent(rel);
        fs::hard_link(self.p(existing), self.p(rel)).expect("hard link");
        self
    }

    pub fn fifo(&self, rel: &str) -> &Self {
        self.parent(rel);
        nix::unistd::mkfifo(
            &self.p(rel),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        self
    }

    pub fn mode(&self, rel: &str, mode: u32) -> &Self {
        fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    pub fn owner(&self, rel: &str, uid: u32, gid: u32) -> &Self {
        std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid)).expect("chown");
        self
    }

    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Self {
        let ok = Command::new("setfattr")
            .arg("-h")
            .arg("-n")
            .arg(name)
            .arg("-v")
            .arg(format!("0x{}", hex(value)))
            .arg(self.p(rel))
            .status()
            .expect("setfattr (package attr)")
            .success();
        assert!(ok, "setfattr {name} on {rel}");
        self
    }

    /// Kernel whiteout: char device 0/0.
    pub fn whiteout(&self, rel: &str) -> &Self {
        self.parent(rel);
        nix::sys::stat::mknod(
            &self.p(rel),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .expect("mknod whiteout");
        self
    }

    /// OCI/fuse-overlayfs whiteout: an empty `.wh.NAME` file.
    pub fn wh_file(&self, rel: &str) -> &Self {
        let p = Path::new(rel);
        let name = format!(".wh.{}", p.file_name().unwrap().to_string_lossy());
        let full = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => format!("{}/{}", d.display(), name),
            _ => name,
        };
        self.file(&full, "")
    }

    /// Opaque directory, kernel spelling.
    pub fn opaque(&self, rel: &str) -> &Self {
        self.dir(rel).xattr(rel, "trusted.overlay.opaque", b"y")
    }

    /// Opaque directory, `.wh..wh..opq` spelling.
    pub fn opaque_wh(&self, rel: &str) -> &Self {
        self.dir(rel).file(&format!("{rel}/.wh..wh..opq"), "")
    }

    /// Opaque directory, `user.overlay.opaque` spelling (kernel `userxattr`).
    pub fn opaque_user(&self, rel: &str) -> &Self {
        self.dir(rel).xattr(rel, "user.overlay.opaque", b"y")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A set of layer directories (index 0 created first).
pub struct Layers {
    pub root: tempfile::TempDir,
    pub layers: Vec<Layer>,
}

impl Layers {
    pub fn new() -> Layers {
        Layers {
            root: tempdir(),
            layers: Vec::new(),
        }
    }

    /// Adds a lower layer; layers added later are on top.
    pub fn add(&mut self) -> Layer {
        let path = self.root.path().join(format!("l{:03}", self.layers.len()));
        fs::create_dir(&path).expect("layer dir");
        let l = Layer { path };
        self.layers.push(l.clone());
        l
    }

    /// The lower dirs, top first, as lowerdir= wants them.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        self.layers.iter().rev().map(|l| l.path.clone()).collect()
    }
}

/// A live mount of `layerfs-overlay`; unmounted when dropped.
pub struct Mount {
    pub dir: tempfile::TempDir,
    pub mp: PathBuf,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    lowers: Vec<PathBuf>,
    extra: Vec<String>,
    mounted: bool,
}

impl Mount {
    /// Mounts `lowers` (top first) with a fresh upper and work directory.
    pub fn new(lowers: &[PathBuf]) -> Mount {
        Mount::with(lowers, true, &[])
    }

    /// Read-only mount (no upper).
    pub fn read_only(lowers: &[PathBuf]) -> Mount {
        Mount::with(lowers, false, &[])
    }

    pub fn with(lowers: &[PathBuf], writable: bool, extra: &[&str]) -> Mount {
        require_fuse();
        let dir = tempdir();
        let mp = dir.path().join("mnt");
        fs::create_dir(&mp).unwrap();
        let (upper, work) = if writable {
            let u = dir.path().join("upper");
            let w = dir.path().join("work");
            fs::create_dir(&u).unwrap();
            fs::create_dir(&w).unwrap();
            (Some(u), Some(w))
        } else {
            (None, None)
        };
        let mut m = Mount {
            dir,
            mp,
            upper,
            work,
            lowers: lowers.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            mounted: false,
        };
        m.mount();
        m
    }

    /// Mounts `lowers` over the upper and work directories of `other` (unmounted), with
    /// `extra` options.
    pub fn with_dirs(lowers: &[PathBuf], other: &Mount, extra: &[&str]) -> Mount {
        require_fuse();
        let dir = tempdir();
        let mp = dir.path().join("mnt");
        fs::create_dir(&mp).unwrap();
        let mut m = Mount {
            dir,
            mp,
            upper: other.upper.clone(),
            work: other.work.clone(),
            lowers: lowers.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            mounted: false,
        };
        m.mount();
        m
    }

    pub fn options(&self) -> String {
        let esc = |p: &Path| p.to_string_lossy().replace(':', "\\:").replace(',', "\\,");
        let mut o = format!(
            "lowerdir={}",
            self.lowers
                .iter()
                .map(|p| esc(p))
                .collect::<Vec<_>>()
                .join(":")
        );
        if let (Some(u), Some(w)) = (&self.upper, &self.work) {
            o.push_str(&format!(",upperdir={},workdir={}", esc(u), esc(w)));
        }
        for e in &self.extra {
            o.push(',');
            o.push_str(e);
        }
        o
    }

    pub fn mount(&mut self) {
        let out = Command::new(overlay_bin())
            .arg("-o")
            .arg(self.options())
            .arg(&self.mp)
            .output()
            .expect("run layerfs-overlay");
        assert!(
            out.status.success(),
            "layerfs-overlay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&self.mp),
            "layerfs-overlay returned but {} is not mounted",
            self.mp.display()
        );
        self.mounted = true;
    }

    pub fn umount(&mut self) {
        if !self.mounted {
            return;
        }
        umount(&self.mp);
        self.mounted = false;
    }

    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    /// Path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mp.clone()
        } else {
            self.mp.join(rel)
        }
    }

    /// Path inside the upper directory.
    pub fn up(&self, rel: &str) -> PathBuf {
        self.upper.as_ref().expect("writable mount").join(rel)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.umount();
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let target = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        l.split(' ').nth(1).map(unescape_mount) == Some(target.to_string_lossy().into_owned())
    })
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Unmounts what a test mounted (the last first) when dropped, also when the test fails
/// half-way.
pub struct Unmount(pub Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            if is_mounted(p) {
                umount(p);
            }
        }
    }
}

/// Unmounts, waiting out a busy mount for a while, then detaching it.
pub fn umount(p: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = Command::new("umount")
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok || !is_mounted(p) {
            return;
        }
        if Instant::now() > deadline {
            let _ = Command::new("umount").arg("-l").arg(p).status();
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sorted names in a directory.
pub fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

pub fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .ino()
}

pub fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .mode()
}

/// Reads an xattr without following symlinks.
pub fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Names of the xattrs of a path (not following symlinks).
pub fn xattr_names(p: &Path) -> Vec<String> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-"])
        .arg(p)
        .output()
        .expect("getfattr");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('=').next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// True when the upper entry is a kernel whiteout.
pub fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(p) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}

pub fn os(s: &str) -> OsString {
    OsStr::from_bytes(s.as_bytes()).to_owned()
}

/// renameat2(2) with `flags` (RENAME_NOREPLACE, RENAME_EXCHANGE).
pub fn rename2(from: &Path, to: &Path, flags: u32) -> std::io::Result<()> {
    let f = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let t = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid C strings, relative to the current directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The errno of a call expected to fail.
pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an errno")
}

/// What is left in the copy-up staging directory of a writable mount.
pub fn staged(m: &Mount) -> Vec<String> {
    ls(&m.work.as_ref().expect("writable mount").join("layerfs-tmp"))
}

/// The options of the mount at `p` from /proc/self/mountinfo: the per-mount ones
/// (`rw,nosuid,nodev,relatime`) and the filesystem's (`user_id=0,…,allow_other`).
pub fn mount_options(p: &Path) -> (Vec<String>, Vec<String>) {
    let target = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let line = info
        .lines()
        .rfind(|l| {
            l.split(' ').nth(4).map(unescape_mount) == Some(target.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| panic!("{} is not in mountinfo", target.display()));
    let fields: Vec<&str> = line.split(' ').collect();
    let split = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS
    let dash = fields
        .iter()
        .position(|f| *f == "-")
        .expect("mountinfo separator");
    let super_opts = fields.get(dash + 3).copied().unwrap_or_default();
    (split(fields[5]), split(super_opts))
}

/// Kernel overlayfs over `lowers` (top first), the oracle layerfs is compared with: with
/// its own upper layer (`redirect_dir`, `index`, `metacopy` on) when `writable`, else
/// read-only. Unmounted on drop.
pub struct KernelOverlay {
    /// Holds the mount point and the upper and work directories.
    pub dir: tempfile::TempDir,
    pub mp: PathBuf,
}

impl KernelOverlay {
    pub fn new(lowers: &[PathBuf], writable: bool) -> KernelOverlay {
        let dir = tempdir();
        // (other users must reach the mount point for tests that run as them)
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (mp, upper, work) = (
            dir.path().join("k"),
            dir.path().join("u"),
            dir.path().join("w"),
        );
        fs::create_dir(&mp).unwrap();
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut opts = format!("lowerdir={}", lowerdir.join(":"));
        if writable {
            fs::create_dir(&upper).unwrap();
            fs::create_dir(&work).unwrap();
            opts.push_str(&format!(
                ",upperdir={},workdir={},redirect_dir=on,index=on,metacopy=on",
                upper.display(),
                work.display()
            ));
        }
        let ok = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&mp)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount -t overlay -o {opts}");
        KernelOverlay { dir, mp }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        umount(&self.mp);
    }
}

/// Runs a test driver (`python3 tests/DRIVER ARGS…`) that mounts under `dir` itself;
/// whatever it left mounted there (`mounts`, names under `dir`) is unmounted. Returns
/// whether it succeeded, and its output.
pub fn run_driver(driver: &str, args: &[&OsStr], dir: &Path, mounts: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(driver);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3");
    for m in mounts {
        let p = dir.join(m);
        if is_mounted(&p) {
            umount(&p);
        }
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
