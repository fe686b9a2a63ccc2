//! `tal report`: a session (its node logs, or its JSONL, tal's or
//! RHAPSODY's: see [`crate::items`]) as one
//! self-contained HTML file that opens offline in any browser.
//!
//! The charts are drawn by uPlot (MIT; `vendor/uplot/`, embedded in the
//! binary and in every report: nothing is fetched), with the page's own
//! script (`report.js`) laying out the panels: a header of key facts
//! (wall time, nodes, tasks by state, the peaks of node CPU, memory and
//! GPU, GPU energy, tal's own cost; failed tasks and reused task ids
//! named and linked to their rows; see [`facts`]), the tasks that used the
//! most CPU time, memory, I/O and GPU memory, a task timeline (one lane
//! per node and slot, 16 px tall, coloured by final state, names on the
//! bars that fit them, every task at least 2 px wide; past 40 lanes the
//! lane area scrolls), running tasks, completed tasks and throughput per
//! second, minute or hour by the session's length, each node's CPU,
//! memory, disk and network (byte counts as rates per second over each
//! sample's window; past [`NODE_LINES`] nodes, the nodes combined, see
//! [`across`]), per-core CPU as a heatmap (a labelled row per core, or per
//! group past [`HEAT_ROWS`] cores), each GPU's utilisation, memory and
//! power, a task-duration histogram and CDF with p50/p90/p99, the
//! resource series of the tasks with the highest peaks (CPU and resident
//! memory, from `tal.TaskResourceUpdate`, or a task's end-of-task figures
//! when it ended before its first sample; see [`TASK_SERIES`]), event
//! counts, a sortable task table with failures first, and `tal summary`'s
//! figures (tal's own cost, and what reading each log found). Every time
//! chart shares one time axis (seconds from the session's start), with
//! the custom events (an application's own event types) as dashed marks:
//! selecting a range zooms all of them, and a double click zooms back out.
//! Every series of a chart has its own colour, with a legend; byte axes
//! step 1-2-5 in B/KB/MB/GB (per second), as wide as their widest label.
//! A null figure (a window too short to measure) is a gap in its line.
//!
//! Scale: every task is kept (a slot-assigned interval and its figures);
//! series are down-sampled per pixel column, to at most [`COLUMNS`]
//! columns over the session, keeping each column's minimum and maximum so
//! that spikes survive; the per-core heatmap keeps each column's mean.
//! The session is read twice (a JSONL parsed again, node logs replayed
//! again): once for the session's bounds and `tal summary`'s figures,
//! once for the series and the tasks; in both, each node's own samples
//! are taken on the machine's other cores ([`crate::items::apart`]).
//! This file is the passes and the page's assembly; the nodes' series and
//! heatmaps are in `series`, the header's facts in `facts`, the
//! combined-nodes series in `across`, and the drawing in `report.js`.
//!
//! Bounds, whatever the file: memory grows with the lines read, not with
//! the names in them (a node named only by tasks costs its name; a series
//! keeps only the columns it has samples in). The page keeps to a size a
//! browser opens: the heatmaps share [`HEAT_CELLS`] cells (past that,
//! cores are averaged in groups, and nodes past the budget are left out),
//! and the event table lists the [`EVENT_TYPES`] most common types; the
//! page says what was cut.
//!
//! The data is embedded as JSON in a `<script type="application/json">`
//! element, with `<`, `>` and `&` written as `\u003c`, `\u003e` and
//! `\u0026` (which JSON reads the same): no string, whoever chose it, can
//! end the element or put the HTML parser into a script state
//! (`<!--<script>` would make the element swallow the page's scripts).

mod across;
mod facts;
mod series;

use crate::convert::chrome::assign_slots;
use crate::convert::NodeIndex;
use crate::items::apart::{each_apart, each_nodes_apart, Taken};
use crate::items::{
    Body, Fields, GpuSample, Head, Item, NodeSample, NodeView, Place, Source, Span, TaskSample,
};
use serde::Serialize;
use serde_json::Value;
use series::{Compact, Cores, Cut, Grid, HeatPlan, NodeDraw, Series};
pub use series::{COLUMNS, HEAT_CELLS, HEAT_COLUMNS, HEAT_MIN_COLUMNS, HEAT_ROWS};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

/// Event types the page's table lists, at most: the most common, then a
/// row for the rest.
pub const EVENT_TYPES: usize = 100;

const UPLOT_JS: &str = include_str!("../../vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../vendor/uplot/uPlot.min.css");
const REPORT_JS: &str = include_str!("report.js");
const REPORT_CSS: &str = include_str!("report.css");

/// What a report holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportStats {
    /// Tasks drawn.
    pub tasks: usize,
    /// Series points kept, over all series.
    pub points: usize,
    /// Samples read, over all series.
    pub samples: usize,
    /// Bytes written.
    pub bytes: u64,
    /// What reading the JSONL met (see [`crate::convert::lines`]).
    pub read: crate::convert::lines::LineStats,
}

/// The tasks, column-wise.
#[derive(Debug, Default, Serialize)]
struct Tasks {
    id: Vec<String>,
    node: Vec<u32>,
    slot: Vec<u32>,
    start: Vec<f64>,
    end: Vec<f64>,
    /// 0 completed, 1 failed, 2 canceled.
    state: Vec<u8>,
    /// Index into `types`.
    r#type: Vec<u32>,
    types: Vec<String>,
    error: Vec<Option<String>>,
    cpu_s: Vec<Option<f64>>,
    rss: Vec<Option<f64>>,
    read: Vec<Option<f64>>,
    write: Vec<Option<f64>>,
    gpu_mem: Vec<Option<f64>>,
    /// From the task's resource samples: peak CPU (% of one CPU) and peak
    /// resident memory.
    cpu_peak: Vec<Option<f64>>,
    rss_peak: Vec<Option<f64>>,
    /// Lanes per node (slots).
    slots: Vec<u32>,
}

/// The report's data, embedded as JSON.
#[derive(Debug, Serialize)]
struct Data<'a> {
    session_id: &'a str,
    start_time_s: f64,
    duration_s: f64,
    /// A series column's width, s.
    column_s: f64,
    written_by: &'static str,
    /// Index 0: the session's own lane (tasks that name no node).
    nodes: Vec<String>,
    tasks: Tasks,
    series: Vec<Series>,
    gpus: Vec<Series>,
    cores: Vec<Cores>,
    /// Nodes whose heatmap was left out (see [`HeatPlan`]).
    cores_cut: Option<Cut>,
    /// The most common event types and their counts (see [`EVENT_TYPES`]),
    /// and what the rest come to.
    event_types: Vec<(&'a str, u64)>,
    event_types_more: Option<Cut>,
    /// Resource series of the tasks with the highest peaks (see
    /// [`TASK_SERIES`]), and how many tasks had samples.
    task_series: Vec<Series>,
    sampled_tasks: usize,
    /// Tasks with figures (sampled, or from their terminal event).
    tasks_with_figures: usize,
    /// Past [`NODE_LINES`] nodes: their series combined (see [`across`]),
    /// with the fields of [`ACROSS_FIELDS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    across: Option<Series>,
    /// Node series drawn one line per node, at most.
    node_lines: usize,
    /// The header's figures and the custom events' marks.
    facts: facts::Facts,
    summary: &'a crate::summary::Summary,
}

/// Nodes whose series a chart draws one line each, at most: past that,
/// a line per node could not be told apart by colour (two fields a chart,
/// so ten lines from a palette of twelve), and the charts draw the nodes
/// combined (see [`across`]).
pub const NODE_LINES: usize = 5;

/// The nodes combined: an input field of [`NODE_FIELDS`] and how.
const ACROSS: [(&str, usize, across::How); 8] = [
    ("cpu_percent_mean", 0, across::How::Mean),
    ("cpu_percent_max", 0, across::How::Max),
    ("memory_percent_mean", 1, across::How::Mean),
    ("memory_percent_max", 1, across::How::Max),
    ("disk_read_per_s_sum", 2, across::How::Sum),
    ("disk_write_per_s_sum", 3, across::How::Sum),
    ("net_sent_per_s_sum", 4, across::How::Sum),
    ("net_recv_per_s_sum", 5, across::How::Sum),
];

/// Tasks whose resource series the report draws, at most: the
/// [`TASK_SERIES`]/2 with the highest peak resident memory and as many
/// with the highest peak CPU (the table has every task's peaks). As many
/// as the page's palette has colours, so that every task drawn has its
/// own. A task that ended before its first resource sample
/// (`tal.TaskResourceUpdate`) is drawn through its end-of-task figures:
/// CPU time over its duration, its peak resident memory.
pub const TASK_SERIES: usize = 12;

/// Tasks whose peaks the first pass keeps to choose from, at most (later
/// ones are not drawn).
const TASK_PEAKS: usize = 100_000;

/// The fields of a task's resource series, in order.
const TASK_FIELDS: [&str; 5] = [
    "cpu_percent",
    "rss_bytes",
    "threads",
    "read_bytes",
    "write_bytes",
];

/// The GPU series' fields.
const GPU_FIELDS: [&str; 3] = ["gpu_percent", "gpu_memory_used_bytes", "gpu_power_watts"];

/// What the first pass keeps of a node's own samples (see
/// [`crate::items::apart`]): the summary's figures, its cores, and its
/// peaks of CPU and memory with their places in the stream.
#[derive(Debug, Default)]
struct FirstNode {
    summary: crate::summary::NodeApart,
    cores: Option<usize>,
    peaks: FirstPeaks,
}

/// A node's highest CPU % and memory % (the first of equal ones, as
/// [`series::peak`] takes them) and their places in the stream: the
/// second pass may take the node's samples where their places are not
/// known ([`crate::items::apart::each_nodes_apart`]).
type FirstPeaks = [Option<(f64, Place)>; 2];

impl NodeView for FirstNode {
    fn sample(&mut self, seq: Place, head: &Head<'_>, s: &NodeSample<'_>) {
        self.summary.sample(seq, head, s);
        if let Some(c) = &s.per_core {
            self.cores = Some(self.cores.unwrap_or(0).max(c.len()));
        }
        for (p, v) in self.peaks.iter_mut().zip([s.cpu_percent, s.memory_percent]) {
            if let Some(v) = series::above(p.map(|p| p.0), v) {
                *p = Some((v, seq));
            }
        }
    }
}

/// The first pass: bounds and counts.
#[derive(Debug, Default)]
struct Bounds {
    first: Option<i64>,
    last: Option<i64>,
    session: Option<(i64, i64)>,
    cores: HashMap<String, usize>,
    /// Each sampled task's peak resident memory and CPU.
    task_peaks: HashMap<String, (f64, f64)>,
    sampled_tasks: usize,
    /// Each task's figures from its terminal event.
    end_figures: HashMap<String, EndFigures>,
    /// Every node the session names, in the order first seen (after "",
    /// the session's own lane), as the second pass numbers them.
    nodes: NodeIndex,
    /// The peaks of the nodes whose samples were taken apart.
    peaks: HashMap<String, FirstPeaks>,
}

/// A task's end-of-task figures: CPU (% of one CPU: its CPU time over its
/// duration), peak resident memory, bytes read and written.
#[derive(Debug, Clone, Copy, Default)]
struct EndFigures {
    cpu: Option<f64>,
    rss: Option<f64>,
    read: Option<f64>,
    write: Option<f64>,
    duration: f64,
}

impl EndFigures {
    /// A terminal event's, if it has any.
    fn of(v: &Fields<'_>) -> Option<Self> {
        let a = v.attributes();
        let num = |k: &str| a[k].as_f64().or_else(|| v.num(k));
        let duration = num("duration_seconds").unwrap_or(0.0);
        let cpu_s = match (num("cpu_user_seconds"), num("cpu_system_seconds")) {
            (None, None) => None,
            (u, s) => Some(u.unwrap_or(0.0) + s.unwrap_or(0.0)),
        };
        let f = Self {
            cpu: cpu_s
                .filter(|_| duration > 0.0)
                .map(|c| c / duration * 100.0),
            rss: num("max_rss_bytes"),
            read: num("read_bytes"),
            write: num("write_bytes"),
            duration,
        };
        (f.cpu.is_some() || f.rss.is_some()).then_some(f)
    }

    /// Its values in the order of [`TASK_FIELDS`].
    fn values(&self) -> [Option<f64>; 5] {
        [self.cpu, self.rss, None, self.read, self.write]
    }
}

impl Bounds {
    /// Tasks with figures: sampled, or with end-of-task figures.
    fn tasks_with_figures(&self) -> usize {
        let unsampled = self.end_figures.keys();
        self.sampled_tasks
            + unsampled
                .filter(|k| !self.task_peaks.contains_key(*k))
                .count()
    }

    /// The tasks whose series are drawn (see [`TASK_SERIES`]).
    fn chosen_tasks(&self) -> std::collections::HashSet<String> {
        // Sampled tasks by their samples' peaks, the others by their
        // end-of-task figures.
        let unsampled = self
            .end_figures
            .iter()
            .filter(|(k, _)| !self.task_peaks.contains_key(*k))
            .map(|(k, f)| (k, (f.rss.unwrap_or(0.0), f.cpu.unwrap_or(0.0))));
        let peaks: Vec<(&String, (f64, f64))> = self
            .task_peaks
            .iter()
            .map(|(k, p)| (k, *p))
            .chain(unsampled)
            .collect();
        let mut by: Vec<(&String, &(f64, f64))> = peaks.iter().map(|(k, p)| (*k, p)).collect();
        let mut chosen = std::collections::HashSet::new();
        by.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then(a.0.cmp(b.0)));
        chosen.extend(by.iter().take(TASK_SERIES / 2).map(|(k, _)| (*k).clone()));
        by.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1).then(a.0.cmp(b.0)));
        for (k, _) in &by {
            if chosen.len() >= TASK_SERIES {
                break;
            }
            chosen.insert((*k).clone());
        }
        chosen
    }
}

impl Bounds {
    fn item(&mut self, item: &Item<'_>) {
        match item {
            Item::Event(head, body) => self.event(head, body),
            Item::SessionSpan { start_ns, end_ns } => self.session = Some((*start_ns, *end_ns)),
            _ => {}
        }
    }

    fn event(&mut self, head: &Head<'_>, body: &Body<'_>) {
        if let Some(t) = head.time_ns() {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        if let Some(n) = head.node_id.filter(|n| !n.is_empty()) {
            self.nodes.add(n);
        }
        match body {
            Body::Node(NodeSample {
                per_core: Some(c), ..
            }) => {
                let node = head.node_id.unwrap_or("");
                match self.cores.get_mut(node) {
                    Some(n) => *n = (*n).max(c.len()),
                    None => {
                        self.cores.insert(node.to_string(), c.len());
                    }
                }
            }
            Body::Other(f) => {
                let ty = head.event_type.unwrap_or("");
                if let (true, Some(task)) = (facts::is_terminal(ty), head.task_id) {
                    if let Some(f) = EndFigures::of(f) {
                        if self.end_figures.len() < TASK_PEAKS {
                            self.end_figures.insert(task.to_string(), f);
                        }
                    }
                }
            }
            Body::Task(v) => {
                if let Some(task) = head.task_id {
                    let (rss, cpu) = (v.rss_bytes.unwrap_or(0.0), v.cpu_percent.unwrap_or(0.0));
                    match self.task_peaks.get_mut(task) {
                        Some(p) => *p = (p.0.max(rss), p.1.max(cpu)),
                        None => {
                            self.sampled_tasks += 1;
                            if self.task_peaks.len() < TASK_PEAKS {
                                self.task_peaks.insert(task.to_string(), (rss, cpu));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The second pass's state.
struct Builder<'a> {
    grid: Grid,
    bounds: Bounds,
    nodes: NodeIndex,
    task_node: HashMap<String, u32>,
    /// The GPUs' series (the nodes' are in their [`NodeDraw`]s), then all.
    series: BTreeMap<(String, Option<u64>), Series>,
    heat: &'a HeatPlan,
    /// The nodes whose samples this thread takes (those that name no
    /// node; see [`crate::items::apart`] for the others).
    local: HashMap<String, NodeDraw<'a>>,
    /// Items taken: each one's place in the stream.
    seq: u64,
    cores: BTreeMap<String, Cores>,
    tasks: Tasks,
    type_index: HashMap<String, u32>,
    /// Each task's (start, end) ns, for its slot.
    intervals: Vec<(i64, i64)>,
    samples: usize,
    /// The tasks whose series are drawn, and their series.
    chosen: std::collections::HashSet<String>,
    task_series: BTreeMap<String, Series>,
    windows: facts::Windows,
    facts: facts::Facts,
    reuse: facts::Reuse,
    /// The nodes combined, past [`NODE_LINES`] nodes.
    across: Option<Series>,
}

impl<'a> Builder<'a> {
    fn secs(&self, t: i64) -> f64 {
        self.grid.secs(t)
    }

    fn column(&self, t: f64, columns: usize) -> usize {
        self.grid.column(t, columns)
    }

    fn item(&mut self, item: &Item<'_>) {
        self.seq += 1;
        match item {
            Item::Event(head, body) => self.event(head, body),
            Item::TaskSpan(span) => self.task(span),
            _ => {}
        }
    }

    fn event(&mut self, head: &Head<'_>, body: &Body<'_>) {
        let node = head.node_id.filter(|n| !n.is_empty());
        // Every node the session names, in the order first seen.
        let node_no = node.map(|n| self.nodes.add(n));
        if let (Some(task), Some(n)) = (head.task_id, node_no) {
            if !self.task_node.contains_key(task) {
                self.task_node.insert(task.to_string(), n);
            }
        }
        let ty = head.event_type.unwrap_or("");
        if let Body::Task(v) = body {
            self.task_sample(head, v);
            return;
        }
        if let Some(task) = head.task_id {
            self.reuse.event(ty, task);
            if let (true, Body::Other(f)) = (facts::is_terminal(ty), body) {
                self.task_end(head, f, task);
            }
        }
        let Some(t) = head.time_ns() else {
            return;
        };
        let t = self.secs(t);
        let node = node.unwrap_or("");
        match body {
            Body::Other(f) if facts::is_custom(ty) => self.facts.mark(t, ty, f),
            Body::Node(v) => {
                let (grid, heat) = (self.grid, self.heat);
                self.local
                    .entry(node.to_string())
                    .or_insert_with(|| NodeDraw::new(grid, heat))
                    .sample(u128::from(self.seq), head, v);
            }
            Body::Gpu(v) => {
                self.gpu_sample(v, node, t);
                self.samples += 1;
            }
            _ => {}
        }
    }

    /// A GPU's sample: its series point and figures.
    fn gpu_sample(&mut self, v: &GpuSample, node: &str, t: f64) {
        let g = v.gpu_id;
        let window = self.windows.window(node, Some(g), t);
        let vals = [v.gpu_percent, v.gpu_memory_used_bytes, v.gpu_power_watts];
        if vals[0].is_some_and(f64::is_finite) {
            let at = format!("{node} GPU {g}");
            facts::Facts::peak(&mut self.facts.gpu_percent, vals[0], &at, t);
        }
        // Energy: the power read times the window it ends.
        if let (Some(watts), Some(w)) = (vals[2].filter(|p| p.is_finite()), window) {
            *self.facts.gpu_energy_j.get_or_insert(0.0) += watts * w;
        }
        self.add(node, Some(g), &GPU_FIELDS, t, &vals);
    }

    /// A point of the series of `node` (and `gpu`).
    fn add(
        &mut self,
        node: &str,
        gpu: Option<u64>,
        fields: &[&'static str],
        t: f64,
        vals: &[Option<f64>],
    ) {
        let col = self.column(t, COLUMNS);
        let key = (node.to_string(), gpu);
        self.series
            .entry(key)
            .or_insert_with(|| Series::new(node, gpu, fields.to_vec()))
            .add(col, vals);
    }

    /// Each node's own samples, as its [`NodeDraw`] kept them (taken
    /// apart, or here): its series, heatmap and peaks.
    fn take_nodes(&mut self, apart: HashMap<String, NodeDraw<'a>>) {
        let mut peaks: [series::Placed; 2] = [None, None];
        let local = std::mem::take(&mut self.local).into_iter();
        for ((node, mut d), taken_apart) in local
            .map(|n| (n, false))
            .chain(apart.into_iter().map(|n| (n, true)))
        {
            if taken_apart {
                // The first pass placed the same peaks (see `FirstPeaks`).
                let first = self.bounds.peaks.get(&node).copied().unwrap_or_default();
                for (p, f) in d.peaks.iter_mut().zip(first) {
                    if let Some((peak, seq)) = p {
                        debug_assert_eq!(f.map(|f| f.0), Some(peak.value));
                        *seq = f.map_or(Place::MAX, |f| f.1);
                    }
                }
            }
            self.samples += d.samples;
            if let Some(s) = d.series {
                self.series.insert((node.clone(), None), s);
            }
            if let Some(c) = d.cores {
                self.cores.insert(node, c);
            }
            let [cpu, mem] = d.peaks;
            let [a, b] = peaks;
            peaks = [series::higher(a, cpu), series::higher(b, mem)];
        }
        let [cpu, mem] = peaks;
        self.facts.cpu_percent = cpu.map(|p| p.0);
        self.facts.memory_percent = mem.map(|p| p.0);
    }

    /// A terminal event: the end-of-task figures of a task drawn that had
    /// no resource sample, at its start and its end.
    fn task_end(&mut self, head: &Head<'_>, v: &Fields<'_>, task: &str) {
        if !self.chosen.contains(task) || self.bounds.task_peaks.contains_key(task) {
            return;
        }
        let (Some(f), Some(t)) = (EndFigures::of(v), head.time_ns()) else {
            return;
        };
        let end = self.secs(t);
        let cols = [(end - f.duration).max(0.0), end].map(|at| self.column(at, COLUMNS));
        let node = head.node_id.unwrap_or("");
        let s = self.task_series.entry(task.to_string()).or_insert_with(|| {
            let mut s = Series::new(node, None, TASK_FIELDS.to_vec());
            s.task = Some(task.to_string());
            s.end_only = true;
            s
        });
        for col in cols {
            s.add(col, &f.values());
        }
    }

    /// One `tal.TaskResourceUpdate`, for a task whose series is drawn.
    fn task_sample(&mut self, head: &Head<'_>, v: &TaskSample) {
        let (Some(task), Some(t)) = (head.task_id, head.time_ns()) else {
            return;
        };
        if !self.chosen.contains(task) {
            return;
        }
        let col = self.column(self.secs(t), COLUMNS);
        let vals = [
            v.cpu_percent,
            v.rss_bytes,
            v.threads,
            v.read_bytes,
            v.write_bytes,
        ];
        let node = head.node_id.unwrap_or("");
        self.task_series
            .entry(task.to_string())
            .or_insert_with(|| {
                let mut s = Series::new(node, None, TASK_FIELDS.to_vec());
                s.task = Some(task.to_string());
                s
            })
            .add(col, &vals);
    }

    fn task(&mut self, span: &Span<'_>) {
        let (s, e) = (span.start_ns, span.end_ns);
        let a: &Value = &span.attributes;
        let id = a["task_id"].as_str().unwrap_or("").to_string();
        // Its node once every event is read (see `finish`).
        let node = 0;
        let ty = a["task_type"].as_str().unwrap_or("").to_string();
        let next = self.type_index.len() as u32;
        let type_idx = *self.type_index.entry(ty.clone()).or_insert_with(|| {
            self.tasks.types.push(ty);
            next
        });
        let num = |k: &str| a[k].as_f64();
        let t = &mut self.tasks;
        t.id.push(id);
        t.node.push(node);
        t.start.push(s.saturating_sub(self.grid.start) as f64 / 1e9);
        t.end
            .push(e.max(s).saturating_sub(self.grid.start) as f64 / 1e9);
        t.state.push(match a["status"].as_str() {
            Some("completed") => 0,
            Some("failed") => 1,
            _ => 2,
        });
        t.r#type.push(type_idx);
        t.error.push(a["error_type"].as_str().map(String::from));
        t.cpu_s
            .push(match (num("cpu_user_seconds"), num("cpu_system_seconds")) {
                (None, None) => None,
                (u, s) => Some(u.unwrap_or(0.0) + s.unwrap_or(0.0)),
            });
        t.rss.push(num("max_rss_bytes"));
        t.read.push(num("read_bytes"));
        t.write.push(num("write_bytes"));
        t.gpu_mem.push(gpu_memory(&a["gpu_memory_peak_bytes"]));
        t.cpu_peak.push(num("cpu_percent_peak"));
        t.rss_peak.push(num("rss_bytes_peak"));
        self.intervals.push((s, e.max(s)));
    }

    /// Slots per node, the series' points, the heatmaps' means.
    fn finish(&mut self) -> usize {
        let nodes: Vec<across::NodeColumns> = self
            .series
            .values()
            .filter(|s| s.gpu.is_none())
            .map(Series::means)
            .collect();
        if nodes.len() > NODE_LINES {
            let outputs: Vec<(usize, across::How)> = ACROSS.iter().map(|a| (a.1, a.2)).collect();
            let mut s = Series::new("", None, ACROSS.iter().map(|a| a.0).collect());
            for (col, vals) in across::combine(&nodes, COLUMNS, &outputs) {
                s.k.push(col as u32 * 4 + 2);
                for (f, v) in s.v.iter_mut().zip(vals) {
                    f.push(Compact(v));
                }
            }
            self.across = Some(s);
        }
        // A span may come before its task's last events (see
        // `crate::items`): its node is the first its events named, for the
        // first span of its id.
        for (id, node) in self.tasks.id.iter().zip(&mut self.tasks.node) {
            *node = self.task_node.remove(id).unwrap_or(0);
        }
        let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, &n) in self.tasks.node.iter().enumerate() {
            by_node[n as usize].push(i);
        }
        self.tasks.slot = vec![0; self.tasks.id.len()];
        self.tasks.slots = vec![0; self.nodes.len()];
        for (n, idx) in by_node.iter().enumerate() {
            let iv: Vec<(i64, i64)> = idx.iter().map(|&i| self.intervals[i]).collect();
            let (slots, count) = assign_slots(&iv);
            self.tasks.slots[n] = count;
            for (&i, s) in idx.iter().zip(slots) {
                self.tasks.slot[i] = s;
            }
        }
        for c in self.cores.values_mut() {
            c.v = c
                .sum
                .iter()
                .map(|&(s, k)| (k > 0).then(|| (s / f64::from(k)).round().clamp(0.0, 255.0) as u8))
                .collect();
        }
        self.series.values_mut().map(Series::finish).sum::<usize>()
            + self
                .task_series
                .values_mut()
                .map(Series::finish)
                .sum::<usize>()
    }
}

/// A task's peak GPU memory: a number, or per device (`{"0": bytes}` or
/// its JSON text), summed.
fn gpu_memory(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(m) => Some(m.values().filter_map(Value::as_f64).sum()),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(|x| !x.is_string())
            .and_then(|x| gpu_memory(&x)),
        _ => None,
    }
}

/// The first pass over `src`: the session's bounds and its summary. Each
/// node's own samples on the machine's other cores (see
/// `crate::items::apart`), in both passes: straight from a dataset's
/// parts where their places are those of the merged stream (else read
/// again, merged).
fn first_pass(src: &mut dyn Source) -> io::Result<(Bounds, crate::summary::Summary)> {
    match first_pass_taking(src, true)? {
        Some(done) => Ok(done),
        None => Ok(first_pass_taking(src, false)?.expect("a merged pass places its samples")),
    }
}

/// [`first_pass`], the nodes' samples straight from the source's parts if
/// `apart`; `None` where their places were not the merged stream's.
fn first_pass_taking(
    src: &mut dyn Source,
    apart: bool,
) -> io::Result<Option<(Bounds, crate::summary::Summary)>> {
    let mut bounds = Bounds::default();
    bounds.nodes.add("");
    let mut figures = crate::summary::Reader::default();
    let mut f = |i: Item<'_>| {
        bounds.item(&i);
        figures.item(&i);
    };
    let (taken, views) = match apart {
        true => each_nodes_apart(src, |_| FirstNode::default(), &mut f)?,
        false => {
            let (read, views) = each_apart(src, |_| FirstNode::default(), &mut f)?;
            (Taken::Merged(read), views)
        }
    };
    if !taken.placed() {
        return Ok(None);
    }
    let mut own = Vec::with_capacity(views.len());
    for (node, n) in views {
        if let Some(c) = n.cores {
            let had = bounds.cores.entry(node.clone()).or_default();
            *had = (*had).max(c);
        }
        if let (Taken::Apart(_), Some((a, b))) = (taken, n.summary.span_ns()) {
            // Only its first sample was in the stream.
            bounds.first = Some(bounds.first.map_or(a, |f| f.min(a)));
            bounds.last = Some(bounds.last.map_or(b, |l| l.max(b)));
        }
        bounds.peaks.insert(node.clone(), n.peaks);
        own.push((node, n.summary));
    }
    figures.take_apart(own, &taken);
    let mut summary = figures.finish();
    summary.read = taken.read();
    Ok(Some((bounds, summary)))
}

/// Reads the session `src` gives (twice: see the module doc) and writes
/// the HTML report to `out`.
pub fn write_report(src: &mut dyn Source, out: &mut impl Write) -> io::Result<ReportStats> {
    let (bounds, mut summary) = first_pass(src)?;
    // The table's rows, not every type (see [`EVENT_TYPES`]).
    let events = std::mem::take(&mut summary.events);
    let crate::summary::TopCounts {
        top: event_types,
        more,
    } = crate::summary::top_counts(&events, EVENT_TYPES);
    let chosen = bounds.chosen_tasks();
    let (start, end) = bounds
        .session
        .or(bounds.first.zip(bounds.last))
        .unwrap_or_default();
    let heat = HeatPlan::new(&bounds.cores);
    let grid = Grid {
        start,
        span_s: (end.saturating_sub(start) as f64 / 1e9).max(1e-3),
    };
    let mut b = Builder {
        grid,
        // As this pass would number them (see `Bounds::nodes`).
        nodes: bounds.nodes.clone(),
        bounds,
        task_node: HashMap::new(),
        series: BTreeMap::new(),
        heat: &heat,
        local: HashMap::new(),
        seq: 0,
        cores: BTreeMap::new(),
        tasks: Tasks::default(),
        type_index: HashMap::new(),
        intervals: Vec::new(),
        samples: 0,
        chosen,
        task_series: BTreeMap::new(),
        windows: facts::Windows::default(),
        facts: facts::Facts::default(),
        reuse: facts::Reuse::default(),
        across: None,
    };
    // Each node's samples straight from a dataset's parts, where they
    // can be: their places and first appearances come from the first pass.
    let (_, apart) = each_nodes_apart(src, |_| NodeDraw::new(grid, &heat), &mut |i| b.item(&i))?;
    b.take_nodes(apart);
    let points = b.finish();
    let (gpus, series): (Vec<Series>, Vec<Series>) =
        b.series.into_values().partition(|s| s.gpu.is_some());
    let data = Data {
        session_id: &summary.session_id,
        start_time_s: crate::clock::ns_to_secs(start),
        duration_s: grid.span_s,
        column_s: grid.span_s / COLUMNS as f64,
        written_by: concat!("tal ", env!("CARGO_PKG_VERSION")),
        nodes: b.nodes.names,
        tasks: b.tasks,
        series,
        gpus,
        cores: b.cores.into_values().collect(),
        cores_cut: heat.cut,
        event_types,
        event_types_more: more.map(|(types, events)| Cut {
            types: Some(types),
            events: Some(events),
            ..Cut::default()
        }),
        task_series: b.task_series.into_values().collect(),
        sampled_tasks: b.bounds.sampled_tasks,
        tasks_with_figures: b.bounds.tasks_with_figures(),
        across: b.across,
        node_lines: NODE_LINES,
        facts: facts::Facts {
            reused: b.reuse.finish(),
            // The agents' own energy counters (trapezoids over every poll,
            // as `tal summary` gives them) where the session has them; the
            // power readings times their windows only where it has none
            // (a checkpoint RHAPSODY wrote).
            gpu_energy_j: summary
                .job
                .as_ref()
                .and_then(|j| j.gpus.as_ref())
                .and_then(|g| g.energy_joules)
                .or(b.facts.gpu_energy_j),
            ..b.facts
        },
        summary: &summary,
    };
    let stats = ReportStats {
        tasks: data.tasks.id.len(),
        points,
        samples: b.samples,
        bytes: 0,
        read: summary.read,
    };
    let mut counted = Counted { out, n: 0 };
    write_html(&mut counted, &data)?;
    counted.flush()?;
    Ok(ReportStats {
        bytes: counted.n,
        ..stats
    })
}

struct Counted<'a, W: Write> {
    out: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Text for inside `<script>`: `</` cannot close the element early.
fn script_safe(s: &str) -> String {
    s.replace("</", "<\\/")
}

/// JSON for inside `<script type="application/json">` (see the module
/// doc): `<`, `>` and `&` as `\u003c`, `\u003e` and `\u0026`. They can only
/// be in the JSON's strings, where the escapes read the same.
fn json_for_html(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 64);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn write_html(out: &mut impl Write, data: &Data<'_>) -> io::Result<()> {
    let title = format!("tal report: {}", html_escape(data.session_id));
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{UPLOT_CSS}\n{REPORT_CSS}\n</style>\n</head>\n<body>\n\
         <header><h1>{title}</h1><div id=\"meta\"></div></header>\n<main id=\"app\"></main>\n\
         <script id=\"tal-data\" type=\"application/json\">"
    )?;
    // The data as JSON (see `json_for_html`).
    let json = serde_json::to_string(data).map_err(io::Error::other)?;
    out.write_all(json_for_html(&json).as_bytes())?;
    write!(
        out,
        "</script>\n<script>\n{}\n</script>\n<script>\n{}\n</script>\n</body>\n</html>\n",
        script_safe(UPLOT_JS),
        script_safe(REPORT_JS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_max_survive_down_sampling() {
        let mut s = Series::new("n", None, vec!["x", "y"]);
        // Two columns of samples, a spike in the first; one sample in the
        // fourth; a field missing in it.
        for i in 0..100 {
            let v = if i == 37 { 99.0 } else { 1.0 };
            s.add(usize::from(i >= 50), &[Some(v), Some(2.0)]);
        }
        s.add(3, &[Some(5.0), None]);
        assert_eq!(s.finish(), 5);
        assert_eq!(s.k, [1, 3, 5, 7, 14]);
        let v = |f: usize| s.v[f].iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(
            v(0),
            [Some(1.0), Some(99.0), Some(1.0), Some(1.0), Some(5.0)]
        );
        assert_eq!(v(1), [Some(2.0), Some(2.0), Some(2.0), Some(2.0), None]);
        assert_eq!(
            serde_json::to_string(&[Compact(Some(3.0)), Compact(Some(2.5)), Compact(None)])
                .unwrap(),
            "[3,2.5,null]"
        );
    }

    #[test]
    fn gpu_memory_reads_numbers_objects_and_their_text() {
        assert_eq!(gpu_memory(&serde_json::json!(5)), Some(5.0));
        assert_eq!(gpu_memory(&serde_json::json!({"0": 2, "1": 3})), Some(5.0));
        assert_eq!(gpu_memory(&serde_json::json!("{\"0\": 7}")), Some(7.0));
        assert_eq!(gpu_memory(&serde_json::json!(null)), None);
    }

    #[test]
    fn script_text_cannot_end_the_element() {
        assert_eq!(script_safe("a</script>b"), "a<\\/script>b");
        // Nor can the page's own scripts start an escaped state.
        for js in [UPLOT_JS, REPORT_JS] {
            let js = js.to_ascii_lowercase();
            assert!(!js.contains("<!--") && !js.contains("<script"));
        }
    }

    #[test]
    fn json_in_html_has_no_markup_and_reads_the_same() {
        let v = serde_json::json!({"a<!--<script>": ["</script>&amp;>", "\\<"]});
        let html = json_for_html(&serde_json::to_string(&v).unwrap());
        assert!(!html.contains(['<', '>', '&']), "{html}");
        assert_eq!(serde_json::from_str::<Value>(&html).unwrap(), v);
    }

    #[test]
    fn a_tasks_end_figures_give_its_cpu_over_its_duration() {
        let v = serde_json::json!({"duration_seconds": 0.5, "attributes": {
            "cpu_user_seconds": 0.2, "cpu_system_seconds": 0.05, "max_rss_bytes": 7e6}});
        fn fields(v: &serde_json::Value) -> Fields<'_> {
            Fields::Json(v.as_object().unwrap())
        }
        let f = EndFigures::of(&fields(&v)).unwrap();
        assert_eq!((f.cpu, f.rss), (Some(50.0), Some(7e6)));
        let none = serde_json::json!({"duration_seconds": 0.0, "attributes": {}});
        assert!(EndFigures::of(&fields(&none)).is_none());
    }

    #[test]
    fn tasks_without_samples_are_chosen_by_their_end_figures() {
        let mut b = Bounds::default();
        b.task_peaks.insert("sampled".into(), (1e6, 50.0));
        b.sampled_tasks = 1;
        for (id, rss) in [("big", 4e8), ("sampled", 2e6)] {
            let f = EndFigures {
                rss: Some(rss),
                ..EndFigures::default()
            };
            b.end_figures.insert(id.into(), f);
        }
        let chosen = b.chosen_tasks();
        assert!(chosen.contains("big") && chosen.contains("sampled"));
        assert_eq!(b.tasks_with_figures(), 2);
    }

    #[test]
    fn heatmaps_share_their_cells() {
        let nodes = |n: usize, cores: usize| -> HashMap<String, usize> {
            (0..n).map(|i| (format!("n{i:07}"), cores)).collect()
        };
        // Few cores: every node, one core a row, up to 600 columns.
        let p = HeatPlan::new(&nodes(4, 64));
        assert_eq!((p.columns, p.group, p.kept.len()), (HEAT_COLUMNS, 1, 4));
        assert!(p.cut.is_none());
        // 10 nodes of 100,000 cores: 20 columns, rows of 10 cores.
        let p = HeatPlan::new(&nodes(10, 100_000));
        assert_eq!(
            (p.columns, p.group, p.kept.len()),
            (HEAT_MIN_COLUMNS, 10, 10)
        );
        // A million nodes of one core: the budget's worth, the rest said.
        let p = HeatPlan::new(&nodes(1_000_000, 1));
        let kept: usize = p
            .kept
            .values()
            .map(|n| n.div_ceil(p.group) * p.columns)
            .sum();
        assert!(kept <= HEAT_CELLS && kept > HEAT_CELLS / 2, "{kept}");
        let cut = p.cut.unwrap();
        assert_eq!(cut.nodes.unwrap() + p.kept.len() as u64, 1_000_000);
    }
}
