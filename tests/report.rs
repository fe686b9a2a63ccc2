//! `tal report`: a recorded session's HTML is self-contained, holds every
//! task with its slot and the node series, and renders in headless
//! Chromium without a script error; RHAPSODY's checkpoint works too; bad
//! input leaves no file.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Nothing in the page is fetched: no element loads a URL, and the page's
/// own script makes no request.
fn assert_self_contained(html: &str) {
    for attr in [" src=", " href=", "@import", "url(http"] {
        assert!(!html.contains(attr), "the report loads something: {attr}");
    }
    for call in ["fetch(", "XMLHttpRequest", "import("] {
        assert!(
            !include_str!("../src/report/report.js").contains(call),
            "{call}"
        );
    }
}

#[test]
fn a_recorded_session_reports_every_task_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(dir.path(), "report.s");
    let page = dir.path().join("r.html");
    let out = run(tal().arg("report").arg(&log).arg("-o").arg(&page));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("4 tasks"), "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html);
    let d = report_data(&html);
    assert_eq!(d["session_id"], "report.s");
    let t = &d["tasks"];
    let ids: Vec<&str> = t["id"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let at = |id: &str| ids.iter().position(|x| *x == id).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(t["state"][at("bad")], 1);
    assert_eq!(t["error"][at("bad")], "exit:1");
    assert_ne!(t["slot"][at("long")], t["slot"][at("short")]);
    let n1 = d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "n1")
        .unwrap();
    assert_eq!(t["node"][at("long")], n1);
    assert!(
        t["rss"][at("long")].as_f64().unwrap() > 0.0,
        "tal run's figures"
    );
    let series = &d["series"][0];
    assert_eq!(series["node"], "n1");
    assert!(series["k"].as_array().unwrap().len() >= 5);
    assert_eq!(d["summary"]["tasks"]["total"], 4);
    // Timeline, two task charts, four node charts, the heatmap.
    let charts = assert_renders(&page, 8);
    assert_panels_match(&charts, &read_jsonl_in(dir.path()));
}

#[test]
fn rhapsodys_checkpoint_reports_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rhapsody-0.6.0-tasks.telemetry.jsonl");
    let input = dir.path().join("rhapsody.telemetry.jsonl");
    std::fs::copy(&reference, &input).unwrap();
    let out = run(tal().arg("report").arg(&input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = dir.path().join("rhapsody.report.html");
    let html = std::fs::read_to_string(&page).expect("the default name");
    let d = report_data(&html);
    assert_eq!(d["tasks"]["id"].as_array().unwrap().len(), 20);
    assert!(d["summary"]["agent"].is_null());
    let charts = assert_renders(&page, 4);
    assert_panels_match(&charts, &read_jsonl(&reference));
}

#[test]
fn a_script_in_a_task_id_stays_data() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("evil.jsonl");
    let id = "</script><script>document.title='pwned'</script>";
    let span = serde_json::json!({
        "name": "task", "start_ns": 1_000_000_000i64, "end_ns": 2_000_000_000i64,
        "attributes": {"task_id": id, "status": "failed", "error_type": "<b>x</b>"},
        "section": "span"
    });
    std::fs::write(&input, format!("{span}\n")).unwrap();
    let page = dir.path().join("evil.html");
    let out = run(tal().arg("report").arg(&input).arg("-o").arg(&page));
    assert!(out.status.success());
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(report_data(&html)["tasks"]["id"][0], id);
    let (dom, _) = render(&page);
    assert!(!dom.contains("<title>pwned"), "the task id ran as a script");
}

#[test]
fn bad_input_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"section\": \"event\"}\nnope\n").unwrap();
    let out = run(tal().arg("report").arg(&input));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the input"
    );
}

#[test]
fn record_with_report_writes_it_beside_the_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            "report.rec",
            "--node-id",
            "n",
            "--report",
            "--out",
        ])
        .arg(dir.path())
        .args(["--", "sleep", "0.3"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let jsonl = files_with_ext(dir.path(), "jsonl");
    let page = files_with_ext(dir.path(), "html");
    assert_eq!((jsonl.len(), page.len()), (1, 1), "{err}");
    let stem = |p: &PathBuf, suffix: &str| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .strip_suffix(suffix)
            .unwrap()
            .to_string()
    };
    assert_eq!(
        stem(&jsonl[0], ".telemetry.jsonl"),
        stem(&page[0], ".report.html")
    );
    let d = report_data(&std::fs::read_to_string(&page[0]).unwrap());
    assert_eq!(d["session_id"], "report.rec");
    assert!(err.contains("report"), "{err}");
    // --report needs the JSONL.
    let out = run(tal().args(["record", "--no-convert", "--report", "--", "true"]));
    assert!(!out.status.success());
}

/// The first row of the page's "Top tasks" table `key` (`rss`, `io`,
/// `cpu`): the task's id and the figure's value.
fn top_row(dom: &str, key: &str) -> (String, f64) {
    let table = dom
        .split(&format!("data-top=\"{key}\""))
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .unwrap_or_else(|| panic!("no top table {key}"));
    let id = table
        .split("\">")
        .find_map(|s| s.split_once("</a>").map(|(id, _)| id))
        .unwrap()
        .rsplit('>')
        .next()
        .unwrap();
    let value = table
        .split("data-v=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    (id.to_string(), value.parse().unwrap())
}

/// The row a header link (`class="CLASS">ID</a>`) points to, if the link
/// is there and the row too.
fn linked_row(dom: &str, class: &str, id: &str) -> Option<String> {
    let end = format!("class=\"{class}\">{id}</a>");
    let at = dom.find(&end)?;
    let href = dom[..at].rsplit("href=\"#").next()?.split('"').next()?;
    dom.contains(&format!("<tr id=\"{href}\""))
        .then(|| href.to_string())
}

#[test]
fn the_small_workflows_report_reads_at_a_glance() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small-workflow");
    let logs = files_with_ext(&fixture, ".tal");
    let page = dir.path().join("small-workflow.html");
    run_ok(tal().arg("report").args(&logs).arg("-o").arg(&page));
    let jsonl = dir.path().join("w.jsonl");
    run_ok(tal().arg("convert").args(&logs).arg("-o").arg(&jsonl));
    let v = read_jsonl(&jsonl);
    let charts = assert_renders(&page, 10);
    assert_panels_match(&charts, &v);
    let (dom, _) = render(&page);

    // The tasks that used the most memory and I/O come first, with their
    // terminal events' figures.
    let ended: Vec<&Value> = v
        .iter()
        .filter(|l| l["event_type"] == "TaskCompleted" || l["event_type"] == "TaskFailed")
        .collect();
    let fig = |l: &Value, k: &str| l["attributes"][k].as_f64().unwrap_or(0.0);
    let io = |l: &Value| fig(l, "read_bytes") + fig(l, "write_bytes");
    let most =
        |f: &dyn Fn(&Value) -> f64| *ended.iter().max_by(|a, b| f(a).total_cmp(&f(b))).unwrap();
    let by_rss = most(&|l| fig(l, "max_rss_bytes"));
    let (id, value) = top_row(&dom, "rss");
    assert_eq!(
        (id.as_str(), value),
        (
            by_rss["task_id"].as_str().unwrap(),
            fig(by_rss, "max_rss_bytes")
        )
    );
    let by_io = most(&io);
    let (id, value) = top_row(&dom, "io");
    assert_eq!(
        (id.as_str(), value),
        (by_io["task_id"].as_str().unwrap(), io(by_io))
    );

    // The header names every failed task and every reused id, each
    // linked to its row in the table.
    let header = dom.split("<main").next().unwrap();
    for l in &ended {
        if l["event_type"] == "TaskFailed" {
            let id = l["task_id"].as_str().unwrap();
            let link = format!("class=\"failed-link\">{id}</a>");
            assert!(header.contains(&link), "{id} not in the header");
            assert!(
                linked_row(&dom, "failed-link", id).is_some(),
                "{id}: no row"
            );
        }
    }
    let mut started: Vec<&str> = v
        .iter()
        .filter(|l| l["event_type"] == "TaskStarted")
        .filter_map(|l| l["task_id"].as_str())
        .collect();
    started.sort();
    let reused: Vec<&str> = started
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(!reused.is_empty(), "the fixture reuses an id");
    for id in reused {
        let link = format!("class=\"reused-link\">{id}</a>");
        assert!(header.contains(&link), "{id} not named");
        assert!(
            linked_row(&dom, "reused-link", id).is_some(),
            "{id}: no row"
        );
    }

    let g = rendered_geometry(&dom);
    // Custom events are marked on every time chart.
    let custom = v
        .iter()
        .filter(|l| {
            l["event_type"]
                .as_str()
                .is_some_and(|t| t.starts_with("app."))
        })
        .count();
    assert!(custom > 0);
    for c in g["charts"].as_array().unwrap() {
        if c["panel"] != "Task durations" {
            assert_eq!(c["marks"], custom, "{c}");
        }
    }
    // A session of seconds: throughput per second.
    assert_eq!(g["throughput_bin_s"], 1);
    // The failed 0.1 ms task is drawn, at least 1 px wide (checked in
    // assert_renders) and named on no bar it does not fit.
    assert!(g["timeline"]["names_on_bars"].as_u64().unwrap() > 0);

    // Tasks that ended before their first resource sample are in the
    // task-resource panel through their end-of-task figures.
    let d = report_data(&std::fs::read_to_string(&page).unwrap());
    let sampled: Vec<&str> = v
        .iter()
        .filter(|l| l["event_type"] == "tal.TaskResourceUpdate")
        .filter_map(|l| l["task_id"].as_str())
        .collect();
    let end_only: Vec<&Value> = d["task_series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["end_only"] == true)
        .collect();
    assert!(!end_only.is_empty());
    for s in end_only {
        let id = s["task"].as_str().unwrap();
        assert!(!sampled.contains(&id), "{id} has samples");
        let rss = s["v"][1][0].as_f64().unwrap();
        assert!(
            ended
                .iter()
                .any(|l| l["task_id"] == id && fig(l, "max_rss_bytes") == rss),
            "{id}: {rss}"
        );
    }
}

/// One JSONL event line.
fn line(ty: &str, t: f64, node: Option<&str>, task: Option<&str>, extra: Value) -> Value {
    let mut v = serde_json::json!({
        "event_type": ty, "event_time": t, "node_id": node, "task_id": task,
        "attributes": {}, "section": "event",
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

const T0: f64 = 1_790_000_000.0;

/// A node sample: CPU %, and disk bytes read since the sample before.
fn sample(t: f64, node: &str, cpu: Option<f64>, read: Option<f64>) -> Value {
    line(
        "ResourceUpdate",
        t,
        Some(node),
        None,
        serde_json::json!({
            "resource_scope": "per_node", "cpu_percent": cpu, "memory_percent": 10.0,
            "disk_read_bytes": read, "disk_write_bytes": read.map(|r| r / 2.0),
            "net_sent_bytes": 0.0, "net_recv_bytes": 0.0, "cpu_percent_per_core": [cpu, cpu],
        }),
    )
}

#[test]
fn byte_counts_are_drawn_as_rates_and_an_unmeasured_cpu_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rates.jsonl");
    // Samples 0.5 s apart, then one 0.25 s later whose CPU could not be
    // measured (null), then one more.
    let lines = [
        sample(T0, "n", Some(10.0), None),
        sample(T0 + 0.5, "n", Some(20.0), Some(1000.0)),
        sample(T0 + 1.0, "n", Some(30.0), Some(1000.0)),
        sample(T0 + 1.25, "n", None, Some(1000.0)),
        sample(T0 + 2.0, "n", Some(40.0), Some(3000.0)),
    ];
    write_lines(&input, &lines);
    let page = dir.path().join("rates.html");
    run_ok(tal().arg("report").arg(&input).arg("-o").arg(&page));
    let d = report_data(&std::fs::read_to_string(&page).unwrap());
    let s = &d["series"][0];
    let field = |name: &str| {
        let f = s["fields"]
            .as_array()
            .unwrap()
            .iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("no {name} in {s}"));
        s["v"][f].as_array().unwrap().clone()
    };
    // Bytes over each sample's own window: 1000 B over 0.5 s, 0.25 s, 0.75 s.
    let read: Vec<Option<f64>> = field("disk_read_per_s").iter().map(Value::as_f64).collect();
    assert_eq!(
        read,
        [None, Some(2000.0), Some(2000.0), Some(4000.0), Some(4000.0)]
    );
    let cpu = field("cpu_percent");
    assert!(cpu[3].is_null(), "{cpu:?}");
    let charts = assert_renders(&page, 4);
    let (dom, _) = render(&page);
    let g = rendered_geometry(&dom);
    let chart = |title: &str| {
        g["charts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["title"] == title)
            .unwrap_or_else(|| panic!("no {title}: {charts:?}"))
            .clone()
    };
    // The null stays null in the chart (a gap), not a zero.
    assert_eq!(chart("CPU %")["gaps"], 1);
    assert_eq!(chart("memory %")["gaps"], 0);
    // Read and write in two colours.
    let c = chart("disk read and write per second");
    assert_eq!(c["colours"].as_array().unwrap().len(), 2, "{c}");
}

#[test]
fn a_256_node_session_reads_with_its_lanes_scrolling() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("256-nodes.jsonl");
    let mut lines = Vec::new();
    let ns = |t: f64| (t * 1e9) as i64;
    for n in 0..256 {
        let node = format!("node{n:04}");
        for i in 0..20 {
            let t = T0 + f64::from(i) + f64::from(n) * 1e-3;
            let read = (i > 0).then_some(f64::from(n * 1000 + i));
            lines.push(sample(t, &node, Some(f64::from((n + i) % 100)), read));
        }
        // Two tasks a node: one of 12 s, one failing within 0.2 ms.
        for (k, (start, len, status)) in [(2.0, 12.0, "completed"), (15.0, 2e-4, "failed")]
            .into_iter()
            .enumerate()
        {
            let id = format!("{node}.t{k}");
            let s = T0 + start;
            lines.push(line(
                "TaskStarted",
                s,
                Some(&node),
                Some(&id),
                serde_json::json!({}),
            ));
            lines.push(serde_json::json!({
                "section": "span", "name": "task", "start_ns": ns(s), "end_ns": ns(s + len),
                "attributes": {"task_id": id, "status": status, "max_rss_bytes": 1e6 * f64::from(n)},
            }));
        }
    }
    lines.push(line(
        "app.PhaseStarted",
        T0 + 10.0,
        Some("node0000"),
        None,
        serde_json::json!({"phase": "two"}),
    ));
    write_lines(&input, &lines);
    let page = dir.path().join("256-nodes.html");
    run_ok(tal().arg("report").arg(&input).arg("-o").arg(&page));
    // Timeline, two task charts, four node charts, the heatmap.
    let charts = assert_renders(&page, 8);
    assert_panels_match(&charts, &read_jsonl(&input));
    let (dom, _) = render(&page);
    let g = rendered_geometry(&dom);
    let t = &g["timeline"];
    assert_eq!(t["lanes"], 256);
    assert_eq!(t["scrolls"], true, "{t}");
    // The nodes combined: two series a chart (checked in
    // assert_panels_match), each its own colour (assert_geometry).
    assert!(dom.contains("256 nodes, more than a chart tells apart"));
}
