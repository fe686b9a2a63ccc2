//! One event, task span or session span as a line of RHAPSODY's JSONL
//! checkpoint (see `SCHEMA.md`), with the ids every line of a session
//! shares ([`Ctx`]).
//!
//! Both ends of tal write these lines: the converter (`convert::jsonl`),
//! which writes whole checkpoints from logs, and the recording agent, whose
//! live subscribers (`dispatch`) and live OTLP exporter (`otlp_live`) see
//! each event and span exactly as `convert` will write it. So the writer
//! lives here, below both: neither the dispatcher nor the converter imports
//! the other.

use crate::clock::ns_to_secs;
use crate::ids;
use crate::json::JsonOut;
use crate::record::{Event, EventKind, ResourceScope, TaskState, Value};
use crate::tasks::{TaskSpan, TaskTracker};

/// What every line of one session shares: the session id and its ids in
/// RHAPSODY's form. Also used by the agent to format events for live
/// subscribers exactly as `convert` writes them.
#[derive(Debug, Clone)]
pub struct Ctx {
    session_id: String,
    trace_hex: String,
    session_span_hex: String,
}

impl Ctx {
    /// The context of `session_id`.
    pub fn new(session_id: &str) -> Self {
        Self {
            trace_hex: ids::py_hex(ids::trace_id(session_id)),
            session_span_hex: ids::py_hex(u128::from(ids::session_span_id(session_id))),
            session_id: session_id.to_string(),
        }
    }

    /// Appends `ev` (seen on `node`) as one JSONL event line.
    pub fn event_line(&self, buf: &mut Vec<u8>, node: &str, ev: &Event) {
        write_event(buf, self, node, ev);
    }
}

fn write_event(buf: &mut Vec<u8>, ctx: &Ctx, node: &str, ev: &Event) {
    let mut o = JsonOut::object(buf);
    o.hex32("event_id", ev.event_id)
        .str("event_type", ev.kind.type_name())
        .f64("event_time", ns_to_secs(ev.event_time_ns))
        .f64("emit_time", ns_to_secs(ev.emit_time_ns))
        .str("session_id", &ctx.session_id)
        .opt_str("backend", ev.backend.as_deref())
        .opt_str("task_id", ev.task_id.as_deref());
    // Resource and client events without a node_id happened on the log's
    // node; session events (and events synthesised for the whole session,
    // written with an empty `node`) have none, as in RHAPSODY.
    let own = (!node.is_empty()).then_some(node);
    let node_id = match &ev.kind {
        EventKind::SessionStarted | EventKind::SessionEnded { .. } => ev.node_id.as_deref(),
        _ => ev.node_id.as_deref().or(own),
    };
    o.opt_str("node_id", node_id);
    write_attributes(&mut o, ev);
    write_kind_fields(&mut o, &ev.kind);
    // A task's events (its lifecycle and custom events naming it) belong to
    // its span; everything else to the session's.
    let task_span = match (&ev.kind, &ev.task_id) {
        (
            EventKind::Task(_) | EventKind::Custom { .. } | EventKind::TaskResources(_),
            Some(task),
        ) => Some(ids::py_hex(u128::from(ids::task_span_id(
            &ctx.session_id,
            task,
        )))),
        _ => None,
    };
    o.str("trace_id", &ctx.trace_hex)
        .str(
            "span_id",
            task_span.as_deref().unwrap_or(&ctx.session_span_hex),
        )
        .str("name", ev.kind.type_name())
        .str("section", "event");
    o.end();
    buf.push(b'\n');
}

/// The event's `attributes`; RHAPSODY repeats a failed task's error type
/// there.
fn write_attributes(o: &mut JsonOut<'_>, ev: &Event) {
    match &ev.kind {
        EventKind::Task(t)
            if t.state == TaskState::Failed
                && !ev.attributes.iter().any(|(k, _)| k == "error_type") =>
        {
            o.nested("attributes", |a| {
                for (k, v) in &ev.attributes {
                    a.value(k, v);
                }
                a.str("error_type", t.error_type.as_deref().unwrap_or("unknown"));
            });
        }
        _ => {
            o.attrs("attributes", &ev.attributes);
        }
    }
}

/// The top-level fields of each kind of event.
fn write_kind_fields(o: &mut JsonOut<'_>, kind: &EventKind) {
    match kind {
        EventKind::SessionStarted => {}
        EventKind::SessionEnded { duration_seconds } => {
            o.f64("duration_seconds", *duration_seconds);
        }
        EventKind::ResourceUpdate(u) => write_resource_fields(o, u),
        EventKind::Task(t) => {
            if t.state.is_terminal() {
                o.f64("duration_seconds", t.duration_seconds.unwrap_or(0.0));
            }
            if t.state == TaskState::Failed {
                o.str("error_type", t.error_type.as_deref().unwrap_or("unknown"));
            }
            for (k, v) in &t.extra {
                o.value(k, v);
            }
        }
        EventKind::Custom { fields, .. } => {
            for (k, v) in fields {
                o.value(k, v);
            }
        }
        EventKind::TaskResources(r) => write_task_resources(o, r),
        EventKind::GpuProcesses(procs) => {
            // Not written by `convert` (it attributes these to tasks); this
            // form is for completeness only.
            o.key("processes");
            let mut arr = vec![b'['];
            for (i, p) in procs.iter().enumerate() {
                if i > 0 {
                    arr.extend_from_slice(b", ");
                }
                let mut e = JsonOut::object(&mut arr);
                e.uint("gpu_id", u64::from(p.gpu_id))
                    .uint("pid", u64::from(p.pid))
                    .uint("used_bytes", p.used_bytes);
                e.end();
            }
            arr.push(b']');
            o.raw(&arr);
        }
    }
}

/// A `tal.TaskResourceUpdate`'s fields (percentages to 0.1).
fn write_task_resources(o: &mut JsonOut<'_>, r: &crate::record::TaskResources) {
    let pct = |v: f32| crate::record::round1(f64::from(v));
    o.f64("cpu_percent", pct(r.cpu_percent()))
        .f64("cpu_user_percent", pct(r.cpu_user_percent))
        .f64("cpu_system_percent", pct(r.cpu_system_percent))
        .uint("rss_bytes", r.rss_bytes)
        .uint("threads", u64::from(r.threads))
        .uint("processes", u64::from(r.processes));
    match r.read_bytes {
        Some(b) => o.uint("read_bytes", b),
        None => o.null("read_bytes"),
    };
    match r.write_bytes {
        Some(b) => o.uint("write_bytes", b),
        None => o.null("write_bytes"),
    };
    o.f64(
        "interval_seconds",
        (f64::from(r.interval_seconds) * 1000.0).round() / 1000.0,
    );
    if r.gpu_memory_bytes.is_empty() {
        o.null("gpu_memory_bytes");
    } else {
        o.nested("gpu_memory_bytes", |g| {
            for (id, b) in &r.gpu_memory_bytes {
                g.uint(&id.to_string(), *b);
            }
        });
    }
}

/// A `ResourceUpdate`'s fields, in RHAPSODY's order.
fn write_resource_fields(o: &mut JsonOut<'_>, u: &crate::record::ResourceUpdate) {
    o.opt_f64("cpu_percent", u.cpu_percent)
        .opt_f64("memory_percent", u.memory_percent)
        .opt_f64("gpu_percent", u.gpu_percent);
    match u.scope {
        ResourceScope::PerNode => o.null("gpu_id"),
        ResourceScope::PerGpu(g) => o.uint("gpu_id", u64::from(g)),
    };
    o.opt_f64("disk_read_bytes", u.disk_read_bytes)
        .opt_f64("disk_write_bytes", u.disk_write_bytes)
        .opt_f64("net_sent_bytes", u.net_sent_bytes)
        .opt_f64("net_recv_bytes", u.net_recv_bytes)
        .str(
            "resource_scope",
            match u.scope {
                ResourceScope::PerNode => "per_node",
                ResourceScope::PerGpu(_) => "per_gpu",
            },
        );
    if !u.cpu_percent_per_core.is_empty() {
        o.f32_array("cpu_percent_per_core", &u.cpu_percent_per_core);
    }
    for (k, v) in &u.extra {
        o.value(k, v);
    }
}

/// Writes the session's span line.
pub fn write_session_span(
    buf: &mut Vec<u8>,
    ctx: &Ctx,
    backend: &str,
    session_start_ns: i64,
    end_ns: i64,
    nodes: usize,
    energy: &[(String, f64)],
) {
    let session_id = &ctx.session_id;

    let mut o = JsonOut::object(buf);
    o.str("name", "session")
        .str("span_id", &ctx.session_span_hex)
        .str("trace_id", &ctx.trace_hex)
        .null("parent_span_id")
        .int("start_ns", session_start_ns)
        .int("end_ns", end_ns)
        .f64("start_time_s", ns_to_secs(session_start_ns))
        .f64("end_time_s", ns_to_secs(end_ns))
        .f64(
            "duration_ms",
            (end_ns.saturating_sub(session_start_ns) as f64 / 1e6 * 1000.0).round() / 1000.0,
        )
        .str("status_code", "UNSET")
        .null("status_description")
        .nested("attributes", |a| {
            a.str("session_id", session_id)
                .str("backend", backend)
                .uint("nodes", nodes as u64);
            energy_fields(a, energy);
        })
        .str("section", "span");
    o.end();
    buf.push(b'\n');
}

/// Each device's energy over the session, from the last `per_gpu` sample
/// of every node: keyed by `gpu_id`, or by `node:gpu_id` when the session
/// has several nodes.
pub fn session_energy(tracker: &TaskTracker, nodes: usize) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for (node, devs) in tracker.energy() {
        for (g, j) in devs {
            let key = if nodes > 1 {
                format!("{node}:{g}")
            } else {
                g.to_string()
            };
            out.push((key, (j * 1000.0).round() / 1000.0));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Hands a `per_gpu` sample's energy counter to the task tracker.
pub fn note_energy(tracker: &mut TaskTracker, node: &str, ev: &Event) {
    if let EventKind::ResourceUpdate(u) = &ev.kind {
        if let ResourceScope::PerGpu(g) = u.scope {
            let joules = u.extra.iter().find_map(|(k, v)| match v {
                Value::Float(j) if k == "gpu_energy_joules" => Some(*j),
                _ => None,
            });
            if let Some(j) = joules {
                tracker.observe_energy(node, g, j);
            }
        }
    }
}

/// `gpu_energy_joules` (an object) and `gpu_energy_joules_total`, when
/// there is any.
pub fn energy_fields(o: &mut JsonOut<'_>, energy: &[(String, f64)]) {
    if energy.is_empty() {
        return;
    }
    o.nested("gpu_energy_joules", |e| {
        for (k, j) in energy {
            e.f64(k, *j);
        }
    });
    let total: f64 = energy.iter().map(|(_, j)| j).sum();
    o.f64("gpu_energy_joules_total", (total * 1000.0).round() / 1000.0);
}

/// Writes a task's span line.
pub fn write_task_span(buf: &mut Vec<u8>, ctx: &Ctx, sp: &TaskSpan) {
    let span_hex = ids::py_hex(u128::from(ids::task_span_id(&ctx.session_id, &sp.task_id)));
    let (status, code) = match sp.state {
        TaskState::Completed => ("completed", "OK"),
        TaskState::Failed => ("failed", "ERROR"),
        _ => ("canceled", "ERROR"),
    };
    let mut o = JsonOut::object(buf);
    o.str("name", "task")
        .str("span_id", &span_hex)
        .str("trace_id", &ctx.trace_hex)
        .str("parent_span_id", &ctx.session_span_hex)
        .int("start_ns", sp.start_ns)
        .int("end_ns", sp.end_ns)
        .f64("start_time_s", ns_to_secs(sp.start_ns))
        .f64("end_time_s", ns_to_secs(sp.end_ns))
        .f64(
            "duration_ms",
            (sp.end_ns.saturating_sub(sp.start_ns) as f64 / 1e6 * 1000.0).round() / 1000.0,
        )
        .str("status_code", code)
        .opt_str("status_description", sp.error_type.as_deref())
        .nested("attributes", |a| {
            a.str("session_id", &ctx.session_id)
                .str("backend", &sp.backend)
                .str("task_id", &sp.task_id)
                .str("status", status);
            if let Some(e) = &sp.error_type {
                a.str("error_type", e);
            }
            a.str("executable", &sp.executable)
                .str("task_type", &sp.task_type);
            if sp.incomplete {
                a.bool("incomplete_lifecycle", true);
            }
            if sp.closed_at_session_end {
                a.bool("closed_at_session_end", true);
            }
            if let Some(q) = sp.queued_ns {
                a.f64("queued_time_s", ns_to_secs(q));
            }
            for (k, v) in &sp.extra {
                a.value(k, v);
            }
        })
        .str("section", "span");
    o.end();
    buf.push(b'\n');
}
