//! The writer stage: the dispatcher's sink, and the only owner of the log.

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
