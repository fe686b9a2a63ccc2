//! Streaming k-way merge of node logs into one time-ordered event stream.
//!
//! Each log is read frame by frame; one pending event per log sits in a
//! min-heap keyed by (event time, log index, sequence), so memory is one
//! reader buffer and one event per log whatever the logs' lengths. Snapshots
//! and end markers are absorbed into per-log state as they stream past.
//! Within one log the original order is kept for equal times.
//!
//! A node log is written in batches, each sorted by time, but a batch can
//! end with client events slightly newer than a resource sample that lands
//! in the next batch (or a client can send an old `event_time`). Each log
//! therefore passes through a reorder buffer of [`REORDER_WINDOW`] events
//! before the merge: disorder within that many events is repaired; beyond
//! it, events are written in log order.

use super::gpufill::GpuFill;
use crate::log::{LogReader, ReadStats};
use crate::record::{AgentSnapshot, EndMarker, Event, EventKind, Record};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// Events held per log to repair local disorder (see the module doc).
pub const REORDER_WINDOW: usize = 2048;

/// Per-log state gathered while merging.
#[derive(Debug)]
pub struct NodeState {
    /// The reader.
    pub reader: LogReader,
    /// The latest snapshot seen.
    pub snapshot: Option<AgentSnapshot>,
    /// The end marker, if the log has one.
    pub end: Option<EndMarker>,
    /// The latest time of any record (events, snapshots, end).
    pub last_time_ns: i64,
    /// The SessionEnded event of this node, if seen.
    pub session_ended: Option<Event>,
    /// Events read.
    pub events: u64,
    /// Events read ahead, kept sorted by time (stable): almost always in
    /// order already, so an insert is a push at the back.
    reorder: VecDeque<Event>,
    exhausted: bool,
    /// Back-filled GPU utilisation for this log's polls (logs with GPUs).
    gpufill: Option<GpuFill>,
}

/// The merge. Iterate with [`Merge::next_event`].
#[derive(Debug)]
pub struct Merge {
    /// One entry per log, in the order given.
    pub nodes: Vec<NodeState>,
    heap: BinaryHeap<Reverse<(i64, usize, u64)>>,
    seq: u64,
}

impl Merge {
    /// Bytes read so far, over all the logs.
    pub fn bytes_read(&self) -> u64 {
        self.nodes.iter().map(|n| n.reader.position()).sum()
    }

    /// Starts merging `readers`.
    pub fn new(readers: Vec<LogReader>) -> Self {
        let n = readers.len();
        let mut m = Self {
            nodes: readers
                .into_iter()
                .map(|reader| {
                    let start = reader.header().start_wall_ns;
                    let gpufill =
                        GpuFill::open(reader.path(), GpuFill::gpu_ids(&reader.header().attributes));
                    NodeState {
                        gpufill,
                        reader,
                        snapshot: None,
                        end: None,
                        last_time_ns: start,
                        session_ended: None,
                        events: 0,
                        reorder: VecDeque::with_capacity(REORDER_WINDOW),
                        exhausted: false,
                    }
                })
                .collect(),
            heap: BinaryHeap::with_capacity(n),
            seq: 0,
        };
        for i in 0..n {
            m.advance(i);
        }
        m
    }

    /// Fills log `i`'s reorder buffer, takes its earliest event and queues it.
    fn advance(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        while !node.exhausted && node.reorder.len() < REORDER_WINDOW {
            match node.reader.next_record() {
                Some(Record::Event(ev)) => {
                    node.last_time_ns = node.last_time_ns.max(ev.event_time_ns);
                    node.events += 1;
                    let t = ev.event_time_ns;
                    if node.reorder.back().is_none_or(|b| b.event_time_ns <= t) {
                        node.reorder.push_back(ev);
                    } else {
                        // After every event with the same or an earlier time.
                        let at = node.reorder.partition_point(|e| e.event_time_ns <= t);
                        node.reorder.insert(at, ev);
                    }
                }
                Some(Record::Snapshot(s)) => {
                    node.last_time_ns = node.last_time_ns.max(s.wall_ns);
                    node.snapshot = Some(s);
                }
                Some(Record::End(e)) => {
                    node.last_time_ns = node.last_time_ns.max(e.wall_ns);
                    node.end = Some(e);
                }
                // Read by the node's look-ahead reader (`gpufill`).
                Some(Record::GpuUtil(_)) => {}
                None => {
                    node.exhausted = true;
                    // Its descriptor is not needed any more (see
                    // `crate::log::LogFile`).
                    node.reader.release_file();
                }
            }
        }
        // The log's next event stays at the front of its buffer until it
        // is taken (an event is a few hundred bytes: it is moved once,
        // when taken). The first slice holds the front whenever there is
        // one.
        let (a, b) = node.reorder.as_mut_slices();
        if let Some((ev, rest)) = a.split_first_mut() {
            if let Some(f) = node.gpufill.as_mut() {
                f.apply(ev, rest.iter().chain(b.iter()));
            }
            let t = ev.event_time_ns;
            self.seq += 1;
            self.heap.push(Reverse((t, i, self.seq)));
        }
    }

    /// The next event in time order, with the index of its log.
    /// SessionEnded events are held back in the node state (the converter
    /// writes one SessionEnded for the whole session at the end).
    pub fn next_event(&mut self) -> Option<(usize, Event)> {
        loop {
            let Reverse((_, i, _)) = self.heap.pop()?;
            let ev = self.nodes[i]
                .reorder
                .pop_front()
                .expect("a queued log has its next event at its buffer's front");
            self.advance(i);
            if matches!(ev.kind, EventKind::SessionEnded { .. }) {
                self.nodes[i].session_ended = Some(ev);
                continue;
            }
            return Some((i, ev));
        }
    }

    /// Read statistics of log `i`.
    pub fn stats(&self, i: usize) -> &ReadStats {
        self.nodes[i].reader.stats()
    }
}
