//! Helpers shared by the integration tests: run the real `tal` binary in a
//! temporary directory and read what it wrote.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The built binary.
pub fn tal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tal"))
}

/// Runs to completion with a safety timeout (a hang fails the test rather
/// than the CI run; it is not a timing assertion).
pub fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(child, Duration::from_secs(60))
}

/// [`run`], and asserts that it exited 0 (its stderr in the message).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for a child with a safety timeout, killing it on expiry. Its
/// piped stdout and stderr are read meanwhile, so that a child writing more
/// than a pipe holds is not stalled by the wait.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    fn drain(r: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("tal did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `path` exists.
pub fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a signal.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: (a test) kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Files in `dir` with this extension.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

/// The one JSONL file in `dir`, parsed line by line.
pub fn read_jsonl_in(dir: &Path) -> Vec<Value> {
    let files = files_with_ext(dir, ".telemetry.jsonl");
    assert_eq!(
        files.len(),
        1,
        "expected one JSONL in {}: {files:?}",
        dir.display()
    );
    read_jsonl(&files[0])
}

/// Parses a JSONL file.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// Lines of one section (and event type, for events).
pub fn lines<'a>(v: &'a [Value], section: &str, ty: Option<&str>) -> Vec<&'a Value> {
    v.iter()
        .filter(|l| l["section"] == section)
        .filter(|l| ty.is_none_or(|t| l["event_type"] == t))
        .collect()
}

/// Checks the shape of a finished checkpoint: one SessionStarted, one
/// SessionEnded, a metric line and a session span, in RHAPSODY's order.
pub fn assert_complete(v: &[Value]) {
    assert_eq!(lines(v, "event", Some("SessionStarted")).len(), 1);
    assert_eq!(lines(v, "event", Some("SessionEnded")).len(), 1);
    assert_eq!(lines(v, "metric", None).len(), 1);
    let spans = lines(v, "span", None);
    assert_eq!(spans.last().unwrap()["name"], "session");
    let sections: Vec<&str> = v.iter().map(|l| l["section"].as_str().unwrap()).collect();
    let first_metric = sections.iter().position(|s| *s == "metric").unwrap();
    assert!(sections[..first_metric].iter().all(|s| *s == "event"));
    assert!(sections[first_metric + 1..].iter().all(|s| *s == "span"));
    let end = lines(v, "event", Some("SessionEnded"))[0];
    assert_eq!(
        v[first_metric - 1],
        *end,
        "SessionEnded comes right before the metric line"
    );
    let times: Vec<f64> = lines(v, "event", None)
        .iter()
        .map(|e| e["event_time"].as_f64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "events are in time order"
    );
}

/// Starts `tal record` (node `n`) in the background, returning once its
/// log exists; stdout and stderr are discarded.
pub fn spawn_recorder(dir: &Path, session: &str, interval: &str) -> (Child, PathBuf) {
    let child = tal()
        .args([
            "record",
            "--interval",
            interval,
            "--session-id",
            session,
            "--node-id",
            "n",
        ])
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.join(format!("{session}.n.tal"));
    wait_for_file(&log);
    (child, log)
}

/// The project's Python (a venv with RHAPSODY and the OTLP protobuf
/// definitions), made once by `scripts/setup-python.sh`.
pub fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/setup-python.sh"))
        .output()
        .expect("run scripts/setup-python.sh");
    assert!(
        out.status.success(),
        "scripts/setup-python.sh failed (it needs python3 with venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Polls `cond` every 10 ms until it holds, failing the test after 60 s
/// with `what`: a readiness wait (for a file, a sample, a child), never a
/// timing assertion.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// ResourceUpdate events in the log so far (what the agent's writer has
/// flushed, which it does after every batch).
pub fn samples_in_log(log: &Path) -> usize {
    let Ok(r) = tal::log::LogReader::open(log) else {
        return 0;
    };
    r.filter(|rec| {
        matches!(
            rec,
            tal::record::Record::Event(tal::record::Event {
                kind: tal::record::EventKind::ResourceUpdate(_),
                ..
            })
        )
    })
    .count()
}

/// Whether the log has its end marker (the agent finished it).
pub fn log_finished(log: &Path) -> bool {
    let Ok(mut r) = tal::log::LogReader::open(log) else {
        return false;
    };
    r.by_ref().count();
    r.stats().end_marker
}

/// Records session `session` on node `n1` into `dir` around a shell
/// script of `tal run` tasks: `long` (0.6 s) and `short` (0.2 s) at once,
/// an `app.Phase` event (`phase=load`) while they run, then `bad` (exits
/// 1) and `after` (0.1 s) one after the other. Returns the log.
pub fn record_tasks(dir: &Path, session: &str) -> PathBuf {
    let tal_bin = env!("CARGO_BIN_EXE_tal");
    let script = format!(
        "{tal_bin} run --task-id long -- sleep 0.6 & \
         {tal_bin} run --task-id short -- sleep 0.2 & \
         sleep 0.1; {tal_bin} emit app.Phase --field phase=load; \
         wait; {tal_bin} run --task-id bad -- false; \
         {tal_bin} run --task-id after -- sleep 0.1"
    );
    let out = run(tal()
        .args([
            "record",
            "--interval",
            "0.1",
            "--session-id",
            session,
            "--node-id",
            "n1",
            "--out",
        ])
        .arg(dir)
        .args(["--", "sh", "-c", &script]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{session}.n1.tal"))
}

/// The report's embedded data.
pub fn report_data(html: &str) -> Value {
    let open = "<script id=\"tal-data\" type=\"application/json\">";
    let start = html.find(open).expect("the data element") + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).expect("the data is JSON")
}

pub fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's chromium is needed to check that reports render (scripts/test.sh installs it)")
}

/// Loads `page` in headless Chromium with no network; the DOM it built and
/// what the console said.
/// Loads `page` in headless Chromium with no network; the DOM it built and
/// what the console said.
pub fn render(page: &Path) -> (String, String) {
    let (dom, console) = chromium_at(&format!("file://{}", page.display()), "--dump-dom");
    (dom, console)
}

/// Runs headless Chromium on `url` with `mode` (`--dump-dom`, or
/// `--screenshot=PATH`): its stdout and stderr.
fn chromium_at(url: &str, mode: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1600,2400",
            mode,
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A rendered report's time charts as the page lists them
/// (`data-tal-charts`): panel, title, series, tasks, x range.
pub fn rendered_charts(dom: &str) -> Vec<Value> {
    let raw = dom
        .split("data-tal-charts=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page lists its charts");
    let json = raw
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str::<Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What a rendered report says it drew where (`data-tal-geometry`).
pub fn rendered_geometry(dom: &str) -> Value {
    let raw = dom
        .split("data-tal-geometry=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page lists its geometry");
    let json = raw
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap()
}

/// A report reads at a glance: no text drawn on a chart's canvas is cut
/// off by its edge (axis labels, lane names, marks); no two series of a
/// chart share a colour; timeline lanes are at least 14 px tall, taller
/// than their labels, and every task at least 1 px wide; heatmap rows at
/// least 8 px, each labelled.
pub fn assert_geometry(g: &Value) {
    for c in g["charts"].as_array().unwrap() {
        assert_eq!(c["cut"], serde_json::json!([]), "text cut off in {c}");
        assert!(c["texts"].as_u64().unwrap() > 0, "no labels drawn in {c}");
        let mut colours: Vec<&str> = c["colours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        let n = colours.len();
        colours.sort();
        colours.dedup();
        assert_eq!(colours.len(), n, "two series in one colour: {c}");
        // Byte axes step 1, 2 or 5 times a power of ten.
        let title = c["title"].as_str().unwrap();
        if title.contains("per second") || title.contains("memory") {
            for step in c["steps"].as_array().unwrap() {
                let s = step.as_f64().unwrap();
                let m = s / 10f64.powf(s.log10().floor());
                assert!(
                    [1.0, 2.0, 5.0].iter().any(|k| (m - k).abs() < 1e-6),
                    "a step of {s} in {c}"
                );
            }
        }
    }
    let t = &g["timeline"];
    if !t.is_null() {
        let lane = t["lane_px"].as_f64().unwrap();
        assert!(lane >= 14.0, "lanes of {lane} px");
        assert!(lane >= t["label_px"].as_f64().unwrap() + 2.0, "{t}");
        assert!(t["min_task_px"].as_f64().unwrap() >= 1.0, "{t}");
    }
    let h = &g["heatmap"];
    if !h.is_null() {
        assert!(h["row_px"].as_f64().unwrap() >= 8.0, "{h}");
        assert_eq!(h["labels"], h["rows"], "every row labelled: {h}");
        assert!(h["rows"].as_u64().unwrap() <= 64, "{h}");
    }
}

/// Renders `page` with no script error and at least `min_charts` time
/// charts and a geometry that reads at a glance ([`assert_geometry`]),
/// saves a screenshot of it 1600 px wide as a test artifact (in Cargo's
/// target/tmp/report-screenshots), and checks that zooming the first
/// chart zooms every other: its charts, at full range.
pub fn assert_renders(page: &Path, min_charts: u64) -> Vec<Value> {
    let (dom, console) = render(page);
    let ready = dom
        .split("data-tal-ready=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("the page's script did not finish: {console}"));
    assert!(ready >= min_charts, "{ready} charts");
    for bad in ["Uncaught", "TypeError", "ReferenceError", "SyntaxError"] {
        assert!(!console.contains(bad), "script error: {console}");
    }
    let charts = rendered_charts(&dom);
    assert_eq!(charts.len() as u64, ready);
    assert_geometry(&rendered_geometry(&dom));
    // Zooming one zooms all.
    let url = format!("file://{}#zoom=0.05,0.2", page.display());
    let (zoomed, console) = chromium_at(&url, "--dump-dom");
    for c in rendered_charts(&zoomed) {
        assert_eq!(c["x"], serde_json::json!([0.05, 0.2]), "{c}: {console}");
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let name = page.file_stem().unwrap().to_string_lossy().into_owned();
    let shot = shots.join(format!("{name}.png"));
    chromium_at(
        &format!("file://{}", page.display()),
        &format!("--screenshot={}", shot.display()),
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "{shot:?}");
    charts
}

/// Checks a rendered report's charts against the session's JSONL `v`: the
/// timeline has every task span, each node chart one series per node that
/// has that figure (disk and network: two figures each), each GPU chart
/// one series per device.
pub fn assert_panels_match(charts: &[Value], v: &[Value]) {
    let count = |pred: &dyn Fn(&Value) -> bool| v.iter().filter(|l| pred(l)).count();
    let tasks = count(&|l| l["section"] == "span" && l["name"] == "task");
    let nodes_with = |key: &str| {
        let mut n: Vec<&str> = v
            .iter()
            .filter(|l| l["event_type"] == "ResourceUpdate" && l["resource_scope"] == "per_node")
            .filter(|l| !l[key].is_null())
            .filter_map(|l| l["node_id"].as_str())
            .collect();
        n.sort();
        n.dedup();
        n.len()
    };
    let mut gpus: Vec<(String, u64)> = v
        .iter()
        .filter(|l| l["resource_scope"] == "per_gpu" && !l["gpu_percent"].is_null())
        .map(|l| (l["node_id"].to_string(), l["gpu_id"].as_u64().unwrap()))
        .collect();
    gpus.sort();
    gpus.dedup();
    let chart = |title: &str| {
        charts
            .iter()
            .find(|c| c["title"] == title)
            .unwrap_or_else(|| panic!("no chart '{title}' in {charts:?}"))
    };
    if tasks > 0 {
        assert_eq!(chart("Task timeline")["tasks"], tasks);
    }
    // One line per node and figure; past five nodes, two lines (the
    // nodes combined: mean and highest, or read and write summed).
    for (title, key, per_node) in [
        ("CPU %", "cpu_percent", 1),
        ("memory %", "memory_percent", 1),
        ("disk read and write per second", "disk_read_bytes", 2),
        ("network received and sent per second", "net_sent_bytes", 2),
    ] {
        let n = nodes_with(key);
        if n > 0 {
            let lines = if n > 5 { 2 } else { n * per_node };
            assert_eq!(chart(title)["series"], lines, "{title}");
        }
    }
    if !gpus.is_empty() {
        // One line per device; past the palette's 12 colours, two (the
        // devices combined: mean and highest).
        let lines = if gpus.len() > 12 { 2 } else { gpus.len() };
        for title in ["utilisation %", "memory used", "power (W)"] {
            assert_eq!(chart(title)["series"], lines, "{title}");
        }
    }
    // The sampled tasks' own series (at most 12 drawn, with tasks drawn
    // through their end-of-task figures).
    let mut sampled: Vec<&str> = v
        .iter()
        .filter(|l| l["event_type"] == "tal.TaskResourceUpdate")
        .filter_map(|l| l["task_id"].as_str())
        .collect();
    sampled.sort();
    sampled.dedup();
    if !sampled.is_empty() {
        for title in ["task CPU (% of one CPU)", "task resident memory"] {
            let n = chart(title)["series"].as_u64().unwrap() as usize;
            assert!(n >= sampled.len().min(12) && n <= 12, "{title}: {n}");
        }
    }
}

/// `tal ARGS`' stdout and stderr, with its exit code.
fn tal_out(args: &[&std::ffi::OsStr]) -> (Option<i32>, Vec<u8>, String) {
    let o = run(tal().args(args));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code(), o.stdout, err)
}

/// The summary (text and `--json`) and the report of `logs` equal those
/// of their JSONL, written in `dir`.
pub fn assert_logs_read_as_their_jsonl(dir: &Path, logs: &[PathBuf]) {
    let jsonl = dir.join("session.jsonl");
    run_ok(tal().arg("convert").arg("-o").arg(&jsonl).args(logs));
    let logs: Vec<&std::ffi::OsStr> = logs.iter().map(|p| p.as_os_str()).collect();
    fn with<'a>(args: &[&'a str], input: &[&'a std::ffi::OsStr]) -> Vec<&'a std::ffi::OsStr> {
        let mut a: Vec<&std::ffi::OsStr> = args.iter().map(|s| std::ffi::OsStr::new(*s)).collect();
        a.extend_from_slice(input);
        a
    }
    for args in [&["summary", "--json"][..], &["summary"]] {
        let (code, from_logs, err) = tal_out(&with(args, &logs));
        assert_eq!(code, Some(0), "{err}");
        let (code, from_jsonl, err) = tal_out(&with(args, &[jsonl.as_os_str()]));
        assert_eq!(code, Some(0), "{err}");
        assert!(!from_logs.is_empty());
        if from_logs != from_jsonl {
            let (a, b) = (
                String::from_utf8_lossy(&from_logs),
                String::from_utf8_lossy(&from_jsonl),
            );
            let at = a.lines().zip(b.lines()).position(|(x, y)| x != y);
            let line = |s: &str| at.and_then(|i| s.lines().nth(i)).unwrap_or("").to_string();
            panic!(
                "tal {args:?}: the logs' line {at:?} is\n{}\nthe JSONL's\n{}",
                line(&a),
                line(&b)
            );
        }
    }
    let pages = [dir.join("from-logs.html"), dir.join("from-jsonl.html")];
    run_ok(tal().arg("report").args(&logs).arg("-o").arg(&pages[0]));
    run_ok(tal().arg("report").arg(&jsonl).arg("-o").arg(&pages[1]));
    let [a, b] = pages.map(|p| std::fs::read_to_string(p).unwrap());
    if let Some(d) = first_difference(&report_data(&a), &report_data(&b), "") {
        panic!("the report's data from the logs and from the JSONL differ at {d}");
    }
    assert!(a == b, "the pages differ outside their data");
}

/// Where `a` and `b` first differ (a path of keys and indices, and the two
/// values there, shortened), if they do.
pub fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            keys.into_iter().find_map(|k| {
                let n = Value::Null;
                let (p, q) = (x.get(k).unwrap_or(&n), y.get(k).unwrap_or(&n));
                if x.contains_key(k) != y.contains_key(k) {
                    return Some(format!("{at}/{k}: present in one only"));
                }
                first_difference(p, q, &format!("{at}/{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}/{i}"))),
        _ if a == b => None,
        _ => {
            let short = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            Some(format!("{at}: {} vs {}", short(a), short(b)))
        }
    }
}
