//! `Feed`: the live subscribers' shared backlog of event lines, and each
//! subscriber's place in it ([`Cursor`]).
//!
//! The dispatcher formats each event once and hands the line to the
//! listener through a ring; the listener moves it into the feed, and every
//! subscriber is written from its own cursor as fast as its socket takes
//! the lines, a chunk ([`OUT_CHUNK`]) at a time. A line leaves the feed
//! when every cursor has passed it. So a subscriber that keeps up gets
//! every line, however large a drain of the dispatcher's is, and a
//! subscriber costs only its cursor and one chunk: the backlog is shared.
//!
//! **Who loses what.** The feed holds at most [`FEED_BYTES`]. When it is
//! full, further lines wait in the dispatcher's ring while the subscribers'
//! sockets take what they can; once a quarter of the ring waits too, the
//! oldest lines are shed until the feed is three quarters full
//! ([`Feed::shed`]): only a subscriber whose cursor was still among them
//! loses lines (those of its types), counted, and is told `{"dropped": N}`
//! in their place, before the next line it gets (or at once when there is
//! none). A subscriber that reads as fast as the agent ingests is never
//! that far behind (a burst is written while it arrives: the dispatcher
//! wakes the listener every few thousand lines). The agent never waits for a
//! subscriber: the listener writes without blocking, and the dispatcher's
//! ring drops (counted, and told the same way) when the listener cannot
//! take lines at all.
//!
//! Why one shared backlog and not a buffer per subscriber: the earlier
//! design moved each drain of the dispatcher's into every subscriber's own
//! 1 MiB buffer before writing any of it, so a drain of more than 1 MiB
//! lost lines even for a reader that kept up (a third of a 10,000 events/s
//! feed reached it). A per-subscriber buffer large enough for a drain
//! would cost that much for every subscriber; here the lines are held once.

use crate::ring::Consumer;
use std::collections::VecDeque;

/// One event line for subscribers, with its type for filtering.
#[derive(Debug)]
pub struct SubLine {
    /// `event_type`.
    pub event_type: String,
    /// The JSONL line, newline-terminated; empty for a loss marker.
    pub line: Vec<u8>,
    /// A loss marker: this many lines of `event_type` were lost here
    /// (the ring to the listener was full), so every subscriber to that
    /// type is told `{"dropped": N}`.
    pub lost: u64,
}

/// Bytes of lines the feed holds for all subscribers together, at most
/// (about 8,000 lines of 460 bytes; the quarter of the dispatcher's ring
/// that may wait beside it holds 16,384 more).
pub const FEED_BYTES: usize = 4 << 20;

/// A subscriber's write buffer is filled from the feed up to this many
/// bytes at a time (plus one line).
pub const OUT_CHUNK: usize = 128 << 10;

/// What a line costs the feed: its bytes and its slot.
fn cost(l: &SubLine) -> usize {
    l.line.capacity() + l.event_type.capacity() + std::mem::size_of::<SubLine>()
}

/// Appends the loss notice for `n` lines.
fn tell(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(format!("{{\"dropped\": {n}}}\n").as_bytes());
}

/// The lines not yet written to every subscriber, oldest first.
#[derive(Debug, Default)]
pub struct Feed {
    lines: VecDeque<SubLine>,
    /// The sequence number of `lines[0]`.
    first: u64,
    bytes: usize,
}

/// One subscriber's place in the feed.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// The event types it wants (empty: every type).
    pub types: Vec<String>,
    /// The sequence number of the next line it may get.
    next: u64,
    /// Lines it lost and has not been told of.
    pub lost: u64,
}

impl Cursor {
    fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }
}

impl Feed {
    /// The sequence number the next line taken in will have.
    fn end(&self) -> u64 {
        self.first + self.lines.len() as u64
    }

    /// A cursor for a new subscriber to `types`: it gets the lines taken
    /// in from now on.
    pub fn cursor(&self, types: Vec<String>) -> Cursor {
        Cursor {
            types,
            next: self.end(),
            lost: 0,
        }
    }

    /// Whether the feed holds all it may.
    pub fn is_full(&self) -> bool {
        self.bytes >= FEED_BYTES
    }

    /// Lines held now.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True when no line is held.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Whether `c` has been given every line it wants.
    pub fn caught_up(&self, c: &Cursor) -> bool {
        c.next >= self.end()
    }

    /// Takes lines from `rx` while there is room; true if it took any.
    pub fn take(&mut self, rx: &mut Consumer<SubLine>) -> bool {
        let mut any = false;
        while !self.is_full() {
            let Some(l) = rx.pop() else { break };
            self.bytes += cost(&l);
            self.lines.push_back(l);
            any = true;
        }
        any
    }

    /// Appends to `out` the lines `c` wants, from its place on, until `out`
    /// holds `limit` bytes or `c` has caught up. Losses are told in their
    /// place: before the next line, or at the end when `c` has caught up.
    pub fn fill(&self, c: &mut Cursor, out: &mut Vec<u8>, limit: usize) {
        let mut i = c.next.saturating_sub(self.first) as usize;
        while out.len() < limit && i < self.lines.len() {
            let l = &self.lines[i];
            i += 1;
            if !c.wants(&l.event_type) {
                continue;
            }
            if l.lost > 0 {
                // Lost before they reached the listener.
                c.lost += l.lost;
                continue;
            }
            if c.lost > 0 {
                tell(out, std::mem::take(&mut c.lost));
            }
            out.extend_from_slice(&l.line);
        }
        c.next = self.first + i as u64;
        if c.lost > 0 && self.caught_up(c) && out.len() < limit {
            tell(out, std::mem::take(&mut c.lost));
        }
    }

    /// Moves `c` past every line, counting those it wants as lost (in
    /// `c.lost`); returns how many lines that was (loss markers' counts
    /// excluded: those were counted where they were lost).
    pub fn skip(&self, c: &mut Cursor) -> u64 {
        let from = c.next.saturating_sub(self.first) as usize;
        let n = self.count_lost(c, from, self.lines.len());
        c.next = self.end();
        n
    }

    /// Adds the lines `c` wants among `lines[from..to]` to `c.lost`;
    /// returns how many were lines (not loss markers).
    fn count_lost(&self, c: &mut Cursor, from: usize, to: usize) -> u64 {
        let mut n = 0;
        for l in self.lines.range(from.min(to)..to) {
            if c.wants(&l.event_type) {
                if l.lost > 0 {
                    c.lost += l.lost;
                } else {
                    c.lost += 1;
                    n += 1;
                }
            }
        }
        n
    }

    /// Frees the lines every cursor has passed (`oldest`: the smallest of
    /// the cursors' places; `None` when no one subscribes).
    pub fn release<'a>(&mut self, cursors: impl Iterator<Item = &'a Cursor>) {
        let upto = cursors.map(|c| c.next).min().unwrap_or(self.end());
        while self.first < upto {
            let Some(l) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= cost(&l);
            self.first += 1;
        }
        if self.lines.is_empty() && self.lines.capacity() > 4096 {
            // A burst's slots are not kept once it has been written.
            self.lines = VecDeque::new();
        }
    }

    /// Makes room: drops the oldest lines until the feed is at most three
    /// quarters full. Each cursor still among them loses the lines of its
    /// types there (added to its `lost`, to be told); returns how many
    /// lines were lost over all cursors.
    pub fn shed<'a>(&mut self, cursors: impl Iterator<Item = &'a mut Cursor>) -> u64 {
        let mut k = 0;
        let mut freed = 0;
        while self.bytes - freed > FEED_BYTES / 4 * 3 && k < self.lines.len() {
            freed += cost(&self.lines[k]);
            k += 1;
        }
        let new_first = self.first + k as u64;
        let mut lost = 0;
        for c in cursors {
            if c.next < new_first {
                let from = c.next.saturating_sub(self.first) as usize;
                lost += self.count_lost(c, from, k);
                c.next = new_first;
            }
        }
        self.lines.drain(..k);
        self.bytes -= freed;
        self.first = new_first;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, i: usize, pad: usize) -> SubLine {
        SubLine {
            event_type: t.into(),
            line: format!(
                "{{\"event_type\": \"{t}\", \"i\": {i}, \"p\": \"{}\"}}\n",
                "x".repeat(pad)
            )
            .into_bytes(),
            lost: 0,
        }
    }

    fn lines_of(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// A reader that takes each chunk as it comes gets every line of a
    /// burst many times larger than the feed: a drain is not a buffer.
    #[test]
    fn a_reader_that_keeps_up_gets_a_burst_larger_than_the_feed() {
        let (mut tx, mut rx) = crate::ring::channel::<SubLine>(1 << 17);
        let n = 3 * FEED_BYTES / 400;
        for i in 0..n {
            tx.push(line("app.A", i, 300)).unwrap();
        }
        let mut feed = Feed::default();
        let mut c = feed.cursor(Vec::new());
        let (mut got, mut out) = (0, Vec::new());
        while !rx.is_empty() || !feed.caught_up(&c) {
            feed.take(&mut rx);
            feed.fill(&mut c, &mut out, OUT_CHUNK);
            // The socket took it all.
            for v in lines_of(&out) {
                assert!(v.get("dropped").is_none(), "{v}");
                assert_eq!(v["i"], got);
                got += 1;
            }
            out.clear();
            feed.release(std::iter::once(&c));
            assert!(feed.bytes <= FEED_BYTES + 1024);
        }
        assert_eq!(got, n);
        assert!(feed.is_empty());
    }

    /// A reader that stops reading holds the feed until it is full; then
    /// it, and only it, loses the oldest lines, and is told how many in
    /// their place; a reader of other types loses nothing.
    #[test]
    fn only_a_stuck_reader_loses_and_is_told_in_place() {
        let (mut tx, mut rx) = crate::ring::channel::<SubLine>(1 << 17);
        let mut feed = Feed::default();
        let mut stuck = feed.cursor(vec!["app.A".into()]);
        let mut other = feed.cursor(vec!["app.B".into()]);
        let n = FEED_BYTES / 400 * 2;
        for i in 0..n {
            tx.push(line(if i % 2 == 0 { "app.A" } else { "app.B" }, i, 300))
                .unwrap();
        }
        let mut shed = 0;
        let (mut out_b, mut got_b) = (Vec::new(), 0);
        while !rx.is_empty() {
            feed.take(&mut rx);
            feed.fill(&mut other, &mut out_b, usize::MAX);
            got_b += lines_of(&out_b).len();
            out_b.clear();
            feed.release([&stuck, &other].into_iter());
            if feed.is_full() && !rx.is_empty() {
                shed += feed.shed([&mut stuck, &mut other].into_iter());
            }
        }
        feed.fill(&mut other, &mut out_b, usize::MAX);
        got_b += lines_of(&out_b).len();
        assert_eq!(got_b, n / 2, "the reader of app.B loses nothing");
        assert!(shed > 0 && stuck.lost == shed, "{shed} {}", stuck.lost);
        // The stuck reader reads again: the notice first, then the lines
        // after the loss, in order, ending with the last.
        let mut out = Vec::new();
        feed.fill(&mut stuck, &mut out, usize::MAX);
        let v = lines_of(&out);
        assert_eq!(v[0]["dropped"], shed);
        let is: Vec<u64> = v[1..].iter().map(|l| l["i"].as_u64().unwrap()).collect();
        assert_eq!(is.len() as u64 + shed, n as u64 / 2);
        assert!(is.windows(2).all(|w| w[1] == w[0] + 2));
        assert_eq!(*is.last().unwrap(), n as u64 - 2);
        assert!(feed.bytes <= FEED_BYTES);
    }

    /// Loss markers from the dispatcher are told to the subscribers of
    /// their type, at once when nothing follows.
    #[test]
    fn markers_are_told_to_their_type_only() {
        let (mut tx, mut rx) = crate::ring::channel::<SubLine>(8);
        let mut feed = Feed::default();
        let mut a = feed.cursor(vec!["app.A".into()]);
        let mut all = feed.cursor(Vec::new());
        let mut b = feed.cursor(vec!["app.B".into()]);
        tx.push(SubLine {
            event_type: "app.A".into(),
            line: Vec::new(),
            lost: 7,
        })
        .unwrap();
        feed.take(&mut rx);
        for (c, want) in [(&mut a, 1), (&mut all, 1), (&mut b, 0)] {
            let mut out = Vec::new();
            feed.fill(c, &mut out, OUT_CHUNK);
            let v = lines_of(&out);
            assert_eq!(v.len(), want);
            if want == 1 {
                assert_eq!(v[0]["dropped"], 7);
            }
        }
    }
}
