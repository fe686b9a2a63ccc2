//! The floor of sampling task processes: what reading each process costs,
//! with nothing else. For every pid it is given, once per interval, on
//! absolute deadlines, on its thread `task-floor`, it makes the reads tal's
//! task sampler makes of a process that ran (src/agent/tasks.rs): the
//! process's three CPU clocks (`Sched`, `Prof`, `Virt`), a `pread` of
//! `statm`, `io` and `task/PID/children` (kept open) into one buffer, and
//! an `fstat` of `task/` (kept open): no parsing, no gate, no hand-off. `scripts/bench-task-sampling.sh` runs it beside tal
//! on the same processes and interval: tal's task thread per process and
//! sample against this one's says what tal adds to the reads themselves,
//! which cost most when done once a second, cold (more than in a hot loop).
//!
//! Usage: task_floor INTERVAL_SECONDS PID…   (runs until SIGTERM/SIGINT)
#![allow(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tal::sys::{process_cpu_ns, CpuClock};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let interval: f64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .expect("usage: task_floor INTERVAL_SECONDS PID…");
    let pids: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let reader = std::thread::Builder::new()
        .name("task-floor".into())
        .spawn(move || {
            let procs: Vec<(u32, Vec<File>, Option<File>)> = pids
                .iter()
                .map(|&p| {
                    let files = [
                        format!("/proc/{p}/statm"),
                        format!("/proc/{p}/io"),
                        format!("/proc/{p}/task/{p}/children"),
                    ]
                    .iter()
                    .filter_map(|f| File::open(f).ok())
                    .collect();
                    (p, files, File::open(format!("/proc/{p}/task")).ok())
                })
                .collect();
            let mut buf = vec![0u8; 4096];
            let every = Duration::from_secs_f64(interval);
            let mut deadline = Instant::now() + every;
            while !STOP.load(Ordering::Relaxed) {
                if let Some(d) = deadline.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                for (pid, files, task_dir) in &procs {
                    for c in [CpuClock::Sched, CpuClock::Prof, CpuClock::Virt] {
                        let _ = process_cpu_ns(*pid, c);
                    }
                    for f in files {
                        let _ = f.read_at(&mut buf, 0);
                    }
                    if let Some(d) = task_dir {
                        let _ = rustix::fs::fstat(d);
                    }
                }
                deadline += every;
            }
        })
        .expect("the reading thread");
    while !STOP.load(Ordering::Relaxed) && !reader.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
}
