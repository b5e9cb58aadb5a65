//! Directories merged from many lower layers, where layerfs answers lookups from an
//! index of the lower layers' names instead of probing every layer: whatever a name's
//! story (added, replaced, deleted by any whiteout dialect, re-added, hidden by an opaque
//! directory), `stat` through the mount agrees with a model of the layers and with the
//! merged listing, before and after writes, renames and a remount. Needs root and
//! /dev/fuse.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::mount::*;

const DIRS: [&str; 4] = ["d0", "d1", "d0/s", "d2"];
const NAMES: [&str; 10] = ["a", "b", "c", "e", "f", "g", "h", "lib.so", "x.py", "y"];

/// A tiny deterministic generator, so that a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Builds `depth` layers over the directories of `DIRS` and returns what the merged view
/// must hold: directory -> name -> content.
fn build(l: &mut Layers, depth: usize, seed: u64) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut rng = Rng(seed);
    let mut model: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..depth {
        let layer = l.add();
        for d in DIRS {
            layer.dir(d);
            // Now and then a directory turns opaque: nothing below it shows any more.
            // Never in the bottom layer, where it would hide nothing.
            if i > 0 && rng.below(12) == 0 {
                match rng.below(3) {
                    0 => layer.opaque(d),
                    1 => layer.opaque_wh(d),
                    _ => layer.opaque_user(d),
                };
                // Its subdirectories stay (they are in this layer too), emptied.
                for (k, v) in model.iter_mut() {
                    if k == d || k.starts_with(&format!("{d}/")) {
                        v.clear();
                    }
                }
            }
            let mut xattr_whiteouts = false;
            let entries = model.entry(d.to_string()).or_default();
            for n in NAMES {
                let rel = format!("{d}/{n}");
                match rng.below(10) {
                    0..=1 => {
                        let content = format!("{rel} of layer {i}");
                        layer.file(&rel, &content);
                        entries.insert(n.to_string(), content);
                    }
                    2 if entries.contains_key(n) => {
                        match rng.below(3) {
                            0 => layer.whiteout(&rel),
                            1 => layer.wh_file(&rel),
                            _ => {
                                xattr_whiteouts = true;
                                layer
                                    .file(&rel, "")
                                    .xattr(&rel, "trusted.overlay.whiteout", b"")
                            }
                        };
                        entries.remove(n);
                    }
                    _ => {}
                }
            }
            if xattr_whiteouts {
                // Linux 6.8's marking of a directory that holds xattr whiteouts (it is
                // not opaque itself).
                layer.xattr(d, "trusted.overlay.opaque", b"x");
            }
        }
    }
    model
}

/// Every name a lookup may ask for in `d`: the pool, their whiteout spellings, and names
/// that no layer has.
fn probes() -> Vec<String> {
    let mut v: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    v.extend(NAMES.iter().map(|n| format!(".wh.{n}")));
    v.extend(["missing", ".wh..wh..opq", "s2", "lib.so.6"].map(String::from));
    v
}

fn check(m: &Mount, model: &BTreeMap<String, BTreeMap<String, String>>, when: &str) {
    for (d, entries) in model {
        for n in probes() {
            let p = m.p(&format!("{d}/{n}"));
            match entries.get(&n) {
                Some(content) => assert_eq!(read(&p), *content, "{when}: {d}/{n}"),
                None if d == "d0" && n == "s" => assert!(p.is_dir()),
                None => assert!(!exists(&p), "{when}: {d}/{n} shows, none expected"),
            }
        }
        let mut want: Vec<String> = entries.keys().cloned().collect();
        if d == "d0" {
            want.push("s".into());
        }
        want.sort();
        assert_eq!(ls(&m.p(d)), want, "{when}: listing of {d}");
    }
}

#[test]
fn lookups_in_deep_stacks_agree_with_the_layers() {
    for (depth, seed) in [(3, 1), (8, 2), (24, 3)] {
        let mut l = Layers::new();
        let mut model = build(&mut l, depth, seed);
        let mut m = Mount::new(&l.lowerdirs());
        check(&m, &model, &format!("depth {depth} seed {seed}"));

        // Writes land in the upper layer, which is looked at before any index.
        let d0 = model.get_mut("d0").unwrap();
        for n in ["a", "missing"] {
            fs::write(m.p(&format!("d0/{n}")), "new").unwrap();
            d0.insert(n.to_string(), "new".into());
        }
        let lower = NAMES.iter().find(|n| **n != "a" && d0.contains_key(**n));
        for n in lower.into_iter().chain(&["a"]) {
            fs::remove_file(m.p(&format!("d0/{n}"))).unwrap();
            d0.remove(*n);
        }
        // A directory of many layers renamed: its new name merges the same layers.
        fs::rename(m.p("d1"), m.p("d1moved")).unwrap();
        let d1 = model.remove("d1").unwrap();
        model.insert("d1moved".into(), d1);
        let when = format!("depth {depth} seed {seed}, after writes");
        check(&m, &model, &when);
        assert!(!exists(&m.p("d1")));
        m.remount();
        check(&m, &model, &format!("{when} and a remount"));
    }
}
