//! A session's items: the typed input of `tal report` and `tal summary`,
//! whoever produced the session.
//!
//! Both views used to read the JSONL checkpoint line by line into
//! `serde_json::Value`s, so that node logs were first converted to a
//! temporary JSONL and then parsed back: most of their time went into
//! writing and parsing text. They now take [`Item`]s, which three
//! producers can make:
//!
//! - a JSONL checkpoint, tal's or RHAPSODY's ([`jsonl`]): each line parsed
//!   and read into an item the way the views read the line before, so a
//!   RHAPSODY checkpoint reads exactly as it did;
//! - node logs ([`logs`]): the session's replay (`crate::convert::replay`),
//!   each event handed over as the record it is, with no JSON text in
//!   between;
//! - a Parquet dataset ([`dataset`]): each log's rows read back in its
//!   order, only the columns the views read, the logs merged by time.
//!
//! The design: one enum, [`Item`], in the order of the checkpoint (events,
//! then the metric line, then the spans), with the samples, which are
//! almost every item of a session, typed field by field ([`NodeSample`],
//! [`GpuSample`], [`TaskSample`], each a few `Option<f64>`), and every
//! other event (task lifecycle, session, an application's own events) as
//! a [`Fields`] view: its figures by name, read from the JSON object or
//! from the record as the JSONL would write them, its attributes as a
//! `serde_json::Value` tree made only when a view asks (once per task:
//! attributes are open-ended, whatever names an application gives them).
//! Every event has its [`Head`] (type, time, session, node, task). A task
//! span's figures are its attributes ([`Span`]); the session span is its
//! bounds; the metric line is its figures as a map (open-ended too).
//!
//! What an item says equals what the JSONL line says: a time is the
//! float seconds the line holds; a number the line would write as `null`
//! (not finite) is `None`; per-core CPU is rounded to 0.1 as the line
//! writes it; where a line would carry a name twice (an application's own
//! field named like a fixed one), the last one wins, as when the line is
//! parsed. The views' outputs from logs and from their JSONL are compared
//! in `tests/report.rs` and `tests/summary.rs`.
//!
//! Order: a producer hands the events in the checkpoint's order and the
//! task spans in their closing order, but may hand a task's span before
//! the last of its events (the replay closes a span at its terminal
//! event). The views therefore take nothing from the order of spans and
//! events relative to each other (a span's node is looked up when the
//! view finishes).

pub mod apart;
pub mod dataset;
pub mod jsonl;
pub mod logs;
pub mod parts;

use crate::convert::lines::LineStats;
use crate::record::{self, Event, EventKind, TaskState};
use serde_json::Value;
use std::borrow::Cow;
use std::io;

/// One item of a session (see the module doc).
#[derive(Debug)]
pub enum Item<'a> {
    /// One event line.
    Event(Head<'a>, Body<'a>),
    /// One task span (any span not named `session`).
    TaskSpan(Span<'a>),
    /// The session span's bounds, ns since the epoch.
    SessionSpan {
        /// Start.
        start_ns: i64,
        /// End.
        end_ns: i64,
    },
    /// The metric line's figures (RHAPSODY's instruments; tal's own cost
    /// and `tal_logs`), by name.
    Metric(&'a serde_json::Map<String, Value>),
}

/// What every event has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head<'a> {
    /// `event_type`.
    pub event_type: Option<&'a str>,
    /// `event_time`, s since the epoch, where it is a number.
    pub time_s: Option<f64>,
    /// `session_id`.
    pub session_id: Option<&'a str>,
    /// `node_id` (as the line has it: maybe empty).
    pub node_id: Option<&'a str>,
    /// `task_id`.
    pub task_id: Option<&'a str>,
}

impl Head<'_> {
    /// `event_time` in ns, where it is a time tal accepts (see
    /// [`crate::convert::json_time_ns`]).
    pub fn time_ns(&self) -> Option<i64> {
        time_ns(self.time_s)
    }
}

/// A time in float seconds as ns, where it is one tal accepts.
pub fn time_ns(s: Option<f64>) -> Option<i64> {
    s.filter(|t| crate::clock::time_in_range(*t))
        .map(crate::clock::secs_to_ns)
}

/// What an event carries besides its head.
#[derive(Debug)]
pub enum Body<'a> {
    /// A `ResourceUpdate` of a node (`resource_scope` not `per_gpu`, or no
    /// `gpu_id`).
    Node(NodeSample<'a>),
    /// A `ResourceUpdate` of one GPU.
    Gpu(GpuSample),
    /// A `tal.TaskResourceUpdate`.
    Task(TaskSample),
    /// Any other event.
    Other(Fields<'a>),
    /// A node's sample taken apart, to its node's own view (see
    /// [`apart`]): here for its place in the stream.
    Apart,
}

/// A node's sample: the figures the views read.
#[derive(Debug, Clone, Default)]
pub struct NodeSample<'a> {
    /// CPU busy, %.
    pub cpu_percent: Option<f64>,
    /// Memory used, %.
    pub memory_percent: Option<f64>,
    /// Bytes read from disk since the previous sample.
    pub disk_read_bytes: Option<f64>,
    /// Bytes written to disk since the previous sample.
    pub disk_write_bytes: Option<f64>,
    /// Bytes sent since the previous sample.
    pub net_sent_bytes: Option<f64>,
    /// Bytes received since the previous sample.
    pub net_recv_bytes: Option<f64>,
    /// The job cgroup's CPU, % of the node's.
    pub job_cpu_percent: Option<f64>,
    /// The job cgroup's memory, bytes.
    pub job_memory_bytes: Option<f64>,
    /// The job cgroup's peak memory, bytes.
    pub job_memory_peak_bytes: Option<f64>,
    /// The job cgroup's bytes read since the previous sample.
    pub job_disk_read_bytes: Option<f64>,
    /// The job cgroup's bytes written since the previous sample.
    pub job_disk_write_bytes: Option<f64>,
    /// CPU busy per core, %, where the sample has the list.
    pub per_core: Option<PerCore<'a>>,
}

impl NodeSample<'_> {
    /// The figure of one of [`crate::convert::NODE_SERIES`] (or of the
    /// job cgroup's fields) by its JSONL name.
    pub fn get(&self, key: &str) -> Option<f64> {
        match key {
            "cpu_percent" => self.cpu_percent,
            "memory_percent" => self.memory_percent,
            "disk_read_bytes" => self.disk_read_bytes,
            "disk_write_bytes" => self.disk_write_bytes,
            "net_sent_bytes" => self.net_sent_bytes,
            "net_recv_bytes" => self.net_recv_bytes,
            "job_cpu_percent" => self.job_cpu_percent,
            "job_memory_bytes" => self.job_memory_bytes,
            "job_memory_peak_bytes" => self.job_memory_peak_bytes,
            "job_disk_read_bytes" => self.job_disk_read_bytes,
            "job_disk_write_bytes" => self.job_disk_write_bytes,
            _ => None,
        }
    }
}

/// Per-core CPU, as the record holds it or as the line does.
#[derive(Debug, Clone, Copy)]
pub enum PerCore<'a> {
    /// A record's values (rounded to 0.1 when read, as the line writes
    /// them).
    Record(&'a [f32]),
    /// A line's list (an element that is not a number is `None`).
    Json(&'a [Value]),
    /// Figures as read already.
    Values(&'a [Option<f64>]),
}

impl PerCore<'_> {
    /// Cores.
    pub fn len(&self) -> usize {
        match self {
            Self::Record(v) => v.len(),
            Self::Json(v) => v.len(),
            Self::Values(v) => v.len(),
        }
    }

    /// No cores.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends each core's figure to `out` (as [`Self::values`], in a
    /// loop of its own for each kind: the per-sample path).
    pub fn extend_into(&self, out: &mut Vec<Option<f64>>) {
        match self {
            Self::Record(v) => out
                .extend(v.iter().map(|x| {
                    Some((f64::from(*x) * 10.0).round() / 10.0).filter(|x| x.is_finite())
                })),
            Self::Json(v) => out.extend(v.iter().map(Value::as_f64)),
            Self::Values(v) => out.extend_from_slice(v),
        }
    }

    /// Each core's figure.
    pub fn values(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        let (r, j, v): (&[f32], &[Value], &[Option<f64>]) = match self {
            Self::Record(r) => (r, &[], &[]),
            Self::Json(j) => (&[], j, &[]),
            Self::Values(v) => (&[], &[], v),
        };
        r.iter()
            .map(|x| Some((f64::from(*x) * 10.0).round() / 10.0).filter(|x| x.is_finite()))
            .chain(j.iter().map(Value::as_f64))
            .chain(v.iter().copied())
    }
}

/// One GPU's sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuSample {
    /// `gpu_id`.
    pub gpu_id: u64,
    /// Utilisation, %.
    pub gpu_percent: Option<f64>,
    /// Memory used, bytes.
    pub gpu_memory_used_bytes: Option<f64>,
    /// Memory, bytes.
    pub gpu_memory_total_bytes: Option<f64>,
    /// Power, W.
    pub gpu_power_watts: Option<f64>,
    /// The device's energy counter, J.
    pub gpu_energy_joules: Option<f64>,
}

/// A task's resource sample (`tal.TaskResourceUpdate`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskSample {
    /// CPU, % of one CPU.
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<f64>,
    /// Threads.
    pub threads: Option<f64>,
    /// Bytes read so far.
    pub read_bytes: Option<f64>,
    /// Bytes written so far.
    pub write_bytes: Option<f64>,
}

/// Any other event's fields, by name: a line's object or a record.
#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    /// A line.
    Json(&'a serde_json::Map<String, Value>),
    /// A record, as its line would be written.
    Record(&'a Event),
}

/// Whether `key` is one every event line has, which says nothing of the
/// event itself: the core event schema's and the ids and envelope the
/// line adds (as the ingest protocol names them).
pub fn is_common_key(key: &str) -> bool {
    crate::ingest::protocol::CORE.contains(&key) || crate::ingest::protocol::RESERVED.contains(&key)
}

impl Fields<'_> {
    /// The number at top-level `key`.
    pub fn num(&self, key: &str) -> Option<f64> {
        match self {
            Self::Json(m) => m.get(key).and_then(Value::as_f64),
            Self::Record(ev) => {
                // The own fields are written last: the last of a name wins.
                let own = own_fields(&ev.kind).iter().rev().find(|(k, _)| k == key);
                if let Some((_, v)) = own {
                    return record_num(v);
                }
                match key {
                    "duration_seconds" => self.fixed_duration().filter(|d| d.is_finite()),
                    _ => None,
                }
            }
        }
    }

    /// A record's `duration_seconds`, as written before its own fields.
    fn fixed_duration(&self) -> Option<f64> {
        match self {
            Self::Record(ev) => match &ev.kind {
                EventKind::SessionEnded { duration_seconds } => Some(*duration_seconds),
                EventKind::Task(t) if t.state.is_terminal() => {
                    Some(t.duration_seconds.unwrap_or(0.0))
                }
                _ => None,
            },
            Self::Json(_) => None,
        }
    }

    /// The `attributes` object (`Null` where there is none).
    pub fn attributes(&self) -> Cow<'_, Value> {
        match self {
            Self::Json(m) => Cow::Borrowed(m.get("attributes").unwrap_or(&Value::Null)),
            Self::Record(ev) => {
                let mut m = serde_json::Map::new();
                for (k, v) in &ev.attributes {
                    m.insert(k.clone(), to_json(v));
                }
                // RHAPSODY repeats a failed task's error type there (see
                // `crate::event_json`).
                if let EventKind::Task(t) = &ev.kind {
                    if t.state == TaskState::Failed && !m.contains_key("error_type") {
                        let e = t.error_type.as_deref().unwrap_or("unknown");
                        m.insert("error_type".into(), Value::String(e.into()));
                    }
                }
                Cow::Owned(Value::Object(m))
            }
        }
    }

    /// An application's own event's first string field (not one of
    /// [`is_common_key`]), with its name.
    pub fn first_own_string(&self) -> Option<(String, String)> {
        let own: serde_json::Map<String, Value>;
        let m = match self {
            Self::Json(m) => *m,
            Self::Record(ev) => {
                // As the line is parsed: a name's first place, its last
                // value; the fixed fields first, as they are written.
                let mut o = serde_json::Map::new();
                if let Some(d) = self.fixed_duration() {
                    o.insert("duration_seconds".into(), Value::from(d));
                }
                if let EventKind::Task(t) = &ev.kind {
                    if t.state == TaskState::Failed {
                        let e = t.error_type.as_deref().unwrap_or("unknown");
                        o.insert("error_type".into(), Value::String(e.into()));
                    }
                }
                for (k, v) in own_fields(&ev.kind) {
                    if !is_common_key(k) {
                        o.insert(k.clone(), to_json(v));
                    }
                }
                own = o;
                &own
            }
        };
        m.iter()
            .filter(|(k, _)| !is_common_key(k))
            .find_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_string())))
    }
}

/// A record's own named fields (an application's, or a task event's
/// extra ones), written after its fixed fields.
fn own_fields(kind: &EventKind) -> &[(String, record::Value)] {
    match kind {
        EventKind::Task(t) => &t.extra,
        EventKind::Custom { fields, .. } => fields,
        EventKind::ResourceUpdate(u) => &u.extra,
        _ => &[],
    }
}

/// A record's value as a number, as its line reads.
pub fn record_num(v: &record::Value) -> Option<f64> {
    match v {
        record::Value::Int(i) => Some(*i as f64),
        record::Value::Float(f) => Some(*f).filter(|f| f.is_finite()),
        record::Value::Json(raw) => serde_json::from_str::<Value>(raw).ok()?.as_f64(),
        _ => None,
    }
}

/// A record's value as its line reads (a float that is not finite is
/// written `null`; other JSON is kept as its text).
pub fn to_json(v: &record::Value) -> Value {
    match v {
        record::Value::Null => Value::Null,
        record::Value::Bool(b) => Value::Bool(*b),
        record::Value::Int(i) => Value::from(*i),
        record::Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        record::Value::Str(s) => Value::String(s.clone()),
        record::Value::Json(raw) => serde_json::from_str(raw).unwrap_or(Value::Null),
    }
}

/// A task span.
#[derive(Debug)]
pub struct Span<'a> {
    /// Start, ns since the epoch.
    pub start_ns: i64,
    /// End, ns since the epoch.
    pub end_ns: i64,
    /// Its attributes (`task_id`, `status`, `error_type`, `task_type`,
    /// the task's figures...).
    pub attributes: Cow<'a, Value>,
}

/// A node sample's place in the session's stream, for what compares the
/// samples of different nodes (the first of equal peaks): its number in
/// the stream, or, where a source reads each node's samples apart
/// ([`Source::each_nodes_apart`]), its time and its log's number, which
/// order the samples of different logs as the stream does where each
/// log's samples are in time order (see [`apart::Taken`]).
pub type Place = u128;

/// The [`Place`] of a sample at `time_ns` of log number `log`, read
/// apart.
pub fn place_of(time_ns: i64, log: u32) -> Place {
    (u128::from((time_ns as u64) ^ (1 << 63)) << 64) | u128::from(log)
}

/// What a view keeps of one node's own samples, which it may take on a
/// thread of their own (see [`apart`]).
pub trait NodeView: Send {
    /// One sample of the node, at `place` in the stream, with its head.
    fn sample(&mut self, place: Place, head: &Head<'_>, s: &NodeSample<'_>);
}

/// Takes the nodes' own samples from a source that reads each node's
/// apart by itself ([`Source::each_nodes_apart`]): a [`NodeSink`] for
/// each of the source's threads.
pub trait NodeFeed: Sync {
    /// A sink for one of the source's threads (its views are handed back
    /// when it is dropped).
    fn sink(&self) -> Box<dyn NodeSink + '_>;
}

/// One thread's nodes: every sample of a node comes to the same sink.
pub trait NodeSink {
    /// Node `name`'s number in this sink, made at the node's first sample
    /// (a node's samples all come to one sink).
    fn node(&mut self, name: &str) -> usize;
    /// The next sample of node `node` (its number), in the node's order,
    /// at `place`.
    fn sample(&mut self, node: usize, place: Place, head: &Head<'_>, s: &NodeSample<'_>);
}

/// What [`Source::each_nodes_apart`] read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadApart {
    /// What reading met, as [`Source::each`] says it.
    pub read: LineStats,
    /// Every node's samples were in time order: then their places (each
    /// node's first sample's in the stream, every sample's [`Place`]) are
    /// those [`Source::each`] gives them. Where not (a node's clock
    /// stepped back), what depends on them is to be read again with
    /// `each`.
    pub in_order: bool,
}

/// Where a session's items come from.
pub trait Source {
    /// Hands every item of the session to `f`, in order (see the module
    /// doc); returns what reading met. May be called again, for another
    /// pass over the same session.
    fn each(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<LineStats>;

    /// As [`Self::each`], but the nodes' own samples (those `each` hands
    /// as `Body::Node` with a `node_id`) go to `feed` instead of `f`, each
    /// node's in its order, on the source's own threads, each at its
    /// [`Place`]; `f` takes every other item in order, and each node's
    /// first sample as a `Body::Apart` in its place: for a source that
    /// holds each node's samples apart (a dataset's parts), which then
    /// need no merge into the stream. `None` where the source cannot (then
    /// nothing was read: use `each`, with [`apart::each_apart`]).
    fn each_nodes_apart(
        &mut self,
        _feed: &dyn NodeFeed,
        _f: &mut dyn FnMut(Item<'_>),
    ) -> Option<io::Result<ReadApart>> {
        None
    }
}
