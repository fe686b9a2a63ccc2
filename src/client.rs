//! Talking to a running agent over its ingest socket: finding it, sending
//! lines, reading replies. Used by `tal emit`, `tal run` and `tal stop`.
//!
//! The socket is, in order: `--socket PATH`; `$TAL_SOCKET` (set for a
//! command `tal record` wraps); the default path of the Slurm session this
//! process is in (`slurm.<job>` and `$SLURMD_NODENAME`, which is what the
//! per-node agent of the same job uses by default), found where that agent
//! may have had to put it ([`crate::ingest::sockdir::find_socket`]).
//!
//! Whatever the path, a client talks only to an agent of its own user (or
//! root): it checks the listening process's uid (`SO_PEERCRED`) before it
//! sends anything, because on a shared node another user could have taken
//! a predictable path first and would otherwise receive task attributes,
//! executables, pids and exit codes.

use crate::json::JsonOut;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Why no agent could be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket path could be worked out.
    #[error("no agent socket: set TAL_SOCKET (tal record exports it to the command it wraps) or pass --socket PATH")]
    NoSocket,
    /// Connecting failed.
    #[error("no tal agent at {path}: {err}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// The socket is served by another user.
    #[error("the socket {path} is served by uid {uid}, not by you (uid {me}) or root: not talking to it (another user may have taken the path); pass --socket PATH")]
    NotOurs {
        /// The socket.
        path: PathBuf,
        /// The listener's uid.
        uid: u32,
        /// Ours.
        me: u32,
    },
    /// The conversation failed.
    #[error("talking to the agent at {path}: {err}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
}

/// Finds the agent's socket path (see the module doc).
pub fn resolve_socket(explicit: Option<PathBuf>) -> Result<PathBuf, ClientError> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("TAL_SOCKET").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    match (
        crate::slurm::slurm_session_id(),
        std::env::var("SLURMD_NODENAME").ok(),
    ) {
        (Some(s), Some(n)) if !n.is_empty() => Ok(crate::ingest::sockdir::find_socket(&s, &n)),
        _ => Err(ClientError::NoSocket),
    }
}

/// Connects to `path` and checks that the listening process is this
/// user's or root's (`SO_PEERCRED`).
pub fn connect_checked(path: &std::path::Path) -> Result<UnixStream, ClientError> {
    let stream = UnixStream::connect(path).map_err(|err| ClientError::Connect {
        path: path.to_path_buf(),
        err,
    })?;
    let uid = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(|err| ClientError::Io {
            path: path.to_path_buf(),
            err: err.into(),
        })?
        .uid
        .as_raw();
    let me = rustix::process::geteuid().as_raw();
    if uid != me && uid != 0 {
        return Err(ClientError::NotOurs {
            path: path.to_path_buf(),
            uid,
            me,
        });
    }
    Ok(stream)
}

/// An open connection to an agent.
#[derive(Debug)]
pub struct AgentConn {
    stream: UnixStream,
    path: PathBuf,
}

impl AgentConn {
    /// Connects to the agent at `path` (an agent of this user or root's
    /// only: see the module doc).
    pub fn connect(path: PathBuf) -> Result<Self, ClientError> {
        match connect_checked(&path) {
            Ok(stream) => Ok(Self { stream, path }),
            Err(e) => Err(e),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn io(&self, err: io::Error) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            err,
        }
    }

    /// Sends bytes (whole lines).
    pub fn send(&mut self, lines: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(lines).map_err(|e| self.io(e))
    }

    /// Asks the agent to answer at once (`{"op": "ping"}`) and reads the
    /// replies until it does, or until `timeout` passes: the answers to the
    /// lines sent before it (refusals, warnings), which the agent has all
    /// given by then, without the ping's own answer. The connection stays
    /// open for more lines.
    pub fn sync(&mut self, timeout: Duration) -> Result<Vec<String>, ClientError> {
        use std::io::Read;
        self.send(b"{\"op\": \"ping\"}\n")?;
        let deadline = std::time::Instant::now() + timeout;
        let mut got: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(nl) = memchr::memchr(b'\n', &got) {
                let line = String::from_utf8_lossy(&got[..nl]).into_owned();
                got.drain(..=nl);
                let answer = serde_json::from_str::<serde_json::Value>(&line)
                    .is_ok_and(|v| v.get("ok") == Some(&serde_json::Value::Bool(true)));
                if answer {
                    return Ok(out);
                }
                out.push(line);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || got.len() > 1 << 20 {
                return Ok(out);
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io(e))?;
            match (&self.stream).read(&mut chunk) {
                Ok(0) => return Ok(out),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(out)
                }
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// Ends the sending side and reads every reply line until the agent
    /// closes the connection (or `timeout` passes).
    pub fn finish(self, timeout: Duration) -> Result<Vec<String>, ClientError> {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| self.io(e))?;
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for line in BufReader::new(&self.stream).lines() {
            match line {
                Ok(l) => out.push(l),
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(out)
    }
}

/// Parses `--attr k=v`: the value is JSON when it parses as JSON (numbers,
/// true/false/null, quoted strings, objects, arrays), else a plain string.
pub fn parse_kv(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("'{s}' has an empty key"));
    }
    let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.into()));
    Ok((k.to_string(), value))
}

/// One event line.
#[derive(Debug, Default, Clone)]
pub struct EventLine {
    /// `event_type`
    pub event_type: String,
    /// `task_id`
    pub task_id: Option<String>,
    /// `backend`
    pub backend: Option<String>,
    /// `event_time`, seconds since the epoch (None: the agent's read time).
    pub event_time: Option<f64>,
    /// `attributes`
    pub attributes: Vec<(String, serde_json::Value)>,
    /// Top-level fields (custom events, extensions).
    pub fields: Vec<(String, serde_json::Value)>,
}

impl EventLine {
    /// The line, newline-terminated.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut o = JsonOut::object(&mut out);
        o.str("event_type", &self.event_type);
        if let Some(t) = &self.task_id {
            o.str("task_id", t);
        }
        if let Some(b) = &self.backend {
            o.str("backend", b);
        }
        if let Some(t) = self.event_time {
            o.f64("event_time", t);
        }
        o.key("attributes");
        o.raw(&json_object(&self.attributes));
        for (k, v) in &self.fields {
            o.key_escaped(k);
            o.raw(v.to_string().as_bytes());
        }
        o.end();
        out.push(b'\n');
        out
    }
}

fn json_object(kv: &[(String, serde_json::Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut o = JsonOut::object(&mut out);
    for (k, v) in kv {
        o.key_escaped(k);
        o.raw(v.to_string().as_bytes());
    }
    o.end();
    out
}

/// The `error` of each refusal among reply lines.
pub fn refusals(replies: &[String]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .collect()
}

/// The `warning` of each warning among reply lines (an agent's answer to
/// a line it accepted but has something to say about: a task id used
/// again, see [`crate::ingest::reuse`]), made safe to print.
pub fn warnings(replies: &[String]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v.get("warning")
                .and_then(|e| e.as_str())
                .map(|w| crate::term::escape_for_terminal(w, 2000).into_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_values_are_json_when_they_parse() {
        assert_eq!(parse_kv("n=3").unwrap().1, serde_json::json!(3));
        assert_eq!(parse_kv("ok=true").unwrap().1, serde_json::json!(true));
        assert_eq!(
            parse_kv("s=hello world").unwrap().1,
            serde_json::json!("hello world")
        );
        assert_eq!(parse_kv("e=").unwrap().1, serde_json::json!(""));
        assert!(parse_kv("novalue").is_err());
        assert!(parse_kv("=x").is_err());
    }

    #[test]
    fn event_line_parses_back() {
        let l = EventLine {
            event_type: "app.Step".into(),
            task_id: Some("t\"1".into()),
            attributes: vec![("a".into(), serde_json::json!(1))],
            fields: vec![("step".into(), serde_json::json!([1, 2]))],
            ..Default::default()
        };
        let line = l.to_line();
        let parsed = crate::ingest::protocol::parse_line(&line[..line.len() - 1], 0).unwrap();
        let crate::ingest::protocol::Line::Event(e) = parsed else {
            panic!()
        };
        assert_eq!(e.task_id.as_deref(), Some("t\"1"));
    }
}
