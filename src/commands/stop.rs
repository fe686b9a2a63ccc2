//! `tal stop` and `tal wait`: a job script's handshakes with its agent.

/// `tal stop`: asks the local agent to finalise, and waits until it says
/// its log and JSONL are written (printing its answer).
pub fn stop(args: crate::cli::StopArgs) -> anyhow::Result<i32> {
    use crate::client::{resolve_socket, AgentConn};
    let timeout = crate::cli::parse_duration(&args.timeout)
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
pub fn wait(args: crate::cli::WaitArgs) -> anyhow::Result<i32> {
    use crate::client::{resolve_socket, AgentConn};
    let timeout = crate::cli::parse_duration(&args.timeout)
        .map_err(|e| anyhow::anyhow!("invalid --timeout '{}': {e}", args.timeout))?;
    let t0 = std::time::Instant::now();
    loop {
        // Looked for again each time: an agent that had to listen
        // elsewhere (see `crate::ingest::sockdir`) may not have started yet.
        let path = resolve_socket(args.socket.socket.clone())?;
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
            Err(e @ crate::client::ClientError::NotOurs { .. }) => return Err(e.into()),
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
