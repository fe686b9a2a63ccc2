//! `tal convert`: node logs (or a JSONL checkpoint) to the session's JSONL,
//! OTLP JSON files, a Chrome trace, and an OTLP push.
//!
//! Two steps: the JSONL (`jsonl_step`: the requested file, or a
//! temporary one beside the output when only another form is wanted, or
//! the JSONL given), then the other forms, built as that JSONL is read:
//! the OTLP form (`otlp_step`: spans go to the traces file and to the
//! receiver in installments, so that memory does not grow with the
//! session's tasks; the metrics follow at the end), and the Chrome trace
//! (`chrome_step`, see `convert::chrome`).

use crate::cli::{ConvertArgs, ConvertFormat};
use crate::convert::{self, ConvertError, Output};
use crate::otlp;
use crate::otlp_http::{Endpoints, PushReport, Pusher, RetryPolicy, SPANS_PER_REQUEST};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// A file's size (0 if it cannot be read: the progress then shows no total).
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `tal convert`: JSONL and/or OTLP files, and an optional OTLP push.
pub fn run(mut args: ConvertArgs) -> anyhow::Result<i32> {
    args.logs = super::inputs::expand(&args.logs)?;
    // Temporaries go on SIGINT, SIGTERM and SIGHUP too; no output may
    // replace an input.
    crate::sys::exit_on(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    convert::protect_inputs(&args.logs);
    let endpoints = match args.otlp_endpoint.as_deref() {
        Some(u) => Some(
            Endpoints::resolve((!u.is_empty()).then_some(u)).map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let is_jsonl = |p: &PathBuf| p.extension().is_some_and(|e| e == "jsonl");
    let jsonl_input = match args.logs.iter().filter(|p| is_jsonl(p)).count() {
        0 => None,
        1 if args.logs.len() == 1 => Some(args.logs[0].clone()),
        _ => anyhow::bail!(
            "give either node logs (.tal) or one JSONL checkpoint (.jsonl), not both or several"
        ),
    };
    if args.format == ConvertFormat::Parquet {
        return parquet_step(&args, jsonl_input.is_some(), endpoints.is_some());
    }
    if jsonl_input.is_some() && args.format == ConvertFormat::Jsonl && endpoints.is_none() {
        anyhow::bail!(
            "the input is already JSONL: pass --format otlp-json, --format chrome-trace or --otlp-endpoint"
        );
    }
    let need_otlp = args.format == ConvertFormat::OtlpJson || endpoints.is_some();
    let need_file = need_otlp || args.format == ConvertFormat::ChromeTrace;
    let (source, refused) = jsonl_step(&args, jsonl_input, need_file)?;
    // 1: converted, but some inputs were refused (named on stderr).
    let partial = i32::from(refused);
    let Some(source) = source else {
        return Ok(partial);
    };
    if args.format == ConvertFormat::ChromeTrace {
        chrome_step(&args, &source)?;
    }
    if !need_otlp {
        return Ok(partial);
    }
    Ok(otlp_step(&args, source, endpoints.as_ref())?.max(partial))
}

/// The Parquet dataset, from the node logs (see [`crate::dataset`]).
fn parquet_step(args: &ConvertArgs, jsonl: bool, push: bool) -> anyhow::Result<i32> {
    if jsonl {
        anyhow::bail!(
            "a dataset is made from node logs (.tal), not from a JSONL checkpoint: \
             give the session's logs"
        );
    }
    if push {
        anyhow::bail!("--otlp-endpoint goes with --format jsonl or otlp-json, not parquet");
    }
    if args.output.as_deref() == Some(Path::new("-")) {
        anyhow::bail!("a dataset is a folder: name it with -o DIR, not -");
    }
    let (_, written) = crate::dataset::convert(
        &args.logs,
        args.output.as_deref(),
        args.quiet,
        "tal convert",
    )
    .map_err(map_err)?;
    // 1: written, but some input was refused or not written (named).
    Ok(i32::from(!written.failed.is_empty()))
}

/// The Chrome trace, from the JSONL: to `-o` (`-`: stdout), else beside
/// the JSONL as `<stem>.trace.json`.
fn chrome_step(args: &ConvertArgs, src: &Source) -> anyhow::Result<()> {
    let progress = Progress::bytes("Chrome trace", 2 * file_len(&src.path), args.quiet);
    let open = || {
        std::fs::File::open(&src.path)
            .map(|f| progress.reading(std::io::BufReader::with_capacity(1 << 20, f)))
    };
    let read_err =
        |e: std::io::Error| anyhow::anyhow!("cannot convert {}: {e}", src.path.display());
    if args.output.as_deref() == Some(Path::new("-")) {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = convert::chrome::write_chrome_trace(open, &mut out);
        progress.finish();
        for note in written.map_err(read_err)?.read.notes() {
            eprintln!("tal convert: {note}");
        }
        return Ok(());
    }
    let path = match &args.output {
        Some(p) => p.clone(),
        None => default_beside(args, src, ".trace.json"),
    };
    let stats = convert::write_output(&path, |w| convert::chrome::write_chrome_trace(open, w));
    progress.finish();
    let stats = stats.map_err(|e| {
        convert::lines::read_or_write_error(&e, &src.path, &path.display().to_string())
    })?;
    for note in stats.read.notes() {
        eprintln!("tal convert: {note}");
    }
    eprintln!(
        "tal convert: wrote {} ({} tasks on {} process(es), {} counter samples, {} instants); open it in ui.perfetto.dev or chrome://tracing",
        path.display(),
        stats.tasks,
        stats.processes,
        stats.counters,
        stats.instants
    );
    Ok(())
}

/// The JSONL the OTLP form is read from.
struct Source {
    path: PathBuf,
    /// Set when `path` is a temporary file, in a private work directory
    /// (removed when this drops, or a signal ends tal).
    temporary: Option<(crate::tempfiles::WorkDir, crate::tempfiles::Registered)>,
}

/// A conversion error for stderr; a closed stdout stays a broken pipe (so
/// that `tal convert -o - | head` exits 0).
fn map_err(e: ConvertError) -> anyhow::Error {
    match e {
        ConvertError::Output { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe => {
            anyhow::Error::from(source)
        }
        // The typed errors' messages already name their cause.
        e => anyhow::anyhow!("{e}"),
    }
}

/// What reading the logs found, on stderr (and what was written, if
/// `written` names it).
fn report(summary: &convert::Summary, written: Option<&Path>) {
    for l in convert::describe(summary) {
        eprintln!("tal convert: {l}");
    }
    if let Some(path) = written {
        eprintln!("tal convert: {}", convert::describe_written(path, summary));
    }
}

/// Step 1: the JSONL. Node logs are converted to the requested file (for
/// `--format jsonl`), or, when only the OTLP form is wanted, to a
/// temporary file beside the output; a JSONL given is used as it is.
/// `None` when no OTLP form is wanted and the JSONL went to stdout; with
/// whether some input was refused (see [`convert::open_logs`]).
fn jsonl_step(
    args: &ConvertArgs,
    jsonl_input: Option<PathBuf>,
    need_file: bool,
) -> anyhow::Result<(Option<Source>, bool)> {
    if let Some(path) = jsonl_input {
        let src = Source {
            path,
            temporary: None,
        };
        return Ok((Some(src), false));
    }
    let mut refused = false;
    if args.format == ConvertFormat::Jsonl {
        let (path, summary) =
            convert::to_jsonl_showing(&args.logs, &args.output(), args.quiet).map_err(map_err)?;
        report(&summary, path.as_deref());
        refused = !summary.refused.is_empty();
        if let Some(path) = path {
            let src = Source {
                path,
                temporary: None,
            };
            return Ok((Some(src), refused));
        }
        // To stdout: a push reads its own (temporary) copy.
    }
    if !need_file {
        return Ok((None, refused));
    }
    // From the logs, through a temporary JSONL beside the output.
    let dir = match &args.output {
        Some(p) if p.as_os_str() != "-" => convert::dir_of(p),
        _ => convert::dir_of(&args.logs[0]),
    };
    // In a new private directory (the session's task attributes are in
    // it; nothing planted there is followed), removed when it drops.
    let work = crate::tempfiles::WorkDir::new_in(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (path, registered) = work.file("session.telemetry.jsonl");
    let (_, summary) =
        convert::to_jsonl_showing(&args.logs, &Output::File(path.clone()), args.quiet)
            .map_err(map_err)?;
    report(&summary, None);
    let src = Source {
        path,
        temporary: Some((work, registered)),
    };
    Ok((Some(src), !summary.refused.is_empty()))
}

/// Where the OTLP JSON files go: `-o`, else beside the JSONL, named as the
/// session's checkpoint is, with `.otlp` for `.telemetry.jsonl`.
fn otlp_prefix(args: &ConvertArgs, src: &Source) -> PathBuf {
    match &args.output {
        Some(p) => p.clone(),
        None => default_beside(args, src, ".otlp"),
    }
}

/// A file beside the JSONL, named as the session's checkpoint is, with
/// `suffix` for `.telemetry.jsonl`.
fn default_beside(args: &ConvertArgs, src: &Source, suffix: &str) -> PathBuf {
    if src.temporary.is_some() {
        // Made from logs: beside the first log (the JSONL is a temporary
        // in a private work directory).
        let name = format!("{}{suffix}", session_stem(&args.logs));
        return convert::dir_of(&args.logs[0]).join(name);
    }
    let stem = convert::jsonl_stem(&src.path);
    src.path.with_file_name(format!("{stem}{suffix}"))
}

/// Step 2: the OTLP form, made as the JSONL is read, into the OTLP JSON
/// files and/or the push. Returns the exit code: 1 when something was not
/// delivered.
fn otlp_step(
    args: &ConvertArgs,
    src: Source,
    endpoints: Option<&Endpoints>,
) -> anyhow::Result<i32> {
    let mut json_out = match args.format {
        ConvertFormat::OtlpJson => {
            Some(convert::OtlpJsonOut::create(&otlp_prefix(args, &src)).map_err(map_err)?)
        }
        ConvertFormat::Jsonl | ConvertFormat::ChromeTrace | ConvertFormat::Parquet => None,
    };
    let mut client = crate::otlp_http::Client::default();
    let policy = RetryPolicy::default();
    let mut pusher = endpoints.map(|ep| Pusher::new(&mut client, ep, &policy));
    let mut write_error = None;
    let what = if endpoints.is_some() {
        "OTLP push"
    } else {
        "OTLP JSON"
    };
    let progress = Progress::bytes(what, file_len(&src.path), args.quiet);
    let built = std::fs::File::open(&src.path)
        .and_then(|f| {
            otlp::stream_jsonl(
                progress.reading(std::io::BufReader::with_capacity(1 << 20, f)),
                &otlp::ResourceConfig::from_env(),
                SPANS_PER_REQUEST * 4,
                |req| {
                    if let Some(o) = json_out.as_mut() {
                        if let Err(e) = o.spans(&req) {
                            let msg = e.to_string();
                            write_error = Some(e);
                            return Err(std::io::Error::other(msg));
                        }
                    }
                    if let Some(p) = pusher.as_mut() {
                        p.traces(&req);
                    }
                    Ok(())
                },
            )
        })
        .map_err(|e| match write_error.take() {
            Some(w) => map_err(w),
            None => anyhow::anyhow!("cannot read {}: {e}", src.path.display()),
        });
    progress.finish();
    // Removes a temporary JSONL.
    drop(src);
    let built = built?;
    for note in built.read.notes() {
        eprintln!("tal convert: {note}");
    }
    if let Some(o) = json_out {
        if let (Some(t), Some(m)) = o.finish(&built).map_err(map_err)? {
            eprintln!(
                "tal convert: wrote {} ({} spans) and {} ({} points)",
                t.display(),
                built.spans,
                m.display(),
                built.points
            );
        }
    }
    match (pusher, endpoints) {
        (Some(mut p), Some(ep)) => {
            p.metrics(&built.metrics);
            Ok(push_report(ep, &p.report))
        }
        _ => Ok(0),
    }
}

/// What the push delivered, and what not, on stderr; the exit code.
fn push_report(ep: &Endpoints, r: &PushReport) -> i32 {
    eprintln!(
        "tal convert: OTLP push to {}: {} span(s) and {} metric point(s) delivered in {} request(s){}",
        ep.traces,
        r.spans_sent,
        r.points_sent,
        r.requests,
        if r.retries > 0 { format!(", {} retries", r.retries) } else { String::new() }
    );
    if r.complete() {
        return 0;
    }
    eprintln!(
        "tal convert: NOT delivered: {} span(s), {} metric point(s): {}",
        r.spans_failed,
        r.points_failed,
        // Each reason's peer text is escaped and cut where it was taken;
        // this keeps any other text from a peer inert too.
        crate::term::escape_for_terminal(&r.errors.join("; "), 4000)
    );
    1
}

/// `{session}.{start}` of node logs, for the default names of files made
/// from them (OTLP, Chrome trace, report): one plain file name, from ids
/// the log reader checked ([`convert::Inputs::default_name`]).
pub(crate) fn session_stem(logs: &[PathBuf]) -> String {
    convert::open_logs(logs)
        .ok()
        .map(|inputs| {
            let name = inputs.default_name();
            name.trim_end_matches(".telemetry.jsonl").to_string()
        })
        .unwrap_or_else(|| "session".into())
}
