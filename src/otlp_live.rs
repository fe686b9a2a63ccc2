//! `tal record --otlp-endpoint`: a live OTLP push from the running agent.
//!
//! The dispatcher offers every event it records to this exporter through
//! a bounded ring (a full ring drops the event and counts it; the
//! dispatcher never waits). The ring is bounded in bytes too
//! ([`RING_BYTES`] of events at most, each counted as [`Offered`] says):
//! while this thread waits for a receiver it does not drain the ring, and
//! 65,536 events of 64 KiB lines would be 4 GiB. The exporter, on its own thread, runs the same
//! task state machine as `convert` on this node's events (so a task's span
//! closes here when its terminal event arrives) and the same OTLP builder,
//! and every export interval pushes the spans closed and the resource
//! points sampled since the previous push, with the task counters as of
//! now. A push that fails keeps its requests for the next interval.
//!
//! What waits for a receiver is bounded in bytes, not in spans: the
//! requests are kept *encoded* (their bodies as they will be sent), and
//! they may hold at most [`LiveConfig::max_pending_bytes`] (16 MiB unless
//! `tal record --otlp-buffer` says otherwise) — a receiver that is down for
//! the whole job must not cost the job's memory. Beyond it the oldest
//! requests are shed and counted ([`LiveCounters::spans_shed`], said at the
//! end); the log has them all, and `tal convert --otlp-endpoint` pushes the
//! whole session from it. Spans are encoded as soon as a request's worth
//! ([`SPANS_PER_REQUEST`]) is gathered, so a flood of short tasks between
//! two intervals is bounded the same way.
//!
//! At the end it pushes what is left, with the session span and the tasks
//! still open closed as canceled, in one try each (a node must finish
//! within Slurm's KillWait); whatever did not arrive can be pushed again
//! from the log. Each periodic push tries a request twice (2 s timeouts);
//! a wait between tries (a receiver's `Retry-After` is honoured up to 30 s)
//! ends as soon as the run does, so a stop waits for no receiver beyond
//! the last push's own time limit.
//!
//! Nothing here touches the sampling path or the log: an unreachable
//! collector costs this thread's retries, nothing else.

use crate::clock::wall_ns;
use crate::event_json::{self, Ctx};
use crate::instruments::{Instruments, COUNTER_NAMES};
use crate::otlp::{Builder, Otlp, ResourceConfig};
use crate::otlp_http::{
    encode_requests, Client, Encoded, Endpoints, Pusher, RetryPolicy, SPANS_PER_REQUEST,
};
use crate::record::{Event, EventKind};
use crate::ring::Consumer;
use crate::tasks::{Outcome, TaskSpan, TaskTracker};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the ring from the dispatcher may hold at most, in bytes of events
/// (see [`Offered`]); an event beyond it is dropped and counted as when
/// the ring is full.
pub const RING_BYTES: usize = 8 << 20;

/// An event as the dispatcher offers it, with the bytes it is counted as:
/// its encoded size as the client sent it (which its strings and
/// attributes hold as much of) plus the event itself, or for the agent's
/// own events (resource and task samples) the event and a fixed 512 bytes.
/// The exporter gives the bytes back when it takes the event
/// ([`LiveCounters::ring_bytes`]).
pub type Offered = (Event, usize);

/// The default of [`LiveConfig::max_pending_bytes`]: 16 MiB of encoded
/// requests (some 20,000 spans), about the agent's own memory budget.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 16 << 20;

/// How the live push runs (`tal record --otlp-endpoint`,
/// `--otlp-interval`, `--otlp-buffer`).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Where and how to push.
    pub endpoints: Endpoints,
    /// How often it pushes.
    pub interval: Duration,
    /// What the requests waiting for the receiver may hold at most, in
    /// bytes; beyond it the oldest are shed.
    pub max_pending_bytes: usize,
}

/// Counters of the live push (read for the final report).
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Events the dispatcher could not hand over (ring full, or holding
    /// [`RING_BYTES`]).
    pub events_dropped: AtomicU64,
    /// The bytes of the events in the ring now (see [`Offered`]).
    pub ring_bytes: AtomicUsize,
    /// Spans delivered.
    pub spans_sent: AtomicU64,
    /// Points delivered.
    pub points_sent: AtomicU64,
    /// Spans given up on.
    pub spans_lost: AtomicU64,
    /// Points given up on.
    pub points_lost: AtomicU64,
    /// Of the spans given up on, those shed to keep what waits for the
    /// receiver within [`LiveConfig::max_pending_bytes`].
    pub spans_shed: AtomicU64,
    /// The same, of points.
    pub points_shed: AtomicU64,
}

/// The exporter thread's state.
#[derive(Debug)]
pub struct LiveExporter {
    rx: Consumer<Offered>,
    endpoints: Endpoints,
    resource: ResourceConfig,
    interval: Duration,
    node: String,
    backend: String,
    ctx: Ctx,
    stop: Arc<AtomicBool>,
    counters: Arc<LiveCounters>,
    tracker: TaskTracker,
    inst: Instruments,
    builder: Builder,
    /// Encoded requests not yet delivered, oldest first, and their bytes.
    pending: VecDeque<Encoded>,
    pending_bytes: usize,
    max_pending_bytes: usize,
    session_start_ns: i64,
    session_end_ns: Option<i64>,
    last_error: Option<String>,
    client: Client,
}

impl LiveExporter {
    /// An exporter of this node's events from `rx`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Consumer<Offered>,
        cfg: &LiveConfig,
        session_id: &str,
        node: &str,
        backend: &str,
        session_start_ns: i64,
        job: &[(String, String)],
        stop: Arc<AtomicBool>,
        counters: Arc<LiveCounters>,
    ) -> Self {
        Self {
            rx,
            endpoints: cfg.endpoints.clone(),
            resource: ResourceConfig::from_env(),
            interval: cfg.interval,
            node: node.to_string(),
            backend: backend.to_string(),
            ctx: Ctx::new(session_id),
            client: Client::stoppable(Arc::clone(&stop)),
            stop,
            counters,
            tracker: TaskTracker::default(),
            inst: Instruments::default(),
            builder: Builder::for_session(session_id, node, job),
            pending: VecDeque::new(),
            pending_bytes: 0,
            max_pending_bytes: cfg.max_pending_bytes,
            session_start_ns,
            session_end_ns: None,
            last_error: None,
        }
    }

    fn json_line(buf: &[u8]) -> Option<Value> {
        serde_json::from_slice(buf).ok()
    }

    fn handle(&mut self, ev: Event) {
        match &ev.kind {
            EventKind::GpuProcesses(p) => {
                self.tracker.observe_gpu(&self.node, p);
                return;
            }
            EventKind::SessionStarted => {
                self.session_start_ns = ev.event_time_ns;
                return;
            }
            EventKind::SessionEnded { .. } => {
                // The end `convert` uses too, for open tasks and the session.
                self.session_end_ns = Some(ev.event_time_ns);
                return;
            }
            EventKind::ResourceUpdate(u) => {
                let node = ev.node_id.as_deref().unwrap_or(&self.node);
                self.builder.resource_update(node, ev.event_time_ns, u);
                return;
            }
            EventKind::TaskResources(r) => {
                // Its GPU memory, as `convert` fills it in.
                let mut r = r.clone();
                if let Some(task) = ev.task_id.as_deref() {
                    r.gpu_memory_bytes = self.tracker.gpu_now(task).to_vec();
                    let node = ev.node_id.as_deref().unwrap_or(&self.node);
                    self.builder
                        .task_resources(node, ev.event_time_ns, task, &r);
                }
                self.tracker.observe_on(&self.node, &ev, &mut self.inst);
                return;
            }
            _ => {}
        }
        self.inst.observe(&self.node, &ev.kind);
        event_json::note_energy(&mut self.tracker, &self.node, &ev);
        if let Outcome::Closed(c) = self.tracker.observe_on(&self.node, &ev, &mut self.inst) {
            // (The span carries the terminal attributes; no event line here.)
            self.builder.duration(c.duration_seconds);
            self.task_span(&c.span);
        }
    }

    /// Hands a closed task's span to the builder.
    fn task_span(&mut self, sp: &TaskSpan) {
        let mut buf = Vec::new();
        event_json::write_task_span(&mut buf, &self.ctx, sp);
        self.span_line(&buf);
    }

    /// One span line (as `convert` writes it) to the builder.
    fn span_line(&mut self, buf: &[u8]) {
        if let Some(v) = Self::json_line(buf) {
            self.builder.line(v);
        }
    }

    /// The session instruments now, shaped as a metric line.
    fn metric(&self, now_ns: i64) -> Value {
        let mut m = json!({ "checkpoint_time": now_ns as f64 / 1e9 });
        for (name, v) in COUNTER_NAMES.iter().zip(self.inst.counters) {
            if let Some(v) = v {
                m[*name] = json!(v);
            }
        }
        if let Some(r) = self.inst.running {
            m["tasks_running"] = json!(r);
        }
        m
    }

    /// What the builder gathered, as encoded requests at the end of the
    /// queue (with the session instruments as of now), the oldest shed if
    /// the queue holds more than its bytes.
    fn stage(&mut self) {
        let batch: Otlp = self.builder.take(&self.resource, &self.metric(wall_ns()));
        for r in encode_requests(&batch, &self.endpoints) {
            self.pending_bytes += r.bytes();
            self.pending.push_back(r);
        }
        drop(batch);
        while self.pending_bytes > self.max_pending_bytes {
            let Some(old) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= old.bytes();
            let (spans, points) = Self::items(&old);
            self.lost(spans, points);
            let c = &self.counters;
            c.spans_shed.fetch_add(spans as u64, Ordering::Relaxed);
            c.points_shed.fetch_add(points as u64, Ordering::Relaxed);
        }
    }

    /// A request's (spans, points).
    fn items(r: &Encoded) -> (usize, usize) {
        if r.metrics {
            (0, r.items)
        } else {
            (r.items, 0)
        }
    }

    /// Stages what was gathered and sends the queue, oldest first. Once the
    /// receiver is down, the rest waits for the next push; a request that
    /// got an answer is done (what it had rejected is counted as lost:
    /// resending would duplicate what was accepted).
    fn export(&mut self, policy: &RetryPolicy) {
        self.stage();
        let mut pusher = Pusher::new(&mut self.client, &self.endpoints, policy);
        let mut kept = VecDeque::new();
        let (mut sent, mut lost) = ((0, 0), (0, 0));
        for r in self.pending.drain(..) {
            if pusher.down() {
                kept.push_back(r);
                continue;
            }
            let (ok, bad) = pusher.encoded(&r);
            if ok == 0 && pusher.down() {
                kept.push_back(r); // not delivered: the receiver is away
                continue;
            }
            let (s, p) = Self::items(&r);
            let (ok_s, ok_p) = if s > 0 { (ok, 0) } else { (0, ok) };
            sent = (sent.0 + ok_s, sent.1 + ok_p);
            lost = (lost.0 + s.min(bad), lost.1 + p.min(bad));
        }
        if let Some(e) = pusher.report.errors.first() {
            self.last_error = Some(e.clone());
        }
        self.pending = kept;
        self.pending_bytes = self.pending.iter().map(Encoded::bytes).sum();
        let c = &self.counters;
        c.spans_sent.fetch_add(sent.0 as u64, Ordering::Relaxed);
        c.points_sent.fetch_add(sent.1 as u64, Ordering::Relaxed);
        self.lost(lost.0, lost.1);
    }

    fn lost(&self, spans: usize, points: usize) {
        self.counters
            .spans_lost
            .fetch_add(spans as u64, Ordering::Relaxed);
        self.counters
            .points_lost
            .fetch_add(points as u64, Ordering::Relaxed);
    }

    /// Runs until the stop flag is set and every event offered before it
    /// is handled; returns why something was not delivered, if it was not.
    pub fn run(mut self) -> Option<String> {
        let mut next = Instant::now() + self.interval;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            while let Some((ev, bytes)) = self.rx.pop() {
                self.counters.ring_bytes.fetch_sub(bytes, Ordering::AcqRel);
                self.handle(ev);
                if self.builder.spans_held() >= SPANS_PER_REQUEST {
                    self.stage();
                }
            }
            if stopping {
                break;
            }
            if Instant::now() >= next {
                // Short retries: what fails waits for the next interval
                // anyway, and a stop must not wait behind long backoffs.
                self.export(&RetryPolicy {
                    attempts: 2,
                    backoff: Duration::from_millis(250),
                    timeout: Duration::from_secs(2),
                });
                next = Instant::now() + self.interval;
            }
            // Wakes at the interval; the dispatcher wakes it early when its
            // ring is a quarter full, and the stop does too (checked first:
            // a retry wait may have taken the stop's wake-up).
            if !self.stop.load(Ordering::Acquire) {
                std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
            }
        }
        // The end: open tasks close as canceled, the session span closes,
        // and what is left goes out in one try per request.
        let end = self.session_end_ns.unwrap_or_else(wall_ns);
        let Self {
            tracker,
            inst,
            builder,
            ctx,
            ..
        } = &mut self;
        tracker.close_all(end, inst, |_, span| {
            // Closed at the session's end: a zero duration, as in the JSONL.
            builder.duration(0.0);
            let mut buf = Vec::new();
            event_json::write_task_span(&mut buf, ctx, &span);
            if let Some(v) = Self::json_line(&buf) {
                builder.line(v);
            }
        });
        let mut buf = Vec::new();
        event_json::write_session_span(
            &mut buf,
            &self.ctx,
            &self.backend,
            self.session_start_ns,
            end,
            1,
            &event_json::session_energy(&self.tracker, 1),
        );
        self.span_line(&buf);
        let last_try = RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
            timeout: Duration::from_secs(2),
        };
        self.export(&last_try);
        for r in std::mem::take(&mut self.pending) {
            let (spans, points) = Self::items(&r);
            self.lost(spans, points);
        }
        let lost = self.counters.spans_lost.load(Ordering::Relaxed)
            + self.counters.points_lost.load(Ordering::Relaxed);
        (lost > 0).then(|| self.last_error.unwrap_or_else(|| "not delivered".into()))
    }
}
