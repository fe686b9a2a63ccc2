//! The overhead floor: the least a 10 Hz /proc sampler can cost. It keeps
//! the same four /proc files open and `pread`s each into a fixed buffer on
//! the same absolute deadlines as `tal record`, pinned to the same CPU, and
//! does nothing else: no parsing, no hand-off, no log. `scripts/bench-overhead.sh`
//! runs it beside tal and divides tal's CPU per sample by this one's.
//!
//! With `FLOOR_WAKE_THREAD=1` it also runs a second thread, `floor-wake`,
//! that sleeps to the same absolute deadlines on the same CPU and does
//! nothing when it wakes: the cost of a thread's wake-up alone, which the
//! GPU benchmark sets beside tal's GPU thread.
//!
//! Usage: floor [INTERVAL_SECONDS]   (runs until SIGTERM/SIGINT)
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    let interval: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("interval in seconds"))
        .unwrap_or(0.1);
    let interval_ns = (interval * 1e9) as i64;
    let cpu = tal::agent::affinity::default_cpu().expect("affinity");
    tal::agent::affinity::pin_current_thread(cpu).expect("pin");
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let files: Vec<File> = [
        "/proc/stat",
        "/proc/meminfo",
        "/proc/diskstats",
        "/proc/net/dev",
    ]
    .iter()
    .map(|p| File::open(p).expect(p))
    .collect();
    let mut buf = vec![0u8; 64 << 10];
    let mut deadline = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut deadline) };
    let wake = std::env::var_os("FLOOR_WAKE_THREAD").is_some_and(|v| v == "1");
    let waker = wake.then(|| {
        let start = deadline;
        std::thread::Builder::new()
            .name("floor-wake".into())
            .spawn(move || {
                tal::agent::affinity::pin_current_thread(cpu).expect("pin");
                let mut d = start;
                while !STOP.load(Ordering::Relaxed) {
                    sleep_until(&d);
                    next(&mut d, interval_ns);
                }
            })
            .expect("thread")
    });
    let mut samples = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        sleep_until(&deadline);
        for f in &files {
            // SAFETY: the buffer is valid for its length; the fd is open.
            unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        }
        samples += 1;
        next(&mut deadline, interval_ns);
    }
    if let Some(w) = waker {
        let _ = w.join();
    }
    eprintln!("floor: {samples} samples");
}

/// Sleeps to an absolute deadline on the monotonic clock.
fn sleep_until(deadline: &libc::timespec) {
    // SAFETY: valid timespec; absolute sleep on the monotonic clock.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            deadline,
            std::ptr::null_mut(),
        )
    };
}

/// Moves a deadline on by one interval.
fn next(deadline: &mut libc::timespec, interval_ns: i64) {
    #[allow(clippy::unnecessary_cast)] // c_long is i32 on some targets
    let ns = deadline.tv_nsec as i64 + interval_ns;
    deadline.tv_sec += (ns / 1_000_000_000) as libc::time_t;
    deadline.tv_nsec = (ns % 1_000_000_000) as libc::c_long;
}
