//! The union core's attributes as the writer reads them (`export` and `commit` both read a
//! union, through `crate::container::read`): an entry's [`Leaf`]. The core itself never
//! learns about tar.

use super::Leaf;
use crate::union::Attr;

impl Leaf {
    /// From the attributes the union core shows.
    pub fn of_attr(a: &Attr) -> Leaf {
        let rdev = u64::from(a.rdev);
        Leaf {
            kind: a.kind,
            perm: u32::from(a.perm),
            uid: u64::from(a.uid),
            gid: u64::from(a.gid),
            size: a.size,
            mtime: a.mtime.sec,
            rdev: (
                nix::sys::stat::major(rdev) as u32,
                nix::sys::stat::minor(rdev) as u32,
            ),
            ino: a.ino,
            nlink: u64::from(a.nlink),
        }
    }
}
