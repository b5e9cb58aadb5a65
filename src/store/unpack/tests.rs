//! Unit tests of the unpacker on crafted tars: corrupt input, sparse files, bounds, owners.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use super::create::parse_pax_time;
use super::*;

/// Truncated and bit-flipped layers give errors or odd trees, never a panic, and
/// never anything outside the destination.
#[test]
fn corrupt_input_never_panics() {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("d/", tar::EntryType::Directory, b"", None);
    add("d/f", tar::EntryType::Regular, b"hello world", None);
    add("d/l", tar::EntryType::Symlink, b"", Some("f"));
    add("d/h", tar::EntryType::Link, b"", Some("d/f"));
    add(".wh.x", tar::EntryType::Regular, b"", None);
    add("d/.wh..wh..opq", tar::EntryType::Regular, b"", None);
    let good = b.into_inner().unwrap();
    let base = tempfile::tempdir().unwrap();
    let opts = UnpackOptions {
        styles: whiteout::Styles {
            whiteout: whiteout::WhiteoutStyle::WhFile,
            opaque: whiteout::OpaqueStyle::WhFile,
        },
        ownership: Ownership::OverrideStat,
        max_size: DEFAULT_MAX_LAYER_SIZE,
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..300 {
        let mut input = good.clone();
        if i % 3 == 0 {
            input.truncate((next() as usize) % good.len());
        } else {
            for _ in 0..(1 + next() % 8) {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
        }
        let dest = tempfile::tempdir_in(base.path()).unwrap();
        let fd = std::fs::File::open(dest.path()).unwrap();
        let _ = unpack(&input[..], fd.as_fd(), &opts);
    }
    // Everything stayed inside the per-run directories.
    assert_eq!(std::fs::read_dir(base.path()).unwrap().count(), 0);
}

#[test]
fn pax_times() {
    let t = parse_pax_time(b"1700000000.5").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (1_700_000_000, 500_000_000));
    let t = parse_pax_time(b"1700000000.123456789123").unwrap();
    assert_eq!(t.tv_nsec(), 123_456_789);
    let t = parse_pax_time(b"-1.25").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
    assert!(parse_pax_time(b"abc").is_none());
    assert!(parse_pax_time(b"1.2x").is_none());
    assert!(parse_pax_time(b"--9223372036854775808").is_none());
    assert!(parse_pax_time(b"-").is_none());
}

fn opts(max_size: u64) -> UnpackOptions {
    UnpackOptions {
        styles: whiteout::Styles {
            whiteout: whiteout::WhiteoutStyle::WhFile,
            opaque: whiteout::OpaqueStyle::WhFile,
        },
        ownership: Ownership::OverrideStat,
        max_size,
    }
}

/// A GNU sparse member: `real` bytes apparent, `data` at `offset`.
fn sparse_tar(real: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(offset);
        g.sparse[0].set_length(data.len() as u64);
        g.set_real_size(real);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

#[test]
fn sparse_files_keep_their_holes() {
    let dest = tempfile::tempdir().unwrap();
    let fd = std::fs::File::open(dest.path()).unwrap();
    let real = 2u64 << 30;
    let tar = sparse_tar(real, real - 512, &[b'z'; 512]);
    let stats = unpack(&tar[..], fd.as_fd(), &opts(DEFAULT_MAX_LAYER_SIZE)).unwrap();
    assert_eq!(stats.size, real);
    let p = dest.path().join("sparse");
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.len(), real);
    // 2 GiB apparent, a few KiB allocated.
    assert!(
        m.blocks() * 512 < 1 << 20,
        "{} blocks allocated",
        m.blocks()
    );
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&p).unwrap();
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(real - 1024)).unwrap();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(&tail[..512], &[0u8; 512][..]);
    assert_eq!(&tail[512..], &[b'z'; 512][..]);
}

#[test]
fn layer_size_is_bounded_before_writing() {
    let dest = tempfile::tempdir().unwrap();
    let fd = std::fs::File::open(dest.path()).unwrap();
    let tar = sparse_tar(1 << 40, 0, b"");
    let err = unpack(&tar[..], fd.as_fd(), &opts(1 << 30)).unwrap_err();
    assert!(
        err.to_string().contains("more than 1073741824 bytes"),
        "{err}"
    );
    assert!(!dest.path().join("sparse").exists());
    // Right at the limit is fine.
    let tar = sparse_tar(1 << 30, 0, b"");
    unpack(&tar[..], fd.as_fd(), &opts(1 << 30)).unwrap();
}

#[test]
fn owners_beyond_32_bits_are_refused() {
    for (uid, gid) in [
        (1u64 << 32, 0u64),
        (0, (1 << 32) + 5),
        (u64::from(u32::MAX), 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_path("suid").unwrap();
        h.set_size(0);
        h.set_mode(0o4755);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend([0u8; 1024]);
        let dest = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dest.path()).unwrap();
        let err = unpack(&tar[..], fd.as_fd(), &opts(DEFAULT_MAX_LAYER_SIZE))
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
        assert!(!dest.path().join("suid").exists());
    }
}
