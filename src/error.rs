//! Errors of the image readers and the layer store.
//!
//! One enum, [`Error`], whose variants carry what went wrong and with what: the file, the
//! layer (by digest), the tar entry. Its `Display` texts never repeat their `source`, so
//! the CLI's `{:#}` chain reads `layer sha256:…: entry "a/b": path escapes the layer`.
//! Nothing here panics or formats backtraces; user mistakes and hostile input are values.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, Mismatch};

/// The crate-wide result type of the image and store modules.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file or directory.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An I/O error in a step that has no single file (named by `what`).
    #[error("{what}")]
    IoWhat {
        what: String,
        #[source]
        source: io::Error,
    },

    /// The path given by the user does not exist.
    #[error("{}: no such file or directory", .0.display())]
    NotFound(PathBuf),

    /// Neither an OCI layout, an OCI archive nor a docker-archive.
    #[error("{}: unknown image format: {detail}", path.display())]
    UnknownFormat { path: PathBuf, detail: String },

    /// A JSON document that does not parse (or does not have the expected shape).
    #[error("{file}: invalid JSON")]
    BadJson {
        file: String,
        #[source]
        source: serde_json::Error,
    },

    /// A document of ours that cannot be encoded as JSON (`what` names it).
    #[error("encoding {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// A runtime bundle the image cannot give (no command, a user it lacks…).
    #[error("cannot make a runtime bundle: {0}")]
    Bundle(String),

    /// A document that parses but breaks a rule of its format.
    #[error("{file}: {detail}")]
    Invalid { file: String, detail: String },

    /// A blob named by a manifest is not in the image.
    #[error("{what} {digest}: blob {location} is missing")]
    MissingBlob {
        what: String,
        digest: String,
        location: String,
    },

    /// Content whose digest (or size) is not the one its reference promised.
    #[error("{what}: {mismatch}")]
    DigestMismatch { what: String, mismatch: Mismatch },

    /// A layer media type we cannot unpack (foreign, non-distributable, unknown).
    #[error("layer {digest}: unsupported media type {media_type}")]
    UnsupportedMediaType { digest: String, media_type: String },

    /// Something wrong while reading or unpacking one layer.
    #[error("layer {layer}")]
    Layer {
        layer: String,
        #[source]
        source: Box<Error>,
    },

    /// A tar entry that the unpacker refuses (or failed to create).
    #[error("entry {entry:?}: {reason}")]
    Entry {
        entry: String,
        reason: String,
        #[source]
        source: Option<io::Error>,
    },

    /// A tar stream that cannot be read at all.
    #[error("reading the layer tar")]
    Tar {
        #[source]
        source: io::Error,
    },

    /// A tar header that is malformed or announces more than we accept.
    #[error("tar header at byte {offset}: {detail}")]
    TarFormat { offset: u64, detail: String },

    /// A layer that would unpack to more than the limit (`load --max-layer-size`).
    #[error(
        "entry {entry:?}: the layer would unpack to more than {limit} bytes (apparent size of its files); raise the limit with `layerfs load --max-layer-size` or LAYERFS_MAX_LAYER_SIZE"
    )]
    LayerTooLarge { entry: String, limit: u64 },

    /// An image reference (name, tag, id) that is malformed.
    #[error("invalid reference {reference:?}: {detail}")]
    InvalidReference { reference: String, detail: String },

    /// An image reference the store does not know.
    #[error("unknown image {0:?} (see `layerfs images`)")]
    UnknownImage(String),

    /// A container name the store does not know.
    #[error("no such container: {0} (see `layerfs ps -a`)")]
    UnknownContainer(String),

    /// An id prefix that matches several images.
    #[error("image id prefix {prefix:?} is ambiguous: matches {}", candidates.join(", "))]
    AmbiguousImage {
        prefix: String,
        candidates: Vec<String>,
    },

    /// A layout or archive that holds several images and no tag picked one.
    #[error("{} holds several images; pick one with a tag ({}): e.g. {}", path.display(), tags.join(", "), example)]
    TagRequired {
        path: PathBuf,
        tags: Vec<String>,
        example: String,
    },

    /// A tag that the layout or archive does not have.
    #[error("{}: no image tagged {tag:?} (tags: {})", path.display(), if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    TagNotFound {
        path: PathBuf,
        tag: String,
        available: Vec<String>,
    },

    /// An image index without an entry for this machine.
    #[error("{file}: no image for {wanted} (has: {})", available.join(", "))]
    NoMatchingPlatform {
        file: String,
        wanted: String,
        available: Vec<String>,
    },

    /// Refused because a container or a read-only mount uses the image.
    #[error("unable to remove image {image}: in use by {} (--force removes its names only)", users.join(", "))]
    ImageInUse { image: String, users: Vec<String> },

    /// A file a layer cannot carry: in a layer tar its name would be a whiteout (or an
    /// opaque or AUFS marker), so a reader would delete something instead.
    #[error(
        "{path}: an image layer cannot hold a file of this name (its readers take `.wh.` names for whiteouts): rename or remove it in the container, then commit again"
    )]
    WhiteoutName { path: String },

    /// A name (`REPO:TAG`) another image has; `hint` says what to do instead.
    #[error("the name {name} is taken by image {image}{hint}")]
    NameTaken {
        name: String,
        image: String,
        hint: &'static str,
    },

    /// `rmi NAME` of an image's last name while a container or a mount uses the image.
    #[error("unable to remove {name}: its image {image} is in use by {} (--force removes the name only)", users.join(", "))]
    NameInUse {
        name: String,
        image: String,
        users: Vec<String>,
    },

    /// `rmi ID` of an image with several names (Docker's rule): refused without `--force`.
    #[error("image {image} is referenced by several names ({}); remove them by name or use --force", names.join(", "))]
    SeveralNames { image: String, names: Vec<String> },

    /// A source with several images where one is wanted.
    #[error("{from} holds {count} images; pick one, e.g. {example}")]
    SeveralImages {
        from: String,
        count: usize,
        example: String,
    },

    /// A source with no image at all.
    #[error("{0} holds no image")]
    NoImage(String),

    /// `load --tag` of a source with several images.
    #[error("--tag needs a single image; this source holds several")]
    TagNeedsOneImage,

    /// A container whose image was removed (with `rmi --force` of its names, then prune).
    #[error("container {container} was made from image {image}, which is no longer in the store")]
    ImageGone { container: String, image: String },

    /// A container asked for by name with an image it was not made from.
    #[error("container {name} was made from image {image}, not {wanted} ({wanted_name})")]
    OtherImage {
        name: String,
        image: String,
        wanted: String,
        wanted_name: String,
    },

    /// `mount --read-only --name NAME` of a container that does not exist.
    #[error(
        "no container {0}: --read-only --name mounts an existing container's layer read-only \
         (without --name, the image alone)"
    )]
    NoContainerToMount(String),

    /// A container its daemon serves (`at`: " at DIR" when known).
    #[error("container {name} is already mounted{at}")]
    AlreadyMounted { name: String, at: String },

    /// A mount that found its container removed, or made by another command, each time.
    #[error(
        "{0}: the container was removed, or made by another command, each time it was about \
         to be mounted"
    )]
    MountRaced(String),

    /// `umount` of a container no daemon serves and no dead mount is left of.
    #[error("container {0} is not mounted")]
    NotMounted(String),

    /// A container its daemon says is mounted, whose record names no mount point.
    #[error("container {0} is mounted but its record names no mount point")]
    NoMountPointRecorded(String),

    /// Another mount sits where a container's daemon says it serves.
    #[error("{} holds {what}, not container {name}'s mount: not unmounting it", dir.display())]
    OtherMount {
        dir: PathBuf,
        what: String,
        name: String,
    },

    /// A container unmounted whose daemon does not exit.
    #[error(
        "{} is unmounted but the daemon of {name} has not let go of it within {secs} s (a \
         commit of it may still be reading it)",
        dir.display()
    )]
    DaemonKeeps {
        dir: PathBuf,
        name: String,
        secs: u64,
    },

    /// `fusermount3 -u DIR` failed.
    #[error("fusermount3 -u {} failed", .0.display())]
    UnmountFailed(PathBuf),

    /// A mount point a process still uses.
    #[error("{} is busy (a process uses it)", .0.display())]
    MountPointBusy(PathBuf),

    /// A container of that name exists already (made by another command meanwhile).
    #[error("a container named {0} already exists")]
    ContainerExists(String),

    /// A container another command holds (a commit reads it, a mount or `rm` is under way)
    /// for longer than we wait (see `container/dir.rs`).
    #[error("container {name} is busy: {detail}")]
    ContainerBusy { name: String, detail: String },

    /// A container lock held by a process that should not hold it (`what` says which).
    #[error("{what} is held by another process")]
    LockHeld { what: String },

    /// A container just made for a mount that failed, which turned out to have data.
    #[error("container {0} has data in its writable layer")]
    ContainerHasData(String),

    /// A mounted container's daemon that will not hold its writes for a snapshot.
    #[error(
        "container {name} is mounted and its daemon refuses to hold its writes for a snapshot: {detail}"
    )]
    SnapshotRefused { name: String, detail: String },

    /// A command that reads a store was pointed at a path where none exists (a mistyped
    /// `--root` must not become an empty store).
    #[error("no store at {} (load an image first: layerfs load SOURCE)", path.display())]
    NoStore { path: PathBuf },

    /// `--root` names something that is not a layerfs store.
    #[error("{}: not a layerfs store ({detail})", path.display())]
    NotAStore { path: PathBuf, detail: String },

    /// The store's on-disk format is not one this binary knows.
    #[error("{}: unsupported store version {found:?} (this layerfs writes {wanted:?})", path.display())]
    StoreVersion {
        path: PathBuf,
        found: String,
        wanted: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error of a step described by `what`.
    pub fn io_what(what: impl Into<String>, source: io::Error) -> Error {
        Error::IoWhat {
            what: what.into(),
            source,
        }
    }

    /// Bad JSON in `file`.
    pub fn json(file: impl Into<String>, source: serde_json::Error) -> Error {
        Error::BadJson {
            file: file.into(),
            source,
        }
    }

    /// `what` (a record of ours) could not be encoded as JSON.
    pub fn encode(what: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Encode {
            what: what.into(),
            source,
        }
    }

    /// A refused tar entry without an underlying OS error.
    pub fn entry(entry: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Entry {
            entry: entry.into(),
            reason: reason.into(),
            source: None,
        }
    }

    /// A tar entry whose creation failed with an OS error.
    pub fn entry_io(
        entry: impl Into<String>,
        reason: impl Into<String>,
        source: io::Error,
    ) -> Error {
        Error::Entry {
            entry: entry.into(),
            reason: reason.into(),
            source: Some(source),
        }
    }

    /// Wraps `self` as an error of layer `layer`.
    pub fn in_layer(self, layer: &Digest) -> Error {
        Error::Layer {
            layer: layer.to_string(),
            source: Box::new(self),
        }
    }
}
