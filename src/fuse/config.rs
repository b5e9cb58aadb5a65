//! How a union is mounted: who may enter, which generic mount options apply.

use fuser::{Config, MountOption, SessionACL};

/// Who besides the mounting user may enter a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Only processes whose uids and gids are all the mounting user's (the kernel checks
    /// it before any request reaches us). For a mount made by root: root processes, such
    /// as a container that runc runs as root.
    #[default]
    Owner,
    /// The mounting user and root (`allow_root`).
    OwnerAndRoot,
    /// Every local user (`allow_other`); permissions are then checked by the kernel
    /// (`default_permissions`) from the owners and modes we report.
    All,
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Shown as the source in /proc/mounts.
    pub fsname: String,
    pub read_only: bool,
    /// Who may enter the mount.
    pub access: Access,
    /// Honour device nodes (`dev`): whoever may enter the mount can open the devices
    /// the layers hold, with their modes. Off: `nodev`, opening one fails with EACCES.
    pub dev: bool,
    /// Honour setuid/setgid bits (`suid`): whoever may enter the mount can run the
    /// layers' setuid-root binaries as root. Off: `nosuid`.
    pub suid: bool,
    /// `noatime` on the mount itself (what reads do to atimes is the union's `Atime`).
    pub noatime: bool,
    pub threads: usize,
    /// How owners show.
    pub ids: super::IdMap,
}

impl MountConfig {
    pub fn fuser_config(&self) -> Config {
        let mut c = Config::default();
        c.mount_options = vec![
            MountOption::FSName(self.fsname.clone()),
            MountOption::Subtype("layerfs".into()),
            MountOption::DefaultPermissions,
            if self.read_only {
                MountOption::RO
            } else {
                MountOption::RW
            },
            // Always said explicitly: fuser's defaults differ between its mount paths.
            if self.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
            if self.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
        ];
        if self.noatime {
            c.mount_options.push(MountOption::NoAtime);
        }
        c.acl = match self.access {
            Access::Owner => SessionACL::Owner,
            Access::OwnerAndRoot => SessionACL::RootAndOwner,
            Access::All => SessionACL::All,
        };
        c.n_threads = Some(self.threads.max(1));
        c.clone_fd = self.threads > 1;
        c
    }
}
