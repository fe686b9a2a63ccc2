//! The system calls that `rustix` has no safe wrapper for, each behind a
//! safe function of its own. Every other system call of tal goes through
//! `rustix` (pread, clock_gettime, clock_nanosleep, epoll, eventfd,
//! affinity, waitpid, waitid, kill, umask, SO_PEERCRED, uname, getrandom).
//!
//! What stays on `libc`, and why:
//! - the signal mask, dispositions and `sigtimedwait`: rustix offers them
//!   only in its `runtime` module, unsafe and outside its semver promise;
//! - `pthread_kill`, to interrupt one agent thread's sleep: rustix has no
//!   per-thread signal call;
//! - `getrusage` and `wait4` (a child's rusage): not in rustix;
//! - `clock_gettime` of another process's CPU clocks (the ids
//!   `clock_getcpuclockid` makes): rustix's clock ids cannot name them;
//! - glibc's `posix_fallocate`: it falls back to writing zeros on a file
//!   system without `fallocate(2)`, where rustix's `fallocate` (the raw
//!   call) fails with `EOPNOTSUPP`, so the log's space reservation (and with
//!   it the early disk-full error) works on such file systems too.
//!
//! Outside this module `unsafe` is confined to the log's memory map
//! (`log::writer`), the NVML FFI (`agent::gpu`) and the JSON fast path's
//! word-at-a-time scan (`ingest::fast`), each with its reason in its doc.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members = (1..65).filter(|&s| {
            // SAFETY: sigismember only reads a valid set; an out-of-range
            // signal number is an error return, not undefined behaviour.
            unsafe { libc::sigismember(&self.0, s) == 1 }
        });
        f.debug_set().entries(members).finish()
    }
}

impl SigSet {
    /// The set holding `sigs`.
    pub fn of(sigs: &[libc::c_int]) -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t; an invalid signal number makes
        // sigaddset return an error, nothing worse.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in sigs {
                libc::sigaddset(&mut set, s);
            }
        }
        Self(set)
    }

    /// Blocks the set in the calling thread (threads it starts afterwards
    /// inherit the mask); the mask from before.
    pub fn block(&self) -> SigSet {
        // SAFETY: an all-zero sigset is a valid out-parameter.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointers.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, &mut old) };
        SigSet(old)
    }

    /// Unblocks the set in the calling thread only.
    pub fn unblock(&self) {
        // SAFETY: a valid sigset pointer; a null old-mask pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
    }

    /// Waits for one of the set's signals (which the caller keeps blocked)
    /// for at most `timeout`, for ever with `None`; the signal, or `None`
    /// on timeout. An interruption by another signal waits again.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<libc::c_int> {
        loop {
            // SAFETY: valid sigset and timespec pointers; a null info
            // pointer is allowed.
            let r = unsafe {
                match timeout {
                    None => libc::sigwaitinfo(&self.0, std::ptr::null_mut()),
                    Some(t) => {
                        let ts = libc::timespec {
                            tv_sec: t.as_secs() as libc::time_t,
                            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
                        };
                        libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts)
                    }
                }
            };
            if r > 0 {
                return Some(r);
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return None,
            }
        }
    }
}

extern "C" fn exit_on_signal(_: libc::c_int) {
    // Async-signal-safe: system calls on paths stored beforehand.
    crate::tempfiles::remove_registered();
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(130) };
}

extern "C" fn do_nothing(_: libc::c_int) {}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: sigaction with a zeroed (then filled) struct; every handler
    // passed here is SIG_IGN, SIG_DFL or an async-signal-safe function of
    // this module or of a caller's `extern "C" fn` (see `forward_with`).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// From here on each of `sigs` ends the process at once with status 130
/// (as an interrupted shell command's), once the calling thread
/// unblocks it: the temporaries registered with [`crate::tempfiles`] are
/// removed and its message said first; then `_exit` (no destructor, no
/// buffered output).
pub fn exit_on(sigs: &[libc::c_int]) {
    for &s in sigs {
        set_handler(s, exit_on_signal as *const () as libc::sighandler_t, 0);
    }
}

/// Ignores `sig` (a wrapped command gets the default back before exec:
/// [`exec_as_started`]).
pub fn ignore(sig: libc::c_int) {
    set_handler(sig, libc::SIG_IGN, 0);
}

/// A handler for `sig` that does nothing, without `SA_RESTART`: the signal
/// only interrupts a blocking call (`clock_nanosleep` returns `EINTR`).
pub fn interrupt_with(sig: libc::c_int) {
    set_handler(sig, do_nothing as *const () as libc::sighandler_t, 0);
}

/// Runs `handler` on `sig`, restarting interrupted calls. `handler` must be
/// async-signal-safe: it may only make system calls (rustix's are) and
/// touch atomics.
pub fn forward_with(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    set_handler(
        sig,
        handler as *const () as libc::sighandler_t,
        libc::SA_RESTART,
    );
}

/// Sends `sig` to the thread `t` (not yet joined).
pub fn signal_thread<T>(t: &std::thread::JoinHandle<T>, sig: libc::c_int) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: the pthread_t of a thread that has not been joined (the
    // handle is borrowed, so it cannot be joined meanwhile).
    unsafe { libc::pthread_kill(t.as_pthread_t(), sig) };
}

/// The limit of open files tal started with, when [`raise_nofile`] raised
/// it: its children get it back ([`exec_as_started`]).
static ORIG_NOFILE: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Raises this process's soft limit of open files to its hard limit (at
/// most 1 Mi), as Go's runtime does for its programs, and says the soft
/// limit now. tal waits with epoll, never `select(2)`, so descriptors over
/// 1024 cost it nothing; its task sampler keeps four files open per
/// process it samples (`crate::agent::tasks`), and a node's default soft
/// limit (often 1024) would cap it at a few hundred. The commands tal
/// starts get the original limit back ([`exec_as_started`]).
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.unwrap_or(u64::MAX).min(1 << 20);
    let soft = now.current.unwrap_or(u64::MAX);
    if soft >= hard {
        return soft;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: now.maximum,
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        return soft;
    }
    let _ = ORIG_NOFILE.set(libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: now
            .maximum
            .map_or(libc::RLIM_INFINITY, |m| m as libc::rlim_t),
    });
    hard
}

/// This process's soft limit of open files now.
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

/// Has `cmd`'s child, between fork and exec, take back what tal changed
/// for itself: the CPU affinity `cpus`, the signal mask `mask`, the
/// default disposition of each of `defaults`, and the limit of open files
/// ([`raise_nofile`]).
pub fn exec_as_started(
    cmd: &mut Command,
    cpus: rustix::thread::CpuSet,
    mask: SigSet,
    defaults: &'static [libc::c_int],
) {
    let nofile = ORIG_NOFILE.get().copied();
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (sched_setaffinity, sigaction,
    // pthread_sigmask, setrlimit); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _ = rustix::thread::sched_setaffinity(None, &cpus);
            if let Some(l) = &nofile {
                libc::setrlimit(libc::RLIMIT_NOFILE, l);
            }
            for &s in defaults {
                set_handler(s, libc::SIG_DFL, 0);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut());
            Ok(())
        });
    }
}

fn timeval_ns(t: libc::timeval) -> u64 {
    t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000
}

/// A process's resource use, from `getrusage` or `wait4`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User CPU time, ns.
    pub user_ns: u64,
    /// System CPU time, ns.
    pub sys_ns: u64,
    /// Peak resident memory, bytes.
    pub max_rss_bytes: u64,
}

impl Usage {
    fn of(ru: &libc::rusage) -> Self {
        Self {
            user_ns: timeval_ns(ru.ru_utime),
            sys_ns: timeval_ns(ru.ru_stime),
            max_rss_bytes: ru.ru_maxrss as u64 * 1024,
        }
    }
}

/// This process's resource use (all threads, not its children).
pub fn self_usage() -> Usage {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    Usage::of(&ru)
}

/// Reaps the child `pid` (waiting for it), retrying on `EINTR`: its raw
/// wait status and resource use, or the error.
pub fn reap_with_usage(pid: libc::pid_t) -> io::Result<(libc::c_int, Usage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            return Ok((status, Usage::of(&ru)));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Which CPU clock of a process (`CPUCLOCK_*` in the kernel's encoding of
/// a process clock id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// User and system time, as the scheduler tick charges it (what
    /// `/proc/PID/stat`'s `utime` + `stime` count before scaling).
    Prof = 0,
    /// User time, as the tick charges it.
    Virt = 1,
    /// Time on a CPU, to the nanosecond (the scheduler's
    /// `sum_exec_runtime`): what `clock_getcpuclockid` gives.
    Sched = 2,
}

/// CPU clock `which` of process `pid` (all its threads, live and exited),
/// ns. The kernel checks no permission for reading it (any process of the
/// caller's pid namespace); an error (`EINVAL`) when `pid` names no
/// process. One system call, with no file behind it: about 0.4 µs on a
/// 2-core VM, against 3–6 µs for a `pread` of `/proc/PID/stat`.
pub fn process_cpu_ns(pid: u32, which: CpuClock) -> io::Result<u64> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // MAKE_PROCESS_CPUCLOCK(pid, which): (~pid << 3) | which.
    let id: libc::clockid_t = ((!pid) << 3) | which as libc::clockid_t;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer;
    // a clock id naming no process is an error return.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// glibc's `posix_fallocate`: allocates `len` bytes of `fd` from `offset`
/// (see the module doc for why not rustix's `fallocate`). The error number
/// on failure.
pub fn posix_fallocate(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), i32> {
    // SAFETY: a plain call on a borrowed, open fd.
    let rc =
        unsafe { libc::posix_fallocate(fd.as_raw_fd(), offset as libc::off_t, len as libc::off_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_and_sets_are_plausible() {
        let u = self_usage();
        assert!(u.user_ns + u.sys_ns > 0);
        assert!(u.max_rss_bytes > 1 << 20);
        let s = SigSet::of(&[libc::SIGUSR2, libc::SIGCHLD]);
        assert_eq!(
            format!("{s:?}"),
            format!("{{{}, {}}}", libc::SIGUSR2, libc::SIGCHLD)
        );
    }

    #[test]
    fn process_cpu_clocks_read_another_process_and_fail_when_it_is_gone() {
        let me = std::process::id();
        // The process's clock moves at least as much as this thread's
        // (spun until its own clock says 20 ms: no wall-clock timing).
        let t0 = process_cpu_ns(me, CpuClock::Sched).unwrap();
        let mine = crate::clock::thread_cpu_ns();
        while crate::clock::thread_cpu_ns() - mine < 20_000_000 {
            std::hint::black_box(0u64);
        }
        let t1 = process_cpu_ns(me, CpuClock::Sched).unwrap();
        assert!(t1 - t0 >= 20_000_000, "{t0} {t1}");
        let (prof, virt) = (
            process_cpu_ns(me, CpuClock::Prof).unwrap(),
            process_cpu_ns(me, CpuClock::Virt).unwrap(),
        );
        assert!(virt <= prof && prof > 0, "{virt} {prof}");
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(process_cpu_ns(child.id(), CpuClock::Sched).is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(process_cpu_ns(child.id(), CpuClock::Sched).is_err());
        assert!(process_cpu_ns(0, CpuClock::Sched).is_err());
        assert!(process_cpu_ns(u32::MAX, CpuClock::Sched).is_err());
    }

    #[test]
    fn a_blocked_signal_is_taken_by_wait() {
        std::thread::spawn(|| {
            let set = SigSet::of(&[libc::SIGUSR2]);
            let _old = set.block();
            assert_eq!(set.wait(Some(Duration::from_millis(10))), None);
            // SAFETY: (test) raising a blocked signal at this thread only.
            unsafe { libc::raise(libc::SIGUSR2) };
            assert_eq!(set.wait(Some(Duration::from_secs(5))), Some(libc::SIGUSR2));
            set.unblock();
        })
        .join()
        .unwrap();
    }
}
