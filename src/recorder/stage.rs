//! The writer stage: the dispatcher's sink, and the only owner of the log.
//!
//! It runs on the dispatcher's thread, in the dispatcher's wake-up: the
//! records of a drain are encoded and handed to the file (see
//! [`crate::log::writer`]) before the dispatcher sleeps again. The design
//! card had a writer thread of its own behind a ring. tal's threads share
//! one CPU by default (`--pin`), so a second thread buys no parallelism
//! there, only a hand-over and a wake-up per drain; measured side by side
//! on a 2-vCPU VM, it did not pay:
//!
//! | A/B, this stage inline (A) vs on its own thread (B) | A | B |
//! | --- | --- | --- |
//! | idle agent at 10 Hz, µs of CPU per sample, A started first (6 × 20 s, medians) | 157.5 | 200.5 (B / A 1.28) |
//! | the same, B started first | 153.9 | 158.2 (B / A 1.03) |
//! | socket ingest, default pinning: events/s (CPU per event), two runs of 3 | 2.74 M (361 ns), 2.49 M (398 ns) | 2.40 M (415 ns), 2.46 M (404 ns) |
//! | socket ingest, `--pin none`: events/s (CPU per event) | 2.56 M (430 ns), 3.44 M (335 ns) | 3.01 M (460 ns), 3.46 M (418 ns) |
//!
//! The rival is built fairly (`recorder/threaded.rs`: one batch and one
//! wake-up per drain, batches recycled, nothing allocated once warm) and
//! passes the same tests. To reproduce:
//!
//! ```text
//! cargo build --release && cp target/release/tal /tmp/tal-inline
//! cargo build --release --features writer-thread && cp target/release/tal /tmp/tal-thread
//! scripts/bench-ab.sh /tmp/tal-inline /tmp/tal-thread 20 6   # and swapped
//! python3 scripts/bench_ingest.py /tmp/tal-inline 1000000 3  # and /tmp/tal-thread
//! ```

use crate::ingest::listener::StopControl;
use crate::log::{LogWriter, WriteError};
use crate::record::Record;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The writer stage: the only owner of the log file. After a write error
/// (disk full) it reports once on stderr, keeps the file valid up to the
/// last whole record, and counts every later record as lost; the recording
/// (and a wrapped command) carry on.
#[derive(Debug)]
pub struct WriterStage {
    writer: LogWriter,
    failed: Option<crate::log::WriteError>,
    lost: Arc<AtomicU64>,
    /// Told to the ingest listener once the log takes no more records.
    full: Option<Arc<StopControl>>,
}

impl WriterStage {
    /// A stage appending to `writer`, counting lost records in `lost`.
    pub fn new(writer: LogWriter, lost: Arc<AtomicU64>) -> Self {
        Self {
            writer,
            failed: None,
            lost,
            full: None,
        }
    }

    /// Also tells `control`'s listener when the log is full.
    pub fn telling(mut self, control: Arc<StopControl>) -> Self {
        self.full = Some(control);
        self
    }

    /// Trims and syncs the log; the first write error, if any.
    pub fn finish(self) -> Result<PathBuf, crate::log::WriteError> {
        let path = self.writer.finish(None)?;
        match self.failed {
            Some(e) => Err(e),
            None => Ok(path),
        }
    }
}

impl WriterStage {
    /// Runs one writer call; counts the records it lost, and reports the
    /// first failure once (the writer refuses, and counts, every record
    /// from then on).
    fn write(&mut self, op: impl FnOnce(&mut LogWriter) -> Result<(), WriteError>) {
        let before = self.writer.lost_records();
        let res = op(&mut self.writer);
        let lost = self.writer.lost_records() - before;
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
        if let Err(e) = res {
            if self.failed.is_none() {
                eprintln!("tal: {e}");
                self.failed = Some(e);
                if let Some(c) = &self.full {
                    c.log_full.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

impl crate::dispatch::Sink for WriterStage {
    fn put(&mut self, r: Record) {
        self.write(|w| w.append(&r));
    }

    fn put_encoded(&mut self, payload: &[u8]) {
        self.write(|w| w.append_encoded(payload));
    }

    fn put_final(&mut self, r: Record) {
        self.write(|w| w.append_final(&r));
    }

    fn flush(&mut self) {
        self.write(LogWriter::flush);
    }
}
