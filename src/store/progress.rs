//! Progress of a load as the store reports it: events, never drawing. Whoever loads shows
//! them as it likes (the CLI draws one bar per layer on a terminal: `cli::load`); the
//! store itself prints nothing, so a library user or a test gets no terminal output.

use std::io::{self, Read};

/// What a load reports as it goes. Layers are numbered bottom first within their image;
/// an image's layers are staged in parallel, so calls come from several threads.
pub trait Progress: Sync {
    /// An image's layers, before any is looked at: `labels[i]` names layer `i` as its
    /// errors do (its blob digest, else its diff_id).
    fn image(&self, _labels: &[String]) {}
    /// Layer `i` is in the store already: nothing to do.
    fn present(&self, _i: usize) {}
    /// Layer `i` starts unpacking, from a blob of `size` bytes.
    fn start(&self, _i: usize, _size: u64) {}
    /// `n` more bytes of layer `i`'s blob were read.
    fn advance(&self, _i: usize, _n: u64) {}
    /// Layer `i` is staged (`ok`), or failed.
    fn done(&self, _i: usize, _ok: bool) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// Layer `layer` of a [`Progress`]: what staging that one layer reports.
#[derive(Clone, Copy)]
pub struct LayerProgress<'a> {
    pub of: &'a dyn Progress,
    pub layer: usize,
}

impl<'a> LayerProgress<'a> {
    /// The layer starts unpacking, from a blob of `size` bytes.
    pub fn start(self, size: u64) {
        self.of.start(self.layer, size);
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
            self.progress.of.advance(self.progress.layer, n as u64);
        }
        Ok(n)
    }
}
