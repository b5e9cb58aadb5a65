//! `layerfs-overlay`: the fuse-overlayfs compatible entry point
//! (`-o lowerdir=…,upperdir=…,workdir=… MOUNTPOINT`), usable as containers-storage's
//! `mount_program` and as `mount -t fuse.layerfs-overlay`.

fn main() -> std::process::ExitCode {
    layerfs::cli::overlay::main()
}
