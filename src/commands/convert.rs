//! `tal convert`: node logs (or a JSONL checkpoint) to the session's JSONL,
//! OTLP JSON files, and an OTLP push.

/// `tal convert`: JSONL and/or OTLP files, and an optional OTLP push.
pub fn run(args: crate::cli::ConvertArgs) -> anyhow::Result<i32> {
    use crate::cli::ConvertFormat;
    use crate::convert::{self, otlp, Output};
    let endpoints = match args.otlp_endpoint.as_deref() {
        Some(u) => Some(
            crate::otlp_http::Endpoints::resolve((!u.is_empty()).then_some(u))
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
    let mut client = crate::otlp_http::Client::default();
    let policy = crate::otlp_http::RetryPolicy::default();
    let mut pusher = endpoints
        .as_ref()
        .map(|ep| crate::otlp_http::Pusher::new(&mut client, ep, &policy));
    let mut write_error = None;
    let built = std::fs::File::open(&src)
        .and_then(|f| {
            otlp::stream_jsonl(
                std::io::BufReader::with_capacity(1 << 20, f),
                &otlp::ResourceConfig::from_env(),
                crate::otlp_http::SPANS_PER_REQUEST * 4,
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
    crate::convert::open_logs(logs)
        .ok()
        .and_then(|r| {
            let start = r.iter().map(|l| l.header().start_wall_ns).min()?;
            let name = crate::convert::default_file_name(&r.first()?.header().session_id, start);
            Some(name.trim_end_matches(".telemetry.jsonl").to_string())
        })
        .unwrap_or_else(|| "session".into())
}
