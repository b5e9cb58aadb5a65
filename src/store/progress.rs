//! Progress of a load as the store reports it: events, never drawing. Whoever loads shows
//! them as it likes (the CLI draws one bar per layer on a terminal: `cli::load`); the
//! store itself prints nothing, so a library user or a test gets no terminal output.

use std::io::{self, Read};

/// What happens to one layer of the image being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEvent {
    /// In the store already: nothing to do.
    Present,
    /// Unpacking starts, from a blob of this many bytes.
    Start(u64),
    /// This many more bytes of the blob were read.
    Read(u64),
    /// Staged, verified.
    Done,
    /// Not staged: the load fails.
    Failed,
}

/// What a load reports as it goes. Layers are numbered bottom first within their image;
/// an image's layers are staged in parallel, so calls come from several threads.
pub trait Progress: Sync {
    /// An image's layers, before any is looked at: `labels[i]` names layer `i` as its
    /// errors do (its blob digest, else its diff_id).
    fn image(&self, labels: &[String]);
    /// Something happened to layer `i` of that image.
    fn layer(&self, i: usize, event: LayerEvent);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn image(&self, _: &[String]) {}
    fn layer(&self, _: usize, _: LayerEvent) {}
}

/// Layer `layer` of a [`Progress`]: what staging that one layer reports.
#[derive(Clone, Copy)]
pub struct LayerProgress<'a> {
    pub of: &'a dyn Progress,
    pub layer: usize,
}

impl<'a> LayerProgress<'a> {
    pub fn report(self, event: LayerEvent) {
        self.of.layer(self.layer, event);
    }

    /// `r`, reporting every byte read from it.
    pub fn counting<R: Read>(self, r: R) -> Counting<'a, R> {
        Counting {
            inner: r,
            progress: self,
        }
    }
}

/// A reader that reports what is read through it: [`LayerProgress::counting`].
pub struct Counting<'a, R> {
    inner: R,
    progress: LayerProgress<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.progress.report(LayerEvent::Read(n as u64));
        }
        Ok(n)
    }
}
