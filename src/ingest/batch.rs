//! `IngestBatch`: accepted client events on their way from the listener to
//! the dispatcher, already in the log's record encoding.
//!
//! The listener encodes each accepted event (a `Record::Event`, bincode as
//! the log stores it) straight into the current batch and hands the batch
//! over whole: one ring slot and one allocation per batch instead of a
//! struct and a handful of strings per event, and the dispatcher only sorts
//! by time and copies bytes into the log. The dispatcher decodes an event
//! again only while someone subscribes to the push API.

use crate::log::bincode_config;
use crate::record::{Event, Record};
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::Encode;

/// Encoded bytes after which the listener hands a batch over (a batch of
/// one large event may be bigger).
pub const BATCH_BYTES: usize = 32 << 10;

/// Events in the log's record encoding, back to back, with each one's
/// `event_time_ns` (for the dispatcher's time ordering).
#[derive(Debug, Default)]
pub struct IngestBatch {
    bytes: Vec<u8>,
    /// (event_time_ns, end offset in `bytes`) of each event, in arrival order.
    items: Vec<(i64, u32)>,
}

/// Encodes as `Record::Event(event)` does, without owning the event.
struct AsRecord<'a>(&'a Event);

impl Encode for AsRecord<'_> {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        // `Record::Event` is variant 0.
        0u32.encode(e)?;
        self.0.encode(e)
    }
}

impl IngestBatch {
    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Encoded bytes in the batch.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Makes room for events of about `json_bytes` of input (their
    /// encoding is smaller than their JSON), so that a batch grows once.
    pub fn reserve_for(&mut self, json_bytes: usize) {
        let n = json_bytes.min(BATCH_BYTES + BATCH_BYTES / 8);
        self.bytes.reserve(n);
        self.items.reserve(n / 128 + 1);
    }

    /// Appends an event.
    pub fn push_event(&mut self, ev: &Event) {
        bincode::encode_into_std_write(AsRecord(ev), &mut self.bytes, bincode_config())
            .expect("encoding into a Vec cannot fail");
        self.items.push((ev.event_time_ns, self.bytes.len() as u32));
    }

    /// Appends whatever `encode` writes as one event with time
    /// `event_time_ns`; when it returns `None` the batch is left as it was.
    pub fn push_with(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Option<i64>) -> bool {
        let mark = self.bytes.len();
        match encode(&mut self.bytes) {
            Some(t) => {
                self.items.push((t, self.bytes.len() as u32));
                true
            }
            None => {
                self.bytes.truncate(mark);
                false
            }
        }
    }

    /// Empties the batch, keeping its buffers (for reuse by the listener).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.items.clear();
    }

    /// Event `i`: its time and its encoded record.
    pub fn get(&self, i: usize) -> (i64, &[u8]) {
        let start = if i == 0 {
            0
        } else {
            self.items[i - 1].1 as usize
        };
        let (t, end) = self.items[i];
        (t, &self.bytes[start..end as usize])
    }
}

/// Decodes one encoded record (for subscribers and test sinks).
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    bincode::decode_from_slice(bytes, bincode_config()).map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{EventKind, TaskEvent, TaskState, Value};

    #[test]
    fn events_come_back_as_records_with_their_times() {
        let mut b = IngestBatch::default();
        let ev = |t: i64, id: &str| Event {
            event_id: 7,
            event_time_ns: t,
            emit_time_ns: t + 1,
            backend: Some("b".into()),
            task_id: Some(id.into()),
            node_id: None,
            attributes: vec![("k".into(), Value::Float(0.5))],
            kind: EventKind::Task(TaskEvent {
                state: TaskState::Started,
                duration_seconds: None,
                error_type: None,
                extra: Vec::new(),
            }),
        };
        b.push_event(&ev(5, "a"));
        assert!(!b.push_with(|out| {
            out.extend_from_slice(b"junk");
            None
        }));
        b.push_event(&ev(3, "b"));
        assert_eq!(b.len(), 2);
        for (i, (t, id)) in [(5, "a"), (3, "b")].into_iter().enumerate() {
            let (time, bytes) = b.get(i);
            assert_eq!(time, t);
            assert_eq!(decode(bytes).unwrap(), Record::Event(ev(t, id)));
        }
    }
}
