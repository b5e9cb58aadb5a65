//! Unit tests of the layout recorder and playback: records of any read sizes, giving up,
//! real tars unpacked (or only framed) and played back byte for byte.
use super::*;

/// Records `stream` with the given content ranges, observing it in `step`-byte reads
/// and announcing each range `lag` bytes after its start arrived.
fn record(stream: &[u8], files: &[(u64, u64, &str)], step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut r = Recorder::new(&mut out).unwrap();
        let mut pos = 0usize;
        let mut next = 0usize;
        while pos < stream.len() {
            let end = (pos + step).min(stream.len());
            r.observe(&stream[pos..end]);
            pos = end;
            while next < files.len() && files[next].0 as usize <= pos {
                let (o, s, p) = files[next];
                r.content(o, s, p.as_bytes());
                next += 1;
            }
        }
        assert!(r.finish().unwrap());
    }
    out
}

fn records(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut d = zstd::Decoder::new(bytes).unwrap();
    let mut all = Vec::new();
    d.read_to_end(&mut all).unwrap();
    assert_eq!(&all[..5], MAGIC);
    let mut i = 5;
    let mut out = Vec::new();
    loop {
        let tag = all[i];
        i += 1;
        match tag {
            TAG_RAW => {
                let n = u32::from_le_bytes(all[i..i + 4].try_into().unwrap()) as usize;
                out.push((tag, all[i + 4..i + 4 + n].to_vec()));
                i += 4 + n;
            }
            TAG_FILE => {
                let n = u32::from_le_bytes(all[i + 8..i + 12].try_into().unwrap()) as usize;
                out.push((tag, all[i..i + 12 + n].to_vec()));
                i += 12 + n;
            }
            _ => {
                out.push((tag, all[i..i + 8].to_vec()));
                return out;
            }
        }
    }
}

#[test]
fn content_is_left_out_whatever_the_read_sizes() {
    // 10 header bytes, 5 content bytes, 3 padding, 4 content, 2 trailer.
    let stream = b"HHHHHHHHHHcccccPPPddddTT";
    let files = [(10, 5, "a"), (18, 4, "b/c")];
    for step in [1, 2, 3, 7, 100] {
        let recs = records(&record(stream, &files, step));
        let raw: Vec<u8> = recs
            .iter()
            .filter(|(t, _)| *t == TAG_RAW)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(raw, b"HHHHHHHHHHPPPTT", "step {step}");
        let kinds: Vec<u8> = recs.iter().map(|(t, _)| *t).collect();
        // (raw records may be split, but a file record always sits between them)
        let files_at: Vec<usize> = kinds
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TAG_FILE)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(files_at.len(), 2, "step {step}: {kinds:?}");
        assert_eq!(*kinds.last().unwrap(), TAG_END);
    }
}

#[test]
fn out_of_order_content_gives_up() {
    let mut out = Vec::new();
    let mut r = Recorder::new(&mut out).unwrap();
    r.observe(b"0123456789");
    r.content(4, 2, b"x");
    r.content(3, 1, b"y");
    assert!(!r.finish().unwrap());
}

/// A real tar unpacked with the recorder plays back byte for byte (padding, PAX
/// records, hard links, whiteouts, bytes after the end marker), and a file changed
/// on disk afterwards fails the diff_id check.
#[test]
fn unpacked_layer_plays_back_exactly() {
    use crate::store::unpack::{Ownership, UnpackOptions, unpack_recording};
    use crate::whiteout::{OpaqueStyle, Styles, WhiteoutStyle};
    let mut b = tar::Builder::new(Vec::new());
    fn put(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        put(&mut b, path, kind, data, link)
    };
    add("d/", tar::EntryType::Directory, b"", None);
    add("d/f", tar::EntryType::Regular, b"hello world", None);
    add("d/empty", tar::EntryType::Regular, b"", None);
    add("d/big", tar::EntryType::Regular, &vec![7u8; 3 << 20], None);
    add("d/l", tar::EntryType::Symlink, b"", Some("f"));
    add("d/h", tar::EntryType::Link, b"", Some("d/f"));
    add(".wh.gone", tar::EntryType::Regular, b"", None);
    add("d/.wh..wh..opq", tar::EntryType::Regular, b"", None);
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v"[..])])
        .unwrap();
    put(&mut b, "x", tar::EntryType::Regular, b"with xattr", None);
    let mut stream = b.into_inner().unwrap();
    stream.extend_from_slice(&[0u8; 4096]); // trailing zeros, as some tools write
    let diff_id = Digest::of(&stream);

    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("s")).unwrap();
    let lp = store.root().join(crate::store::at::layer(&diff_id));
    std::fs::create_dir_all(lp.join("diff")).unwrap();
    let opts = UnpackOptions {
        styles: Styles {
            whiteout: WhiteoutStyle::WhFile,
            opaque: OpaqueStyle::WhFile,
        },
        ownership: Ownership::OverrideStat,
        max_size: crate::store::unpack::DEFAULT_MAX_LAYER_SIZE,
    };
    let layout = std::fs::File::create(lp.join(TAR_SPLIT)).unwrap();
    let rec = Shared::new(Recorder::new(layout).unwrap());
    let dest = std::fs::File::open(lp.join("diff")).unwrap();
    {
        let mut tee = Tee::new(&stream[..], &rec);
        unpack_recording(&mut tee, dest.as_fd(), &opts, Some(&rec)).unwrap();
        io::copy(&mut tee, &mut io::sink()).unwrap();
    }
    assert!(rec.into_inner().finish().unwrap());

    let mut back = Vec::new();
    LayerTar::open(&store, &diff_id)
        .unwrap()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(
        back == stream,
        "played back {} bytes, want {}",
        back.len(),
        stream.len()
    );
    let layout_size = std::fs::metadata(lp.join(TAR_SPLIT)).unwrap().len();
    assert!(layout_size < 4096, "layout is {layout_size} bytes");

    std::fs::write(lp.join("diff/d/f"), b"HELLO WORLD").unwrap();
    let err = LayerTar::open(&store, &diff_id)
        .unwrap()
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

/// Unpacks `stream` as layer `Digest::of(stream)` of a new store, recording its layout
/// while unpacking when `record`.
fn unpacked(stream: &[u8], record: bool) -> (tempfile::TempDir, Store, Digest) {
    use crate::store::unpack::{DEFAULT_MAX_LAYER_SIZE, Ownership, UnpackOptions};
    use crate::whiteout::{OpaqueStyle, Styles, WhiteoutStyle};
    let diff_id = Digest::of(stream);
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("s")).unwrap();
    let lp = store.root().join(crate::store::at::layer(&diff_id));
    std::fs::create_dir_all(lp.join("diff")).unwrap();
    let opts = UnpackOptions {
        styles: Styles {
            whiteout: WhiteoutStyle::WhFile,
            opaque: OpaqueStyle::WhFile,
        },
        ownership: Ownership::OverrideStat,
        max_size: DEFAULT_MAX_LAYER_SIZE,
    };
    let dest = std::fs::File::open(lp.join("diff")).unwrap();
    if record {
        let layout = std::fs::File::create(lp.join(TAR_SPLIT)).unwrap();
        let rec = Shared::new(Recorder::new(layout).unwrap());
        {
            let mut tee = Tee::new(stream, &rec);
            crate::store::unpack::unpack_recording(&mut tee, dest.as_fd(), &opts, Some(&rec))
                .unwrap();
            io::copy(&mut tee, &mut io::sink()).unwrap();
        }
        assert!(rec.into_inner().finish().unwrap());
    } else {
        crate::store::unpack::unpack(stream, dest.as_fd(), &opts).unwrap();
    }
    (t, store, diff_id)
}

fn played_back(store: &Store, diff_id: &Digest) -> Vec<u8> {
    let mut back = Vec::new();
    LayerTar::open(store, diff_id)
        .unwrap()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    back
}

/// GNU long names and links, a GNU sparse file (its holes left on disk, its archive
/// bytes kept raw) and PAX records, as the bounded reader frames them, play back byte
/// for byte, recorded while unpacking or afterwards from the stream alone.
#[test]
fn long_names_and_sparse_files_play_back_exactly() {
    let long = format!("dir/{}/file", "n".repeat(200));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(7);
    b.append_data(&mut h.clone(), &long, &b"content"[..])
        .unwrap();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "dir/link", &long).unwrap();
    let mut stream = b.into_inner().unwrap();
    stream.truncate(stream.len() - 1024); // the end marker comes after the sparse file
    let mut s = tar::Header::new_gnu();
    s.set_path("sparse").unwrap();
    s.set_entry_type(tar::EntryType::GNUSparse);
    s.set_size(512);
    s.set_mode(0o644);
    {
        let g = s.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(1 << 20);
        g.sparse[0].set_length(512);
        g.set_real_size((1 << 20) + 512);
    }
    s.set_cksum();
    stream.extend_from_slice(s.as_bytes());
    stream.extend_from_slice(&[b'z'; 512]);
    stream.extend_from_slice(&[0u8; 1024]);

    let (_t, store, diff_id) = unpacked(&stream, true);
    let lp = store.root().join(crate::store::at::layer(&diff_id));
    assert_eq!(
        std::fs::read(lp.join("diff").join(&long)).unwrap(),
        b"content"
    );
    assert!(
        played_back(&store, &diff_id) == stream,
        "recorded while unpacking"
    );

    // Recorded afterwards from the stream alone (a layer of an older layerfs).
    let (_t, store, diff_id) = unpacked(&stream, false);
    let lp = store.root().join(crate::store::at::layer(&diff_id));
    let f = std::fs::File::create(lp.join(TAR_SPLIT)).unwrap();
    assert!(record_stream(&stream[..], f).unwrap());
    assert!(
        played_back(&store, &diff_id) == stream,
        "recorded from the stream"
    );
}

/// `record_stream` frames the tar with the bounded reader: an extension header over
/// its limit is refused from its header, before it is read.
#[test]
fn record_stream_keeps_the_readers_bounds() {
    let mut h = tar::Header::new_ustar();
    h.set_path("x").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(crate::tar_reader::MAX_PAX_LEN + 1);
    h.set_cksum();
    let err = record_stream(h.as_bytes().as_slice(), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
}

/// A name given twice (the second replaces the first on disk) makes the recorder give
/// up, unpacking or not: its first content is gone from the layer.
#[test]
fn a_replaced_entry_gives_up_the_layout() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(&mut h.clone(), "a", &b"one"[..]).unwrap();
    b.append_data(&mut h, "a", &b"two"[..]).unwrap();
    let stream = b.into_inner().unwrap();
    assert!(!record_stream(&stream[..], Vec::new()).unwrap());
    // A directory entry repeated replaces nothing.
    let mut b = tar::Builder::new(Vec::new());
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(tar::EntryType::Directory);
    d.set_mode(0o755);
    d.set_size(0);
    b.append_data(&mut d.clone(), "d/", io::empty()).unwrap();
    b.append_data(&mut h, "d/f", &b"one"[..]).unwrap();
    b.append_data(&mut d, "d/", io::empty()).unwrap();
    let stream = b.into_inner().unwrap();
    assert!(record_stream(&stream[..], Vec::new()).unwrap());
}
