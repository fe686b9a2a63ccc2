//! The dispatcher's fan-out to the live feeds: each event it records is
//! also offered to `tal subscribe`'s subscribers ([`Fanout`], formatted as
//! its JSONL line only while someone subscribes) and to the live OTLP
//! exporter ([`Exporter`]), each through a bounded ring that the
//! dispatcher never waits on: a full ring drops and counts. Apart from
//! the aggregation (`super`), which decides what is recorded; this only
//! hands copies on.

use crate::ingest::listener::SubLine;
use crate::record::{Event, EventKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The live OTLP exporter's side of the dispatcher.
#[derive(Debug)]
pub(super) struct Exporter {
    pub(super) tx: crate::ring::Producer<crate::otlp_live::Offered>,
    pub(super) thread: std::thread::Thread,
    pub(super) counters: Arc<crate::otlp_live::LiveCounters>,
}

impl Exporter {
    /// Offers `ev`, counted as `bytes` (see [`crate::otlp_live::Offered`]).
    pub(super) fn offer(&mut self, ev: &Event, bytes: usize) {
        let bytes = bytes + std::mem::size_of::<Event>();
        let held = &self.counters.ring_bytes;
        // Counted before the push, so that the exporter, which gives the
        // bytes back after its pop, never takes back more than was added.
        if held.fetch_add(bytes, Ordering::AcqRel) + bytes > crate::otlp_live::RING_BYTES
            || self.tx.push((ev.clone(), bytes)).is_err()
        {
            held.fetch_sub(bytes, Ordering::AcqRel);
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The ring holds a quarter of its events or of its bytes.
    pub(super) fn filling(&self) -> bool {
        self.tx.len() * 4 >= self.tx.capacity()
            || self.counters.ring_bytes.load(Ordering::Relaxed) * 4 >= crate::otlp_live::RING_BYTES
    }
}

/// Lines the fan-out pushes between two wakes of the listener within one
/// drain: a drain of more lines than the ring holds is then taken by the
/// listener while the dispatcher is still formatting it, instead of being
/// dropped. One wake (an eventfd write) per 4,096 lines costs nothing
/// measurable beside formatting them.
const WAKE_EVERY: usize = 4096;

/// The dispatcher's side of the push API: formats each event as its JSONL
/// line (only while someone subscribes) and hands it to the listener
/// through a bounded ring; a full ring drops the line and counts it, the
/// dispatcher never waits for a subscriber.
#[derive(Debug)]
pub struct Fanout {
    /// Formats lines as `convert` does.
    pub ctx: crate::event_json::Ctx,
    /// This node.
    pub node_id: String,
    /// How many subscribers the listener has now.
    pub subscribers: Arc<std::sync::atomic::AtomicUsize>,
    /// To the listener.
    pub tx: crate::ring::Producer<SubLine>,
    /// Wakes the listener after a batch.
    pub waker: crate::ingest::listener::Waker,
    /// Lines dropped because the ring was full.
    pub dropped: Arc<AtomicU64>,
    pending: bool,
    /// Lines pushed since the listener was last woken.
    since_wake: usize,
    /// Lines lost to a full ring and not yet told, by event type.
    lost: Vec<(String, u64)>,
}

impl Fanout {
    /// A fan-out to the listener.
    pub fn new(
        ctx: crate::event_json::Ctx,
        node_id: String,
        subscribers: Arc<std::sync::atomic::AtomicUsize>,
        tx: crate::ring::Producer<SubLine>,
        waker: crate::ingest::listener::Waker,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            ctx,
            node_id,
            subscribers,
            tx,
            waker,
            dropped,
            pending: false,
            since_wake: 0,
            lost: Vec::new(),
        }
    }

    /// Whether anyone subscribes now.
    pub(super) fn wanted(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub(super) fn offer(&mut self, ev: &Event) {
        if !self.wanted() || matches!(ev.kind, EventKind::GpuProcesses(_)) {
            return;
        }
        let event_type = ev.kind.type_name();
        self.pending = true;
        // Losses are told, in their place, before any later line.
        if !self.tell_losses() {
            self.lose(event_type);
            return;
        }
        let mut line = Vec::with_capacity(512);
        self.ctx.event_line(&mut line, &self.node_id, ev);
        let item = SubLine {
            event_type: event_type.to_string(),
            line,
            lost: 0,
        };
        if self.tx.push(item).is_err() {
            self.lose(event_type);
            return;
        }
        // A large drain wakes the listener as it goes, so that the ring
        // never holds more than a fraction of a drain (see `WAKE_EVERY`).
        self.since_wake += 1;
        if self.since_wake >= WAKE_EVERY {
            self.since_wake = 0;
            self.waker.wake();
        }
    }

    /// Counts a line lost to a full ring, to be told to the subscribers.
    fn lose(&mut self, event_type: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        match self.lost.iter_mut().find(|(t, _)| t == event_type) {
            Some(e) => e.1 += 1,
            None => self.lost.push((event_type.to_string(), 1)),
        }
    }

    /// Pushes a loss marker for each type with lines lost; true when none
    /// is left to push.
    fn tell_losses(&mut self) -> bool {
        while let Some((t, n)) = self.lost.pop() {
            let marker = SubLine {
                event_type: t,
                line: Vec::new(),
                lost: n,
            };
            if let Err(crate::ring::PushError::Full(m)) = self.tx.push(marker) {
                self.lost.push((m.event_type, m.lost));
                return false;
            }
        }
        true
    }

    pub(super) fn flush(&mut self) {
        if !self.lost.is_empty() {
            self.tell_losses();
            self.pending = true;
        }
        if std::mem::take(&mut self.pending) {
            self.since_wake = 0;
            self.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::channel;

    #[test]
    fn lines_lost_to_a_full_ring_are_told_in_their_place() {
        use crate::event_json::Ctx;
        let (tx, mut rx) = channel::<SubLine>(4);
        let subs = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut f = Fanout::new(
            Ctx::new("s"),
            "n".into(),
            subs,
            tx,
            crate::ingest::listener::Waker::none(),
            Arc::clone(&dropped),
        );
        let ev = |ty: &str, i: u128| Event {
            event_id: i,
            event_time_ns: 1,
            emit_time_ns: 1,
            backend: None,
            task_id: Some("t".into()),
            node_id: None,
            attributes: Vec::new(),
            kind: EventKind::Custom {
                event_type: ty.into(),
                fields: Vec::new(),
            },
        };
        // Four fit; then three app.A and two app.B are lost.
        for i in 0..4 {
            f.offer(&ev("app.A", i));
        }
        for i in 0..3 {
            f.offer(&ev("app.A", 10 + i));
        }
        for i in 0..2 {
            f.offer(&ev("app.B", 20 + i));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 5);
        let first: Vec<SubLine> = std::iter::from_fn(|| rx.pop()).collect();
        assert_eq!(first.len(), 4);
        assert!(first.iter().all(|l| l.lost == 0));
        // The next line comes after the markers of what was lost.
        f.offer(&ev("app.A", 30));
        let next: Vec<(String, u64, bool)> = std::iter::from_fn(|| rx.pop())
            .map(|l| (l.event_type, l.lost, l.line.is_empty()))
            .collect();
        assert_eq!(
            next,
            vec![
                ("app.B".to_string(), 2, true),
                ("app.A".to_string(), 3, true),
                ("app.A".to_string(), 0, false),
            ]
        );
    }
}
