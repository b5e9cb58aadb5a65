//! Unit tests of the tar reader: long names, PAX, sparse maps, limits, corrupt input.

use super::*;

fn header(name: &str, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

fn padded_bytes(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(padded(data.len() as u64).unwrap() as usize, 0);
    v
}

fn all(bytes: &[u8]) -> Result<Vec<(Entry, Vec<u8>)>> {
    let mut r = TarReader::new(bytes);
    let mut out = Vec::new();
    while let Some(e) = r.next_entry()? {
        let mut data = Vec::new();
        r.read_to_end(&mut data)
            .map_err(|source| Error::Tar { source })?;
        out.push((e, data));
    }
    Ok(out)
}

#[test]
fn long_names_and_pax() {
    let long = "d/".repeat(100) + "f";
    let mut tar = Vec::new();
    tar.extend_from_slice(
        header(
            "././@LongLink",
            EntryType::GNULongName,
            long.len() as u64 + 1,
        )
        .as_bytes(),
    );
    tar.extend(padded_bytes(format!("{long}\0").as_bytes()));
    tar.extend_from_slice(header("short", EntryType::Regular, 3).as_bytes());
    tar.extend(padded_bytes(b"abc"));
    // A PAX value holding a newline is taken by its length.
    let rec = b"27 SCHILY.xattr.user.a=x\ny\n";
    tar.extend_from_slice(header("pax", EntryType::XHeader, rec.len() as u64).as_bytes());
    tar.extend(padded_bytes(rec));
    tar.extend_from_slice(header("p", EntryType::Regular, 0).as_bytes());
    tar.extend([0u8; 1024]);
    let got = all(&tar).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.path, long.as_bytes());
    assert_eq!(got[0].1, b"abc");
    assert_eq!(
        got[1].0.pax_value(b"SCHILY.xattr.user.a"),
        Some(&b"x\ny"[..])
    );
}

#[test]
fn oversized_records_are_refused_before_reading() {
    for (kind, size) in [
        (EntryType::GNULongName, MAX_NAME_LEN as u64 + 2),
        (EntryType::GNULongLink, 1 << 30),
        (EntryType::XHeader, MAX_PAX_LEN + 1),
    ] {
        // Only the header: the refusal must come before the (absent) record.
        let tar = header("x", kind, size).as_bytes().to_vec();
        let err = all(&tar).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }
}

#[test]
fn gnu_sparse_map() {
    let mut h = header("s", EntryType::GNUSparse, 512);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(1 << 30);
        g.sparse[0].set_length(512);
        g.set_real_size((1 << 30) + 512);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend([7u8; 512]);
    tar.extend([0u8; 1024]);
    let got = all(&tar).unwrap();
    let sp = got[0].0.sparse.clone().unwrap();
    assert_eq!(sp.real_size, (1 << 30) + 512);
    assert_eq!(
        sp.segments,
        vec![Segment {
            offset: 1 << 30,
            len: 512
        }]
    );
    assert_eq!(got[0].1, vec![7u8; 512]);
}

#[test]
fn bad_sparse_maps() {
    let mk = |segs: &[(u64, u64)], real: u64, data: u64| {
        let mut h = header("s", EntryType::GNUSparse, data);
        {
            let g = h.as_gnu_mut().unwrap();
            for (i, (o, l)) in segs.iter().enumerate() {
                g.sparse[i].set_offset(*o);
                g.sparse[i].set_length(*l);
            }
            g.set_real_size(real);
        }
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend(vec![0u8; padded(data).unwrap() as usize]);
        all(&tar).unwrap_err().to_string()
    };
    assert!(mk(&[(0, 10)], 5, 10).contains("past the file"));
    assert!(mk(&[(10, 10), (0, 5)], 100, 15).contains("overlap"));
    assert!(mk(&[(0, 10)], 100, 20).contains("covers"));
    assert!(mk(&[(u64::MAX, 10)], 100, 10).contains("past the file"));
}

#[test]
fn pax_sparse_1_0() {
    let map = b"2\n0\n3\n100\n2\n";
    let mut data = padded_bytes(map);
    data.extend(b"abcde");
    let mut recs = Vec::new();
    for (k, v) in [
        ("GNU.sparse.major", "1"),
        ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "real/name"),
        ("GNU.sparse.realsize", "200"),
    ] {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while len != body.len() + len.to_string().len() {
            len = body.len() + len.to_string().len();
        }
        recs.extend(format!("{len}{body}").bytes());
    }
    let mut tar = header("x", EntryType::XHeader, recs.len() as u64)
        .as_bytes()
        .to_vec();
    tar.extend(padded_bytes(&recs));
    tar.extend_from_slice(
        header(
            "GNUSparseFile.0/name",
            EntryType::Regular,
            data.len() as u64,
        )
        .as_bytes(),
    );
    tar.extend(padded_bytes(&data));
    tar.extend([0u8; 1024]);
    let got = all(&tar).unwrap();
    assert_eq!(got[0].0.path, b"real/name");
    assert_eq!(got[0].0.apparent_size(), 200);
    assert_eq!(got[0].1, b"abcde");
    assert_eq!(
        got[0].0.sparse.as_ref().unwrap().segments,
        vec![
            Segment { offset: 0, len: 3 },
            Segment {
                offset: 100,
                len: 2
            }
        ]
    );
}

#[test]
fn truncation_and_garbage_are_errors() {
    let mut tar = header("f", EntryType::Regular, 1000).as_bytes().to_vec();
    tar.extend([1u8; 100]);
    let mut r = TarReader::new(&tar[..]);
    let _ = r.next_entry().unwrap().unwrap();
    assert!(r.read_to_end(&mut Vec::new()).is_err());
    let mut junk = vec![b'x'; 512];
    junk[0] = b'a';
    assert!(all(&junk).is_err());
    assert!(all(&junk[..100]).is_err());
    assert!(all(b"").unwrap().is_empty());
}
