//! The binary log: one file per node and session, written only by
//! [`LogWriter`] and read back by [`LogReader`]. The format is specified in
//! the module doc of [`writer`].

pub mod reader;
pub mod writer;

use bincode::{Decode, Encode};
use std::path::PathBuf;

pub use reader::{LogFile, LogReader, ReadStats};
pub use writer::LogWriter;

/// The first eight bytes of every tal log.
pub const MAGIC: [u8; 8] = *b"\x89TALLOG\n";
/// The format version this build writes and reads. 2: the agent snapshot
/// carries the GPU agent's counters and NVML latency histogram. 3: GPU
/// back-fill records, and per-device error and back-fill counters in the
/// snapshot.
pub const FORMAT_VERSION: u32 = 5;
/// Frame length value that means "skip to the next chunk boundary".
pub const PAD_MARKER: u32 = u32::MAX;
/// The largest payload a frame may carry.
pub const MAX_RECORD_BYTES: u32 = 64 << 20;
/// Bytes before the header payload: magic, version, length, crc, reserved.
pub const PREAMBLE_BYTES: usize = 24;
/// Bytes of a frame header: length and crc.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Default chunk by which the file's space is reserved ahead.
pub const DEFAULT_CHUNK_BYTES: u64 = 1 << 20;

/// bincode configuration used for the header and every record.
pub(crate) fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The configuration records are decoded with: the same, and no length a
/// record claims (a string's, a list's) may exceed [`MAX_RECORD_BYTES`],
/// so a crafted record cannot make the reader allocate more than that.
pub(crate) fn bincode_decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ MAX_RECORD_BYTES as usize }>,
> {
    bincode::config::standard().with_limit::<{ MAX_RECORD_BYTES as usize }>()
}

/// Rounds `n` up to a multiple of 8.
#[inline]
pub(crate) fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// The log header: who wrote the log, when, and how.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Header {
    /// The session this log belongs to.
    pub session_id: String,
    /// The node that wrote it.
    pub node_id: String,
    /// The full host name of that node.
    pub hostname: String,
    /// The backend name put on the agent's events.
    pub backend: String,
    /// The agent's pid.
    pub pid: u32,
    /// The tal version that wrote it.
    pub tal_version: String,
    /// Wall-clock start, ns since the epoch.
    pub start_wall_ns: i64,
    /// Monotonic clock at the same instant, ns.
    pub start_mono_ns: u64,
    /// Sampling interval, ns.
    pub interval_ns: u64,
    /// File growth chunk, bytes (a multiple of the page size).
    pub chunk_bytes: u64,
    /// Online CPUs at start.
    pub ncpus: u32,
    /// Session attributes (for example Slurm job and step ids).
    pub attributes: Vec<(String, String)>,
}

/// Errors of writing a log.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Could not create or extend the file.
    #[error("cannot write log {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file system is full: the log keeps every record written so far.
    #[error("disk full while writing log {path}: recording stopped at {bytes} bytes, every record before that is kept")]
    DiskFull {
        /// The log.
        path: PathBuf,
        /// Bytes of whole records kept.
        bytes: u64,
    },
    /// A record could not be encoded (too large).
    #[error("record of {0} bytes is larger than the limit of {MAX_RECORD_BYTES} bytes")]
    TooLarge(usize),
}

/// Errors of opening a log.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with tal's magic bytes.
    #[error(
        "{path} is not a tal log (no tal header; expected a .tal file written by `tal record`)"
    )]
    NotTalLog {
        /// The file.
        path: PathBuf,
    },
    /// A log of a format this build does not know.
    #[error("{path} is a tal log of format version {version}, but this tal reads version {FORMAT_VERSION}: convert it with the tal release that wrote it")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The header names a session or node id that `tal record` would not
    /// take (see [`crate::ids::check_id`]): the log was not written by
    /// tal, and its ids must not name files.
    #[error("{path}: refused: its header's {what} {id:?} is not one `tal record` writes ({rule}); a crafted log could name files outside its folder")]
    BadId {
        /// The file.
        path: PathBuf,
        /// "session id" or "node id".
        what: &'static str,
        /// The id (printed escaped).
        id: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The header is damaged.
    #[error("{path}: the tal log header is damaged ({reason}); nothing in it can be trusted")]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
