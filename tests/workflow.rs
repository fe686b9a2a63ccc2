//! The workflow a newcomer types, run as written: `tal record` around a
//! script of bare `tal` commands, the command lines people get wrong
//! (`tal run sleep 1`), the output directory given to `tal summary`,
//! `tal report` and `tal convert`, and what the commands say about
//! themselves.

mod common;
use common::*;
use std::path::Path;

/// Records `script` (run by `sh -c`) into `dir` as session `session`,
/// node `n`; returns the output.
fn record_script(dir: &Path, session: &str, script: &str) -> std::process::Output {
    run_ok(
        tal()
            .args(["record", "--session-id", session, "--node-id", "n", "--out"])
            .arg(dir)
            .args(["--", "sh", "-c", script]),
    )
}

#[test]
fn a_command_without_dashdash_is_told_the_line_to_type() {
    for (args, want) in [
        (
            &["run", "sleep", "1"][..],
            "tip: put the command after `--`: tal run -- sleep 1",
        ),
        (
            &["run", "--task-id", "a", "echo", "hi"][..],
            "tal run --task-id a -- echo hi",
        ),
        (
            &["record", "--out", "o", "./workflow.sh"][..],
            "tal record --out o -- ./workflow.sh",
        ),
    ] {
        let out = run(tal().args(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn emit_without_a_task_id_names_the_flag() {
    let out = run(tal().args(["emit", "TaskStarted"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pass --task-id ID"), "{stderr}");
}

#[test]
fn wait_help_says_what_it_waits_for() {
    let out = run_ok(tal().args(["wait", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("listening on its socket and answering")
            && help.contains("How long to wait for an agent to answer")
            && !help.contains("for the agent to finish"),
        "{help}"
    );
}

#[test]
fn the_default_socket_has_one_tal_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    // No --session-id: the generated one starts with `tal.`.
    let out = run_ok(
        tal()
            .env("XDG_RUNTIME_DIR", run_dir.path())
            .args(["record", "--no-convert", "--node-id", "n", "--out"])
            .arg(dir.path())
            .args(["--", "true"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let socket = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("socket="))
        .unwrap_or_else(|| panic!("no socket= in {stderr}"));
    let name = Path::new(socket).file_name().unwrap().to_string_lossy();
    let session = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("session="))
        .unwrap();
    assert!(session.starts_with("tal.session."), "{stderr}");
    assert_eq!(name, format!("{session}.n.sock"), "{stderr}");
}

#[test]
fn summary_report_and_convert_take_the_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    record_script(
        &out_dir,
        "s.dir",
        &format!("{} run --task-id a -- true", env!("CARGO_BIN_EXE_tal")),
    );
    // The directory holds the log and the JSONL `tal record` wrote.
    let summary = run_ok(tal().args(["summary", "--json"]).arg(&out_dir));
    let v: serde_json::Value = serde_json::from_slice(&summary.stdout).unwrap();
    assert!(v.to_string().contains("s.dir"), "{v}");
    let html = dir.path().join("r.html");
    run_ok(tal().arg("report").arg(&out_dir).arg("-o").arg(&html));
    assert!(report_data(&std::fs::read_to_string(&html).unwrap())
        .to_string()
        .contains("\"a\""));
    let jsonl = dir.path().join("c.jsonl");
    run_ok(tal().arg("convert").arg(&out_dir).arg("-o").arg(&jsonl));
    let v = read_jsonl(&jsonl);
    assert_complete(&v);
    assert_eq!(lines(&v, "span", None).len(), 2, "a task and the session");
    // A directory with no node log is named.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for cmd in ["summary", "report", "convert"] {
        let out = run(tal().arg(cmd).arg(&empty));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            stderr.contains(&format!("{} has no node logs (*.tal)", empty.display())),
            "{cmd}: {stderr}"
        );
    }
}

#[test]
fn a_directory_of_two_sessions_is_refused_as_two_logs_are() {
    let dir = tempfile::tempdir().unwrap();
    record_script(dir.path(), "s.one", "true");
    record_script(dir.path(), "s.two", "true");
    let out = run(tal().arg("summary").arg(dir.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let named = run(tal()
        .arg("summary")
        .arg(dir.path().join("s.one.n.tal"))
        .arg(dir.path().join("s.two.n.tal")));
    assert_eq!(stderr, String::from_utf8_lossy(&named.stderr));
}

#[test]
fn the_workflow_finds_tal_without_it_on_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A PATH with a shell and the usual tools, and no tal.
    let path = "/usr/bin:/bin";
    assert!(
        !path.split(':').any(|d| Path::new(d).join("tal").exists()),
        "this test needs a PATH without tal"
    );
    let out = run_ok(
        tal()
            .env("PATH", path)
            .args([
                "record",
                "--session-id",
                "s.path",
                "--node-id",
                "n",
                "--out",
            ])
            .arg(dir.path())
            .args(["--", "bash", "-c", "tal run --task-id a -- echo hi"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{stderr}");
    let exe_dir = Path::new(env!("CARGO_BIN_EXE_tal")).parent().unwrap();
    let start = stderr
        .lines()
        .find(|l| l.starts_with("tal: recording "))
        .unwrap();
    assert!(
        start.contains(&format!(
            "no tal on PATH: the command's PATH ends with {}",
            exe_dir.display()
        )),
        "{stderr}"
    );
    let v = read_jsonl_in(dir.path());
    let done = lines(&v, "event", Some("TaskCompleted"));
    assert_eq!(done.len(), 1, "{stderr}");
    assert_eq!(done[0]["task_id"], "a");
}

#[test]
fn a_reused_task_id_is_said_at_once_counted_and_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let t = env!("CARGO_BIN_EXE_tal");
    // The second run's stderr goes where its command's output goes: the
    // warning comes before the command runs.
    let out = record_script(
        dir.path(),
        "s.dup",
        &format!(
            "{t} run --task-id dup -- true; \
             {t} run --task-id dup -- echo second 2>&1; \
             {t} run --task-id fresh -- true; \
             {t} emit TaskStarted --task-id e && {t} emit TaskStarted --task-id e 2>&1"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // And again at the end, where tal record says what it wrote.
    assert!(
        stderr.contains("2 task id(s) used again: those runs are recorded but not counted apart"),
        "{stderr}"
    );
    let said: Vec<&str> = stdout.lines().collect();
    assert_eq!(said.len(), 3, "{stdout}\n{stderr}");
    assert!(
        said[0].starts_with("tal run: warning: task id \"dup\" is used again")
            && said[0].contains("has ended"),
        "{stdout}"
    );
    assert_eq!(said[1], "second");
    assert!(
        said[2].starts_with("tal emit: warning: task id \"e\" is used again")
            && said[2].contains("has started"),
        "{stdout}"
    );
    let v = read_jsonl_in(dir.path());
    // Both runs are recorded, event by event.
    let done = lines(&v, "event", Some("TaskCompleted"));
    assert_eq!(done.iter().filter(|e| e["task_id"] == "dup").count(), 2);
    let m = lines(&v, "metric", None)[0];
    assert_eq!(m["ingest_task_ids_reused"], 2, "{m}");
    assert_eq!(m["ingest_lines_rejected"], 0, "{m}");
}
