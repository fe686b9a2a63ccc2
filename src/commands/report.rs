//! `tal report`: the session's HTML report (see [`crate::report`]), written
//! whole or not at all (a temporary file renamed into place). Node logs
//! are read straight into the report through the session's replay (see
//! [`crate::items::logs`]), twice, as the report reads a JSONL.

use super::summary::SessionInput;
use crate::cli::ReportArgs;
use crate::convert;
use std::path::PathBuf;

/// `tal report`.
pub fn run(mut args: ReportArgs) -> anyhow::Result<i32> {
    args.logs = super::inputs::expand(&args.logs)?;
    // Temporaries go on SIGINT, SIGTERM and SIGHUP too; the report may not
    // replace an input.
    crate::sys::exit_on(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    convert::protect_inputs(&args.logs);
    let mut src = SessionInput::resolve(&args.logs, args.quiet, "tal report", "report")?;
    let path = match &args.output {
        Some(p) => p.clone(),
        None => default_path(&args.logs),
    };
    let t0 = std::time::Instant::now();
    let input = src.path(&args.logs);
    // The report reads its input twice (see `crate::report`).
    let stats = src.read("report", 2, args.quiet, |src| {
        if path.as_os_str() == "-" {
            // `-o -`: standard output, as for `tal convert`.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::report::write_report(src, &mut out)
                .and_then(|s| std::io::Write::flush(&mut out).map(|()| s))
        } else {
            convert::write_output(&path, |w| crate::report::write_report(src, w))
        }
    });
    let stats = stats.map_err(|e| {
        let out = format!("the report {}", path.display());
        convert::lines::read_or_write_error(&e, &input, &out)
    })?;
    for note in stats.read.notes() {
        eprintln!("tal report: {note}");
    }
    eprintln!(
        "tal report: wrote {} ({:.1} MiB: {} tasks, {} series points from {} samples) in {:.2} s",
        path.display(),
        stats.bytes as f64 / (1 << 20) as f64,
        stats.tasks,
        stats.points,
        stats.samples,
        t0.elapsed().as_secs_f64()
    );
    // 1: written, but some node log was refused (named on stderr).
    Ok(i32::from(src.refused()))
}

/// `<stem>.report.html` beside the first input: the checkpoint's stem, a
/// dataset folder's name (less `.dataset`), or the session's default name
/// for node logs.
fn default_path(inputs: &[PathBuf]) -> PathBuf {
    let first = &inputs[0];
    if crate::items::dataset::is_dataset(first) {
        // `run.dataset/` gives `run.report.html` beside it, the path as
        // given (a link to a dataset elsewhere is not followed there).
        let abs = std::path::absolute(first).unwrap_or_else(|_| first.clone());
        let name = abs.file_name().unwrap_or_default().to_string_lossy();
        let stem = name.strip_suffix(".dataset").unwrap_or(&name);
        let stem = if stem.is_empty() || stem == "." {
            "session"
        } else {
            stem
        };
        return convert::dir_of(&abs).join(format!("{stem}.report.html"));
    }
    let stem = if first.extension().is_some_and(|e| e == "jsonl") {
        convert::jsonl_stem(first)
    } else {
        super::convert::session_stem(inputs)
    };
    convert::dir_of(first).join(format!("{stem}.report.html"))
}
