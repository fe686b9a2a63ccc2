//! `tal record --otlp-endpoint`: a live OTLP push from the running agent.
//!
//! The dispatcher offers every event it records to this exporter through
//! a bounded ring (a full ring drops the event and counts it; the
//! dispatcher never waits). The exporter, on its own thread, runs the same
//! task state machine as `convert` on this node's events (so a task's span
//! closes here when its terminal event arrives) and the same OTLP builder,
//! and every export interval pushes the spans closed and the resource
//! points sampled since the previous push, with the task counters as of
//! now. A push that fails keeps its data for the next interval (up to
//! [`MAX_PENDING`] spans and points; beyond that the oldest interval's data
//! is dropped and counted). At the end it pushes what is left, with the
//! session span and the tasks still open closed as canceled, in one try
//! each (a node must finish within Slurm's KillWait); whatever did not
//! arrive can be pushed again from the log with `tal convert
//! --otlp-endpoint`, which always sends the whole session. Each periodic
//! push tries a request twice (2 s timeouts), so a stop waits at most a
//! few seconds for a collector that does not answer.
//!
//! Nothing here touches the sampling path or the log: an unreachable
//! collector costs this thread's retries, nothing else.

use crate::clock::wall_ns;
use crate::convert::jsonl::{self, Ctx};
use crate::convert::otlp::{Builder, Otlp, ResourceConfig};
use crate::instruments::{Instruments, COUNTER_NAMES};
use crate::otlp_http::{push_with, Client, Endpoints, PushReport, RetryPolicy};
use crate::record::{Event, EventKind};
use crate::ring::Consumer;
use crate::tasks::{Outcome, TaskSpan, TaskTracker};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spans plus points kept for retry at most.
pub const MAX_PENDING: usize = 200_000;

/// Counters of the live push (read for the final report).
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Events the dispatcher could not hand over (ring full).
    pub events_dropped: AtomicU64,
    /// Spans delivered.
    pub spans_sent: AtomicU64,
    /// Points delivered.
    pub points_sent: AtomicU64,
    /// Spans given up on.
    pub spans_lost: AtomicU64,
    /// Points given up on.
    pub points_lost: AtomicU64,
}

/// The exporter thread's state.
#[derive(Debug)]
pub struct LiveExporter {
    rx: Consumer<Event>,
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
    pending: Vec<Otlp>,
    session_start_ns: i64,
    session_end_ns: Option<i64>,
    last_error: Option<String>,
    client: Client,
}

impl LiveExporter {
    /// An exporter of this node's events from `rx`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rx: Consumer<Event>,
        endpoints: Endpoints,
        interval: Duration,
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
            endpoints,
            resource: ResourceConfig::from_env(),
            interval,
            node: node.to_string(),
            backend: backend.to_string(),
            ctx: Ctx::new(session_id),
            stop,
            counters,
            tracker: TaskTracker::default(),
            inst: Instruments::default(),
            builder: Builder::for_session(session_id, node, job),
            pending: Vec::new(),
            session_start_ns,
            session_end_ns: None,
            last_error: None,
            client: Client::default(),
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
        jsonl::note_energy(&mut self.tracker, &self.node, &ev);
        if let Outcome::Closed(c) = self.tracker.observe_on(&self.node, &ev, &mut self.inst) {
            // (The span carries the terminal attributes; no event line here.)
            self.builder.duration(c.duration_seconds);
            self.task_span(&c.span);
        }
    }

    /// Hands a closed task's span to the builder.
    fn task_span(&mut self, sp: &TaskSpan) {
        let mut buf = Vec::new();
        jsonl::write_task_span(&mut buf, &self.ctx, sp);
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

    fn export(&mut self, policy: &RetryPolicy) {
        let now = wall_ns();
        let batch = self.builder.take(&self.resource, &self.metric(now));
        self.pending.push(batch);
        let mut kept = Vec::new();
        for b in std::mem::take(&mut self.pending) {
            let r: PushReport = push_with(&mut self.client, &b, &self.endpoints, policy);
            self.counters
                .spans_sent
                .fetch_add(r.spans_sent as u64, Ordering::Relaxed);
            self.counters
                .points_sent
                .fetch_add(r.points_sent as u64, Ordering::Relaxed);
            if r.complete() {
                continue;
            }
            self.last_error = r.errors.first().cloned();
            if r.spans_sent == 0 && r.points_sent == 0 {
                kept.push(b); // nothing arrived: try this batch again later
            } else {
                // Part arrived (a rejection, or an outage mid-batch):
                // resending would duplicate; count the rest as lost.
                self.lost(r.spans_failed, r.points_failed);
            }
        }
        // Bound what waits for a receiver that stays away.
        while kept.iter().map(|b| b.spans + b.points).sum::<usize>() > MAX_PENDING {
            let old = kept.remove(0);
            self.lost(old.spans, old.points);
        }
        self.pending = kept;
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
            while let Some(ev) = self.rx.pop() {
                self.handle(ev);
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
            // ring is a quarter full, and the stop does too.
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
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
            jsonl::write_task_span(&mut buf, ctx, &span);
            if let Some(v) = Self::json_line(&buf) {
                builder.line(v);
            }
        });
        let mut buf = Vec::new();
        jsonl::write_session_span(
            &mut buf,
            &self.ctx,
            &self.backend,
            self.session_start_ns,
            end,
            1,
            &jsonl::session_energy(&self.tracker, 1),
        );
        self.span_line(&buf);
        let last_try = RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
            timeout: Duration::from_secs(2),
        };
        self.export(&last_try);
        for b in std::mem::take(&mut self.pending) {
            self.lost(b.spans, b.points);
        }
        let lost = self.counters.spans_lost.load(Ordering::Relaxed)
            + self.counters.points_lost.load(Ordering::Relaxed);
        (lost > 0).then(|| self.last_error.unwrap_or_else(|| "not delivered".into()))
    }
}
