//! The signals `tal record` takes: blocked in every thread from the start
//! and taken synchronously by the main thread (so no handler runs on the
//! sampling threads), and the few moments where a handler that exits at
//! once is armed instead. The calls themselves are in [`crate::sys`].

use crate::sys::{self, SigSet};
use rustix::process::{kill_process, Pid, Signal};

/// The signal a `{"op": "stop"}` request raises in the agent process (and
/// that a site script may send as well): finalise as on SIGTERM.
pub const STOP_REQUEST_SIGNAL: libc::c_int = libc::SIGUSR1;

pub(super) fn request_stop() {
    // Every thread blocks this signal and the main thread takes it with
    // sigwaitinfo. (An async-signal-safe system call: this runs on the
    // listener's thread.)
    let _ = kill_process(rustix::process::getpid(), Signal::USR1);
}

/// The signals that end a recording.
pub(super) const STOP_SIGNALS: [libc::c_int; 4] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    STOP_REQUEST_SIGNAL,
];

/// The signals tal takes, blocked in the thread that made this (the main
/// thread, before any other starts, so every thread inherits the mask), and
/// the mask from before, which a wrapped command gets back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signals {
    /// The stop signals and SIGCHLD.
    pub(super) all: SigSet,
    /// The signal mask tal was started with.
    pub(super) old_mask: SigSet,
}

impl Signals {
    /// Blocks the stop signals and SIGCHLD.
    pub(super) fn block() -> Self {
        let mut sigs = STOP_SIGNALS.to_vec();
        sigs.push(libc::SIGCHLD);
        let all = SigSet::of(&sigs);
        let old_mask = all.block();
        Self { all, old_mask }
    }
}

/// After the first stop signal, a second SIGINT exits at once: the handler
/// only calls `_exit`, and SIGINT is unblocked for this (the main) thread
/// only; other threads keep it blocked.
pub(super) fn arm_second_sigint() {
    sys::exit_on(&[libc::SIGINT]);
    SigSet::of(&[libc::SIGINT]).unblock();
}

/// From here on SIGINT and SIGTERM end tal at once (status 130): what is
/// left (the last OTLP push) is not worth waiting for when asked to stop.
pub(super) fn arm_exit_signals() {
    let sigs = [libc::SIGINT, libc::SIGTERM];
    sys::exit_on(&sigs);
    SigSet::of(&sigs).unblock();
}

/// A file-size limit (RLIMIT_FSIZE) must surface as a write error that the
/// writer reports, not as SIGXFSZ killing the agent (the wrapped command
/// gets the default back).
pub(super) fn ignore_file_size_limit() {
    sys::ignore(libc::SIGXFSZ);
}

/// Sends `sig` to `pid` (the wrapped command); a signal number that is not
/// a named signal, or a pid that is not a process's, is not sent.
pub(super) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    if let (Some(pid), Some(sig)) = (Pid::from_raw(pid), Signal::from_named_raw(sig)) {
        let _ = kill_process(pid, sig);
    }
}
