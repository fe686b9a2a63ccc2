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

use crate::agent::gpu::{Backfill, GpuCounters, GpuDeviceReading, GpuSample, PollsIn};
use crate::agent::proc::{source, ProcSample, NO_PERMILLE};
use crate::agent::procfs::memory_percent;
use crate::agent::window;
use crate::agent::AgentCounters;
use crate::clock::{mono_ns, wall_ns, Anchor};
use crate::ids::EventIdGen;
use crate::ingest::batch::IngestBatch;
use crate::ingest::listener::{IngestCounters, SubLine};
use crate::record::{
    AgentSnapshot, EndMarker, EndReason, Event, EventKind, GpuProcess, GpuUtilSamples, Record,
    ResourceScope, ResourceUpdate, Value,
};
use crate::ring::{Consumer, Producer};
use crate::stats;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
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

/// The live OTLP exporter's side of the dispatcher.
#[derive(Debug)]
struct Exporter {
    tx: crate::ring::Producer<crate::otlp_live::Offered>,
    thread: std::thread::Thread,
    counters: Arc<crate::otlp_live::LiveCounters>,
}

impl Exporter {
    /// Offers `ev`, counted as `bytes` (see [`crate::otlp_live::Offered`]).
    fn offer(&mut self, ev: &Event, bytes: usize) {
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
    fn filling(&self) -> bool {
        self.tx.len() * 4 >= self.tx.capacity()
            || self.counters.ring_bytes.load(Ordering::Relaxed) * 4 >= crate::otlp_live::RING_BYTES
    }
}

/// How many polls a proc sample waits for the GPU poll of its deadline
/// before it is written without it.
pub const GPU_HOLD_POLLS: u64 = 3;

/// The GPU agent's side of the dispatcher: its ring, and the pairing of
/// its polls with the proc samples of the same deadline.
#[derive(Debug)]
struct GpuIn {
    rx: PollsIn,
    /// The agent's back-fills of driver samples.
    backfill_rx: Consumer<Backfill>,
    counters: Arc<GpuCounters>,
    start_ns: u64,
    interval_ns: u64,
    /// Proc samples waiting for their GPU poll.
    held: VecDeque<ProcSample>,
    /// GPU polls not yet written.
    polls: VecDeque<Box<GpuSample>>,
    /// The newest GPU poll written: its grid index and per_node value.
    last: Option<(u64, Option<f64>)>,
    /// NVML time per device and poll, ns.
    hist_latency: Histogram<u64>,
    /// The GPU thread's CPU time at its newest poll.
    thread_cpu_ns: u64,
    /// The processes of the newest poll written: (gpu, pid, bytes).
    last_procs: Vec<(u32, u32, u64)>,
    /// Devices the polls have.
    ndev: usize,
}

impl GpuIn {
    /// Sends a written poll's box back to the GPU agent (dropped if its
    /// ring is full: the agent then allocates another).
    fn give_back(&mut self, g: Box<GpuSample>) {
        let _ = self.rx.free.push(g);
    }

    /// A deadline's index on the shared sampling grid.
    fn index(&self, deadline_ns: u64) -> u64 {
        (deadline_ns.saturating_sub(self.start_ns) + self.interval_ns / 2) / self.interval_ns
    }
}

/// The node's `gpu_percent`: the max over the devices that answered.
fn max_gpu_percent(g: &GpuSample) -> Option<f64> {
    g.dev[..g.ndev as usize]
        .iter()
        .filter(|d| d.ok)
        .filter_map(|d| d.util_percent)
        .map(|v| round1(f64::from(v)))
        .reduce(f64::max)
}

/// One device's `per_gpu` update: RHAPSODY's `gpu_percent` and `gpu_id`,
/// and tal's extension fields (null where the device does not tell).
pub fn gpu_update(gpu_id: u32, r: &GpuDeviceReading) -> ResourceUpdate {
    let mut u = ResourceUpdate::empty(ResourceScope::PerGpu(gpu_id));
    u.gpu_percent = r.util_percent.map(|v| round1(f64::from(v)));
    let int = |v: Option<u64>| v.map_or(Value::Null, |v| Value::Int(v as i64));
    let float = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
    let mem_percent = match (r.mem_used, r.mem_total) {
        (Some(u), Some(t)) if t > 0 => Some(round1(u as f64 / t as f64 * 100.0)),
        _ => None,
    };
    u.extra = vec![
        // Null: the driver's current figure; `convert` back-fills it.
        ("gpu_samples".into(), Value::Null),
        (
            "gpu_memory_util_percent".into(),
            float(r.mem_util_percent.map(|v| round1(f64::from(v)))),
        ),
        ("gpu_memory_used_bytes".into(), int(r.mem_used)),
        ("gpu_memory_total_bytes".into(), int(r.mem_total)),
        ("gpu_memory_percent".into(), float(mem_percent)),
        (
            "gpu_power_watts".into(),
            float(r.power_mw.map(|p| f64::from(p) / 1000.0)),
        ),
        (
            "gpu_energy_joules".into(),
            float(r.energy_j.map(|j| (j * 1000.0).round() / 1000.0)),
        ),
        (
            "gpu_temperature_celsius".into(),
            int(r.temp_c.map(u64::from)),
        ),
        (
            "gpu_sm_clock_mhz".into(),
            int(r.sm_clock_mhz.map(u64::from)),
        ),
        (
            "nvml_latency_us".into(),
            Value::Float(round1(r.latency_ns as f64 / 1e3)),
        ),
    ];
    u
}

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

    /// The per_gpu events of GPU poll `g`, onto `batch`.
    fn gpu_events(
        &mut self,
        gpu: &mut GpuIn,
        g: &GpuSample,
        anchor: &Anchor,
        batch: &mut Vec<Option<Record>>,
    ) {
        let (t, done) = (anchor.to_wall(g.deadline_ns), anchor.to_wall(g.done_ns));
        for (i, d) in g.dev[..g.ndev as usize].iter().enumerate() {
            if !d.ok {
                continue;
            }
            let _ = gpu.hist_latency.record(d.latency_ns.max(1));
            let ev = self.event(t, done, EventKind::ResourceUpdate(gpu_update(i as u32, d)));
            batch.push(Some(ev));
        }
        gpu.thread_cpu_ns = gpu.thread_cpu_ns.max(g.thread_cpu_ns);
        gpu.ndev = gpu.ndev.max(g.ndev as usize);
        gpu.last = Some((gpu.index(g.deadline_ns), max_gpu_percent(g)));
        // The GPU processes, when they changed (convert attributes them to
        // tasks by pid).
        let procs = &g.procs[..g.nproc as usize];
        let same = procs.len() == gpu.last_procs.len()
            && procs
                .iter()
                .zip(&gpu.last_procs)
                .all(|(p, &(gi, pid, b))| p.gpu == gi && p.pid == pid && p.used_bytes == b);
        if !same {
            gpu.last_procs.clear();
            gpu.last_procs
                .extend(procs.iter().map(|p| (p.gpu, p.pid, p.used_bytes)));
            let list = procs
                .iter()
                .map(|p| GpuProcess {
                    gpu_id: p.gpu,
                    pid: p.pid,
                    used_bytes: p.used_bytes,
                    ancestors: p.ancestors[..p.nanc as usize].to_vec(),
                })
                .collect();
            let ev = self.event(t, done, EventKind::GpuProcesses(list));
            batch.push(Some(ev));
        }
    }

    /// Pairs proc samples with the GPU polls of the same deadline: each
    /// per_node event carries the max `gpu_percent` of its poll and is
    /// followed by that poll's per_gpu events. A proc sample whose poll has
    /// not come waits up to [`GPU_HOLD_POLLS`] polls (or until the final
    /// drain); then it takes the previous poll's value if that is at most
    /// one poll older, else null. GPU polls whose proc sample is gone are
    /// written on their own.
    fn drain_with_gpu(
        &mut self,
        gpu: &mut GpuIn,
        anchor: &Anchor,
        batch: &mut Vec<Option<Record>>,
    ) {
        while let Some(r) = self.rx.pop() {
            gpu.held.push_back(r);
        }
        while let Some(g) = gpu.rx.polls.pop() {
            gpu.polls.push_back(g);
        }
        while let Some(b) = gpu.backfill_rx.pop() {
            batch.push(Some(Record::GpuUtil(GpuUtilSamples {
                gpu_id: b.gpu,
                fetched_ns: anchor.to_wall(b.fetched_ns),
                covers_to_ns: anchor.to_wall(b.covers_to_ns),
                samples: b.samples[..b.n as usize]
                    .iter()
                    .map(|s| (anchor.to_wall(s.mono_ns), s.percent))
                    .collect(),
            })));
        }
        let newest = gpu.held.back().map(|p| gpu.index(p.deadline_ns));
        while let Some(p) = gpu.held.front() {
            let k = gpu.index(p.deadline_ns);
            while gpu
                .polls
                .front()
                .is_some_and(|g| gpu.index(g.deadline_ns) < k)
            {
                let Some(g) = gpu.polls.pop_front() else {
                    break;
                };
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
            let matched = gpu
                .polls
                .front()
                .is_some_and(|g| gpu.index(g.deadline_ns) == k);
            if !matched
                && gpu.polls.is_empty()
                && !self.final_drain
                && newest.is_some_and(|n| n < k + GPU_HOLD_POLLS)
            {
                break; // its poll may still come
            }
            let Some(p) = gpu.held.pop_front() else { break };
            let matched = if matched { gpu.polls.pop_front() } else { None };
            let percent = match &matched {
                Some(g) => max_gpu_percent(g),
                None => gpu.last.filter(|(i, _)| i + 1 >= k).and_then(|(_, v)| v),
            };
            let ev = self.node_event(&p, percent, anchor);
            batch.push(Some(ev));
            if let Some(g) = matched {
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
        }
        if self.final_drain {
            while let Some(g) = gpu.polls.pop_front() {
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
        }
    }

    /// Also pair proc samples with the GPU agent's polls from `rx` (both
    /// agents sample on the grid `start_ns + k·interval_ns`).
    pub fn with_gpu(
        mut self,
        rx: PollsIn,
        backfill_rx: Consumer<Backfill>,
        counters: Arc<GpuCounters>,
        start_ns: u64,
        interval_ns: u64,
    ) -> Self {
        self.gpu = Some(GpuIn {
            rx,
            backfill_rx,
            counters,
            start_ns,
            interval_ns: interval_ns.max(1),
            held: VecDeque::new(),
            polls: VecDeque::new(),
            last: None,
            hist_latency: stats::histogram(60_000_000_000),
            thread_cpu_ns: 0,
            last_procs: Vec::new(),
            ndev: 0,
        });
        self
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
    fn wanted(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    fn offer(&mut self, ev: &Event) {
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

    fn flush(&mut self) {
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

#[cfg(test)]
mod gpu_tests {
    use super::*;
    use crate::agent::gpu::{poll_rings, GpuSample, PollsOut};
    use crate::ring::{channel, Producer};

    const START: u64 = 1_000_000_000;
    const IV: u64 = 100_000_000;

    struct Rig {
        d: Dispatcher<Vec<Record>>,
        proc_tx: Producer<ProcSample>,
        gpu_tx: PollsOut,
        bf_tx: Producer<Backfill>,
    }

    fn rig() -> Rig {
        let (proc_tx, proc_rx) = channel(64);
        let (gpu_tx, gpu_rx) = poll_rings(64);
        let (bf_tx, bf_rx) = channel(4);
        let d = Dispatcher::new(
            proc_rx,
            Vec::new(),
            Arc::default(),
            Arc::default(),
            "tal".into(),
            Duration::from_nanos(IV),
            0,
            Duration::from_secs(10),
        )
        .with_gpu(gpu_rx, bf_rx, Arc::default(), START, IV);
        Rig {
            d,
            proc_tx,
            gpu_tx,
            bf_tx,
        }
    }

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

    #[test]
    fn a_back_fill_becomes_a_record_with_wall_clock_sample_times() {
        let mut r = rig();
        let mut b = Backfill {
            gpu: 1,
            fetched_ns: START + 5 * IV,
            covers_to_ns: START + 4 * IV,
            n: 2,
            ..Backfill::default()
        };
        b.samples[0] = crate::agent::gpu::UtilSample {
            mono_ns: START + IV,
            percent: 30.0,
        };
        b.samples[1] = crate::agent::gpu::UtilSample {
            mono_ns: START + 4 * IV,
            percent: 70.0,
        };
        r.bf_tx.push(b).unwrap();
        r.d.drain();
        let got: Vec<&GpuUtilSamples> =
            r.d.sink
                .iter()
                .filter_map(|x| match x {
                    Record::GpuUtil(g) => Some(g),
                    _ => None,
                })
                .collect();
        assert_eq!(got.len(), 1);
        let g = got[0];
        assert_eq!(g.gpu_id, 1);
        // Times keep their spacing on the wall clock.
        assert_eq!(g.fetched_ns - g.covers_to_ns, IV as i64);
        assert_eq!(g.samples.len(), 2);
        assert_eq!(g.samples[1].0 - g.samples[0].0, 3 * IV as i64);
        assert_eq!(g.covers_to_ns, g.samples[1].0);
        assert_eq!((g.samples[0].1, g.samples[1].1), (30.0, 70.0));
    }

    fn proc_at(k: u64) -> ProcSample {
        ProcSample {
            deadline_ns: START + k * IV,
            done_ns: START + k * IV + 1000,
            ..ProcSample::default()
        }
    }

    /// A poll at grid index `k` with one device per value (`None`: the
    /// device did not answer).
    fn poll_at(k: u64, utils: &[Option<f32>]) -> GpuSample {
        let mut g = GpuSample {
            deadline_ns: START + k * IV,
            done_ns: START + k * IV + 2000,
            ndev: utils.len() as u8,
            ..GpuSample::default()
        };
        for (d, u) in g.dev.iter_mut().zip(utils) {
            d.ok = u.is_some();
            d.util_percent = *u;
            d.latency_ns = 1000;
        }
        g
    }

    /// The resource events written so far: (scope, gpu_percent).
    fn written(d: &Dispatcher<Vec<Record>>) -> Vec<(ResourceScope, Option<f64>)> {
        d.sink
            .iter()
            .filter_map(|r| match r {
                Record::Event(Event {
                    kind: EventKind::ResourceUpdate(u),
                    ..
                }) => Some((u.scope, u.gpu_percent)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_node_sample_carries_its_polls_max_and_is_followed_by_its_devices() {
        let mut r = rig();
        for k in 0..3 {
            r.proc_tx.push(proc_at(k)).unwrap();
            r.gpu_tx
                .polls
                .push(Box::new(poll_at(
                    k,
                    &[Some(10.0 * k as f32), Some(5.0), None],
                )))
                .unwrap();
        }
        r.d.final_drain = true;
        r.d.drain();
        // Every written poll's box goes back to the GPU agent.
        assert_eq!(r.gpu_tx.free.len(), 3);
        use ResourceScope::*;
        assert_eq!(
            written(&r.d),
            vec![
                (PerNode, Some(5.0)),
                (PerGpu(0), Some(0.0)),
                (PerGpu(1), Some(5.0)),
                (PerNode, Some(10.0)),
                (PerGpu(0), Some(10.0)),
                (PerGpu(1), Some(5.0)),
                (PerNode, Some(20.0)),
                (PerGpu(0), Some(20.0)),
                (PerGpu(1), Some(5.0)),
            ]
        );
    }

    #[test]
    fn a_node_sample_waits_for_a_late_poll_but_not_for_ever() {
        use ResourceScope::*;
        let mut r = rig();
        r.proc_tx.push(proc_at(0)).unwrap();
        r.d.drain();
        assert!(written(&r.d).is_empty(), "sample 0 waits for its poll");
        r.gpu_tx
            .polls
            .push(Box::new(poll_at(0, &[Some(40.0)])))
            .unwrap();
        r.proc_tx.push(proc_at(1)).unwrap();
        r.d.drain();
        assert_eq!(
            written(&r.d),
            vec![(PerNode, Some(40.0)), (PerGpu(0), Some(40.0))],
            "sample 1 still waits"
        );
        // Poll 1 does not come in time (NVML stalled): sample 1 is written
        // once it is GPU_HOLD_POLLS polls old, with the previous poll's
        // value (one poll old); the younger samples go on waiting.
        for k in 2..2 + GPU_HOLD_POLLS {
            r.proc_tx.push(proc_at(k)).unwrap();
        }
        r.d.drain();
        let w = written(&r.d);
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(w[2], (PerNode, Some(40.0)));
        // The late poll 1 comes after all: written on its own, and its value
        // serves sample 2 (one poll younger); samples 3 and 4 get null at
        // the final drain (no poll within one interval of them).
        r.gpu_tx
            .polls
            .push(Box::new(poll_at(1, &[Some(70.0)])))
            .unwrap();
        r.d.final_drain = true;
        r.d.drain();
        let w = written(&r.d);
        assert_eq!(
            w[3..],
            [
                (PerGpu(0), Some(70.0)),
                (PerNode, Some(70.0)),
                (PerNode, None),
                (PerNode, None)
            ]
        );
        assert_eq!(
            w.iter().filter(|(s, _)| *s == PerNode).count(),
            2 + GPU_HOLD_POLLS as usize,
            "every node sample is written exactly once"
        );
    }
}
