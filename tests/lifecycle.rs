//! The store over time: rmi and prune (Docker's rules, containers protect their images),
//! concurrent loads, and a load killed in the middle of an unpack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn rmi_keeps_shared_layers_and_drops_the_rest() {
    let s = TestStore::new();
    let l1 = s.load(&bb("l1", Spelling::Path));
    let l3 = s.load(&bb("latest", Spelling::Path));
    assert_eq!(s.layer_names().len(), 3);
    let base = s.layer_names();
    let out = s.ok(&["rmi", "busybox:latest"]);
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    // Only the asked tag was loaded, so the image loses its last name and goes.
    assert!(out.contains(&format!("Deleted: {l3}")), "{out}");
    let left = s.layer_names();
    assert_eq!(left.len(), 1, "{left:?}");
    let l1_diff = s.inspect(&l1)["layers"][0]["diff_id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert_eq!(left, std::slice::from_ref(&l1_diff));
    assert!(base.contains(&l1_diff));
    let images = s.ok(&["images"]);
    assert!(
        images.contains("l1") && !images.contains("latest"),
        "{images}"
    );
    s.ok(&["rmi", &l1[7..19]]);
    assert!(s.layer_names().is_empty());
    assert!(names(&s.root.join("images")).is_empty());
    assert!(names(&s.root.join("tmp")).is_empty());
}

#[test]
fn rmi_of_one_tag_keeps_an_image_with_other_tags() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Path));
    s.ok(&[
        "load",
        "-q",
        "--tag",
        "other:1",
        &bb("latest", Spelling::Path),
    ]);
    let out = s.ok(&["rmi", "busybox"]);
    assert!(
        out.contains("Untagged: busybox:latest") && !out.contains("Deleted"),
        "{out}"
    );
    assert_eq!(s.inspect("other:1")["id"], id.as_str());
    assert_eq!(s.layer_names().len(), 3);
    // By id with several names: refused without --force.
    s.ok(&[
        "load",
        "-q",
        "--tag",
        "third:1",
        &bb("latest", Spelling::Path),
    ]);
    let err = s.fail(&["rmi", &id]);
    assert!(err.contains("several names"), "{err}");
    let out = s.ok(&["rmi", "--force", &id]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(s.layer_names().is_empty());
}

fn add_container(s: &TestStore, name: &str, image: &str) {
    let d = s.root.join("containers").join(name);
    std::fs::create_dir_all(&d).unwrap();
    let rec = serde_json::json!({"name": name, "image": image, "created": "2024-01-01T00:00:00Z"});
    std::fs::write(d.join("container.json"), serde_json::to_vec(&rec).unwrap()).unwrap();
}

#[test]
fn containers_protect_their_images() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Path));
    add_container(&s, "c1", &id);
    let err = s.fail(&["rmi", "busybox"]);
    assert!(err.contains("c1"), "{err}");
    let err = s.fail(&["rmi", &id]);
    assert!(err.contains("c1"), "{err}");
    // Forced: the tag goes, the image and its layers stay.
    let out = s.ok(&["rmi", "-f", "busybox"]);
    assert!(
        out.contains("Untagged") && !out.contains("Deleted"),
        "{out}"
    );
    s.ok(&["prune"]);
    assert_eq!(s.layer_names().len(), 3);
    assert_eq!(s.inspect(&id)["id"], id.as_str());
    // Once the container is gone, prune drops the dangling image and its layers.
    std::fs::remove_dir_all(s.root.join("containers/c1")).unwrap();
    let out = s.ok(&["prune"]);
    assert!(out.contains(&format!("Deleted image: {id}")), "{out}");
    assert!(s.layer_names().is_empty(), "{out}");
}

#[test]
fn prune_removes_unreferenced_layers_and_leftovers() {
    let s = TestStore::new();
    let id = s.load(&bb("latest", Spelling::Path));
    // A stray layer (as a load killed after installing layers leaves), and tmp leftovers.
    let stray = "ab".repeat(32);
    std::fs::create_dir_all(s.root.join("layers").join(&stray).join("diff/sub")).unwrap();
    std::fs::create_dir_all(s.root.join("tmp/layer-deadbeef-1-0/diff/x")).unwrap();
    std::fs::write(s.root.join("tmp/layer-deadbeef-1-0/diff/x/f"), b"f").unwrap();
    let out = s.ok(&["prune"]);
    assert!(
        out.contains(&format!("Deleted layer: sha256:{stray}")),
        "{out}"
    );
    assert!(out.contains("leftover"), "{out}");
    assert!(names(&s.root.join("tmp")).is_empty());
    assert_eq!(s.layer_names().len(), 3);
    assert_eq!(s.inspect("busybox")["id"], id.as_str());
}

#[test]
fn concurrent_loads_of_one_image() {
    let s = TestStore::new();
    let sources = [
        bb("latest", Spelling::Path),
        format!("{}/busybox-zstd/oci", fixtures().display()),
        bb("latest", Spelling::Path),
    ];
    let children: Vec<_> = sources
        .iter()
        .map(|src| {
            s.cmd()
                .args(["load", "-q", src])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .to_string(),
        );
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(s.layer_names().len(), 3);
    assert!(
        names(&s.root.join("tmp")).is_empty(),
        "{:?}",
        names(&s.root.join("tmp"))
    );
    assert_eq!(names(&s.root.join("images")).len(), 1);
}

#[test]
fn killed_load_leaves_nothing_visible() {
    let s = TestStore::new();
    // A layer big enough to take a while to unpack (a debug build is slower, so less
    // is enough there); zeros compress to almost nothing.
    let size = if cfg!(debug_assertions) {
        128 << 20
    } else {
        768 << 20
    };
    let (blob, diff_id) = big_zero_layer(size);
    let mut spec = ImageSpec::new(vec![]);
    spec.diff_ids = Some(vec![diff_id]);
    let b = write_oci_blobs(&s.scratch("big"), &spec, &[blob], "latest");
    // Something else in the store that must survive.
    s.load(&bb("l1", Spelling::Path));
    let before_layers = s.layer_names();
    let before_refs = std::fs::read(s.root.join("refs.json")).unwrap();

    let mut child = s
        .cmd()
        .args(["load", "-q", &b.path.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the unpack is under way (a staged layer with data), then kill -9.
    let start = Instant::now();
    let tmp = s.root.join("tmp");
    loop {
        let busy = names(&tmp).iter().any(|n| {
            n.starts_with("layer-")
                && std::fs::metadata(tmp.join(n).join("diff/big")).is_ok_and(|m| m.len() > 0)
        });
        if busy {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("load finished ({st}) before it could be killed; make the layer bigger: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "unpack never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    assert_eq!(
        s.layer_names(),
        before_layers,
        "a half layer became visible"
    );
    assert_eq!(
        std::fs::read(s.root.join("refs.json")).unwrap(),
        before_refs
    );
    assert_eq!(names(&s.root.join("images")).len(), 1);
    let imgs = s.ok(&["images"]);
    assert_eq!(imgs.lines().count(), 2, "{imgs}");
    assert!(
        !names(&tmp).is_empty(),
        "the killed load left nothing to clean?"
    );
    let out = s.ok(&["prune"]);
    assert!(out.contains("leftover"), "{out}");
    assert!(names(&tmp).is_empty());
    assert_eq!(s.layer_names(), before_layers);
    // And the image loads fine afterwards.
    s.load(&b.path.display().to_string());
}

#[test]
fn next_load_cleans_leftovers_when_idle() {
    let s = TestStore::new();
    s.load(&bb("l1", Spelling::Path));
    std::fs::create_dir_all(s.root.join("tmp/layer-0000-99999-0/diff")).unwrap();
    s.load(&bb("l2", Spelling::Path));
    assert!(names(&s.root.join("tmp")).is_empty());
}
