//! A session's JSONL (tal's or RHAPSODY's) as a Trace Event Format JSON
//! file, which Perfetto UI (ui.perfetto.dev) and `chrome://tracing` open.
//!
//! What is in it:
//! - one process per node (`node <id>`), and one named `session` for the
//!   session span and for whatever names no node (RHAPSODY's own task
//!   events carry no `node_id`);
//! - each task as a complete slice (`ph: X`, its span's start and end) on a
//!   `slot N` thread of its node: tasks that overlap in time get different
//!   slots (the lowest free one), so a node's slots read as a Gantt chart of
//!   its concurrency, and a slice never overlaps another on its track, which
//!   both viewers need. The slice is named by the task id, its category is
//!   its `task_type`, its colour (`cname`, which `chrome://tracing` uses)
//!   says completed, failed or canceled, and its arguments are the span's
//!   attributes, duration and status;
//! - the node series as counter tracks (`ph: C`): `cpu_percent`,
//!   `memory_percent`, disk and network bytes per interval, and per GPU
//!   `gpu<N> <field>` for each number of its `per_gpu` updates (utilisation,
//!   memory, power, …); per-core CPU is left out (one track per core
//!   drowns the view: `tal report` shows it as a heatmap);
//! - each task's resource samples (`tal.TaskResourceUpdate`) as counter
//!   tracks of its node, `task <id> cpu_percent` and `task <id> rss_mib`
//!   (two tracks per sampled task);
//! - other custom events (`app.Phase`, `tal.*`) as instants (`ph: i`) on
//!   their node's process, or global without a node, with their fields as
//!   args;
//! - process and thread names and sort order as metadata (`ph: M`), and the
//!   session's id, trace id and last metric line in `otherData`.
//!
//! Timestamps are µs from the session's start (the session span's, or the
//! earliest time seen), with ns precision.
//!
//! The JSONL is read twice: a first pass learns the session's start, the
//! nodes, each task's node (from its events' `node_id`) and each span's
//! interval, and assigns slots; the second writes. Memory is one entry per
//! task (its id while the first pass runs, then 24 bytes), not the events.
//! Lines are read as [`crate::convert::lines`] says (overlong ones skipped,
//! `NaN` as null), and what that met is in [`ChromeStats::read`].

use crate::convert::lines::{input_error, LineStats};
use crate::convert::{each_jsonl_line, json_time_ns, NodeIndex, NODE_SERIES};
use crate::json::JsonOut;
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, BufRead, Write};

/// What was written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChromeStats {
    /// Task slices.
    pub tasks: usize,
    /// Counter samples.
    pub counters: usize,
    /// Instant events.
    pub instants: usize,
    /// Processes (nodes, and the session's).
    pub processes: usize,
    /// What reading the JSONL met (see [`crate::convert::lines`]).
    pub read: LineStats,
}

/// The first pass's findings.
#[derive(Debug, Default)]
struct Plan {
    start_ns: Option<i64>,
    session_span_start: Option<i64>,
    /// Node ids; index 0 is the session's process ("": no node).
    nodes: NodeIndex,
    task_node: HashMap<String, u32>,
    /// Each task span, in file order: start, end, and its task's id until
    /// the pass ends.
    spans: Vec<(i64, i64, Option<String>)>,
    /// After the pass: each span's node and slot, in file order.
    placed: Vec<(u32, u32)>,
    /// Slots used per node.
    slots: Vec<u32>,
    session_id: String,
    trace_id: String,
}

impl Plan {
    fn saw_time(&mut self, t: Option<i64>) {
        if let Some(t) = t {
            self.start_ns = Some(self.start_ns.map_or(t, |s| s.min(t)));
        }
    }

    fn line(&mut self, v: &Value) {
        match v["section"].as_str() {
            Some("event") => {
                if self.session_id.is_empty() {
                    if let Some(s) = v["session_id"].as_str() {
                        self.session_id = s.to_string();
                    }
                }
                if self.trace_id.is_empty() {
                    if let Some(s) = v["trace_id"].as_str() {
                        self.trace_id = s.to_string();
                    }
                }
                self.saw_time(json_time_ns(&v["event_time"]));
                let node = v["node_id"].as_str().filter(|n| !n.is_empty());
                let node = node.map(|n| self.nodes.add(n));
                if let (Some(task), Some(node)) = (v["task_id"].as_str(), node) {
                    if !self.task_node.contains_key(task) {
                        self.task_node.insert(task.to_string(), node);
                    }
                }
            }
            Some("span") => {
                let (Some(s), Some(e)) = (v["start_ns"].as_i64(), v["end_ns"].as_i64()) else {
                    return;
                };
                if v["name"] == "session" {
                    self.session_span_start = Some(s);
                } else {
                    let task = v["attributes"]["task_id"].as_str().map(String::from);
                    self.spans.push((s, e.max(s), task));
                }
                self.saw_time(Some(s));
            }
            _ => {}
        }
    }

    /// Each span's node, and slots: per node, spans by start, each on the
    /// lowest slot whose last task has ended.
    fn place(&mut self) {
        let mut placed = vec![(0u32, 0u32); self.spans.len()];
        let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for (i, (_, _, task)) in self.spans.iter_mut().enumerate() {
            let node = task
                .take()
                .and_then(|t| self.task_node.get(&t).copied())
                .unwrap_or(0);
            placed[i].0 = node;
            by_node[node as usize].push(i);
        }
        self.task_node = HashMap::new();
        self.slots = vec![0; self.nodes.len()];
        for (node, idx) in by_node.into_iter().enumerate() {
            let iv: Vec<(i64, i64)> = idx
                .iter()
                .map(|&i| (self.spans[i].0, self.spans[i].1))
                .collect();
            let (slots, n) = assign_slots(&iv);
            self.slots[node] = n;
            for (&i, slot) in idx.iter().zip(slots) {
                placed[i].1 = slot;
            }
        }
        self.placed = placed;
    }
}

/// Slots for intervals `(start, end)` of one node, given in any order:
/// each, by start, on the lowest slot whose last interval has ended (an
/// interval may start when another ends). Returns each interval's slot and
/// how many slots there are.
pub fn assign_slots(iv: &[(i64, i64)]) -> (Vec<u32>, u32) {
    let mut order: Vec<usize> = (0..iv.len()).collect();
    order.sort_by_key(|&i| iv[i]);
    let mut slots = vec![0u32; iv.len()];
    let mut n = 0u32;
    // Busy slots by the time they free up; free slots, lowest first.
    let mut busy: BinaryHeap<Reverse<(i64, u32)>> = BinaryHeap::new();
    let mut free: BinaryHeap<Reverse<u32>> = BinaryHeap::new();
    for i in order {
        let (start, end) = iv[i];
        while let Some(&Reverse((until, slot))) = busy.peek() {
            if until > start {
                break;
            }
            busy.pop();
            free.push(Reverse(slot));
        }
        let slot = match free.pop() {
            Some(Reverse(s)) => s,
            None => {
                n += 1;
                n - 1
            }
        };
        busy.push(Reverse((end, slot)));
        slots[i] = slot;
    }
    (slots, n)
}

/// Reads the JSONL `open()` gives (twice: see the module doc) and writes
/// the trace to `out`.
pub fn write_chrome_trace<R: BufRead>(
    mut open: impl FnMut() -> io::Result<R>,
    out: &mut impl Write,
) -> io::Result<ChromeStats> {
    let mut plan = Plan::default();
    plan.nodes.add("");
    let read = each_jsonl_line(open().map_err(input_error)?, |v| {
        plan.line(&v);
        Ok(())
    })?;
    plan.place();
    let start = plan
        .session_span_start
        .or(plan.start_ns)
        .unwrap_or_default();
    let mut w = TraceWriter {
        out,
        buf: Vec::with_capacity(1 << 16),
        first: true,
        start,
        stats: ChromeStats {
            processes: plan.nodes.len(),
            read,
            ..ChromeStats::default()
        },
    };
    w.out
        .write_all(b"{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n")?;
    w.metadata(&plan)?;
    let mut span_no = 0;
    let mut metric = None;
    each_jsonl_line(open().map_err(input_error)?, |v| {
        let v = &v;
        match v["section"].as_str() {
            Some("event") => w.event(&plan, v),
            Some("span") if v["name"] == "session" => w.session_span(v),
            // As the first pass counted them.
            Some("span") if v["start_ns"].as_i64().is_some() && v["end_ns"].as_i64().is_some() => {
                if let Some(&(node, slot)) = plan.placed.get(span_no) {
                    w.task(node, slot, v);
                }
                span_no += 1;
            }
            Some("metric") => metric = Some(v.clone()),
            _ => {}
        }
        w.flush_some()
    })?;
    w.out.write_all(&w.buf)?;
    let (stats, out) = (w.stats, w.out);
    let mut tail = Vec::new();
    tail.extend_from_slice(b"\n], \"otherData\": ");
    let mut o = JsonOut::object(&mut tail);
    o.str("session_id", &plan.session_id)
        .str("trace_id", &plan.trace_id)
        .f64("start_time_s", crate::clock::ns_to_secs(start))
        .str("written_by", concat!("tal ", env!("CARGO_PKG_VERSION")));
    if let Some(m) = &metric {
        o.key("metric");
        o.raw(&serde_json::to_vec(m).unwrap_or_default());
    }
    o.end();
    tail.extend_from_slice(b"}\n");
    out.write_all(&tail)?;
    out.flush()?;
    Ok(stats)
}

/// The top-level fields of a ResourceUpdate that are not series.
const NOT_SERIES: [&str; 13] = [
    "event_id",
    "event_type",
    "event_time",
    "emit_time",
    "session_id",
    "backend",
    "task_id",
    "node_id",
    "gpu_id",
    "resource_scope",
    "trace_id",
    "span_id",
    "name",
];

struct TraceWriter<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    first: bool,
    start: i64,
    stats: ChromeStats,
}

impl<W: Write> TraceWriter<'_, W> {
    /// Starts one trace event (the comma before it, and its object).
    fn begin(&mut self) -> JsonOut<'_> {
        if !self.first {
            self.buf.extend_from_slice(b",\n");
        }
        self.first = false;
        JsonOut::object(&mut self.buf)
    }

    fn flush_some(&mut self) -> io::Result<()> {
        if self.buf.len() >= 1 << 16 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// µs from the session's start.
    fn ts(&self, ns: i64) -> f64 {
        ns.saturating_sub(self.start) as f64 / 1000.0
    }

    fn metadata(&mut self, plan: &Plan) -> io::Result<()> {
        for (i, node) in plan.nodes.names.iter().enumerate() {
            let pid = i as u64 + 1;
            let name = if i == 0 {
                "session".to_string()
            } else {
                format!("node {node}")
            };
            let mut o = self.begin();
            o.str("ph", "M")
                .str("name", "process_name")
                .uint("pid", pid)
                .uint("tid", 0)
                .nested("args", |a| {
                    a.str("name", &name);
                });
            o.end();
            let mut o = self.begin();
            o.str("ph", "M")
                .str("name", "process_sort_index")
                .uint("pid", pid)
                .uint("tid", 0)
                .nested("args", |a| {
                    a.uint("sort_index", pid);
                });
            o.end();
            for slot in 0..plan.slots[i] {
                let mut o = self.begin();
                o.str("ph", "M")
                    .str("name", "thread_name")
                    .uint("pid", pid)
                    .uint("tid", u64::from(slot) + 1)
                    .nested("args", |a| {
                        a.str("name", &format!("slot {slot}"));
                    });
                o.end();
            }
        }
        self.flush_some()
    }

    fn session_span(&mut self, v: &Value) {
        let (Some(s), Some(e)) = (v["start_ns"].as_i64(), v["end_ns"].as_i64()) else {
            return;
        };
        let (ts, dur) = (self.ts(s), e.saturating_sub(s).max(0) as f64 / 1000.0);
        let mut o = self.begin();
        o.str("ph", "X")
            .str("name", "session")
            .str("cat", "session")
            .uint("pid", 1)
            .uint("tid", 0)
            .f64("ts", ts)
            .f64("dur", dur);
        o.key("args");
        o.raw(&serde_json::to_vec(&v["attributes"]).unwrap_or_default());
        o.end();
    }

    fn task(&mut self, node: u32, slot: u32, v: &Value) {
        let (Some(s), Some(e)) = (v["start_ns"].as_i64(), v["end_ns"].as_i64()) else {
            return;
        };
        let attrs = &v["attributes"];
        let status = attrs["status"].as_str().unwrap_or("");
        let colour = match status {
            "completed" => "good",
            "failed" => "bad",
            _ => "grey",
        };
        let (ts, dur) = (self.ts(s), e.saturating_sub(s).max(0) as f64 / 1000.0);
        let mut args = attrs.clone();
        if let Value::Object(m) = &mut args {
            m.insert("status_code".into(), v["status_code"].clone());
            if !v["status_description"].is_null() {
                m.insert("status_description".into(), v["status_description"].clone());
            }
            m.insert("duration_ms".into(), v["duration_ms"].clone());
        }
        let mut o = self.begin();
        o.str("ph", "X")
            .str("name", attrs["task_id"].as_str().unwrap_or("task"))
            .str(
                "cat",
                attrs["task_type"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .unwrap_or("task"),
            )
            .uint("pid", u64::from(node) + 1)
            .uint("tid", u64::from(slot) + 1)
            .f64("ts", ts)
            .f64("dur", dur)
            .str("cname", colour);
        o.key("args");
        o.raw(&serde_json::to_vec(&args).unwrap_or_default());
        o.end();
        self.stats.tasks += 1;
    }

    fn event(&mut self, plan: &Plan, v: &Value) {
        let Some(t) = json_time_ns(&v["event_time"]) else {
            return;
        };
        let ty = v["event_type"].as_str().unwrap_or("");
        let pid = v["node_id"]
            .as_str()
            .and_then(|n| plan.nodes.get(n))
            .map_or(1, |i| u64::from(i) + 1);
        if ty == "ResourceUpdate" {
            self.counters(pid, t, v);
        } else if ty == crate::record::TaskResources::EVENT_TYPE {
            let task = v["task_id"].as_str().unwrap_or("?");
            let ts = self.ts(t);
            let rss_mib = v["rss_bytes"]
                .as_f64()
                .map(|b| (b / 1048576.0 * 10.0).round() / 10.0);
            for (name, x) in [
                ("cpu_percent", v["cpu_percent"].as_f64()),
                ("rss_mib", rss_mib),
            ] {
                if let Some(x) = x {
                    self.counter(pid, ts, &format!("task {task} {name}"), x);
                }
            }
        } else if ty.contains('.') {
            let ts = self.ts(t);
            let mut args = serde_json::Map::new();
            if let Value::Object(m) = v {
                for (k, x) in m {
                    if !NOT_SERIES.contains(&k.as_str()) && k != "section" {
                        args.insert(k.clone(), x.clone());
                    }
                }
                if let Some(task) = v["task_id"].as_str() {
                    args.insert("task_id".into(), Value::String(task.into()));
                }
            }
            let mut o = self.begin();
            o.str("ph", "i")
                .str("name", ty)
                .str("cat", "event")
                .uint("pid", pid)
                .uint("tid", 0)
                .f64("ts", ts)
                .str("s", if pid == 1 { "g" } else { "p" });
            o.key("args");
            o.raw(&serde_json::to_vec(&args).unwrap_or_default());
            o.end();
            self.stats.instants += 1;
        }
    }

    /// One counter event: `name` = `x` on process `pid` at `ts` µs.
    fn counter(&mut self, pid: u64, ts: f64, name: &str, x: f64) {
        let mut o = self.begin();
        o.str("ph", "C")
            .str("name", name)
            .uint("pid", pid)
            .uint("tid", 0)
            .f64("ts", ts)
            .nested("args", |a| {
                a.f64("value", x);
            });
        o.end();
        self.stats.counters += 1;
    }

    fn counters(&mut self, pid: u64, t: i64, v: &Value) {
        let ts = self.ts(t);
        let gpu = match (v["resource_scope"].as_str(), v["gpu_id"].as_u64()) {
            (Some("per_gpu"), Some(g)) => Some(g),
            _ => None,
        };
        let Value::Object(m) = v else { return };
        let put = |w: &mut Self, name: &str, x: f64| w.counter(pid, ts, name, x);
        match gpu {
            None => {
                for k in NODE_SERIES {
                    if let Some(x) = m.get(k).and_then(Value::as_f64) {
                        put(self, k, x);
                    }
                }
            }
            Some(g) => {
                for (k, x) in m {
                    if NOT_SERIES.contains(&k.as_str()) {
                        continue;
                    }
                    if let Some(x) = x.as_f64() {
                        put(self, &format!("gpu{g} {k}"), x);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(jsonl: &str) -> (Value, ChromeStats) {
        let mut out = Vec::new();
        let stats = write_chrome_trace(|| Ok(io::Cursor::new(jsonl.as_bytes())), &mut out).unwrap();
        (serde_json::from_slice(&out).expect("valid JSON"), stats)
    }

    fn span(task: &str, s: i64, e: i64, status: &str) -> String {
        format!(
            r#"{{"name": "task", "start_ns": {s}, "end_ns": {e}, "duration_ms": 1.0, "status_code": "OK", "status_description": null, "attributes": {{"task_id": "{task}", "status": "{status}", "task_type": "T"}}, "section": "span"}}"#
        )
    }

    fn started(task: &str, node: &str, t: f64) -> String {
        format!(
            r#"{{"event_type": "TaskStarted", "event_time": {t}, "session_id": "s", "task_id": "{task}", "node_id": "{node}", "attributes": {{}}, "trace_id": "0xabc", "section": "event"}}"#
        )
    }

    #[test]
    fn overlapping_tasks_get_separate_slots_per_node() {
        let lines = [
            started("a", "n1", 1.0),
            started("b", "n1", 1.5),
            started("c", "n2", 1.5),
            started("d", "n1", 3.0),
            span("a", 1_000_000_000, 2_000_000_000, "completed"),
            span("b", 1_500_000_000, 4_000_000_000, "failed"),
            span("c", 1_500_000_000, 2_000_000_000, "completed"),
            span("d", 3_000_000_000, 3_500_000_000, "canceled"),
            r#"{"name": "session", "start_ns": 1000000000, "end_ns": 5000000000, "attributes": {"session_id": "s"}, "section": "span"}"#.into(),
        ];
        let (t, stats) = trace(&lines.join("\n"));
        assert_eq!(stats.tasks, 4);
        assert_eq!(stats.processes, 3);
        let ev = t["traceEvents"].as_array().unwrap();
        let slice = |name: &str| {
            ev.iter()
                .find(|e| e["ph"] == "X" && e["name"] == name)
                .unwrap()
                .clone()
        };
        let (a, b, c, d) = (slice("a"), slice("b"), slice("c"), slice("d"));
        assert_eq!(a["pid"], b["pid"]);
        assert_ne!(a["pid"], c["pid"]);
        assert_ne!(a["tid"], b["tid"], "overlapping tasks share a slot");
        assert_eq!(d["tid"], a["tid"], "the freed lowest slot is reused");
        assert_eq!(a["ts"], 0.0);
        assert_eq!(b["ts"], 500_000.0);
        assert_eq!(b["dur"], 2_500_000.0);
        assert_eq!(b["cname"], "bad");
        assert_eq!(b["cat"], "T");
        let names: Vec<_> = ev
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["session", "node n1", "node n2"]);
        assert_eq!(t["otherData"]["session_id"], "s");
    }

    #[test]
    fn resources_are_counters_and_custom_events_instants() {
        let lines = [
            r#"{"event_type": "ResourceUpdate", "event_time": 10.0, "node_id": "n", "cpu_percent": 50.0, "memory_percent": null, "gpu_id": null, "resource_scope": "per_node", "net_sent_bytes": 7.0, "section": "event"}"#,
            r#"{"event_type": "ResourceUpdate", "event_time": 10.1, "node_id": "n", "gpu_percent": 99.0, "gpu_id": 1, "resource_scope": "per_gpu", "gpu_power_watts": 300.5, "section": "event"}"#,
            r#"{"event_type": "app.Phase", "event_time": 10.2, "node_id": "n", "task_id": "t", "phase": "load", "attributes": {}, "section": "event"}"#,
        ];
        let (t, stats) = trace(&lines.join("\n"));
        assert_eq!((stats.counters, stats.instants), (4, 1));
        let ev = t["traceEvents"].as_array().unwrap();
        let names: Vec<_> = ev
            .iter()
            .filter(|e| e["ph"] == "C")
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "cpu_percent",
                "net_sent_bytes",
                "gpu1 gpu_percent",
                "gpu1 gpu_power_watts"
            ]
        );
        let i = ev.iter().find(|e| e["ph"] == "i").unwrap();
        assert_eq!(i["args"]["phase"], "load");
        assert_eq!(i["args"]["task_id"], "t");
        assert_eq!(i["pid"], 2);
        assert!((i["ts"].as_f64().unwrap() - 200_000.0).abs() < 1.0);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let mut out = Vec::new();
        let e = write_chrome_trace(|| Ok(io::Cursor::new(&b"{}\nnot json\n"[..])), &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
