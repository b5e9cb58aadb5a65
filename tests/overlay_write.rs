//! Writing through a real `layerfs-overlay` mount: copy-up with all metadata, O_TRUNC,
//! O_APPEND, truncate, create/mkdir/mknod/symlink, metadata-only copy-up, statfs, fsync,
//! special files and permission checks. Needs root and /dev/fuse.
#![allow(unsafe_code, clippy::unwrap_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::mount::*;
use common::{NOBODY, sh, sh_as};

fn staging_is_empty(m: &Mount) -> bool {
    ls(&m.work.as_ref().unwrap().join("layerfs-tmp")).is_empty()
}

#[test]
fn writing_a_lower_file_copies_it_up_with_all_metadata() {
    let mut l = Layers::new();
    let low = l.add();
    low.file("etc/conf", "line1\n")
        .mode("etc/conf", 0o640)
        .owner("etc/conf", 1000, 1001);
    low.xattr("etc/conf", "user.tag", b"v").xattr(
        "etc/conf",
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    low.mode("etc", 0o750).owner("etc", 7, 8);
    low.file("etc/capped", "c").xattr(
        "etc/capped",
        "security.capability",
        &[1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    let m = Mount::new(&l.lowerdirs());
    // A metadata copy-up keeps every xattr, capabilities included.
    fs::set_permissions(m.p("etc/capped"), fs::Permissions::from_mode(0o700)).unwrap();
    assert!(getxattr(&m.up("etc/capped"), "security.capability").is_some());
    assert!(getxattr(&m.p("etc/capped"), "security.capability").is_some());
    let before = fs::metadata(m.p("etc/conf")).unwrap();
    let dir_before = fs::metadata(m.p("etc")).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.p("etc/conf"))
        .unwrap();
    f.write_all(b"line2\n").unwrap();
    drop(f);
    assert_eq!(read(&m.p("etc/conf")), "line1\nline2\n");
    assert_eq!(
        read(&low.p("etc/conf")),
        "line1\n",
        "the lower layer is never modified"
    );
    let after = fs::metadata(m.p("etc/conf")).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!((after.uid(), after.gid()), (1000, 1001));
    assert_eq!(after.ino(), before.ino(), "st_ino survives copy-up");
    assert_eq!(
        getxattr(&m.p("etc/conf"), "user.tag").as_deref(),
        Some(&b"v"[..])
    );
    // A write drops file capabilities, as on any Linux filesystem (file_remove_privs).
    assert!(getxattr(&m.p("etc/conf"), "security.capability").is_none());
    // the parent came up too, with its own metadata and times
    let up_dir = fs::metadata(m.up("etc")).unwrap();
    assert_eq!(up_dir.mode() & 0o7777, 0o750);
    assert_eq!((up_dir.uid(), up_dir.gid()), (7, 8));
    let dir_after = fs::metadata(m.p("etc")).unwrap();
    assert_eq!(
        dir_after.mtime(),
        dir_before.mtime(),
        "copy-up is not a change of the parent"
    );
    assert_eq!(read(&m.up("etc/conf")), "line1\nline2\n");
    assert!(staging_is_empty(&m), "nothing left in the staging area");
    // after remount the same
    let mut m = m;
    m.remount();
    assert_eq!(read(&m.p("etc/conf")), "line1\nline2\n");
    assert_eq!(fs::metadata(m.p("etc/conf")).unwrap().ino(), before.ino());
}

#[test]
fn truncate_append_and_o_trunc() {
    let mut l = Layers::new();
    let low = l.add();
    low.file("t1", "0123456789")
        .file("t2", "0123456789")
        .file("t3", "0123456789")
        .file("t4", "abc");
    let m = Mount::new(&l.lowerdirs());
    // O_TRUNC rewrite, of a lower file and then of the copied-up one (regression: the
    // second O_TRUNC open did not truncate)
    fs::write(m.p("t1"), "new content").unwrap();
    assert_eq!(read(&m.p("t1")), "new content");
    fs::write(m.p("t1"), "new").unwrap();
    assert_eq!(read(&m.p("t1")), "new");
    // truncate shorter and longer
    OpenOptions::new()
        .write(true)
        .open(m.p("t2"))
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(read(&m.p("t2")), "0123");
    nix::unistd::truncate(&m.p("t3"), 12).unwrap();
    assert_eq!(fs::read(m.p("t3")).unwrap(), b"0123456789\0\0");
    // O_APPEND appends even after a seek
    let mut f = OpenOptions::new().append(true).open(m.p("t4")).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"def").unwrap();
    drop(f);
    assert_eq!(read(&m.p("t4")), "abcdef");
    // read-write in the middle
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("t4"))
        .unwrap();
    f.seek(SeekFrom::Start(1)).unwrap();
    f.write_all(b"X").unwrap();
    drop(f);
    assert_eq!(read(&m.p("t4")), "aXcdef");
}

#[test]
fn create_mkdir_mknod_symlink() {
    let mut l = Layers::new();
    l.add().dir("d");
    // `dev`: fuse-overlayfs's default, even as root, is nodev.
    let m = Mount::with(&l.lowerdirs(), true, &["dev"]);
    fs::write(m.p("d/new"), "n").unwrap();
    fs::create_dir(m.p("d/sub")).unwrap();
    fs::write(m.p("d/sub/deep"), "deep").unwrap();
    std::os::unix::fs::symlink("new", m.p("d/link")).unwrap();
    nix::unistd::mkfifo(
        &m.p("d/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &m.p("d/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    assert_eq!(ls(&m.p("d")), vec!["fifo", "link", "new", "null", "sub"]);
    assert_eq!(read(&m.p("d/link")), "n");
    assert!(
        fs::symlink_metadata(m.p("d/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let null = fs::symlink_metadata(m.p("d/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    // device nodes work (the mount has `dev`)
    fs::write(m.p("d/null"), "discarded").unwrap();
    assert_eq!(read(&m.up("d/sub/deep")), "deep");
    assert_eq!(fs::read_link(m.up("d/link")).unwrap().to_str(), Some("new"));
    // creating what exists fails
    assert_eq!(
        fs::create_dir(m.p("d/sub")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("d/new"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
}

#[test]
fn fifo_passes_data() {
    let mut l = Layers::new();
    l.add().fifo("p");
    let m = Mount::new(&l.lowerdirs());
    let out = sh(&format!(
        "(echo through > '{0}' &) ; cat '{0}'",
        m.p("p").display()
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through");
}

#[test]
fn copy_up_keeps_holes() {
    let mut l = Layers::new();
    let low = l.add();
    {
        let f = fs::File::create(low.p("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    }
    let m = Mount::new(&l.lowerdirs());
    OpenOptions::new()
        .write(true)
        .open(m.p("sparse"))
        .unwrap()
        .write_all(b"HEAD")
        .unwrap();
    let meta = fs::metadata(m.up("sparse")).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < (1 << 20),
        "holes stay holes: {} blocks",
        meta.blocks()
    );
    let data = fs::read(m.p("sparse")).unwrap();
    assert_eq!(&data[..4], b"HEAD");
    assert_eq!(&data[data.len() - 4..], b"tail");
    assert!(data[4..data.len() - 4].iter().all(|b| *b == 0));
}

#[test]
fn metadata_changes_copy_up_metadata_only() {
    let mut l = Layers::new();
    let low = l.add();
    let data: Vec<u8> = (0..(32u32 << 20)).map(|i| (i % 253) as u8).collect();
    low.bytes("big", &data)
        .bytes("big2", &data)
        .bytes("big3", &data)
        .bytes("big4", &data);
    let m = Mount::new(&l.lowerdirs());
    fs::set_permissions(m.p("big"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.p("big2"), Some(42), Some(43)).unwrap();
    let t = nix::sys::time::TimeSpec::new(1_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &m.p("big3"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let c = std::ffi::CString::new(m.p("big4").to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and value buffer.
    let r = unsafe { libc::setxattr(c.as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(r, 0);
    for name in ["big", "big2", "big3", "big4"] {
        let up = fs::metadata(m.up(name)).unwrap();
        assert_eq!(up.len(), data.len() as u64, "{name}");
        // (an ext4 xattr block may be counted, never the 32 MiB of data)
        assert!(
            up.blocks() * 512 <= 8192,
            "{name}: no data copied, {} blocks",
            up.blocks()
        );
        assert!(
            getxattr(&m.up(name), "trusted.overlay.metacopy").is_some(),
            "{name}"
        );
        assert_eq!(
            fs::read(m.p(name)).unwrap(),
            data,
            "{name}: data still from below"
        );
    }
    assert_eq!(mode(&m.p("big")) & 0o7777, 0o600);
    let b2 = fs::metadata(m.p("big2")).unwrap();
    assert_eq!((b2.uid(), b2.gid()), (42, 43));
    assert_eq!(fs::metadata(m.p("big3")).unwrap().mtime(), 1_000_000);
    assert_eq!(getxattr(&m.p("big4"), "user.k").as_deref(), Some(&b"v"[..]));
    // du sees the lower blocks, not an empty file
    assert!(fs::metadata(m.p("big")).unwrap().blocks() > 0);
    // writing completes the copy-up with the changed metadata kept
    OpenOptions::new()
        .write(true)
        .open(m.p("big"))
        .unwrap()
        .write_all(b"X")
        .unwrap();
    let up = fs::metadata(m.up("big")).unwrap();
    assert!(up.blocks() > 0);
    assert!(getxattr(&m.up("big"), "trusted.overlay.metacopy").is_none());
    assert_eq!(up.mode() & 0o7777, 0o600);
    let mut want = data.clone();
    want[0] = b'X';
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    // and after a remount
    let mut m = m;
    m.remount();
    assert_eq!(fs::read(m.p("big2")).unwrap(), data);
    assert_eq!(fs::read(m.p("big")).unwrap(), want);
    assert_eq!(fs::metadata(m.p("big2")).unwrap().uid(), 42);
}

#[test]
fn statfs_reports_the_upper_filesystem_and_fsync_works() {
    let mut l = Layers::new();
    l.add().file("f", "x");
    let m = Mount::new(&l.lowerdirs());
    let a = nix::sys::statvfs::statvfs(&m.p("")).unwrap();
    let b = nix::sys::statvfs::statvfs(m.upper.as_ref().unwrap()).unwrap();
    assert_eq!(a.blocks(), b.blocks());
    assert_eq!(a.block_size(), b.block_size());
    let mut f = OpenOptions::new().write(true).open(m.p("f")).unwrap();
    f.write_all(b"y").unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    let d = fs::File::open(m.p("")).unwrap();
    d.sync_all().unwrap();
}

#[test]
fn modes_and_permission_checks_are_the_kernels() {
    let mut l = Layers::new();
    let low = l.add();
    low.file("secret", "s").mode("secret", 0o600);
    low.file("public", "p").mode("public", 0o644);
    low.file("suid", "#!/bin/sh\n").mode("suid", 0o4755);
    low.file("sgid", "#!/bin/sh\n").mode("sgid", 0o2755);
    low.dir("sticky").mode("sticky", 0o1777);
    let m = Mount::new(&l.lowerdirs());
    assert_eq!(mode(&m.p("suid")) & 0o7777, 0o4755);
    assert_eq!(mode(&m.p("sgid")) & 0o7777, 0o2755);
    assert_eq!(mode(&m.p("sticky")) & 0o7777, 0o1777);
    // The mount point directory is traversable by others.
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = sh_as(NOBODY, &format!("cat '{}'", m.p("secret").display()));
    assert!(
        !out.status.success(),
        "a non-root user cannot read a root 0600 file"
    );
    let out = sh_as(NOBODY, &format!("cat '{}'", m.p("public").display()));
    assert!(
        out.status.success(),
        "allow_other: others can use the mount"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "p");
    let out = sh_as(NOBODY, &format!("echo x > '{}'", m.p("public").display()));
    assert!(!out.status.success(), "no write permission");
    let out = sh_as(
        NOBODY,
        &format!(
            "echo x > '{}/mine' && cat '{}/mine'",
            m.p("sticky").display(),
            m.p("sticky").display()
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = fs::metadata(m.p("sticky/mine")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "new files belong to the caller"
    );
}

#[test]
fn special_files_open_through_the_mount() {
    let mut l = Layers::new();
    let low = l.add();
    nix::sys::stat::mknod(
        &low.p("zero"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let m = Mount::with(&l.lowerdirs(), true, &["dev"]);
    let mut buf = [1u8; 16];
    use std::io::Read;
    fs::File::open(m.p("zero"))
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    assert_eq!(buf, [0u8; 16]);
}

#[test]
fn hard_links_already_in_an_upper_layer_survive_unlinking_either_name() {
    let mut l = Layers::new();
    l.add().file("low", "l");
    let mut m = Mount::new(&l.lowerdirs());
    m.umount();
    // An upper layer written by another tool: two names, one inode, no index.
    fs::write(m.up("a"), "shared").unwrap();
    fs::hard_link(m.up("a"), m.up("b")).unwrap();
    m.mount();
    assert_eq!(ino(&m.p("a")), ino(&m.p("b")));
    fs::write(m.p("a"), "changed").unwrap();
    fs::remove_file(m.p("a")).unwrap();
    assert_eq!(read(&m.p("b")), "changed");
    assert_eq!(fs::metadata(m.p("b")).unwrap().nlink(), 1);
    OpenOptions::new()
        .append(true)
        .open(m.p("b"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    m.remount();
    assert_eq!(read(&m.p("b")), "changed+");
}

#[test]
fn posix_acls_are_enforced_and_copied_up() {
    let mut l = Layers::new();
    let low = l.add();
    low.file("acl-file", "acl").mode("acl-file", 0o600);
    low.file("plain", "plain").mode("plain", 0o600);
    let ok = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(low.p("acl-file"))
        .status()
        .expect("setfacl (package acl)")
        .success();
    assert!(ok);
    let m = Mount::new(&l.lowerdirs());
    fs::set_permissions(m.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = sh_as(NOBODY, &format!("cat '{}'", m.p("acl-file").display()));
    assert!(
        out.status.success(),
        "the ACL grants read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !sh_as(NOBODY, &format!("cat '{}'", m.p("plain").display()))
            .status
            .success()
    );
    // an ACL set through the mount lands on the upper copy and takes effect
    let ok = std::process::Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(m.p("plain"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(getxattr(&m.up("plain"), "system.posix_acl_access").is_some());
    assert!(
        sh_as(NOBODY, &format!("cat '{}'", m.p("plain").display()))
            .status
            .success()
    );
}

/// A 0/0 character device is the upper layer's whiteout: making one through the mount is
/// refused with EPERM, as kernel overlayfs refuses it, instead of succeeding and vanishing
/// (issue 26, found by comparing seeded fsstress runs). Other devices are made as asked.
#[test]
fn mknod_of_a_0_0_char_device_is_refused_like_kernel_overlayfs() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let mut l = Layers::new();
    l.add().file("a", "a");
    let m = Mount::new(&l.lowerdirs());
    let k = KernelOverlay::new(&l.lowerdirs(), true);
    let mode = Mode::from_bits_truncate(0o644);
    for (what, root) in [("kernel overlayfs", &k.mp), ("layerfs", &m.mp)] {
        for name in ["c0", "a"] {
            let r = mknod(&root.join(name), SFlag::S_IFCHR, mode, makedev(0, 0));
            let want = if name == "a" {
                nix::errno::Errno::EEXIST
            } else {
                nix::errno::Errno::EPERM
            };
            assert_eq!(r, Err(want), "{what}: mknod {name} c 0 0");
        }
        assert_eq!(read(&root.join("a")), "a", "{what}: a is still there");
        mknod(&root.join("null"), SFlag::S_IFCHR, mode, makedev(1, 3)).unwrap();
        assert_eq!(
            fs::symlink_metadata(root.join("null")).unwrap().rdev(),
            makedev(1, 3)
        );
    }
    assert!(!exists(&m.up("c0")), "nothing left in the upper layer");
}
