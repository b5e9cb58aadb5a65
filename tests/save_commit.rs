//! `layerfs save` of images `commit` made: a container of busybox is changed through its
//! mount and committed, a container of that image is changed and committed again (so one
//! committed layer sits below the top one), and the result, saved in every format, loads
//! into a fresh store as the same image (every layer checked against its diff_id on the
//! way in). Committed layers are installed with a recorded tar layout; without one (as a
//! layerfs before layouts left them) `save` writes them again with `commit`'s own writer,
//! byte for byte the same archive. Needs root and /dev/fuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::PathBuf;

use common::lab::*;
use common::*;

/// Changes of every kind a changeset tar carries: new, changed and deleted files, an
/// opaque directory, a renamed directory, hard links, modes, big owners, xattrs, a
/// symlink, a device node and a fifo.
const CHANGES: &str = "
echo new > data/added.txt
echo more >> data/modify-me
rm data/original.txt
rm -rf opaque-dir; mkdir opaque-dir; echo x > opaque-dir/fresh
mv usr/local usr/moved-local
ln data/new-file data/new-link
echo through-a-link >> data/hardlink-to-lower
chmod 4711 data/empty
chown 3000000:3000001 data/uid-100000
setfattr -n user.added -v hello data/xattr-file
mkdir -p newdir/sub; echo y > newdir/sub/f; ln -s ../sub newdir/sub/link
mknod newdir/null c 1 3
mkfifo newdir/fifo
";

/// Changes made on top of the committed image.
const MORE_CHANGES: &str = "
echo third > third
rm data/added.txt
rm -rf newdir/sub
echo again >> data/modify-me
";

fn image_id(out: &str) -> String {
    let id = out.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    id
}

/// The layout files of the image's last `n` layers.
fn top_layouts(s: &TestStore, image: &str, n: usize) -> Vec<PathBuf> {
    let v = s.inspect(image);
    let layers = v["layers"].as_array().unwrap();
    layers[layers.len() - n..]
        .iter()
        .map(|l| {
            let hex = &l["diff_id"].as_str().unwrap()[7..];
            s.root.join("layers").join(hex).join("tar-split.zst")
        })
        .collect()
}

/// Saves `image` in every format; each output loads into a fresh store as image `id`.
/// Returns the docker-archive's bytes.
fn save_every_format(s: &TestStore, image: &str, id: &str, label: &str) -> Vec<u8> {
    let out_dir = s.scratch(&format!("out-{label}"));
    let mut docker_archive = Vec::new();
    for (format, compress) in [
        ("docker-archive", None),
        ("oci", None),
        ("oci-archive", None),
        ("oci", Some("zstd")),
    ] {
        let what = format!("{label}: {format} {compress:?}");
        let out = out_dir.join(format!("{format}-{}", compress.unwrap_or("default")));
        let out_s = out.display().to_string();
        let mut args = vec!["save", image, "--format", format, "-o", &out_s];
        if let Some(c) = compress {
            args.extend(["--compress", c]);
        }
        s.ok(&args);
        let other = TestStore::new();
        assert_eq!(other.load(&out_s), id, "{what}");
        assert_eq!(other.inspect(image)["id"], id, "{what}");
        if format == "docker-archive" {
            docker_archive = fs::read(&out).unwrap();
        }
    }
    docker_archive
}

#[test]
fn committed_images_save_and_load_as_the_same_image() {
    let lab = Lab::new();
    let s = &lab.s;
    s.load(&bb("latest", Spelling::Path));
    let m = lab.mount(&["busybox", "--name", "web"], "m");
    sh_in(&m, CHANGES);
    // Committed while mounted, then once more on top of the committed image.
    let v2 = image_id(&s.ok(&["commit", "web", "myapp:v2", "-m", "first"]));
    let n = lab.mount(&["myapp:v2", "--name", "web2"], "n");
    sh_in(&n, MORE_CHANGES);
    let v3 = image_id(&s.ok(&["commit", "web2", "myapp:v3", "-m", "second"]));
    lab.umount(&m);
    lab.umount(&n);

    // Both committed layers were installed with their layout.
    let layouts = top_layouts(s, "myapp:v3", 2);
    for l in &layouts {
        assert!(l.is_file(), "{} missing", l.display());
    }
    let recorded = save_every_format(s, "myapp:v3", &v3, "recorded");
    save_every_format(s, "myapp:v2", &v2, "recorded-v2");

    // Without layouts, as a layerfs before them left committed layers: commit's writer
    // gives the same bytes again.
    for l in &layouts {
        fs::remove_file(l).unwrap();
    }
    let rewritten = save_every_format(s, "myapp:v3", &v3, "rewritten");
    assert!(
        rewritten == recorded,
        "the docker-archive differs without layouts"
    );
    for l in &layouts {
        assert!(!l.exists(), "save wrote into the store: {}", l.display());
    }
    assert!(names(&s.root.join("tmp")).is_empty());
}
