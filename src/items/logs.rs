//! Node logs' items: the session's replay (`crate::convert::replay`, the
//! same events with the same filled-in fields as the JSONL checkpoint),
//! each event handed over as its record with no JSON text in between.
//!
//! Order (see the module doc of [`super`]): the events as the checkpoint
//! has them, each task span as the replay closes it (just before its
//! terminal event), then the metric line's figures and the session span.
//! The metric line is the one item made through JSON: it is written as
//! the checkpoint writes it (`crate::convert::jsonl::write_metric_line`)
//! and parsed, once per pass, since its figures are open-ended names.
//!
//! Each pass replays the logs afresh (a binary log decodes far faster than
//! its JSONL parses): the first pass takes the logs as opened, later ones
//! open the same files again.

use super::{Body, Fields, GpuSample, Head, Item, NodeSample, PerCore, Source, Span, TaskSample};
use crate::convert::lines::LineStats;
use crate::convert::replay::{replay, Sink};
use crate::convert::{self, ConvertError};
use crate::event_json::session_energy;
use crate::log::LogReader;
use crate::record::{Event, EventKind, ResourceScope, TaskState};
use crate::tasks::TaskSpan;
use serde_json::Value;
use std::borrow::Cow;
use std::io;
use std::path::PathBuf;

/// A session's node logs.
#[derive(Debug)]
pub struct Logs {
    /// The logs taken, opened, for the first pass.
    readers: Option<Vec<LogReader>>,
    /// Their paths, for the later passes.
    paths: Vec<PathBuf>,
    /// Their bytes together.
    bytes: u64,
    /// Inputs refused, each with why.
    pub refused: Vec<String>,
    /// Inputs taken once though given more than once.
    pub repeated: Vec<String>,
    /// Shows each pass's progress (unless quiet).
    quiet: bool,
    /// What the progress says.
    what: String,
}

impl Logs {
    /// Opens the node logs `paths` (see [`convert::open_logs`]: logs
    /// refused or repeated are said in [`Self::refused`] and
    /// [`Self::repeated`]); each pass shows its progress as `what` unless
    /// `quiet`.
    pub fn open(paths: &[PathBuf], what: &str, quiet: bool) -> Result<Self, ConvertError> {
        let inputs = convert::open_logs(paths)?;
        let paths: Vec<PathBuf> = inputs
            .readers
            .iter()
            .map(|r| r.path().to_path_buf())
            .collect();
        let bytes = paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(Self {
            readers: Some(inputs.readers),
            paths,
            bytes,
            refused: inputs.refused.iter().map(|e| e.to_string()).collect(),
            repeated: inputs.repeated,
            quiet,
            what: what.to_string(),
        })
    }

    /// The readers of a pass.
    fn readers(&mut self) -> io::Result<Vec<LogReader>> {
        if let Some(r) = self.readers.take() {
            return Ok(r);
        }
        self.paths
            .iter()
            .map(|p| {
                LogReader::open(p).map_err(|e| {
                    crate::convert::lines::input_error(io::Error::other(e.to_string()))
                })
            })
            .collect()
    }
}

impl Source for Logs {
    fn each(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<LineStats> {
        let readers = self.readers()?;
        let progress = crate::progress::Progress::bytes(&self.what, self.bytes, self.quiet);
        let mut feed = Feed {
            session_id: readers[0].header().session_id.clone(),
            f,
        };
        let r = replay(readers, &mut feed, &progress);
        progress.finish();
        let r = r?;
        let nodes = r.merge.nodes.len();
        let energy = session_energy(&r.tracker, nodes);
        let mut buf = Vec::new();
        convert::jsonl::write_metric_line(&mut buf, &r.merge, &r.inst, r.end.end_ns, &energy);
        let metric: Value = serde_json::from_slice(&buf).map_err(io::Error::other)?;
        if let Value::Object(m) = &metric {
            (feed.f)(Item::Metric(m));
        }
        (feed.f)(Item::SessionSpan {
            start_ns: r.start_ns,
            end_ns: r.end.end_ns,
        });
        // The lines of the checkpoint these items are: the events, the
        // metric line, the task spans and the session's.
        Ok(LineStats {
            lines: r.events + r.tasks + 2,
            ..LineStats::default()
        })
    }
}

/// The replay's sink: each event and span as an item.
struct Feed<'f, 'g> {
    session_id: String,
    f: &'f mut (dyn FnMut(Item<'_>) + 'g),
}

impl Sink for Feed<'_, '_> {
    fn event(&mut self, node: &str, ev: &Event) -> io::Result<()> {
        (self.f)(Item::Event(head(&self.session_id, node, ev), body(ev)));
        Ok(())
    }

    fn span(&mut self, span: &TaskSpan) -> io::Result<()> {
        (self.f)(Item::TaskSpan(Span {
            start_ns: span.start_ns,
            end_ns: span.end_ns,
            attributes: Cow::Owned(span_attributes(&self.session_id, span)),
        }));
        Ok(())
    }
}

/// An event's head, as its line has it (see `crate::event_json`).
fn head<'a>(session_id: &'a str, node: &'a str, ev: &'a Event) -> Head<'a> {
    // Resource and client events without a node_id happened on the log's
    // node; session events have none of their own.
    let own = (!node.is_empty()).then_some(node);
    let node_id = match &ev.kind {
        EventKind::SessionStarted | EventKind::SessionEnded { .. } => ev.node_id.as_deref(),
        _ => ev.node_id.as_deref().or(own),
    };
    Head {
        event_type: Some(ev.kind.type_name()),
        time_s: Some(crate::clock::ns_to_secs(ev.event_time_ns)).filter(|t| t.is_finite()),
        session_id: Some(session_id),
        node_id,
        task_id: ev.task_id.as_deref(),
    }
}

/// A finite figure (a line writes the others `null`).
fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

/// An event's body, as its line has it.
fn body(ev: &Event) -> Body<'_> {
    match &ev.kind {
        EventKind::ResourceUpdate(u) => {
            // The agent's extra fields: the last of a name wins.
            let x = |k: &str| {
                u.extra
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .and_then(|(_, v)| super::record_num(v))
            };
            let fixed = |k: &str, v: Option<f64>| {
                if u.extra.iter().any(|(n, _)| n == k) {
                    x(k)
                } else {
                    finite(v)
                }
            };
            match u.scope {
                ResourceScope::PerGpu(g) => Body::Gpu(GpuSample {
                    gpu_id: u64::from(g),
                    gpu_percent: fixed("gpu_percent", u.gpu_percent),
                    gpu_memory_used_bytes: x("gpu_memory_used_bytes"),
                    gpu_memory_total_bytes: x("gpu_memory_total_bytes"),
                    gpu_power_watts: x("gpu_power_watts"),
                    gpu_energy_joules: x("gpu_energy_joules"),
                }),
                ResourceScope::PerNode => Body::Node(NodeSample {
                    cpu_percent: fixed("cpu_percent", u.cpu_percent),
                    memory_percent: fixed("memory_percent", u.memory_percent),
                    disk_read_bytes: fixed("disk_read_bytes", u.disk_read_bytes),
                    disk_write_bytes: fixed("disk_write_bytes", u.disk_write_bytes),
                    net_sent_bytes: fixed("net_sent_bytes", u.net_sent_bytes),
                    net_recv_bytes: fixed("net_recv_bytes", u.net_recv_bytes),
                    job_cpu_percent: x("job_cpu_percent"),
                    job_memory_bytes: x("job_memory_bytes"),
                    job_memory_peak_bytes: x("job_memory_peak_bytes"),
                    job_disk_read_bytes: x("job_disk_read_bytes"),
                    job_disk_write_bytes: x("job_disk_write_bytes"),
                    per_core: (!u.cpu_percent_per_core.is_empty())
                        .then(|| PerCore::Record(&u.cpu_percent_per_core)),
                }),
            }
        }
        EventKind::TaskResources(r) => {
            let pct = crate::record::round1(f64::from(r.cpu_percent()));
            Body::Task(TaskSample {
                cpu_percent: finite(Some(pct)),
                rss_bytes: Some(r.rss_bytes as f64),
                threads: Some(f64::from(r.threads)),
                read_bytes: r.read_bytes.map(|b| b as f64),
                write_bytes: r.write_bytes.map(|b| b as f64),
            })
        }
        _ => Body::Other(Fields::Record(ev)),
    }
}

/// A task span's attributes, as its line has them (see
/// `crate::event_json::write_task_span`).
fn span_attributes(session_id: &str, sp: &TaskSpan) -> Value {
    let status = match sp.state {
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        _ => "canceled",
    };
    let mut a = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        a.insert(k.to_string(), v);
    };
    put("session_id", session_id.into());
    put("backend", sp.backend.as_str().into());
    put("task_id", sp.task_id.as_str().into());
    put("status", status.into());
    if let Some(e) = &sp.error_type {
        put("error_type", e.as_str().into());
    }
    put("executable", sp.executable.as_str().into());
    put("task_type", sp.task_type.as_str().into());
    if sp.incomplete {
        put("incomplete_lifecycle", true.into());
    }
    if sp.closed_at_session_end {
        put("closed_at_session_end", true.into());
    }
    if let Some(q) = sp.queued_ns {
        let s = crate::clock::ns_to_secs(q);
        put(
            "queued_time_s",
            serde_json::Number::from_f64(s).map_or(Value::Null, Value::Number),
        );
    }
    for (k, v) in &sp.extra {
        put(k, super::to_json(v));
    }
    Value::Object(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ResourceUpdate, TaskEvent, TaskResources, Value as V};

    /// What an item says, every figure of it, as text.
    fn said(item: &Item<'_>) -> String {
        let Item::Event(h, body) = item else {
            return format!("{item:?}");
        };
        let b = match body {
            Body::Node(n) => {
                let cores: Option<Vec<Option<f64>>> = n.per_core.map(|c| c.values().collect());
                format!(
                    "{:?} {cores:?}",
                    NodeSample {
                        per_core: None,
                        ..n.clone()
                    }
                )
            }
            Body::Other(f) => {
                let keys = ["duration_seconds", "cpu_user_seconds", "max_rss_bytes", "n"];
                let nums: Vec<Option<f64>> = keys.iter().map(|k| f.num(k)).collect();
                format!("{nums:?} {} {:?}", f.attributes(), f.first_own_string())
            }
            other => format!("{other:?}"),
        };
        format!("{h:?} {b}")
    }

    fn ev(kind: EventKind, task: Option<&str>, attributes: crate::record::Attributes) -> Event {
        Event {
            event_id: 7,
            event_time_ns: 1_795_000_000_123_456_789,
            emit_time_ns: 1_795_000_000_123_456_999,
            backend: Some("tal".into()),
            task_id: task.map(String::from),
            node_id: None,
            attributes,
            kind,
        }
    }

    #[test]
    fn a_records_item_says_what_its_jsonl_lines_item_says() {
        let mut node = ResourceUpdate::empty(ResourceScope::PerNode);
        node.cpu_percent = Some(f64::NAN);
        node.memory_percent = Some(12.3);
        node.disk_read_bytes = Some(4096.0);
        node.cpu_percent_per_core = vec![1.25, f32::NAN, 99.96, 0.04];
        node.extra = vec![
            ("job_memory_bytes".into(), V::Int(1 << 40)),
            ("job_cpu_percent".into(), V::Float(f64::INFINITY)),
            // A name the line has twice: the last one is read.
            ("memory_percent".into(), V::Float(45.6)),
        ];
        let mut gpu = ResourceUpdate::empty(ResourceScope::PerGpu(3));
        gpu.gpu_percent = Some(88.0);
        gpu.extra = vec![
            ("gpu_memory_used_bytes".into(), V::Int(5 << 30)),
            ("gpu_power_watts".into(), V::Json("301.5".into())),
            ("gpu_energy_joules".into(), V::Float(1234.5678)),
        ];
        let samples = TaskResources {
            cpu_user_percent: 33.33,
            cpu_system_percent: 1.11,
            rss_bytes: 123_456_789,
            threads: 4,
            processes: 2,
            read_bytes: None,
            write_bytes: Some(77),
            interval_seconds: 0.5,
            gpu_memory_bytes: vec![(0, 5)],
        };
        let task = |state, duration_seconds, extra| {
            EventKind::Task(TaskEvent {
                state,
                duration_seconds,
                error_type: None,
                extra,
            })
        };
        let figures = vec![
            ("cpu_user_seconds".into(), V::Float(1.5)),
            ("max_rss_bytes".into(), V::Int(9 << 20)),
            ("gpu_memory_peak_bytes".into(), V::Json("{\"0\": 5}".into())),
        ];
        let custom = EventKind::Custom {
            event_type: "app.Step".into(),
            fields: vec![
                ("n".into(), V::Int(3)),
                ("name".into(), V::Str("a common key".into())),
                ("phase".into(), V::Str("one".into())),
                ("phase".into(), V::Str("two".into())),
            ],
        };
        let events = [
            ev(EventKind::ResourceUpdate(node), None, vec![]),
            ev(EventKind::ResourceUpdate(gpu), None, vec![]),
            ev(EventKind::TaskResources(samples), Some("t1"), vec![]),
            ev(task(TaskState::Started, None, vec![]), Some("t1"), vec![]),
            ev(
                task(TaskState::Completed, None, vec![]),
                Some("t1"),
                figures,
            ),
            ev(
                task(TaskState::Failed, Some(2.5), vec![("n".into(), V::Int(4))]),
                Some("t2"),
                vec![],
            ),
            ev(custom, Some("t1"), vec![]),
            ev(EventKind::SessionStarted, None, vec![]),
            ev(
                EventKind::SessionEnded {
                    duration_seconds: 60.0,
                },
                None,
                vec![],
            ),
        ];
        let ctx = crate::event_json::Ctx::new("s");
        for e in &events {
            let direct = said(&Item::Event(head("s", "n1", e), body(e)));
            let mut line = Vec::new();
            ctx.event_line(&mut line, "n1", e);
            let v: Value = serde_json::from_slice(&line).unwrap();
            let mut from_line = String::new();
            crate::items::jsonl::line(&v, &mut |i| from_line = said(&i));
            assert_eq!(direct, from_line, "{}", String::from_utf8_lossy(&line));
        }
    }
}
