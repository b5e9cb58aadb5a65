//! `layerfs which IMAGE|CONTAINER PATH` (issue 25): the layer serving a path and what every
//! other layer says about it (shadowed and merged versions, whiteouts and opaque
//! directories that deleted older ones), for an image built with known history and for a
//! container whose own layer changed it. Needs root and /dev/fuse (the container part).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

use common::*;

/// `which --json` rows as (number, status or what the layer removes, by).
fn rows(s: &TestStore, target: &str, path: &str) -> (Vec<(String, String, String)>, bool) {
    let out = s.run(&["which", "--json", target, path]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let rows = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let what = r["status"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("hides:{}", r["hides"].as_str().unwrap()));
            let what = match r["hides"].as_str() {
                Some(h) if r["status"].is_string() => format!("{what}+hides:{h}"),
                _ => what,
            };
            let by = r["by"].as_str().unwrap_or("").to_string();
            (r["number"].as_str().unwrap().to_string(), what, by)
        })
        .collect();
    (rows, out.status.success())
}

fn row(n: &str, what: &str, by: &str) -> (String, String, String) {
    (n.into(), what.into(), by.into())
}

#[test]
fn which_layer_serves_shadows_and_deletes() {
    let s = TestStore::new();
    let spec = ImageSpec::new(vec![
        vec![
            file("etc/conf", b"v1"),
            dir("d"),
            file("d/x", b"x"),
            file("f", b"f"),
        ],
        vec![file("etc/conf", b"v22"), file(".wh.f", b"")],
        vec![dir("d"), file("d/.wh..wh..opq", b""), file("d/y", b"y")],
        vec![file("etc/other", b"o")],
    ])
    .comp(Comp::Plain);
    let b = write_oci(&s.scratch("img"), &spec, "latest");
    s.load(&format!("oci:{}:latest", b.path.display()));
    let id = |n: usize| b.diff_ids[n - 1].clone();

    let (r, ok) = rows(&s, "img", "/etc/conf");
    assert!(ok);
    assert_eq!(r, vec![row("2", "serves", ""), row("1", "shadowed", "")]);
    let (r, ok) = rows(&s, "img", "etc");
    assert!(ok, "a relative path names the same");
    assert_eq!(
        r,
        vec![
            row("4", "serves", ""),
            row("2", "merged", ""),
            row("1", "merged", "")
        ]
    );
    let (r, ok) = rows(&s, "img", "/f");
    assert!(!ok, "a deleted path is an error");
    assert_eq!(
        r,
        vec![row("2", "hides:whiteout", ""), row("1", "deleted", &id(2))]
    );
    let (r, ok) = rows(&s, "img", "/d/x");
    assert!(!ok);
    assert_eq!(
        r,
        vec![row("3", "hides:opaque", ""), row("1", "deleted", &id(3))]
    );
    let (r, _) = rows(&s, "img", "/d");
    assert_eq!(
        r,
        vec![
            row("3", "serves+hides:opaque", ""),
            row("1", "deleted", &id(3))
        ]
    );
    let err = s.fail(&["which", "img", "/f"]);
    assert!(
        err.contains("/f is not in image img:latest: deleted in layer"),
        "{err}"
    );
    let err = s.fail(&["which", "img", "/nope"]);
    assert!(err.contains("/nope is not in any layer"), "{err}");
    let err = s.fail(&["which", "img", "/etc/../x"]);
    assert!(err.contains("`..` is not allowed"), "{err}");
    // The table names the layers the way `history` counts them.
    let table = s.ok(&["which", "img", "/etc/conf"]);
    assert!(
        table.contains(&id(2)[..19]) && table.contains("serves"),
        "{table}"
    );

    // A container's own layer is its top one, mounted or not.
    require_fuse();
    let mnt = s.scratch("mnt");
    s.ok(&["mount", "--name", "c", "img:latest", mnt.to_str().unwrap()]);
    std::fs::write(mnt.join("etc/conf"), "mine").unwrap();
    std::fs::remove_file(mnt.join("etc/other")).unwrap();
    let (r, _) = rows(&s, "c", "/etc/conf");
    assert_eq!(
        r,
        vec![
            row("upper", "serves", ""),
            row("2", "shadowed", ""),
            row("1", "shadowed", "")
        ]
    );
    s.ok(&["umount", "c"]);
    let (r, ok) = rows(&s, "c", "/etc/other");
    assert!(!ok);
    assert_eq!(r[0], row("upper", "hides:whiteout", ""));
    assert_eq!(r[1].0, "4");
    assert_eq!(r[1].1, "deleted");
}
