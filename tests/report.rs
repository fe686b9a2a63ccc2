//! `tal report`: a recorded session's HTML is self-contained, holds every
//! task with its slot and the node series, and renders in headless
//! Chromium without a script error; RHAPSODY's checkpoint works too; bad
//! input leaves no file.

mod common;
use common::*;
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
