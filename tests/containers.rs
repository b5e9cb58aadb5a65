//! The container lifecycle around the mount: `rm` (refused while mounted unless --force,
//! then `rmi` and `prune` free the image), `tag` (Docker's names, clashes), `mount NAME
//! DIR` of an existing container, `ps -s` and `df` sizes (shared layers counted once).
//! Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::lab::*;
use common::*;
use serde_json::Value;

#[test]
fn rm_refuses_a_mounted_container_then_frees_its_image() {
    let lab = Lab::new();
    let s = &lab.s;
    let id = s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    std::fs::write(m.join("hello"), "hi").unwrap();

    let err = s.fail(&["rm", "web"]);
    assert!(err.contains("mounted") && err.contains("--force"), "{err}");
    assert!(is_mounted(&m));
    assert!(s.root.join("containers/web/upper/hello").exists());

    // While the container exists, its image stays.
    let err = s.fail(&["rmi", "busybox"]);
    assert!(err.contains("web"), "{err}");

    assert_eq!(s.ok(&["rm", "--force", "web"]), "web\n");
    assert!(!is_mounted(&m));
    assert!(!s.root.join("containers/web").exists());
    assert!(
        names(&s.root.join("tmp")).is_empty(),
        "{:?}",
        names(&s.root.join("tmp"))
    );
    let ps = s.ok(&["ps", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&ps).unwrap(),
        serde_json::json!([])
    );

    let err = s.fail(&["rm", "web"]);
    assert!(err.contains("no such container"), "{err}");

    let out = s.ok(&["rmi", "busybox"]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert!(s.layer_names().is_empty());
}

#[test]
fn rm_of_an_unmounted_container_and_prune() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "c1"], "m");
    lab.umount(&m);
    // Untagged while the container holds it: the image stays, dangling.
    s.ok(&["rmi", "--force", "busybox"]);
    assert_eq!(s.layer_names().len(), 3);
    s.ok(&["prune"]);
    assert_eq!(
        s.layer_names().len(),
        3,
        "prune removed a container's image"
    );
    assert_eq!(s.ok(&["rm", "c1"]), "c1\n");
    let out = s.ok(&["prune"]);
    assert!(out.contains("Deleted"), "{out}");
    assert!(s.layer_names().is_empty());
    assert!(names(&s.root.join("images")).is_empty());
    // Several names: each one reported, the command fails if one failed.
    let err = s.fail(&["rm", "nope1", "nope2"]);
    assert!(err.contains("nope1") && err.contains("nope2"), "{err}");
}

#[test]
fn tag_normalizes_names_and_refuses_clashes() {
    let s = TestStore::new();
    let l3 = s.load(&bb("latest", Spelling::Path));
    let l1 = s.load(&bb("l1", Spelling::Path));
    s.ok(&["tag", "busybox", "registry.local:5000/team/app:v2"]);
    s.ok(&["tag", &l3[7..19], "app"]);
    let refs: Value =
        serde_json::from_slice(&std::fs::read(s.root.join("refs.json")).unwrap()).unwrap();
    assert_eq!(refs["registry.local:5000/team/app:v2"], l3.as_str());
    assert_eq!(refs["docker.io/library/app:latest"], l3.as_str());
    // Again, same image: fine.
    s.ok(&["tag", "busybox:latest", "docker.io/library/app"]);

    let before = s.listing();
    let err = s.fail(&["tag", "busybox:l1", "app:latest"]);
    assert!(
        err.contains("app:latest") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(s.listing(), before, "a refused tag changed the store");
    for bad in [
        ["nope:1", "x:1"],
        ["busybox", "UPPER:1"],
        ["busybox", "a:b:c"],
    ] {
        s.fail(&["tag", bad[0], bad[1]]);
    }
    assert_eq!(s.listing(), before);

    s.ok(&["tag", "--force", "busybox:l1", "app"]);
    assert_eq!(s.inspect("app")["id"], l1.as_str());
    assert_eq!(
        s.inspect("registry.local:5000/team/app:v2")["id"],
        l3.as_str()
    );
}

#[test]
fn mount_by_container_name_ps_sizes_and_df() {
    let lab = Lab::new();
    let s = &lab.s;
    let l3 = s.load(&bb("latest", Spelling::Path));
    let l1 = s.load(&bb("l1", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    std::fs::write(m.join("blob"), vec![7u8; 10_000]).unwrap();
    std::os::unix::fs::symlink("blob", m.join("link")).unwrap();
    lab.umount(&m);

    // The name alone mounts the container again.
    let m2 = lab.mount(&["web"], "m2");
    assert_eq!(std::fs::read(m2.join("blob")).unwrap().len(), 10_000);
    let ps: Value = serde_json::from_str(&s.ok(&["ps", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], "web");
    assert_eq!(ps[0]["mountpoint"], m2.to_str().unwrap());
    assert!(ps[0].get("size").is_none(), "{ps}");

    let image_size = s.inspect(&l3)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["unpacked_size"].as_u64().unwrap())
        .sum::<u64>();
    let ps: Value = serde_json::from_str(&s.ok(&["ps", "-s", "--json"])).unwrap();
    assert_eq!(ps[0]["size"], 10_000, "{ps}");
    assert_eq!(ps[0]["virtual_size"], image_size + 10_000, "{ps}");
    let table = s.ok(&["ps", "--size"]);
    assert!(table.contains("10kB (virtual "), "{table}");

    // l1's layer is l3's bottom layer: counted once.
    let df: Value = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();
    let images = &df["summary"][0];
    assert_eq!(images["type"], "Images");
    assert_eq!(images["total"], 2);
    assert_eq!(images["active"], 1);
    assert_eq!(images["size"], image_size);
    let img = |id: &str| {
        df["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()
            .clone()
    };
    let (a, b) = (img(&l3), img(&l1));
    assert_eq!(a["size"], image_size);
    assert_eq!(a["shared_size"], b["size"]);
    assert_eq!(b["shared_size"], b["size"]);
    assert_eq!(b["unique_size"], 0);
    assert_eq!(a["containers"], 1);
    let ctrs = &df["summary"][1];
    assert_eq!(
        (ctrs["total"].clone(), ctrs["active"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(ctrs["size"], 10_000);
    assert_eq!(df["layers"].as_array().unwrap().len(), 3);
    let text = s.ok(&["df"]);
    assert!(text.starts_with("TYPE "), "{text}");
    let verbose = s.ok(&["df", "-v"]);
    assert!(
        verbose.contains("Images space usage:") && verbose.contains("SHARED SIZE"),
        "{verbose}"
    );

    // A container that does not exist is not an image either.
    let err = s.fail(&["mount", "nosuch", m.to_str().unwrap()]);
    assert!(err.contains("nosuch"), "{err}");
}

/// Issue 19, defect 8: `rm NAME` racing `mount NAME DIR`. In no serial order do both
/// succeed (mounted, it cannot be removed; removed, there is nothing to mount), and a
/// container mounted by name is the one that was there, never a new, empty one. One
/// starts a little after the other, each first in turn, to meet it at each of its steps.
#[test]
fn rm_and_mount_by_name_never_both_succeed() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.dir("m");
    let containers = s.root.join("containers");
    for round in 0..40u64 {
        let name = format!("r{round}");
        lab.mount(&["busybox", "--name", &name], "m");
        std::fs::write(m.join("mine"), &name).unwrap();
        lab.umount(&m);
        let start = |args: &[&str]| {
            s.cmd()
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mount_args = ["mount", &name, m.to_str().unwrap()];
        let rm_args = ["rm", &name];
        let (first, second) = if round % 2 == 0 {
            (&mount_args[..], &rm_args[..])
        } else {
            (&rm_args[..], &mount_args[..])
        };
        let a = start(first);
        std::thread::sleep(std::time::Duration::from_millis(round / 2 % 10 * 3));
        let b = start(second);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let (mount, rm) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let (mounted, removed) = (mount.status.success(), rm.status.success());
        assert!(
            !(mounted && removed),
            "round {round}: both `mount {name}` and `rm {name}` succeeded; ps: {}",
            s.ok(&["ps", "-a"])
        );
        if mounted {
            assert_eq!(
                std::fs::read_to_string(m.join("mine")).unwrap(),
                name,
                "round {round}: mounted another container than {name}"
            );
            lab.umount(&m);
        }
        for (what, out) in [("mount", &mount), ("rm", &rm)] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("panicked"), "round {round}: {what}: {err}");
        }
        if !removed {
            s.ok(&["rm", &name]);
        }
        assert!(!containers.join(&name).exists(), "round {round}");
    }
}
