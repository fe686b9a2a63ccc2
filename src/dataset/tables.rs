//! The dataset's tables: their columns (RHAPSODY's fields, mapped column
//! by column: `docs/dataset.md`), and the replay sink that fills them
//! from one node log ([`Tables`]).
//!
//! Every event table starts with the same columns ([`EVENT`]): the times as
//! timestamps, the ids, the node, the task, and the trace and span the
//! JSONL line names. Then each table has its own: a `per_node`
//! `ResourceUpdate` goes to `samples`, a `per_gpu` one to `gpu_samples`, a
//! `tal.TaskResourceUpdate` to `task_samples`, and every other event
//! (session, task lifecycle, custom) to `events`; each task span is a row
//! of `tasks`. A field that has no column of its own in its table is kept,
//! when it is not null, in the row's `extra` (or `fields`) column, as a
//! JSON object: so no field of the JSONL is lost, whatever a client sent.
//! A key the JSONL leaves out and a key it writes as null are both a null.

use super::columns::{Kind, Row, Spec, Table};
use crate::ids;
use crate::json::{write_value, JsonOut};
use crate::record::{Event, EventKind, ResourceScope, ResourceUpdate, TaskState, Value};
use crate::tasks::TaskSpan;

use Kind::{Bin, Bool, F32List, F64Map, I64Map, Str, StrMap, Time, F64, I64};

/// The columns every event table starts with.
pub const EVENT: [Spec; 10] = [
    ("time", Time, false),
    ("emit_time", Time, false),
    ("event_id", Str, false),
    ("event_type", Str, false),
    ("session_id", Str, false),
    ("node_id", Str, true),
    ("backend", Str, true),
    ("task_id", Str, true),
    ("trace_id", Str, false),
    ("span_id", Str, false),
];

/// An event table's columns: [`EVENT`]'s, then these.
macro_rules! event_table {
    ($($col:expr),* $(,)?) => {
        &[
            EVENT[0], EVENT[1], EVENT[2], EVENT[3], EVENT[4], EVENT[5], EVENT[6], EVENT[7],
            EVENT[8], EVENT[9], $($col),*
        ]
    };
}

/// `samples`: the node's `per_node` `ResourceUpdate`s.
pub const SAMPLES: &[Spec] = event_table![
    ("resource_scope", Str, false),
    ("cpu_percent", F64, true),
    ("memory_percent", F64, true),
    ("gpu_percent", F64, true),
    ("disk_read_bytes", F64, true),
    ("disk_write_bytes", F64, true),
    ("net_sent_bytes", F64, true),
    ("net_recv_bytes", F64, true),
    ("cpu_percent_per_core", F32List, true),
    ("job_cpu_percent", F64, true),
    ("job_memory_bytes", I64, true),
    ("job_memory_peak_bytes", I64, true),
    ("job_memory_percent", F64, true),
    ("job_disk_read_bytes", F64, true),
    ("job_disk_write_bytes", F64, true),
    ("attributes", Str, true),
    ("extra", Str, true),
];

/// Extension fields of `samples` with columns of their own (after
/// `cpu_percent_per_core`), in column order.
const SAMPLE_EXTRA: &[Spec] = SAMPLES.split_at(19).1.split_at(6).0;

/// `gpu_samples`: one row per device and poll (`per_gpu`).
pub const GPU_SAMPLES: &[Spec] = event_table![
    ("resource_scope", Str, false),
    ("gpu_id", I64, false),
    ("gpu_percent", F64, true),
    ("gpu_samples", I64, true),
    ("gpu_percent_age_ms", F64, true),
    ("gpu_memory_util_percent", F64, true),
    ("gpu_memory_used_bytes", I64, true),
    ("gpu_memory_total_bytes", I64, true),
    ("gpu_memory_percent", F64, true),
    ("gpu_power_watts", F64, true),
    ("gpu_energy_joules", F64, true),
    ("gpu_temperature_celsius", I64, true),
    ("gpu_sm_clock_mhz", I64, true),
    ("nvml_latency_us", F64, true),
    ("attributes", Str, true),
    ("extra", Str, true),
];

/// Extension fields of `gpu_samples` with columns of their own.
const GPU_EXTRA: &[Spec] = GPU_SAMPLES.split_at(13).1.split_at(11).0;

/// `task_samples`: the `tal.TaskResourceUpdate` series.
pub const TASK_SAMPLES: &[Spec] = event_table![
    ("cpu_percent", F64, false),
    ("cpu_user_percent", F64, false),
    ("cpu_system_percent", F64, false),
    ("rss_bytes", I64, false),
    ("threads", I64, false),
    ("processes", I64, false),
    ("read_bytes", I64, true),
    ("write_bytes", I64, true),
    ("interval_seconds", F64, false),
    ("gpu_memory_bytes", I64Map, true),
    ("attributes", Str, true),
];

/// `events`: every other event.
pub const EVENTS: &[Spec] = event_table![
    ("duration_seconds", F64, true),
    ("error_type", Str, true),
    ("attributes", Str, true),
    ("fields", Str, true),
];

/// `tasks`: one row per task span.
pub const TASKS: &[Spec] = &[
    ("session_id", Str, false),
    ("node_id", Str, false),
    ("task_id", Str, false),
    ("trace_id", Str, false),
    ("span_id", Str, false),
    ("parent_span_id", Str, false),
    ("start_time", Time, false),
    ("end_time", Time, false),
    ("duration_ms", F64, false),
    ("status", Str, false),
    ("status_code", Str, false),
    ("status_description", Str, true),
    ("error_type", Str, true),
    ("backend", Str, false),
    ("executable", Str, false),
    ("task_type", Str, false),
    ("incomplete_lifecycle", Bool, false),
    ("closed_at_session_end", Bool, false),
    ("queued_time", Time, true),
    ("cpu_user_seconds", F64, true),
    ("cpu_system_seconds", F64, true),
    ("max_rss_bytes", I64, true),
    ("read_bytes", I64, true),
    ("write_bytes", I64, true),
    ("gpu_memory_peak_bytes", I64Map, true),
    ("gpu_energy_joules", F64Map, true),
    ("attributes", StrMap, false),
    ("attributes_json", Str, false),
];

/// A value as a float column takes it: an integer or a float.
fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// A value as an integer column takes it: an integer, or a float with no
/// fraction.
fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

/// Whether a column of `kind` takes `v` (null always).
fn fits(kind: Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Null) => true,
        (F64, _) => as_f64(v).is_some(),
        (I64, _) => as_i64(v).is_some(),
        (Str, Value::Str(_)) => true,
        _ => false,
    }
}

/// Appends `v` to a column of `kind` (which [`fits`] it).
fn append(r: &mut Row<'_>, kind: Kind, v: Option<&Value>) {
    let v = v.filter(|v| !matches!(v, Value::Null));
    match kind {
        F64 => r.f64(v.and_then(as_f64)),
        I64 => r.i64(v.and_then(as_i64)),
        Str => r.str(v.and_then(|v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })),
        _ => unreachable!("extension columns are numbers or strings"),
    };
}

/// JSON objects built for a row's text columns, in buffers kept between
/// rows.
#[derive(Debug, Default)]
struct Json {
    buf: Vec<u8>,
}

impl Json {
    /// `pairs` as a JSON object, or `None` when there are none.
    fn object<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, &'a Value)>) -> Option<&str> {
        let mut pairs = pairs.peekable();
        pairs.peek()?;
        self.buf.clear();
        let mut o = JsonOut::object(&mut self.buf);
        for (k, v) in pairs {
            o.value(k, v);
        }
        o.end();
        Some(std::str::from_utf8(&self.buf).expect("JsonOut writes UTF-8"))
    }
}

/// The ids of one session's lines, in the JSONL's form.
#[derive(Debug)]
pub struct Ids {
    /// The session.
    pub session_id: String,
    /// The node the log is of.
    pub node_id: String,
    trace_hex: String,
    session_span_hex: String,
}

impl Ids {
    /// The ids of `session_id`, for the log of `node_id`.
    pub fn new(session_id: &str, node_id: &str) -> Self {
        Self {
            session_id: session_id.to_string(),
            node_id: node_id.to_string(),
            trace_hex: ids::py_hex(ids::trace_id(session_id)),
            session_span_hex: ids::py_hex(u128::from(ids::session_span_id(session_id))),
        }
    }

    fn task_span_hex(&self, task: &str) -> String {
        ids::py_hex(u128::from(ids::task_span_id(&self.session_id, task)))
    }
}

/// The tables of one node's part, being filled.
#[derive(Debug)]
pub struct Tables {
    /// The ids every row shares.
    pub ids: Ids,
    /// `samples`.
    pub samples: Table,
    /// `gpu_samples`.
    pub gpu_samples: Table,
    /// `task_samples`.
    pub task_samples: Table,
    /// `events`.
    pub events: Table,
    /// `tasks`.
    pub tasks: Table,
    json: Json,
    extra: Json,
    hex: [u8; 32],
}

impl Tables {
    /// Empty tables for the log of `node_id` in `session_id`.
    pub fn new(session_id: &str, node_id: &str) -> Self {
        Self {
            ids: Ids::new(session_id, node_id),
            samples: Table::new(SAMPLES),
            gpu_samples: Table::new(GPU_SAMPLES),
            task_samples: Table::new(TASK_SAMPLES),
            events: Table::new(EVENTS),
            tasks: Table::new(TASKS),
            json: Json::default(),
            extra: Json::default(),
            hex: [0; 32],
        }
    }

    /// Appends `ev` (seen on `node`, "" for the session's own) to its
    /// table.
    pub fn event(&mut self, node: &str, ev: &Event) {
        match &ev.kind {
            EventKind::ResourceUpdate(u) => match u.scope {
                ResourceScope::PerNode => self.sample(node, ev, u),
                ResourceScope::PerGpu(g) => self.gpu_sample(node, ev, u, g),
            },
            EventKind::TaskResources(_) => self.task_sample(node, ev),
            EventKind::GpuProcesses(_) => {}
            _ => self.other(node, ev),
        }
    }

    fn sample(&mut self, node: &str, ev: &Event, u: &ResourceUpdate) {
        let Self {
            ids,
            samples,
            json,
            extra,
            hex,
            ..
        } = self;
        let mut r = samples.row();
        prefix(&mut r, ids, hex, node, ev);
        r.str(Some("per_node"))
            .f64(u.cpu_percent)
            .f64(u.memory_percent)
            .f64(u.gpu_percent)
            .f64(u.disk_read_bytes)
            .f64(u.disk_write_bytes)
            .f64(u.net_sent_bytes)
            .f64(u.net_recv_bytes)
            .f32_list((!u.cpu_percent_per_core.is_empty()).then_some(&u.cpu_percent_per_core[..]));
        extension_columns(&mut r, SAMPLE_EXTRA, &u.extra);
        r.str(json.object(ev.attributes.iter().map(|(k, v)| (k.as_str(), v))));
        r.str(extra.object(leftovers(SAMPLE_EXTRA, &u.extra, &[])));
        r.end();
    }

    fn gpu_sample(&mut self, node: &str, ev: &Event, u: &ResourceUpdate, g: u32) {
        let Self {
            ids,
            gpu_samples,
            json,
            extra,
            hex,
            ..
        } = self;
        let mut r = gpu_samples.row();
        prefix(&mut r, ids, hex, node, ev);
        r.str(Some("per_gpu"))
            .i64(Some(i64::from(g)))
            .f64(u.gpu_percent);
        extension_columns(&mut r, GPU_EXTRA, &u.extra);
        r.str(json.object(ev.attributes.iter().map(|(k, v)| (k.as_str(), v))));
        // The per_node fields, null on a per_gpu update as the agent writes
        // it, are kept if a client's update had them.
        let core = [
            ("cpu_percent", u.cpu_percent),
            ("memory_percent", u.memory_percent),
            ("disk_read_bytes", u.disk_read_bytes),
            ("disk_write_bytes", u.disk_write_bytes),
            ("net_sent_bytes", u.net_sent_bytes),
            ("net_recv_bytes", u.net_recv_bytes),
        ];
        let core: Vec<(String, Value)> = core
            .iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), Value::Float(v))))
            .chain((!u.cpu_percent_per_core.is_empty()).then(|| {
                let vs: Vec<String> = u.cpu_percent_per_core.iter().map(f32::to_string).collect();
                let arr = format!("[{}]", vs.join(", "));
                ("cpu_percent_per_core".to_string(), Value::Json(arr))
            }))
            .collect();
        r.str(extra.object(leftovers(GPU_EXTRA, &u.extra, &core)));
        r.end();
    }

    fn task_sample(&mut self, node: &str, ev: &Event) {
        let EventKind::TaskResources(t) = &ev.kind else {
            return;
        };
        let Self {
            ids,
            task_samples,
            json,
            hex,
            ..
        } = self;
        let mut r = task_samples.row();
        prefix(&mut r, ids, hex, node, ev);
        let pct = |v: f32| crate::record::round1(f64::from(v));
        let gpu: Vec<(String, i64)> = t
            .gpu_memory_bytes
            .iter()
            .map(|(g, b)| (g.to_string(), *b as i64))
            .collect();
        r.f64(Some(pct(t.cpu_percent())))
            .f64(Some(pct(t.cpu_user_percent)))
            .f64(Some(pct(t.cpu_system_percent)))
            .i64(Some(t.rss_bytes as i64))
            .i64(Some(i64::from(t.threads)))
            .i64(Some(i64::from(t.processes)))
            .i64(t.read_bytes.map(|b| b as i64))
            .i64(t.write_bytes.map(|b| b as i64))
            .f64(Some(
                (f64::from(t.interval_seconds) * 1000.0).round() / 1000.0,
            ))
            .i64_map((!gpu.is_empty()).then(|| gpu.iter().map(|(g, b)| (g.as_str(), Some(*b)))))
            .str(json.object(ev.attributes.iter().map(|(k, v)| (k.as_str(), v))));
        r.end();
    }

    fn other(&mut self, node: &str, ev: &Event) {
        let Self {
            ids,
            events,
            json,
            hex,
            ..
        } = self;
        let mut r = events.row();
        prefix(&mut r, ids, hex, node, ev);
        let mut fields = Json::default();
        let (duration, error, extra): (Option<f64>, Option<&str>, &[(String, Value)]) = match &ev
            .kind
        {
            EventKind::SessionEnded { duration_seconds } => (Some(*duration_seconds), None, &[]),
            EventKind::Task(t) => (
                t.state
                    .is_terminal()
                    .then(|| t.duration_seconds.unwrap_or(0.0)),
                (t.state == TaskState::Failed)
                    .then(|| t.error_type.as_deref().unwrap_or("unknown")),
                &t.extra,
            ),
            EventKind::Custom { fields, .. } => (None, None, fields),
            _ => (None, None, &[]),
        };
        r.f64(duration).str(error);
        // RHAPSODY repeats a failed task's error type in its attributes.
        let repeat = error.filter(|_| !ev.attributes.iter().any(|(k, _)| k == "error_type"));
        let repeated = repeat.map(|e| ("error_type".to_string(), Value::Str(e.to_string())));
        r.str(
            json.object(
                ev.attributes
                    .iter()
                    .chain(repeated.iter())
                    .map(|(k, v)| (k.as_str(), v)),
            ),
        );
        r.str(fields.object(extra.iter().map(|(k, v)| (k.as_str(), v))));
        r.end();
    }

    /// Appends a task span's row.
    pub fn span(&mut self, sp: &TaskSpan) {
        let ids = &self.ids;
        let (status, code) = match sp.state {
            TaskState::Completed => ("completed", "OK"),
            TaskState::Failed => ("failed", "ERROR"),
            _ => ("canceled", "ERROR"),
        };
        let find = |k: &str| sp.extra.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let num_f = |k: &str| find(k).and_then(as_f64);
        let num_i = |k: &str| find(k).and_then(as_i64);
        // The typed maps only where every value fits them exactly (else
        // null: `attributes_json` has the values as they are).
        let gpu_mem = find("gpu_memory_peak_bytes")
            .and_then(object_of_numbers)
            .filter(|m| m.values().all(|v| v.is_i64()));
        let gpu_energy = find("gpu_energy_joules")
            .and_then(object_of_numbers)
            .filter(|m| m.values().all(|v| v.as_f64().is_some_and(f64::is_finite)));
        // Map values: a string as itself, anything else as its JSON text.
        let texts: Vec<(&str, Option<String>)> = sp
            .extra
            .iter()
            .map(|(k, v)| {
                let t = match v {
                    Value::Null => None,
                    Value::Str(s) => Some(s.clone()),
                    v => {
                        let mut b = Vec::new();
                        write_value(&mut b, v);
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                };
                (k.as_str(), t)
            })
            .collect();
        let mut exact = Json::default();
        let span_hex = ids.task_span_hex(&sp.task_id);
        let mut r = self.tasks.row();
        r.str(Some(&ids.session_id))
            .str(Some(&ids.node_id))
            .str(Some(&sp.task_id))
            .str(Some(&ids.trace_hex))
            .str(Some(&span_hex))
            .str(Some(&ids.session_span_hex))
            .time(Some(sp.start_ns))
            .time(Some(sp.end_ns))
            .f64(Some(
                (sp.end_ns.saturating_sub(sp.start_ns) as f64 / 1e6 * 1000.0).round() / 1000.0,
            ))
            .str(Some(status))
            .str(Some(code))
            .str(sp.error_type.as_deref())
            .str(sp.error_type.as_deref())
            .str(Some(&sp.backend))
            .str(Some(&sp.executable))
            .str(Some(&sp.task_type))
            .bool(Some(sp.incomplete))
            .bool(Some(sp.closed_at_session_end))
            .time(sp.queued_ns)
            .f64(num_f("cpu_user_seconds"))
            .f64(num_f("cpu_system_seconds"))
            .i64(num_i("max_rss_bytes"))
            .i64(num_i("read_bytes"))
            .i64(num_i("write_bytes"))
            .i64_map(
                gpu_mem
                    .as_ref()
                    .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_i64()))),
            )
            .f64_map(
                gpu_energy
                    .as_ref()
                    .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_f64()))),
            )
            .str_map(Some(texts.iter().map(|(k, v)| (*k, v.as_deref()))))
            .str(Some(
                exact
                    .object(sp.extra.iter().map(|(k, v)| (k.as_str(), v)))
                    .unwrap_or("{}"),
            ));
        r.end();
    }
}

/// A JSON object of numbers (`{"0": 1024}`), as its entries.
fn object_of_numbers(v: &Value) -> Option<serde_json::Map<String, serde_json::Value>> {
    let Value::Json(text) = v else {
        return None;
    };
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The columns every event table starts with ([`EVENT`]), as the JSONL
/// line of `ev` (seen on `node`) has them.
fn prefix(r: &mut Row<'_>, ids: &Ids, hex: &mut [u8; 32], node: &str, ev: &Event) {
    // The node rule of the JSONL (`crate::event_json`): session events
    // name a node only if they came with one; others are the log's node's.
    let own = (!node.is_empty()).then_some(node);
    let node_id = match &ev.kind {
        EventKind::SessionStarted | EventKind::SessionEnded { .. } => ev.node_id.as_deref(),
        _ => ev.node_id.as_deref().or(own),
    };
    let task_span = match (&ev.kind, &ev.task_id) {
        (
            EventKind::Task(_) | EventKind::Custom { .. } | EventKind::TaskResources(_),
            Some(task),
        ) => Some(ids.task_span_hex(task)),
        _ => None,
    };
    r.time(Some(ev.event_time_ns))
        .time(Some(ev.emit_time_ns))
        .str(Some(hex32(hex, ev.event_id)))
        .str(Some(ev.kind.type_name()))
        .str(Some(&ids.session_id))
        .str(node_id)
        .str(ev.backend.as_deref())
        .str(ev.task_id.as_deref())
        .str(Some(&ids.trace_hex))
        .str(Some(task_span.as_deref().unwrap_or(&ids.session_span_hex)));
}

/// `v` as 32 lowercase hex digits, in `buf`.
fn hex32(buf: &mut [u8; 32], v: u128) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (4 * (31 - i))) & 0xf) as usize];
    }
    std::str::from_utf8(buf).expect("hex digits")
}

/// The extension columns `specs`, from the update's extension fields.
fn extension_columns(r: &mut Row<'_>, specs: &[Spec], extra: &[(String, Value)]) {
    for &(name, kind, _) in specs {
        let v = extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| fits(kind, v));
        append(r, kind, v);
    }
}

/// The extension fields that have no column of their own in `specs` (or
/// whose value the column cannot hold), not null, then `more`.
fn leftovers<'a>(
    specs: &'a [Spec],
    extra: &'a [(String, Value)],
    more: &'a [(String, Value)],
) -> impl Iterator<Item = (&'a str, &'a Value)> {
    extra
        .iter()
        .filter(move |(k, v)| {
            !matches!(v, Value::Null)
                && !specs
                    .iter()
                    .any(|&(name, kind, _)| name == k && fits(kind, v))
        })
        .chain(more.iter())
        .map(|(k, v)| (k.as_str(), v))
}

/// `session`: one row per node log: its header, what reading it found, and
/// the metric line and session span a conversion of that log alone writes
/// (as JSON text: the agent's own cost, RHAPSODY's instruments, the GPUs'
/// energy, `tal_logs`), and the agent's histograms in HdrHistogram's V2
/// serialisation (which its libraries read), so that the percentiles of
/// several nodes can be merged exactly as `tal convert` merges them; and
/// the agent's last snapshot whole, in the log's encoding, for tal's own
/// readers of the dataset.
pub const SESSION: &[Spec] = &[
    ("session_id", Str, false),
    ("node_id", Str, false),
    ("hostname", Str, false),
    ("backend", Str, false),
    ("tal_version", Str, false),
    ("start_time", Time, false),
    ("end_time", Time, false),
    ("duration_seconds", F64, false),
    ("recovered", Bool, false),
    ("clean_end", Bool, false),
    ("records", I64, false),
    ("corrupt_frames", I64, false),
    ("truncated", Bool, false),
    ("interval_seconds", F64, false),
    ("ncpus", I64, false),
    ("events", I64, false),
    ("tasks", I64, false),
    ("attributes", StrMap, false),
    ("metric", Str, false),
    ("session_span", Str, false),
    ("hist_cpu_permille", Bin, true),
    ("hist_mem_permille", Bin, true),
    ("hist_sample_latency_ns", Bin, true),
    ("hist_jitter_ns", Bin, true),
    ("hist_nvml_latency_ns", Bin, true),
    ("agent_snapshot", Bin, true),
];

/// What a `session` row holds (see [`SESSION`]).
#[derive(Debug)]
pub struct SessionRow<'a> {
    /// The log's header.
    pub header: &'a crate::log::Header,
    /// What reading it found.
    pub stats: &'a crate::log::ReadStats,
    /// The session's start and end, ns since the epoch.
    pub start_ns: i64,
    /// ns since the epoch.
    pub end_ns: i64,
    /// The log has no SessionEnded (its agent was killed).
    pub recovered: bool,
    /// Event rows and task rows written.
    pub events: u64,
    /// Task rows.
    pub tasks: u64,
    /// The metric line, JSON.
    pub metric: &'a str,
    /// The session span line, JSON.
    pub session_span: &'a str,
    /// The log's last agent snapshot, for its histograms.
    pub snapshot: Option<&'a crate::record::AgentSnapshot>,
}

/// The `session` table of one log: one row.
pub fn session_table(s: &SessionRow<'_>) -> Table {
    let mut t = Table::new(SESSION);
    let h = s.header;
    let mut r = t.row();
    r.str(Some(&h.session_id))
        .str(Some(&h.node_id))
        .str(Some(&h.hostname))
        .str(Some(&h.backend))
        .str(Some(&h.tal_version))
        .time(Some(s.start_ns))
        .time(Some(s.end_ns))
        .f64(Some(crate::clock::ns_to_secs(
            s.end_ns.saturating_sub(s.start_ns),
        )))
        .bool(Some(s.recovered))
        .bool(Some(s.stats.end_marker))
        .i64(Some(s.stats.records as i64))
        .i64(Some(s.stats.corrupt_frames as i64))
        .bool(Some(s.stats.truncated_tail))
        .f64(Some(h.interval_ns as f64 / 1e9))
        .i64(Some(i64::from(h.ncpus)))
        .i64(Some(s.events as i64))
        .i64(Some(s.tasks as i64))
        .str_map(Some(
            h.attributes
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        ))
        .str(Some(s.metric.trim_end()))
        .str(Some(s.session_span.trim_end()));
    let hist = |f: fn(&crate::record::AgentSnapshot) -> &Vec<u8>| {
        s.snapshot
            .map(f)
            .filter(|b| !b.is_empty())
            .map(Vec::as_slice)
    };
    r.bin(hist(|s| &s.hist_cpu_permille))
        .bin(hist(|s| &s.hist_mem_permille))
        .bin(hist(|s| &s.hist_sample_latency_ns))
        .bin(hist(|s| &s.hist_jitter_ns))
        .bin(hist(|s| &s.hist_nvml_latency_ns));
    // The whole snapshot, in the log's own encoding: `tal report` and
    // `tal summary` of the dataset merge the nodes' agent figures from it
    // exactly as a conversion of their logs does.
    let snapshot = s
        .snapshot
        .and_then(|s| bincode::encode_to_vec(s, crate::log::bincode_config()).ok());
    r.bin(snapshot.as_deref());
    r.end();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_columns_are_the_tables_own() {
        let names = |s: &[Spec]| s.iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(
            names(SAMPLE_EXTRA),
            [
                "job_cpu_percent",
                "job_memory_bytes",
                "job_memory_peak_bytes",
                "job_memory_percent",
                "job_disk_read_bytes",
                "job_disk_write_bytes"
            ]
        );
        let gpu = names(GPU_EXTRA);
        assert_eq!(gpu.first(), Some(&"gpu_samples"));
        assert_eq!(gpu.last(), Some(&"nvml_latency_us"));
        assert_eq!(gpu.len(), 11);
    }
}
