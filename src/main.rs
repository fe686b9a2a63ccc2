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
        Command::Subscribe(args) => subscribe(args),
        Command::Convert(args) => {
            let output = args.output();
            tal::convert::to_jsonl(&args.logs, &output)
                .map(|(path, summary)| {
                    for l in tal::convert::describe(&summary) {
                        eprintln!("tal convert: {l}");
                    }
                    if let Some(p) = path {
                        eprintln!(
                            "tal convert: wrote {} ({} events, {} log(s))",
                            p.display(),
                            summary.events,
                            summary.logs.len()
                        );
                    }
                    0
                })
                .map_err(|e| match e {
                    tal::convert::ConvertError::Output { source, .. }
                        if source.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        anyhow::Error::from(source)
                    }
                    // The typed errors' messages already name their cause.
                    e => anyhow::anyhow!("{e}"),
                })
        }
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

fn subscribe(args: tal::cli::SubscribeArgs) -> anyhow::Result<i32> {
    use std::io::{Read, Write};
    use tal::client::resolve_socket;
    let path = resolve_socket(args.socket.socket)?;
    let mut s = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| anyhow::anyhow!("no tal agent at {}: {e}", path.display()))?;
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
