//! The `tal` binary: parses the command line and maps results to exit codes.
//! A real failure prints one line (`tal: ...`) and exits non-zero; a broken
//! pipe on stdout (`tal convert -o - | head`) exits 0.

use clap::Parser;
use std::process::ExitCode;
use tal::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Record(args) => args.into_config().and_then(tal::recorder::run),
        Command::Run(args) => args.into_config().and_then(tal::run::run),
        Command::Emit(args) => emit(args),
        Command::Stop(args) => stop(args),
        Command::Wait(args) => wait(args),
        Command::Subscribe(args) => subscribe(args),
        Command::Convert(args) => convert(args),
    };
    match res {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("tal: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn emit(args: tal::cli::EmitArgs) -> anyhow::Result<i32> {
    use tal::client::{parse_kv, refusals, resolve_socket, AgentConn, EventLine};
    let kvs = |flag: &str, items: &[String]| {
        items
            .iter()
            .map(|s| parse_kv(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid {flag} {e}"))
    };
    let attributes = kvs("--attr", &args.attrs)?;
    let fields = kvs("--field", &args.fields)?;
    let line = EventLine {
        event_type: args.event_type,
        task_id: args.task_id,
        backend: args.backend,
        event_time: args.event_time,
        attributes,
        fields,
    }
    .to_line();
    // Check it here first, for a message without a round trip.
    if let Err(e) = tal::ingest::protocol::parse_line(&line[..line.len() - 1], 0) {
        anyhow::bail!("{e}");
    }
    let conn = match resolve_socket(args.socket.socket).and_then(AgentConn::connect) {
        Ok(c) => c,
        Err(e) if !args.strict => {
            eprintln!("tal emit: {e}; the event was not recorded");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let mut conn = conn;
    conn.send(&line)?;
    let replies = conn.finish(std::time::Duration::from_secs(10))?;
    if let Some(r) = refusals(&replies).first() {
        anyhow::bail!("the agent refused the event: {r}");
    }
    Ok(0)
}

fn stop(args: tal::cli::StopArgs) -> anyhow::Result<i32> {
    use tal::client::{resolve_socket, AgentConn};
    let timeout = tal::cli::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("invalid --timeout '{}': {e}", args.timeout))?;
    let mut conn = resolve_socket(args.socket.socket).and_then(AgentConn::connect)?;
    conn.send(b"{\"op\": \"stop\"}\n")?;
    let replies = conn.finish(timeout)?;
    match replies.last() {
        Some(r) if r.contains("\"ok\": true") => {
            println!("{r}");
            Ok(0)
        }
        Some(r) => anyhow::bail!("the agent answered: {r}"),
        None => anyhow::bail!("the agent closed the connection without confirming it finished"),
    }
}

/// `tal wait`: pings the local agent until it answers or `--timeout` ends.
fn wait(args: tal::cli::StopArgs) -> anyhow::Result<i32> {
    use tal::client::{resolve_socket, AgentConn};
    let timeout = tal::cli::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("invalid --timeout '{}': {e}", args.timeout))?;
    let path = resolve_socket(args.socket.socket)?;
    let t0 = std::time::Instant::now();
    loop {
        let answered = AgentConn::connect(path.clone()).and_then(|mut c| {
            c.send(b"{\"op\": \"ping\"}\n")?;
            c.finish(std::time::Duration::from_secs(5))
        });
        match answered {
            Ok(r) if r.iter().any(|l| l.contains("\"ok\": true")) => {
                println!("{}", r.last().map_or("", String::as_str));
                return Ok(0);
            }
            // Another user's socket will not turn into ours by waiting.
            Err(e @ tal::client::ClientError::NotOurs { .. }) => return Err(e.into()),
            Err(e) if t0.elapsed() >= timeout => {
                anyhow::bail!(
                    "no tal agent answered at {} within {timeout:?}: {e}",
                    path.display()
                )
            }
            _ if t0.elapsed() >= timeout => {
                anyhow::bail!(
                    "no tal agent answered at {} within {timeout:?}",
                    path.display()
                )
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

fn subscribe(args: tal::cli::SubscribeArgs) -> anyhow::Result<i32> {
    use std::io::{Read, Write};
    use tal::client::resolve_socket;
    let path = resolve_socket(args.socket.socket)?;
    let mut s = tal::client::connect_checked(&path)?;
    let types: Vec<serde_json::Value> = args
        .types
        .into_iter()
        .map(serde_json::Value::from)
        .collect();
    let req = serde_json::json!({"op": "subscribe", "types": types});
    s.write_all(format!("{req}\n").as_bytes())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 1 << 16];
    // The agent's answer comes first: said on stderr (scripts can wait for
    // it), so that stdout is only the feed.
    let mut first = Vec::new();
    let rest = loop {
        let n = match s.read(&mut buf) {
            Ok(0) => anyhow::bail!("the agent closed the connection without answering"),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        first.extend_from_slice(&buf[..n]);
        if let Some(nl) = first.iter().position(|&b| b == b'\n') {
            break first.split_off(nl + 1);
        }
        if first.len() > 1 << 16 {
            anyhow::bail!("the agent's answer is not a line");
        }
    };
    let answer: serde_json::Value = serde_json::from_slice(&first)
        .map_err(|e| anyhow::anyhow!("the agent's answer is not JSON: {e}"))?;
    if answer["ok"] != true {
        let why = answer["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the agent refused the subscription: {why}");
    }
    match answer["subscribed"].as_array() {
        Some(t) if !t.is_empty() => {
            let names: Vec<&str> = t.iter().filter_map(|v| v.as_str()).collect();
            eprintln!("tal subscribe: subscribed to {}", names.join(", "));
        }
        _ => eprintln!("tal subscribe: subscribed to every event type"),
    }
    out.write_all(&rest)?;
    out.flush()?;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

/// `tal convert`: JSONL and/or OTLP files, and an optional OTLP push.
fn convert(args: tal::cli::ConvertArgs) -> anyhow::Result<i32> {
    use tal::cli::ConvertFormat;
    use tal::convert::{self, otlp, Output};
    let endpoints = match args.otlp_endpoint.as_deref() {
        Some(u) => Some(
            tal::otlp_http::Endpoints::resolve((!u.is_empty()).then_some(u))
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let is_jsonl = |p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "jsonl");
    let jsonl_input = match args.logs.iter().filter(|p| is_jsonl(p)).count() {
        0 => None,
        1 if args.logs.len() == 1 => Some(args.logs[0].clone()),
        _ => anyhow::bail!(
            "give either node logs (.tal) or one JSONL checkpoint (.jsonl), not both or several"
        ),
    };
    let map_err = |e: convert::ConvertError| match e {
        convert::ConvertError::Output { source, .. }
            if source.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            anyhow::Error::from(source)
        }
        // The typed errors' messages already name their cause.
        e => anyhow::anyhow!("{e}"),
    };
    let report = |path: &std::path::Path, summary: &convert::Summary| {
        for l in convert::describe(summary) {
            eprintln!("tal convert: {l}");
        }
        eprintln!("tal convert: {}", convert::describe_written(path, summary));
    };

    // The JSONL the OTLP form is built from, and whether it is a temporary.
    let mut source: Option<(std::path::PathBuf, bool)> = jsonl_input.clone().map(|p| (p, false));
    let mut keep_tmp: Option<tempfile::NamedTempFile> = None;
    if args.format == ConvertFormat::Jsonl {
        if jsonl_input.is_some() {
            if endpoints.is_none() {
                anyhow::bail!(
                    "the input is already JSONL: pass --format otlp-json or --otlp-endpoint"
                );
            }
        } else {
            let (path, summary) = convert::to_jsonl(&args.logs, &args.output()).map_err(map_err)?;
            if let Some(p) = path {
                report(&p, &summary);
                source = Some((p, false));
            }
        }
    }
    let need_otlp = args.format == ConvertFormat::OtlpJson || endpoints.is_some();
    if !need_otlp {
        return Ok(0);
    }
    if source.is_none() {
        // From the logs, through a temporary JSONL beside the output.
        let dir = match &args.output {
            Some(p) if p.as_os_str() != "-" => p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| std::path::PathBuf::from("."), std::path::PathBuf::from),
            _ => args.logs[0]
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| std::path::PathBuf::from("."), std::path::PathBuf::from),
        };
        // A new file of a random name (nothing planted there is followed);
        // removed when `tmp_file` drops.
        let tmp_file = tempfile::Builder::new()
            .prefix(".tal-convert-")
            .suffix(".jsonl")
            .tempfile_in(&dir)
            .map_err(|e| {
                anyhow::anyhow!("cannot create a temporary file in {}: {e}", dir.display())
            })?;
        let tmp = tmp_file.path().to_path_buf();
        let (_, summary) =
            convert::to_jsonl(&args.logs, &Output::File(tmp.clone())).map_err(map_err)?;
        keep_tmp = Some(tmp_file);
        for l in convert::describe(&summary) {
            eprintln!("tal convert: {l}");
        }
        source = Some((tmp, true));
    }
    let (src, temporary) = source.expect("set above");
    // The OTLP form is made as the JSONL is read: spans go to the traces
    // file and to the receiver in installments, so that memory does not
    // grow with the session's tasks; the metrics follow at the end.
    let mut json_out = match args.format {
        ConvertFormat::OtlpJson => {
            let prefix = match &args.output {
                Some(p) => p.clone(),
                None => {
                    let name = src
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let stem = if temporary {
                        otlp_default_stem(&args.logs)
                    } else {
                        name.strip_suffix(".telemetry.jsonl")
                            .or_else(|| name.strip_suffix(".jsonl"))
                            .unwrap_or(&name)
                            .to_string()
                    };
                    src.with_file_name(format!("{stem}.otlp"))
                }
            };
            Some(convert::OtlpJsonOut::create(&prefix).map_err(map_err)?)
        }
        ConvertFormat::Jsonl => None,
    };
    let mut client = tal::otlp_http::Client::default();
    let policy = tal::otlp_http::RetryPolicy::default();
    let mut pusher = endpoints
        .as_ref()
        .map(|ep| tal::otlp_http::Pusher::new(&mut client, ep, &policy));
    let mut write_error = None;
    let built = std::fs::File::open(&src)
        .and_then(|f| {
            otlp::stream_jsonl(
                std::io::BufReader::with_capacity(1 << 20, f),
                &otlp::ResourceConfig::from_env(),
                tal::otlp_http::SPANS_PER_REQUEST * 4,
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
            None => anyhow::anyhow!("cannot read {}: {e}", src.display()),
        });
    if temporary {
        // Removes the temporary JSONL.
        drop(keep_tmp.take());
    }
    let built = built?;
    if let Some(o) = json_out {
        let (t, m) = o.finish(&built).map_err(map_err)?;
        if let (Some(t), Some(m)) = (t, m) {
            eprintln!(
                "tal convert: wrote {} ({} spans) and {} ({} points)",
                t.display(),
                built.spans,
                m.display(),
                built.points
            );
        }
    }
    if let (Some(mut p), Some(ep)) = (pusher, endpoints.as_ref()) {
        p.metrics(&built.metrics);
        let r = p.report;
        eprintln!(
            "tal convert: OTLP push to {}: {} span(s) and {} metric point(s) delivered in {} request(s){}",
            ep.traces,
            r.spans_sent,
            r.points_sent,
            r.requests,
            if r.retries > 0 { format!(", {} retries", r.retries) } else { String::new() }
        );
        if !r.complete() {
            eprintln!(
                "tal convert: NOT delivered: {} span(s), {} metric point(s): {}",
                r.spans_failed,
                r.points_failed,
                r.errors.join("; ")
            );
            return Ok(1);
        }
    }
    Ok(0)
}

/// `{session}.{start}` of node logs, for default OTLP file names.
fn otlp_default_stem(logs: &[std::path::PathBuf]) -> String {
    tal::convert::open_logs(logs)
        .ok()
        .and_then(|r| {
            let start = r.iter().map(|l| l.header().start_wall_ns).min()?;
            let name = tal::convert::default_file_name(&r.first()?.header().session_id, start);
            Some(name.trim_end_matches(".telemetry.jsonl").to_string())
        })
        .unwrap_or_else(|| "session".into())
}
