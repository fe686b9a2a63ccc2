//! The wrapped command: started as its shell would start it, reaped, and
//! run unrecorded when the log cannot be made.

use super::signals::{kill, Signals, STOP_REQUEST_SIGNAL};
use super::RecordConfig;
use crate::agent::affinity::CpuMask;
use crate::sys::SigSet;
use rustix::io::Errno;
use rustix::process::{waitpid, Pid, WaitOptions, WaitStatus};
use std::process::Command;
use std::time::Duration;

/// Exit status of a wait status, shell-style.
fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// One `waitpid` of `pid`, retried on EINTR: its exit code if it has ended
/// (`Ok(None)`: not yet, with `NOHANG`).
fn wait_once(pid: libc::pid_t, opts: WaitOptions) -> Result<Option<i32>, Errno> {
    let pid = Pid::from_raw(pid).ok_or(Errno::CHILD)?;
    loop {
        match waitpid(Some(pid), opts) {
            Ok(r) => return Ok(r.map(|(_, status)| exit_code(status))),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Non-blocking wait for `pid`; its exit code if it has ended.
pub(super) fn try_reap(pid: libc::pid_t) -> Option<i32> {
    wait_once(pid, WaitOptions::NOHANG).ok().flatten()
}

/// Waits for `pid` to end: its exit code (1 if it cannot be waited for).
pub(super) fn reap_blocking(pid: libc::pid_t) -> i32 {
    wait_once(pid, WaitOptions::empty())
        .ok()
        .flatten()
        .unwrap_or(1)
}

/// The wrapped command as its shell would start it: tal's original CPU
/// affinity and signal mask, SIGXFSZ at its default, and the session in its
/// environment. `None` without a command.
pub(super) fn wrapped_command(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    old_mask: SigSet,
) -> Option<Command> {
    let (prog, args) = cfg.command.split_first()?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("TAL_SESSION_ID", &cfg.session_id)
        .env("TAL_NODE_ID", &cfg.node_id);
    crate::sys::exec_as_started(&mut cmd, orig_mask.as_set(), old_mask, &[libc::SIGXFSZ]);
    Some(cmd)
}

/// Starts the wrapped command: its pid, or, when it cannot start, the
/// status a shell gives (127 not found, else 126) after saying why.
pub(super) fn spawn_wrapped(cmd: &mut Command) -> Result<libc::pid_t, i32> {
    match cmd.spawn() {
        Ok(c) => Ok(c.id() as libc::pid_t),
        Err(e) => {
            eprintln!(
                "tal: cannot run '{}': {e}",
                cmd.get_program().to_string_lossy()
            );
            Err(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// Runs the wrapped command without recording (the log could not be
/// created: `why`), forwarding stop signals to it; its exit status.
pub(super) fn run_unrecorded(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    signals: &Signals,
    why: &anyhow::Error,
) -> i32 {
    eprintln!("tal: {why}; running the command without recording");
    let Some(mut cmd) = wrapped_command(cfg, orig_mask, signals.old_mask) else {
        return 0;
    };
    let pid = match spawn_wrapped(&mut cmd) {
        Ok(pid) => pid,
        Err(code) => return code,
    };
    loop {
        if let Some(code) = try_reap(pid) {
            return code;
        }
        match signals.all.wait(Some(Duration::from_millis(200))) {
            Some(libc::SIGCHLD) | None => {}
            Some(STOP_REQUEST_SIGNAL) => {}
            Some(sig) => kill(pid, sig),
        }
    }
}
