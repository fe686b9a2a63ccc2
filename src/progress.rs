//! Progress of long work on a terminal: `tal convert` and `tal report` of
//! large or many logs, `tal summary`, and the OTLP push of a whole
//! session. It shows bytes done of the total, the rate and an estimate of
//! the time left, on stderr, drawn by `indicatif` (at most 10 times a
//! second), and is cleared when the work ends. Nothing is shown when stderr
//! is not a terminal (a batch job's log stays clean), nor with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{self, BufRead, IsTerminal, Read};

/// A progress bar, or nothing (see the module doc).
#[derive(Debug, Clone)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Shows nothing.
    pub fn hidden() -> Self {
        Self(None)
    }

    /// A bar of `total` bytes labelled `what`, on a terminal and unless
    /// `quiet`.
    pub fn bytes(what: &str, total: u64, quiet: bool) -> Self {
        if quiet || !io::stderr().is_terminal() {
            return Self::hidden();
        }
        let style = ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bar =
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10))
                .with_style(style)
                .with_message(what.to_string());
        bar.tick();
        Self(Some(bar))
    }

    /// Sets the bytes done.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    /// Adds to the bytes done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Sets what the bar says.
    pub fn say(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
        }
    }

    /// Whether anything is shown.
    pub fn shown(&self) -> bool {
        self.0.is_some()
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }

    /// `input`, counting what is read from it into this bar.
    pub fn reading<R>(&self, input: R) -> Reading<R> {
        Reading {
            inner: input,
            bar: self.clone(),
            pending: 0,
        }
    }
}

/// A reader that counts the bytes taken from it into a [`Progress`]
/// (in steps of 1 MiB, so that counting costs nothing measurable).
#[derive(Debug)]
pub struct Reading<R> {
    inner: R,
    bar: Progress,
    pending: u64,
}

impl<R> Reading<R> {
    fn count(&mut self, n: usize) {
        self.pending += n as u64;
        if self.pending >= 1 << 20 {
            self.bar.add(self.pending);
            self.pending = 0;
        }
    }
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Reading<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.count(amt);
    }
}
