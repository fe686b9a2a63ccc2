//! The readers of a JSONL checkpoint (`tal summary`, `tal report`, `tal
//! convert --format chrome-trace` and `--format otlp-json`) against
//! checkpoints written to hurt them, as anyone can hand one over: terminal
//! escapes in ids, client-chosen node ids by the ten thousand, one huge
//! line, Python's `NaN`/`Infinity` tokens and a byte-order mark, HTML
//! that ends the report's data early, and more cores and event types than
//! a page can hold.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const T0: f64 = 1_795_574_441.0;

/// An event line.
fn event(ty: &str, t: f64, task: Option<&str>, node: Option<&str>, extra: Value) -> Value {
    let mut v = json!({
        "event_id": format!("e{}", (t * 1e6) as u64),
        "event_type": ty,
        "event_time": t,
        "emit_time": t,
        "session_id": "hostile.s",
        "task_id": task,
        "node_id": node,
        "attributes": {},
        "name": ty,
        "section": "event",
    });
    if let Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    v
}

/// A task span line from `start` to `end` s after [`T0`].
fn span(task: &str, start: f64, end: f64, status: &str, error: Option<&str>) -> Value {
    let ns = |s: f64| ((T0 + s) * 1e9) as i64;
    json!({
        "name": "task",
        "start_ns": ns(start),
        "end_ns": ns(end),
        "attributes": {
            "session_id": "hostile.s",
            "task_id": task,
            "status": status,
            "error_type": error,
            "task_type": "ComputeTask",
        },
        "section": "span",
    })
}

fn write_lines(path: &Path, lines: &[Value]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        serde_json::to_writer(&mut f, l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
}

/// Starts its arguments but the first, waits for them, and writes their
/// peak resident memory (KiB) into the file the first names. A small
/// process between the test and `tal`: a child's peak counts the memory
/// of the process it was started from (until its exec), and this test's
/// process holds big checkpoints while other tests run.
const MEASURE: &str = r#"
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, ru = os.wait4(p.pid, 0)
open(sys.argv[1], "w").write(str(ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// Runs `cmd` (a program and its arguments) to completion, stdout and
/// stderr into files (so that a big output cannot stall it), with a safety
/// timeout: its output, and its peak resident memory in bytes.
fn run_measured(cmd: &mut Command) -> (Output, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (o, e, rss) = (
        dir.path().join("out"),
        dir.path().join("err"),
        dir.path().join("rss"),
    );
    let child = Command::new("python3")
        .arg("-c")
        .arg(MEASURE)
        .arg(&rss)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let status = wait_output(child, Duration::from_secs(180)).status;
    let out = Output {
        status,
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    };
    let kib: u64 = std::fs::read_to_string(&rss)
        .unwrap_or_else(|_| panic!("no peak memory: {}", stderr(&out)))
        .parse()
        .unwrap();
    (out, kib * 1024)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

/// Every reader over `input`, in `dir`, each checked to exit 0 and to use
/// less than `max_rss` bytes: summary's JSON, the report's data, the Chrome
/// trace and the OTLP traces and metrics, each parsed strictly (no `NaN`
/// token can be in them), and each reader's stderr.
struct Read {
    summary: Value,
    report: Value,
    chrome: Value,
    otlp_traces: Value,
    otlp_metrics: Value,
    stderr: Vec<String>,
}

fn read_all(dir: &Path, input: &Path, max_rss: u64) -> Read {
    let mut errs = Vec::new();
    let mut go = |what: &str, cmd: &mut Command| {
        let (out, rss) = run_measured(cmd);
        let err = stderr(&out);
        assert!(out.status.success(), "{what}: {err}");
        assert!(
            rss < max_rss,
            "{what}: peak RSS {:.0} MiB (at most {:.0})",
            mib(rss),
            mib(max_rss)
        );
        errs.push(err);
        out.stdout
    };
    let strict = |b: &[u8], what: &str| -> Value {
        serde_json::from_slice(b).unwrap_or_else(|e| panic!("{what} is not strict JSON: {e}"))
    };
    let s = go("summary", tal().args(["summary", "--json"]).arg(input));
    let summary = strict(&s, "summary --json");
    let page = dir.join("r.html");
    go(
        "report",
        tal().arg("report").arg(input).arg("-o").arg(&page),
    );
    let report = report_data(&std::fs::read_to_string(&page).unwrap());
    let trace = dir.join("t.trace.json");
    go(
        "chrome trace",
        tal()
            .args(["convert", "--format", "chrome-trace"])
            .arg(input)
            .arg("-o")
            .arg(&trace),
    );
    let chrome = strict(&std::fs::read(&trace).unwrap(), "the Chrome trace");
    let prefix = dir.join("o");
    go(
        "otlp json",
        tal()
            .args(["convert", "--format", "otlp-json"])
            .arg(input)
            .arg("-o")
            .arg(&prefix),
    );
    let otlp_traces = strict(&std::fs::read(dir.join("o.traces.json")).unwrap(), "traces");
    let otlp_metrics = strict(
        &std::fs::read(dir.join("o.metrics.json")).unwrap(),
        "metrics",
    );
    Read {
        summary,
        report,
        chrome,
        otlp_traces,
        otlp_metrics,
        stderr: errs,
    }
}

// ---- item 5 and 23: what `tal summary` prints ----

/// Bytes a terminal acts on: C0 controls but the newline, DEL, and C1
/// controls (U+0080..U+009F).
fn controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|&c| (c < ' ' && c != '\n') || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c))
        .collect()
}

#[test]
fn summary_prints_no_terminal_control_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("esc.telemetry.jsonl");
    let clear = "\u{1b}[2J\u{1b}[H";
    let title = "\u{1b}]0;owned\u{7}";
    let fake = "\rtasks: 0 failed\u{1b}[K";
    let c1 = "\u{9b}31m\u{85}\u{7f}";
    let task = format!("t{clear}{title}");
    let node = format!("n{c1}");
    let error = format!("E{fake}\u{0}\u{8}");
    let ty = format!("app.{title}{c1}");
    write_lines(
        &input,
        &[
            event("SessionStarted", T0, None, None, json!({})),
            event("TaskStarted", T0 + 0.1, Some(&task), Some(&node), json!({})),
            event(&ty, T0 + 0.2, None, Some(&node), json!({})),
            event(
                "ResourceUpdate",
                T0 + 0.3,
                None,
                Some(&node),
                json!({"resource_scope": "per_node", "cpu_percent": 5.0, "memory_percent": 1.0}),
            ),
            event(
                "TaskFailed",
                T0 + 0.5,
                Some(&task),
                Some(&node),
                json!({"error_type": error, "duration_seconds": 0.4}),
            ),
            span(&task, 0.1, 0.5, "failed", Some(&error)),
        ],
    );
    let out = run(tal().arg("summary").arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(controls(&text), Vec::<char>::new(), "{text}");
    // Said, visibly.
    for want in ["\\x1b[2J", "\\x07", "\\x0d", "\\u{9b}31m", "\\x7f", "\\x00"] {
        assert!(text.contains(want), "{want} in {text}");
    }
}

#[test]
fn summary_prints_huge_and_odd_durations_sanely() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dur.telemetry.jsonl");
    let mut lines = vec![event("SessionStarted", T0, None, None, json!({}))];
    for (i, d) in [1e26, 1e308, 1e308, -5.0, -5.0, -5.0].iter().enumerate() {
        let id = format!("t{i}");
        lines.push(event(
            "TaskCompleted",
            T0 + 1.0,
            Some(&id),
            None,
            json!({ "duration_seconds": d }),
        ));
        lines.push(span(&id, 0.0, 1.0, "completed", None));
    }
    write_lines(&input, &lines);
    let out = run(tal().arg("summary").arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("duration: p50"))
        .expect("the duration line");
    for bad in ["18446744073709551615", "NaN", "inf", "e+"] {
        assert!(!line.contains(bad), "{bad} in {line}");
    }
    assert!(line.contains("max >100 y"), "{line}");
    assert!(line.contains("mean >100 y"), "{line}");
    assert!(line.contains("p50 -5.00s"), "{line}");
}

// ---- item 9: node ids by the ten thousand ----

#[test]
fn client_chosen_node_ids_do_not_cost_memory_per_id() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("nodes.telemetry.jsonl");
    let mut lines = vec![event("SessionStarted", T0, None, None, json!({}))];
    // 20,000 tasks, each naming its own node.
    for i in 0..20_000 {
        let (task, node) = (format!("t{i}"), format!("node-{i}"));
        let t = T0 + f64::from(i) * 1e-3;
        lines.push(event(
            "TaskSubmitted",
            t,
            Some(&task),
            Some(&node),
            json!({}),
        ));
    }
    // 2,000 nodes with one sample each, and one node of 1,000 GPUs.
    for i in 0..2_000 {
        lines.push(event(
            "ResourceUpdate",
            T0 + 1.0,
            None,
            Some(&format!("sampled-{i}")),
            json!({"resource_scope": "per_node", "cpu_percent": 5.0, "memory_percent": 1.0}),
        ));
    }
    for g in 0..1_000 {
        lines.push(event(
            "ResourceUpdate",
            T0 + 1.0,
            None,
            Some("gpus"),
            json!({"resource_scope": "per_gpu", "gpu_id": g, "gpu_percent": 50.0,
                   "gpu_memory_used_bytes": 1e9, "gpu_power_watts": 100.0}),
        ));
    }
    for i in 0..20_000 {
        let t = f64::from(i) * 1e-3;
        lines.push(span(&format!("t{i}"), t, t + 0.5, "completed", None));
    }
    write_lines(&input, &lines);
    let limit = 200 << 20;
    let (out, rss) = run_measured(tal().args(["summary", "--json"]).arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(rss < limit, "summary: peak RSS {:.0} MiB", mib(rss));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["tasks"]["total"], 20_000);
    let row = &s["tasks"]["slowest"][0];
    let task = row["task_id"].as_str().unwrap();
    assert_eq!(
        row["node_id"],
        format!("node-{}", &task[1..]),
        "tasks keep their node"
    );
    let nodes = s["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2_001, "the sampled nodes and the GPUs' node");
    let gpus = nodes.iter().find(|n| n["node_id"] == "gpus").unwrap();
    assert_eq!(gpus["gpus"].as_array().unwrap().len(), 1_000);
    assert_eq!(gpus["gpus"][999]["power_watts"]["p50"], 100.0);

    let page = dir.path().join("r.html");
    let (out, rss) = run_measured(tal().arg("report").arg(&input).arg("-o").arg(&page));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(rss < limit, "report: peak RSS {:.0} MiB", mib(rss));
    let d = report_data(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(d["tasks"]["id"].as_array().unwrap().len(), 20_000);
}

// ---- item 11: one huge line ----

#[test]
fn a_huge_line_is_skipped_named_and_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("huge.telemetry.jsonl");
    // 20 MB of tiny JSON values: a parsed value costs ~35 times its text.
    let mut huge = event(
        "TaskSubmitted",
        T0 + 0.2,
        Some("huge"),
        Some("n"),
        json!({}),
    );
    huge["attributes"] = json!({ "x": "PLACEHOLDER" });
    let huge = serde_json::to_string(&huge).unwrap().replace(
        "\"PLACEHOLDER\"",
        &format!("[{}[]]", "[],".repeat(7_000_000)),
    );
    let lines = [
        event("SessionStarted", T0, None, None, json!({})),
        event(
            "TaskStarted",
            T0 + 0.1,
            Some("before"),
            Some("n"),
            json!({}),
        ),
    ];
    let after = [
        event(
            "TaskCompleted",
            T0 + 0.6,
            Some("after"),
            Some("n"),
            json!({"duration_seconds": 0.4}),
        ),
        span("before", 0.1, 0.5, "completed", None),
        span("after", 0.2, 0.6, "completed", None),
    ];
    write_lines(&input, &lines);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    writeln!(f, "{huge}").unwrap();
    drop(f);
    let tail = dir.path().join("tail.jsonl");
    write_lines(&tail, &after);
    let mut all = std::fs::read(&input).unwrap();
    all.extend(std::fs::read(&tail).unwrap());
    std::fs::write(&input, all).unwrap();
    assert!(std::fs::metadata(&input).unwrap().len() > 20_000_000);

    let r = read_all(dir.path(), &input, 120 << 20);
    for err in &r.stderr {
        assert!(err.contains("line 3"), "the line is named: {err}");
        assert!(err.contains("skipped"), "{err}");
    }
    // Everything around it was read.
    assert_eq!(r.summary["tasks"]["total"], 2);
    assert_eq!(r.report["tasks"]["id"].as_array().unwrap().len(), 2);
    let slices = r.chrome["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .count();
    assert_eq!(slices, 2);
    let spans = &r.otlp_traces["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert!(spans.as_array().unwrap().len() >= 2, "{spans}");
}

// ---- item 22: Python's NaN and Infinity, and a byte-order mark ----

/// A checkpoint written by Python's `json.dumps`, with non-finite floats
/// in 6 values (and the same words inside strings, which stay).
const PYTHON_WRITER: &str = r#"
import json, sys
t0 = 1795574441.0
nan, inf = float("nan"), float("inf")
def ev(ty, t, task=None, node="n", **kw):
    d = {"event_id": "e%d" % int(t * 1e6), "event_type": ty, "event_time": t0 + t,
         "emit_time": t0 + t, "session_id": "py.s", "task_id": task, "node_id": node,
         "attributes": {"note": "NaN Infinity -Infinity"}, "name": ty, "section": "event"}
    d.update(kw)
    return d
lines = [
    ev("SessionStarted", 0),
    ev("TaskStarted", 0.1, "NaN Infinity"),
    ev("ResourceUpdate", 0.2, resource_scope="per_node", cpu_percent=nan, memory_percent=inf,
       disk_read_bytes=-inf, net_sent_bytes=1.0),
    ev("ResourceUpdate", 0.3, resource_scope="per_node", cpu_percent=10.0, memory_percent=2.0),
    ev("TaskCompleted", 0.5, "NaN Infinity", duration_seconds=nan),
    {"checkpoint_time": t0 + 1, "tasks_completed": 1, "node_cpu_utilization": nan,
     "section": "metric"},
    {"name": "task", "start_ns": int((t0 + 0.1) * 1e9), "end_ns": int((t0 + 0.5) * 1e9),
     "duration_ms": inf, "attributes": {"task_id": "NaN Infinity", "status": "completed",
     "cpu_percent_peak": -inf}, "section": "span"},
]
with open(sys.argv[1], "w") as f:
    for l in lines:
        f.write(json.dumps(l) + "\n")
"#;

#[test]
fn python_nan_and_infinity_read_as_null_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("py.telemetry.jsonl");
    let out = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_WRITER)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&input).unwrap();
    assert!(
        text.contains(": NaN,") && text.contains("-Infinity"),
        "{text}"
    );

    let r = read_all(dir.path(), &input, 200 << 20);
    for err in &r.stderr {
        assert!(
            err.contains("7 NaN/Infinity number(s)") && err.contains("null"),
            "counted and said: {err}"
        );
    }
    // The strings with those words are kept as they were.
    assert_eq!(r.summary["tasks"]["slowest"][0]["task_id"], "NaN Infinity");
    assert_eq!(r.summary["tasks"]["total"], 1);
    assert_eq!(r.summary["nodes"][0]["samples"], 2);
    assert_eq!(r.summary["nodes"][0]["cpu_percent"]["count"], 1);
    assert_eq!(r.report["tasks"]["id"][0], "NaN Infinity");
    assert!(r.chrome["traceEvents"].as_array().unwrap().len() > 3);
    assert!(r.otlp_metrics.is_object());
    let spans = &r.otlp_traces["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert!(!spans.as_array().unwrap().is_empty(), "{spans}");
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
    let input = dir.path().join("bom.telemetry.jsonl");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend(std::fs::read(&reference).unwrap());
    std::fs::write(&input, bytes).unwrap();
    let r = read_all(dir.path(), &input, 200 << 20);
    assert_eq!(r.summary["tasks"]["total"], 20);
    assert_eq!(
        r.summary["events"]["SessionStarted"], 1,
        "the first line is read"
    );
    assert_eq!(r.report["tasks"]["id"].as_array().unwrap().len(), 20);
}

// ---- item 14: HTML in any string ----

const HTML: &str = "<!--<script>";

/// Whether the page's script ran to the end in Chromium (the data element
/// did not swallow it), and said nothing bad.
fn script_finished(page: &Path) -> bool {
    let (dom, console) = render(page);
    for bad in ["Uncaught", "TypeError", "ReferenceError", "SyntaxError"] {
        assert!(!console.contains(bad), "script error: {console}");
    }
    dom.contains("data-tal-ready=\"")
}

fn html_checkpoint(path: &Path, at: &str) {
    let pick = |what: &str, plain: &str| {
        if what == at {
            format!("{plain}{HTML}")
        } else {
            plain.to_string()
        }
    };
    let (task, node, ty, err) = (
        pick("task", "t"),
        pick("node", "n"),
        pick("type", "app.X"),
        pick("error", "E"),
    );
    let mut lines = vec![
        event("SessionStarted", T0, None, None, json!({})),
        event("TaskStarted", T0 + 0.1, Some(&task), Some(&node), json!({})),
        event(&ty, T0 + 0.2, None, Some(&node), json!({})),
        event(
            "ResourceUpdate",
            T0 + 0.3,
            None,
            Some(&node),
            json!({"resource_scope": "per_node", "cpu_percent": 5.0, "memory_percent": 1.0}),
        ),
        event(
            "TaskFailed",
            T0 + 0.5,
            Some(&task),
            Some(&node),
            json!({"error_type": err}),
        ),
    ];
    for l in &mut lines {
        l["session_id"] = json!(pick("session", "s"));
    }
    lines
        .push(json!({"section": "metric", "agent_cpu_seconds": 0.1, pick("metric", "agent_x"): 1}));
    let mut task_span = span(&task, 0.1, 0.5, "failed", Some(&err));
    task_span["attributes"]["task_type"] = json!(pick("task type", "ComputeTask"));
    lines.push(task_span);
    write_lines(path, &lines);
}

#[test]
fn html_in_any_string_does_not_blank_the_report() {
    let dir = tempfile::tempdir().unwrap();
    for at in [
        "task",
        "session",
        "node",
        "type",
        "error",
        "metric",
        "task type",
    ] {
        let input = dir.path().join(format!("{at}.telemetry.jsonl"));
        html_checkpoint(&input, at);
        let page = dir.path().join(format!("{at}.report.html"));
        let out = run(tal().arg("report").arg(&input).arg("-o").arg(&page));
        assert!(out.status.success(), "{}", stderr(&out));
        let html = std::fs::read_to_string(&page).unwrap();
        let open = "<script id=\"tal-data\" type=\"application/json\">";
        let data = &html[html.find(open).unwrap() + open.len()..];
        let data = &data[..data.find("</script>").unwrap()];
        assert!(!data.contains(['<', '>']), "{at}: raw < or > in the data");
        assert!(
            data.contains("\\u003c!--\\u003cscript\\u003e"),
            "{at}: {data}"
        );
        assert!(
            script_finished(&page),
            "{at}: the page's script did not run"
        );
    }
}

#[test]
fn html_in_a_task_id_does_not_blank_a_recorded_report() {
    let dir = tempfile::tempdir().unwrap();
    let tal_bin = env!("CARGO_BIN_EXE_tal");
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            "html.s",
            "--node-id",
            "n",
            "--report",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", tal_bin, "run", "--task-id", HTML, "--", "true"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let page = files_with_ext(dir.path(), ".report.html");
    assert_eq!(page.len(), 1);
    let d = report_data(&std::fs::read_to_string(&page[0]).unwrap());
    assert_eq!(d["tasks"]["id"][0], HTML);
    assert!(script_finished(&page[0]), "the page's script did not run");
}

// ---- item 20: more than a page can hold ----

#[test]
fn the_heatmaps_keep_to_their_cell_budget() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cores.telemetry.jsonl");
    let per_core = format!("[{}50.0]", "50.0, ".repeat(99_999));
    let mut text = String::new();
    for node in 0..10 {
        for k in 0..3 {
            let mut e = event(
                "ResourceUpdate",
                T0 + f64::from(k),
                None,
                Some(&format!("n{node}")),
                json!({"resource_scope": "per_node", "cpu_percent": 50.0, "memory_percent": 1.0,
                       "cpu_percent_per_core": "PER_CORE"}),
            );
            e["event_id"] = json!(format!("e{node}.{k}"));
            text.push_str(
                &serde_json::to_string(&e)
                    .unwrap()
                    .replace("\"PER_CORE\"", &per_core),
            );
            text.push('\n');
        }
    }
    std::fs::write(&input, text).unwrap();
    let page = dir.path().join("r.html");
    let out = run(tal().arg("report").arg(&input).arg("-o").arg(&page));
    assert!(out.status.success(), "{}", stderr(&out));
    let size = std::fs::metadata(&page).unwrap().len();
    assert!(size < 25 << 20, "{:.0} MiB of HTML", mib(size));
    let d = report_data(&std::fs::read_to_string(&page).unwrap());
    let cores = d["cores"].as_array().unwrap();
    let cells: usize = cores.iter().map(|c| c["v"].as_array().unwrap().len()).sum();
    assert!(cells <= 2_000_000, "{cells} heatmap cells");
    assert_eq!(cores.len(), 10, "every node has its heatmap");
    for c in cores {
        let (rows, group) = (c["n"].as_u64().unwrap(), c["group"].as_u64().unwrap());
        assert!(group > 1, "cores are averaged in groups: {}", c["node"]);
        assert!(rows * group >= 100_000, "every core is in a row");
        assert!(c["columns"].as_u64().unwrap() >= 20);
    }
    let (dom, console) = render(&page);
    assert!(dom.contains("data-tal-ready=\""), "{console}");
    let said = format!("a row is the mean of {} cores", cores[0]["group"]);
    assert!(dom.contains(&said), "the page says what was cut: {said}");
}

#[test]
fn event_types_by_the_hundred_thousand_are_cut_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("types.telemetry.jsonl");
    let mut lines = vec![event("SessionStarted", T0, None, None, json!({}))];
    for i in 0..5 {
        lines.push(event(
            "app.common",
            T0 + f64::from(i),
            None,
            None,
            json!({}),
        ));
    }
    for i in 0..100_000 {
        let t = T0 + f64::from(i) * 1e-4;
        lines.push(event(&format!("type-{i}"), t, None, None, json!({})));
    }
    write_lines(&input, &lines);
    let page = dir.path().join("r.html");
    let out = run(tal().arg("report").arg(&input).arg("-o").arg(&page));
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    let listed = html.matches("\"type-").count();
    assert!(listed <= 1_000, "{listed} event types in the page");
    let d = report_data(&html);
    assert_eq!(
        d["event_types"][0],
        json!(["app.common", 5]),
        "the most common first"
    );
    let shown: u64 = d["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_u64().unwrap())
        .sum();
    let more = &d["event_types_more"];
    assert_eq!(shown + more["events"].as_u64().unwrap(), 100_006, "{more}");
    let rows = d["event_types"].as_array().unwrap().len() as u64;
    assert_eq!(rows + more["types"].as_u64().unwrap(), 100_002);
    let (dom, console) = render(&page);
    assert!(dom.contains("data-tal-ready=\""), "{console}");
    let note = format!("{} more event types", more["types"]);
    assert!(dom.contains(&note), "the page says what was cut: {note}");

    // The summary lists the most common types, and says how many more.
    let out = run(tal().arg("summary").arg(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.len() < 20_000, "{} bytes of summary", text.len());
    assert!(text.contains("app.common 5"), "{text}");
    assert!(text.contains("more types"), "{text}");
}

// ---- item 23: a report's reading error says reading ----

#[test]
fn a_bad_checkpoint_is_said_to_be_unreadable_not_unwritable() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.telemetry.jsonl");
    std::fs::write(&input, "{\"section\": \"event\"}\nnot json\n").unwrap();
    for args in [vec!["report"], vec!["convert", "--format", "chrome-trace"]] {
        let out = run(tal().args(&args).arg(&input));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("cannot read") && err.contains("line 2"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("cannot write"), "{args:?}: {err}");
    }
}
