//! A kept-open /proc (or cgroup) file, read whole with one `pread` at
//! offset 0 into a buffer sized once: what every agent source is made of.

use std::fs::File;
use std::io;

/// One kept-open /proc (or cgroup) file and its read buffer.
#[derive(Debug)]
pub(crate) struct KeptFile {
    file: File,
    buf: Vec<u8>,
}

impl KeptFile {
    pub(crate) fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::open_sized(path, 4096)
    }

    /// [`KeptFile::open`] with a buffer of at least `min` bytes (twice the
    /// file's size now, if larger): small for the many small files of
    /// task processes.
    pub(crate) fn open_sized(path: impl AsRef<std::path::Path>, min: usize) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
        })?;
        let mut s = Self {
            file,
            buf: vec![0; min.max(64)],
        };
        // Size the buffer to the file now, so sampling never has to grow it.
        let n = s.read()?.len();
        s.buf.resize((n * 2).max(min), 0);
        s.buf.shrink_to_fit();
        Ok(s)
    }

    /// Reads the whole file into the buffer with one `pread` at offset 0.
    #[inline]
    pub(crate) fn read(&mut self) -> io::Result<&[u8]> {
        loop {
            let n = rustix::io::pread(&self.file, &mut self.buf[..], 0)?;
            if n < self.buf.len() {
                return Ok(&self.buf[..n]);
            }
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
    }
}
