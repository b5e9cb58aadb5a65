use std::path::Path;

use super::*;

/// What the `tar` crate's `Builder` wrote for these fields, as `image/tree_tar.rs` (the
/// writer before this one) asked it to: the header blocks only (no data, no end).
fn tar_crate(f: &Fields<'_>) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Complete);
    if !f.xattrs.is_empty() {
        let keys: Vec<String> = f
            .xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{}", k.to_string_lossy()))
            .collect();
        b.append_pax_extensions(
            keys.iter()
                .map(String::as_str)
                .zip(f.xattrs.iter().map(|(_, v)| v.as_slice())),
        )?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::new(f.flag));
    h.set_mode(f.mode);
    h.set_uid(f.uid);
    h.set_gid(f.gid);
    h.set_mtime(u64::try_from(f.mtime).unwrap_or(0));
    h.set_size(f.size);
    if let Some((major, minor)) = f.dev {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    let path = Path::new(OsStr::from_bytes(f.name));
    if matches!(f.flag, HARD_LINK | SYMLINK) {
        b.append_link(&mut h, path, Path::new(OsStr::from_bytes(f.link)))?;
    } else {
        b.append_data(&mut h, path, io::empty())?;
    }
    let mut out = b.into_inner()?;
    out.truncate(out.len() - 2 * BLOCK);
    Ok(out)
}

fn ours(f: &Fields<'_>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    write(&mut out, Dialect::Gnu, f)?;
    Ok(out)
}

fn fields<'a>(name: &'a [u8], flag: u8, link: &'a [u8]) -> Fields<'a> {
    Fields {
        name,
        flag,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 1_700_000_000,
        link,
        dev: matches!(flag, CHAR | BLOCK_DEV).then_some((1, 3)),
        xattrs: &[],
    }
}

fn same(f: &Fields<'_>) {
    let what = format!(
        "{} {:?} -> {}",
        f.flag as char,
        String::from_utf8_lossy(f.name),
        String::from_utf8_lossy(f.link)
    );
    match (tar_crate(f), ours(f)) {
        (Ok(a), Ok(b)) => assert!(a == b, "{what}: the bytes differ"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "{what}: the tar crate {:?}, ours {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    }
}

fn rep(c: u8, n: usize) -> Vec<u8> {
    vec![c; n]
}

/// Names at every length around the field's, cut inside a UTF-8 sequence, at `.` or
/// `..`, not UTF-8 at all.
fn names() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"a/".to_vec(),
        b"./".to_vec(),
        b".".to_vec(),
        b"..x".to_vec(),
        b"\xff\xfe".to_vec(),
    ];
    for n in 97..=103 {
        out.push(rep(b'n', n));
        out.push([&rep(b'n', n - 1)[..], b"/"].concat());
        out.push([&b"d/"[..], &rep(b'm', n - 2)].concat());
        out.push(rep(0xff, n));
        out.push([&rep(b'a', n - 3), &b"\xe2\x82\xac"[..]].concat());
    }
    for n in [95, 96, 97, 98] {
        for tail in [&b"/.hidden"[..], b"/..x", b"/..", b"/./x", b"/\xff\xfe"] {
            out.push([&rep(b'w', n), tail, &rep(b'z', 8)].concat());
        }
    }
    out.push([&b"\xff"[..], &rep(b'u', 120)].concat());
    out.push([&rep(b'a', 99), &b"\xe2\x82tail"[..]].concat());
    out.push(b"deep/".repeat(60));
    out
}

fn targets() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        &b"target"[..],
        b"./x",
        b"a/./b",
        b"a//b",
        b"/abs/./p",
        b"x/",
        b".",
        b"..",
        b"a/.",
        b"/.",
        b"./",
        b"/",
        b"",
        b"../../x",
    ]
    .iter()
    .map(|t| t.to_vec())
    .collect();
    for n in 97..=103 {
        out.push(rep(b't', n));
        out.push(rep(0xff, n));
    }
    out.push([&b"./"[..], &rep(b't', 99)].concat());
    out.push([&b"a/./"[..], &rep(b't', 97)].concat());
    out.push([&rep(b'a', 50)[..], b"//", &rep(b'b', 50)].concat());
    out.push([&rep(b'a', 50)[..], b"/./", &rep(b'b', 48)].concat());
    out.push(b"k/".repeat(60));
    out.push([&rep(b'c', 60)[..], b"/", &rep(b'd', 60)].concat());
    out
}

#[test]
fn gnu_names_and_targets_are_the_tar_crates() {
    for name in names() {
        for flag in [FILE, DIR, FIFO, CHAR, BLOCK_DEV, SYMLINK, HARD_LINK] {
            same(&fields(&name, flag, b"target"));
        }
    }
    for link in targets() {
        for name in [&b"l"[..], &rep(b'l', 101)] {
            same(&fields(name, SYMLINK, &link));
            same(&fields(name, HARD_LINK, &link));
        }
    }
}

#[test]
fn gnu_numbers_and_xattrs_are_the_tar_crates() {
    let ids = [
        0u64,
        7,
        2_097_151,
        2_097_152,
        4_294_967_295,
        1 << 40,
        u64::MAX,
    ];
    let times = [i64::MIN, -1, 0, 0o77777777777, 0o77777777777 + 1, i64::MAX];
    let sizes = [0u64, 5, 0o77777777777, 0o77777777777 + 1, u64::MAX];
    for (i, uid) in ids.iter().enumerate() {
        for mtime in times {
            for size in sizes {
                let f = Fields {
                    uid: *uid,
                    gid: ids[(i + 3) % ids.len()],
                    mtime,
                    size,
                    mode: 0o7777,
                    ..fields(b"f", FILE, b"")
                };
                same(&f);
            }
        }
    }
    for dev in [(0, 0), (8, 1), (4095, 1_048_575), (2_097_152, u32::MAX)] {
        same(&Fields {
            dev: Some(dev),
            ..fields(b"c", CHAR, b"")
        });
    }
    for len in (0..1100).step_by(7).chain(80..100).chain(980..1000) {
        let xattrs = vec![
            (OsString::from("security.capability"), vec![1, 0, 2]),
            (OsString::from("user.empty"), Vec::new()),
            (OsString::from("user.v"), rep(b'v', len)),
            (
                OsStr::from_bytes(b"user.\xff").to_os_string(),
                b"bad".to_vec(),
            ),
        ];
        same(&Fields {
            xattrs: &xattrs,
            ..fields(&rep(b'x', 1 + len % 150), FILE, b"")
        });
    }
}

#[test]
fn pax_record_lengths_count_themselves() {
    for (k, v, want) in [
        (&b"path"[..], &b"a"[..], &b"9 path=a\n"[..]),
        (b"k", &[b'v'; 4][..], b"9 k=vvvv\n"),
        (b"k", &[b'v'; 94][..], b"101 k=".as_slice()),
    ] {
        let mut out = Vec::new();
        pax_record(&mut out, k, v);
        assert!(out.starts_with(want), "{:?}", String::from_utf8_lossy(&out));
    }
    for len in 0..2000 {
        let mut out = Vec::new();
        pax_record(&mut out, b"key", &rep(b'v', len));
        let n: usize = String::from_utf8_lossy(&out)
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, out.len());
    }
}

/// PAX: names and targets whole in records, the header keeping their first 100 bytes;
/// values beyond ustar in records, their fields 0.
#[test]
fn pax_entries_read_back() {
    let long = [&b"d/"[..], &rep(b'n', 150)].concat();
    let xattrs = vec![(OsString::from("user.a"), b"1".to_vec())];
    let f = Fields {
        uid: 5_000_000,
        mtime: -5,
        link: &long,
        xattrs: &xattrs,
        ..fields(&long, SYMLINK, b"")
    };
    let mut out = Vec::new();
    write(&mut out, Dialect::Pax, &f).unwrap();
    out.extend_from_slice(&[0; 2 * BLOCK]);
    let mut a = tar::Archive::new(&out[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(&*e.path_bytes(), &long[..]);
    assert_eq!(&*e.link_name_bytes().unwrap(), &long[..]);
    let mut records = Vec::new();
    for r in e.pax_extensions().unwrap().unwrap() {
        let r = r.unwrap();
        records.push((r.key().unwrap().to_string(), r.value_bytes().to_vec()));
    }
    assert_eq!(
        records.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["path", "linkpath", "uid", "mtime", "SCHILY.xattr.user.a"]
    );
    assert!(records.contains(&("mtime".into(), b"-5".to_vec())));
    assert!(records.contains(&("uid".into(), b"5000000".to_vec())));
    assert_eq!(&e.header().as_bytes()[..100], &long[..100]);
}
