//! `tal subscribe`: the agent's live feed of events, as JSONL on stdout.

/// Runs `tal subscribe`; returns the exit code when the agent ends the
/// feed.
pub fn run(args: crate::cli::SubscribeArgs) -> anyhow::Result<i32> {
    use crate::client::resolve_socket;
    use std::io::{Read, Write};
    let path = resolve_socket(args.socket.socket)?;
    let mut s = crate::client::connect_checked(&path)?;
    let types: Vec<serde_json::Value> = args
        .types
        .into_iter()
        .map(serde_json::Value::from)
        .collect();
    // No types: every event (the agent refuses an empty list).
    let req = if types.is_empty() {
        serde_json::json!({"op": "subscribe"})
    } else {
        serde_json::json!({"op": "subscribe", "types": types})
    };
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
