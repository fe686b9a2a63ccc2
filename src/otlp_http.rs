//! OTLP/HTTP push (protobuf), on `ureq`'s blocking client (`rustls` for
//! `https://`): no async runtime.
//!
//! Why not `opentelemetry-otlp`'s exporters: they export the SDK's own
//! data types, and the SDK's metric data (`ResourceMetrics`) cannot be
//! built outside the SDK, whose instruments stamp points with the current
//! time; tal exports a *recorded* session, with the times it recorded. So
//! tal builds the same OTLP export requests from the official protobuf
//! types (`opentelemetry-proto`, which `opentelemetry-otlp` encodes too)
//! and POSTs them as `opentelemetry-otlp`'s HTTP exporter does:
//! `Content-Type: application/x-protobuf` to `<endpoint>/v1/traces` and
//! `<endpoint>/v1/metrics`. Spans and metrics share one client, one retry
//! policy and one configuration.
//!
//! Configuration, as the OTel specification defines the variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `…_METRICS_ENDPOINT` (used as
//! given) override the base endpoint, which is `--otlp-endpoint URL`, else
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the signal paths are appended);
//! `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,…`, percent-decoded) are sent with
//! every request. `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL` /
//! `…_METRICS_PROTOCOL`) chooses the body: `http/protobuf` (the default)
//! or `http/json` (the same requests as OTLP JSON, `application/json`, the
//! answer read as JSON too). `grpc` is refused at start with what to do
//! instead: tal has no HTTP/2 client (it would take an async runtime into
//! an agent that has none), and every OTLP receiver (the Collector, Tempo,
//! Jaeger, Prometheus's OTLP endpoint) takes OTLP/HTTP too. A request that
//! cannot reach port 4317, OTLP/gRPC's, says so in its error. `https://` endpoints are checked against the public
//! (Mozilla) roots, or against the certificates of the PEM file
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` (a site's own CA, or a receiver's
//! self-signed certificate). No proxy is used, and no redirect followed.
//!
//! Answers: each request's whole time limit (connect to last byte) is the
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (see [`Endpoints::timeouts`]); of an answer
//! tal reads the status and at most 64 KiB of body, within a second of its
//! headers, and does not read a body that claims more (so a receiver
//! cannot make tal allocate or wait without bound).
//!
//! Delivery: spans go in requests of at most [`SPANS_PER_REQUEST`], metric
//! points in requests of at most [`POINTS_PER_REQUEST`]. A request that
//! fails to connect, times out, or gets 408/429/502/503/504 is retried with
//! exponential backoff (0.5 s doubling, `Retry-After` honoured up to 30 s)
//! up to [`RetryPolicy::attempts`] times; other answers are final. The
//! [`PushReport`] says what was delivered, what the receiver rejected
//! (OTLP partial success) and what was not delivered, and why.

use crate::convert::otlp::{parse_key_values, Otlp};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use std::io;
use std::time::Duration;

/// Most spans per request.
pub const SPANS_PER_REQUEST: usize = 1000;
/// Most metric data points per request.
pub const POINTS_PER_REQUEST: usize = 4000;

/// An `http://` or `https://` `host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`.
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    /// The request path.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// Parses an `http://` or `https://` URL (the port defaults to 80 or 443).
pub fn parse_url(s: &str) -> Result<HttpUrl, String> {
    let (tls, rest) = match (s.strip_prefix("http://"), s.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{s}: an OTLP/HTTP endpoint looks like http://host:4318 or https://host:4318"
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{s}: no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        || authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(HttpUrl {
        tls,
        authority,
        path: path.to_string(),
    })
}

/// The certificates of `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM file): the
/// roots `https://` receivers are checked against instead of the public
/// ones.
fn load_roots(path: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE={path}: cannot read it: {e}"))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_CERTIFICATE={path}: not PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "OTEL_EXPORTER_OTLP_CERTIFICATE={path}: no certificate in it"
        ));
    }
    Ok(certs)
}

/// How a signal's requests are encoded (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `http/protobuf`: binary protobuf, `application/x-protobuf`.
    #[default]
    Protobuf,
    /// `http/json`: OTLP JSON, `application/json`.
    Json,
}

impl Protocol {
    /// The value of `var`, as the OTel specification names them.
    pub fn parse(var: &str, value: &str) -> Result<Self, String> {
        match value.trim() {
            "http/protobuf" => Ok(Self::Protobuf),
            "http/json" => Ok(Self::Json),
            "grpc" => Err(format!(
                "{var}=grpc: tal pushes OTLP over HTTP, not gRPC; point the endpoint at the \
                 receiver's OTLP/HTTP port (a Collector's is 4318, not 4317) and unset {var} \
                 or set it to http/protobuf"
            )),
            other => Err(format!(
                "{var}={other}: expected http/protobuf (the default) or http/json"
            )),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Traces URL.
    pub traces: HttpUrl,
    /// Metrics URL.
    pub metrics: HttpUrl,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The encoding of traces and of metrics requests.
    pub protocols: (Protocol, Protocol),
    /// Each request's whole time limit (connect, send, answer), traces and
    /// metrics: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds, as the OTel specification has it); unset: the push's
    /// own (10 s; 2 s for the last push of `tal record`).
    pub timeouts: (Option<Duration>, Option<Duration>),
    /// The roots `https://` receivers are checked against
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); `None`: the public (Mozilla)
    /// roots.
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
}

impl Endpoints {
    /// From `--otlp-endpoint` (`base`) and the OTel environment variables.
    pub fn resolve(base: Option<&str>) -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let base = base
            .map(String::from)
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let signal = |var: &str, path: &str| -> Result<HttpUrl, String> {
            match (env(var), &base) {
                (Some(u), _) => parse_url(u.trim()),
                (None, Some(b)) => {
                    let mut u = parse_url(b.trim())?;
                    u.path = format!("{}{path}", u.path.trim_end_matches('/'));
                    Ok(u)
                }
                (None, None) => Err(format!(
                    "no OTLP endpoint: pass --otlp-endpoint http://host:4318 (or https://) or set OTEL_EXPORTER_OTLP_ENDPOINT (or {var})"
                )),
            }
        };
        let ms = |k: &str| -> Result<Option<Duration>, String> {
            match env(k) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(Duration::from_millis(n))),
                    _ => Err(format!(
                        "{k}={v}: expected a whole number of milliseconds above 0"
                    )),
                },
            }
        };
        let all = ms("OTEL_EXPORTER_OTLP_TIMEOUT")?;
        let protocol = |k: &str| env(k).map(|v| Protocol::parse(k, &v)).transpose();
        let any = protocol("OTEL_EXPORTER_OTLP_PROTOCOL")?;
        let protocols = (
            protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")?
                .or(any)
                .unwrap_or_default(),
            protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")?
                .or(any)
                .unwrap_or_default(),
        );
        Ok(Self {
            traces: signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?,
            metrics: signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics")?,
            headers: env("OTEL_EXPORTER_OTLP_HEADERS")
                .map(|h| parse_key_values(&h))
                .unwrap_or_default(),
            protocols,
            timeouts: (
                ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")?.or(all),
                ms("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")?.or(all),
            ),
            roots: env("OTEL_EXPORTER_OTLP_CERTIFICATE")
                .map(|p| load_roots(p.trim()))
                .transpose()?,
        })
    }
}

/// How hard to try.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries per request.
    pub attempts: u32,
    /// The first backoff; doubles per retry.
    pub backoff: Duration,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a push achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Spans the receiver accepted.
    pub spans_sent: usize,
    /// Spans not delivered (after every retry) or rejected.
    pub spans_failed: usize,
    /// Metric points the receiver accepted.
    pub points_sent: usize,
    /// Metric points not delivered or rejected.
    pub points_failed: usize,
    /// Requests that succeeded.
    pub requests: usize,
    /// Retries made.
    pub retries: usize,
    /// Why something was not delivered (first few reasons).
    pub errors: Vec<String>,
}

impl PushReport {
    /// Everything arrived.
    pub fn complete(&self) -> bool {
        self.spans_failed == 0 && self.points_failed == 0
    }

    fn fail(&mut self, why: String) {
        if self.errors.len() < 5 && !self.errors.contains(&why) {
            self.errors.push(why);
        }
    }
}

/// What is read of an answer's body at most: tal needs only the status and
/// a small OTLP partial-success message (or an error text). A receiver that
/// claims more is not believed: the rest is not read and the connection is
/// not kept. Its headers are bounded by `ureq` (64 KiB).
const MAX_BODY_BYTES: usize = 64 << 10;

/// How long an answer's body may take after its headers (within the
/// request's time limit): OTLP answers are a few bytes.
const BODY_TIME: Duration = Duration::from_secs(1);

/// The HTTP client: `ureq`'s blocking agent (kept-alive connections,
/// `rustls` for `https://`), made on first use from the endpoints' TLS
/// settings.
#[derive(Debug, Default)]
pub struct Client {
    agent: Option<ureq::Agent>,
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// The request's time limit ran out, said as the setting that sets it.
fn time_limit() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no whole answer within the time limit (OTEL_EXPORTER_OTLP_TIMEOUT)",
    )
}

impl Client {
    fn agent(&mut self, ep: &Endpoints) -> &ureq::Agent {
        self.agent.get_or_insert_with(|| {
            let mut tls = ureq::tls::TlsConfig::builder();
            if let Some(roots) = &ep.roots {
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(roots));
            }
            ureq::Agent::config_builder()
                // Every status is an answer tal looks at itself.
                .http_status_as_error(false)
                .max_redirects(0)
                // No proxy from the environment: an OTLP receiver is
                // reached directly, as tal always did.
                .proxy(None)
                .user_agent(format!("tal/{}", env!("CARGO_PKG_VERSION")))
                .tls_config(tls.build())
                .build()
                .into()
        })
    }

    /// POSTs `body` (of `content_type`), the whole request (connect,
    /// send, answer) within `timeout`.
    fn post(
        &mut self,
        url: &HttpUrl,
        ep: &Endpoints,
        (body, content_type): (&[u8], &str),
        timeout: Duration,
    ) -> io::Result<Answer> {
        let mut req = self
            .agent(ep)
            .post(url.to_string())
            .config()
            .timeout_global(Some(timeout))
            .timeout_recv_body(Some(BODY_TIME.min(timeout)))
            .build()
            .header("Content-Type", content_type);
        for (k, v) in &ep.headers {
            if !k.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Err(time_limit()),
            Err(ureq::Error::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let status = resp.status().as_u16();
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let retry_after = header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let claimed = header("content-length").and_then(|v| v.parse::<u64>().ok());
        // Not believed, not read: the status is what counts (a body cut
        // short or too big reads as empty).
        let body = if claimed.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(MAX_BODY_BYTES as u64)
                .read_to_vec()
                .unwrap_or_default()
        };
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Sends one request with retries; `Ok(rejected)` with the count the
/// receiver refused (OTLP partial success), or why it failed.
fn send(
    client: &mut Client,
    url: &HttpUrl,
    ep: &Endpoints,
    body: &[u8],
    policy: &RetryPolicy,
    report: &mut PushReport,
    rejected: impl Fn(&[u8]) -> (i64, String),
) -> Result<(i64, String), (String, bool)> {
    let mut wait = policy.backoff;
    let mut last = String::new();
    for attempt in 0..policy.attempts.max(1) {
        if attempt > 0 {
            report.retries += 1;
        }
        let (timeout, protocol) = if url == &ep.metrics {
            (ep.timeouts.1, ep.protocols.1)
        } else {
            (ep.timeouts.0, ep.protocols.0)
        };
        let timeout = timeout.unwrap_or(policy.timeout);
        let pause = match client.post(url, ep, (body, protocol.content_type()), timeout) {
            Ok(a) if (200..300).contains(&a.status) => {
                report.requests += 1;
                return Ok(rejected(&a.body));
            }
            Ok(a) if matches!(a.status, 408 | 429 | 502 | 503 | 504) => {
                last = format!("{url} answered HTTP {}", a.status);
                a.retry_after
                    .map_or(wait, |r| r.min(Duration::from_secs(30)))
            }
            Ok(a) => {
                let text = String::from_utf8_lossy(&a.body[..a.body.len().min(200)]).into_owned();
                return Err((
                    format!("{url} answered HTTP {} {}", a.status, text.trim()),
                    false,
                ));
            }
            Err(e) => {
                last = format!("{url}: {e}{}", grpc_port_hint(url));
                wait
            }
        };
        if attempt + 1 < policy.attempts {
            std::thread::sleep(pause);
            wait *= 2;
        }
    }
    Err((
        format!("{last} (gave up after {} tries)", policy.attempts.max(1)),
        true,
    ))
}

/// What to say when a request to `url` could not be made: port 4317 is
/// OTLP/gRPC's, where an HTTP request gets no answer.
fn grpc_port_hint(url: &HttpUrl) -> &'static str {
    if url.authority.ends_with(":4317") {
        " (port 4317 is OTLP/gRPC's; tal speaks OTLP/HTTP, whose port is usually 4318)"
    } else {
        ""
    }
}

/// A signal's request body in `protocol`.
fn encode<T: Message + serde::Serialize>(req: &T, protocol: Protocol) -> Vec<u8> {
    match protocol {
        Protocol::Protobuf => req.encode_to_vec(),
        // The OTLP JSON the files have (ids in hex); it cannot fail.
        Protocol::Json => serde_json::to_vec(req).unwrap_or_default(),
    }
}

/// What an OTLP answer's `partial_success` says (rejected items, and the
/// receiver's message), from a protobuf answer (decoded by `decode`) or a
/// JSON one (`rejected` names the count: `rejectedSpans`,
/// `rejectedDataPoints`; a 64-bit count may be a string or a number, as
/// protobuf's JSON mapping allows). Anything else: nothing rejected.
fn partial_success(
    body: &[u8],
    protocol: Protocol,
    rejected: &str,
    decode: impl Fn(&[u8]) -> Option<(i64, String)>,
) -> (i64, String) {
    let found = match protocol {
        Protocol::Protobuf => decode(body),
        Protocol::Json => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let p = v
                    .get("partialSuccess")
                    .or_else(|| v.get("partial_success"))?;
                let n = p.get(rejected).map_or(Some(0), |n| match n {
                    serde_json::Value::String(s) => s.parse().ok(),
                    n => n.as_i64(),
                })?;
                let msg = p
                    .get("errorMessage")
                    .or_else(|| p.get("error_message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or_default();
                Some((n, msg.to_string()))
            }),
    };
    found.unwrap_or((0, String::new()))
}

/// The points of a metric.
fn points_of(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// A metric cut into pieces of at most `n` points (gauges and sums; other
/// kinds have one point here).
fn split_metric(m: &Metric, n: usize) -> Vec<Metric> {
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, NumberDataPoint, Sum};
    // Each piece copies only its own points.
    let pieces = |points: &[NumberDataPoint],
                  data: &dyn Fn(Vec<NumberDataPoint>) -> metric::Data| {
        points
            .chunks(n)
            .map(|c| Metric {
                name: m.name.clone(),
                description: m.description.clone(),
                unit: m.unit.clone(),
                metadata: m.metadata.clone(),
                data: Some(data(c.to_vec())),
            })
            .collect()
    };
    match &m.data {
        Some(metric::Data::Gauge(g)) if g.data_points.len() > n => {
            pieces(&g.data_points, &|data_points| {
                metric::Data::Gauge(Gauge { data_points })
            })
        }
        Some(metric::Data::Sum(s)) if s.data_points.len() > n => {
            pieces(&s.data_points, &|data_points| {
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: s.aggregation_temporality,
                    is_monotonic: s.is_monotonic,
                })
            })
        }
        _ => vec![m.clone()],
    }
}

/// The metrics requests: each resource's metrics in pieces of at most
/// [`POINTS_PER_REQUEST`] points.
fn metric_requests(all: &ExportMetricsServiceRequest) -> Vec<(ExportMetricsServiceRequest, usize)> {
    let mut out = Vec::new();
    for rm in &all.resource_metrics {
        for sm in &rm.scope_metrics {
            let mut cur: Vec<Metric> = Vec::new();
            let mut n = 0;
            let mut flush = |cur: &mut Vec<Metric>, n: &mut usize| {
                if !cur.is_empty() {
                    out.push((
                        ExportMetricsServiceRequest {
                            resource_metrics: vec![ResourceMetrics {
                                resource: rm.resource.clone(),
                                scope_metrics: vec![ScopeMetrics {
                                    scope: sm.scope.clone(),
                                    metrics: std::mem::take(cur),
                                    schema_url: sm.schema_url.clone(),
                                }],
                                schema_url: rm.schema_url.clone(),
                            }],
                        },
                        *n,
                    ));
                    *n = 0;
                }
            };
            for m in &sm.metrics {
                for piece in split_metric(m, POINTS_PER_REQUEST) {
                    let p = points_of(&piece);
                    if n + p > POINTS_PER_REQUEST {
                        flush(&mut cur, &mut n);
                    }
                    n += p;
                    cur.push(piece);
                }
            }
            flush(&mut cur, &mut n);
        }
    }
    out
}

/// Sends one request of `n` items (`what`: "span(s)", "point(s)"), unless
/// the receiver is already known to be `down`; returns how many were
/// delivered and how many not (rejected, or not sent), noting why in
/// `report`. A request that used up its retries marks the receiver down.
#[allow(clippy::too_many_arguments)]
fn deliver(
    client: &mut Client,
    url: &HttpUrl,
    ep: &Endpoints,
    body: impl FnOnce() -> Vec<u8>,
    (n, what): (usize, &str),
    policy: &RetryPolicy,
    report: &mut PushReport,
    down: &mut Option<String>,
    rejected: impl Fn(&[u8]) -> (i64, String),
) -> (usize, usize) {
    if let Some(why) = down {
        report.fail(why.clone());
        return (0, n);
    }
    match send(client, url, ep, &body(), policy, report, rejected) {
        Ok((refused, msg)) => {
            let refused = (refused.max(0) as usize).min(n);
            if refused > 0 {
                report.fail(format!("the receiver rejected {refused} {what}: {msg}"));
            }
            (n - refused, refused)
        }
        Err((why, exhausted)) => {
            if exhausted {
                *down = Some(why.clone());
            }
            report.fail(why);
            (0, n)
        }
    }
}

/// Pushes a session's spans and metrics.
///
/// Once a request has used up its retries on an unreachable or overloaded
/// receiver, the remaining requests are not tried (they are counted as not
/// delivered, for the same reason), so an outage costs one request's
/// retries, not every request's.
pub fn push(otlp: &Otlp, ep: &Endpoints, policy: &RetryPolicy) -> PushReport {
    push_with(&mut Client::default(), otlp, ep, policy)
}

/// [`push`] on a kept connection (a live exporter pushes through one
/// connection for the whole run, as long as the receiver keeps it).
pub fn push_with(
    client: &mut Client,
    otlp: &Otlp,
    ep: &Endpoints,
    policy: &RetryPolicy,
) -> PushReport {
    let mut p = Pusher::new(client, ep, policy);
    p.traces(&otlp.traces);
    p.metrics(&otlp.metrics);
    p.report
}

/// Pushes a session in installments (spans as a conversion reads them,
/// then its metrics), with [`push`]'s rules across all of them: once the
/// receiver is down, nothing more is tried.
#[derive(Debug)]
pub struct Pusher<'a> {
    client: &'a mut Client,
    ep: &'a Endpoints,
    policy: &'a RetryPolicy,
    down: Option<String>,
    /// What was achieved so far.
    pub report: PushReport,
}

impl<'a> Pusher<'a> {
    /// A push to `ep` through `client`.
    pub fn new(client: &'a mut Client, ep: &'a Endpoints, policy: &'a RetryPolicy) -> Self {
        Self {
            client,
            ep,
            policy,
            down: None,
            report: PushReport::default(),
        }
    }

    /// Pushes spans, in requests of at most [`SPANS_PER_REQUEST`].
    pub fn traces(&mut self, traces: &ExportTraceServiceRequest) {
        for rs in &traces.resource_spans {
            for ss in &rs.scope_spans {
                for chunk in ss.spans.chunks(SPANS_PER_REQUEST) {
                    let req = ExportTraceServiceRequest {
                        resource_spans: vec![ResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans: vec![ScopeSpans {
                                scope: ss.scope.clone(),
                                spans: chunk.to_vec(),
                                schema_url: ss.schema_url.clone(),
                            }],
                            schema_url: rs.schema_url.clone(),
                        }],
                    };
                    let protocol = self.ep.protocols.0;
                    let (ok, bad) = deliver(
                        self.client,
                        &self.ep.traces,
                        self.ep,
                        || encode(&req, protocol),
                        (chunk.len(), "span(s)"),
                        self.policy,
                        &mut self.report,
                        &mut self.down,
                        |b| {
                            partial_success(b, protocol, "rejectedSpans", |b| {
                                let p = ExportTraceServiceResponse::decode(b).ok()?;
                                p.partial_success
                                    .map(|p| (p.rejected_spans, p.error_message))
                            })
                        },
                    );
                    self.report.spans_sent += ok;
                    self.report.spans_failed += bad;
                }
            }
        }
    }

    /// Pushes metrics, in requests of at most [`POINTS_PER_REQUEST`] points.
    pub fn metrics(&mut self, metrics: &ExportMetricsServiceRequest) {
        let protocol = self.ep.protocols.1;
        for (req, n) in metric_requests(metrics) {
            let (ok, bad) = deliver(
                self.client,
                &self.ep.metrics,
                self.ep,
                || encode(&req, protocol),
                (n, "point(s)"),
                self.policy,
                &mut self.report,
                &mut self.down,
                |b| {
                    partial_success(b, protocol, "rejectedDataPoints", |b| {
                        let p = ExportMetricsServiceResponse::decode(b).ok()?;
                        p.partial_success
                            .map(|p| (p.rejected_data_points, p.error_message))
                    })
                },
            );
            self.report.points_sent += ok;
            self.report.points_failed += bad;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://collector:4318").unwrap(),
            HttpUrl {
                tls: false,
                authority: "collector:4318".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            parse_url("http://h/otlp/v1/traces").unwrap(),
            HttpUrl {
                tls: false,
                authority: "h:80".into(),
                path: "/otlp/v1/traces".into()
            }
        );
        let u = parse_url("https://h/v1/metrics").unwrap();
        assert_eq!((u.tls, u.authority.as_str()), (true, "h:443"));
        assert_eq!(u.to_string(), "https://h:443/v1/metrics");
        assert!(parse_url("ftp://h:4318").unwrap_err().contains("https://"));
        assert!(parse_url("h:4318").is_err());
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn protocols_and_answers() {
        let v = "OTEL_EXPORTER_OTLP_PROTOCOL";
        assert_eq!(Protocol::parse(v, "http/protobuf"), Ok(Protocol::Protobuf));
        assert_eq!(Protocol::parse(v, " http/json "), Ok(Protocol::Json));
        let e = Protocol::parse(v, "grpc").unwrap_err();
        assert!(e.contains("not gRPC") && e.contains("4318"), "{e}");
        let e = Protocol::parse(v, "http").unwrap_err();
        assert!(
            e.contains("http/protobuf") && e.contains("http/json"),
            "{e}"
        );

        let none = |_: &[u8]| None;
        let json = |b: &str| partial_success(b.as_bytes(), Protocol::Json, "rejectedSpans", none);
        assert_eq!(
            json(r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"bad"}}"#),
            (3, "bad".to_string())
        );
        assert_eq!(
            json(r#"{"partialSuccess":{"rejectedSpans":2}}"#),
            (2, String::new())
        );
        assert_eq!(json(r#"{"partialSuccess":{}}"#), (0, String::new()));
        assert_eq!(json("{}"), (0, String::new()));
        assert_eq!(json("not json"), (0, String::new()));
        let resp = ExportTraceServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans: 4,
                    error_message: "no".into(),
                },
            ),
        };
        let b = resp.encode_to_vec();
        assert_eq!(
            partial_success(&b, Protocol::Protobuf, "rejectedSpans", |b| {
                let p = ExportTraceServiceResponse::decode(b).ok()?;
                p.partial_success
                    .map(|p| (p.rejected_spans, p.error_message))
            }),
            (4, "no".to_string())
        );

        let grpc = parse_url("http://collector:4317").unwrap();
        assert!(grpc_port_hint(&grpc).contains("4318"));
        assert_eq!(grpc_port_hint(&parse_url("http://c:4318").unwrap()), "");
    }

    #[test]
    fn big_series_are_cut_into_bounded_requests() {
        use opentelemetry_proto::tonic::metrics::v1::{Gauge, NumberDataPoint};
        let m = Metric {
            name: "g".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); POINTS_PER_REQUEST * 2 + 5],
            })),
            ..Default::default()
        };
        let small = Metric {
            name: "s".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); 3],
            })),
            ..Default::default()
        };
        let all = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![m, small],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let reqs = metric_requests(&all);
        let counts: Vec<usize> = reqs.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![POINTS_PER_REQUEST, POINTS_PER_REQUEST, 8]);
        assert!(counts.iter().all(|n| *n <= POINTS_PER_REQUEST));
    }
}
