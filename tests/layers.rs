//! `layerfs layers IMAGE|CONTAINER` (issue 25): per layer, what it adds, changes and
//! deletes, its size, and the bytes later layers hide (dive's waste), checked on an image
//! built with known waste (a 1 MiB file added and then deleted, a file replaced, a
//! directory made opaque) and on a container whose own layer changes more. Needs root
//! and /dev/fuse (the container part).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

use common::*;

const MIB: u64 = 1 << 20;

/// (number, size, added, changed, deleted, hidden) of each layer, newest first; and the
/// totals (size, hidden).
#[allow(clippy::type_complexity)]
fn layers(s: &TestStore, target: &str) -> (Vec<(String, u64, u64, u64, u64, u64)>, (u64, u64)) {
    let v: Value = serde_json::from_str(&s.ok(&["layers", "--json", target])).unwrap();
    let n = |l: &Value, k: &str| l[k].as_u64().unwrap();
    let rows = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["number"].as_str().unwrap().to_string(),
                n(l, "size"),
                n(l, "added"),
                n(l, "changed"),
                n(l, "deleted"),
                n(l, "hidden"),
            )
        })
        .collect();
    (rows, (n(&v, "size"), n(&v, "hidden")))
}

#[test]
fn layers_count_changes_and_the_bytes_later_layers_hide() {
    let s = TestStore::new();
    let spec = ImageSpec::new(vec![
        vec![
            file("big", &vec![0u8; MIB as usize]),
            file("a", b"a1"),
            dir("d"),
            file("d/x", b"0123456789"),
            hardlink("a-again", "a"),
        ],
        vec![file(".wh.big", b""), file("a", b"a22")],
        vec![dir("d"), file("d/.wh..wh..opq", b""), file("d/y", b"y")],
    ])
    .comp(Comp::Plain);
    let b = write_oci(&s.scratch("img"), &spec, "latest");
    s.load(&format!("oci:{}:latest", b.path.display()));
    let (rows, totals) = layers(&s, "img");
    assert_eq!(
        rows,
        vec![
            ("3".into(), 1, 1, 0, 1, 0),
            ("2".into(), 3, 0, 1, 1, 0),
            // a hard link's bytes count once, and stay visible through a-again when a
            // is replaced; d/x is gone with the opaque d
            ("1".into(), MIB + 12, 4, 0, 0, MIB + 10),
        ]
    );
    assert_eq!(totals, (MIB + 16, MIB + 10));
    let table = s.ok(&["layers", "img"]);
    assert!(table.contains("hidden by later layers"), "{table}");

    // A container's own layer is its top one.
    require_fuse();
    let mnt = s.scratch("mnt");
    s.ok(&["mount", "--name", "c", "img:latest", mnt.to_str().unwrap()]);
    std::fs::write(mnt.join("n"), "four").unwrap();
    std::fs::remove_file(mnt.join("d/y")).unwrap();
    s.ok(&["umount", "c"]);
    let (rows, _) = layers(&s, "c");
    assert_eq!(rows[0], ("upper".into(), 4, 1, 0, 1, 0));
    assert_eq!(rows[1], ("3".into(), 1, 1, 0, 1, 1), "d/y is now hidden");
}
