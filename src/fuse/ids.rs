//! How the mount shows owners: the union's ids (what the image and the container layer
//! say) mapped for whoever looks, as fuse-overlayfs' `uidmapping=`, `gidmapping=`,
//! `squash_to_uid=` and `squash_to_gid=` do. Kept at the edge: the union, and so diff,
//! commit and export, always see the unmapped ids.

/// The overflow id the kernel shows for ids outside a user namespace's map.
pub const OVERFLOW_ID: u32 = 65534;

/// One contiguous range: ids `stored..stored+count` show as `shown..shown+count`.
/// Spelled `STORED:SHOWN:COUNT`, as fuse-overlayfs reads it (its "host" id is the one on
/// disk, its "to" id the one the kernel gets) and as podman's `--uidmap
/// CONTAINER:HOST:COUNT` means it for a mount: the image's (container's) id, then the id
/// the mount shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    shown: u32,
    stored: u32,
    count: u32,
}

/// A mapping of one kind of id (uids or gids). The default shows every id as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    ranges: Vec<Range>,
    squash: Option<u32>,
    /// The squash id, when it comes from the kernel (a caller, a chown), stands for this
    /// stored id (see [`Ids::user_as_root`]).
    squash_stores: Option<u32>,
}

impl Ids {
    /// Every id shows as `id` (fuse-overlayfs' `squash_to_uid`): a chown to it changes
    /// nothing.
    pub fn squashed(id: u32) -> Ids {
        Ids {
            squash: Some(id),
            ..Ids::default()
        }
    }

    /// A plain user's own mount outside a user namespace: every file shows as theirs, and
    /// they play the container's root, as rootless runc and podman map them. What they
    /// create or chown to themselves is stored as root's (a rootless container's root,
    /// whose uid is theirs on the host, makes what a rootful one would).
    pub fn user_as_root(id: u32) -> Ids {
        Ids {
            squash: Some(id),
            squash_stores: Some(0),
            ..Ids::default()
        }
    }

    /// `STORED:SHOWN:COUNT[:STORED:SHOWN:COUNT…]`, fuse-overlayfs' spelling
    /// (containers-storage writes it with a leading colon).
    pub fn parse(spec: &str) -> Result<Ids, String> {
        let bad = || format!("invalid id mapping {spec:?}: expected CONTAINER:HOST:COUNT[:…]");
        let nums = spec
            .strip_prefix(':')
            .unwrap_or(spec)
            .split(':')
            .map(|n| n.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<u32>, String>>()?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(bad());
        }
        let mut ranges = Vec::new();
        for c in nums.chunks(3) {
            let r = Range {
                stored: c[0],
                shown: c[1],
                count: c[2],
            };
            if r.count == 0
                || r.shown.checked_add(r.count - 1).is_none()
                || r.stored.checked_add(r.count - 1).is_none()
            {
                return Err(bad());
            }
            ranges.push(r);
        }
        Ok(Ids {
            ranges,
            ..Ids::default()
        })
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty() && self.squash.is_none()
    }

    /// The options that give this mapping again (`uidmapping=…`, `squash_to_uid=…` for
    /// `kind` "uid"), for a daemon started with them.
    pub fn options(&self, kind: &str) -> Vec<String> {
        let mut o = Vec::new();
        if !self.ranges.is_empty() {
            let spec: Vec<String> = self
                .ranges
                .iter()
                .map(|r| format!("{}:{}:{}", r.stored, r.shown, r.count))
                .collect();
            o.push(format!("{kind}mapping={}", spec.join(":")));
        }
        if let Some(id) = self.squash {
            o.push(format!("squash_to_{kind}={id}"));
        }
        o
    }

    /// The id the mount shows for stored id `id`; the overflow id when no range has it.
    pub fn show(&self, id: u32) -> u32 {
        if let Some(s) = self.squash {
            return s;
        }
        if self.ranges.is_empty() {
            return id;
        }
        self.ranges
            .iter()
            .find(|r| id >= r.stored && id - r.stored < r.count)
            .map_or(OVERFLOW_ID, |r| r.shown + (id - r.stored))
    }

    /// The id to store for id `id` as the kernel sends it (a caller, a chown); `None`
    /// when no range reaches it.
    pub fn store(&self, id: u32) -> Option<u32> {
        if let Some(stored) = self.squash_stores
            && self.squash == Some(id)
        {
            return Some(stored);
        }
        if self.ranges.is_empty() {
            return Some(id);
        }
        self.ranges
            .iter()
            .find(|r| id >= r.shown && id - r.shown < r.count)
            .map(|r| r.stored + (id - r.shown))
    }

    /// What a chown to `id` stores: nothing when ids are squashed to it (every file
    /// already shows as `id`), else the stored id.
    pub fn chown(&self, id: u32) -> Option<Option<u32>> {
        if self.squash == Some(id) && self.squash_stores.is_none() {
            return Some(None);
        }
        self.store(id).map(Some)
    }
}

/// Owner and group mappings of a mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    pub uid: Ids,
    pub gid: Ids,
}

impl IdMap {
    pub fn is_identity(&self) -> bool {
        self.uid.is_identity() && self.gid.is_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_id_mapping_as_podman_writes_it() {
        // podman --userns=keep-id for uid 1006 with a 198994-id subuid range: what is
        // stored as id s (podman's namespace) must show as the id the container's own
        // user namespace turns back into s: 0 → 1, the user's 1006 → 0.
        let m = Ids::parse(":0:1:1006:1006:0:1:1007:1007:198994").unwrap();
        assert_eq!(m.show(0), 1);
        assert_eq!(m.show(1000), 1001);
        assert_eq!(m.show(1006), 0);
        assert_eq!(m.show(1007), 1007);
        assert_eq!(m.show(1007 + 198993), 1007 + 198993);
        assert_eq!(m.show(1007 + 198994), OVERFLOW_ID);
        assert_eq!(m.store(1), Some(0));
        assert_eq!(m.store(0), Some(1006));
        assert_eq!(m.store(1007), Some(1007));
        assert_eq!(m.store(300000), None);
        let again = Ids::parse(&m.options("uid")[0]["uidmapping=".len()..]).unwrap();
        assert_eq!(again, m);
        assert_eq!(Ids::squashed(3).options("gid"), ["squash_to_gid=3"]);
    }

    #[test]
    fn squash_and_identity() {
        let s = Ids::squashed(1004);
        assert_eq!((s.show(0), s.show(100000)), (1004, 1004));
        assert_eq!(s.chown(1004), Some(None));
        assert_eq!(s.chown(5), Some(Some(5)));
        let u = Ids::user_as_root(1004);
        assert_eq!((u.show(0), u.show(1000)), (1004, 1004));
        assert_eq!((u.store(1004), u.chown(1004)), (Some(0), Some(Some(0))));
        assert!(Ids::default().is_identity());
        assert_eq!(Ids::default().show(7), 7);
    }

    #[test]
    fn bad_specs() {
        for bad in [
            "",
            "0:1",
            "0:1:0",
            "a:b:c",
            "0:1:2:3",
            "4294967295:0:2",
            "0:0:-1",
        ] {
            assert!(Ids::parse(bad).is_err(), "{bad}");
        }
    }
}
