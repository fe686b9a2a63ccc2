//! `tal summary`: a session in a few screens, from its node logs or its
//! JSONL (tal's or RHAPSODY's), read as [`crate::items`].
//!
//! What it says, like RHAPSODY's `telemetry.summary()` and more: the
//! session (id, start, length, nodes, events by type); tasks by final state,
//! with the error types; task durations (p50, p90, p99, max, mean, from the
//! terminal events, as RHAPSODY's histogram counts them); throughput
//! (completed tasks per second of session) and the peak number of tasks
//! running at once (from the spans); the slowest tasks and the failed ones;
//! each node's CPU and memory, and each GPU's utilisation, memory and power
//! (p50, p99, max of the samples); the agent's own cost (from tal's metric
//! line: absent from RHAPSODY's); and what reading each node's log found
//! (cut off, damaged frames, read errors).
//!
//! And what a `seff` or jobstats user asks first: how well each node and
//! the job used what they had (CPU efficiency, memory in bytes and %, disk
//! and network totals and peak rates, each GPU's mean, idle share, peak
//! memory and energy: [`usage`]); which tasks used the most CPU time, peak
//! RSS, I/O, GPU memory and GPU energy, from their terminal events
//! ([`ranking`]); and a few plain notes with their thresholds ([`notes`]),
//! in units a person reads ([`units`]).
//!
//! Reused task ids: a task id whose lifecycle starts again (TaskCreated,
//! TaskSubmitted, TaskQueued or TaskStarted) after its terminal event was
//! run again under the same id. Its later runs are events in the file but
//! not spans, counts or figures (the converter's first-wins rule, see
//! `crate::tasks`), so the summary counts only the first terminal event of
//! a task id too (its duration, its figures), and names the id.
//!
//! Memory: one entry per task (its interval, its id, node and where its
//! lifecycle is), the series and each node's and GPU's running sums, and
//! the few rows listed and ranked; never the events.
//! It grows with the lines read, not with the names in them: a node id
//! costs its name (a task may name any node), and a node's or GPU's series
//! exist only once a sample of it is read ([`Series`] keeps a few values
//! as they come, and an HDR histogram of fixed size only past [`FEW`]
//! values), so 20,000 node ids in task events cost a few MiB, not 2 GB.
//!
//! What it prints comes from whoever wrote the checkpoint (a socket
//! client's ids, a received file), so text mode writes every string
//! through [`crate::term::escape_for_terminal`], at most [`SHOWN_CHARS`]
//! characters each, and lists the [`TYPES_LISTED`] most common event and
//! error types, saying how many more there were.
//!
//! Layout: the figures are made in `units` (how a figure reads),
//! `usage` (efficiency, memory, traffic, GPUs), `ranking` (the top tasks)
//! and `notes`; this file is the one pass over the checkpoint that feeds
//! them and the text it prints. It passes 1,000 lines only with its
//! tests: the reader's state is one machine over the lines, read once.

pub mod notes;
pub mod ranking;
pub mod units;
pub mod usage;

use crate::convert::NodeIndex;
use crate::items::{Body, Fields, GpuSample, Head, Item, NodeSample, Span};
use crate::stats;
use hdrhistogram::Histogram;
use notes::ReusedTask;
use ranking::{Rankings, TaskUse};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead};
use units::{bytes, secs};
use usage::{GpuAcc, GpuUse, JobUsage, NodeAcc, Usage};

/// How many slowest and failed tasks, and reused task ids, are listed.
pub const LISTED: usize = 10;

/// Nodes whose use the text shows, at most (`--json` has them all).
pub const USAGE_NODES: usize = 16;

/// Event types and error types listed in text, at most (the most common;
/// the rest are counted).
pub const TYPES_LISTED: usize = 20;

/// Characters of one string from the checkpoint printed, at most.
pub const SHOWN_CHARS: usize = 200;

/// Values a series keeps as they come before it turns them into its
/// histogram (whose size is fixed, but ~16 to 330 KiB by its range).
pub const FEW: usize = 512;

/// p50, p90, p99, max (and mean) of a set of values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// How many values.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    /// Exact quantiles (nearest rank) of `v`, which it sorts.
    fn exact(v: &mut [f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let n = v.len() as f64;
        Some(Self {
            count: v.len() as u64,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[v.len() - 1],
            // Each value divided first: a sum of huge finite values would
            // overflow to infinity.
            mean: v.iter().map(|x| x / n).sum(),
        })
    }

    /// Quantiles of a histogram of values scaled by `scale` (3 significant
    /// digits).
    fn of(h: &Histogram<u64>, scale: f64) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / scale;
        Some(Self {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: h.max() as f64 / scale,
            mean: h.mean() / scale,
        })
    }
}

/// A series' values: up to [`FEW`] of them as they come (their
/// quantiles exact), then as an HDR histogram of values up to `max` at
/// resolution `1 / scale`, so that a series read from a few samples costs
/// a few bytes a sample, not a histogram.
#[derive(Debug)]
struct Series {
    few: Vec<f64>,
    h: Option<Histogram<u64>>,
    max: f64,
    scale: f64,
}

impl Series {
    /// Values up to `max` at resolution `1 / scale`.
    fn new(max: f64, scale: f64) -> Self {
        Self {
            few: Vec::new(),
            h: None,
            max,
            scale,
        }
    }

    fn add(&mut self, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            return;
        }
        if self.h.is_none() && self.few.len() < FEW {
            self.few.push(v);
            return;
        }
        let scale = self.scale;
        let h = self
            .h
            .get_or_insert_with(|| stats::histogram((self.max * scale) as u64));
        for x in self.few.drain(..).chain([v]) {
            h.saturating_record((x * scale).round() as u64);
        }
        self.few = Vec::new();
    }

    fn quantiles(&self) -> Option<Quantiles> {
        match &self.h {
            Some(h) => Quantiles::of(h, self.scale),
            None => Quantiles::exact(&mut self.few.clone()),
        }
    }
}

/// One task, as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// Its id.
    pub task_id: String,
    /// The node it ran on, if its events said.
    pub node_id: Option<String>,
    /// `completed`, `failed` or `canceled`.
    pub status: String,
    /// Seconds from its start to its end (its span).
    pub duration_s: f64,
    /// Seconds from the session's start to its start.
    pub start_offset_s: f64,
    /// Why it failed.
    pub error_type: Option<String>,
}

/// Tasks.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tasks {
    /// Tasks with a span (every task the session saw end, or close at its end).
    pub total: u64,
    /// By final state (`completed`, `failed`, `canceled`).
    pub by_state: BTreeMap<String, u64>,
    /// Failed tasks by error type.
    pub error_types: BTreeMap<String, u64>,
    /// Still running when the session ended (closed by it).
    pub open_at_end: u64,
    /// Without a TaskStarted (lifecycle incomplete).
    pub incomplete: u64,
    /// Terminal events' durations, s.
    pub duration_s: Option<Quantiles>,
    /// Completed tasks per second of session.
    pub completed_per_s: Option<f64>,
    /// Most tasks running at once (spans).
    pub peak_running: u64,
    /// The slowest, longest first.
    pub slowest: Vec<TaskRow>,
    /// The failed ones, earliest first (at most [`LISTED`]).
    pub failed: Vec<TaskRow>,
    /// Task ids used again after their task ended (the first [`LISTED`],
    /// in the order of their second run): the later runs are in the file
    /// as events, but not in the spans, counts and figures.
    pub reused: Vec<ReusedTask>,
    /// How many task ids were reused.
    pub reused_ids: u64,
}

/// One GPU's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuStats {
    /// Its id.
    pub gpu_id: u64,
    /// Utilisation %.
    pub utilization_percent: Option<Quantiles>,
    /// Memory used, bytes.
    pub memory_used_bytes: Option<Quantiles>,
    /// Power, W.
    pub power_watts: Option<Quantiles>,
    /// Mean, idle share, peak memory, energy.
    #[serde(flatten)]
    pub usage: GpuUse,
}

/// One node's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStats {
    /// Its id.
    pub node_id: String,
    /// Samples (per-node ResourceUpdates).
    pub samples: u64,
    /// CPU %.
    pub cpu_percent: Option<Quantiles>,
    /// Memory %.
    pub memory_percent: Option<Quantiles>,
    /// Its GPUs.
    pub gpus: Vec<GpuStats>,
    /// How well it used what it had (see [`usage`]).
    #[serde(flatten)]
    pub usage: Usage,
}

/// What the whole session came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The session's id.
    pub session_id: String,
    /// Its start, s since the epoch.
    pub start_time_s: Option<f64>,
    /// Its end, s since the epoch.
    pub end_time_s: Option<f64>,
    /// Its length, s.
    pub duration_s: Option<f64>,
    /// Events by type.
    pub events: BTreeMap<String, u64>,
    /// Tasks.
    pub tasks: Tasks,
    /// Each node's resources.
    pub nodes: Vec<NodeStats>,
    /// The whole job's use of what it had (see [`usage`]).
    pub job: Option<JobUsage>,
    /// Tasks ranked by what they used (see [`ranking`]).
    pub rankings: Rankings,
    /// Plain notes drawn from the figures (see [`notes`]).
    pub notes: Vec<String>,
    /// The agent's own cost (tal's metric line), by its metric names.
    pub agent: Option<BTreeMap<String, Value>>,
    /// What reading each log found (tal's metric line).
    pub logs: Vec<Value>,
    /// What reading the JSONL met (overlong lines, `NaN` tokens); from
    /// node logs, the lines their JSONL would have.
    pub read: crate::convert::lines::LineStats,
}

/// Reads a session's items one by one into its [`Summary`] (what
/// [`from_source`] does, for a caller that reads the items itself). Each
/// node's own samples may be taken apart ([`NodeApart`]).
#[derive(Debug, Default)]
pub struct Reader {
    s: Summary,
    durations: Vec<f64>,
    /// Every task id seen: its node, and where its lifecycle is.
    tasks: HashMap<String, Seen>,
    rankings: Rankings,
    nodes: NodeIndex,
    /// By node number: only nodes with samples have series.
    node_series: BTreeMap<u32, NodeSeries>,
    /// Every span's (start, end) ns, for the peak.
    intervals: Vec<(i64, i64)>,
    /// The reused task ids listed, in the order of their second run.
    reused: Vec<String>,
    /// Rows kept: the slowest, and the earliest failures.
    rows: Vec<(TaskRow, i64)>,
    failed: Vec<(TaskRow, i64)>,
    session_span: Option<(i64, i64)>,
    first_ns: Option<i64>,
    last_ns: Option<i64>,
    metric: Option<Value>,
}

/// What is known of one task id.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Its node's number, or [`NO_NODE`].
    node: u32,
    /// Its first terminal event was read.
    ended: bool,
    /// A later run of it is open (started again after it ended).
    rerun: bool,
    /// Runs after the first.
    later_runs: u64,
}

/// No node.
const NO_NODE: u32 = u32::MAX;

#[derive(Debug)]
struct NodeSeries {
    own: NodeApart,
    gpus: BTreeMap<u64, ([Series; 3], GpuAcc)>,
}

impl NodeSeries {
    fn new() -> Self {
        Self {
            own: NodeApart::default(),
            gpus: BTreeMap::new(),
        }
    }
}

/// What the summary keeps of one node's own samples (`per_node`), which
/// it may take on a thread of their own (see [`crate::items::apart`] and
/// [`Reader::take_apart`]).
#[derive(Debug)]
pub struct NodeApart {
    samples: u64,
    /// The first and last of its samples' times, ns.
    span_ns: Option<(i64, i64)>,
    cpu: Series,
    mem: Series,
    usage: NodeAcc,
}

impl Default for NodeApart {
    fn default() -> Self {
        Self {
            samples: 0,
            span_ns: None,
            cpu: Series::new(100_000.0, 10.0),
            mem: Series::new(100.0, 10.0),
            usage: NodeAcc::default(),
        }
    }
}

impl crate::items::NodeView for NodeApart {
    fn sample(&mut self, _seq: crate::items::Place, head: &Head<'_>, v: &NodeSample<'_>) {
        self.samples += 1;
        if let Some(t) = head.time_ns() {
            let (a, b) = self.span_ns.get_or_insert((t, t));
            (*a, *b) = ((*a).min(t), (*b).max(t));
        }
        self.usage.sample(v, head.time_s);
        if let Some(x) = v.cpu_percent {
            self.cpu.add(x);
        }
        if let Some(x) = v.memory_percent {
            self.mem.add(x);
        }
    }
}

impl NodeApart {
    /// The first and last of its samples' times, ns.
    pub fn span_ns(&self) -> Option<(i64, i64)> {
        self.span_ns
    }
}

impl Reader {
    /// Each node's own samples, taken apart (see [`NodeApart`]), which
    /// this reader saw as [`Body::Apart`]: every one of the node's where
    /// `taken` merged them into the stream, else only its first (and the
    /// others are counted here).
    pub fn take_apart(
        &mut self,
        nodes: impl IntoIterator<Item = (String, NodeApart)>,
        taken: &crate::items::apart::Taken,
    ) {
        let unseen = matches!(taken, crate::items::apart::Taken::Apart(_));
        for (node, own) in nodes {
            if unseen {
                if let Some(n) = self.s.events.get_mut("ResourceUpdate") {
                    *n += own.samples.saturating_sub(1);
                }
                if let Some((a, b)) = own.span_ns {
                    self.first_ns = Some(self.first_ns.map_or(a, |f| f.min(a)));
                    self.last_ns = Some(self.last_ns.map_or(b, |l| l.max(b)));
                }
            }
            self.node_series(&node).own = own;
        }
    }

    /// The series of node `id`, made at its first sample.
    fn node_series(&mut self, id: &str) -> &mut NodeSeries {
        let i = self.nodes.add(id);
        self.node_series.entry(i).or_insert_with(NodeSeries::new)
    }

    /// Takes one item of the session (see [`crate::items`]).
    pub fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::Event(head, body) => self.event(head, body),
            Item::TaskSpan(span) => self.span(span),
            Item::SessionSpan { start_ns, end_ns } => {
                self.session_span = Some((*start_ns, *end_ns));
            }
            Item::Metric(m) => self.metric = Some(Value::Object((*m).clone())),
        }
    }

    fn event(&mut self, head: &Head<'_>, body: &Body<'_>) {
        let ty = head.event_type.unwrap_or("?");
        match self.s.events.get_mut(ty) {
            Some(n) => *n += 1,
            None => {
                self.s.events.insert(ty.to_string(), 1);
            }
        }
        if self.s.session_id.is_empty() {
            if let Some(id) = head.session_id {
                self.s.session_id = id.to_string();
            }
        }
        if let Some(t) = head.time_ns() {
            self.first_ns = Some(self.first_ns.map_or(t, |f| f.min(t)));
            self.last_ns = Some(self.last_ns.map_or(t, |l| l.max(t)));
        }
        let node = head.node_id.filter(|n| !n.is_empty());
        if let Some(n) = node {
            match body {
                Body::Node(s) => {
                    crate::items::NodeView::sample(&mut self.node_series(n).own, 0, head, s);
                }
                Body::Apart => {
                    // Its figures are the node's own (see `take_apart`).
                    self.node_series(n);
                }
                Body::Gpu(g) => gpu_sample(self.node_series(n), g),
                _ => {}
            }
        }
        let fields = match body {
            Body::Other(f) => Some(f),
            _ => None,
        };
        match head.task_id {
            Some(task) => self.task_event(ty, task, node, fields),
            None if terminal_status(ty).is_some() => {
                if let Some(d) = fields.and_then(|f| f.num("duration_seconds")) {
                    self.durations.push(d);
                }
            }
            None => {}
        }
    }

    /// An event of task `task`: its node, its lifecycle (a run under an id
    /// whose task had ended is a reuse, not counted), and at its first
    /// terminal event its duration and figures.
    fn task_event(&mut self, ty: &str, task: &str, node: Option<&str>, v: Option<&Fields<'_>>) {
        let node_no = node.map(|n| self.nodes.add(n));
        let seen = match self.tasks.get_mut(task) {
            Some(s) => s,
            None => self.tasks.entry(task.to_string()).or_insert(Seen {
                node: NO_NODE,
                ended: false,
                rerun: false,
                later_runs: 0,
            }),
        };
        if let (NO_NODE, Some(i)) = (seen.node, node_no) {
            seen.node = i;
        }
        if matches!(
            ty,
            "TaskCreated" | "TaskSubmitted" | "TaskQueued" | "TaskStarted"
        ) {
            if seen.ended && !seen.rerun {
                seen.rerun = true;
                seen.later_runs += 1;
                if seen.later_runs == 1 {
                    self.s.tasks.reused_ids += 1;
                    if self.reused.len() < LISTED {
                        self.reused.push(task.to_string());
                    }
                }
            }
        } else if let Some(status) = terminal_status(ty) {
            if seen.rerun {
                // The end of a later run.
                seen.rerun = false;
            } else if !seen.ended {
                seen.ended = true;
                if let Some(d) = v.and_then(|f| f.num("duration_seconds")) {
                    self.durations.push(d);
                }
                let node_id =
                    (seen.node != NO_NODE).then(|| self.nodes.names[seen.node as usize].clone());
                let attributes = v.map(|f| f.attributes());
                let a = attributes.as_deref().unwrap_or(&Value::Null);
                self.rankings.add(&TaskUse::of(a, task, status, node_id));
            }
        }
    }

    fn span(&mut self, span: &Span<'_>) {
        let (start, end) = (span.start_ns, span.end_ns);
        let a: &Value = &span.attributes;
        let t = &mut self.s.tasks;
        t.total += 1;
        let status = a["status"].as_str().unwrap_or("unknown").to_string();
        *t.by_state.entry(status.clone()).or_default() += 1;
        let error_type = a["error_type"].as_str().map(String::from);
        if status == "failed" {
            *t.error_types
                .entry(error_type.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
        if a["closed_at_session_end"] == true {
            t.open_at_end += 1;
        }
        if a["incomplete_lifecycle"] == true {
            t.incomplete += 1;
        }
        self.intervals.push((start, end.max(start)));
        let task_id = a["task_id"].as_str().unwrap_or("").to_string();
        // Its node once every event is read (see `finish_tasks`).
        let row = TaskRow {
            task_id,
            node_id: None,
            status,
            duration_s: end.saturating_sub(start).max(0) as f64 / 1e9,
            start_offset_s: 0.0,
            error_type,
        };
        if row.status == "failed" {
            keep(&mut self.failed, (row.clone(), start), |r| r.1);
        }
        keep(&mut self.rows, (row, start), |r| {
            -(r.0.duration_s * 1e9) as i64
        });
    }

    /// The node task `task_id`'s events named, if any did.
    fn node_of(&self, task_id: &str) -> Option<String> {
        node_of(&self.tasks, &self.nodes, task_id)
    }

    /// The summary of every line taken.
    pub fn finish(mut self) -> Summary {
        let start = self.session_span.map(|s| s.0).or(self.first_ns);
        let end = self.session_span.map(|s| s.1).or(self.last_ns);
        let s = &mut self.s;
        s.start_time_s = start.map(crate::clock::ns_to_secs);
        s.end_time_s = end.map(crate::clock::ns_to_secs);
        s.duration_s = start
            .zip(end)
            .map(|(a, b)| b.saturating_sub(a).max(0) as f64 / 1e9);
        self.finish_tasks(start);
        self.finish_nodes();
        self.finish_metric();
        self.finish_notes();
        self.s
    }

    /// The tasks' figures, rows and rankings, `start` being the session's.
    fn finish_tasks(&mut self, start: Option<i64>) {
        let duration_s = self.s.duration_s;
        let t = &mut self.s.tasks;
        t.duration_s = Quantiles::exact(&mut self.durations);
        let completed = t.by_state.get("completed").copied().unwrap_or(0);
        t.completed_per_s = duration_s
            .filter(|d| *d > 0.0)
            .map(|d| completed as f64 / d);
        t.peak_running = peak(&mut self.intervals);
        // A span may come before its task's last events (see
        // `crate::items`): its node is the one all of them name.
        let (tasks, nodes) = (&self.tasks, &self.nodes);
        let offset = |(mut r, st): (TaskRow, i64)| {
            r.start_offset_s = start.map_or(0.0, |s0| st.saturating_sub(s0) as f64 / 1e9);
            r.node_id = node_of(tasks, nodes, &r.task_id);
            r
        };
        t.slowest = std::mem::take(&mut self.rows)
            .into_iter()
            .map(offset)
            .collect();
        t.failed = std::mem::take(&mut self.failed)
            .into_iter()
            .map(offset)
            .collect();
        let reused = std::mem::take(&mut self.reused)
            .into_iter()
            .map(|task_id| ReusedTask {
                node_id: self.node_of(&task_id),
                later_runs: self.tasks.get(&task_id).map_or(0, |s| s.later_runs),
                task_id,
            })
            .collect();
        self.s.tasks.reused = reused;
        self.tasks = HashMap::new();
        let mut r = std::mem::take(&mut self.rankings);
        r.finish();
        self.s.rankings = r;
    }

    /// Each node's series and use, and the job's.
    fn finish_nodes(&mut self) {
        let totals = node_bytes(self.metric.as_ref(), crate::record::NODE_MEMORY_TOTAL_BYTES);
        let limits = node_bytes(self.metric.as_ref(), crate::record::JOB_MEMORY_LIMIT_BYTES);
        let names = &self.nodes.names;
        let series = std::mem::take(&mut self.node_series);
        let mut gpu_accs: Vec<GpuAcc> = Vec::new();
        self.s.nodes = series
            .into_iter()
            .map(|(i, n)| {
                let node_id = names[i as usize].clone();
                let mut usage = n.own.usage.usage(totals.get(&node_id).copied());
                usage::set_job_memory_limit(&mut usage, limits.get(&node_id).copied());
                NodeStats {
                    node_id,
                    samples: n.own.samples,
                    cpu_percent: n.own.cpu.quantiles(),
                    memory_percent: n.own.mem.quantiles(),
                    gpus: n
                        .gpus
                        .into_iter()
                        .map(|(gpu_id, ([u, m, p], acc))| {
                            let usage = acc.usage();
                            gpu_accs.push(acc);
                            GpuStats {
                                gpu_id,
                                utilization_percent: u.quantiles(),
                                memory_used_bytes: m.quantiles(),
                                power_watts: p.quantiles(),
                                usage,
                            }
                        })
                        .collect(),
                    usage,
                }
            })
            .filter(|n| n.samples > 0 || !n.gpus.is_empty())
            .collect();
        if !self.s.nodes.is_empty() {
            let usages: Vec<&Usage> = self.s.nodes.iter().map(|n| &n.usage).collect();
            self.s.job = Some(JobUsage {
                nodes: self.s.nodes.len() as u64,
                usage: usage::job(&usages),
                gpus: GpuAcc::job(&gpu_accs.iter().collect::<Vec<_>>()),
            });
        }
    }

    /// The agent's cost and the logs, from tal's metric line.
    fn finish_metric(&mut self) {
        let s = &mut self.s;
        if let Some(Value::Object(m)) = self.metric.take() {
            let agent: BTreeMap<String, Value> = m
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("agent_")
                        || k.starts_with("ingest_")
                        || k.starts_with("subscriber_")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            s.agent = (!agent.is_empty()).then_some(agent);
            if let Some(Value::Array(logs)) = m.get("tal_logs") {
                s.logs = logs.clone();
            }
        }
    }

    /// The notes (see [`notes`]).
    fn finish_notes(&mut self) {
        let s = &self.s;
        let failed = s.tasks.by_state.get("failed").copied().unwrap_or(0);
        let facts = notes::TaskFacts {
            total: s.tasks.total,
            error_types: &s.tasks.error_types,
            failed,
            open_at_end: s.tasks.open_at_end,
            reused: &s.tasks.reused,
            reused_ids: s.tasks.reused_ids,
        };
        let nodes: Vec<notes::NodeFacts<'_>> = s
            .nodes
            .iter()
            .map(|n| notes::NodeFacts {
                node_id: &n.node_id,
                usage: &n.usage,
                gpus: n.gpus.iter().map(|g| (g.gpu_id, &g.usage)).collect(),
            })
            .collect();
        self.s.notes = notes::notes(&facts, &nodes);
    }
}

/// The node task `task_id`'s events named, if any did.
fn node_of(tasks: &HashMap<String, Seen>, nodes: &NodeIndex, task_id: &str) -> Option<String> {
    tasks
        .get(task_id)
        .filter(|s| s.node != NO_NODE)
        .map(|s| nodes.names[s.node as usize].clone())
}

/// The state a terminal event type ends its task in.
fn terminal_status(ty: &str) -> Option<&'static str> {
    match ty {
        "TaskCompleted" => Some("completed"),
        "TaskFailed" => Some("failed"),
        "TaskCanceled" => Some("canceled"),
        _ => None,
    }
}

/// Each node's figure in bytes of attribute `key` of its `tal_logs` entry
/// on tal's metric line, where it has one: the node's memory
/// (`node.memory_total_bytes`) and its job cgroup's memory limit
/// (`job.memory_limit_bytes`), which the recorder puts in the log header.
fn node_bytes(metric: Option<&Value>, key: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let logs = metric.and_then(|m| m["tal_logs"].as_array());
    for l in logs.into_iter().flatten() {
        let total = &l["attributes"][key];
        let bytes = total
            .as_str()
            .and_then(|t| t.parse::<u64>().ok())
            .map(|b| b as f64)
            .or_else(|| total.as_f64())
            .filter(|b| b.is_finite() && *b > 0.0);
        if let (Some(node), Some(b)) = (l["node_id"].as_str(), bytes) {
            out.insert(node.to_string(), b);
        }
    }
    out
}

/// Keeps the [`LISTED`] rows of least `key`, in that order.
fn keep<T>(rows: &mut Vec<T>, row: T, key: impl Fn(&T) -> i64) {
    let k = key(&row);
    let at = rows.partition_point(|r| key(r) <= k);
    if at < LISTED {
        rows.insert(at, row);
        rows.truncate(LISTED);
    }
}

/// The most intervals open at one time (an interval's end frees its place
/// before another starts at that same time).
fn peak(iv: &mut [(i64, i64)]) -> u64 {
    let mut edges: Vec<(i64, i8)> = Vec::with_capacity(iv.len() * 2);
    for &(s, e) in iv.iter() {
        edges.push((s, 1));
        edges.push((e, -1));
    }
    edges.sort_unstable();
    let (mut now, mut max) = (0i64, 0i64);
    for (_, d) in edges {
        now += i64::from(d);
        max = max.max(now);
    }
    max as u64
}

/// One of a node's GPUs' sample.
fn gpu_sample(n: &mut NodeSeries, v: &GpuSample) {
    let ([u, m, p], acc) = n.gpus.entry(v.gpu_id).or_insert_with(|| {
        (
            [
                Series::new(100.0, 10.0),
                Series::new(1e15, 1.0),
                Series::new(100_000.0, 10.0),
            ],
            GpuAcc::default(),
        )
    });
    acc.sample(v);
    for (series, x) in [
        (u, v.gpu_percent),
        (m, v.gpu_memory_used_bytes),
        (p, v.gpu_power_watts),
    ] {
        if let Some(x) = x {
            series.add(x);
        }
    }
}

/// Reads a session's JSONL into its summary. A line that is not JSON is an
/// error naming it (see [`crate::convert::lines`] for what is skipped).
pub fn from_jsonl(input: impl BufRead) -> io::Result<Summary> {
    let mut r = Reader::default();
    let read = crate::convert::each_jsonl_line(input, |v| {
        crate::items::jsonl::line(&v, &mut |i| r.item(&i));
        Ok(())
    })?;
    let mut s = r.finish();
    s.read = read;
    Ok(s)
}

/// Reads a session's items (see [`crate::items`]) into its summary, the
/// nodes' own samples on the machine's other cores (straight from a
/// dataset's parts where their places are those of the merged stream:
/// else read again, merged; see [`crate::items::apart::Taken`]).
pub fn from_source(src: &mut dyn crate::items::Source) -> io::Result<Summary> {
    use crate::items::apart::{each_apart, each_nodes_apart, Taken};
    let mut r = Reader::default();
    let (mut taken, mut apart) =
        each_nodes_apart(src, |_| NodeApart::default(), &mut |i| r.item(&i))?;
    if !taken.placed() {
        r = Reader::default();
        let (read, own) = each_apart(src, |_| NodeApart::default(), &mut |i| r.item(&i))?;
        (taken, apart) = (Taken::Merged(read), own);
    }
    r.take_apart(apart, &taken);
    let mut s = r.finish();
    s.read = taken.read();
    Ok(s)
}

fn utc(t: f64) -> String {
    let secs = t.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A string from the checkpoint, for a terminal (see the module doc).
fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    crate::term::escape_for_terminal(s, SHOWN_CHARS)
}

/// The most common names of a count by name ([`top_counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopCounts<'a> {
    /// The names listed and their counts, largest first (ties by name).
    pub top: Vec<(&'a str, u64)>,
    /// How many names are not listed, and the sum of their counts.
    pub more: Option<(u64, u64)>,
}

/// The `n` largest counts of `m` (see [`TopCounts`]).
pub fn top_counts(m: &BTreeMap<String, u64>, n: usize) -> TopCounts<'_> {
    let mut top: Vec<(&str, u64)> = m.iter().map(|(k, c)| (k.as_str(), *c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let rest = top.split_off(n.min(top.len()));
    let more = (!rest.is_empty()).then(|| (rest.len() as u64, rest.iter().map(|r| r.1).sum()));
    TopCounts { top, more }
}

/// `name count, …` of the [`TYPES_LISTED`] most common, and how many more.
fn counts(m: &BTreeMap<String, u64>) -> String {
    let TopCounts { top, more } = top_counts(m, TYPES_LISTED);
    let mut parts: Vec<String> = top
        .iter()
        .map(|(k, n)| format!("{} {n}", shown(k)))
        .collect();
    if let Some((names, sum)) = more {
        parts.push(format!("and {names} more types ({sum} in all)"));
    }
    parts.join(", ")
}

fn pct(q: &Option<Quantiles>) -> String {
    match q {
        Some(q) => format!("{:5.1} {:5.1} {:5.1}", q.p50, q.p99, q.max),
        None => format!("{:>5} {:>5} {:>5}", "-", "-", "-"),
    }
}

/// The summary as text for a terminal.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "session {}", shown(&s.session_id));
    if let (Some(a), Some(d)) = (s.start_time_s, s.duration_s) {
        let _ = writeln!(o, "  started {}, ran {}", utc(a), secs(d));
    }
    let _ = writeln!(
        o,
        "  {} node(s); {} events: {}",
        s.nodes.len(),
        s.events.values().sum::<u64>(),
        counts(&s.events)
    );
    let _ = writeln!(o, "  ({})", units::BYTES_LEGEND);
    render_notes(&mut o, &s.notes);
    render_tasks(&mut o, &s.tasks);
    let ranked = ranking::By::ALL
        .iter()
        .any(|by| !s.rankings.get(*by).top.is_empty());
    if s.tasks.total > 0 || ranked {
        ranking::render(&mut o, &s.rankings, |x| shown(x).into_owned());
    }
    render_nodes(&mut o, &s.nodes);
    render_usage(&mut o, s);
    render_cost_and_logs(&mut o, s);
    o
}

/// The notes, for [`render`] (each as long as two strings of the file).
fn render_notes(o: &mut String, notes: &[String]) {
    use std::fmt::Write;
    if notes.is_empty() {
        return;
    }
    let _ = writeln!(o, "\nnotes:");
    for n in notes {
        let _ = writeln!(
            o,
            "  - {}",
            crate::term::escape_for_terminal(n, 2 * SHOWN_CHARS)
        );
    }
}

/// The job's and each node's use of what they had, for [`render`].
fn render_usage(o: &mut String, s: &Summary) {
    use std::fmt::Write;
    let Some(job) = &s.job else { return };
    let _ = writeln!(o, "\nusage:");
    if s.nodes.len() > 1 {
        let _ = writeln!(
            o,
            "  job ({} nodes; its peak rates are the highest node's):",
            job.nodes
        );
        usage::render(o, &job.usage, "    ", true);
        if let Some(g) = &job.gpus {
            let _ = writeln!(o, "    GPUs ({}) {}", g.gpus, usage::job_gpu_line(g));
        }
    }
    for n in s.nodes.iter().take(USAGE_NODES) {
        let _ = writeln!(o, "  node {}:", shown(&n.node_id));
        usage::render(o, &n.usage, "    ", false);
        for g in &n.gpus {
            let _ = writeln!(o, "    gpu {:<6} {}", g.gpu_id, usage::gpu_line(&g.usage));
        }
    }
    if s.nodes.len() > USAGE_NODES {
        let _ = writeln!(
            o,
            "  and {} more nodes (every node in --json)",
            s.nodes.len() - USAGE_NODES
        );
    }
}

/// The tasks' part of [`render`].
fn render_tasks(o: &mut String, t: &Tasks) {
    use std::fmt::Write;
    let _ = writeln!(o, "\ntasks: {}", t.total);
    if t.total > 0 {
        let states: Vec<_> = t
            .by_state
            .iter()
            .map(|(k, n)| format!("{} {n}", shown(k)))
            .collect();
        let _ = writeln!(o, "  {}", states.join(", "));
        if t.open_at_end + t.incomplete > 0 {
            let _ = writeln!(
                o,
                "  {} still running at the session's end, {} without TaskStarted",
                t.open_at_end, t.incomplete
            );
        }
        if !t.error_types.is_empty() {
            let _ = writeln!(o, "  failures by type: {}", counts(&t.error_types));
        }
        if let Some(d) = &t.duration_s {
            let _ = writeln!(
                o,
                "  duration: p50 {}  p90 {}  p99 {}  max {}  mean {}",
                secs(d.p50),
                secs(d.p90),
                secs(d.p99),
                secs(d.max),
                secs(d.mean)
            );
        }
        let _ = writeln!(
            o,
            "  throughput: {} completed/s; at most {} running at once",
            t.completed_per_s.map_or("-".into(), |r| format!("{r:.2}")),
            t.peak_running
        );
        for (title, rows) in [("slowest", &t.slowest), ("failed", &t.failed)] {
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(o, "\n{title} tasks:");
            let _ = writeln!(
                o,
                "  {:<28} {:<12} {:<10} {:>10} {:>10}  error",
                "task", "node", "status", "duration", "at"
            );
            for r in rows {
                let _ = writeln!(
                    o,
                    "  {:<28} {:<12} {:<10} {:>10} {:>10}  {}",
                    shown(&r.task_id),
                    shown(r.node_id.as_deref().unwrap_or("-")),
                    shown(&r.status),
                    secs(r.duration_s),
                    secs(r.start_offset_s),
                    shown(r.error_type.as_deref().unwrap_or(""))
                );
            }
        }
    }
}

/// The nodes' part of [`render`].
fn render_nodes(o: &mut String, nodes: &[NodeStats]) {
    use std::fmt::Write;
    if !nodes.is_empty() {
        let _ = writeln!(o, "\nnodes (p50 p99 max):");
        let _ = writeln!(
            o,
            "  {:<16} {:>7}  {:<17}  {:<17}",
            "node", "samples", "cpu %", "memory %"
        );
        for n in nodes {
            let _ = writeln!(
                o,
                "  {:<16} {:>7}  {}  {}",
                shown(&n.node_id),
                n.samples,
                pct(&n.cpu_percent),
                pct(&n.memory_percent)
            );
            for g in &n.gpus {
                let mem = g.memory_used_bytes.map_or("-".into(), |m| {
                    format!("{} / {}", bytes(m.p50), bytes(m.max))
                });
                let power = g
                    .power_watts
                    .map_or("-".into(), |p| format!("{:.0} / {:.0} W", p.p50, p.max));
                let _ = writeln!(
                    o,
                    "    gpu {}: util % {}; memory p50/max {}; power p50/max {}",
                    g.gpu_id,
                    pct(&g.utilization_percent),
                    mem,
                    power
                );
            }
        }
    }
}

/// tal's own cost and the logs, for [`render`].
fn render_cost_and_logs(o: &mut String, s: &Summary) {
    use std::fmt::Write;
    match &s.agent {
        Some(a) => {
            let n = |k: &str| a.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            let _ = writeln!(
                o,
                "\ntal's own cost: {:.3} s of CPU, {:.1} µs per sample, peak RSS {}; {} samples, {} dropped, {} deadlines missed, {} read errors; {} client events, {} lines refused, {} dropped",
                n("agent_cpu_seconds"),
                n("agent_cpu_us_per_sample"),
                bytes(n("agent_peak_rss_bytes")),
                n("agent_samples_taken"),
                n("agent_samples_dropped"),
                n("agent_deadlines_missed"),
                n("agent_read_errors"),
                n("ingest_events_accepted"),
                n("ingest_lines_rejected"),
                n("ingest_events_dropped") + n("agent_records_dropped"),
            );
        }
        None => {
            let _ = writeln!(o, "\ntal's own cost: not in this file (not written by tal)");
        }
    }
    if !s.logs.is_empty() {
        let _ = writeln!(o, "\nlogs:");
        for l in &s.logs {
            let clean = l["clean_end"] == true;
            let corrupt = l["corrupt_frames"].as_u64().unwrap_or(0);
            let state = match (clean, l["truncated"] == true, corrupt) {
                (true, _, 0) => "complete".to_string(),
                (true, _, c) => format!("complete, {c} damaged frame(s) skipped"),
                (false, true, c) => {
                    format!("CUT OFF (recovered up to its last whole record), {c} damaged frame(s)")
                }
                (false, false, c) => {
                    format!("no end marker (the agent did not finish), {c} damaged frame(s)")
                }
            };
            let _ = writeln!(
                o,
                "  {:<16} {} records: {}  ({})",
                shown(l["node_id"].as_str().unwrap_or("?")),
                shown(&l["records"].to_string()),
                state,
                shown(l["path"].as_str().unwrap_or(""))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = Quantiles::exact(&mut v).unwrap();
        assert_eq!((q.p50, q.p90, q.p99, q.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(q.mean, 50.5);
        assert!(Quantiles::exact(&mut []).is_none());
    }

    #[test]
    fn peak_counts_overlaps_and_frees_at_ends() {
        assert_eq!(peak(&mut [(0, 10), (5, 15), (10, 20), (12, 13)]), 3);
        assert_eq!(peak(&mut [(0, 1), (1, 2)]), 1);
        assert_eq!(peak(&mut []), 0);
    }

    #[test]
    fn keep_holds_the_least_keys_in_order() {
        let mut rows = Vec::new();
        for k in [5i64, 3, 9, 1, 7, 2, 8, 6, 4, 0, 11, 10] {
            keep(&mut rows, k, |r| *r);
        }
        assert_eq!(rows, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_mean_of_huge_values_does_not_overflow() {
        let q = Quantiles::exact(&mut [f64::MAX, f64::MAX]).unwrap();
        assert_eq!(q.mean, f64::MAX);
    }

    #[test]
    fn a_series_keeps_few_values_then_a_histogram() {
        let mut s = Series::new(100.0, 10.0);
        assert!(s.quantiles().is_none());
        for v in 1..=FEW {
            s.add(v as f64 / 10.0);
        }
        s.add(f64::NAN);
        assert!(s.h.is_none() && s.few.len() == FEW);
        let few = s.quantiles().unwrap();
        s.add(0.05);
        assert!(s.h.is_some() && s.few.is_empty());
        let all = s.quantiles().unwrap();
        assert_eq!((few.count, all.count), (FEW as u64, FEW as u64 + 1));
        assert!((few.p50 - all.p50).abs() <= 0.1, "{few:?} {all:?}");
        assert_eq!(all.max, few.max);
    }

    #[test]
    fn top_counts_lists_the_most_common_and_sums_the_rest() {
        let m: BTreeMap<String, u64> = [("a", 1), ("b", 5), ("c", 5), ("d", 2)]
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        let TopCounts { top, more } = top_counts(&m, 2);
        assert_eq!(top, [("b", 5), ("c", 5)]);
        assert_eq!(more, Some((2, 3)));
        assert_eq!(top_counts(&m, 10).more, None);
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_574_441.9), "2026-11-25 02:40:41 UTC");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
    }
}
