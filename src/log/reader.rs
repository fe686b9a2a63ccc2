//! `LogReader`: reads a tal log back, frame by frame, recovering everything
//! that can be recovered from a log that was cut off or damaged.
//!
//! It streams: a reader holds one buffer (256 KiB unless a record is larger)
//! whatever the size of the log, so `convert` can merge hundreds of node
//! logs at once. It never panics on any input; each frame is one of
//! valid (returned), corrupted (crc mismatch or impossible length: skipped,
//! counted, and the reader resynchronises on the next 8-byte-aligned offset
//! holding a frame whose crc matches, within a checksumming budget per
//! chunk: see `LogReader::resync`), or undecodable (crc matches but the
//! payload is not a record this build knows: skipped and counted).
//!
//! A header's session and node ids are checked as `tal record` checks its
//! own ([`crate::ids::check_id`]): they name the files made from a log, so
//! a log whose ids `tal record` would refuse is refused whole
//! ([`OpenError::BadId`]).
//!
//! A log opened by path reads through a [`LogFile`], which keeps its
//! descriptor only while the process has some to spare: `tal convert` of
//! 10,000 node logs needs more than a node's usual limit of open files, so
//! beyond [`LogFile`]'s budget a log is opened for each read of its buffer
//! and closed after (one `open` per 256 KiB read; see [`LogFile`]).

use super::{
    align8, bincode_decode_config, Header, OpenError, FORMAT_VERSION, FRAME_HEADER_BYTES, MAGIC,
    MAX_RECORD_BYTES, PAD_MARKER, PREAMBLE_BYTES,
};
use crate::record::Record;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Positional reads, so that a reader works over a file or a byte slice.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset as usize).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// A log's file, for [`LogReader::open`]. Held open while fewer than the
/// budget of descriptors are held by log files (the soft limit of open
/// files less [`FD_RESERVE`], counted over the whole process); beyond that,
/// closed, and opened again for each read. A file opened again must be
/// the same file (device and inode): a log replaced while it is read is an
/// I/O error, not another file's bytes.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    dev_ino: (u64, u64),
    /// The descriptor, while held (counted in [`HELD_FILES`]).
    file: Option<File>,
}

/// Descriptors held by [`LogFile`]s now, over the whole process.
static HELD_FILES: AtomicU64 = AtomicU64::new(0);

/// Descriptors left to everything but log files: standard streams, the
/// outputs and their temporaries, a spill file, an OTLP connection.
pub const FD_RESERVE: u64 = 64;

impl LogFile {
    /// Opens `path`; keeps the descriptor if the budget allows (see the
    /// type's doc).
    fn open(path: &Path) -> io::Result<(Self, std::fs::Metadata)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let budget = crate::sys::nofile_limit().saturating_sub(FD_RESERVE);
        let keep = HELD_FILES.fetch_add(1, Ordering::Relaxed) < budget;
        if !keep {
            HELD_FILES.fetch_sub(1, Ordering::Relaxed);
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                dev_ino: (meta.dev(), meta.ino()),
                file: keep.then_some(file),
            },
            meta,
        ))
    }

    /// The file's device and inode: which file it is, whatever its name.
    pub fn dev_ino(&self) -> (u64, u64) {
        self.dev_ino
    }

    /// Whether the descriptor is held between reads.
    pub fn is_held(&self) -> bool {
        self.file.is_some()
    }

    /// Closes the descriptor, if held, for another log to take: later
    /// reads open the file for each read.
    pub fn release(&mut self) {
        if self.file.take().is_some() {
            HELD_FILES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ReadAt for LogFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Some(f) = &self.file {
            return FileExt::read_at(f, buf, offset);
        }
        let f = File::open(&self.path)?;
        let m = f.metadata()?;
        if (m.dev(), m.ino()) != self.dev_ino {
            return Err(io::Error::other(
                "the log was replaced by another file while it was read",
            ));
        }
        FileExt::read_at(&f, buf, offset)
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.release();
    }
}

/// What reading a log found, besides its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Whole, valid records returned.
    pub records: u64,
    /// Damaged frames skipped (crc mismatch, impossible length).
    pub corrupt_frames: u64,
    /// Offsets of the first few damaged regions (for messages).
    pub corrupt_offsets: Vec<u64>,
    /// Frames whose crc matched but whose payload did not decode.
    pub undecodable_frames: u64,
    /// Bytes skipped over while resynchronising.
    pub skipped_bytes: u64,
    /// Bytes checksummed while resynchronising (bounded: a few times the
    /// log's length at most).
    pub resync_checked_bytes: u64,
    /// True when the last frame was cut off mid-record.
    pub truncated_tail: bool,
    /// True when the clean end marker was read.
    pub end_marker: bool,
    /// Offset just past the last valid frame.
    pub valid_bytes: u64,
    /// An I/O error that ended reading early.
    pub io_error: Option<String>,
}

/// Reads one log. See the module doc.
#[derive(Debug)]
pub struct LogReader<R: ReadAt = LogFile> {
    src: R,
    path: PathBuf,
    len: u64,
    header: Header,
    chunk: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
    stats: ReadStats,
    done: bool,
    only_tag: Option<u8>,
    /// The chunk the resync budget is being spent in, and what was spent
    /// there (shared by every resync in that chunk: see `resync`).
    resync_chunk: u64,
    resync_work: u64,
}

const BUF_BYTES: usize = 256 << 10;
/// Checksumming a resync may do per chunk, in chunks (see `resync`).
const RESYNC_WORK_PER_CHUNK: u64 = 4;
const MAX_REPORTED_OFFSETS: usize = 8;

impl LogReader<LogFile> {
    /// Opens `path` and validates its header.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let io_err = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (file, meta) = LogFile::open(path).map_err(io_err)?;
        if meta.is_dir() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        Self::new(file, meta.len(), path)
    }

    /// The file's device and inode (see [`LogFile::dev_ino`]).
    pub fn dev_ino(&self) -> (u64, u64) {
        self.src.dev_ino()
    }

    /// Closes the file's descriptor until the next read needs it (see
    /// [`LogFile::release`]): for a log read to its end.
    pub fn release_file(&mut self) {
        self.src.release();
    }

    /// Whether the file's descriptor is held between reads.
    pub fn holds_file(&self) -> bool {
        self.src.is_held()
    }
}

impl<R: ReadAt> LogReader<R> {
    /// Reads the header of a log of `len` bytes from `src`.
    pub fn new(src: R, len: u64, path: &Path) -> Result<Self, OpenError> {
        let mut r = Self {
            src,
            path: path.to_path_buf(),
            len,
            header: Header {
                session_id: String::new(),
                node_id: String::new(),
                hostname: String::new(),
                backend: String::new(),
                pid: 0,
                tal_version: String::new(),
                start_wall_ns: 0,
                start_mono_ns: 0,
                interval_ns: 0,
                chunk_bytes: 0,
                ncpus: 0,
                attributes: Vec::new(),
            },
            chunk: 0,
            pos: 0,
            buf: vec![0; 4096],
            buf_start: 0,
            buf_len: 0,
            stats: ReadStats::default(),
            done: false,
            only_tag: None,
            resync_chunk: u64::MAX,
            resync_work: 0,
        };
        let not_tal = || OpenError::NotTalLog {
            path: path.to_path_buf(),
        };
        let io_err = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let pre = r.get(0, PREAMBLE_BYTES).map_err(io_err)?;
        if pre.len() < PREAMBLE_BYTES || pre[0..8] != MAGIC {
            return Err(not_tal());
        }
        let version = u32::from_le_bytes(pre[8..12].try_into().expect("4 bytes"));
        let hlen = u32::from_le_bytes(pre[12..16].try_into().expect("4 bytes")) as usize;
        let hcrc = u32::from_le_bytes(pre[16..20].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(OpenError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let corrupt = |reason: &str| OpenError::CorruptHeader {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if hlen > 1 << 20 {
            return Err(corrupt("impossible header length"));
        }
        let payload = r.get(PREAMBLE_BYTES as u64, hlen).map_err(io_err)?;
        if payload.len() < hlen {
            return Err(corrupt("file ends inside the header"));
        }
        if crc32fast::hash(payload) != hcrc {
            return Err(corrupt("header checksum mismatch"));
        }
        let (header, _): (Header, usize) =
            bincode::decode_from_slice(payload, bincode_decode_config())
                .map_err(|e| corrupt(&format!("header does not decode: {e}")))?;
        for (what, id) in [
            ("session id", &header.session_id),
            ("node id", &header.node_id),
        ] {
            if let Err(rule) = crate::ids::check_id(id) {
                return Err(OpenError::BadId {
                    path: path.to_path_buf(),
                    what,
                    id: id.clone(),
                    rule,
                });
            }
        }
        // What `tal record --log-chunk` allows: a multiple of the page
        // size (4 KiB at least) up to 1 GiB.
        if header.chunk_bytes < 4096
            || header.chunk_bytes % 4096 != 0
            || header.chunk_bytes > 1 << 30
        {
            return Err(corrupt("impossible chunk size"));
        }
        r.chunk = header.chunk_bytes;
        r.header = header;
        r.pos = align8((PREAMBLE_BYTES + hlen) as u64);
        r.stats.valid_bytes = r.pos;
        Ok(r)
    }

    /// A reader that returns only the records whose payload starts with
    /// `tag` (bincode's variant index of [`Record`], one byte below 251) and
    /// skips the others undecoded: a cheap scan for one kind of record.
    pub fn only_tag(mut self, tag: u8) -> Self {
        self.only_tag = Some(tag);
        self
    }

    /// The log's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's length, bytes.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// How far into the file reading has come, bytes.
    pub fn position(&self) -> u64 {
        self.pos.min(self.len)
    }

    /// What has been found so far (complete once `next_record` returned None).
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// Returns `n` bytes at `pos` (fewer at the end of the file).
    fn get(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        if pos >= self.len {
            return Ok(&[]);
        }
        let in_buf =
            pos >= self.buf_start && pos + n as u64 <= self.buf_start + self.buf_len as u64;
        if !in_buf {
            // No more than the file holds: a small log takes a small
            // buffer, which counts when thousands are merged.
            let rest = usize::try_from(self.len - pos).unwrap_or(usize::MAX);
            let want = n.max(BUF_BYTES.min(rest));
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let mut filled = 0;
            while filled < want {
                let k = self
                    .src
                    .read_at(&mut self.buf[filled..want], pos + filled as u64)?;
                if k == 0 {
                    break;
                }
                filled += k;
            }
            self.buf_start = pos;
            self.buf_len = filled;
        }
        let off = (pos - self.buf_start) as usize;
        let end = (off + n).min(self.buf_len);
        Ok(&self.buf[off..end])
    }

    /// Checks whether a valid frame starts at `pos`; returns its payload
    /// length if so.
    fn frame_at(&mut self, pos: u64) -> io::Result<Option<u32>> {
        let len = self.len;
        let h = self.get(pos, FRAME_HEADER_BYTES)?;
        if h.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let flen = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if flen == 0 || flen > MAX_RECORD_BYTES || pos + 8 + u64::from(flen) > len {
            return Ok(None);
        }
        let p = self.get(pos + 8, flen as usize)?;
        Ok((crc32fast::hash(p) == crc).then_some(flen))
    }

    /// Finds the next valid frame at an 8-aligned offset ≥ `from`.
    ///
    /// Each candidate costs a checksum over the length it claims, so a
    /// damaged region full of plausible lengths would make this quadratic
    /// (2 MiB of `{len = 1 MiB, crc = 0}` words once took 14 s). The work is
    /// therefore bounded: within one chunk, once candidates have cost more
    /// than [`RESYNC_WORK_PER_CHUNK`] chunks' worth of checksumming, the
    /// search jumps to the next chunk boundary (where the writer starts
    /// frames afresh), so a whole log costs at most a few passes. The
    /// budget is the chunk's, shared by every resync in it, and a candidate
    /// is checked only if its claimed length fits what is left of it, so
    /// a whole log costs at most [`RESYNC_WORK_PER_CHUNK`] times its length
    /// (fuzzing found 7.1 MB checksummed for a 0.5 MB log when the last
    /// candidate of a chunk could claim any length). A frame longer than
    /// that budget right after damage is therefore not found by the
    /// search; reading resumes at the next chunk boundary.
    fn resync(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut q = align8(from);
        while q + FRAME_HEADER_BYTES as u64 <= self.len {
            if q / self.chunk != self.resync_chunk {
                self.resync_chunk = q / self.chunk;
                self.resync_work = 0;
            }
            // What checking this candidate costs, before checking it: one
            // that would take the chunk past its budget is not checked
            // (else a single claim of up to `MAX_RECORD_BYTES` per chunk
            // made the search quadratic), and the search goes on at the
            // next chunk boundary.
            let claimed = self.claimed_len(q)?;
            if claimed == 0 {
                // No frame could start here (`frame_at` would say so).
                q += 8;
                continue;
            }
            if self.resync_work + claimed > RESYNC_WORK_PER_CHUNK * self.chunk {
                q = (q / self.chunk + 1).saturating_mul(self.chunk);
                continue;
            }
            self.resync_work += claimed;
            self.stats.resync_checked_bytes += claimed;
            if self.frame_at(q)?.is_some() {
                return Ok(Some(q));
            }
            q += 8;
        }
        Ok(None)
    }

    /// The payload length the frame header at `pos` claims, where it is
    /// one a frame could have (what checking it costs); else 0.
    fn claimed_len(&mut self, pos: u64) -> io::Result<u64> {
        let len = self.len;
        let h = self.get(pos, 4)?;
        if h.len() < 4 {
            return Ok(0);
        }
        let flen = u64::from(u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")));
        Ok(
            if flen <= u64::from(MAX_RECORD_BYTES) && pos + 8 + flen <= len {
                flen
            } else {
                0
            },
        )
    }

    fn note_corrupt(&mut self, at: u64, to: u64) {
        self.stats.corrupt_frames += 1;
        self.stats.skipped_bytes += to - at;
        if self.stats.corrupt_offsets.len() < MAX_REPORTED_OFFSETS {
            self.stats.corrupt_offsets.push(at);
        }
    }

    /// The next valid record, or `None` at the end of what can be read.
    pub fn next_record(&mut self) -> Option<Record> {
        match self.next_inner() {
            Ok(r) => r,
            Err(e) => {
                self.stats.io_error = Some(e.to_string());
                self.done = true;
                None
            }
        }
    }

    fn next_inner(&mut self) -> io::Result<Option<Record>> {
        while !self.done {
            let pos = self.pos;
            if pos + FRAME_HEADER_BYTES as u64 > self.len {
                // Fewer bytes than a frame header left: a cut inside a frame
                // header unless they are all zero (preallocated space).
                let rest = self.get(pos, (self.len - pos.min(self.len)) as usize)?;
                if rest.iter().any(|&b| b != 0) {
                    self.stats.truncated_tail = true;
                }
                self.done = true;
                break;
            }
            let h = self.get(pos, FRAME_HEADER_BYTES)?;
            let flen = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
            if flen == PAD_MARKER {
                match (pos / self.chunk + 1).checked_mul(self.chunk) {
                    Some(next) => self.pos = next,
                    None => self.done = true,
                }
                continue;
            }
            if flen == 0 {
                // End of written data, unless a damaged region hides more.
                match self.resync(pos + 8)? {
                    Some(q) => {
                        self.note_corrupt(pos, q);
                        self.pos = q;
                        continue;
                    }
                    None => {
                        self.done = true;
                        break;
                    }
                }
            }
            match self.frame_at(pos)? {
                Some(flen) => {
                    let end = align8(pos + 8 + u64::from(flen));
                    let only = self.only_tag;
                    let payload = self.get(pos + 8, flen as usize)?;
                    if only.is_some_and(|t| payload.first() != Some(&t)) {
                        self.pos = end;
                        continue;
                    }
                    let decoded: Result<(Record, usize), _> =
                        bincode::decode_from_slice(payload, bincode_decode_config());
                    self.pos = end;
                    match decoded {
                        Ok((rec, _)) => {
                            self.stats.records += 1;
                            self.stats.valid_bytes = end;
                            if matches!(rec, Record::End(_)) {
                                self.stats.end_marker = true;
                            }
                            return Ok(Some(rec));
                        }
                        Err(_) => self.stats.undecodable_frames += 1,
                    }
                }
                None => {
                    let cut = flen <= MAX_RECORD_BYTES && pos + 8 + u64::from(flen) > self.len;
                    match self.resync(pos + 8)? {
                        Some(q) => {
                            self.note_corrupt(pos, q);
                            self.pos = q;
                        }
                        None => {
                            if cut {
                                self.stats.truncated_tail = true;
                            } else {
                                self.note_corrupt(pos, self.len);
                            }
                            self.done = true;
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

impl<R: ReadAt> Iterator for LogReader<R> {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        self.next_record()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Header, LogWriter};
    use crate::record::{EndMarker, EndReason};

    fn log(path: &Path, node: &str, records: u64) {
        let h = Header {
            session_id: "s".into(),
            node_id: node.into(),
            hostname: node.into(),
            backend: "tal".into(),
            pid: 1,
            tal_version: "0".into(),
            start_wall_ns: 1,
            start_mono_ns: 1,
            interval_ns: 1,
            chunk_bytes: 4096,
            ncpus: 1,
            attributes: vec![],
        };
        let mut w = LogWriter::create(path, &h).unwrap();
        for i in 0..records {
            let end = Record::End(EndMarker {
                wall_ns: i as i64,
                reason: EndReason::Signal(15),
            });
            w.append(&end).unwrap();
        }
        w.finish(None).unwrap();
    }

    #[test]
    fn a_released_log_reads_the_same_and_refuses_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tal"), dir.path().join("b.tal"));
        // Larger than one buffer, so that reading it takes several reads.
        log(&a, "a", 40_000);
        log(&b, "b", 40_000);
        let whole: Vec<Record> = LogReader::open(&a).unwrap().collect();
        let mut r = LogReader::open(&a).unwrap();
        r.release_file();
        assert!(!r.holds_file());
        let released: Vec<Record> = r.by_ref().collect();
        assert_eq!(released, whole);
        assert!(r.stats().io_error.is_none() && r.stats().end_marker);

        // Replaced by another log under the same name while it is read.
        let mut r = LogReader::open(&a).unwrap();
        r.release_file();
        let first = r.next_record();
        assert!(first.is_some());
        std::fs::rename(&b, &a).unwrap();
        let rest = r.by_ref().count();
        assert!(
            rest < whole.len(),
            "{rest} records read from the other file"
        );
        let e = r.stats().io_error.clone().unwrap_or_default();
        assert!(e.contains("replaced"), "{e}");
    }
}
