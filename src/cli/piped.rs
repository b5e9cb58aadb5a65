//! Archives through pipes, as Docker takes them: `layerfs load < FILE` and `layerfs save
//! IMAGE > FILE`. Reading an archive and writing one both seek (entries are read in place;
//! a blob's header is written once its size is known), so the bytes go through a private
//! file staged in the store's `tmp/` (on the store's filesystem, removed afterwards, and on
//! Ctrl-C: see `crate::interrupt`). The caller holds the store lock shared meanwhile, so a
//! load or `prune` that clears `tmp/` (exclusively) leaves the staged file alone.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::store::Store;

/// A staging directory in the store's `tmp/`, removed when dropped.
pub(crate) struct Staged<'a> {
    store: &'a Store,
    /// `tmp/WHAT-PID-N`, inside the store.
    dir: PathBuf,
    /// The file in it, as a path for the readers and writers that take one.
    pub path: PathBuf,
}

impl<'a> Staged<'a> {
    /// A new staging directory for one file named `file`.
    pub(crate) fn new(store: &'a Store, what: &str, file: &str) -> anyhow::Result<Staged<'a>> {
        let dir = store.staging_dir(what)?;
        let path = store.shown(dir.join(file));
        Ok(Staged { store, dir, path })
    }

    /// Copies stdin into the staged file; returns the number of bytes.
    pub(crate) fn fill_from_stdin(&self) -> anyhow::Result<u64> {
        let rel = self.dir.join(self.file_name());
        let mut out = self.store.dir().open_write(&rel, true)?;
        let mut input = crate::interrupt::Checked(io::stdin().lock());
        let n = io::copy(&mut input, &mut out)
            .with_context(|| format!("reading stdin into {}", self.path.display()))?;
        Ok(n)
    }

    /// Copies the staged file to stdout (a reader that goes away ends it quietly: see
    /// [`super::on_stdout`]).
    pub(crate) fn drain_to_stdout(&self) -> anyhow::Result<()> {
        let rel = self.dir.join(self.file_name());
        let file = self
            .store
            .dir()
            .open_read(&rel)?
            .ok_or_else(|| anyhow::anyhow!("{}: vanished", self.path.display()))?;
        let mut input = crate::interrupt::Checked(file);
        let stdout = io::stdout();
        let mut out = stdout.lock();
        super::on_stdout(
            io::copy(&mut input, &mut out)
                .and_then(|_| out.flush())
                .context("writing to stdout"),
        )
    }

    fn file_name(&self) -> std::ffi::OsString {
        self.path.file_name().map(Into::into).unwrap_or_default()
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.dir().remove_tree(&self.dir) {
            log::warn!("{e} (left for `layerfs prune`)");
        }
    }
}
