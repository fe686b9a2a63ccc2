//! `Dispatcher`: the only owner of aggregate state. It drains the agents'
//! rings in batches, turns raw readings into RHAPSODY `ResourceUpdate`
//! events, keeps the HDR histograms, opens and closes the session span
//! (SessionStarted / SessionEnded), and hands records to its [`Sink`] — the
//! writer stage, which is the only owner of the log file.
//!
//! Wake-ups are the agent's main cost after the reads themselves (on a
//! small VM one wake-up of an idle thread costs about as much CPU as the
//! four /proc reads), so the dispatcher and the writer share one wake-up:
//! the dispatcher thread runs the writer stage right after each batch. The
//! proc agent wakes it once per second's worth of samples (right after a
//! sample, while the caches are warm), or early when its ring is half
//! full; a fallback timeout (`FALLBACK_WAKE`) covers an agent that stalls.
//! Each batch converts monotonic ticks to wall time with one fresh clock
//! anchor.
//!
//! Resource semantics are RHAPSODY's (psutil's), see `SCHEMA.md`:
//! `cpu_percent` is the busy share of all CPUs since the previous sample,
//! `memory_percent` is (total − available) / total, both rounded to one
//! decimal as psutil rounds them; disk bytes are sectors × 512 of whole
//! disks and network bytes sum all interfaces, as deltas since the previous
//! sample. `cpu_percent_per_core` is tal's extension, each CPU's share over
//! the same ticks (the proc agent computes both windows' ticks).
//!
//! Every delta follows one rule, documented in `crate::agent::window`: a
//! window shorter than half the interval (and, for CPU, one with fewer
//! ticks than CPUs) gives null and is folded into the next. So the first
//! sample (the warm-up reading) has null deltas, and so, usually, has the
//! last one, taken at stop a few ms after the one before. The per-source
//! bases live in [`Prev`]; [`step`] applies the rule.
//!
//! A source that fails in one sample makes only its own fields null for that
//! sample (and the next sample's deltas for that source are taken against
//! the last good reading).
//!
//! Layout: this file is the aggregation (samples to `ResourceUpdate`s, the
//! histograms, the session, the drain and its wake-ups); `gpu.rs` pairs
//! the proc samples with the GPU polls of their deadlines and writes the
//! per_gpu events and back-fills; `live.rs` is the fan-out of every
//! recorded event to the live subscribers and the live OTLP exporter.

mod gpu;
mod live;

use crate::agent::gpu::GpuCounters;
use crate::agent::proc::{source, ProcSample, NO_PERMILLE};
use crate::agent::procfs::memory_percent;
use crate::agent::window;
use crate::agent::AgentCounters;
use crate::clock::{mono_ns, wall_ns, Anchor};
use crate::ids::EventIdGen;
use crate::ingest::batch::IngestBatch;
use crate::ingest::listener::IngestCounters;
use crate::record::{
    AgentSnapshot, EndMarker, EndReason, Event, EventKind, Record, ResourceScope, ResourceUpdate,
    Value,
};
use crate::ring::{Consumer, Producer};
use crate::stats;
use gpu::GpuIn;
pub use gpu::{gpu_update, GPU_HOLD_POLLS};
use hdrhistogram::Histogram;
use live::Exporter;
pub use live::Fanout;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The longest the dispatcher sleeps when no agent wakes it.
pub const FALLBACK_WAKE: Duration = Duration::from_secs(5);

/// Where the dispatcher's records go: the writer stage in `tal record`, a
/// Vec in tests.
pub trait Sink {
    /// Takes one record. Must not block for long; failures are the sink's
    /// to count and report.
    fn put(&mut self, r: Record);

    /// Takes one record given as its encoded payload (client events, which
    /// the listener encodes). The default decodes it for [`Sink::put`].
    fn put_encoded(&mut self, payload: &[u8]) {
        match crate::ingest::batch::decode(payload) {
            Ok(r) => self.put(r),
            Err(e) => debug_assert!(false, "the listener encoded an undecodable record: {e}"),
        }
    }

    /// Takes one of the session's last records (SessionEnded, the final
    /// snapshot, the end marker), which a full log must still keep. The
    /// default is [`Sink::put`].
    fn put_final(&mut self, r: Record) {
        self.put(r);
    }

    /// Makes every record taken so far durable as far as the sink goes
    /// (the writer stage: in the file's page cache). The dispatcher calls it
    /// at the end of every drain.
    fn flush(&mut self) {}
}

impl Sink for Vec<Record> {
    fn put(&mut self, r: Record) {
        self.push(r);
    }
}

use crate::record::round1;

/// The base of each source's deltas: the reading the next figure is
/// measured against, and when it was taken (monotonic ns).
#[derive(Debug, Default)]
struct Prev {
    cgroup: Option<(crate::agent::cgroup::CgroupReading, u64)>,
    disk: Option<((u64, u64), u64)>,
    net: Option<((u64, u64), u64)>,
}

/// One source's step of the window rule (`crate::agent::window`): the base
/// (its reading and time) to measure the reading `cur`, taken at `at_ns`,
/// against, when the window is long enough, and then `cur` becomes the
/// base; `None` for the first reading (which becomes the base) and for a
/// window too short (the base stays: the next window covers this one).
fn step<T: Copy>(
    base: &mut Option<(T, u64)>,
    cur: T,
    at_ns: u64,
    interval_ns: u64,
) -> Option<(T, u64)> {
    match *base {
        Some((v, t)) if window::long_enough(at_ns.saturating_sub(t), interval_ns) => {
            *base = Some((cur, at_ns));
            Some((v, t))
        }
        Some(_) => None,
        None => {
            *base = Some((cur, at_ns));
            None
        }
    }
}

/// Where a record of one drain is, for the pass in time order.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The agents' batch, at this index.
    Agent(u32),
    /// A client event: its ingest batch, and its index there.
    Client { batch: u32, index: u32 },
}

/// The task sampler's ring and counters.
#[derive(Debug)]
struct TasksIn {
    rx: Consumer<crate::agent::tasks::TaskSample>,
    counters: Arc<crate::agent::tasks::TaskCounters>,
}

/// Dispatcher state. Construct, then call [`Dispatcher::run`] on its thread.
#[derive(Debug)]
pub struct Dispatcher<S: Sink> {
    exporter: Option<Exporter>,
    tasks: Option<TasksIn>,
    gpu: Option<GpuIn>,
    final_drain: bool,
    fanout: Option<Fanout>,
    ingest: Option<Consumer<IngestBatch>>,
    /// Emptied batches going back to the listener for reuse.
    recycle: Option<Producer<IngestBatch>>,
    ingested: Vec<IngestBatch>,
    /// One drain's records by time: (time, where the record is).
    order: Vec<(i64, Origin)>,
    node_id: String,
    ingest_counters: Option<Arc<IngestCounters>>,
    batch: Vec<Option<Record>>,
    rx: Consumer<ProcSample>,
    sink: S,
    counters: Arc<AgentCounters>,
    records_dropped: Arc<AtomicU64>,
    backend: String,
    ids: EventIdGen,
    prev: Prev,
    interval_ns: u64,
    start_wall_ns: i64,
    snapshot_every: Duration,
    last_snapshot: u64,
    hist_cpu: Histogram<u64>,
    hist_mem: Histogram<u64>,
    hist_latency: Histogram<u64>,
    hist_jitter: Histogram<u64>,
}

impl<S: Sink> Dispatcher<S> {
    /// A dispatcher draining `rx` into `sink`, of samples taken every
    /// `interval` (the window rule's measure); `start_wall_ns` the session
    /// start; `records_dropped` is where the sink counts records it lost.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Consumer<ProcSample>,
        sink: S,
        counters: Arc<AgentCounters>,
        records_dropped: Arc<AtomicU64>,
        backend: String,
        interval: Duration,
        start_wall_ns: i64,
        snapshot_every: Duration,
    ) -> Self {
        Self {
            exporter: None,
            tasks: None,
            gpu: None,
            final_drain: false,
            fanout: None,
            ingest: None,
            recycle: None,
            ingested: Vec::new(),
            order: Vec::new(),
            node_id: String::new(),
            ingest_counters: None,
            batch: Vec::new(),
            rx,
            sink,
            counters,
            records_dropped,
            backend,
            ids: EventIdGen::from_os(),
            prev: Prev::default(),
            interval_ns: interval.as_nanos().min(u128::from(u64::MAX)) as u64,
            start_wall_ns,
            snapshot_every,
            last_snapshot: mono_ns(),
            hist_cpu: stats::histogram(1000),
            hist_mem: stats::histogram(1000),
            hist_latency: stats::histogram(60_000_000_000),
            hist_jitter: stats::histogram(60_000_000_000),
        }
    }

    fn event(&mut self, time_ns: i64, emit_ns: i64, kind: EventKind) -> Record {
        Record::Event(Event {
            event_id: self.ids.next_id(),
            event_time_ns: time_ns,
            emit_time_ns: emit_ns,
            backend: Some(self.backend.clone()),
            task_id: None,
            node_id: None,
            attributes: Vec::new(),
            kind,
        })
    }

    fn send(&mut self, r: Record) {
        self.offer_live(&r);
        self.sink.put(r);
    }

    /// Hands an event to the live subscribers and the live exporter.
    fn offer_live(&mut self, r: &Record) {
        if let (Record::Event(ev), Some(f)) = (r, self.fanout.as_mut()) {
            f.offer(ev);
        }
        if let (Record::Event(ev), Some(x)) = (r, self.exporter.as_mut()) {
            x.offer(ev, 512);
        }
    }

    /// The sink (to finish it after [`Dispatcher::run`]).
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Turns one reading into its per_node `ResourceUpdate` and updates the
    /// histograms.
    pub fn resource_update(&mut self, r: &ProcSample) -> ResourceUpdate {
        let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
        if let Some(w) = r.cpu_window {
            u.cpu_percent = Some(round1(w.share()));
            let per = &r.per_cpu_permille[..r.ncpu as usize];
            if per.iter().all(|&p| p != NO_PERMILLE) {
                u.cpu_percent_per_core = per.iter().map(|&p| f32::from(p) / 10.0).collect();
            }
        }
        if r.node.ok & source::MEMINFO != 0 && r.node.mem_total_kb > 0 {
            u.memory_percent = Some(round1(memory_percent(
                r.node.mem_total_kb,
                r.node.mem_available_kb,
            )));
        }
        if r.node.ok & source::DISKSTATS != 0 {
            let cur = (r.node.disk_read_sectors, r.node.disk_write_sectors);
            if let Some((p, _)) = step(&mut self.prev.disk, cur, r.done_ns, self.interval_ns) {
                u.disk_read_bytes = Some((cur.0.saturating_sub(p.0) * 512) as f64);
                u.disk_write_bytes = Some((cur.1.saturating_sub(p.1) * 512) as f64);
            }
        }
        if r.node.ok & source::NET_DEV != 0 {
            let cur = (r.node.net_rx_bytes, r.node.net_tx_bytes);
            if let Some((p, _)) = step(&mut self.prev.net, cur, r.done_ns, self.interval_ns) {
                u.net_recv_bytes = Some(cur.0.saturating_sub(p.0) as f64);
                u.net_sent_bytes = Some(cur.1.saturating_sub(p.1) as f64);
            }
        }
        self.job_fields(r, &mut u);
        if let Some(c) = u.cpu_percent {
            let _ = self.hist_cpu.record((c * 10.0) as u64);
        }
        if let Some(m) = u.memory_percent {
            let _ = self.hist_mem.record((m * 10.0) as u64);
        }
        let _ = self
            .hist_latency
            .record(r.done_ns.saturating_sub(r.wake_ns));
        let _ = self
            .hist_jitter
            .record(r.wake_ns.saturating_sub(r.deadline_ns));
        u
    }

    /// The per_node `ResourceUpdate` event of proc sample `r`.
    fn node_event(&mut self, r: &ProcSample, gpu_percent: Option<f64>, anchor: &Anchor) -> Record {
        let mut u = self.resource_update(r);
        u.gpu_percent = gpu_percent;
        self.event(
            anchor.to_wall(r.deadline_ns),
            anchor.to_wall(r.done_ns),
            EventKind::ResourceUpdate(u),
        )
    }

    /// The job cgroup's extension fields of a per_node update (none when
    /// the agent reads no cgroup): see `crate::agent::cgroup`.
    fn job_fields(&mut self, r: &ProcSample, u: &mut ResourceUpdate) {
        let c = r.node.cgroup;
        if c == crate::agent::cgroup::CgroupReading::default() {
            return;
        }
        let prev = step(&mut self.prev.cgroup, c, r.done_ns, self.interval_ns);
        let delta = |cur: Option<u64>, old: Option<u64>| match (cur, old) {
            (Some(a), Some(b)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let (mut cpu, mut rd, mut wr) = (None, None, None);
        if let Some((p, t)) = prev {
            let elapsed = r.done_ns.saturating_sub(t) as f64 * f64::from(r.ncpu.max(1));
            cpu = delta(c.cpu_ns, p.cpu_ns)
                .filter(|_| elapsed > 0.0)
                .map(|d| round1((d as f64 / elapsed * 100.0).min(100.0)));
            rd = delta(c.io_read_bytes, p.io_read_bytes);
            wr = delta(c.io_write_bytes, p.io_write_bytes);
        }
        let mem_pct = c
            .mem_bytes
            .filter(|_| r.node.mem_total_kb > 0)
            .map(|m| round1(m as f64 / (r.node.mem_total_kb as f64 * 1024.0) * 100.0));
        let int = |v: Option<u64>| v.map_or(Value::Null, |v| Value::Int(v as i64));
        let float = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
        u.extra.extend([
            ("job_cpu_percent".to_string(), float(cpu)),
            ("job_memory_bytes".to_string(), int(c.mem_bytes)),
            ("job_memory_peak_bytes".to_string(), int(c.mem_peak_bytes)),
            ("job_memory_percent".to_string(), float(mem_pct)),
            (
                "job_disk_read_bytes".to_string(),
                float(rd.map(|v| v as f64)),
            ),
            (
                "job_disk_write_bytes".to_string(),
                float(wr.map(|v| v as f64)),
            ),
        ]);
    }

    /// One client event (encoded by the listener): to the live
    /// subscribers and exporter if any want it, and to the log.
    fn client_event(&mut self, bytes: &[u8]) {
        let fan = self.fanout.as_mut().filter(|f| f.wanted());
        if fan.is_some() || self.exporter.is_some() {
            if let Ok(Record::Event(ev)) = crate::ingest::batch::decode(bytes) {
                if let Some(f) = fan {
                    f.offer(&ev);
                }
                if let Some(x) = self.exporter.as_mut() {
                    x.offer(&ev, bytes.len());
                }
            }
        }
        self.sink.put_encoded(bytes);
    }

    /// Drains every queued reading and client event into the sink, in time
    /// order as far as one batch can see; returns how many records.
    pub fn drain(&mut self) -> usize {
        let anchor = Anchor::now();
        let mut batch = std::mem::take(&mut self.batch);
        if let Some(mut gpu) = self.gpu.take() {
            self.drain_with_gpu(&mut gpu, &anchor, &mut batch);
            self.gpu = Some(gpu);
        } else {
            while let Some(r) = self.rx.pop() {
                let ev = self.node_event(&r, None, &anchor);
                batch.push(Some(ev));
            }
        }
        if let Some(mut t) = self.tasks.take() {
            while let Some(ts) = t.rx.pop() {
                let mut ev = self.event(
                    anchor.to_wall(ts.at_ns),
                    anchor.to_wall(ts.at_ns),
                    EventKind::TaskResources(ts.values),
                );
                if let Record::Event(e) = &mut ev {
                    e.task_id = Some(ts.task_id.to_string());
                }
                batch.push(Some(ev));
            }
            self.tasks = Some(t);
        }
        let mut ingested = std::mem::take(&mut self.ingested);
        if let Some(rx) = self.ingest.as_mut() {
            while let Some(b) = rx.pop() {
                ingested.push(b);
            }
        }
        // Samples and client events interleave by time: sort an index
        // (stable, so equal times keep samples first and arrival order).
        let mut order = std::mem::take(&mut self.order);
        for (i, r) in batch.iter().enumerate() {
            let t = match r {
                Some(Record::Event(e)) => e.event_time_ns,
                _ => i64::MIN,
            };
            order.push((t, Origin::Agent(i as u32)));
        }
        for (bi, b) in ingested.iter().enumerate() {
            for j in 0..b.len() {
                let at = Origin::Client {
                    batch: bi as u32,
                    index: j as u32,
                };
                order.push((b.get(j).0, at));
            }
        }
        order.sort_by_key(|&(t, _)| t);
        let n = order.len();
        for &(_, at) in &order {
            match at {
                Origin::Agent(i) => {
                    if let Some(r) = batch[i as usize].take() {
                        self.send(r);
                    }
                }
                Origin::Client { batch: bi, index } => {
                    let (_, bytes) = ingested[bi as usize].get(index as usize);
                    self.client_event(bytes);
                }
            }
        }
        self.sink.flush();
        order.clear();
        batch.clear();
        for mut b in ingested.drain(..) {
            if let Some(tx) = self.recycle.as_mut() {
                b.clear();
                // A full return ring frees the batch.
                let _ = tx.push(b);
            }
        }
        self.order = order;
        self.batch = batch;
        self.ingested = ingested;
        if let Some(f) = self.fanout.as_mut() {
            f.flush();
        }
        // The exporter wakes at its own interval; it is woken early only
        // when its ring fills up.
        if let Some(x) = &self.exporter {
            if x.filling() {
                x.thread.unpark();
            }
        }
        n
    }

    /// Also offer every event to a live OTLP exporter through `tx` (drops
    /// counted in `counters`), waking `thread` after each batch.
    pub fn with_exporter(
        mut self,
        tx: crate::ring::Producer<crate::otlp_live::Offered>,
        thread: std::thread::Thread,
        counters: Arc<crate::otlp_live::LiveCounters>,
    ) -> Self {
        self.exporter = Some(Exporter {
            tx,
            thread,
            counters,
        });
        self
    }

    /// Also drain the task sampler's ring `rx` (its counters go into the
    /// snapshots).
    pub fn with_tasks(
        mut self,
        rx: Consumer<crate::agent::tasks::TaskSample>,
        counters: Arc<crate::agent::tasks::TaskCounters>,
    ) -> Self {
        self.tasks = Some(TasksIn { rx, counters });
        self
    }

    /// Also hand every event to live subscribers through `fanout`.
    pub fn with_fanout(mut self, fanout: Fanout) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// Also drain client events from `rx` (filling in `event_id` where the
    /// client left it out; a missing `node_id` is this node, which the
    /// converters write from the log header), counting with `counters`.
    /// `recycle` takes the emptied batches back to the listener.
    pub fn with_ingest(
        mut self,
        (rx, recycle): (Consumer<IngestBatch>, Producer<IngestBatch>),
        node_id: String,
        counters: Arc<IngestCounters>,
    ) -> Self {
        self.ingest = Some(rx);
        self.recycle = Some(recycle);
        self.node_id = node_id;
        self.ingest_counters = Some(counters);
        self
    }

    /// The agent's current snapshot.
    pub fn snapshot(&self) -> AgentSnapshot {
        let usage = crate::sys::self_usage();
        AgentSnapshot {
            wall_ns: wall_ns(),
            cpu_user_ns: usage.user_ns,
            cpu_system_ns: usage.sys_ns,
            peak_rss_bytes: usage.max_rss_bytes,
            samples_taken: AgentCounters::get(&self.counters.samples_taken),
            samples_dropped: AgentCounters::get(&self.counters.samples_dropped),
            deadlines_missed: AgentCounters::get(&self.counters.deadlines_missed),
            read_errors: AgentCounters::get(&self.counters.read_errors),
            read_errors_by_source: self
                .counters
                .source_errors
                .iter()
                .map(AgentCounters::get)
                .collect(),
            records_dropped: self.records_dropped.load(Ordering::Relaxed),
            hist_cpu_permille: stats::encode(&self.hist_cpu),
            hist_mem_permille: stats::encode(&self.hist_mem),
            hist_sample_latency_ns: stats::encode(&self.hist_latency),
            hist_jitter_ns: stats::encode(&self.hist_jitter),
            ingest_accepted: self.ingest_count(|c| &c.accepted),
            ingest_rejected: self.ingest_count(|c| &c.rejected),
            ingest_dropped: self.ingest_count(|c| &c.dropped),
            subscriber_dropped: self.ingest_count(|c| &c.sub_dropped),
            ingest_clients_refused: self.ingest_count(|c| &c.refused),
            ingest_task_ids_reused: crate::record::Appended(
                self.ingest_count(|c| &c.task_ids_reused),
            ),
            gpu_polls: self.gpu_count(|c| &c.polls),
            gpu_polls_dropped: self.gpu_count(|c| &c.dropped),
            gpu_deadlines_missed: self.gpu_count(|c| &c.deadlines_missed),
            gpu_devices_disabled: self.gpu_count(|c| &c.devices_disabled),
            gpu_thread_cpu_ns: self.gpu.as_ref().map_or(0, |g| g.thread_cpu_ns),
            hist_nvml_latency_ns: self
                .gpu
                .as_ref()
                .map(|g| stats::encode(&g.hist_latency))
                .unwrap_or_default(),
            gpu_errors: self
                .gpu
                .as_ref()
                .map(|g| {
                    let n = g.ndev;
                    g.counters.errors[..n]
                        .iter()
                        .map(|e| e.load(Ordering::Relaxed))
                        .collect()
                })
                .unwrap_or_default(),
            gpu_backfills: self.gpu_count(|c| &c.backfills),
            gpu_backfill_cpu_ns: self.gpu_count(|c| &c.backfill_cpu_ns),
            gpu_backfills_dropped: self.gpu_count(|c| &c.backfills_dropped),
            task_counters: self
                .tasks
                .as_ref()
                .map(|t| t.counters.values())
                .unwrap_or_default(),
            task_thread_cpu_ns: self
                .tasks
                .as_ref()
                .map_or(0, |t| t.counters.thread_cpu_ns.load(Ordering::Relaxed)),
        }
    }

    fn gpu_count(&self, f: impl Fn(&GpuCounters) -> &AtomicU64) -> u64 {
        self.gpu
            .as_ref()
            .map_or(0, |g| f(&g.counters).load(Ordering::Relaxed))
    }

    fn ingest_count(&self, f: impl Fn(&IngestCounters) -> &AtomicU64) -> u64 {
        self.ingest_counters
            .as_ref()
            .map_or(0, |c| f(c).load(Ordering::Relaxed))
    }

    /// Runs until `stop` is set (after the agents have stopped), then drains
    /// what is left, closes the session and sends the final snapshot and the
    /// end marker. Returns itself so the caller can finish the sink.
    pub fn run(mut self, stop: Arc<AtomicBool>, end_reason: Arc<AtomicU64>) -> Self {
        let started = self.event(
            self.start_wall_ns,
            self.start_wall_ns,
            EventKind::SessionStarted,
        );
        self.send(started);
        loop {
            let stopping = stop.load(Ordering::Acquire);
            self.final_drain = stopping;
            self.drain();
            let now = mono_ns();
            if !stopping && now - self.last_snapshot >= self.snapshot_every.as_nanos() as u64 {
                self.last_snapshot = now;
                // It reaches the file with the next drain's flush.
                let s = Record::Snapshot(self.snapshot());
                self.send(s);
            }
            if stopping {
                break;
            }
            std::thread::park_timeout(FALLBACK_WAKE);
        }
        let end = wall_ns();
        let ended = self.event(
            end,
            end,
            EventKind::SessionEnded {
                duration_seconds: (end - self.start_wall_ns) as f64 / 1e9,
            },
        );
        self.offer_live(&ended);
        self.sink.flush();
        self.sink.put_final(ended);
        let snap = Record::Snapshot(self.snapshot());
        self.sink.put_final(snap);
        let reason = decode_end_reason(end_reason.load(Ordering::Acquire));
        self.sink.put_final(Record::End(EndMarker {
            wall_ns: wall_ns(),
            reason,
        }));
        self.sink.flush();
        if let Some(f) = self.fanout.as_mut() {
            f.flush();
        }
        self
    }
}

/// Packs an [`EndReason`] into a u64 (for an atomic shared with the main thread).
pub fn encode_end_reason(r: EndReason) -> u64 {
    match r {
        EndReason::Signal(s) => (1 << 32) | u64::from(s as u32),
        EndReason::CommandExited(c) => (2 << 32) | u64::from(c as u32),
        EndReason::StopRequested => 3 << 32,
    }
}

fn decode_end_reason(v: u64) -> EndReason {
    let low = (v & 0xffff_ffff) as u32 as i32;
    match v >> 32 {
        1 => EndReason::Signal(low),
        2 => EndReason::CommandExited(low),
        _ => EndReason::StopRequested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::channel;

    /// A sample whose reads finished at `at_ms`, with a CPU window of
    /// (busy, total) ticks (per-core 50.0 and 50.1 %) or none.
    fn reading(
        at_ms: u64,
        cpu: Option<(u64, u64)>,
        disk: (u64, u64),
        net: (u64, u64),
    ) -> ProcSample {
        let mut r = ProcSample {
            done_ns: at_ms * 1_000_000,
            node: crate::agent::proc::NodeCounters {
                ok: source::ALL,
                mem_total_kb: 1000,
                mem_available_kb: 750,
                disk_read_sectors: disk.0,
                disk_write_sectors: disk.1,
                net_rx_bytes: net.0,
                net_tx_bytes: net.1,
                ..crate::agent::proc::NodeCounters::default()
            },
            ncpu: 2,
            cpu_window: cpu.map(|(busy, total)| crate::agent::procfs::CpuTicks { busy, total }),
            ..ProcSample::default()
        };
        if cpu.is_some() {
            r.per_cpu_permille[0] = 500;
            r.per_cpu_permille[1] = 501;
        }
        r
    }

    /// A dispatcher of samples every 100 ms.
    fn dispatcher() -> Dispatcher<Vec<Record>> {
        let (_p, c) = channel(4);
        Dispatcher::new(
            c,
            Vec::new(),
            Arc::default(),
            Arc::default(),
            "tal".into(),
            Duration::from_millis(100),
            0,
            Duration::from_secs(10),
        )
    }

    #[test]
    fn first_sample_has_null_deltas_then_rhapsody_semantics() {
        let mut d = dispatcher();
        let u = d.resource_update(&reading(0, None, (10, 20), (1000, 2000)));
        assert_eq!(u.cpu_percent, None);
        assert!(u.cpu_percent_per_core.is_empty());
        assert_eq!(u.memory_percent, Some(25.0));
        assert_eq!(u.disk_read_bytes, None);
        assert_eq!(u.net_sent_bytes, None);
        let u = d.resource_update(&reading(100, Some((50, 100)), (14, 28), (1500, 2600)));
        assert_eq!(u.cpu_percent, Some(50.0));
        assert_eq!(u.cpu_percent_per_core, vec![50.0, 50.1]);
        assert_eq!(u.disk_read_bytes, Some(4.0 * 512.0));
        assert_eq!(u.disk_write_bytes, Some(8.0 * 512.0));
        assert_eq!(u.net_recv_bytes, Some(500.0));
        assert_eq!(u.net_sent_bytes, Some(600.0));
        let u = d.resource_update(&reading(200, Some((1, 3)), (14, 28), (1500, 2600)));
        assert_eq!(u.cpu_percent, Some(33.3));
    }

    #[test]
    fn failed_source_is_null_only_for_itself() {
        let mut d = dispatcher();
        d.resource_update(&reading(0, None, (10, 20), (1000, 2000)));
        let mut r = reading(100, Some((2, 4)), (11, 21), (1100, 2100));
        r.node.ok &= !source::DISKSTATS;
        let u = d.resource_update(&r);
        assert_eq!(u.disk_read_bytes, None);
        assert_eq!(u.net_recv_bytes, Some(100.0));
        let u = d.resource_update(&reading(200, Some((2, 4)), (12, 22), (1100, 2100)));
        assert_eq!(u.disk_read_bytes, Some(2.0 * 512.0));
    }

    #[test]
    fn a_window_under_half_an_interval_gives_null_and_folds_into_the_next() {
        let mut d = dispatcher();
        d.resource_update(&reading(0, None, (10, 20), (1000, 2000)));
        // 49 ms after the base at an interval of 100 ms: too short.
        let u = d.resource_update(&reading(49, None, (11, 21), (1100, 2100)));
        assert_eq!((u.disk_read_bytes, u.disk_write_bytes), (None, None));
        assert_eq!((u.net_recv_bytes, u.net_sent_bytes), (None, None));
        assert_eq!(u.cpu_percent, None);
        assert!(u.cpu_percent_per_core.is_empty());
        // The next one covers both windows: nothing counted is lost.
        let u = d.resource_update(&reading(100, Some((2, 4)), (13, 24), (1300, 2400)));
        assert_eq!(u.disk_read_bytes, Some(3.0 * 512.0));
        assert_eq!(u.disk_write_bytes, Some(4.0 * 512.0));
        assert_eq!(u.net_recv_bytes, Some(300.0));
        assert_eq!(u.net_sent_bytes, Some(400.0));
        // Exactly half an interval is measurable.
        let u = d.resource_update(&reading(150, Some((2, 4)), (14, 24), (1300, 2400)));
        assert_eq!(u.disk_read_bytes, Some(512.0));
    }

    #[test]
    fn job_cpu_is_null_over_a_short_window_and_folded() {
        use crate::agent::cgroup::CgroupReading;
        let job = |r: &mut ProcSample, cpu_ms: u64| {
            r.node.cgroup = CgroupReading {
                cpu_ns: Some(cpu_ms * 1_000_000),
                io_read_bytes: Some(cpu_ms),
                io_write_bytes: Some(0),
                ..CgroupReading::default()
            };
        };
        let field = |u: &ResourceUpdate, k: &str| {
            u.extra
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let mut d = dispatcher();
        let mut r = reading(0, None, (0, 0), (0, 0));
        job(&mut r, 0);
        d.resource_update(&r);
        // 2 ms later, 2 ms of CPU on one of 2 CPUs: a figure would read 50.
        let mut r = reading(2, None, (0, 0), (0, 0));
        job(&mut r, 2);
        let u = d.resource_update(&r);
        assert_eq!(field(&u, "job_cpu_percent"), Value::Null);
        assert_eq!(field(&u, "job_disk_read_bytes"), Value::Null);
        // 100 ms after the base, 20 ms in all: 10 % of 2 CPUs.
        let mut r = reading(100, Some((1, 2)), (0, 0), (0, 0));
        job(&mut r, 20);
        let u = d.resource_update(&r);
        assert_eq!(field(&u, "job_cpu_percent"), Value::Float(10.0));
        assert_eq!(field(&u, "job_disk_read_bytes"), Value::Float(20.0));
    }

    #[test]
    fn end_reason_round_trips() {
        for r in [
            EndReason::Signal(15),
            EndReason::CommandExited(-1),
            EndReason::CommandExited(3),
            EndReason::StopRequested,
        ] {
            assert_eq!(decode_end_reason(encode_end_reason(r)), r);
        }
    }
}
