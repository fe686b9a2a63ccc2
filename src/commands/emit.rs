//! `tal emit`: one event to the local agent, for shell workflows.

/// Runs `tal emit`; returns the exit code.
pub fn run(args: crate::cli::EmitArgs) -> anyhow::Result<i32> {
    use crate::client::{parse_kv, refusals, resolve_socket, AgentConn, EventLine};
    let kvs = |flag: &str, items: &[String]| {
        items
            .iter()
            .map(|s| parse_kv(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("invalid {flag} {e}"))
    };
    // The protocol's own refusal names the line's `task_id` key; here the
    // user typed flags, so the message names the flag.
    let is_task_event = crate::record::TaskState::from_type_name(&args.event_type).is_some();
    if is_task_event && args.task_id.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "{} needs a task id: pass --task-id ID (the id the task's other events use)",
            args.event_type
        );
    }
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
    if let Err(e) = crate::ingest::protocol::parse_line(&line[..line.len() - 1], 0) {
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
    for w in crate::client::warnings(&replies) {
        eprintln!("tal emit: warning: {w}");
    }
    if let Some(r) = refusals(&replies).first() {
        anyhow::bail!("the agent refused the event: {r}");
    }
    Ok(0)
}
