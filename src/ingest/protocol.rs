//! The ingest protocol: one JSON object per line, shaped like a JSONL event
//! line, or a control request.
//!
//! An event line needs `event_type` and, for task events, `task_id`; the
//! agent fills in what a client leaves out: `event_id` (a fresh UUID4-like
//! id), `emit_time` (when the line was read), `event_time` (= emit_time),
//! `node_id` (the agent's node). `session_id` may be sent but the agent's
//! session is the session: a line is never moved to another one.
//!
//! Accepted event types: the task lifecycle (`TaskCreated`, `TaskSubmitted`,
//! `TaskQueued`, `TaskStarted`, `TaskCompleted`, `TaskFailed`,
//! `TaskCanceled`), `ResourceUpdate` (for runtimes that measure something
//! themselves), and namespaced custom types (`app.Checkpoint`: at least one
//! dot, no spaces) whose other fields are kept at top level. `SessionStarted`
//! and `SessionEnded` are refused: the agent records its session itself.
//!
//! Field types are checked (times and durations are numbers, ids and
//! `error_type` strings, `attributes` an object, `backend`/`node_id` a string
//! or null); fields tal writes itself (`trace_id`, `span_id`, `name`,
//! `section`) cannot be sent. Unknown fields of core events are kept as
//! extension fields. A line longer than [`MAX_LINE_BYTES`] is refused (the
//! last line of a stream too, newline or not). Times must lie from the
//! epoch to 2100 ([`crate::clock::MAX_TIME_SECS`]), and a
//! `duration_seconds` from 0 to as many seconds. A key repeated in one
//! object is accepted and its last value wins, as Python's `json` (and so
//! RHAPSODY) reads such a line; the fast path leaves such lines to the
//! general parser, which does the same.
//!
//! Control lines have an `op` instead of an `event_type`:
//! `{"op": "stop"}` asks the agent to finalise (the reply comes when the
//! JSONL is written), `{"op": "ping"}` is answered at once, and
//! `{"op": "subscribe", "types": [...]}` turns the connection into a feed of
//! every event (of those types; with no `types`, or `null`: of every type)
//! as JSONL event lines, as the dispatcher handles them. The types must be
//! event types ([`FEED_TYPES`], or namespaced custom ones): an empty list
//! or an unknown name is refused with an error line that says why. It is
//! answered first with `{"ok": true, "subscribed": [...]}` (the types, as
//! asked): every event the dispatcher handles after that line is in the
//! feed. A subscriber that reads as fast as the agent ingests loses
//! nothing: the lines wait in a backlog shared by all subscribers (4 MiB,
//! and a quarter of the dispatcher's ring to the listener beside it). One
//! that falls further behind loses the oldest lines ([`super::feed`]): the
//! agent never waits for it, counts them, and tells it with a
//! `{"dropped": N}` line in their place; lines lost before they reach the
//! listener (its ring from the dispatcher full) are told the same way, to
//! every subscriber of their type. At most 64 connections
//! subscribe at once (a further `subscribe` is refused with an error line).
//!
//! Every refused line gets one reply line, `{"error": REASON, "line": N}`
//! (N counts the connection's lines from 1), and is counted
//! (`ingest_lines_rejected`); accepted lines get no reply, except a task
//! event that uses a task id again ([`super::reuse`]), which is recorded
//! and answered with `{"warning": REASON, "line": N, "task_id": ID}`
//! (`ingest_task_ids_reused`): a client that looks only for `error` lines,
//! or reads no replies, is unaffected. When the
//! recording ends, the agent stops reading the connections open then (see
//! the listener's `seal`): a client's later write fails with EPIPE.

use crate::record::{
    Attributes, Event, EventKind, ResourceScope, ResourceUpdate, TaskEvent, TaskState, Value,
};
use serde_json::{Map, Value as J};

/// The longest line accepted.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// Keys that tal writes into every JSONL line itself.
pub const RESERVED: [&str; 4] = ["trace_id", "span_id", "name", "section"];

/// Keys of the core event schema.
pub const CORE: [&str; 9] = [
    "event_id",
    "event_type",
    "event_time",
    "emit_time",
    "session_id",
    "backend",
    "task_id",
    "node_id",
    "attributes",
];

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Finalise the recording; reply when the JSONL is written.
    Stop,
    /// Answer at once (liveness check).
    Ping,
    /// Receive every event (of these types; all when empty) as JSONL lines.
    Subscribe(Vec<String>),
}

/// What a line is.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // events are the common case; boxing them would cost an allocation each
pub enum Line {
    /// An event to record (`event_id` 0 means "assign one").
    Event(Event),
    /// A control request.
    Control(Control),
}

fn num(m: &Map<String, J>, k: &str) -> Result<Option<f64>, String> {
    match m.get(k) {
        None | Some(J::Null) => Ok(None),
        Some(J::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{k} must be a finite number")),
        Some(_) => Err(format!("{k} must be a number")),
    }
}

fn opt_str(m: &Map<String, J>, k: &str) -> Result<Option<String>, String> {
    match m.get(k) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{k} must be a string or null")),
    }
}

/// Converts a JSON value to an attribute value.
pub fn to_value(v: &J) -> Value {
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::Str(s.clone()),
        other => Value::Json(other.to_string()),
    }
}

fn time_ns(secs: f64, k: &str) -> Result<i64, String> {
    if !crate::clock::time_in_range(secs) {
        return Err(format!(
            "{k} must be seconds since the Unix epoch, from 0 up to {} (2100-01-01)",
            crate::clock::MAX_TIME_SECS
        ));
    }
    Ok(crate::clock::secs_to_ns(secs))
}

/// Whether `t` is a valid custom event type: namespaced, printable, short.
pub fn is_custom_type(t: &str) -> bool {
    t.len() <= 128
        && t.contains('.')
        && !t.starts_with('.')
        && !t.ends_with('.')
        && !t.contains("..")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses one line (without its newline). `now_ns` is when it was read.
pub fn parse_line(line: &[u8], now_ns: i64) -> Result<Line, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("line longer than {MAX_LINE_BYTES} bytes"));
    }
    parse_general(line, now_ns)
}

/// The general parser: every event type, extension fields, and a reason
/// for every refusal. (The listener tries [`super::fast`] first, which
/// takes plain task lines without building a JSON tree.)
fn parse_general(line: &[u8], now_ns: i64) -> Result<Line, String> {
    let v: J = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let J::Object(m) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(op) = m.get("op") {
        return parse_control(&m, op).map(Line::Control);
    }
    let event_type = match m.get("event_type") {
        None => return Err("missing event_type".into()),
        Some(J::String(s)) => s.as_str(),
        Some(_) => return Err("event_type must be a string".into()),
    };
    for r in RESERVED {
        if m.contains_key(r) {
            return Err(format!("'{r}' is written by tal and cannot be sent"));
        }
    }
    let task_state = TaskState::from_type_name(event_type);
    let task_id = opt_str(&m, "task_id")?;
    if task_state.is_some() && task_id.as_deref().is_none_or(str::is_empty) {
        return Err(format!("{event_type} needs a task_id"));
    }
    let event_id = match m.get("event_id") {
        None | Some(J::Null) => 0,
        Some(J::String(s)) if s.len() == 32 => {
            u128::from_str_radix(s, 16).map_err(|_| "event_id must be 32 hex digits".to_string())?
        }
        Some(_) => return Err("event_id must be 32 hex digits".into()),
    };
    let emit_time_ns = match num(&m, "emit_time")? {
        Some(t) => time_ns(t, "emit_time")?,
        None => now_ns,
    };
    let event_time_ns = match num(&m, "event_time")? {
        Some(t) => time_ns(t, "event_time")?,
        None => emit_time_ns,
    };
    opt_str(&m, "session_id")?;
    let backend = opt_str(&m, "backend")?;
    let node_id = opt_str(&m, "node_id")?;
    let attributes: Attributes = match m.get("attributes") {
        None | Some(J::Null) => Vec::new(),
        Some(J::Object(a)) => a.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
        Some(_) => return Err("attributes must be an object".into()),
    };
    let kind = match task_state {
        Some(state) => task_kind(&m, state)?,
        None => other_kind(&m, event_type)?,
    };
    Ok(Line::Event(Event {
        event_id,
        event_time_ns,
        emit_time_ns,
        backend,
        task_id,
        node_id,
        attributes,
        kind,
    }))
}

/// An `{"op": ...}` line.
fn parse_control(m: &Map<String, J>, op: &J) -> Result<Control, String> {
    match op.as_str() {
        Some("stop") => Ok(Control::Stop),
        Some("ping") => Ok(Control::Ping),
        Some("subscribe") => match m.get("types") {
            None | Some(J::Null) => Ok(Control::Subscribe(Vec::new())),
            Some(J::Array(a)) => subscribe_types(a).map(Control::Subscribe),
            Some(_) => Err("types must be a list of event type strings".into()),
        },
        _ => Err(format!("unknown op {op} (known: stop, ping, subscribe)")),
    }
}

/// The event types a subscriber may name: those of the session, of
/// samples and of the task lifecycle.
const FEED_TYPES: [&str; 10] = [
    "SessionStarted",
    "SessionEnded",
    "ResourceUpdate",
    "TaskCreated",
    "TaskSubmitted",
    "TaskQueued",
    "TaskStarted",
    "TaskCompleted",
    "TaskFailed",
    "TaskCanceled",
];

/// A subscription's list of types: at least one, each a type an event in
/// the feed can have ([`FEED_TYPES`], or a namespaced custom type, tal's
/// own `tal.TaskResourceUpdate` among them). An empty list is refused
/// rather than read as "every type" (leaving `types` out says that), and
/// an unknown name rather than acknowledged and never matched.
fn subscribe_types(a: &[J]) -> Result<Vec<String>, String> {
    let types = a
        .iter()
        .map(|t| t.as_str().map(String::from))
        .collect::<Option<Vec<_>>>()
        .ok_or("types must be a list of event type strings")?;
    if types.is_empty() {
        return Err(
            "types is empty: name at least one event type, or leave types out to get every event"
                .into(),
        );
    }
    let unknown: Vec<String> = types
        .iter()
        .filter(|t| !FEED_TYPES.contains(&t.as_str()) && !is_custom_type(t))
        .map(|t| J::from(t.as_str()).to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "unknown event type {} (known: {}, or a namespaced custom type such as app.Checkpoint)",
            unknown.join(", "),
            FEED_TYPES.join(", ")
        ));
    }
    Ok(types)
}

/// The line's fields beyond the core schema and `skip`, in the order sent.
fn extras(m: &Map<String, J>, skip: &[&str]) -> Attributes {
    m.iter()
        .filter(|(k, _)| !CORE.contains(&k.as_str()) && !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), to_value(v)))
        .collect()
}

/// A task lifecycle event's own fields.
fn task_kind(m: &Map<String, J>, state: TaskState) -> Result<EventKind, String> {
    let duration_seconds = num(m, "duration_seconds")?;
    if duration_seconds.is_some_and(|d| !crate::clock::duration_in_range(d)) {
        return Err(format!(
            "duration_seconds must be seconds, from 0 up to {} (1970 to 2100)",
            crate::clock::MAX_TIME_SECS
        ));
    }
    let error_type = opt_str(m, "error_type")?;
    let terminal = state.is_terminal();
    let failed = state == TaskState::Failed;
    let mut skip = vec![];
    if terminal {
        skip.push("duration_seconds");
    }
    if failed {
        skip.push("error_type");
    }
    Ok(EventKind::Task(TaskEvent {
        state,
        duration_seconds: duration_seconds.filter(|_| terminal),
        error_type: error_type.filter(|_| failed),
        extra: extras(m, &skip),
    }))
}

/// The fields of a `ResourceUpdate` a client sends.
const RESOURCE_FIELDS: [&str; 9] = [
    "cpu_percent",
    "memory_percent",
    "gpu_percent",
    "gpu_id",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
    "resource_scope",
];

/// A client's `ResourceUpdate`.
fn resource_kind(m: &Map<String, J>) -> Result<EventKind, String> {
    let scope = match m.get("gpu_id") {
        None | Some(J::Null) => ResourceScope::PerNode,
        Some(J::Number(n)) if n.as_u64().is_some_and(|g| g <= u64::from(u32::MAX)) => {
            ResourceScope::PerGpu(n.as_u64().unwrap_or(0) as u32)
        }
        Some(_) => return Err("gpu_id must be a non-negative integer or null".into()),
    };
    let mut u = ResourceUpdate::empty(scope);
    u.cpu_percent = num(m, "cpu_percent")?;
    u.memory_percent = num(m, "memory_percent")?;
    u.gpu_percent = num(m, "gpu_percent")?;
    u.disk_read_bytes = num(m, "disk_read_bytes")?;
    u.disk_write_bytes = num(m, "disk_write_bytes")?;
    u.net_sent_bytes = num(m, "net_sent_bytes")?;
    u.net_recv_bytes = num(m, "net_recv_bytes")?;
    u.extra = extras(m, &RESOURCE_FIELDS);
    Ok(EventKind::ResourceUpdate(u))
}

/// Every event that is not a task's: a resource update, or a namespaced
/// custom event; the rest is refused, saying why.
fn other_kind(m: &Map<String, J>, event_type: &str) -> Result<EventKind, String> {
    if event_type == "ResourceUpdate" {
        resource_kind(m)
    } else if matches!(event_type, "SessionStarted" | "SessionEnded") {
        Err(format!(
            "{event_type} is recorded by the agent itself; send a namespaced event (app.Phase) for your own phases"
        ))
    } else if is_custom_type(event_type) {
        Ok(EventKind::Custom {
            event_type: event_type.to_string(),
            fields: extras(m, &[]),
        })
    } else {
        Err(format!(
            "unknown event_type '{event_type}' (custom types must be namespaced, e.g. 'app.{event_type}')"
        ))
    }
}

/// The reply line for a refused line.
pub fn error_reply(line_no: u64, reason: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(reason.len() + 32);
    let mut o = crate::json::JsonOut::object(&mut out);
    o.str("error", reason).uint("line", line_no);
    o.end();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Event {
        match parse_line(s.as_bytes(), 1_000_000_000_000_000_000) {
            Ok(Line::Event(e)) => e,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn err(s: &str) -> String {
        parse_line(s.as_bytes(), 0).unwrap_err()
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_as_python_does() {
        let e = ok(r#"{"event_type": "TaskStarted", "task_id": "t", "task_id": "u"}"#);
        assert_eq!(e.task_id.as_deref(), Some("u"));
    }

    #[test]
    fn minimal_task_event_gets_filled_in() {
        let e = ok(r#"{"event_type": "TaskStarted", "task_id": "t1"}"#);
        assert_eq!(e.event_id, 0);
        assert_eq!(e.event_time_ns, 1_000_000_000_000_000_000);
        assert_eq!(e.emit_time_ns, e.event_time_ns);
        assert!(matches!(
            e.kind,
            EventKind::Task(TaskEvent {
                state: TaskState::Started,
                ..
            })
        ));
    }

    #[test]
    fn rhapsody_shaped_line_round_trips_its_fields() {
        let e = ok(
            r#"{"event_id": "9b0c42c4483646f8af92bd37a47a5f9f", "event_type": "TaskFailed",
            "event_time": 1795574441.8799298, "emit_time": 1795574441.8799415,
            "session_id": "rhapsody.session.2f2d3b26", "backend": "concurrent",
            "task_id": "task.000005", "node_id": null,
            "attributes": {"executable": "/nonexistent/binary", "task_type": "ComputeTask", "error_type": "FileNotFoundError"},
            "duration_seconds": 0.0005059242248535156, "error_type": "FileNotFoundError"}"#,
        );
        assert_eq!(e.event_id, 0x9b0c42c4483646f8af92bd37a47a5f9f);
        // Client times survive the trip through nanoseconds unchanged.
        assert_eq!(
            crate::clock::ns_to_secs(e.event_time_ns),
            1795574441.8799298
        );
        assert_eq!(crate::clock::ns_to_secs(e.emit_time_ns), 1795574441.8799415);
        let EventKind::Task(t) = &e.kind else {
            panic!()
        };
        assert_eq!(t.duration_seconds, Some(0.0005059242248535156));
        assert_eq!(t.error_type.as_deref(), Some("FileNotFoundError"));
        assert!(t.extra.is_empty());
        assert_eq!(e.attributes.len(), 3);
    }

    #[test]
    fn custom_events_keep_their_fields() {
        let e = ok(r#"{"event_type": "app.Checkpoint", "step": 3, "loss": 0.25, "tags": ["a"]}"#);
        let EventKind::Custom { event_type, fields } = &e.kind else {
            panic!()
        };
        assert_eq!(event_type, "app.Checkpoint");
        assert_eq!(
            fields,
            &vec![
                ("step".to_string(), Value::Int(3)),
                ("loss".to_string(), Value::Float(0.25)),
                ("tags".to_string(), Value::Json("[\"a\"]".into())),
            ]
        );
    }

    #[test]
    fn control_lines() {
        assert_eq!(
            parse_line(br#"{"op": "stop"}"#, 0),
            Ok(Line::Control(Control::Stop))
        );
        assert!(err(r#"{"op": "explode"}"#).contains("unknown op"));
    }

    /// What a subscriber may ask for: every type (no `types`, or null), or
    /// named event types; an empty list (once read as "everything") and
    /// unknown names (once acknowledged, then never matched) are refused.
    #[test]
    fn subscriptions_name_event_types() {
        let sub = |l: &str| match parse_line(l.as_bytes(), 0) {
            Ok(Line::Control(Control::Subscribe(t))) => Ok(t),
            other => Err(format!("{other:?}")),
        };
        assert_eq!(sub(r#"{"op": "subscribe"}"#), Ok(vec![]));
        assert_eq!(sub(r#"{"op": "subscribe", "types": null}"#), Ok(vec![]));
        assert_eq!(
            sub(
                r#"{"op": "subscribe", "types": ["TaskFailed", "app.Ckpt", "tal.TaskResourceUpdate", "ResourceUpdate", "SessionEnded"]}"#
            ),
            Ok([
                "TaskFailed",
                "app.Ckpt",
                "tal.TaskResourceUpdate",
                "ResourceUpdate",
                "SessionEnded"
            ]
            .map(String::from)
            .to_vec())
        );
        let e = err(r#"{"op": "subscribe", "types": []}"#);
        assert!(
            e.contains("types is empty") && e.contains("leave types out"),
            "{e}"
        );
        let e = err(
            r#"{"op": "subscribe", "types": ["TaskFailed", "TaskFialed", "Checkpoint", "a b.c"]}"#,
        );
        assert!(
            e.contains(r#"unknown event type "TaskFialed", "Checkpoint", "a b.c" (known: "#),
            "{e}"
        );
        assert!(!e.contains(r#""TaskFailed""#), "{e}");
        for bad in [r#""TaskFailed""#, "[1]", r#"{"TaskFailed": 1}"#] {
            let e = err(&format!(r#"{{"op": "subscribe", "types": {bad}}}"#));
            assert!(
                e.contains("types must be a list of event type strings"),
                "{e}"
            );
        }
    }

    #[test]
    fn every_bad_line_has_a_reason() {
        for (line, want) in [
            ("not json", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            ("{}", "missing event_type"),
            (r#"{"event_type": 5}"#, "event_type must be a string"),
            (r#"{"event_type": "Checkpoint"}"#, "namespaced"),
            (r#"{"event_type": "TaskStarted"}"#, "needs a task_id"),
            (
                r#"{"event_type": "TaskStarted", "task_id": ""}"#,
                "needs a task_id",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": 7}"#,
                "task_id must be a string",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": "now"}"#,
                "event_time must be a number",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": -5}"#,
                "seconds since the Unix epoch",
            ),
            (
                // Once stored wrapped round i64 nanoseconds (-8446744073.7).
                r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 10000000000}"#,
                "from 0 up to 4102444800 (2100-01-01)",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "emit_time": 9223372037}"#,
                "emit_time must be seconds since the Unix epoch",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": [1]}"#,
                "attributes must be an object",
            ),
            (
                r#"{"event_type": "TaskCompleted", "task_id": "t", "duration_seconds": "1"}"#,
                "duration_seconds must be a number",
            ),
            (
                // Once accepted, and printed as 18446744073709551615h.
                r#"{"event_type": "TaskCompleted", "task_id": "t", "duration_seconds": 1e26}"#,
                "duration_seconds must be seconds, from 0 up to 4102444800",
            ),
            (
                r#"{"event_type": "TaskCanceled", "task_id": "t", "duration_seconds": 4102444800.5}"#,
                "duration_seconds must be seconds, from 0 up to 4102444800",
            ),
            (
                r#"{"event_type": "TaskQueued", "task_id": "t", "duration_seconds": -0.5}"#,
                "duration_seconds must be seconds",
            ),
            (
                r#"{"event_type": "TaskFailed", "task_id": "t", "error_type": 3}"#,
                "error_type must be a string",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "event_id": "xyz"}"#,
                "event_id",
            ),
            (
                r#"{"event_type": "app.X", "trace_id": "0x1"}"#,
                "'trace_id' is written by tal",
            ),
            (
                r#"{"event_type": "SessionStarted"}"#,
                "recorded by the agent itself",
            ),
            (
                r#"{"event_type": "ResourceUpdate", "gpu_id": -1}"#,
                "gpu_id",
            ),
            (
                r#"{"event_type": "ResourceUpdate", "cpu_percent": "high"}"#,
                "cpu_percent must be a number",
            ),
            (
                r#"{"event_type": "TaskStarted", "task_id": "t", "backend": 1}"#,
                "backend must be a string",
            ),
        ] {
            let e = err(line);
            assert!(e.contains(want), "{line}: {e}");
        }
        let long = format!(
            r#"{{"event_type": "app.X", "pad": "{}"}}"#,
            "x".repeat(MAX_LINE_BYTES)
        );
        assert!(err(&long).contains("longer than"));
    }

    #[test]
    fn error_reply_is_one_json_line() {
        let r = error_reply(7, "bad \"thing\"");
        assert_eq!(r, b"{\"error\": \"bad \\\"thing\\\"\", \"line\": 7}\n");
    }
}
