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
//! Configuration and its start-up checks are in `config.rs`.
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
//! up to [`RetryPolicy::attempts`] times; other answers are final, and so
//! are failures that are the same on every try (a certificate the roots do
//! not know, a TLS or HTTP error: the receiver is then taken as down at
//! once). A wait between tries ends at once when a [`Client::stoppable`]
//! client's run ends. A 2xx answer that cannot be read (not the protocol's
//! encoding, a rejected count that is negative or beyond 64 bits) proves no
//! delivery: its items count as not delivered, with why. The
//! [`PushReport`] says what was delivered, what the receiver rejected
//! (OTLP partial success) and what was not delivered, and why; the
//! receiver's own words in it (an error body, an `errorMessage`) are
//! escaped and cut to [`PEER_TEXT_CHARS`] (see [`crate::term`]).

mod config;

use crate::otlp::Otlp;
pub use config::{parse_url, redact_url, Endpoints, HttpUrl, Protocol, MAX_CERTIFICATE_BYTES};
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most spans per request.
pub const SPANS_PER_REQUEST: usize = 1000;
/// Most metric data points per request.
pub const POINTS_PER_REQUEST: usize = 4000;

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
    /// The receiver's texts already in `errors` (each is said once).
    peer_said: Vec<String>,
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

    /// A receiver's text as a reason shows it: escaped and cut; a long
    /// one (over 80 characters) only the first time, then only referred
    /// to (a receiver that says the same long thing to every request is
    /// printed once).
    fn peer(&mut self, text: &str) -> String {
        let t = peer_text(text);
        if t.chars().count() <= 80 {
            t
        } else if self.peer_said.contains(&t) {
            "(the same text as above)".to_string()
        } else {
            self.peer_said.push(t.clone());
            t
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

/// At most this many characters of what a receiver wrote (an HTTP error
/// body, an OTLP `errorMessage`) are printed, escaped (see
/// [`crate::term::escape_for_terminal`]): enough for a reason, not a page.
pub const PEER_TEXT_CHARS: usize = 240;

/// A receiver's text as tal prints it: escaped and cut.
fn peer_text(s: &str) -> String {
    crate::term::escape_for_terminal(s.trim(), PEER_TEXT_CHARS).into_owned()
}

/// The HTTP client: `ureq`'s blocking agent (kept-alive connections,
/// `rustls` for `https://`), made on first use from the endpoints' TLS
/// settings.
#[derive(Debug, Default)]
pub struct Client {
    agent: Option<ureq::Agent>,
    /// Set when the run ends (see [`Client::stoppable`]).
    stop: Option<Arc<AtomicBool>>,
}

/// Why a request got no answer: worth another try (the receiver may come
/// back, or answer in time), or not (a certificate the roots do not know,
/// a TLS or HTTP error that is the same on every try).
#[derive(Debug)]
enum Failure {
    Retry(io::Error),
    Final(String),
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
    /// A client whose waits between retries end as soon as `stop` is set
    /// and the thread using it is unparked (`tal record`'s end: the last
    /// push must not wait out a receiver's `Retry-After`).
    pub fn stoppable(stop: Arc<AtomicBool>) -> Self {
        Self {
            agent: None,
            stop: Some(stop),
        }
    }

    /// Waits `d` before a retry; false (at once) when the stop is set.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let Some(stop) = &self.stop else {
                std::thread::sleep(d);
                return true;
            };
            if stop.load(Ordering::Acquire) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // The stop's setter unparks this thread after setting it.
            std::thread::park_timeout(left);
        }
    }

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
    ) -> Result<Answer, Failure> {
        let mut req = self
            .agent(ep)
            .post(url.to_string())
            .config()
            .timeout_global(Some(timeout))
            .timeout_recv_body(Some(BODY_TIME.min(timeout)))
            .build()
            .header("Content-Type", content_type);
        // (Checked when the endpoints were resolved.)
        for (k, v) in &ep.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return Err(Failure::Retry(time_limit())),
            // rustls says a refused certificate or a failed handshake as
            // invalid data: the same on every try.
            Err(ureq::Error::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(Failure::Final(format!("TLS: {e}")))
            }
            Err(ureq::Error::Io(e)) => return Err(Failure::Retry(e)),
            Err(
                e @ (ureq::Error::HostNotFound
                | ureq::Error::ConnectionFailed
                | ureq::Error::BodyStalled
                | ureq::Error::Protocol(_)),
            ) => return Err(Failure::Retry(io::Error::other(e.to_string()))),
            Err(e) => return Err(Failure::Final(e.to_string())),
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
/// receiver refused (OTLP partial success), or why it failed and whether
/// the receiver is to be taken as down (retries used up, a retry wait cut
/// short by the stop, or a failure no retry mends).
fn send(
    client: &mut Client,
    url: &HttpUrl,
    ep: &Endpoints,
    body: &[u8],
    policy: &RetryPolicy,
    report: &mut PushReport,
    rejected: impl Fn(&[u8]) -> Result<(i64, String), String>,
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
                // An answer that cannot be read is no proof of delivery.
                return rejected(&a.body).map_err(|e| {
                    (
                        format!(
                            "{url} answered HTTP {} with an answer that is not an OTLP export \
                             response ({e}); counted as not delivered",
                            a.status
                        ),
                        false,
                    )
                });
            }
            Ok(a) if matches!(a.status, 408 | 429 | 502 | 503 | 504) => {
                last = format!("{url} answered HTTP {}", a.status);
                a.retry_after
                    .map_or(wait, |r| r.min(Duration::from_secs(30)))
            }
            Ok(a) => {
                let text = report.peer(&String::from_utf8_lossy(&a.body));
                return Err((format!("{url} answered HTTP {} {text}", a.status), false));
            }
            Err(Failure::Final(e)) => {
                return Err((format!("{url}: {}", peer_text(&e)), true));
            }
            Err(Failure::Retry(e)) => {
                last = format!(
                    "{url}: {}{}",
                    peer_text(&e.to_string()),
                    grpc_port_hint(url)
                );
                wait
            }
        };
        if attempt + 1 < policy.attempts {
            if !client.pause(pause) {
                return Err((format!("{last} (the run ended before a retry)"), true));
            }
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
/// protobuf's JSON mapping allows). An empty answer, or one without a
/// partial success, rejected nothing. An answer that cannot be read (not
/// the protocol's encoding, a count that is negative, not a whole number or
/// beyond 64 bits, a message that is not text) is an error: it proves no
/// delivery.
fn partial_success(
    body: &[u8],
    protocol: Protocol,
    rejected: &str,
    decode: impl Fn(&[u8]) -> Result<Option<(i64, String)>, prost::DecodeError>,
) -> Result<(i64, String), String> {
    use serde_json::Value;
    let (n, msg) = match protocol {
        Protocol::Protobuf => match decode(body) {
            Err(e) => return Err(format!("not OTLP protobuf: {e}")),
            Ok(None) => return Ok((0, String::new())),
            Ok(Some(found)) => found,
        },
        Protocol::Json if body.iter().all(u8::is_ascii_whitespace) => {
            return Ok((0, String::new()))
        }
        Protocol::Json => {
            let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
            let v = v.as_object().ok_or("not a JSON object")?;
            let p = match v.get("partialSuccess").or_else(|| v.get("partial_success")) {
                None | Some(Value::Null) => return Ok((0, String::new())),
                Some(Value::Object(p)) => p,
                Some(_) => return Err("its partialSuccess is not an object".into()),
            };
            let n = match p.get(rejected) {
                None | Some(Value::Null) => Some(0),
                Some(Value::String(s)) => s.parse::<i64>().ok(),
                Some(n) => n.as_i64(),
            }
            .ok_or_else(|| {
                format!(
                    "its {rejected} is not a whole number below 2^63: {}",
                    peer_text(&p[rejected].to_string())
                )
            })?;
            let msg = match p.get("errorMessage").or_else(|| p.get("error_message")) {
                None | Some(Value::Null) => "",
                Some(Value::String(m)) => m,
                Some(_) => return Err("its errorMessage is not a string".into()),
            };
            (n, msg.to_string())
        }
    };
    if n < 0 {
        return Err(format!("its {rejected} is negative: {n}"));
    }
    Ok((n, msg))
}

/// Reads a traces (`metrics` false) or metrics answer in `protocol`: the
/// count the receiver rejected, and its message.
fn answer_reader(
    metrics: bool,
    protocol: Protocol,
) -> impl Fn(&[u8]) -> Result<(i64, String), String> {
    move |b: &[u8]| {
        if metrics {
            partial_success(b, protocol, "rejectedDataPoints", |b| {
                let p = ExportMetricsServiceResponse::decode(b)?;
                Ok(p.partial_success
                    .map(|p| (p.rejected_data_points, p.error_message)))
            })
        } else {
            partial_success(b, protocol, "rejectedSpans", |b| {
                let p = ExportTraceServiceResponse::decode(b)?;
                Ok(p.partial_success
                    .map(|p| (p.rejected_spans, p.error_message)))
            })
        }
    }
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
    rejected: impl Fn(&[u8]) -> Result<(i64, String), String>,
) -> (usize, usize) {
    if let Some(why) = down {
        report.fail(why.clone());
        return (0, n);
    }
    match send(client, url, ep, &body(), policy, report, rejected) {
        Ok((refused, msg)) => {
            let refused = (refused.max(0) as usize).min(n);
            if refused > 0 {
                let text = report.peer(&msg);
                report.fail(format!("the receiver rejected {refused} {what}: {text}"));
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
        let protocol = self.ep.protocols.0;
        for (req, n) in trace_requests(traces) {
            let (ok, bad) = deliver(
                self.client,
                &self.ep.traces,
                self.ep,
                || encode(&req, protocol),
                (n, "span(s)"),
                self.policy,
                &mut self.report,
                &mut self.down,
                answer_reader(false, protocol),
            );
            self.report.spans_sent += ok;
            self.report.spans_failed += bad;
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
                answer_reader(true, protocol),
            );
            self.report.points_sent += ok;
            self.report.points_failed += bad;
        }
    }

    /// Sends one request encoded earlier ([`encode_requests`]); returns
    /// the items delivered and not (rejected, or not sent). Whether a
    /// request not sent may be tried again later: [`Pusher::down`].
    pub fn encoded(&mut self, r: &Encoded) -> (usize, usize) {
        let (url, protocol, what) = if r.metrics {
            (&self.ep.metrics, self.ep.protocols.1, "point(s)")
        } else {
            (&self.ep.traces, self.ep.protocols.0, "span(s)")
        };
        let (ok, bad) = deliver(
            self.client,
            url,
            self.ep,
            || r.body.clone(),
            (r.items, what),
            self.policy,
            &mut self.report,
            &mut self.down,
            answer_reader(r.metrics, protocol),
        );
        if r.metrics {
            self.report.points_sent += ok;
            self.report.points_failed += bad;
        } else {
            self.report.spans_sent += ok;
            self.report.spans_failed += bad;
        }
        (ok, bad)
    }

    /// The receiver is taken as down (retries used up, or a failure no
    /// retry mends): nothing more is tried in this push, and what was not
    /// sent for that reason can be tried again later.
    pub fn down(&self) -> bool {
        self.down.is_some()
    }
}

/// The trace requests of `traces`: each resource's spans in pieces of at
/// most [`SPANS_PER_REQUEST`], with their span counts.
fn trace_requests(
    traces: &ExportTraceServiceRequest,
) -> impl Iterator<Item = (ExportTraceServiceRequest, usize)> + '_ {
    traces.resource_spans.iter().flat_map(|rs| {
        rs.scope_spans.iter().flat_map(move |ss| {
            ss.spans.chunks(SPANS_PER_REQUEST).map(move |chunk| {
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
                (req, chunk.len())
            })
        })
    })
}

/// One request, encoded for its endpoint and ready to send: what a live
/// exporter keeps while its receiver is away, so that what it holds is
/// known to the byte ([`Encoded::bytes`]).
#[derive(Debug, Clone)]
pub struct Encoded {
    /// A metrics request (else a traces one).
    pub metrics: bool,
    /// The request body, in the signal's protocol.
    pub body: Vec<u8>,
    /// Its spans or points.
    pub items: usize,
}

impl Encoded {
    /// The memory it holds.
    pub fn bytes(&self) -> usize {
        self.body.capacity() + std::mem::size_of::<Self>()
    }
}

/// `otlp`'s requests (as [`push`] would send them), encoded for `ep`.
pub fn encode_requests(otlp: &Otlp, ep: &Endpoints) -> Vec<Encoded> {
    let (tp, mp) = ep.protocols;
    let mut out: Vec<Encoded> = trace_requests(&otlp.traces)
        .map(|(req, items)| Encoded {
            metrics: false,
            body: encode(&req, tp),
            items,
        })
        .collect();
    out.extend(
        metric_requests(&otlp.metrics)
            .into_iter()
            .map(|(req, items)| Encoded {
                metrics: true,
                body: encode(&req, mp),
                items,
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let json = |b: &str| answer_reader(false, Protocol::Json)(b.as_bytes());
        assert_eq!(
            json(r#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"bad"}}"#),
            Ok((3, "bad".to_string()))
        );
        assert_eq!(
            json(r#"{"partialSuccess":{"rejectedSpans":2}}"#),
            Ok((2, String::new()))
        );
        assert_eq!(json(r#"{"partialSuccess":{}}"#), Ok((0, String::new())));
        assert_eq!(json("{}"), Ok((0, String::new())));
        assert_eq!(json(""), Ok((0, String::new())));
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
            answer_reader(false, Protocol::Protobuf)(&b),
            Ok((4, "no".to_string()))
        );
        assert_eq!(
            answer_reader(false, Protocol::Protobuf)(b""),
            Ok((0, String::new()))
        );
    }

    /// Answers a receiver could send to pass a failure off as delivery:
    /// none reads as success (they once all read as "nothing rejected").
    #[test]
    fn unreadable_answers_are_not_success() {
        let json = |b: &str| answer_reader(false, Protocol::Json)(b.as_bytes());
        for bad in [
            r#"{"partialSuccess":{"rejectedSpans":"99999999999999999999999"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":99999999999999999999999}}"#,
            r#"{"partialSuccess":{"rejectedSpans":1e30}}"#,
            r#"{"partialSuccess":{"rejectedSpans":2.5}}"#,
            r#"{"partialSuccess":{"rejectedSpans":-1}}"#,
            r#"{"partialSuccess":{"rejectedSpans":"-7"}}"#,
            r#"{"partialSuccess":{"rejectedSpans":true}}"#,
            r#"{"partialSuccess":{"rejectedSpans":1,"errorMessage":{"x":1}}}"#,
            r#"{"partialSuccess":[1]}"#,
            r#"[]"#,
            "not json",
            "<html>ok</html>",
        ] {
            assert!(json(bad).is_err(), "{bad} read as {:?}", json(bad));
        }
        let e =
            json(r#"{"partialSuccess":{"rejectedSpans":"99999999999999999999999"}}"#).unwrap_err();
        assert!(e.contains("rejectedSpans"), "{e}");
        // Protobuf: not a message, or a negative count.
        let proto = |b: &[u8]| answer_reader(true, Protocol::Protobuf)(b);
        assert!(proto(b"\xff\xff\xff\xff").is_err());
        assert!(proto(b"<html>").is_err());
        let neg = ExportMetricsServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
                    rejected_data_points: -5,
                    error_message: String::new(),
                },
            ),
        };
        assert!(proto(&neg.encode_to_vec()).is_err());
    }

    #[test]
    fn grpc_hint() {
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
