//! OTLP export against a real OTLP/HTTP receiver: `scripts/otlp_receiver.py`,
//! which decodes every request with the official protobuf definitions
//! (`opentelemetry-proto` from PyPI). Every span and metric point of a real
//! recorded session must arrive with the JSONL's ids, parents, attributes
//! and values; the OTLP JSON files must decode to the same.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running receiver; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, fail_first: u32) -> Self {
        Self::start_with(dir, fail_first, None)
    }

    /// With `tls`, over HTTPS with this certificate and key (PEM files).
    fn start_with(dir: &Path, fail_first: u32, tls: Option<(&Path, &Path)>) -> Self {
        Self::start_in(dir, fail_first, tls, 0)
    }

    /// With `partial` > 0, every answer says that many spans or points
    /// were rejected (OTLP partial success).
    fn start_in(dir: &Path, fail_first: u32, tls: Option<(&Path, &Path)>, partial: u32) -> Self {
        Self::start_args(dir, fail_first, tls, partial, &[])
    }

    /// With more of `scripts/otlp_receiver.py`'s options (`--answer`,
    /// `--retry-after`, `--error-message`).
    fn start_args(
        dir: &Path,
        fail_first: u32,
        tls: Option<(&Path, &Path)>,
        partial: u32,
        extra: &[&std::ffi::OsStr],
    ) -> Self {
        let out = dir.join("received.jsonl");
        let port_file = dir.join("port");
        let mut cmd = Command::new(python());
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/otlp_receiver.py"))
            .arg("serve")
            .arg(&out)
            .args(["--fail-first", &fail_first.to_string()])
            .args(["--partial", &partial.to_string()])
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .stdin(Stdio::null());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let child = cmd.spawn().unwrap();
        let t0 = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, port, out }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received: (path, headers, decoded body).
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Records a session with tasks (completed, failed, queued) and returns its
/// log and JSONL.
fn session(dir: &Path) -> (PathBuf, Vec<Value>) {
    let tal = env!("CARGO_BIN_EXE_tal");
    let script = format!(
        "{tal} emit TaskQueued --task-id q.1 && \
         {tal} run --task-id ok.1 -- sleep 0.2 && \
         ({tal} run --task-id bad.1 -- sh -c 'exit 3' || true) && \
         {tal} run --task-id ok.2 -- true && \
         {tal} emit TaskCompleted --task-id q.1"
    );
    let out = run(recorder()
        .arg(dir.join("rec"))
        .arg("--socket")
        .arg(dir.join("s.sock"))
        .args(["--", "sh", "-c", &script]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = files_with_ext(&dir.join("rec"), ".tal")[0].clone();
    let v = read_jsonl_in(&dir.join("rec"));
    (log, v)
}

/// `tal record` at 20 Hz for session otlp.s on node n1 (add `--out` DIR
/// next, as the tests do).
fn recorder() -> Command {
    let mut c = tal_cmd();
    c.args([
        "record",
        "--interval",
        "0.05",
        "--session-id",
        "otlp.s",
        "--node-id",
        "n1",
        "--out",
    ]);
    c
}

/// `tal convert LOG -o JSONL --otlp-endpoint URL`, with the OTel
/// environment cleared as [`tal_cmd`] does.
fn push_cmd(log: &Path, jsonl: &Path, url: &str) -> Command {
    let mut c = tal_cmd();
    c.arg("convert")
        .arg(log)
        .arg("-o")
        .arg(jsonl)
        .args(["--otlp-endpoint", url]);
    c
}

fn tal_cmd() -> Command {
    without_otel_env(tal())
}

/// `c` with the OTel environment cleared.
fn without_otel_env(mut c: Command) -> Command {
    c.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
        .env_remove("OTEL_EXPORTER_OTLP_CERTIFICATE")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES");
    c
}

fn pad(id: &Value, width: usize) -> String {
    let h = id.as_str().unwrap().trim_start_matches("0x");
    format!("{h:0>width$}")
}

/// An OTLP attribute list as a JSON object of plain values.
fn attrs(list: &Value) -> serde_json::Map<String, Value> {
    fn plain(v: &Value) -> Value {
        if let Some(s) = v.get("stringValue") {
            return s.clone();
        }
        if let Some(b) = v.get("boolValue") {
            return b.clone();
        }
        if let Some(i) = v.get("intValue") {
            // protobuf JSON writes int64 as a string.
            return Value::from(
                i.as_str()
                    .map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap()),
            );
        }
        if let Some(d) = v.get("doubleValue") {
            return d.clone();
        }
        if let Some(kv) = v.get("kvlistValue") {
            return Value::Object(attrs(&kv["values"]));
        }
        if let Some(a) = v.get("arrayValue") {
            return Value::Array(a["values"].as_array().unwrap().iter().map(plain).collect());
        }
        Value::Null
    }
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| (kv["key"].as_str().unwrap().to_string(), plain(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

fn u64_of(v: &Value) -> u64 {
    v.as_str()
        .map_or_else(|| v.as_u64().unwrap(), |s| s.parse().unwrap())
}

/// Checks decoded `/v1/traces` bodies against the JSONL's span lines.
fn check_spans(bodies: &[&Value], jsonl: &[Value]) {
    let mut got = std::collections::BTreeMap::new();
    for b in bodies {
        for rs in b["resourceSpans"].as_array().unwrap() {
            let res = attrs(&rs["resource"]["attributes"]);
            assert_eq!(res["service.name"], "tal-test");
            assert_eq!(res["session.id"], "otlp.s");
            assert_eq!(res["site"], "lab, b");
            assert_eq!(res["host.name"], "n1", "one node: the session's host");
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    got.insert(s["spanId"].as_str().unwrap().to_string(), s.clone());
                }
            }
        }
    }
    let want = lines(jsonl, "span", None);
    assert_eq!(got.len(), want.len(), "every span arrives once");
    for w in want {
        let g = &got[&pad(&w["span_id"], 16)];
        assert_eq!(g["traceId"], pad(&w["trace_id"], 32));
        match w["parent_span_id"].as_str() {
            None => assert!(g.get("parentSpanId").is_none_or(|p| p == "")),
            Some(_) => assert_eq!(g["parentSpanId"], pad(&w["parent_span_id"], 16)),
        }
        assert_eq!(g["name"], w["name"]);
        assert_eq!(
            u64_of(&g["startTimeUnixNano"]),
            w["start_ns"].as_u64().unwrap()
        );
        assert_eq!(u64_of(&g["endTimeUnixNano"]), w["end_ns"].as_u64().unwrap());
        let code = g["status"]
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("STATUS_CODE_UNSET");
        assert_eq!(
            code,
            format!("STATUS_CODE_{}", w["status_code"].as_str().unwrap())
        );
        if let Some(d) = w["status_description"].as_str() {
            assert_eq!(g["status"]["message"], d);
        }
        assert_eq!(
            attrs(&g["attributes"]),
            *w["attributes"].as_object().unwrap(),
            "{w}"
        );
        if w["attributes"].get("queued_time_s").is_some() {
            assert_eq!(g["events"][0]["name"], "TaskQueued");
        }
    }
}

/// Checks decoded `/v1/metrics` bodies against the JSONL.
fn check_metrics(bodies: &[&Value], jsonl: &[Value]) {
    let metric_line = lines(jsonl, "metric", None).last().copied().unwrap();
    let mut sums = std::collections::BTreeMap::new();
    let mut cpu_points = Vec::new();
    let mut hist = None;
    for b in bodies {
        for rm in b["resourceMetrics"].as_array().unwrap() {
            let res = attrs(&rm["resource"]["attributes"]);
            for sm in rm["scopeMetrics"].as_array().unwrap() {
                for m in sm["metrics"].as_array().unwrap() {
                    let name = m["name"].as_str().unwrap();
                    if let Some(s) = m.get("sum") {
                        if name.starts_with("tasks_") {
                            let v = &s["dataPoints"][0]["asInt"];
                            sums.insert(name.to_string(), u64_of(v) as i64);
                            assert_eq!(
                                s["isMonotonic"].as_bool().unwrap_or(false),
                                name != "tasks_running"
                            );
                        }
                    }
                    if name == "node_cpu_utilization" {
                        assert_eq!(res["host.name"], "n1");
                        for p in m["gauge"]["dataPoints"].as_array().unwrap() {
                            cpu_points.push((
                                u64_of(&p["timeUnixNano"]),
                                p["asDouble"].as_f64().unwrap(),
                            ));
                        }
                    }
                    if name == "task_duration_seconds" {
                        hist = Some(m["exponentialHistogram"]["dataPoints"][0].clone());
                    }
                }
            }
        }
    }
    for name in [
        "tasks_submitted",
        "tasks_started",
        "tasks_completed",
        "tasks_failed",
        "tasks_canceled",
    ] {
        if let Some(v) = metric_line.get(name) {
            assert_eq!(sums[name], v.as_i64().unwrap(), "{name}");
        }
    }
    assert_eq!(sums["tasks_completed"], 3);
    assert_eq!(sums["tasks_failed"], 1);
    let h = hist.expect("the duration histogram arrives");
    assert_eq!(
        u64_of(&h["count"]),
        metric_line["task_duration_seconds_count"].as_u64().unwrap()
    );
    let sum = h["sum"].as_f64().unwrap();
    assert!((sum - metric_line["task_duration_seconds_sum"].as_f64().unwrap()).abs() < 1e-9);
    let buckets: u64 = h["positive"]["bucketCounts"]
        .as_array()
        .map_or(0, |a| a.iter().map(u64_of).sum());
    assert_eq!(
        buckets + h.get("zeroCount").map_or(0, u64_of),
        u64_of(&h["count"])
    );
    // Every per_node cpu_percent is a gauge point with its time.
    let mut want: Vec<(u64, f64)> = lines(jsonl, "event", Some("ResourceUpdate"))
        .into_iter()
        .filter(|l| l["resource_scope"] == "per_node" && l["cpu_percent"].is_number())
        .map(|l| {
            let t = l["event_time"].as_f64().unwrap();
            ((t * 1e9).round() as u64, l["cpu_percent"].as_f64().unwrap())
        })
        .collect();
    cpu_points.sort_by(|a, b| a.partial_cmp(b).unwrap());
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(cpu_points.len(), want.len());
    for (g, w) in cpu_points.iter().zip(&want) {
        assert!(g.0.abs_diff(w.0) <= 1000, "{g:?} vs {w:?}");
        assert_eq!(g.1, w.1);
    }
}

#[test]
fn push_and_files_carry_every_span_and_point() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let rx = Receiver::start(dir.path(), 0);
    let prefix = dir.path().join("export");
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&log)
        .args(["--format", "otlp-json", "-o"])
        .arg(&prefix)
        .args(["--otlp-endpoint", &rx.url()])
        .env("OTEL_SERVICE_NAME", "tal-test")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "site=lab%2C b,service.name=ignored",
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=hpc-1"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("delivered in"), "{stderr}");

    let reqs = rx.requests();
    assert!(reqs
        .iter()
        .all(|r| r["content_type"] == "application/x-protobuf"));
    assert!(reqs.iter().all(|r| r["headers"]["x-tenant"] == "hpc-1"));
    let traces: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/traces")
        .map(|r| &r["body"])
        .collect();
    let metrics: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/metrics")
        .map(|r| &r["body"])
        .collect();
    check_spans(&traces, &v);
    check_metrics(&metrics, &v);

    // The JSON files decode, with the same definitions, to the same.
    let mut t = prefix.as_os_str().to_owned();
    t.push(".traces.json");
    let mut m = prefix.as_os_str().to_owned();
    m.push(".metrics.json");
    let dec = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/otlp_receiver.py"))
        .arg("check-json")
        .arg(&t)
        .arg(&m)
        .output()
        .unwrap();
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    let docs: Vec<Value> = String::from_utf8(dec.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_spans(&[&docs[0]], &v);
    check_metrics(&[&docs[1]], &v);
}

#[test]
fn a_flaky_receiver_gets_everything_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let rx = Receiver::start(dir.path(), 2);
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&log)
        .arg("-o")
        .arg(dir.path().join("s.jsonl"))
        .arg("--otlp-endpoint")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", rx.url())
        .env("OTEL_SERVICE_NAME", "tal-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "site=lab%2C b"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("2 retries"), "{stderr}");
    let reqs = rx.requests();
    let traces: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/traces")
        .map(|r| &r["body"])
        .collect();
    check_spans(&traces, &v);
    // The JSONL was written as usual.
    assert_eq!(read_jsonl(&dir.path().join("s.jsonl")).len(), v.len());
}

#[test]
fn http_json_arrives_whole_its_answers_are_read_and_grpc_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    // Traces as OTLP JSON, metrics as protobuf (the per-signal variable wins).
    let rx = Receiver::start(dir.path(), 0);
    let out = run(push_cmd(&log, &dir.path().join("a.jsonl"), &rx.url())
        .env("OTEL_SERVICE_NAME", "tal-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "site=lab%2C b")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let reqs = rx.requests();
    let of = |path: &str, ctype: &str| -> Vec<&Value> {
        let r: Vec<&Value> = reqs.iter().filter(|r| r["path"] == path).collect();
        assert!(
            r.iter().all(|r| r["content_type"] == ctype),
            "{path}: {r:?}"
        );
        r.iter().map(|r| &r["body"]).collect()
    };
    check_spans(&of("/v1/traces", "application/json"), &v);
    check_metrics(&of("/v1/metrics", "application/x-protobuf"), &v);
    drop(rx);

    // A JSON answer's partial success is read: what it refused is reported.
    let sub = dir.path().join("partial");
    std::fs::create_dir(&sub).unwrap();
    let rx = Receiver::start_in(&sub, 0, None, 1);
    let out = run(push_cmd(&log, &sub.join("b.jsonl"), &rx.url())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("rejected 1 span(s): refused by the test"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rejected 1 point(s): refused by the test"),
        "{stderr}"
    );
    assert_eq!(read_jsonl(&sub.join("b.jsonl")).len(), v.len());

    // gRPC, or a protocol that is none, is refused before anything is done.
    for (var, value, says) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "not gRPC"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", "4318"),
        (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "http/xml",
            "http/json",
        ),
    ] {
        let jsonl = dir.path().join("c.jsonl");
        let out = run(push_cmd(&log, &jsonl, &rx.url()).env(var, value));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(var) && stderr.contains(says), "{stderr}");
        assert!(!jsonl.exists());
        let out = run(recorder()
            .arg(dir.path().join("rec-grpc"))
            .args(["--otlp-endpoint", &rx.url(), "--", "true"])
            .env(var, value));
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }
}

#[test]
fn an_unreachable_receiver_loses_nothing_local_and_says_what_was_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let jsonl = dir.path().join("s.jsonl");
    let out = run(&mut push_cmd(
        &log,
        &jsonl,
        &format!("http://127.0.0.1:{port}"),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let spans = lines(&v, "span", None).len();
    assert!(
        stderr.contains(&format!("NOT delivered: {spans} span(s)")),
        "{stderr}"
    );
    assert!(stderr.contains("gave up after 5 tries"), "{stderr}");
    assert_eq!(read_jsonl(&jsonl).len(), v.len(), "the JSONL is complete");
    assert!(log.exists());

    // Another scheme and a missing endpoint are refused up front, clearly.
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&log)
        .args(["--otlp-endpoint", "ftp://c:4318"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://host:4318"));
    let out = run(tal_cmd().arg("convert").arg(&log).arg("--otlp-endpoint"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
}

#[test]
fn a_rhapsody_checkpoint_converts_to_otlp() {
    // RHAPSODY's own file (the reference) is valid input too.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ref");
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&reference)
        .args(["--format", "otlp-json", "-o"])
        .arg(&prefix));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut t = prefix.as_os_str().to_owned();
    t.push(".traces.json");
    let traces: Value = serde_json::from_slice(&std::fs::read(&t).unwrap()).unwrap();
    let spans = traces["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    let v = read_jsonl(&reference);
    assert_eq!(spans.len(), lines(&v, "span", None).len());
    assert!(spans
        .iter()
        .all(|s| s["traceId"].as_str().unwrap().len() == 32));
}

#[test]
fn a_live_push_from_record_sends_the_session_as_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(dir.path(), 0);
    let tal = env!("CARGO_BIN_EXE_tal");
    let script = format!(
        "{tal} run --task-id a -- sleep 0.6 && ({tal} run --task-id b -- false || true) && \
         {tal} emit TaskStarted --task-id still.open && sleep 1.6"
    );
    let out = run(recorder()
        .arg(dir.path().join("rec"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--otlp-endpoint", &rx.url(), "--otlp-interval", "300ms"])
        .env("OTEL_SERVICE_NAME", "tal-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "site=lab%2C b")
        .env("SLURM_JOB_ID", "4242")
        .args(["--", "sh", "-c", &script]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("NOT delivered"), "{stderr}");
    let v = read_jsonl_in(&dir.path().join("rec"));
    let reqs = rx.requests();
    let traces: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/traces")
        .map(|r| &r["body"])
        .collect();
    // The same spans as the JSONL's, sent in more than one push (task a's
    // span left before the end).
    assert!(traces.len() >= 2, "{} trace requests", traces.len());
    check_spans(&traces, &v);
    let res = attrs(&traces[0]["resourceSpans"][0]["resource"]["attributes"]);
    assert_eq!(res["slurm.job_id"], "4242", "{res:?}");
    // The last push's counters are the final metric line's.
    let metric_line = lines(&v, "metric", None).last().copied().unwrap();
    let last_sums: std::collections::BTreeMap<String, i64> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/metrics")
        .flat_map(|r| r["body"]["resourceMetrics"].as_array().unwrap().clone())
        .flat_map(|rm| rm["scopeMetrics"][0]["metrics"].as_array().unwrap().clone())
        .filter(|m| m["name"].as_str().unwrap().starts_with("tasks_") && m.get("sum").is_some())
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                u64_of(&m["sum"]["dataPoints"][0]["asInt"]) as i64,
            )
        })
        .collect();
    for name in [
        "tasks_started",
        "tasks_completed",
        "tasks_failed",
        "tasks_canceled",
    ] {
        assert_eq!(
            last_sums[name],
            metric_line[name].as_i64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn a_live_push_to_nowhere_does_not_disturb_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tal = env!("CARGO_BIN_EXE_tal");
    let out = run(recorder()
        .arg(dir.path().join("rec"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-interval",
            "200ms",
        ])
        .args([
            "--",
            "sh",
            "-c",
            &format!("{tal} run --task-id a -- sleep 0.5"),
        ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("OTLP live push: NOT delivered"), "{stderr}");
    let v = read_jsonl_in(&dir.path().join("rec"));
    assert_complete(&v);
    let m = lines(&v, "metric", None).last().copied().unwrap();
    assert_eq!(m["agent_samples_dropped"], 0);
    assert_eq!(m["tasks_completed"], 1);
}

/// A receiver that misbehaves, answering each request with `answer` (and
/// then, if `trickle`, one more byte a second for ever, never finishing):
/// returns its port. It reads each request (headers and body) first.
/// The start of an answer whose headers never end (with `trickle`, one
/// more byte of a header comes every second).
const SLOW_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nX-Slow: ";

fn bad_receiver(answer: &'static [u8], trickle: bool) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() || w.write_all(answer).is_err() {
                        return;
                    }
                    if trickle {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(1));
                            if w.write_all(b"a").is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// Receivers that claim huge answers are not believed (tal once allocated
/// what a Content-Length or chunk size claimed, and died of it): the
/// status counts, the rest is not read, and tal's memory stays small.
#[test]
fn a_receiver_claiming_a_huge_answer_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n"[..],
    ] {
        // Leaked: the receiver thread lives as long as the test.
        let answer: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
        let port = bad_receiver(answer, false);
        let jsonl = dir.path().join("h.jsonl");
        let out = run(&mut push_cmd(
            &log,
            &jsonl,
            &format!("http://127.0.0.1:{port}"),
        ));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let spans = lines(&v, "span", None).len();
        assert!(stderr.contains(&format!("{spans} span(s)")), "{stderr}");
        // The largest peak RSS of any child this test process has waited
        // for (the Python receivers of other tests are far below this).
        // SAFETY: rusage is plain data; getrusage fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
        assert!(ru.ru_maxrss < 200 << 10, "peak RSS {} KiB", ru.ru_maxrss);
    }
}

/// A receiver that answers a byte a second holds each request only for
/// its time limit (OTEL_EXPORTER_OTLP_TIMEOUT), not for ever; the JSONL is
/// complete and what was not delivered is said.
#[test]
fn a_receiver_that_trickles_is_given_up_on_within_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let port = bad_receiver(SLOW_ANSWER, true);
    let jsonl = dir.path().join("t.jsonl");
    let out = run(push_cmd(&log, &jsonl, &format!("http://127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NOT delivered"), "{stderr}");
    assert!(stderr.contains("time limit"), "{stderr}");
    assert_eq!(read_jsonl(&jsonl).len(), v.len(), "the JSONL is complete");

    // A bad time limit is refused up front.
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&log)
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{port}")])
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_TIMEOUT=soon"),
        "{stderr}"
    );
}

/// `tal record`'s last live push comes after the JSONL is written, and
/// SIGTERM during it ends tal at once, whatever the receiver does.
#[test]
fn record_writes_the_jsonl_before_its_last_push_and_a_signal_ends_the_push() {
    let dir = tempfile::tempdir().unwrap();
    let port = bad_receiver(SLOW_ANSWER, true);
    let child = recorder()
        .arg(dir.path())
        .args([
            "--socket",
            dir.path().join("s.sock").to_str().unwrap(),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-interval",
            "100s",
            "--",
            "sleep",
            "0.3",
        ])
        // Each request could hang a minute: only the signal ends it sooner.
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The JSONL appears while the push is stuck.
    let found = (0..400).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".telemetry.jsonl"))
    });
    let jsonl = found.expect("the JSONL is written before the last push");
    assert_complete(&read_jsonl(&jsonl));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = wait_output(child, std::time::Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `https://` receivers: one whose self-signed certificate is given in
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` gets everything; without it, the
/// certificate is refused and the push says so (the JSONL is written all
/// the same); a file that holds no certificate is refused up front.
#[test]
fn https_receivers_are_checked_against_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let rdir = dir.path().join("tls");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start_with(&rdir, 0, Some((&cert_pem, &key_pem)));
    let url = format!("https://localhost:{}", rx.port);

    let jsonl = dir.path().join("t.jsonl");
    let out = run(push_cmd(&log, &jsonl, &url).env("OTEL_EXPORTER_OTLP_CERTIFICATE", &cert_pem));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let spans = lines(&v, "span", None).len();
    assert!(stderr.contains(&format!("{spans} span(s)")), "{stderr}");
    let got = rx.requests();
    assert!(got.iter().any(|r| r["path"] == "/v1/traces"), "{got:?}");
    assert!(got.iter().any(|r| r["path"] == "/v1/metrics"), "{got:?}");

    // The public roots do not know it: refused, said, nothing sent.
    let before = rx.requests().len();
    let out = run(push_cmd(&log, &jsonl, &url).env("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NOT delivered"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(rx.requests().len(), before);
    assert_eq!(read_jsonl(&jsonl).len(), v.len(), "the JSONL is complete");

    // A certificate file that is not one is refused before anything runs.
    let out = run(tal_cmd()
        .arg("convert")
        .arg(&log)
        .args(["--otlp-endpoint", &url])
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &jsonl));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{stderr}"
    );
}

/// A receiver's text goes to the user's terminal: an `errorMessage` of
/// 60 KB of escape sequences (clear the screen, set the title, a fake
/// status line) and an HTTP error body of the same are printed escaped,
/// cut to a few hundred characters, and not over and over.
#[test]
fn a_receivers_text_is_escaped_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = session(dir.path());
    let hostile = format!(
        "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\r\ntal convert: everything delivered\n{}",
        "\x1b[5mX".repeat(60_000 / 6)
    );
    let check = |stderr: &str| {
        assert!(
            !stderr.contains(['\x1b', '\x07', '\u{9b}', '\r']),
            "raw control characters: {:?}",
            &stderr[..stderr.len().min(400)]
        );
        assert!(!stderr.contains("\ntal convert: everything"), "{stderr}");
        assert!(stderr.len() < 4000, "{} bytes of stderr", stderr.len());
        // Said once, though the traces and metrics answers both carry it.
        assert_eq!(stderr.matches("\\x1b[2J").count(), 1, "{stderr}");
        assert_eq!(stderr.matches("more characters)").count(), 1, "{stderr}");
    };
    // OTLP partial success with that message (protobuf).
    let rdir = dir.path().join("p");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start_args(
        &rdir,
        0,
        None,
        1,
        &["--error-message".as_ref(), hostile.as_ref()],
    );
    let out = run(&mut push_cmd(&log, &dir.path().join("a.jsonl"), &rx.url()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected"), "{stderr}");
    check(&stderr);
    // An HTTP error with that body.
    let body = dir.path().join("body");
    std::fs::write(&body, &hostile).unwrap();
    let rdir = dir.path().join("e");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start_args(
        &rdir,
        0,
        None,
        0,
        &["--answer".as_ref(), "400".as_ref(), body.as_os_str()],
    );
    let out = run(&mut push_cmd(&log, &dir.path().join("b.jsonl"), &rx.url()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    check(&stderr);
}

/// Answers that cannot be read prove no delivery: an OTLP/JSON partial
/// success whose count is beyond 64 bits (as a string or a number) or
/// not a whole number, and a protobuf answer that is not one. Each once
/// read as "nothing rejected", rc 0.
#[test]
fn an_unreadable_answer_is_not_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let spans = lines(&v, "span", None).len();
    for (i, (protocol, body)) in [
        (
            "http/json",
            &br#"{"partialSuccess":{"rejectedSpans":"99999999999999999999999","rejectedDataPoints":"99999999999999999999999"}}"#[..],
        ),
        (
            "http/json",
            &br#"{"partialSuccess":{"rejectedSpans":1e30,"rejectedDataPoints":1e30}}"#[..],
        ),
        ("http/json", &b"<html>OK</html>"[..]),
        ("http/protobuf", &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        let rdir = dir.path().join(format!("r{i}"));
        std::fs::create_dir(&rdir).unwrap();
        let file = rdir.join("answer");
        std::fs::write(&file, body).unwrap();
        let rx = Receiver::start_args(
            &rdir,
            0,
            None,
            0,
            &["--answer".as_ref(), "200".as_ref(), file.as_os_str()],
        );
        let out = run(push_cmd(&log, &dir.path().join("x.jsonl"), &rx.url())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{protocol} {body:?}: {stderr}");
        assert!(
            stderr.contains(&format!("NOT delivered: {spans} span(s)")),
            "{stderr}"
        );
        assert!(stderr.contains("not an OTLP export response"), "{stderr}");
        assert!(
            stderr.contains(&format!("OTLP push to {}/v1/traces: 0 span(s)", rx.url())),
            "{stderr}"
        );
    }
}

/// `tal convert ... --otlp-endpoint` with `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// set, run with at most 1 GiB of address space (so that reading
/// `/dev/zero` whole fails instead of taking the machine's memory; set by
/// the shell, as a `pre_exec` would fork this whole test process).
fn push_with_cert(log: &Path, url: &str, cert: &Path) -> Output {
    let jsonl = log.with_extension("c.jsonl");
    let mut c = without_otel_env(Command::new("sh"));
    c.env("OTEL_EXPORTER_OTLP_CERTIFICATE", cert)
        .args(["-c", r#"ulimit -v 1048576 && exec "$@""#, "sh"])
        .arg(env!("CARGO_BIN_EXE_tal"))
        .arg("convert")
        .arg(log)
        .arg("-o")
        .arg(&jsonl)
        .args(["--otlp-endpoint", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A FIFO with no writer once blocked tal for ever: a hang fails here.
    wait_output(c.spawn().unwrap(), Duration::from_secs(60))
}

/// `OTEL_EXPORTER_OTLP_CERTIFICATE` naming `/dev/zero` or a FIFO nobody
/// writes to: ignored for an `http://` receiver (which gets everything),
/// and refused at once for `https://`, naming the variable. Both were
/// read whole before anything else: all memory, or a hang for ever.
#[test]
fn a_certificate_that_is_not_a_regular_file_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, v) = session(dir.path());
    let rdir = dir.path().join("r");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start(&rdir, 0);
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let spans = lines(&v, "span", None).len();
    for cert in [Path::new("/dev/zero"), &fifo] {
        let out = push_with_cert(&log, &rx.url(), cert);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", cert.display());
        assert!(stderr.contains(&format!("{spans} span(s)")), "{stderr}");

        let t0 = Instant::now();
        let out = push_with_cert(&log, &format!("https://localhost:{}", rx.port), cert);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", cert.display());
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_CERTIFICATE")
                && stderr.contains("not a regular file"),
            "{stderr}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
}

/// A receiver that answers 503 with `Retry-After: 30` to everything: the
/// live exporter is in that wait when the command ends. `tal record` once
/// waited it out (~29 s) before its last push; the end of a run waits for
/// no receiver beyond the last push's own time limit.
#[test]
fn record_does_not_wait_out_a_receivers_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let rdir = dir.path().join("r");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start_args(
        &rdir,
        u32::MAX,
        None,
        0,
        &["--retry-after".as_ref(), "30".as_ref()],
    );
    let t0 = Instant::now();
    let child = recorder()
        .arg(dir.path().join("rec"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--otlp-endpoint", &rx.url(), "--otlp-interval", "100ms"])
        .args(["--", "sleep", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, Duration::from_secs(90));
    let took = t0.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("NOT delivered"), "{stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");
    // A hang check, not a budget: the command takes 1 s, the wait 30 s.
    assert!(took < Duration::from_secs(10), "tal record took {took:?}");
    assert_complete(&read_jsonl_in(&dir.path().join("rec")));
}

/// A receiver that is away while a client floods the socket with short
/// tasks (each with a 400-byte attribute): the live exporter holds at most
/// its --otlp-buffer of requests (and its ring from the dispatcher a few
/// MiB of events), sheds the oldest, and says how many spans it shed. It
/// once kept up to 200,000 spans and points (~350 MiB; 118 MiB peak here,
/// against 32 MiB without a live push).
#[test]
fn a_live_push_to_a_receiver_that_is_away_holds_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let flood = r#"
import os, socket
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["TAL_SOCKET"])
pad = "x" * 400
buf = []
for i in range(60000):
    buf.append('{"event_type":"TaskStarted","task_id":"t%d","attributes":{"pad":"%s%d"}}\n' % (i, pad, i))
    buf.append('{"event_type":"TaskCompleted","task_id":"t%d"}\n' % i)
    if len(buf) >= 2000:
        s.sendall("".join(buf).encode())
        buf = []
s.sendall("".join(buf).encode())
s.close()
"#;
    let out = run(recorder()
        .arg(dir.path().join("rec"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--otlp-interval",
            "200ms",
            "--otlp-buffer",
            "1MiB",
        ])
        .args(["--", "python3", "-c", flood]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The metric line, read without holding the 60 MB JSONL's lines.
    let jsonl = files_with_ext(&dir.path().join("rec"), ".telemetry.jsonl")[0].clone();
    let m = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(jsonl).unwrap()))
        .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
        .filter(|v| v["section"] == "metric")
        .last()
        .unwrap();
    assert_eq!(m["tasks_completed"], 60000, "the log has every task");
    let rss = m["agent_peak_rss_bytes"].as_u64().unwrap();
    assert!(rss < 80 << 20, "peak RSS {} MiB", rss >> 20);
    let shed: u64 = stderr
        .split("of which ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shed count: {stderr}"));
    assert!(shed >= 1000, "{stderr}");
    assert!(stderr.contains("--otlp-buffer"), "{stderr}");
    assert!(stderr.contains("tal convert --otlp-endpoint"), "{stderr}");
}

/// Endpoint URLs that once became nonsense (`…#f:80/v1/traces`,
/// `h:99999:80`) or echoed the password in them, and header values HTTP
/// does not allow (once dropped, or retried 5 times), are refused before
/// anything runs; a certificate the roots do not know is not retried.
#[test]
fn bad_endpoints_and_headers_are_refused_up_front_and_secrets_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = session(dir.path());
    let rdir = dir.path().join("r");
    std::fs::create_dir(&rdir).unwrap();
    let rx = Receiver::start(&rdir, 0);
    let p = rx.port;
    for (url, says) in [
        (format!("http://127.0.0.1:{p}?x=1#f"), "query"),
        (format!("http://127.0.0.1:{p}/#f"), "query"),
        ("http://127.0.0.1:99999".to_string(), "1 to 65535"),
        (format!("http://user:s3cret@127.0.0.1:{p}"), "credentials"),
    ] {
        let out = run(tal_cmd()
            .arg("convert")
            .arg(&log)
            .args(["-o", dir.path().join("u.jsonl").to_str().unwrap()])
            .args(["--otlp-endpoint", &url]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
        // The same from the environment, and for `tal record`.
        let out = run(tal_cmd()
            .args(["record", "--out"])
            .arg(dir.path().join("rec"))
            .args(["--otlp-endpoint", "--", "true"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
    assert!(rx.requests().is_empty());

    for headers in ["x-token=se%0D%0Acret", "x-token=caf%C3%A9cret"] {
        let t0 = Instant::now();
        let out = run(push_cmd(&log, &dir.path().join("h.jsonl"), &rx.url())
            .env("OTEL_EXPORTER_OTLP_HEADERS", headers));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{headers}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_HEADERS") && stderr.contains("x-token"),
            "{stderr}"
        );
        assert!(!stderr.contains("cret"), "the value is a secret: {stderr}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert!(rx.requests().is_empty());

    // A self-signed certificate the public roots do not know: one try.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.key_pair.serialize_pem()).unwrap();
    let tdir = dir.path().join("tls");
    std::fs::create_dir(&tdir).unwrap();
    let tls = Receiver::start_with(&tdir, 0, Some((&cert_pem, &key_pem)));
    let t0 = Instant::now();
    let out = run(&mut push_cmd(
        &log,
        &dir.path().join("t.jsonl"),
        &format!("https://localhost:{}", tls.port),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(
        !stderr.contains("retries") && !stderr.contains("gave up"),
        "{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
