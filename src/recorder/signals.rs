//! The signals `tal record` takes: blocked in every thread from the start
//! and taken synchronously by the main thread (so no handler runs on the
//! sampling threads), and the few moments where a handler that exits at
//! once is armed instead.
#![allow(unsafe_code)]

use std::time::Duration;

/// The signal a `{"op": "stop"}` request raises in the agent process (and
/// that a site script may send as well): finalise as on SIGTERM.
pub const STOP_REQUEST_SIGNAL: libc::c_int = libc::SIGUSR1;

pub(super) fn request_stop() {
    // SAFETY: kill(2) of our own process; every thread blocks this signal
    // and the main thread takes it with sigwaitinfo.
    unsafe { libc::kill(libc::getpid(), STOP_REQUEST_SIGNAL) };
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
#[derive(Clone, Copy)]
pub(super) struct Signals {
    /// The stop signals and SIGCHLD.
    pub(super) all: libc::sigset_t,
    /// The signal mask tal was started with.
    pub(super) old_mask: libc::sigset_t,
}

impl Signals {
    /// Blocks the stop signals and SIGCHLD.
    pub(super) fn block() -> Self {
        let mut sigs = STOP_SIGNALS.to_vec();
        sigs.push(libc::SIGCHLD);
        let all = sigset(&sigs);
        // SAFETY: an empty sigset is a valid out-parameter for the old mask.
        let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointers. Threads spawned after this inherit it.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old_mask) };
        Self { all, old_mask }
    }
}

pub(super) fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(130) };
}

/// After the first stop signal, a second SIGINT exits at once.
pub(super) fn arm_second_sigint() {
    // SAFETY: installing a handler that only calls _exit, then unblocking
    // SIGINT for this (the main) thread only; other threads keep it blocked.
    unsafe {
        libc::signal(libc::SIGINT, exit_now as *const () as libc::sighandler_t);
        let set = sigset(&[libc::SIGINT]);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// From here on SIGINT and SIGTERM end tal at once (status 130): what is
/// left (the last OTLP push) is not worth waiting for when asked to stop.
pub(super) fn arm_exit_signals() {
    // SAFETY: installing a handler that only calls _exit, then unblocking
    // the two signals for this (the main) thread only.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            libc::signal(sig, exit_now as *const () as libc::sighandler_t);
        }
        let set = sigset(&[libc::SIGINT, libc::SIGTERM]);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for one of `set`'s signals for at most `timeout`; `None` on timeout.
pub(super) fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<libc::c_int> {
    loop {
        // SAFETY: valid sigset and timespec pointers; a null info pointer is allowed.
        let r = unsafe {
            match timeout {
                None => libc::sigwaitinfo(set, std::ptr::null_mut()),
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                    };
                    libc::sigtimedwait(set, std::ptr::null_mut(), &ts)
                }
            }
        };
        if r > 0 {
            return Some(r);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            _ => return None,
        }
    }
}

/// A file-size limit (RLIMIT_FSIZE) must surface as a write error that the
/// writer reports, not as SIGXFSZ killing the agent (the wrapped command
/// gets the default back).
pub(super) fn ignore_file_size_limit() {
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Sends `sig` to `pid` (the wrapped command).
pub(super) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(pid, sig) };
}
