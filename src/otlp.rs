//! OTLP: a session as OpenTelemetry traces and metrics, in the shapes of an
//! OTLP `/v1/traces` and `/v1/metrics` export request (the official
//! protobuf types of `opentelemetry-proto`, written as OTLP JSON or pushed
//! as protobuf by [`crate::otlp_http`]).
//!
//! The source is the session's RHAPSODY JSONL (what `tal convert` writes,
//! or a checkpoint RHAPSODY wrote itself), read line by line, so the OTLP
//! spans are exactly the JSONL span lines: same ids (zero-padded hex),
//! parents, names, times, attributes (typed: strings, ints, floats, bools;
//! JSON objects and arrays become kvlists and arrays) and statuses
//! (`OK`/`ERROR` with the error type as message; the session span's
//! `UNSET`). A task span's TaskQueued time is a span event `TaskQueued`.
//!
//! Metrics (instrumentation scope `tal`):
//! - the RHAPSODY counters `tasks_submitted`, `tasks_started`,
//!   `tasks_completed`, `tasks_failed`, `tasks_canceled`: cumulative
//!   monotonic sums, from session start to the final metric line's
//!   `checkpoint_time`; `tasks_running`: a cumulative non-monotonic sum;
//! - `task_duration_seconds`: an exponential histogram (unit `s`) built
//!   from every terminal task event's `duration_seconds` (so count and sum
//!   equal the metric line's; zeros, as for tasks that never started, go to
//!   the zero bucket), at the finest scale (≤ 20) that keeps it within 160
//!   buckets;
//! - per node (one resource per node, `host.name` = the node id), from
//!   every per_node ResourceUpdate, with its timestamp: the gauges
//!   `node_cpu_utilization`, `node_memory_utilization`,
//!   `node_gpu_utilization` (unit `%`; RHAPSODY's instrument names), and
//!   the byte counts `node_disk_read_bytes`, `node_disk_write_bytes`,
//!   `node_net_sent_bytes`, `node_net_recv_bytes` as delta monotonic sums
//!   (each covers the time since the node's previous sample);
//! - per GPU (attribute `gpu_id`), from per_gpu updates: `gpu_utilization`
//!   (%), and where present `gpu_memory_used_bytes`, `gpu_power_watts`,
//!   `gpu_temperature_celsius`;
//! - per task (attribute `task.id`, on its node's resource), from every
//!   `tal.TaskResourceUpdate`: the gauges `task_cpu_utilization` (%, of one
//!   CPU: 100 is one busy core), `task_cpu_user_utilization`,
//!   `task_cpu_system_utilization`, `task_memory_rss_bytes` (`By`),
//!   `task_threads` and `task_processes`, `task_gpu_memory_used_bytes`
//!   (with `gpu_id` too) where the task's processes use a GPU, and
//!   `task_disk_read_bytes`, `task_disk_write_bytes` as delta monotonic sums
//!   over the sample's interval.
//!
//! Resource attributes: `service.name` (`$OTEL_SERVICE_NAME`, default
//! `tal`), `session.id`, the Slurm ids tal recorded (`slurm.job_id`, …),
//! `host.name` (the node, when the session has one: a live push, or one
//! node log; per-node metrics always name theirs), then
//! `$OTEL_RESOURCE_ATTRIBUTES` (`k=v,…`, percent-decoded), which override.
//!
//! Two callers build from the same lines: `tal convert --format otlp`
//! (a whole checkpoint, [`from_jsonl`] / [`stream_jsonl`]) and the live
//! exporter of `tal record --otlp` (`otlp_live`, a [`Builder`] fed each
//! event and span line as the agent writes it). So this module sits beside
//! both, in neither. It is one piece past 1,000 lines: most of it is the
//! [`Builder`]'s one mapping from RHAPSODY lines to OTLP spans and metric
//! series, with its tests; the file-level readers are the small rest.

use crate::clock::secs_to_ns;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, AggregationTemporality,
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{self, BufRead};

/// Most buckets of the duration histogram (OTel SDKs' default).
const MAX_BUCKETS: usize = 160;
/// Finest scale tried.
const MAX_SCALE: i32 = 20;

/// Resource settings (from the standard OTel environment variables).
#[derive(Debug, Clone, Default)]
pub struct ResourceConfig {
    /// `service.name`.
    pub service_name: String,
    /// Extra attributes (`OTEL_RESOURCE_ATTRIBUTES`), applied last.
    pub attributes: Vec<(String, String)>,
}

impl ResourceConfig {
    /// From `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn from_env() -> Self {
        let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_key_values(&v))
            .unwrap_or_default();
        let service_name = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "tal".into());
        Self {
            service_name,
            attributes,
        }
    }
}

/// Parses the OTel environment's `k=v,k2=v2` lists (values percent-decoded;
/// malformed entries skipped).
pub fn parse_key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = percent_decode(k.trim());
            (!k.is_empty()).then(|| (k, percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| char::from(c).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A session in OTLP form.
#[derive(Debug, Clone, Default)]
pub struct Otlp {
    /// The `/v1/traces` request.
    pub traces: ExportTraceServiceRequest,
    /// The `/v1/metrics` request.
    pub metrics: ExportMetricsServiceRequest,
    /// Spans in `traces`.
    pub spans: usize,
    /// Data points in `metrics`.
    pub points: usize,
    /// What reading the JSONL met (see [`crate::convert::lines`]).
    pub read: crate::convert::lines::LineStats,
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

/// A JSON value as an OTLP attribute value (`None` for null).
fn any(v: &Value) -> Option<any_value::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(|x| AnyValue { value: any(x) }).collect(),
        }),
        Value::Object(o) => any_value::Value::KvlistValue(KeyValueList {
            values: o.iter().filter_map(|(k, x)| Some(kv(k, any(x)?))).collect(),
        }),
    })
}

/// `0x…` hex (as RHAPSODY writes ids, leading zeros dropped) as `width`
/// big-endian bytes.
fn id_bytes(v: &Value, width: usize) -> Vec<u8> {
    let n = v
        .as_str()
        .map(|s| s.trim_start_matches("0x"))
        .and_then(|h| u128::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    n.to_be_bytes()[16 - width..].to_vec()
}

fn ns(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| secs_to_ns(f).max(0) as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

fn secs(v: &Value) -> Option<u64> {
    v.as_f64().map(|f| secs_to_ns(f).max(0) as u64)
}

/// The gauge and sum series of one resource (a node), by metric name and
/// then by attribute set.
#[derive(Debug, Default)]
struct Series {
    gauges: BTreeMap<&'static str, (&'static str, Vec<NumberDataPoint>)>,
    deltas: BTreeMap<&'static str, Vec<NumberDataPoint>>,
    last_time: Option<u64>,
}

fn point(attrs: Vec<KeyValue>, start: u64, time: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

impl Series {
    fn gauge(&mut self, name: &'static str, unit: &'static str, p: NumberDataPoint) {
        self.gauges
            .entry(name)
            .or_insert_with(|| (unit, Vec::new()))
            .1
            .push(p);
    }
}

/// Builds the OTLP form of a session from its JSONL lines, all at once
/// ([`from_jsonl`]) or in installments ([`Builder::take`], for a live
/// push).
#[derive(Debug, Default)]
pub struct Builder {
    spans: Vec<Span>,
    nodes: BTreeMap<String, Series>,
    durations: Vec<f64>,
    metric: Option<Value>,
    session_start: Option<u64>,
    session_id: String,
    /// The node, when the session has one (a live push, or one node log).
    host: Option<String>,
    /// What tal recorded about the job (`slurm.job_id`, …).
    job: Vec<(String, String)>,
    /// The spans' resource, fixed by the first installment of a streamed
    /// conversion (see [`stream_jsonl`]).
    span_resource: Option<Resource>,
}

impl Builder {
    /// A builder for the session `session_id` on one node `host`, with the
    /// job's attributes (`slurm.*`), known before any line.
    pub fn for_session(session_id: &str, host: &str, job: &[(String, String)]) -> Self {
        Self {
            session_id: session_id.to_string(),
            host: Some(host.to_string()),
            job: job
                .iter()
                .filter(|(k, _)| k.starts_with("slurm."))
                .cloned()
                .collect(),
            ..Self::default()
        }
    }

    /// The spans gathered since the last installment (the live exporter
    /// encodes them once a request's worth is here).
    pub fn spans_held(&self) -> usize {
        self.spans.len()
    }

    /// Counts one task duration (the live exporter, which sees events, not
    /// terminal lines, tells them this way).
    pub fn duration(&mut self, d: f64) {
        self.durations.push(d);
    }

    /// Takes one JSONL line (an event, span or metric line).
    pub fn line(&mut self, v: Value) {
        match v.get("section").and_then(Value::as_str) {
            Some("event") => self.event(&v),
            Some("span") => self.span(&v),
            Some("metric") => self.metric = Some(v),
            _ => {}
        }
    }

    fn event(&mut self, v: &Value) {
        if self.session_id.is_empty() {
            if let Some(s) = v["session_id"].as_str() {
                self.session_id = s.to_string();
            }
        }
        let ty = v["event_type"].as_str().unwrap_or("");
        match ty {
            "TaskCompleted" | "TaskFailed" | "TaskCanceled" => {
                if let Some(d) = v["duration_seconds"].as_f64() {
                    self.durations.push(d);
                }
            }
            "ResourceUpdate" => self.resource(v),
            crate::record::TaskResources::EVENT_TYPE => {
                let (Some(t), Some(task)) = (secs(&v["event_time"]), v["task_id"].as_str()) else {
                    return;
                };
                let gpus: Vec<(i64, f64)> = v["gpu_memory_bytes"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter_map(|(k, b)| Some((k.parse().ok()?, b.as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                self.task_with(
                    v["node_id"].as_str().unwrap_or(""),
                    t,
                    task,
                    |k| v[k].as_f64(),
                    &gpus,
                );
            }
            _ => {}
        }
    }

    /// Takes one task sample as recorded (the live exporter's way).
    pub fn task_resources(
        &mut self,
        node: &str,
        time_ns: i64,
        task: &str,
        r: &crate::record::TaskResources,
    ) {
        let gpus: Vec<(i64, f64)> = r
            .gpu_memory_bytes
            .iter()
            .map(|&(g, b)| (i64::from(g), b as f64))
            .collect();
        self.task_with(
            node,
            time_ns.max(0) as u64,
            task,
            |k| match k {
                "cpu_percent" => Some(f64::from(r.cpu_percent())),
                "cpu_user_percent" => Some(f64::from(r.cpu_user_percent)),
                "cpu_system_percent" => Some(f64::from(r.cpu_system_percent)),
                "rss_bytes" => Some(r.rss_bytes as f64),
                "threads" => Some(f64::from(r.threads)),
                "processes" => Some(f64::from(r.processes)),
                "read_bytes" => r.read_bytes.map(|b| b as f64),
                "write_bytes" => r.write_bytes.map(|b| b as f64),
                "interval_seconds" => Some(f64::from(r.interval_seconds)),
                _ => None,
            },
            &gpus,
        );
    }

    /// One task sample's points (see the module doc).
    fn task_with(
        &mut self,
        node: &str,
        t: u64,
        task: &str,
        get: impl Fn(&str) -> Option<f64>,
        gpus: &[(i64, f64)],
    ) {
        let s = match self.nodes.get_mut(node) {
            Some(s) => s,
            None => self.nodes.entry(node.to_string()).or_default(),
        };
        let attrs = || vec![kv_str("task.id", task)];
        for (key, name, unit) in [
            ("cpu_percent", "task_cpu_utilization", "%"),
            ("cpu_user_percent", "task_cpu_user_utilization", "%"),
            ("cpu_system_percent", "task_cpu_system_utilization", "%"),
            ("rss_bytes", "task_memory_rss_bytes", "By"),
            ("threads", "task_threads", "{thread}"),
            ("processes", "task_processes", "{process}"),
        ] {
            if let Some(x) = get(key) {
                s.gauge(name, unit, point(attrs(), 0, t, x));
            }
        }
        for &(g, b) in gpus {
            let mut a = attrs();
            a.push(kv("gpu_id", any_value::Value::IntValue(g)));
            s.gauge("task_gpu_memory_used_bytes", "By", point(a, 0, t, b));
        }
        let secs = get("interval_seconds").unwrap_or(0.0).max(0.0);
        let start = t.saturating_sub((secs * 1e9) as u64);
        for (key, name) in [
            ("read_bytes", "task_disk_read_bytes"),
            ("write_bytes", "task_disk_write_bytes"),
        ] {
            if let Some(x) = get(key) {
                s.deltas
                    .entry(name)
                    .or_default()
                    .push(point(attrs(), start, t, x));
            }
        }
    }

    fn resource(&mut self, v: &Value) {
        let Some(t) = secs(&v["event_time"]) else {
            return;
        };
        self.resource_with(
            v["node_id"].as_str().unwrap_or(""),
            t,
            v["resource_scope"].as_str().unwrap_or(""),
            v["gpu_id"].as_i64(),
            |k| v[k].as_f64(),
        );
    }

    /// Takes one ResourceUpdate as recorded (the live exporter's way: no
    /// JSON in between).
    pub fn resource_update(&mut self, node: &str, time_ns: i64, u: &crate::record::ResourceUpdate) {
        use crate::record::{ResourceScope, Value as V};
        let (scope, gpu) = match u.scope {
            ResourceScope::PerNode => ("per_node", None),
            ResourceScope::PerGpu(g) => ("per_gpu", Some(i64::from(g))),
        };
        self.resource_with(node, time_ns.max(0) as u64, scope, gpu, |k| match k {
            "cpu_percent" => u.cpu_percent,
            "memory_percent" => u.memory_percent,
            "gpu_percent" => u.gpu_percent,
            "disk_read_bytes" => u.disk_read_bytes,
            "disk_write_bytes" => u.disk_write_bytes,
            "net_sent_bytes" => u.net_sent_bytes,
            "net_recv_bytes" => u.net_recv_bytes,
            _ => u
                .extra
                .iter()
                .find(|(ek, _)| ek == k)
                .and_then(|(_, v)| match v {
                    V::Float(f) => Some(*f),
                    V::Int(i) => Some(*i as f64),
                    _ => None,
                }),
        });
    }

    fn resource_with(
        &mut self,
        node: &str,
        t: u64,
        scope: &str,
        gpu_id: Option<i64>,
        get: impl Fn(&str) -> Option<f64>,
    ) {
        let s = match self.nodes.get_mut(node) {
            Some(s) => s,
            None => self.nodes.entry(node.to_string()).or_default(),
        };
        match scope {
            "per_node" => {
                for (key, name) in [
                    ("cpu_percent", "node_cpu_utilization"),
                    ("memory_percent", "node_memory_utilization"),
                    ("gpu_percent", "node_gpu_utilization"),
                ] {
                    if let Some(x) = get(key) {
                        s.gauge(name, "%", point(Vec::new(), 0, t, x));
                    }
                }
                if let Some(prev) = s.last_time {
                    for (key, name) in [
                        ("disk_read_bytes", "node_disk_read_bytes"),
                        ("disk_write_bytes", "node_disk_write_bytes"),
                        ("net_sent_bytes", "node_net_sent_bytes"),
                        ("net_recv_bytes", "node_net_recv_bytes"),
                    ] {
                        if let Some(x) = get(key) {
                            s.deltas
                                .entry(name)
                                .or_default()
                                .push(point(Vec::new(), prev, t, x));
                        }
                    }
                }
                s.last_time = Some(t);
            }
            "per_gpu" => {
                let Some(id) = gpu_id else {
                    return;
                };
                let attrs = || vec![kv("gpu_id", any_value::Value::IntValue(id))];
                for (key, name, unit) in [
                    ("gpu_percent", "gpu_utilization", "%"),
                    ("gpu_memory_used_bytes", "gpu_memory_used_bytes", "By"),
                    ("gpu_power_watts", "gpu_power_watts", "W"),
                    ("gpu_temperature_celsius", "gpu_temperature_celsius", "Cel"),
                ] {
                    if let Some(x) = get(key) {
                        s.gauge(name, unit, point(attrs(), 0, t, x));
                    }
                }
            }
            _ => {}
        }
    }

    fn span(&mut self, v: &Value) {
        let start = ns(&v["start_ns"]);
        let end = ns(&v["end_ns"]);
        let parent = &v["parent_span_id"];
        if parent.is_null() {
            self.session_start = Some(start);
            if let Some(s) = v["attributes"]["session_id"].as_str() {
                self.session_id = s.to_string();
            }
        }
        let code = match v["status_code"].as_str() {
            Some("OK") => status::StatusCode::Ok,
            Some("ERROR") => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        };
        let attributes: Vec<KeyValue> = v["attributes"]
            .as_object()
            .map(|o| o.iter().filter_map(|(k, x)| Some(kv(k, any(x)?))).collect())
            .unwrap_or_default();
        let mut events = Vec::new();
        if let Some(q) = secs(&v["attributes"]["queued_time_s"]) {
            events.push(span::Event {
                time_unix_nano: q,
                name: "TaskQueued".into(),
                ..Default::default()
            });
        }
        self.spans.push(Span {
            trace_id: id_bytes(&v["trace_id"], 16),
            span_id: id_bytes(&v["span_id"], 8),
            parent_span_id: if parent.is_null() {
                Vec::new()
            } else {
                id_bytes(parent, 8)
            },
            name: v["name"].as_str().unwrap_or("span").into(),
            kind: span::SpanKind::Internal as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            status: Some(Status {
                message: v["status_description"].as_str().unwrap_or("").into(),
                code: code as i32,
            }),
            ..Default::default()
        });
    }

    fn finish(mut self, cfg: &ResourceConfig) -> Otlp {
        let metric = self.metric.take().unwrap_or(Value::Null);
        self.take(cfg, &metric)
    }

    /// What a metric line tells about the session's resource: the job's
    /// `slurm.*` attributes, and its host when it has one node log.
    fn learn(&mut self, metric: &Value) {
        let logs = metric["tal_logs"].as_array();
        if self.job.is_empty() {
            if let Some(attrs) = metric["tal_logs"][0]["attributes"].as_object() {
                for (k, x) in attrs {
                    if let (true, Some(v)) = (k.starts_with("slurm."), x.as_str()) {
                        self.job.push((k.clone(), v.to_string()));
                    }
                }
            }
        }
        if self.host.is_none() && logs.is_some_and(|l| l.len() == 1) {
            self.host = metric["tal_logs"][0]["node_id"].as_str().map(String::from);
        }
    }

    /// Resource attributes every resource of the session starts with:
    /// service, session, what tal recorded about the job.
    fn base_attributes(&self, cfg: &ResourceConfig) -> Vec<KeyValue> {
        let mut base = vec![
            kv_str("service.name", &cfg.service_name),
            kv_str("session.id", &self.session_id),
        ];
        for (k, v) in &self.job {
            base.push(kv_str(k, v));
        }
        base
    }

    /// The session's resource (spans, and the session-level metrics): it
    /// names its host when it has one node (per-node series always name
    /// theirs).
    fn session_resource(&self, cfg: &ResourceConfig) -> Resource {
        let mut attrs = self.base_attributes(cfg);
        if let Some(h) = &self.host {
            attrs.push(kv_str("host.name", h));
        }
        with_env(cfg, attrs)
    }

    /// The spans gathered since the last installment, as one request; the
    /// resource is fixed by the first (a metric line read before it
    /// counts).
    fn take_spans(&mut self, cfg: &ResourceConfig) -> ExportTraceServiceRequest {
        if self.span_resource.is_none() {
            if let Some(m) = self.metric.take() {
                self.learn(&m);
                self.metric = Some(m);
            }
            self.span_resource = Some(self.session_resource(cfg));
        }
        traces_request(self.span_resource.clone(), std::mem::take(&mut self.spans))
    }

    /// The spans and series points gathered since the last call, with the
    /// session instruments as of `metric` (a metric line, or an object with
    /// its counters and `checkpoint_time`). Durations accumulate (the
    /// histogram is cumulative); node series continue from where they were.
    pub fn take(&mut self, cfg: &ResourceConfig, metric: &Value) -> Otlp {
        self.learn(metric);
        let session_resource = self.session_resource(cfg);
        let n_spans = self.spans.len();
        let traces = traces_request(
            Some(session_resource.clone()),
            std::mem::take(&mut self.spans),
        );
        let (session_metrics, mut points) = self.session_metrics(metric);
        let mut resource_metrics = vec![ResourceMetrics {
            resource: Some(session_resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: session_metrics,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (nodes, node_points) = self.take_node_metrics(cfg);
        resource_metrics.extend(nodes);
        points += node_points;
        Otlp {
            traces,
            metrics: ExportMetricsServiceRequest { resource_metrics },
            spans: n_spans,
            points,
            read: Default::default(),
        }
    }

    /// The session-level instruments at `metric`'s checkpoint (the task
    /// counters, and the duration histogram), and their data points.
    fn session_metrics(&self, metric: &Value) -> (Vec<Metric>, usize) {
        let start = self.session_start.unwrap_or(0);
        let now = secs(&metric["checkpoint_time"]).unwrap_or(start);
        let mut out = Vec::new();
        let sum = |name: &str, v: i64, monotonic: bool| Metric {
            name: name.into(),
            unit: "{task}".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            })),
            ..Default::default()
        };
        for name in [
            "tasks_submitted",
            "tasks_started",
            "tasks_completed",
            "tasks_failed",
            "tasks_canceled",
        ] {
            if let Some(v) = metric[name].as_i64() {
                out.push(sum(name, v, true));
            }
        }
        if let Some(v) = metric["tasks_running"].as_i64() {
            out.push(sum("tasks_running", v, false));
        }
        if !self.durations.is_empty() {
            out.push(Metric {
                name: "task_duration_seconds".into(),
                unit: "s".into(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![exp_histogram(&self.durations, start, now)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            });
        }
        let points = out.len();
        (out, points)
    }

    /// Each node's series points gathered since the last call (gauges, and
    /// byte counters as deltas), one resource per node (`host.name`), and
    /// their data points.
    fn take_node_metrics(&mut self, cfg: &ResourceConfig) -> (Vec<ResourceMetrics>, usize) {
        let base = self.base_attributes(cfg);
        let mut out = Vec::new();
        let mut points = 0;
        for (node, s) in &mut self.nodes {
            let mut metrics = Vec::new();
            for (name, (unit, pts)) in std::mem::take(&mut s.gauges) {
                points += pts.len();
                metrics.push(Metric {
                    name: name.into(),
                    unit: unit.into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: pts })),
                    ..Default::default()
                });
            }
            for (name, pts) in std::mem::take(&mut s.deltas) {
                points += pts.len();
                metrics.push(Metric {
                    name: name.into(),
                    unit: "By".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: pts,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                });
            }
            if metrics.is_empty() {
                continue;
            }
            let mut attrs = base.clone();
            attrs.push(kv_str("host.name", node));
            out.push(ResourceMetrics {
                resource: Some(with_env(cfg, attrs)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        (out, points)
    }
}

/// One `/v1/traces` request of `spans` under `resource`.
fn traces_request(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A resource of `attrs` with the environment's attributes applied last
/// (`OTEL_RESOURCE_ATTRIBUTES` override; `OTEL_SERVICE_NAME` wins over a
/// `service.name` among them).
fn with_env(cfg: &ResourceConfig, mut attrs: Vec<KeyValue>) -> Resource {
    for (k, x) in &cfg.attributes {
        attrs.retain(|a| &a.key != k);
        attrs.push(kv_str(k, x));
    }
    attrs.retain(|a| a.key != "service.name");
    attrs.insert(0, kv_str("service.name", &cfg.service_name));
    Resource {
        attributes: attrs,
        ..Default::default()
    }
}

/// tal's instrumentation scope.
fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "tal".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// The exponential-histogram bucket index of `v` > 0 at `scale`: bucket
/// `i` holds (base^i, base^(i+1)], base = 2^(2^-scale).
fn bucket_index(v: f64, scale: i32) -> i64 {
    (v.log2() * 2f64.powi(scale)).ceil() as i64 - 1
}

/// An exponential histogram of `values` (all ≥ 0).
fn exp_histogram(values: &[f64], start: u64, time: u64) -> ExponentialHistogramDataPoint {
    let positive: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
    let zero = values.len() - positive.len();
    let (lo, hi) = positive
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    let mut scale = MAX_SCALE;
    if !positive.is_empty() {
        while scale > -10
            && (bucket_index(hi, scale) - bucket_index(lo, scale)) as usize >= MAX_BUCKETS
        {
            scale -= 1;
        }
    }
    let buckets = (!positive.is_empty()).then(|| {
        let offset = bucket_index(lo, scale);
        let mut counts = vec![0u64; (bucket_index(hi, scale) - offset + 1) as usize];
        for &v in &positive {
            counts[(bucket_index(v, scale) - offset) as usize] += 1;
        }
        Buckets {
            offset: offset as i32,
            bucket_counts: counts,
        }
    });
    ExponentialHistogramDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        scale,
        zero_count: zero as u64,
        positive: buckets,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        ..Default::default()
    }
}

/// Lines the OTLP form does not use (non-terminal task events, as tal and
/// RHAPSODY write them), told without parsing them: most of a session's
/// lines.
fn unused(line: &str) -> bool {
    const STEPS: [&str; 4] = [
        "\"event_type\": \"TaskCreated\"",
        "\"event_type\": \"TaskSubmitted\"",
        "\"event_type\": \"TaskQueued\"",
        "\"event_type\": \"TaskStarted\"",
    ];
    line.ends_with("\"section\": \"event\"}") && STEPS.iter().any(|t| line.contains(t))
}

/// Reads a session's JSONL and builds its OTLP form, all in memory.
pub fn from_jsonl(input: impl BufRead, cfg: &ResourceConfig) -> io::Result<Otlp> {
    let mut parts = Vec::new();
    let mut o = stream_jsonl(input, cfg, usize::MAX, |req| {
        parts.push(req);
        Ok(())
    })?;
    if let Some(all) = parts.pop() {
        o.traces = all;
    }
    Ok(o)
}

/// Reads a session's JSONL and builds its OTLP form, handing its spans to
/// `spans` as they are read, in requests of at most `batch` spans, so that
/// memory does not grow with the session's tasks. Returns the metrics, with
/// `traces` holding no span (its resource and scope, as every installment
/// has them) and `spans` counting every span handed over.
///
/// The spans' resource is fixed by the first installment: it names the job
/// and host from the metric line, which tal and RHAPSODY write before the
/// span lines.
pub fn stream_jsonl(
    input: impl BufRead,
    cfg: &ResourceConfig,
    batch: usize,
    mut spans: impl FnMut(ExportTraceServiceRequest) -> io::Result<()>,
) -> io::Result<Otlp> {
    let mut b = Builder::default();
    let mut handed = 0;
    let mut lines = crate::convert::lines::JsonlLines::new(input);
    while let Some(v) = lines.next_unless(unused)? {
        b.line(v);
        if b.spans.len() >= batch {
            handed += b.spans.len();
            spans(b.take_spans(cfg))?;
        }
    }
    if !b.spans.is_empty() {
        handed += b.spans.len();
        spans(b.take_spans(cfg))?;
    }
    let template = b.take_spans(cfg);
    let mut o = b.finish(cfg);
    o.traces = template;
    o.spans = handed;
    o.read = lines.stats();
    Ok(o)
}

/// Writes a traces request as OTLP JSON (what `serde_json` writes for the
/// whole request) from installments of spans: one request in the file,
/// however many installments, without holding the spans.
#[derive(Debug)]
pub struct TracesJson<W: io::Write> {
    out: W,
    /// What closes the request once the spans are written (set by the first
    /// installment).
    suffix: Option<Vec<u8>>,
    spans: usize,
}

impl<W: io::Write> TracesJson<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            suffix: None,
            spans: 0,
        }
    }

    /// Writes the text before the spans (from `req`'s resource and scope),
    /// once.
    fn open(&mut self, req: &ExportTraceServiceRequest) -> io::Result<()> {
        if self.suffix.is_some() {
            return Ok(());
        }
        let mut frame = req.clone();
        for rs in &mut frame.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.clear();
            }
        }
        let text = serde_json::to_vec(&frame).map_err(io::Error::other)?;
        const EMPTY: &[u8] = b"\"spans\":[]";
        let at = memchr::memmem::find(&text, EMPTY)
            .ok_or_else(|| io::Error::other("an OTLP traces request without a spans list"))?;
        let cut = at + EMPTY.len() - 1;
        self.out.write_all(&text[..cut])?;
        self.suffix = Some(text[cut..].to_vec());
        Ok(())
    }

    /// Writes one installment's spans.
    pub fn spans(&mut self, req: &ExportTraceServiceRequest) -> io::Result<()> {
        self.open(req)?;
        for sp in req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            if self.spans > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, sp).map_err(io::Error::other)?;
            self.spans += 1;
        }
        Ok(())
    }

    /// Closes the request (`template` gives its frame when no installment
    /// came) and returns the writer.
    pub fn finish(mut self, template: &ExportTraceServiceRequest) -> io::Result<W> {
        self.open(template)?;
        let suffix = self.suffix.take().unwrap_or_default();
        self.out.write_all(&suffix)?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streamed in installments, the traces file is byte for byte what the
    /// whole request serialises to, with spans or without.
    #[test]
    fn streamed_traces_json_is_the_whole_request() {
        let reference = include_str!("../tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
        let no_spans: String = reference
            .lines()
            .filter(|l| !l.ends_with("\"section\": \"span\"}"))
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg = ResourceConfig {
            service_name: "tal".into(),
            attributes: vec![("deployment.environment".into(), "test".into())],
        };
        for (text, spans) in [(reference, 21), (no_spans.as_str(), 0)] {
            let whole = from_jsonl(text.as_bytes(), &cfg).unwrap();
            let expected = serde_json::to_vec(&whole.traces).unwrap();
            for batch in [1, 4, 1000] {
                let mut installments = 0;
                let mut w = TracesJson::new(Vec::new());
                let o = stream_jsonl(text.as_bytes(), &cfg, batch, |req| {
                    installments += 1;
                    w.spans(&req)
                })
                .unwrap();
                assert_eq!(o.spans, spans);
                assert_eq!(installments, spans.div_ceil(batch));
                let got = w.finish(&o.traces).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    String::from_utf8(expected.clone()).unwrap(),
                    "batch {batch}"
                );
                assert_eq!(
                    serde_json::to_vec(&o.metrics).unwrap(),
                    serde_json::to_vec(&whole.metrics).unwrap()
                );
            }
        }
    }

    #[test]
    fn key_values_parse_as_the_otel_spec_says() {
        assert_eq!(
            parse_key_values("a=1, b = x%2Cy ,bad,=v,c=%3D,d=é%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x,y".into()),
                ("c".into(), "=".into()),
                ("d".into(), "é%zz".into())
            ]
        );
    }

    #[test]
    fn exponential_buckets_hold_every_value() {
        let vals = [0.0, 0.001, 0.5, 1.0, 1.5, 2.0, 3600.0, 0.0];
        let p = exp_histogram(&vals, 1, 2);
        assert_eq!(p.count, 8);
        assert_eq!(p.zero_count, 2);
        let b = p.positive.unwrap();
        assert!(b.bucket_counts.len() <= MAX_BUCKETS);
        assert_eq!(b.bucket_counts.iter().sum::<u64>(), 6);
        // Each value lies in its bucket's (lower, upper] range.
        let base = 2f64.powf(2f64.powi(-p.scale));
        for v in vals.iter().filter(|v| **v > 0.0) {
            let i = bucket_index(*v, p.scale);
            assert!(base.powi(i as i32) < *v * (1.0 + 1e-12));
            assert!(*v <= base.powi(i as i32 + 1) * (1.0 + 1e-12));
        }
        assert_eq!(p.min, Some(0.0));
        assert_eq!(p.max, Some(3600.0));
        // One value: the finest scale.
        assert_eq!(exp_histogram(&[2.5], 0, 0).scale, MAX_SCALE);
    }

    #[test]
    fn ids_are_zero_padded() {
        assert_eq!(
            id_bytes(&Value::from("0xabc"), 8),
            vec![0, 0, 0, 0, 0, 0, 0x0a, 0xbc]
        );
        assert_eq!(id_bytes(&Value::from("0x1"), 16)[15], 1);
    }
}
