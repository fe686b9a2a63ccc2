//! `tal run -- CMD`: runs one command as a task of the session.
//!
//! It reports TaskCreated and TaskSubmitted, starts the command (TaskStarted
//! with its `pid`), and when it ends TaskCompleted (exit 0) or TaskFailed
//! with `error_type` `exit:N`, `signal:SIGNAME`, or `exec:ENOENT`-style for
//! a command that could not start (then after a TaskStarted without `pid`,
//! as RHAPSODY reports a launch failure); tal exits with the command's status
//! (128+N for signal N, 127/126 when it could not start, as shells do).
//!
//! The terminal event carries the task's own resource use as extension
//! attributes (and so its span does): `cpu_user_seconds`,
//! `cpu_system_seconds` and `max_rss_bytes` from `wait4` (the command and
//! every descendant it waited for; `max_rss_bytes` is the largest resident
//! set among them, as the kernel reports it), and `read_bytes` /
//! `write_bytes` from `/proc/<pid>/io`, read after the command exited but
//! before it is reaped, so that they include its reaped descendants.
//! `duration_seconds` is measured on the monotonic clock.
//!
//! Before it starts the command, `tal run` has the agent answer its
//! TaskCreated and TaskSubmitted (a ping after them: one round trip), so
//! that what the agent says of them is on stderr before the command's
//! output: a refusal, or a warning that the task id was used before
//! (`crate::ingest::reuse`; the task runs and is recorded all the same).
//! The round trip costs about 0.4–0.7 ms per task (300 `tal run -- true`
//! under `tal record`: 3.4–3.6 ms each, against 3.0 ms without it); it
//! waits 2 s at most for an agent that does not answer.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT received by `tal run` are forwarded
//! to the command. If no agent is reachable, or it goes away, `tal run`
//! warns once on stderr and runs the command all the same: recording never
//! makes a task fail.

use crate::client::{refusals, resolve_socket, AgentConn, EventLine};
use crate::clock::{mono_ns, ns_to_secs, wall_ns};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// A validated `tal run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The task id.
    pub task_id: String,
    /// `task_type` attribute.
    pub task_type: String,
    /// Backend name for the task's events after TaskCreated.
    pub backend: String,
    /// Explicit socket.
    pub socket: Option<PathBuf>,
    /// The command.
    pub command: Vec<OsString>,
}

static CHILD: AtomicI32 = AtomicI32::new(0);

/// The signal handler: passes `sig` on to the command (a system call and
/// an atomic load: async-signal-safe).
extern "C" fn forward(sig: libc::c_int) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(CHILD.load(Ordering::Relaxed));
    if let (Some(pid), Some(sig)) = (pid, Signal::from_named_raw(sig)) {
        let _ = kill_process(pid, sig);
    }
}

/// `SIGSEGV`-style name of a signal.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

/// `exec:ENOENT`-style error type of a failed spawn.
fn exec_error_type(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EACCES) => "EACCES",
        Some(libc::ENOEXEC) => "ENOEXEC",
        Some(libc::ENOTDIR) => "ENOTDIR",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(n) => return format!("exec:errno{n}"),
        None => "unknown",
    };
    format!("exec:{name}")
}

/// The agent connection, which stops being used after its first failure.
struct Reporter {
    conn: Option<AgentConn>,
}

impl Reporter {
    fn send(&mut self, line: &EventLine) {
        if let Some(c) = self.conn.as_mut() {
            if let Err(e) = c.send(&line.to_line()) {
                eprintln!("tal run: {e}; the task runs on unrecorded");
                self.conn = None;
            }
        }
    }

    /// Has the agent answer every line sent so far, and says what it
    /// answered (see [`AgentConn::sync`]): a task id used again is said
    /// before the command starts.
    fn sync(&mut self) {
        if let Some(c) = self.conn.as_mut() {
            match c.sync(Duration::from_secs(2)) {
                Ok(replies) => say(&replies),
                Err(e) => {
                    eprintln!("tal run: {e}; the task runs on unrecorded");
                    self.conn = None;
                }
            }
        }
    }

    fn finish(self) {
        if let Some(c) = self.conn {
            match c.finish(Duration::from_secs(5)) {
                Ok(replies) => say(&replies),
                Err(e) => eprintln!("tal run: {e}"),
            }
        }
    }
}

/// The agent's refusals and warnings, on stderr.
fn say(replies: &[String]) {
    for r in refusals(replies) {
        eprintln!("tal run: the agent refused an event: {r}");
    }
    for w in crate::client::warnings(replies) {
        eprintln!("tal run: warning: {w}");
    }
}

fn read_proc_io(pid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((get("read_bytes:")?, get("write_bytes:")?))
}

/// Runs the task; returns the exit code for `tal run`.
pub fn run(cfg: RunConfig) -> anyhow::Result<i32> {
    let conn = match resolve_socket(cfg.socket.clone()).and_then(AgentConn::connect) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("tal run: {e}; running the command without recording it");
            None
        }
    };
    let mut rep = Reporter { conn };
    let exe = cfg.command[0].to_string_lossy().into_owned();
    let base_attrs = vec![
        ("executable".to_string(), json!(exe)),
        ("task_type".to_string(), json!(cfg.task_type)),
    ];
    let ev = |t: &str, backend: Option<&str>, attrs: Vec<(String, Value)>| EventLine {
        event_type: t.into(),
        task_id: Some(cfg.task_id.clone()),
        backend: backend.map(String::from),
        event_time: Some(ns_to_secs(wall_ns())),
        attributes: attrs,
        fields: vec![],
    };
    rep.send(&ev("TaskCreated", None, base_attrs.clone()));
    rep.send(&ev("TaskSubmitted", Some(&cfg.backend), base_attrs.clone()));
    rep.sync();

    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        crate::sys::forward_with(s, forward);
    }
    // The duration counts from just before the spawn: the child may run
    // (and even finish a short sleep's first milliseconds) before `spawn`
    // returns, and a task's duration must not come out shorter than its
    // process's life.
    let started_mono = mono_ns();
    let child = Command::new(&cfg.command[0])
        .args(&cfg.command[1..])
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tal run: cannot run '{exe}': {e}");
            // As RHAPSODY's own backends report a task that fails to
            // launch: TaskStarted (no pid: nothing ran), then TaskFailed,
            // so that started minus finished never goes negative.
            rep.send(&ev("TaskStarted", Some(&cfg.backend), base_attrs.clone()));
            let mut failed = ev("TaskFailed", Some(&cfg.backend), base_attrs.clone());
            failed
                .fields
                .push(("error_type".into(), json!(exec_error_type(&e))));
            rep.send(&failed);
            rep.finish();
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pid = child.id() as i32;
    CHILD.store(pid, Ordering::Relaxed);
    let mut started_attrs = base_attrs.clone();
    started_attrs.push(("pid".into(), json!(pid)));
    rep.send(&ev("TaskStarted", Some(&cfg.backend), started_attrs));

    let exit = wait_for_exit(pid);
    CHILD.store(0, Ordering::Relaxed);
    drop(child);

    let mut attrs = base_attrs;
    attrs.push(("pid".into(), json!(pid)));
    let (state, error_type, code) = exit.outcome(&mut attrs);
    let end_mono = exit.mono_ns;
    let mut end = ev(state, Some(&cfg.backend), attrs);
    end.fields.push((
        "duration_seconds".into(),
        json!((end_mono - started_mono) as f64 / 1e9),
    ));
    if let Some(e) = error_type {
        end.fields.push(("error_type".into(), json!(e)));
    }
    rep.send(&end);
    rep.finish();
    Ok(code)
}

/// How the command ended: when, its I/O, its wait status and rusage.
#[derive(Debug)]
struct Exit {
    /// When it exited (monotonic ns).
    mono_ns: u64,
    /// Its read and write bytes (`/proc/PID/io`), if readable.
    io: Option<(u64, u64)>,
    /// Its wait status and resource use; `None` if it could not be reaped.
    reaped: Option<(libc::c_int, crate::sys::Usage)>,
}

/// Waits for `pid` to exit without reaping it, reads its I/O while it is
/// still there to read, then reaps it.
fn wait_for_exit(pid: i32) -> Exit {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        use rustix::process::{waitid, WaitId, WaitIdOptions};
        let opts = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
        while let Err(rustix::io::Errno::INTR) = waitid(WaitId::Pid(p), opts) {}
    }
    let mono_ns = mono_ns();
    let io = read_proc_io(pid);
    Exit {
        mono_ns,
        io,
        reaped: crate::sys::reap_with_usage(pid).ok(),
    }
}

impl Exit {
    /// The terminal event's type, error type and `tal run`'s exit status
    /// (a shell's: the command's code, or 128 + its signal); adds the exit
    /// code or signal, the CPU times, peak RSS and I/O bytes to `attrs`.
    fn outcome(&self, attrs: &mut Vec<(String, Value)>) -> (&'static str, Option<String>, i32) {
        let (status, usage) = self.reaped.unwrap_or_default();
        let unknown = ("TaskFailed", Some("unknown".to_string()), 1);
        let ending = if self.reaped.is_none() {
            unknown
        } else if libc::WIFEXITED(status) {
            let c = libc::WEXITSTATUS(status);
            attrs.push(("exit_code".into(), json!(c)));
            if c == 0 {
                ("TaskCompleted", None, 0)
            } else {
                ("TaskFailed", Some(format!("exit:{c}")), c)
            }
        } else if libc::WIFSIGNALED(status) {
            let s = libc::WTERMSIG(status);
            attrs.push(("signal".into(), json!(signal_name(s))));
            (
                "TaskFailed",
                Some(format!("signal:{}", signal_name(s))),
                128 + s,
            )
        } else {
            unknown
        };
        let secs = |ns: u64| ns as f64 / 1e9;
        attrs.push(("cpu_user_seconds".into(), json!(secs(usage.user_ns))));
        attrs.push(("cpu_system_seconds".into(), json!(secs(usage.sys_ns))));
        attrs.push(("max_rss_bytes".into(), json!(usage.max_rss_bytes)));
        if let Some((r, w)) = self.io {
            attrs.push(("read_bytes".into(), json!(r)));
            attrs.push(("write_bytes".into(), json!(w)));
        }
        ending
    }
}
