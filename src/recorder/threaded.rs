//! Benchmark only (`cargo build --release --features writer-thread`): the
//! writer stage on a thread of its own, fed by the dispatcher through a
//! ring, as the first design had it. It exists for the A/B measurement in
//! [`super::stage`]'s doc, which is why tal runs the writer stage on the
//! dispatcher's thread instead; nothing else uses it.
//!
//! It is built as a fair rival: the dispatcher gathers a drain's records
//! (and the listener's encoded payloads, as bytes) in one batch, hands the
//! batch over with one push and one wake-up at the drain's end, and gets
//! emptied batches back to refill, so neither side allocates once warm.

use super::stage::WriterStage;
use crate::log::WriteError;
use crate::record::Record;
use crate::ring::{self, Consumer, Producer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// One item of a batch, in the order the dispatcher gave them.
#[derive(Debug)]
enum Item {
    Put(Record),
    Final(Record),
    /// An encoded payload: its bytes in [`Batch::bytes`].
    Encoded(std::ops::Range<usize>),
}

/// One drain's records.
#[derive(Debug, Default)]
struct Batch {
    items: Vec<Item>,
    bytes: Vec<u8>,
}

/// Batches in flight at most (the dispatcher waits for the writer past it).
const BATCHES: usize = 8;

/// The writer stage on its own thread (see the module doc).
#[derive(Debug)]
pub(super) struct ThreadedStage {
    current: Batch,
    tx: Producer<Batch>,
    back: Consumer<Batch>,
    done: Arc<AtomicBool>,
    writer: JoinHandle<WriterStage>,
}

impl ThreadedStage {
    /// Starts `stage`'s thread.
    pub(super) fn spawn(mut stage: WriterStage) -> std::io::Result<Self> {
        let (tx, mut rx) = ring::channel::<Batch>(BATCHES);
        let (mut back_tx, back) = ring::channel::<Batch>(BATCHES);
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        let writer = thread::Builder::new()
            .name("tal-writer".into())
            .spawn(move || loop {
                while let Some(mut b) = rx.pop() {
                    for item in b.items.drain(..) {
                        match item {
                            Item::Put(r) => crate::dispatch::Sink::put(&mut stage, r),
                            Item::Final(r) => crate::dispatch::Sink::put_final(&mut stage, r),
                            Item::Encoded(span) => {
                                crate::dispatch::Sink::put_encoded(&mut stage, &b.bytes[span])
                            }
                        }
                    }
                    b.bytes.clear();
                    crate::dispatch::Sink::flush(&mut stage);
                    let _ = back_tx.push(b);
                }
                if finished.load(Ordering::Acquire) && rx.is_empty() {
                    return stage;
                }
                thread::park();
            })?;
        Ok(Self {
            current: Batch::default(),
            tx,
            back,
            done,
            writer,
        })
    }

    /// Hands the writer everything, waits for it, and finishes the log.
    pub(super) fn finish(mut self) -> Result<PathBuf, WriteError> {
        crate::dispatch::Sink::flush(&mut self);
        self.done.store(true, Ordering::Release);
        self.writer.thread().unpark();
        match self.writer.join() {
            Ok(stage) => stage.finish(),
            Err(_) => Err(WriteError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other("the writer thread panicked"),
            }),
        }
    }
}

impl crate::dispatch::Sink for ThreadedStage {
    fn put(&mut self, r: Record) {
        self.current.items.push(Item::Put(r));
    }

    fn put_encoded(&mut self, payload: &[u8]) {
        let start = self.current.bytes.len();
        self.current.bytes.extend_from_slice(payload);
        let end = self.current.bytes.len();
        self.current.items.push(Item::Encoded(start..end));
    }

    fn put_final(&mut self, r: Record) {
        self.current.items.push(Item::Final(r));
    }

    fn flush(&mut self) {
        if self.current.items.is_empty() {
            return;
        }
        let next = self.back.pop().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.current, next);
        loop {
            match self.tx.push(batch) {
                Ok(()) => break,
                Err(ring::PushError::Full(b)) => {
                    // The writer is BATCHES drains behind: let it run.
                    batch = b;
                    self.writer.thread().unpark();
                    thread::yield_now();
                }
            }
        }
        self.writer.thread().unpark();
    }
}
