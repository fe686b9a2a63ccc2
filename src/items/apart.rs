//! A session's node samples taken apart, on the machine's other cores.
//!
//! A node's own samples (`per_node` ResourceUpdates naming it) are almost
//! every item of a session, and what a view does with them (quantiles,
//! series, heatmaps) depends only on that node's samples, in their order.
//! So [`each_apart`] hands each of them, in the order the source gives
//! them, to a worker thread that keeps the views' state of that node (a
//! [`NodeView`]), while the other items (and, for their order, each node
//! sample as [`Body::Apart`]) go to the view's own `f` on the calling
//! thread. What a view computes is the same as if it took every sample
//! itself: each node's samples reach its state in the same order; each
//! sample carries its place in the whole stream (`seq`) for what compares
//! nodes (the first of equal peaks).
//!
//! Bounds: the workers take batches through channels of a few batches
//! each, so a slow worker holds the reader back rather than queueing the
//! session in memory. With one core, the calling thread keeps the states
//! itself.

use super::{
    Body, Head, Item, NodeFeed, NodeSample, NodeSink, NodeView, PerCore, Place, ReadApart, Source,
};
use crate::convert::lines::LineStats;
use std::collections::HashMap;
use std::io;
use std::sync::mpsc;

/// Samples sent to a worker at once.
const BATCH: usize = 512;

/// Batches waiting for a worker, at most.
const QUEUED: usize = 4;

/// Workers, at most.
const WORKERS: usize = 16;

/// A hasher for node names looked up at every sample: a few multiplies
/// a word (as rustc's `FxHasher`), not SipHash (the names are the
/// session's own, and at most one entry a node is kept).
#[derive(Debug, Default, Clone, Copy)]
struct Fx;

impl std::hash::BuildHasher for Fx {
    type Hasher = FxHasher;

    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

#[derive(Debug)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A node sample, owned, for its worker.
#[derive(Debug)]
struct Sample {
    /// Its node's number (see [`Batch::names`]).
    node: u32,
    seq: u64,
    time_s: Option<f64>,
    fields: [Option<f64>; 11],
    /// Its per-core figures: where they are in its batch's
    /// [`Batch::cores`], if it has them.
    per_core: Option<(usize, usize)>,
}

/// Samples for one worker, with their per-core figures (one buffer a
/// batch: a sample costs no allocation of its own) and the names of the
/// nodes first seen in it (taken before its samples).
#[derive(Debug, Default)]
struct Batch {
    names: Vec<(u32, String)>,
    samples: Vec<Sample>,
    cores: Vec<Option<f64>>,
}

impl Sample {
    fn of(
        node: u32,
        seq: u64,
        head: &Head<'_>,
        s: &NodeSample<'_>,
        cores: &mut Vec<Option<f64>>,
    ) -> Self {
        let per_core = s.per_core.map(|c| {
            let at = cores.len();
            c.extend_into(cores);
            (at, cores.len() - at)
        });
        Self {
            node,
            seq,
            time_s: head.time_s,
            fields: [
                s.cpu_percent,
                s.memory_percent,
                s.disk_read_bytes,
                s.disk_write_bytes,
                s.net_sent_bytes,
                s.net_recv_bytes,
                s.job_cpu_percent,
                s.job_memory_bytes,
                s.job_memory_peak_bytes,
                s.job_disk_read_bytes,
                s.job_disk_write_bytes,
            ],
            per_core,
        }
    }

    /// To `view` of node `name` (its batch's per-core figures `cores`).
    fn give<V: NodeView>(&self, name: &str, view: &mut V, cores: &[Option<f64>]) {
        let [cpu, mem, dr, dw, ns, nr, jc, jm, jp, jr, jw] = self.fields;
        let s = NodeSample {
            cpu_percent: cpu,
            memory_percent: mem,
            disk_read_bytes: dr,
            disk_write_bytes: dw,
            net_sent_bytes: ns,
            net_recv_bytes: nr,
            job_cpu_percent: jc,
            job_memory_bytes: jm,
            job_memory_peak_bytes: jp,
            job_disk_read_bytes: jr,
            job_disk_write_bytes: jw,
            per_core: self
                .per_core
                .map(|(at, n)| PerCore::Values(&cores[at..at + n])),
        };
        let head = Head {
            event_type: Some("ResourceUpdate"),
            time_s: self.time_s,
            node_id: Some(name),
            ..Head::default()
        };
        view.sample(u128::from(self.seq), &head, &s);
    }
}

/// One worker: the views of its nodes.
fn work<V: NodeView>(rx: mpsc::Receiver<Batch>, make: &(impl Fn(&str) -> V + Sync)) -> Nodes<V> {
    let mut nodes = Nodes::default();
    for mut batch in rx {
        nodes.take(&mut batch, make);
    }
    nodes
}

/// Views by node number, with their names.
#[derive(Debug)]
struct Nodes<V> {
    views: HashMap<u32, (String, V)>,
}

impl<V> Default for Nodes<V> {
    fn default() -> Self {
        Self {
            views: HashMap::new(),
        }
    }
}

impl<V: NodeView> Nodes<V> {
    /// Takes `batch`, leaving it empty.
    fn take(&mut self, batch: &mut Batch, make: &impl Fn(&str) -> V) {
        for (i, name) in batch.names.drain(..) {
            let v = make(&name);
            self.views.insert(i, (name, v));
        }
        for s in &batch.samples {
            if let Some((name, v)) = self.views.get_mut(&s.node) {
                s.give(name, v, &batch.cores);
            }
        }
        batch.samples.clear();
        batch.cores.clear();
    }
}

/// Reads `src` once: each node's own samples to its [`NodeView`] (made by
/// `make` at the node's first sample) on a worker thread, everything else
/// to `f` (see the module doc). Returns what reading met and each node's
/// view, by node name.
pub fn each_apart<V: NodeView>(
    src: &mut dyn Source,
    make: impl Fn(&str) -> V + Sync,
    f: &mut dyn FnMut(Item<'_>),
) -> io::Result<(LineStats, HashMap<String, V>)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    each_apart_on((cores - 1).min(WORKERS), src, make, f)
}

/// How [`each_nodes_apart`] took the nodes' own samples.
#[derive(Debug, Clone, Copy)]
pub enum Taken {
    /// Merged into the stream ([`each_apart`]): `f` took each one as a
    /// [`Body::Apart`] in its place.
    Merged(LineStats),
    /// Straight from the source's threads ([`Source::each_nodes_apart`]):
    /// `f` took only each node's first one, as a [`Body::Apart`], and the
    /// others' counts and times are the views' to tell.
    Apart(ReadApart),
}

impl Taken {
    /// What reading met.
    pub fn read(&self) -> LineStats {
        match self {
            Self::Merged(r) => *r,
            Self::Apart(a) => a.read,
        }
    }

    /// The samples' places (each node's first one in the stream, every
    /// one's [`Place`]) are those of the merged stream: not where a
    /// node's samples read apart were out of time order (see
    /// [`ReadApart::in_order`]).
    pub fn placed(&self) -> bool {
        match self {
            Self::Merged(_) => true,
            Self::Apart(a) => a.in_order,
        }
    }
}

/// As [`each_apart`], but where `src` holds each node's samples apart
/// ([`Source::each_nodes_apart`]: a dataset) they go straight from its
/// threads to the views, with no merge into the stream (see [`Taken`]).
pub fn each_nodes_apart<V: NodeView>(
    src: &mut dyn Source,
    make: impl Fn(&str) -> V + Sync,
    f: &mut dyn FnMut(Item<'_>),
) -> io::Result<(Taken, HashMap<String, V>)> {
    let feed = Feed {
        make: &make,
        done: std::sync::Mutex::new(HashMap::new()),
    };
    match src.each_nodes_apart(&feed, f) {
        None => each_apart(src, make, f).map(|(r, views)| (Taken::Merged(r), views)),
        Some(read) => {
            let views = feed.done.into_inner().unwrap_or_else(|e| e.into_inner());
            read.map(|r| (Taken::Apart(r), views))
        }
    }
}

/// [`each_nodes_apart`]'s feed: the views each sink made, once dropped.
struct Feed<'m, V, M> {
    make: &'m M,
    done: std::sync::Mutex<HashMap<String, V>>,
}

impl<V: NodeView, M: Fn(&str) -> V + Sync> NodeFeed for Feed<'_, V, M> {
    fn sink(&self) -> Box<dyn NodeSink + '_> {
        Box::new(Sink {
            feed: self,
            views: Vec::new(),
        })
    }
}

/// One thread's views, by their number in it.
struct Sink<'f, 'm, V, M> {
    feed: &'f Feed<'m, V, M>,
    views: Vec<(String, V)>,
}

impl<V: NodeView, M: Fn(&str) -> V + Sync> NodeSink for Sink<'_, '_, V, M> {
    fn node(&mut self, name: &str) -> usize {
        self.views.push((name.to_string(), (self.feed.make)(name)));
        self.views.len() - 1
    }

    fn sample(&mut self, node: usize, place: Place, head: &Head<'_>, s: &NodeSample<'_>) {
        if let Some((_, v)) = self.views.get_mut(node) {
            v.sample(place, head, s);
        }
    }
}

impl<V, M> Drop for Sink<'_, '_, V, M> {
    fn drop(&mut self) {
        let mut done = self.feed.done.lock().unwrap_or_else(|e| e.into_inner());
        done.extend(self.views.drain(..));
    }
}

/// [`each_apart`] with `workers` threads (none: on the calling thread).
fn each_apart_on<V: NodeView>(
    workers: usize,
    src: &mut dyn Source,
    make: impl Fn(&str) -> V + Sync,
    f: &mut dyn FnMut(Item<'_>),
) -> io::Result<(LineStats, HashMap<String, V>)> {
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<Batch>(QUEUED);
            senders.push(tx);
            let make = &make;
            handles.push(scope.spawn(move || work(rx, make)));
        }
        let mut split = Split {
            numbers: HashMap::default(),
            batches: (0..workers).map(|_| Batch::default()).collect(),
            here: Batch::default(),
            senders,
            local: Nodes::default(),
            seq: 0,
        };
        let read = src.each(&mut |item| split.item(item, f, &make));
        split.flush_all();
        drop(split.senders);
        let mut views: HashMap<String, V> = HashMap::new();
        for (_, (name, v)) in split.local.views {
            views.insert(name, v);
        }
        for h in handles {
            let nodes = h.join().expect("a node worker panicked");
            for (_, (name, v)) in nodes.views {
                views.insert(name, v);
            }
        }
        read.map(|r| (r, views))
    })
}

/// The calling thread's side: which node goes to which worker.
struct Split<V> {
    /// Each node's number (its worker: the number modulo the workers).
    numbers: HashMap<String, u32, Fx>,
    batches: Vec<Batch>,
    senders: Vec<mpsc::SyncSender<Batch>>,
    /// Without workers, the one batch (taken at each sample).
    here: Batch,
    /// Without workers, the views themselves.
    local: Nodes<V>,
    seq: u64,
}

impl<V: NodeView> Split<V> {
    fn item(&mut self, item: Item<'_>, f: &mut dyn FnMut(Item<'_>), make: &impl Fn(&str) -> V) {
        self.seq += 1;
        let (head, s) = match item {
            Item::Event(head, Body::Node(s)) if head.node_id.is_some_and(|n| !n.is_empty()) => {
                (head, s)
            }
            other => return f(other),
        };
        let name = head.node_id.unwrap_or_default();
        let (node, new) = match self.numbers.get(name) {
            Some(&i) => (i, false),
            None => {
                let i = self.numbers.len() as u32;
                self.numbers.insert(name.to_string(), i);
                (i, true)
            }
        };
        let w = (!self.senders.is_empty()).then(|| node as usize % self.senders.len());
        let batch = match w {
            Some(w) => &mut self.batches[w],
            None => &mut self.here,
        };
        if new {
            batch.names.push((node, name.to_string()));
        }
        let sample = Sample::of(node, self.seq, &head, &s, &mut batch.cores);
        batch.samples.push(sample);
        match w {
            None => self.local.take(&mut self.here, make),
            Some(w) if self.batches[w].samples.len() >= BATCH => self.flush(w),
            Some(_) => {}
        }
        f(Item::Event(head, Body::Apart));
    }

    fn flush(&mut self, w: usize) {
        let batch = std::mem::take(&mut self.batches[w]);
        // A worker gone has panicked: `each_apart` says so when it joins.
        let _ = self.senders[w].send(batch);
    }

    fn flush_all(&mut self) {
        for w in 0..self.senders.len() {
            if !self.batches[w].samples.is_empty() || !self.batches[w].names.is_empty() {
                self.flush(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node samples of nodes "a", "b" and "" between other events, as a
    /// checkpoint's lines.
    struct Lines(Vec<serde_json::Value>);

    impl Source for Lines {
        fn each(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<LineStats> {
            for v in &self.0 {
                crate::items::jsonl::line(v, f);
            }
            Ok(LineStats::default())
        }
    }

    /// One sample as a view saw it: its place, time, CPU and per-core.
    type Taken = (Place, Option<f64>, Option<f64>, Vec<Option<f64>>);

    /// What a view saw.
    #[derive(Debug, Default, PartialEq)]
    struct Seen(Vec<Taken>);

    impl NodeView for Seen {
        fn sample(&mut self, seq: Place, head: &Head<'_>, s: &NodeSample<'_>) {
            let cores = s.per_core.map(|c| c.values().collect()).unwrap_or_default();
            self.0.push((seq, head.time_s, s.cpu_percent, cores));
        }
    }

    fn session() -> Lines {
        let mut lines = Vec::new();
        for i in 0..2000u32 {
            let node = ["a", "b", ""][i as usize % 3];
            let t = 1.0e9 + f64::from(i);
            lines.push(
                serde_json::json!({"section": "event", "event_type": "ResourceUpdate",
                "event_time": t, "node_id": node, "resource_scope": "per_node",
                "cpu_percent": f64::from(i % 100), "cpu_percent_per_core": [i, null, 2.5]}),
            );
            if i % 7 == 0 {
                lines.push(
                    serde_json::json!({"section": "event", "event_type": "TaskStarted",
                    "event_time": t, "node_id": node, "task_id": format!("t{i}")}),
                );
            }
        }
        Lines(lines)
    }

    #[test]
    fn each_nodes_samples_reach_its_view_in_order_with_their_places() {
        // What a view sees when it takes every item itself.
        let mut want: HashMap<String, Seen> = HashMap::new();
        let mut seq = 0;
        let mut all = Vec::new();
        session()
            .each(&mut |i| {
                seq += 1;
                if let Item::Event(h, Body::Node(s)) = &i {
                    if let Some(n) = h.node_id.filter(|n| !n.is_empty()) {
                        want.entry(n.to_string()).or_default().sample(seq, h, s);
                    }
                }
                all.push(format!("{i:?}").len());
            })
            .unwrap();
        for workers in [0, 1, 3] {
            let mut kinds = Vec::new();
            let (_, got) = each_apart_on(workers, &mut session(), |_| Seen::default(), &mut |i| {
                kinds.push(match &i {
                    Item::Event(h, Body::Apart) => format!("apart {:?}", h.node_id),
                    Item::Event(h, Body::Node(_)) => format!("node {:?}", h.node_id),
                    other => format!("{other:?}"),
                });
            })
            .unwrap();
            assert_eq!(got, want, "{workers} workers");
            assert_eq!(kinds.len(), all.len(), "every item, in its place");
            assert_eq!(
                kinds.iter().filter(|k| k.starts_with("apart")).count(),
                1334
            );
            assert_eq!(
                kinds.iter().filter(|k| *k == "node Some(\"\")").count(),
                666
            );
        }
    }
}
