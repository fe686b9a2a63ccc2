//! OTLP/HTTP push (protobuf), on a small blocking HTTP/1.1 client over
//! `std::net`: no async runtime, no HTTP library.
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
//! every request. Only `http://` endpoints: for TLS, point tal at a local
//! collector.
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
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Most spans per request.
pub const SPANS_PER_REQUEST: usize = 1000;
/// Most metric data points per request.
pub const POINTS_PER_REQUEST: usize = 4000;

/// An `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, for connecting and the Host header.
    pub authority: String,
    /// The request path.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Parses an `http://` URL.
pub fn parse_url(s: &str) -> Result<HttpUrl, String> {
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        if s.starts_with("https://") {
            format!("{s}: tal pushes OTLP over plain http only; send to a local OpenTelemetry collector and let it forward over TLS")
        } else {
            format!("{s}: an OTLP/HTTP endpoint looks like http://host:4318")
        }
    })?;
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
        format!("{authority}:80")
    };
    Ok(HttpUrl {
        authority,
        path: path.to_string(),
    })
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
    /// Each request's whole time limit (connect, send, answer), traces and
    /// metrics: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
    /// `OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds, as the OTel specification has it); unset: the push's
    /// own (10 s; 2 s for the last push of `tal record`).
    pub timeouts: (Option<Duration>, Option<Duration>),
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
                    "no OTLP endpoint: pass --otlp-endpoint http://host:4318 or set OTEL_EXPORTER_OTLP_ENDPOINT (or {var})"
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
        Ok(Self {
            traces: signal("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "/v1/traces")?,
            metrics: signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "/v1/metrics")?,
            headers: env("OTEL_EXPORTER_OTLP_HEADERS")
                .map(|h| parse_key_values(&h))
                .unwrap_or_default(),
            timeouts: (
                ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")?.or(all),
                ms("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")?.or(all),
            ),
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

/// What is read of an answer at most: its status line and each header
/// line, how many headers, and its body (tal needs only the status and a
/// small OTLP partial-success message). A receiver that claims more is not
/// believed: the rest is not read and the connection is not kept.
const MAX_LINE_BYTES: u64 = 8 << 10;
const MAX_HEADERS: usize = 100;
const MAX_BODY_BYTES: usize = 64 << 10;

/// A socket whose every read and write ends by one deadline: the time
/// limit covers the whole request, not each read (a receiver that answers
/// a byte a second cannot hold tal for ever).
#[derive(Debug)]
struct DeadlineStream {
    s: TcpStream,
    until: Instant,
}

impl DeadlineStream {
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no whole answer within the time limit (OTEL_EXPORTER_OTLP_TIMEOUT)",
            ));
        }
        Ok(left)
    }
}

/// A socket timeout (EAGAIN) at the deadline, said as the time limit.
fn at_deadline<T>(r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            "no whole answer within the time limit (OTEL_EXPORTER_OTLP_TIMEOUT)",
        ),
        _ => e,
    })
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.s.set_read_timeout(Some(left))?;
        at_deadline(self.s.read(buf))
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        self.s.set_write_timeout(Some(left))?;
        at_deadline(self.s.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.s.flush()
    }
}

/// A kept-alive connection.
#[derive(Debug, Default)]
pub struct Client {
    conn: Option<(String, BufReader<DeadlineStream>)>,
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Client {
    fn connect(url: &HttpUrl, until: Instant) -> io::Result<BufReader<DeadlineStream>> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in url.authority.to_socket_addrs()? {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(BufReader::new(DeadlineStream { s, until }));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// POSTs `body`; reuses the connection when the server keeps it. The
    /// whole request, a second try on a fresh connection included, ends
    /// within `timeout`.
    fn post(
        &mut self,
        url: &HttpUrl,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> io::Result<Answer> {
        let until = Instant::now() + timeout;
        // A kept-alive connection the server closed meanwhile fails on
        // first use: then once more on a fresh one.
        let reused = self.conn.as_ref().is_some_and(|(a, _)| *a == url.authority);
        match self.post_once(url, headers, body, until) {
            Err(e) if reused && e.kind() != io::ErrorKind::TimedOut => {
                self.conn = None;
                self.post_once(url, headers, body, until)
            }
            r => r,
        }
    }

    fn post_once(
        &mut self,
        url: &HttpUrl,
        headers: &[(String, String)],
        body: &[u8],
        until: Instant,
    ) -> io::Result<Answer> {
        if self.conn.as_ref().is_none_or(|(a, _)| *a != url.authority) {
            self.conn = Some((url.authority.clone(), Self::connect(url, until)?));
        }
        let (_, r) = self.conn.as_mut().expect("connected above");
        r.get_mut().until = until;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nUser-Agent: tal/{}\r\n",
            url.path,
            url.authority,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            if !k.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        head.push_str("\r\n");
        let res = (|| {
            let s = r.get_mut();
            s.write_all(head.as_bytes())?;
            s.write_all(body)?;
            s.flush()?;
            read_answer(r)
        })();
        match res {
            Ok((a, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(a)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one line of at most [`MAX_LINE_BYTES`] into `line` (cleared
/// first); how many bytes, 0 at the end of the stream.
fn read_line_bounded(r: &mut impl BufRead, line: &mut String) -> io::Result<usize> {
    line.clear();
    let n = r.take(MAX_LINE_BYTES).read_line(line)?;
    if n as u64 == MAX_LINE_BYTES && !line.ends_with('\n') {
        return Err(bad("the receiver's answer has a line longer than 8 KiB"));
    }
    Ok(n)
}

/// Reads one response; whether the connection stays usable. Reads at most
/// [`MAX_BODY_BYTES`] of body: beyond that the connection is dropped.
fn read_answer(r: &mut impl BufRead) -> io::Result<(Answer, bool)> {
    let mut line = String::new();
    if read_line_bounded(r, &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the receiver closed the connection without an answer",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let (mut len, mut chunked, mut keep, mut retry_after) =
        (None, false, !line.starts_with("HTTP/1.0"), None);
    let mut headers = 0;
    loop {
        if read_line_bounded(r, &mut line)? == 0 {
            return Err(bad("the answer's headers were cut off"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(bad("the receiver's answer has more than 100 headers"));
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => len = v.parse::<u64>().ok(),
            "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !v.eq_ignore_ascii_case("close"),
            "retry-after" => retry_after = v.parse::<u64>().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line_bounded(r, &mut line)?;
            let n = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if n == 0 {
                // Trailers, then the blank line.
                for _ in 0..MAX_HEADERS {
                    if read_line_bounded(r, &mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() as u64 + n > MAX_BODY_BYTES as u64 {
                // Not believed, not read: the status is what counts.
                body.clear();
                keep = false;
                break;
            }
            let at = body.len();
            body.resize(at + n as usize, 0);
            r.read_exact(&mut body[at..])?;
            read_line_bounded(r, &mut line)?;
        }
    } else if let Some(n) = len {
        if n > MAX_BODY_BYTES as u64 {
            keep = false;
        } else {
            body.resize(n as usize, 0);
            r.read_exact(&mut body)?;
        }
    } else if status != 204 && status != 304 {
        r.take(MAX_BODY_BYTES as u64).read_to_end(&mut body)?;
        keep = false;
    }
    Ok((
        Answer {
            status,
            retry_after,
            body,
        },
        keep,
    ))
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
        let timeout = if url == &ep.metrics {
            ep.timeouts.1
        } else {
            ep.timeouts.0
        }
        .unwrap_or(policy.timeout);
        let pause = match client.post(url, &ep.headers, body, timeout) {
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
                last = format!("{url}: {e}");
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
                    let (ok, bad) = deliver(
                        self.client,
                        &self.ep.traces,
                        self.ep,
                        || req.encode_to_vec(),
                        (chunk.len(), "span(s)"),
                        self.policy,
                        &mut self.report,
                        &mut self.down,
                        |b| {
                            ExportTraceServiceResponse::decode(b)
                                .ok()
                                .and_then(|r| r.partial_success)
                                .map_or((0, String::new()), |p| (p.rejected_spans, p.error_message))
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
        for (req, n) in metric_requests(metrics) {
            let (ok, bad) = deliver(
                self.client,
                &self.ep.metrics,
                self.ep,
                || req.encode_to_vec(),
                (n, "point(s)"),
                self.policy,
                &mut self.report,
                &mut self.down,
                |b| {
                    ExportMetricsServiceResponse::decode(b)
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or((0, String::new()), |p| {
                            (p.rejected_data_points, p.error_message)
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
                authority: "collector:4318".into(),
                path: "/".into()
            }
        );
        assert_eq!(
            parse_url("http://h/otlp/v1/traces").unwrap(),
            HttpUrl {
                authority: "h:80".into(),
                path: "/otlp/v1/traces".into()
            }
        );
        assert!(parse_url("https://h:4318")
            .unwrap_err()
            .contains("plain http"));
        assert!(parse_url("h:4318").is_err());
        assert!(parse_url("http://").is_err());
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
