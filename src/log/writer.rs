//! `LogWriter`: appends framed records to `<out>/<session>.<node>.tal`
//! through a memory map that grows in chunks. This doc is the format's spec.
//!
//! # Format, version 1
//!
//! All integers are little-endian. Offsets are from the start of the file.
//!
//! ```text
//! 0   magic        8 bytes  89 54 41 4C 4C 4F 47 0A  ("\x89TALLOG\n")
//! 8   version      u32      1
//! 12  header_len   u32      bytes of the header payload
//! 16  header_crc   u32      CRC-32 (IEEE) of the header payload
//! 20  reserved     u32      0
//! 24  header       bincode 2 (standard config) of `log::Header`
//!     zero padding to a multiple of 8
//!     frames...
//! ```
//!
//! A frame starts at a multiple of 8:
//!
//! ```text
//! +0  len          u32      payload bytes (1..=64 MiB)
//!                           0          = no frame here: end of written data
//!                           0xFFFFFFFF = padding: the next frame starts at the
//!                                        next multiple of `header.chunk_bytes`
//! +4  crc          u32      CRC-32 (IEEE) of the payload
//! +8  payload      bincode 2 (standard config) of `record::Record`
//!     zero padding to a multiple of 8
//! ```
//!
//! # How it is written, and what that guarantees
//!
//! The file grows by `chunk_bytes` (a multiple of the page size, 1 MiB by
//! default): each chunk is reserved with `posix_fallocate` (so a full disk
//! is an error at reservation, never a SIGBUS on a mapped page) and mapped
//! as the current window; the previous window is unmapped, so the agent's
//! resident memory stays at one chunk however long it records. A frame
//! never spans two windows: a record that does not fit in what is left of
//! a window is preceded by a padding marker and written at the start of the
//! next one (a record larger than a chunk gets a window of several chunks).
//!
//! Each frame is written payload first, then its crc, and its `len` last,
//! after a compiler fence. The mapping is shared, so every store is in the
//! page cache as soon as it is made: if the agent is killed at any
//! instruction, the file holds every earlier frame, and the frame being
//! written still has `len == 0`, which readers take as the end. Records
//! therefore survive `kill -9`; surviving the loss of the whole node
//! depends on the kernel's write-back (about 30 s by default), plus the
//! `fsync` done at every clean finish.
//!
//! A clean finish writes an `End` record, unmaps, truncates the file to its
//! last frame, and fsyncs. A log without `End` was cut off; `LogReader`
//! recovers every whole frame before the cut, skips (and reports) damaged
//! frames in the middle by scanning 8-byte-aligned offsets for the next
//! frame whose crc matches, and never panics on any input.
//!
//! Only the writer thread owns the file; nothing else may truncate or write
//! it while it is mapped.
#![allow(unsafe_code)]

use super::{
    align8, bincode_config, Header, WriteError, FORMAT_VERSION, FRAME_HEADER_BYTES, MAGIC,
    MAX_RECORD_BYTES, PAD_MARKER, PREAMBLE_BYTES,
};
use crate::record::Record;
use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

/// Appends records to one log file. See the module doc for the format.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    chunk: u64,
    map: Option<MmapMut>,
    win_start: u64,
    win_len: u64,
    /// Absolute offset of the next frame.
    pos: u64,
    records: u64,
    failed: bool,
    scratch: Vec<u8>,
    /// Absolute offset up to which the window's pages are faulted in.
    populated: u64,
    /// Whether the kernel takes `MADV_POPULATE_WRITE` (Linux ≥ 5.14).
    can_populate: bool,
}

/// How far ahead of the write position the window's pages are faulted in,
/// in one `madvise(MADV_POPULATE_WRITE)` call each step. A page fault on a
/// shared file mapping costs about a microsecond; under a burst of client
/// events (about 230 bytes each) faulting page by page cost the dispatcher
/// about 100 ns per event. Steps are small so that an idle agent's resident
/// memory stays what it writes.
const POPULATE_STEP: u64 = 256 << 10;

/// What a frame carries: a record to encode, or one already encoded.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Record(&'a Record),
    Encoded(&'a [u8]),
}

impl LogWriter {
    /// Creates `path` (which must not exist) and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Self, WriteError> {
        let chunk = header.chunk_bytes;
        let page = page_size();
        assert!(
            chunk >= page && chunk % page == 0,
            "chunk_bytes must be a multiple of the page size"
        );
        let io_err = |source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err)?;
        let mut w = Self {
            file,
            path: path.to_path_buf(),
            chunk,
            map: None,
            win_start: 0,
            win_len: 0,
            pos: 0,
            records: 0,
            failed: false,
            scratch: Vec::new(),
            populated: 0,
            can_populate: true,
        };
        let payload = bincode::encode_to_vec(header, bincode_config())
            .expect("encoding a header into a Vec cannot fail");
        let total = align8((PREAMBLE_BYTES + payload.len()) as u64);
        w.map_window(0, total.div_ceil(chunk).max(1) * chunk)?;
        let map = w.map.as_mut().expect("window just mapped");
        map[0..8].copy_from_slice(&MAGIC);
        map[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        map[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        map[16..20].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        map[20..24].copy_from_slice(&0u32.to_le_bytes());
        map[PREAMBLE_BYTES..PREAMBLE_BYTES + payload.len()].copy_from_slice(&payload);
        w.pos = total;
        Ok(w)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole frames written so far.
    pub fn bytes(&self) -> u64 {
        self.pos
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends one record. After a `DiskFull` or I/O error every later call
    /// fails fast with the same kind of error and writes nothing.
    pub fn append(&mut self, record: &Record) -> Result<(), WriteError> {
        self.append_payload(Payload::Record(record))
    }

    /// Appends one record given as its encoded payload (what
    /// `bincode::encode_to_vec(record)` gives; the ingest listener encodes
    /// client events on its own thread).
    pub fn append_encoded(&mut self, payload: &[u8]) -> Result<(), WriteError> {
        self.append_payload(Payload::Encoded(payload))
    }

    fn append_payload(&mut self, p: Payload<'_>) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::DiskFull {
                path: self.path.clone(),
                bytes: self.pos,
            });
        }
        let res = self.append_inner(p);
        if res.is_err() {
            self.failed = true;
        }
        res
    }

    fn append_inner(&mut self, p: Payload<'_>) -> Result<(), WriteError> {
        self.populate_ahead();
        if let Some(n) = self.try_encode_here(p) {
            self.commit(n);
            return Ok(());
        }
        // Does not fit in this window: pad and move to the next one.
        self.pad_to_window_end();
        let next = self.win_start + self.win_len;
        self.map_window(next, self.chunk)?;
        self.pos = next;
        if let Some(n) = self.try_encode_here(p) {
            self.commit(n);
            return Ok(());
        }
        // Larger than a chunk: measure it, then map a window big enough.
        let bytes = match p {
            Payload::Record(record) => {
                self.scratch.clear();
                bincode::encode_into_std_write(record, &mut self.scratch, bincode_config())
                    .expect("encoding into a Vec cannot fail");
                &self.scratch[..]
            }
            Payload::Encoded(b) => b,
        };
        let n = bytes.len();
        if n > MAX_RECORD_BYTES as usize {
            return Err(WriteError::TooLarge(n));
        }
        let need = align8((FRAME_HEADER_BYTES + n) as u64);
        // `bytes` may borrow the scratch buffer: map through a local.
        let bytes = bytes.to_vec();
        self.map_window(next, need.div_ceil(self.chunk) * self.chunk)?;
        let map = self.map.as_mut().expect("window just mapped");
        map[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + n].copy_from_slice(&bytes);
        self.commit(n);
        Ok(())
    }

    /// Faults in the next [`POPULATE_STEP`] of the window once the write
    /// position comes near the end of what is faulted in. Best effort: a
    /// kernel without `MADV_POPULATE_WRITE` faults page by page as before.
    fn populate_ahead(&mut self) {
        let end = self.win_start + self.win_len;
        if !self.can_populate
            || self.pos + POPULATE_STEP / 4 < self.populated
            || self.populated >= end
        {
            return;
        }
        let Some(map) = self.map.as_ref() else {
            return;
        };
        let from = self.populated.max(self.pos & !4095).max(self.win_start);
        let to = (from + POPULATE_STEP).min(end);
        let off = (from - self.win_start) as usize;
        if map
            .advise_range(memmap2::Advice::PopulateWrite, off, (to - from) as usize)
            .is_err()
        {
            // EINVAL on kernels before 5.14; anything else (ENOMEM, EFAULT)
            // will show again as a failed write, so stop trying either way.
            self.can_populate = false;
        }
        self.populated = to;
    }

    /// Puts the payload of a frame at `pos`; `None` when it does not fit in
    /// the current window.
    fn try_encode_here(&mut self, p: Payload<'_>) -> Option<usize> {
        let off = (self.pos - self.win_start) as usize;
        let map = self.map.as_mut()?;
        if off + FRAME_HEADER_BYTES >= map.len() {
            return None;
        }
        let dst = &mut map[off + FRAME_HEADER_BYTES..];
        match p {
            Payload::Record(record) => {
                match bincode::encode_into_slice(record, dst, bincode_config()) {
                    Ok(n) if n <= MAX_RECORD_BYTES as usize => Some(n),
                    _ => None,
                }
            }
            Payload::Encoded(b) if b.len() <= dst.len() && b.len() <= MAX_RECORD_BYTES as usize => {
                dst[..b.len()].copy_from_slice(b);
                Some(b.len())
            }
            Payload::Encoded(_) => None,
        }
    }

    /// Writes crc then len of the frame at `pos` whose payload of `n` bytes
    /// is already in place, and advances `pos`.
    fn commit(&mut self, n: usize) {
        let off = (self.pos - self.win_start) as usize;
        let map = self.map.as_mut().expect("commit needs a window");
        let crc = crc32fast::hash(&map[off + FRAME_HEADER_BYTES..off + FRAME_HEADER_BYTES + n]);
        map[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        // The length is what makes the frame visible: it must reach memory
        // after the payload and crc (see "what that guarantees" above).
        compiler_fence(Ordering::SeqCst);
        map[off..off + 4].copy_from_slice(&(n as u32).to_le_bytes());
        // Clear stale bytes of a failed encode attempt in the alignment gap.
        let end = off + FRAME_HEADER_BYTES + n;
        let aligned = align8(end as u64) as usize;
        map[end..aligned].fill(0);
        self.pos = self.win_start + aligned as u64;
        self.records += 1;
    }

    fn pad_to_window_end(&mut self) {
        let off = (self.pos - self.win_start) as usize;
        if let Some(map) = self.map.as_mut() {
            if off + 4 <= map.len() {
                map[off..off + 4].copy_from_slice(&PAD_MARKER.to_le_bytes());
            }
        }
    }

    /// Reserves [start, start+len) in the file and maps it as the window,
    /// unmapping the previous one.
    fn map_window(&mut self, start: u64, len: u64) -> Result<(), WriteError> {
        self.map = None;
        // SAFETY: plain syscall on our own open fd with in-range offsets.
        let rc = unsafe {
            libc::posix_fallocate(
                self.file.as_raw_fd(),
                start as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == libc::ENOSPC || rc == libc::EDQUOT {
            return Err(WriteError::DiskFull {
                path: self.path.clone(),
                bytes: self.pos,
            });
        } else if rc != 0 {
            return Err(WriteError::Io {
                path: self.path.clone(),
                source: io::Error::from_raw_os_error(rc),
            });
        }
        // SAFETY: the writer is the only owner of this file (module doc); it
        // is never truncated while mapped, and [start, start+len) was just
        // reserved, so every mapped page is backed by allocated blocks.
        let map = unsafe {
            MmapOptions::new()
                .offset(start)
                .len(len as usize)
                .map_mut(&self.file)
        }
        .map_err(|source| WriteError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.map = Some(map);
        self.win_start = start;
        self.win_len = len;
        self.populated = start;
        Ok(())
    }

    /// Writes `end` (normally an `End` record), trims the file to its last
    /// frame and fsyncs it. Returns the path.
    pub fn finish(mut self, end: Option<&Record>) -> Result<PathBuf, WriteError> {
        let appended = match end {
            Some(r) => self.append(r),
            None => Ok(()),
        };
        self.map = None;
        let io_err = |path: &Path, source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        self.file
            .set_len(self.pos)
            .map_err(|e| io_err(&self.path, e))?;
        self.file.sync_all().map_err(|e| io_err(&self.path, e))?;
        appended.map(|()| self.path.clone())
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The page size, for callers choosing a chunk size.
pub fn system_page_size() -> u64 {
    page_size()
}
