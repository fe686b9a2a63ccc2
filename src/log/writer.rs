//! `LogWriter`: appends framed records to `<out>/<session>.<node>.tal`,
//! which grows in reserved chunks. This doc is the format's spec.
//!
//! # Format, version 5 ([`FORMAT_VERSION`]; 2 added the GPU agent's snapshot fields, 3 the GPU back-fill records, 4 the per-source read errors, 5 the task samples and the task sampler's snapshot fields)
//!
//! All integers are little-endian. Offsets are from the start of the file.
//!
//! ```text
//! 0   magic        8 bytes  89 54 41 4C 4C 4F 47 0A  ("\x89TALLOG\n")
//! 8   version      u32      4
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
//! default): each chunk is reserved with `posix_fallocate` before any frame
//! is put in it, so a full disk is an error at reservation, and the frames
//! before it are all kept. The reserved space reads as zeros, which readers
//! take as the end of the written data.
//!
//! Frames are built in a buffer and handed to the file by
//! [`LogWriter::flush`], which the dispatcher calls at the end of every
//! drain (and which runs by itself whenever [`FLUSH_BYTES`] are pending):
//! a burst's large flushes with `pwrite(2)`, and the small ones of an idle
//! agent (a second of samples is about 1.5 KiB) by copying them into a
//! shared memory map of the current chunk, because a cold `pwrite` on ext4
//! costs about 30 µs of CPU (it updates the file's times through the
//! journal each call), several times the stores and the one page fault per
//! new page that the map costs. Both reach the same page cache.
//! Once `flush` returns, its frames are in the page cache: they survive a
//! `kill -9` of the agent, and surviving the loss of the node depends on
//! the kernel's write-back (about 30 s by default) plus the `fsync` done at
//! every clean finish. What `kill -9` loses is what the agent had not yet
//! handed to the file: records waiting in the rings and those of the drain
//! in progress. (The log was first written through a shared memory map,
//! each frame visible the moment it was stored; page faults on the mapped
//! file cost about 130 ns per 140-byte record on ext4, three times a
//! buffered `pwrite` of the same bytes into reserved space, and under a
//! burst of client events that was a fifth of the agent's CPU. The
//! difference in what a `kill -9` loses is one drain: milliseconds of
//! records, next to the up to a second of samples that wait in the rings
//! either way.)
//!
//! A frame is written whole or the kernel stops between two pages of the
//! write: a frame cut that way fails its crc, and readers take the cut as
//! the end. A clean finish writes an `End` record, flushes, truncates the
//! file to its last frame, and fsyncs. A log without `End` was cut off;
//! `LogReader` recovers every whole frame before the cut, skips (and
//! reports) damaged frames in the middle by scanning 8-byte-aligned offsets
//! for the next frame whose crc matches, and never panics on any input.
//!
//! Only the writer stage owns the file (it runs on the dispatcher's thread,
//! in the dispatcher's wake-up: why not on a thread of its own is measured
//! in `recorder::stage`'s doc); nothing else may write it.
#![allow(unsafe_code)]

use super::{
    align8, bincode_config, Header, WriteError, FORMAT_VERSION, FRAME_HEADER_BYTES, MAGIC,
    MAX_RECORD_BYTES, PREAMBLE_BYTES,
};
use crate::record::Record;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Flushes of at most this many bytes go through the memory map of the
/// current chunk; larger ones through `pwrite`.
const MAP_FLUSH_MAX: usize = 16 << 10;

/// Space kept reserved beyond the last record for the session's last
/// records (SessionEnded, the final snapshot with its histograms, the end
/// marker: about 10 KiB), so that a full disk still ends the log cleanly.
pub const FINAL_RESERVE_BYTES: u64 = 64 << 10;

/// How far ahead of the small flushes the map's pages are faulted in.
const POPULATE_STEP: usize = 64 << 10;

/// Pending bytes at which [`LogWriter::append`] flushes by itself. Writes
/// of about this size were the cheapest per byte on ext4 (4 KiB writes
/// cost more system calls, 256 KiB ones no longer fit the caches).
pub const FLUSH_BYTES: usize = 64 << 10;

/// Appends records to one log file. See the module doc for the format.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    chunk: u64,
    /// Bytes of the file reserved with `posix_fallocate`.
    reserved: u64,
    /// File offset of `buf[0]`: everything before it is in the file.
    flushed: u64,
    /// Whole frames not yet written to the file.
    buf: Vec<u8>,
    /// Records in `buf`.
    buffered: u64,
    /// A shared map of the chunk at `map_start`, for small flushes.
    map: Option<memmap2::MmapMut>,
    map_start: u64,
    /// Offset in the map up to which its pages are faulted in.
    populated: usize,
    records: u64,
    /// Records given to the writer that are not in the file, and never
    /// will be (refused after a failure, or dropped with a failed write).
    lost: u64,
    failed: bool,
    /// The failure was only that no more space could be reserved: what is
    /// reserved can still be written.
    full_only: bool,
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| WriteError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let payload = bincode::encode_to_vec(header, bincode_config())
            .expect("encoding a header into a Vec cannot fail");
        let mut buf = Vec::with_capacity(FLUSH_BYTES + FLUSH_BYTES / 4);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&payload);
        buf.resize(align8(buf.len() as u64) as usize, 0);
        debug_assert_eq!(PREAMBLE_BYTES, 24);
        let mut w = Self {
            file,
            path: path.to_path_buf(),
            chunk,
            reserved: 0,
            flushed: 0,
            buf,
            buffered: 0,
            map: None,
            map_start: 0,
            populated: 0,
            records: 0,
            lost: 0,
            failed: false,
            full_only: false,
        };
        if let Err(e) = w.reserve(w.buf.len() as u64).and_then(|()| w.flush()) {
            // Not even the header fits (a full disk, a file-size limit):
            // leave no half-made log behind.
            w.buf.clear();
            w.buffered = 0;
            drop(w);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(w)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole frames appended so far (in the file once flushed).
    pub fn bytes(&self) -> u64 {
        self.flushed + self.buf.len() as u64
    }

    /// Records appended so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records given to the writer that are not in the file and never will
    /// be: those refused after a failure, and those a failed write dropped.
    pub fn lost_records(&self) -> u64 {
        self.lost
    }

    /// Appends one record (in the file once [`LogWriter::flush`]ed). After
    /// a `DiskFull` or I/O error every later call fails fast with the same
    /// kind of error, writes nothing, and counts the record as lost.
    pub fn append(&mut self, record: &Record) -> Result<(), WriteError> {
        self.append_with(|buf| {
            bincode::encode_into_std_write(record, buf, bincode_config())
                .expect("encoding into a Vec cannot fail");
        })
    }

    /// Appends one record given as its encoded payload (what
    /// `bincode::encode_to_vec(record)` gives; the ingest listener encodes
    /// client events on its own thread).
    pub fn append_encoded(&mut self, payload: &[u8]) -> Result<(), WriteError> {
        self.append_with(|buf| buf.extend_from_slice(payload))
    }

    /// Appends one of the session's last records (SessionEnded, the final
    /// snapshot, the end marker) and writes it at once. After the disk
    /// filled, these still go into the [`FINAL_RESERVE_BYTES`] kept free
    /// for them, so the log keeps the agent's final counters (what was lost
    /// to the full disk among them) and ends cleanly.
    pub fn append_final(&mut self, record: &Record) -> Result<(), WriteError> {
        if !self.failed {
            self.append(record)?;
            return self.flush();
        }
        if !self.full_only {
            self.lost += 1;
            return Err(self.full());
        }
        self.settle(false);
        self.buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        bincode::encode_into_std_write(record, &mut self.buf, bincode_config())
            .expect("encoding into a Vec cannot fail");
        let n = self.buf.len() - FRAME_HEADER_BYTES;
        if n > MAX_RECORD_BYTES as usize || align8(self.bytes()) > self.reserved {
            self.buf.clear();
            self.lost += 1;
            return Err(self.full());
        }
        let crc = crc32fast::hash(&self.buf[FRAME_HEADER_BYTES..]);
        self.buf[0..4].copy_from_slice(&(n as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf.resize(align8(self.buf.len() as u64) as usize, 0);
        self.records += 1;
        self.buffered += 1;
        self.flush_buffer()
    }

    fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), WriteError> {
        if self.failed {
            self.lost += 1;
            return Err(self.full());
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        encode(&mut self.buf);
        let n = self.buf.len() - start - FRAME_HEADER_BYTES;
        let end = align8(self.bytes());
        let res = if n > MAX_RECORD_BYTES as usize {
            Err(WriteError::TooLarge(n))
        } else {
            // Room is kept for the session's last records (see
            // `append_final`).
            self.reserve(end + FINAL_RESERVE_BYTES)
        };
        if let Err(e) = res {
            self.buf.truncate(start);
            self.lost += 1;
            self.failed = true;
            self.full_only = matches!(e, WriteError::DiskFull { .. })
                || matches!(&e, WriteError::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG));
            // The frames before this one are in reserved space: keep them.
            self.flush_buffer()?;
            return Err(e);
        }
        let crc = crc32fast::hash(&self.buf[start + FRAME_HEADER_BYTES..]);
        self.buf[start..start + 4].copy_from_slice(&(n as u32).to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.buf.resize(align8(self.buf.len() as u64) as usize, 0);
        self.records += 1;
        self.buffered += 1;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes every appended frame to the file (into the page cache). On
    /// failure the pending frames are dropped and counted as lost, and the
    /// writer refuses everything after.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.failed {
            self.settle(false);
        }
        self.flush_buffer()
    }

    fn flush_buffer(&mut self) -> Result<(), WriteError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = if self.buf.len() <= MAP_FLUSH_MAX && self.store_through_map() {
            Ok(())
        } else {
            self.file.write_all_at(&self.buf, self.flushed)
        };
        match res {
            Ok(()) => {
                self.settle(true);
                Ok(())
            }
            Err(source) => {
                self.settle(false);
                self.failed = true;
                self.full_only = false;
                Err(match source.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT) => self.full(),
                    _ => WriteError::Io {
                        path: self.path.clone(),
                        source,
                    },
                })
            }
        }
    }

    /// Empties the buffer: its frames are now in the file (`written`), or
    /// never will be and count as lost.
    fn settle(&mut self, written: bool) {
        if written {
            self.flushed += self.buf.len() as u64;
        } else {
            self.lost += self.buffered;
        }
        self.buf.clear();
        self.buffered = 0;
    }

    /// Copies the pending frames into the map of the chunk they fall in
    /// (mapping it first if needed); false when they straddle two chunks or
    /// the chunk cannot be mapped, and `pwrite` then writes them.
    fn store_through_map(&mut self) -> bool {
        let (start, end) = (self.flushed, self.flushed + self.buf.len() as u64);
        let chunk_start = start / self.chunk * self.chunk;
        // Only a chunk reserved whole is mapped: a page of the map past
        // the file's allocated end would raise SIGBUS when written (with
        // less than a chunk of space left, or under a file-size limit).
        if end > chunk_start + self.chunk || chunk_start + self.chunk > self.reserved {
            return false;
        }
        if self.map.is_none() || self.map_start != chunk_start {
            self.map = None;
            // SAFETY: the writer is the only owner of this file (module
            // doc), and reserved space is only ever whole chunks, so the
            // chunk holding reserved bytes is reserved whole: every mapped
            // page is backed by allocated blocks. The file is never
            // truncated while mapped (`finish` unmaps first).
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(chunk_start)
                    .len(self.chunk as usize)
                    .map_mut(&self.file)
            };
            match map {
                Ok(m) => {
                    self.map = Some(m);
                    self.map_start = chunk_start;
                    self.populated = 0;
                }
                Err(_) => return false,
            }
        }
        let Some(map) = self.map.as_mut() else {
            return false;
        };
        let off = (start - chunk_start) as usize;
        let end = off + self.buf.len();
        // Fault the next pages in ahead, a few at a time, in one call: a
        // fault per page costs more, and an idle agent's resident memory
        // stays about what it writes. Best effort (Linux >= 5.14).
        if end + POPULATE_STEP / 2 > self.populated && self.populated < map.len() {
            let from = self.populated.max(off & !4095);
            let to = (from + POPULATE_STEP).min(map.len());
            let _ = map.advise_range(memmap2::Advice::PopulateWrite, from, to - from);
            self.populated = to;
        }
        map[off..end].copy_from_slice(&self.buf);
        true
    }

    fn full(&self) -> WriteError {
        WriteError::DiskFull {
            path: self.path.clone(),
            bytes: self.flushed,
        }
    }

    /// Reserves whole chunks of the file up to at least `end`.
    fn reserve(&mut self, end: u64) -> Result<(), WriteError> {
        if end <= self.reserved {
            return Ok(());
        }
        let to = end.div_ceil(self.chunk) * self.chunk;
        match crate::sys::posix_fallocate(self.file.as_fd(), self.reserved, to - self.reserved) {
            Ok(()) => {
                self.reserved = to;
                Ok(())
            }
            // The file keeps what was flushed (it is trimmed to that at
            // the end), so that is the size to report.
            Err(libc::ENOSPC | libc::EDQUOT) => Err(self.full()),
            Err(rc) => Err(WriteError::Io {
                path: self.path.clone(),
                source: io::Error::from_raw_os_error(rc),
            }),
        }
    }

    /// Writes `end` (normally an `End` record), flushes, trims the file to
    /// its last frame and fsyncs it. Returns the path.
    pub fn finish(mut self, end: Option<&Record>) -> Result<PathBuf, WriteError> {
        let appended = match end {
            Some(r) => self.append(r),
            None => Ok(()),
        };
        let flushed = self.flush();
        self.map = None;
        let io_err = |path: &Path, source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        };
        self.file
            .set_len(self.flushed)
            .map_err(|e| io_err(&self.path, e))?;
        self.file.sync_all().map_err(|e| io_err(&self.path, e))?;
        appended.and(flushed).map(|()| self.path.clone())
    }
}

impl Drop for LogWriter {
    /// A writer dropped without [`LogWriter::finish`] (an error path) still
    /// puts what it has in the file.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The page size, for callers choosing a chunk size.
pub fn system_page_size() -> u64 {
    page_size()
}
