//! The task sampler (`tal-tasks`): what each running task's processes use,
//! over time, not only the totals its terminal event carries.
//!
//! **Which tasks.** A task whose TaskStarted names its process (a `pid`
//! attribute: `tal run` sends one, and so can a runtime) is sampled from
//! then on, with every descendant of that process, until its terminal
//! event, or until all its processes have exited. The ingest listener,
//! which parses every event anyway, hands such starts and ends to this
//! thread through a ring ([`TaskWatch`]), and this thread tells it, through
//! a ring back ([`Forget`]), of each start it refused and each task it
//! dropped, so that the listener keeps only the tasks sampled here: a
//! bounded set that never forgets an end ([`TaskKeys`]). Only processes of the agent's own
//! user are sampled (any, when the agent runs as root): a client cannot
//! point tal at another user's processes. Tasks whose id is longer than
//! [`MAX_TASK_ID_BYTES`] are not sampled. At most [`MAX_TASKS`] tasks and
//! [`MAX_PROCESSES`] processes in all ([`MAX_PROCESSES_PER_TASK`] per task)
//! are sampled at once, each process with four kept-open files, and never
//! more than half of the descriptors the agent may open ([`process_cap`];
//! the agent raises its soft limit to the hard one at start); beyond
//! that, tasks and processes are counted as refused, not sampled (each
//! time they are refused); a process refused at the cap is taken when a
//! slot frees while it lives.
//!
//! **What is read**, each task interval, for every process of the task.
//! First its CPU clock (`clock_gettime` of the clock `clock_getcpuclockid`
//! names: all its threads' time on a CPU, to the nanosecond; no file, one
//! system call of about 0.4 µs). A process whose clock has not moved since
//! the previous sample has not run: it cannot have used CPU, done I/O,
//! forked or grown, so its previous values stand and nothing else of it is
//! read. Most processes of a task are such (the wrapper shell, `srun`, a
//! launcher waiting for its workers, a many-threaded runtime between
//! steps). A process that ran is read whole, each with one system call,
//! its files kept open while it lives (as the node sources are): its
//! tick-counted user + system and user clocks (`Prof`, `Virt`), which split
//! its run time into user and system time the way `/proc/PID/stat`'s
//! scaling does ([`split_cpu`]); `statm` (resident pages); an `fstat` of
//! its `task/` directory, whose link count is 2 + its threads (only in
//! rounds when a thread may have been made or ended on the node, which
//! `/proc/loadavg` tells: see [`TaskAgent::look_at_node`]); and `io`
//! (`read_bytes`, `write_bytes`: what reached storage). A clock is read by
//! pid: the kept-open files read after it, which fail once the process is
//! gone, say that it was this process's and not a successor's with the
//! same pid. Why not `/proc/PID/stat`, which has CPU, threads and RSS in
//! one file: it formats 52 fields, and costs 6.0 µs cold (once a second),
//! against 2.3 µs for `statm`, 1.1 µs for the `fstat` and 0.4–0.5 µs per
//! clock (measured one by one on a 2-core VM, 256 processes); it is read
//! once, when a process is found (its start time). `statm` is also the
//! exact figure on kernels that sum the memory counters' per-CPU parts
//! for it (Linux 6.18 here: `__percpu_counter_sum` shows in a profile of
//! this thread), where `stat`'s resident pages leave those parts out and
//! can lag on a node of many CPUs; that sum's cost grows with the node's
//! CPUs, which a 2-core VM cannot show. (A resident set the
//! kernel shrinks while the process sleeps shows at its next run.) The
//! task's sample sums them: [`TaskResources`]. CPU is the time used since
//! the task's previous sample, as % of one CPU (a task busy on two cores
//! shows 200); a process that starts between two samples counts from its
//! start, one found later (see below) from the sample after it is found,
//! so that no sample shows CPU time from before its interval. A process
//! that exits between two samples takes the CPU time it used since the
//! previous sample with it (what `tal run` reports at the task's end, from
//! the kernel's accounting of its children, has it).
//!
//! Measured side by side with an agent that samples no task and with the
//! sampler before this design (`scripts/bench-task-sampling.sh`, 64 tasks
//! of 4 processes, a 2-core VM): 1.38 µs of the task thread per process
//! and sample beyond its wake-up at 1 s, 1.22 µs at 0.1 s, with sleeping
//! processes (0.60 and 0.57 of the previous sampler's, which read
//! `schedstat`, `stat`, `io` and `children`); processes that ran in every
//! interval cost 6.8–8.6 µs each (0.72–0.83 of the previous sampler's):
//! 0.73–0.80 of what the same reads alone cost, once a second and cold
//! (`examples/task_floor`, side by side: 8.8–10.7 µs per process). Trees
//! of one computing process and three waiting ones: 3.16 µs per process.
//! Counting threads only when `/proc/loadavg` says some may have changed
//! took processes that ran in every interval from 7.78 to 6.79 µs at 1 s
//! and from 7.51 to 6.91 µs at 0.1 s (side by side with the build before
//! it), and left the other cases as they were.
//!
//! **Finding descendants, and why this way.** A process that ran also has
//! `/proc/PID/task/PID/children` read (kept open): the children of its
//! main thread, which is where shells, `srun`, `mpirun` and Python's
//! `subprocess` fork from. Only in rounds after a pid was handed out in
//! tal's pid namespace, though (the last field of `/proc/loadavg`, read
//! once per round): with no new pid there is no new process, and on a
//! compute node whose tasks run for minutes that is most rounds. Measured
//! on a 2-core VM: one `pread` of a `children` file costs 0.34 µs hot and
//! 1.3 µs cold; a scan of the whole of `/proc` (`getdents`, no file read)
//! costs 32 µs with 81 processes on the node and grows with every process
//! of the node, not of the task. So the scan would dominate the budget of
//! 5 µs per task process at 0.1 s, while the `children` reads add a
//! fraction to what the process costs anyway. As a safety net for children
//! forked by other threads (and kernels without `children` files), the
//! thread also scans `/proc` every [`SCAN_EVERY`] (every sample without
//! `children` files), reading `stat` only of the pids it has not seen in
//! the previous scan, and attaches those whose parent is a task's process.
//! A process whose parent exited before it was found (re-parented to init)
//! is not the task's any more, and is not found. Each process is looked
//! at, read, and its children looked for in one pass over the task (new
//! ones join the pass, so grandchildren are found in the same round).
//!
//! **Cost.** Nothing here runs without tasks: the thread parks until the
//! first one starts, and again when the last one ends. It samples on its
//! own deadlines (parked with a timeout, so that a start is taken at once)
//! and
//! hands fixed-size [`TaskSample`]s to the dispatcher through its own ring,
//! so it never delays the node samples. The only allocations after a task
//! starts are those of a new process (its paths and buffers).
//!
//! **Layout.** The listener's side of the hand-over ([`TaskKeys`], the
//! rings) is `watch.rs`, on the listener's thread. The sampler here is
//! one piece past 1,000 lines with its tests: finding a task's processes,
//! reading them, and the skip of processes that did not run all work on
//! one per-process state (its kept-open files and last readings), in the
//! one order per round that the cost figures above were measured on; the
//! `/proc` line parsers it uses are small and its own.

mod watch;

use super::kept::KeptFile;
use crate::clock::mono_ns;
use crate::record::TaskResources;
use crate::ring::{Consumer, Producer, PushError};
use crate::sys::{self, CpuClock};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;
pub use watch::{watch_rings, Forget, TaskKeys, TaskWatch, WatchRx, WatchTx};

/// Tasks sampled at once, at most.
pub const MAX_TASKS: usize = 1024;
/// Processes sampled at once over all tasks, at most (four open files each;
/// fewer when the limit of open files is low: see [`process_cap`]).
pub const MAX_PROCESSES: usize = 4096;
/// Files the sampler keeps open per process.
pub const FILES_PER_PROCESS: u64 = 4;
/// Descriptors left to the rest of the agent before the sampler takes its
/// share (see [`process_cap`]).
pub const FD_RESERVE: u64 = 256;

/// How many processes the sampler may hold open under a soft limit of
/// `nofile` open files: half of what is left after [`FD_RESERVE`], so that
/// the agent's clients, its log and its conversion at the end always keep
/// the other half; at most [`MAX_PROCESSES`].
pub fn process_cap(nofile: u64) -> usize {
    let share = nofile.saturating_sub(FD_RESERVE) / 2 / FILES_PER_PROCESS;
    usize::try_from(share)
        .unwrap_or(usize::MAX)
        .min(MAX_PROCESSES)
}
/// Processes of one task sampled at most.
pub const MAX_PROCESSES_PER_TASK: usize = 256;
/// Longest task id sampled, bytes: a start whose id is longer is refused
/// (a line may be 64 KiB, and the ring and the sampler hold up to 2048
/// ids: this keeps them within 1 MiB).
pub const MAX_TASK_ID_BYTES: usize = 512;
/// How often the safety-net scan of `/proc` runs (see the module doc).
pub const SCAN_EVERY: Duration = Duration::from_secs(10);

/// One task's sample, for the dispatcher.
#[derive(Debug, Clone)]
pub struct TaskSample {
    /// The task.
    pub task_id: Arc<str>,
    /// When (monotonic ns): the deadline it was taken for.
    pub at_ns: u64,
    /// What its processes used.
    pub values: TaskResources,
}

/// What the task sampler counts (relaxed atomics; read for the snapshot).
#[derive(Debug, Default)]
pub struct TaskCounters {
    /// Task samples taken.
    pub samples: AtomicU64,
    /// Task samples lost to a full ring.
    pub dropped: AtomicU64,
    /// Tasks not sampled: too many at once, or their process was gone or
    /// not this user's when the start came.
    pub tasks_refused: AtomicU64,
    /// Processes not sampled: over the caps, or not this user's.
    pub processes_refused: AtomicU64,
    /// Task starts or ends lost to a full watch ring.
    pub watches_dropped: AtomicU64,
    /// CPU time of the sampler's thread, ns (updated after each round).
    pub thread_cpu_ns: AtomicU64,
}

/// The counters as the metric line names them (`task_` prefixed), in
/// [`TaskCounters::values`] order.
pub const COUNTER_NAMES: [&str; 5] = [
    "task_samples_taken",
    "task_samples_dropped",
    "task_tasks_refused",
    "task_processes_refused",
    "task_watches_dropped",
];

impl TaskCounters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters, in [`COUNTER_NAMES`] order.
    pub fn values(&self) -> Vec<u64> {
        [
            &self.samples,
            &self.dropped,
            &self.tasks_refused,
            &self.processes_refused,
            &self.watches_dropped,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect()
    }
}

/// The fields of `/proc/PID/stat` the sampler uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields {
    /// Parent pid.
    pub ppid: u32,
    /// User CPU, clock ticks.
    pub utime: u64,
    /// System CPU, clock ticks.
    pub stime: u64,
    /// Threads.
    pub threads: u32,
    /// Start time, clock ticks since boot.
    pub start: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/PID/stat` (the command name may hold spaces and
/// parentheses: the fields start after the last `)`).
pub fn parse_stat(b: &[u8]) -> Option<StatFields> {
    let close = b.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(&b[close + 1..]).ok()?;
    // Field 3 (state) is index 0 here.
    let mut f = rest.split_ascii_whitespace();
    let mut nth = |skip: usize| -> Option<u64> { f.nth(skip)?.parse().ok() };
    let ppid = nth(1)?; // field 4
    let utime = nth(9)?; // field 14
    let stime = nth(0)?; // 15
    let threads = nth(4)?; // 20
    let start = nth(1)?; // 22
    let rss_pages = nth(1)?; // 24
    Some(StatFields {
        ppid: u32::try_from(ppid).ok()?,
        utime,
        stime,
        threads: u32::try_from(threads).ok()?,
        start,
        rss_pages,
    })
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io`.
pub fn parse_io(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let (mut r, mut w) = (None, None);
    for l in s.lines() {
        if let Some(v) = l.strip_prefix("read_bytes:") {
            r = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("write_bytes:") {
            w = v.trim().parse().ok();
        }
    }
    Some((r?, w?))
}

/// The pids of a `children` file, onto `out`.
pub fn parse_pids(b: &[u8], out: &mut Vec<u32>) {
    for p in b.split(|c| c.is_ascii_whitespace()) {
        if let Some(pid) = std::str::from_utf8(p).ok().and_then(|s| s.parse().ok()) {
            out.push(pid);
        }
    }
}

/// What `/proc/loadavg` says of the node's processes: the threads that
/// exist (the total after the `/` of its fourth field, every pid
/// namespace's), and the pid most recently handed out in tal's pid
/// namespace (its last field: to a process or a thread, here or in a
/// namespace below).
pub fn parse_loadavg(b: &[u8]) -> Option<NodeMarks> {
    let mut f = std::str::from_utf8(b)
        .ok()?
        .split_ascii_whitespace()
        .skip(3);
    let threads = f.next()?.split_once('/')?.1.parse().ok()?;
    let last_pid = f.next()?.parse().ok()?;
    Some(NodeMarks { threads, last_pid })
}

/// See [`parse_loadavg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMarks {
    pub threads: u64,
    pub last_pid: u64,
}

/// Resident pages, the second field of `/proc/PID/statm`.
pub fn parse_statm_rss(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The threads of the process whose `/proc/PID/task` directory `dir` is:
/// the kernel gives that directory 2 + the process's threads as its link
/// count (one `fstat`, no file to format and parse).
fn threads_of(dir: &File) -> Option<u32> {
    let st = rustix::fs::fstat(dir).ok()?;
    u32::try_from(st.st_nlink.checked_sub(2)?).ok()
}

/// Whether this process is in the initial pid namespace: its `NSpid`
/// (in `/proc/self/status`) names one pid. False when that cannot be read.
fn in_init_pid_ns() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("NSpid:"))?;
            Some(l["NSpid:".len()..].split_ascii_whitespace().count() == 1)
        })
        .unwrap_or(false)
}

/// Splits `run_ns` of CPU time into user and system time as the tick
/// counted them: `d_user` of `d_total` ticked ns in the interval, or the
/// process's whole `user` of `total` when no tick fell in the interval, or
/// all user time when none ever did (what the kernel's own scaling of
/// `utime` and `stime` does).
pub fn split_cpu(run_ns: u64, d_user: u64, d_total: u64, user: u64, total: u64) -> (u64, u64) {
    let (u, t) = if d_total > 0 {
        (d_user.min(d_total), d_total)
    } else if total > 0 {
        (user.min(total), total)
    } else {
        (1, 1)
    };
    let user_ns = (u128::from(run_ns) * u128::from(u) / u128::from(t)) as u64;
    (user_ns, run_ns - user_ns)
}

/// One process of a task, its files kept open.
#[derive(Debug)]
struct Proc {
    pid: u32,
    statm: KeptFile,
    io: Option<KeptFile>,
    children: Option<KeptFile>,
    /// `/proc/PID/task`, for its link count (see [`threads_of`]).
    task_dir: Option<File>,
    /// Its CPU clocks at the previous sample, ns: time on a CPU (`Sched`),
    /// and the tick's user + system (`Prof`) and user (`Virt`).
    sched_ns: u64,
    prof_ns: u64,
    virt_ns: u64,
    /// `Sched` at this round's look.
    sched_now: u64,
    /// Storage bytes read and written at the previous sample.
    io_prev: Option<(u64, u64)>,
    /// Whether it may have changed since the previous sample (see
    /// [`Proc::look`]).
    ran: bool,
    /// Resident pages and threads at its last read.
    rss_pages: u64,
    threads: u32,
    /// The agent's `threads_gen` when its threads were last counted
    /// (`u64::MAX`: never; see [`TaskAgent::look_at_node`]).
    threads_gen: u64,
}

impl Proc {
    /// Opens process `pid` if it is one tal may sample (see the module
    /// doc). A process that started at or after `born_after` (clock ticks
    /// since boot) counts its CPU time and I/O from zero (all of it is
    /// the task's current interval's); any other from now.
    fn open(pid: u32, me: Option<u32>, born_after: Option<u64>) -> Option<Self> {
        let dir = format!("/proc/{pid}");
        if let Some(me) = me {
            let st = rustix::fs::stat(dir.as_str()).ok()?;
            if st.st_uid != me {
                return None;
            }
        }
        // Its files first, then `stat` once (its start time and threads)
        // and its clocks, both by pid, then `statm` through its kept-open
        // file: that read fails if the process the files were opened on is
        // gone, so what was read by pid was this process's, not a
        // successor's.
        let mut statm = KeptFile::open_sized(format!("{dir}/statm"), 128).ok()?;
        let task_dir = File::open(format!("{dir}/task")).ok();
        let children = KeptFile::open_sized(format!("{dir}/task/{pid}/children"), 256).ok();
        let mut io = KeptFile::open_sized(format!("{dir}/io"), 256).ok();
        let f = parse_stat(&std::fs::read(format!("{dir}/stat")).ok()?)?;
        let clocks = (
            sys::process_cpu_ns(pid, CpuClock::Sched).ok()?,
            sys::process_cpu_ns(pid, CpuClock::Prof).ok()?,
            sys::process_cpu_ns(pid, CpuClock::Virt).ok()?,
        );
        let rss_pages = parse_statm_rss(statm.read().ok()?)?;
        let io_now = io.as_mut().and_then(|k| k.read().ok()).and_then(parse_io);
        if io_now.is_none() {
            io = None;
        }
        let fresh = born_after.is_some_and(|t| f.start >= t);
        let (sched_ns, prof_ns, virt_ns) = if fresh { (0, 0, 0) } else { clocks };
        Some(Self {
            pid,
            statm,
            io,
            children,
            task_dir,
            sched_ns,
            prof_ns,
            virt_ns,
            sched_now: clocks.0,
            io_prev: if fresh { Some((0, 0)) } else { io_now },
            // Its first sample reads everything.
            ran: true,
            rss_pages,
            threads: f.threads,
            threads_gen: u64::MAX,
        })
    }

    /// Whether it may have changed since the previous sample: a process
    /// whose time on a CPU (all its threads', to the nanosecond) has not
    /// moved has not run, so it cannot have used CPU, done I/O, forked or
    /// grown, and its files need not be read. One clock read, no file.
    fn look(&mut self) {
        self.ran = match sys::process_cpu_ns(self.pid, CpuClock::Sched) {
            Ok(ns) => {
                self.sched_now = ns;
                ns != self.sched_ns
            }
            // Gone: the reads of its files will say so.
            Err(_) => true,
        };
    }

    /// Reads a process that ran: its CPU time since the previous sample
    /// (user, system, ns) and its files; `None` when it is gone (its
    /// kept-open files fail once it has exited, whoever has its pid now).
    /// Its threads are counted again only when `threads_gen` moved since
    /// they last were (a thread was made or ended somewhere on the node).
    fn read(&mut self, threads_gen: u64) -> Option<(u64, u64)> {
        let prof = sys::process_cpu_ns(self.pid, CpuClock::Prof).ok()?;
        let virt = sys::process_cpu_ns(self.pid, CpuClock::Virt).ok()?;
        // Read after the clocks: its success says they were this process's.
        self.rss_pages = parse_statm_rss(self.statm.read().ok()?)?;
        if self.threads_gen != threads_gen {
            if let Some(t) = self.task_dir.as_ref().and_then(threads_of) {
                self.threads = t;
            }
            self.threads_gen = threads_gen;
        }
        let run = self.sched_now.saturating_sub(self.sched_ns);
        let cpu = split_cpu(
            run,
            virt.saturating_sub(self.virt_ns),
            prof.saturating_sub(self.prof_ns),
            virt,
            prof,
        );
        (self.sched_ns, self.prof_ns, self.virt_ns) = (self.sched_now, prof, virt);
        Some(cpu)
    }
}

/// A task being sampled.
#[derive(Debug)]
struct Task {
    id: Arc<str>,
    key: u64,
    /// The listener's number for its start.
    seq: u64,
    procs: Vec<Proc>,
    /// Monotonic ns of the previous sample (or of the start).
    last_ns: u64,
    /// Clock ticks since boot at the previous sample: a process that
    /// started after it counts from zero.
    last_ticks: u64,
}

/// The task sampler's thread state.
#[derive(Debug)]
pub struct TaskAgent {
    rx: Consumer<TaskWatch>,
    /// Tasks not (or no longer) sampled, back to the listener.
    forget: Producer<Forget>,
    /// Those the ring back had no room for yet (sized at the start: at
    /// most one per task held and one per start taken; no start is taken
    /// while any wait, see [`TaskAgent::take_watches`]).
    unsent: Vec<Forget>,
    tx: Producer<TaskSample>,
    interval_ns: u64,
    counters: Arc<TaskCounters>,
    stop: Arc<AtomicBool>,
    dispatcher: Thread,
    tasks: Vec<Task>,
    /// Which task each sampled pid belongs to (index into `tasks`).
    owner: HashMap<u32, usize>,
    processes: usize,
    /// Processes sampled at once, at most ([`process_cap`]).
    max_processes: usize,
    /// Whether a child was refused at the cap and a slot has been freed
    /// since: the next round looks for children as if a pid had been handed
    /// out, so that the refused ones take the free slots (they were forked
    /// before, and no new pid would make the round look again).
    refused_waiting: bool,
    /// Whether a sampled process went (or a task ended) this round.
    freed: bool,
    /// This user's uid, unless root (who may sample any process).
    me: Option<u32>,
    ticks_per_sec: u64,
    page_size: u64,
    pids: Vec<u32>,
    scan: Scan,
    /// `/proc/loadavg`, and what it said at the previous round (see
    /// [`TaskAgent::look_at_node`]).
    loadavg: Option<KeptFile>,
    marks: Option<NodeMarks>,
    /// Counts the rounds in which a thread may have been made or ended
    /// on the node (see [`TaskAgent::look_at_node`]).
    threads_gen: u64,
    /// Whether tal is in the initial pid namespace, where `/proc/loadavg`'s
    /// two marks between them see every thread made or ended.
    init_pid_ns: bool,
    /// Whether `/proc` is this process's pid namespace's (see
    /// [`TaskAgent::start`]); `None` until the first task asks.
    proc_ours: Option<bool>,
}

/// The safety-net scan of `/proc`: the pids seen last time.
#[derive(Debug, Default)]
struct Scan {
    seen: HashSet<u32>,
    now: HashSet<u32>,
    fresh: Vec<u32>,
    last_ns: u64,
    primed: bool,
}

impl TaskAgent {
    /// A sampler of the tasks `rx` names, every `interval_ns`, into `tx`
    /// (waking `dispatcher` when the ring is half full).
    pub fn new(
        (rx, forget): WatchRx,
        tx: Producer<TaskSample>,
        interval_ns: u64,
        counters: Arc<TaskCounters>,
        stop: Arc<AtomicBool>,
        dispatcher: Thread,
    ) -> Self {
        let uid = rustix::process::geteuid();
        Self {
            rx,
            forget,
            unsent: Vec::with_capacity(MAX_TASKS + 1),
            tx,
            interval_ns: interval_ns.max(1_000_000),
            counters,
            stop,
            dispatcher,
            tasks: Vec::new(),
            owner: HashMap::new(),
            processes: 0,
            max_processes: process_cap(sys::nofile_limit()),
            refused_waiting: false,
            freed: false,
            me: (!uid.is_root()).then(|| uid.as_raw()),
            ticks_per_sec: rustix::param::clock_ticks_per_second().max(1),
            page_size: rustix::param::page_size() as u64,
            pids: Vec::new(),
            scan: Scan::default(),
            loadavg: KeptFile::open_sized("/proc/loadavg", 128).ok(),
            marks: None,
            threads_gen: 0,
            init_pid_ns: in_init_pid_ns(),
            proc_ours: None,
        }
    }

    /// Reads `/proc/loadavg` once per round. Returns whether any pid was
    /// handed out in tal's pid namespace since the previous round (a
    /// process or thread was made): if not, no task can have a new
    /// process, and no `children` file need be read. True when
    /// `/proc/loadavg` cannot tell.
    ///
    /// Also moves `threads_gen` on when a thread may have been made or
    /// ended since: a thread that is made takes a pid, and one that ends
    /// lowers the node's count of threads, which nothing but a new thread
    /// raises again. When neither mark moved, no process's threads
    /// changed, and a process that ran is not counted again (its `fstat`,
    /// ~1.1 µs cold, is a sixth of what reading it costs). Only in the
    /// initial pid namespace: in any other, a thread made outside tal's
    /// namespace takes no pid that `/proc/loadavg` shows here, and could
    /// hide a task's thread that ended in the same round.
    fn look_at_node(&mut self) -> bool {
        let now = self
            .loadavg
            .as_mut()
            .and_then(|k| k.read().ok())
            .and_then(parse_loadavg);
        let forked = now.is_none() || now.map(|m| m.last_pid) != self.marks.map(|m| m.last_pid);
        if !self.init_pid_ns || now.is_none() || now != self.marks {
            self.threads_gen += 1;
        }
        self.marks = now;
        forked
    }

    /// Samples while there are tasks, parks while there are none, until
    /// `stop` is set. It waits for each deadline parked with a timeout, so
    /// that a task's start (the listener unparks it) is taken at once: its
    /// baseline is then read at its start, not at the next deadline.
    pub fn run(mut self) {
        let mut deadline: Option<u64> = None;
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            self.take_watches();
            if self.tasks.is_empty() {
                deadline = None;
                if self.unsent.is_empty() {
                    std::thread::park();
                } else {
                    // The listener takes them back with its next task event.
                    std::thread::park_timeout(Duration::from_nanos(self.interval_ns));
                }
                continue;
            }
            let d = *deadline.get_or_insert_with(|| mono_ns() + self.interval_ns);
            let now = mono_ns();
            if now < d {
                // Woken early (a start, an end, the stop): look again.
                std::thread::park_timeout(Duration::from_nanos(d - now));
                continue;
            }
            self.sample_all(d);
            self.counters
                .thread_cpu_ns
                .store(crate::clock::thread_cpu_ns(), Ordering::Relaxed);
            let mut next = d + self.interval_ns;
            let now = mono_ns();
            if now >= next + self.interval_ns {
                next += (now - next) / self.interval_ns * self.interval_ns;
            }
            deadline = Some(next);
        }
        self.dispatcher.unpark();
    }

    fn boot_ticks(&self) -> u64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        (t.tv_sec as u64) * self.ticks_per_sec
            + (t.tv_nsec as u64) * self.ticks_per_sec / 1_000_000_000
    }

    /// Applies the starts and ends the listener sent. None is taken while
    /// the ring back is full (they wait in theirs): so the tasks the
    /// listener keeps stay bounded (see [`TaskKeys`]).
    fn take_watches(&mut self) {
        while self.send_unsent() {
            let Some(w) = self.rx.pop() else { break };
            match w {
                TaskWatch::Start {
                    task_id,
                    key,
                    pid,
                    seq,
                } => {
                    if !self.start(task_id, key, pid, seq) {
                        self.forget(Forget { key, seq });
                    }
                }
                TaskWatch::End { key } => {
                    if let Some(i) = self.tasks.iter().position(|t| t.key == key) {
                        self.remove_task(i);
                    }
                }
            }
        }
    }

    /// Tells the listener it need not pass on `f`'s end.
    fn forget(&mut self, f: Forget) {
        if !self.unsent.is_empty() || self.forget.push(f).is_err() {
            self.unsent.push(f);
        }
    }

    /// Sends what waits for the ring back; true when nothing waits.
    fn send_unsent(&mut self) -> bool {
        let mut sent = 0;
        for f in &self.unsent {
            if self.forget.push(*f).is_err() {
                break;
            }
            sent += 1;
        }
        self.unsent.drain(..sent);
        self.unsent.is_empty()
    }

    /// Starts sampling task `id` at `pid`; false when it is refused.
    fn start(&mut self, id: Arc<str>, key: u64, pid: u32, seq: u64) -> bool {
        // Pids come from the clients' pid namespace (and tal's): a `/proc`
        // mounted from another one (a container's view of the host's)
        // would name other processes by them.
        let ours = *self.proc_ours.get_or_insert_with(|| {
            let me = std::fs::read_link("/proc/self").ok();
            let ok = me.as_ref().and_then(|p| p.to_str()?.parse::<u32>().ok())
                == Some(std::process::id());
            if !ok {
                eprintln!(
                    "tal: tasks' processes are not sampled: /proc is not this pid namespace's \
                     (/proc/self is {me:?}, tal is pid {}); mount the namespace's own /proc",
                    std::process::id()
                );
            }
            ok
        });
        if !ours {
            TaskCounters::bump(&self.counters.tasks_refused);
            return false;
        }
        if self.tasks.len() >= MAX_TASKS
            || self.processes >= self.max_processes
            || self.owner.contains_key(&pid)
        {
            TaskCounters::bump(&self.counters.tasks_refused);
            return false;
        }
        let Some(p) = Proc::open(pid, self.me, None) else {
            TaskCounters::bump(&self.counters.tasks_refused);
            return false;
        };
        let i = self.tasks.len();
        self.owner.insert(pid, i);
        self.processes += 1;
        let ticks = self.boot_ticks();
        self.tasks.push(Task {
            id,
            key,
            seq,
            procs: vec![p],
            last_ns: mono_ns(),
            last_ticks: ticks,
        });
        // Its descendants that exist already, counted from now.
        self.find_children(i, None);
        true
    }

    fn remove_task(&mut self, i: usize) {
        let t = self.tasks.swap_remove(i);
        for p in &t.procs {
            self.owner.remove(&p.pid);
        }
        self.processes -= t.procs.len();
        self.freed = true;
        // The task moved into slot i now has a new index.
        if let Some(moved) = self.tasks.get(i) {
            for p in &moved.procs {
                self.owner.insert(p.pid, i);
            }
        }
    }

    /// Adds process `pid` (a child of one of task `i`'s processes).
    fn adopt(&mut self, i: usize, pid: u32, born_after: Option<u64>) -> bool {
        if self.owner.contains_key(&pid) {
            return false;
        }
        if self.processes >= self.max_processes
            || self.tasks[i].procs.len() >= MAX_PROCESSES_PER_TASK
        {
            TaskCounters::bump(&self.counters.processes_refused);
            self.refused_waiting = true;
            return false;
        }
        match Proc::open(pid, self.me, born_after) {
            Some(p) => {
                self.tasks[i].procs.push(p);
                self.owner.insert(pid, i);
                self.processes += 1;
                true
            }
            None => false,
        }
    }

    /// Reads the `children` file of each of task `i`'s processes (new ones
    /// included, so grandchildren are found in the same pass).
    fn find_children(&mut self, i: usize, born_after: Option<u64>) {
        let mut k = 0;
        while k < self.tasks[i].procs.len() {
            if self.tasks[i].procs[k].ran {
                self.adopt_children(i, k, born_after);
            }
            k += 1;
        }
    }

    /// Reads the `children` file of task `i`'s process `k` and adopts the
    /// children not yet sampled (onto the end of the task's processes).
    fn adopt_children(&mut self, i: usize, k: usize, born_after: Option<u64>) {
        let mut pids = std::mem::take(&mut self.pids);
        pids.clear();
        let p = &mut self.tasks[i].procs[k];
        if let Some(b) = p.children.as_mut().and_then(|c| c.read().ok()) {
            parse_pids(b, &mut pids);
        }
        for &pid in &pids {
            self.adopt(i, pid, born_after);
        }
        self.pids = pids;
    }

    /// The safety-net scan: pids not seen last time whose parent is a
    /// task's process join that task.
    fn scan_proc(&mut self, born_after: u64) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let mut scan = std::mem::take(&mut self.scan);
        scan.now.clear();
        scan.fresh.clear();
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                scan.now.insert(pid);
                if scan.primed && !scan.seen.contains(&pid) && !self.owner.contains_key(&pid) {
                    scan.fresh.push(pid);
                }
            }
        }
        // Parents before children, as far as pids tell; a few passes for
        // chains born within one scan.
        scan.fresh.sort_unstable();
        for _ in 0..3 {
            let mut adopted = false;
            for &pid in &scan.fresh {
                if self.owner.contains_key(&pid) {
                    continue;
                }
                let ppid = std::fs::read(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|b| parse_stat(&b))
                    .map(|f| f.ppid);
                if let Some(&i) = ppid.and_then(|pp| self.owner.get(&pp)) {
                    adopted |= self.adopt(i, pid, Some(born_after));
                }
            }
            if !adopted {
                break;
            }
        }
        std::mem::swap(&mut scan.seen, &mut scan.now);
        scan.primed = true;
        self.scan = scan;
    }

    /// One sample of every task due, for deadline `d`.
    fn sample_all(&mut self, d: u64) {
        let now = mono_ns();
        let ticks = self.boot_ticks();
        // The safety-net scan first, when it is due, so that what it finds
        // is read in this round's pass.
        let no_children = self
            .tasks
            .iter()
            .any(|t| t.procs.first().is_some_and(|p| p.children.is_none()));
        if !self.scan.primed
            || no_children
            || now.saturating_sub(self.scan.last_ns) >= SCAN_EVERY.as_nanos() as u64
        {
            let oldest = self
                .tasks
                .iter()
                .map(|t| t.last_ticks)
                .min()
                .unwrap_or(ticks);
            self.scan_proc(oldest);
            self.scan.last_ns = now;
        }
        let mut forked = self.look_at_node();
        if self.refused_waiting && self.freed {
            // Every task's children are read again; a child still refused
            // sets the flag anew.
            forked = true;
            self.refused_waiting = false;
        }
        self.freed = false;
        let mut i = 0;
        while i < self.tasks.len() {
            // A task registered just now waits for a whole interval (its
            // new children are still looked for), and a sample covers at
            // least half an interval (the window rule, see
            // `crate::agent::window`).
            let due = super::window::long_enough(
                now.saturating_sub(self.tasks[i].last_ns),
                self.interval_ns,
            );
            if self.sample_task(i, d, now, ticks, forked, due) {
                i += 1;
            } else {
                let t = &self.tasks[i];
                let f = Forget {
                    key: t.key,
                    seq: t.seq,
                };
                self.remove_task(i);
                self.forget(f);
            }
        }
        if self.tx.len() * 2 >= self.tx.capacity() {
            self.dispatcher.unpark();
        }
    }

    /// Task `i`'s round, in one pass over its processes, each looked at
    /// and (if it ran) read while its kernel structures are in the CPU's
    /// caches: its new children are looked for when any pid was handed out
    /// since the previous round (`forked`; they join the pass), and when
    /// the task is `due` its sample is taken. False when none of its
    /// processes is left.
    fn sample_task(
        &mut self,
        i: usize,
        d: u64,
        now: u64,
        ticks: u64,
        forked: bool,
        due: bool,
    ) -> bool {
        let page = self.page_size;
        let threads_gen = self.threads_gen;
        let born_after = Some(self.tasks[i].last_ticks);
        let (mut user, mut sys, mut rss, mut threads) = (0u64, 0u64, 0u64, 0u32);
        let (mut rd, mut wr, mut io_ok) = (0u64, 0u64, true);
        let mut k = 0;
        while k < self.tasks[i].procs.len() {
            let p = &mut self.tasks[i].procs[k];
            p.look();
            if p.ran && due {
                let Some((u, s)) = p.read(threads_gen) else {
                    // Exited (whoever has its pid now).
                    let gone = self.tasks[i].procs.swap_remove(k);
                    self.owner.remove(&gone.pid);
                    self.processes -= 1;
                    self.freed = true;
                    continue;
                };
                user += u;
                sys += s;
                let io_now = p.io.as_mut().and_then(|k| k.read().ok()).and_then(parse_io);
                match (io_now, p.io_prev) {
                    (Some((r, w)), Some((pr, pw))) => {
                        rd += r.saturating_sub(pr);
                        wr += w.saturating_sub(pw);
                    }
                    _ => io_ok = false,
                }
                p.io_prev = io_now;
            } else if due {
                // Idle since the previous sample (see `Proc::look`): its
                // values stand.
                io_ok &= p.io_prev.is_some();
            }
            if due {
                rss += p.rss_pages * page;
                threads += p.threads;
            }
            if p.ran && forked {
                self.adopt_children(i, k, born_after);
            }
            k += 1;
        }
        let t = &mut self.tasks[i];
        if t.procs.is_empty() {
            return false;
        }
        if !due {
            return true;
        }
        let secs = (now - t.last_ns) as f64 / 1e9;
        let pct = |used_ns: u64| (used_ns as f64 / 1e9 / secs * 100.0) as f32;
        let values = TaskResources {
            cpu_user_percent: pct(user),
            cpu_system_percent: pct(sys),
            rss_bytes: rss,
            threads,
            processes: t.procs.len() as u32,
            read_bytes: io_ok.then_some(rd),
            write_bytes: io_ok.then_some(wr),
            interval_seconds: secs as f32,
            gpu_memory_bytes: Vec::new(),
        };
        t.last_ns = now;
        t.last_ticks = ticks;
        let sample = TaskSample {
            task_id: Arc::clone(&t.id),
            at_ns: d,
            values,
        };
        TaskCounters::bump(&self.counters.samples);
        if let Err(PushError::Full(_)) = self.tx.push(sample) {
            TaskCounters::bump(&self.counters.dropped);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_come_after_the_last_parenthesis() {
        let line = b"4242 (a (weird) name) S 17 4242 17 0 -1 4194304 100 0 0 0 \
            250 31 0 0 20 0 3 0 123456 9999999 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line),
            Some(StatFields {
                ppid: 17,
                utime: 250,
                stime: 31,
                threads: 3,
                start: 123456,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat(b"4242 (x) S"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn loadavg_statm_and_task_dir_parse() {
        assert_eq!(
            parse_loadavg(b"0.52 0.58 0.59 3/1021 123456\n"),
            Some(NodeMarks {
                threads: 1021,
                last_pid: 123456
            })
        );
        assert_eq!(parse_loadavg(b"0.52 0.58"), None);
        assert_eq!(parse_loadavg(b"0.52 0.58 0.59 3 123456\n"), None);
        assert_eq!(parse_loadavg(b"0.52 0.58 0.59 3/1021\n"), None);
        let b = std::fs::read("/proc/loadavg").unwrap();
        assert!(parse_loadavg(&b).is_some());
        // A thread made moves the last pid, and the count while it lives.
        let before = parse_loadavg(&std::fs::read("/proc/loadavg").unwrap()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        let during = parse_loadavg(&std::fs::read("/proc/loadavg").unwrap()).unwrap();
        assert_ne!(during.last_pid, before.last_pid);
        drop(tx);
        t.join().unwrap().unwrap_err();
        assert_eq!(parse_statm_rss(b"1000 250 30 1 0 100 0\n"), Some(250));
        assert_eq!(parse_statm_rss(b"1000"), None);
        // The link count of /proc/self/task is 2 + the threads (other
        // tests start and end threads of this process meanwhile: compare
        // with a count that held still around it).
        let sleepers: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_millis(300))))
            .collect();
        let dir = File::open("/proc/self/task").unwrap();
        let count = || std::fs::read_dir("/proc/self/task").unwrap().count() as u32;
        let checked = (0..1000).any(|_| {
            let (before, t, after) = (count(), threads_of(&dir), count());
            before == after && {
                assert_eq!(t, Some(before));
                assert!(before >= 4);
                true
            }
        });
        assert!(checked);
        for s in sleepers {
            s.join().unwrap();
        }
    }

    #[test]
    fn the_process_cap_leaves_half_the_descriptors_to_the_agent() {
        assert_eq!(process_cap(1024), 96);
        assert_eq!(process_cap(20_000), 2468);
        assert_eq!(process_cap(1 << 20), MAX_PROCESSES);
        assert_eq!(process_cap(100), 0);
        assert_eq!(process_cap(u64::MAX), MAX_PROCESSES);
    }

    #[test]
    fn cpu_time_is_split_as_the_tick_counted_it() {
        // 3 of 4 ticked ms were user time: 750 of 1000 ns.
        assert_eq!(split_cpu(1000, 3, 4, 0, 0), (750, 250));
        // No tick in the interval: the process's whole ratio.
        assert_eq!(split_cpu(1000, 0, 0, 1, 4), (250, 750));
        // No tick ever: all user time.
        assert_eq!(split_cpu(1000, 0, 0, 0, 0), (1000, 0));
        // A user delta over the total (clocks read apart) is capped.
        assert_eq!(split_cpu(1000, 9, 4, 0, 0), (1000, 0));
        assert_eq!(split_cpu(u64::MAX, u64::MAX, u64::MAX, 0, 0), (u64::MAX, 0));
    }

    #[test]
    fn io_and_children_parse() {
        let io = b"rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io(b"rchar: 10\n"), None);
        let mut v = Vec::new();
        parse_pids(b"12 345 6789 ", &mut v);
        assert_eq!(v, [12, 345, 6789]);
    }

    #[test]
    fn the_own_process_parses_from_proc() {
        let b = std::fs::read("/proc/self/stat").unwrap();
        let f = parse_stat(&b).unwrap();
        assert!(f.threads >= 1 && f.rss_pages > 0 && f.start > 0);
        assert!(parse_io(&std::fs::read("/proc/self/io").unwrap()).is_some());
    }
}
