//! Progress of long work: shown on a terminal (a pseudo-terminal made by
//! util-linux's `script`), never when stderr is not a terminal, never with
//! `--quiet`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

/// Runs `tal ARGS` with a pseudo-terminal as its stdout and stderr: what
/// the terminal showed.
fn on_a_terminal(args: &[&str]) -> String {
    let mut cmd = String::from(env!("CARGO_BIN_EXE_tal"));
    for a in args {
        cmd.push_str(" '");
        cmd.push_str(a);
        cmd.push('\'');
    }
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("util-linux's script");
    assert!(out.status.success(), "{cmd}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_sees_progress_and_a_pipe_or_quiet_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_tasks(dir.path(), "progress.s");
    let log = log.to_str().unwrap();
    let jsonl = dir.path().join("run.jsonl");
    let jsonl_s = jsonl.to_str().unwrap();

    let shown = on_a_terminal(&["convert", log, "-o", jsonl_s]);
    assert!(shown.contains("converting 1 log(s) ["), "{shown:?}");
    assert!(
        shown.contains("left"),
        "an estimate of the time left: {shown:?}"
    );
    let quiet = on_a_terminal(&["convert", "--quiet", log, "-o", jsonl_s]);
    assert!(!quiet.contains("converting 1 log(s) ["), "{quiet:?}");

    let page = dir.path().join("r.html");
    let shown = on_a_terminal(&["report", jsonl_s, "-o", page.to_str().unwrap()]);
    assert!(shown.contains("report ["), "{shown:?}");
    let shown = on_a_terminal(
        &["convert", jsonl_s, "--format", "otlp-json", "-o"]
            .into_iter()
            .chain([dir.path().join("o").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(shown.contains("OTLP JSON ["), "{shown:?}");

    // Not a terminal: the messages only, no bar and no control characters.
    for args in [
        vec!["convert", log, "-o", jsonl_s],
        vec!["report", jsonl_s, "-o", page.to_str().unwrap()],
        vec!["summary", log],
    ] {
        let out = run(tal().args(&args));
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains('\r') && !err.contains('\u{1b}'),
            "{args:?}: {err:?}"
        );
        assert!(!err.contains(" ["), "{args:?}: {err:?}");
    }
    assert!(Path::new(&page).exists());
}
