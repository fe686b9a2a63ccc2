//! The wrapped command: started as its shell would start it, reaped, and
//! run unrecorded when the log cannot be made.
#![allow(unsafe_code)]

use super::signals::{kill, wait_signal, Signals, STOP_REQUEST_SIGNAL};
use super::RecordConfig;
use crate::agent::affinity::CpuMask;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Exit status of a wait status, shell-style.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Non-blocking wait for `pid`; its exit code if it has ended.
pub(super) fn try_reap(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: plain syscall with a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| exit_code(status))
}

pub(super) fn reap_blocking(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: plain syscall with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return exit_code(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

/// The wrapped command as its shell would start it: tal's original CPU
/// affinity and signal mask, SIGXFSZ at its default, and the session in its
/// environment. `None` without a command.
pub(super) fn wrapped_command(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    old_mask: libc::sigset_t,
) -> Option<Command> {
    let (prog, args) = cfg.command.split_first()?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("TAL_SESSION_ID", &cfg.session_id)
        .env("TAL_NODE_ID", &cfg.node_id);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe syscalls (sched_setaffinity, signal, sigprocmask).
    unsafe {
        cmd.pre_exec(move || {
            let _ = orig_mask.apply();
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut());
            Ok(())
        });
    }
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
        match wait_signal(&signals.all, Some(Duration::from_millis(200))) {
            Some(libc::SIGCHLD) | None => {}
            Some(STOP_REQUEST_SIGNAL) => {}
            Some(sig) => kill(pid, sig),
        }
    }
}
