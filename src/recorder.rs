//! `tal record`: wires the pipeline together and runs it until a signal or
//! the end of the wrapped command.
//!
//! Threads: the proc agent (wakes every interval), the dispatcher, which
//! runs the writer stage in the same wake-up (about once a second), and the
//! main thread, which only waits for signals. All of tal's threads are pinned to
//! one CPU (`--pin`); a wrapped command is started with tal's original CPU
//! affinity and an empty signal mask.
//!
//! Signals: SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked in every thread
//! and taken synchronously by the main thread with `sigwaitinfo`, so no
//! handler runs on the sampling threads. On SIGTERM/SIGINT/SIGHUP:
//! - without a command, tal finalises at once and exits 0;
//! - with a command, tal forwards the signal to it, gives it
//!   `CHILD_GRACE` to exit, finalises, then waits for it and exits with its
//!   status (128+N when killed by signal N, as shells report).
//!
//! Finalising stops the agent (one last sample), drains every ring, writes
//! SessionEnded, the final snapshot and the end marker, trims and fsyncs
//! the log: well under a second. A second SIGINT during any of this exits
//! at once with status 130; the log still converts (without end marker).
#![allow(unsafe_code)]

use crate::agent::affinity::{self, CpuMask};
use crate::agent::proc::{source, ProcAgent, ProcReading, ProcSample, ProcSources};
use crate::agent::AgentCounters;
use crate::clock::Anchor;
use crate::convert::{self, Output};
use crate::dispatch::{encode_end_reason, Dispatcher};
use crate::ingest::listener::{bind_socket, AgentInfo, IngestCounters, Listener, StopControl};
use crate::log::{Header, LogWriter, WriteError};
use crate::record::{EndReason, Record};
use crate::ring;
use anyhow::{anyhow, Context};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a wrapped command gets to exit after a forwarded signal before
/// tal finalises its log anyway.
pub const CHILD_GRACE: Duration = Duration::from_millis(500);
/// Slots of the proc agent's ring (6.4 s of samples at 10 Hz).
pub const PROC_RING: usize = 64;
/// Slots of the ingest listener's ring to the dispatcher. Each slot is a
/// batch of up to about `BATCH_BYTES` (32 KiB) of encoded events, so at most
/// about 32 MiB wait for the dispatcher; the listener wakes it when the ring
/// is a quarter full.
pub const INGEST_RING: usize = 1 << 10;
/// Emptied ingest batches kept for reuse (each holds about 36 KiB); more
/// are freed, so a burst does not leave the agent's memory grown.
pub const INGEST_RECYCLE: usize = 8;
/// Slots of the live OTLP exporter's ring of events.
pub const EXPORT_RING: usize = 1 << 16;
/// Slots of the GPU agent's ring (6.4 s of polls at 10 Hz).
pub const GPU_RING: usize = 64;
/// Slots of the GPU agent's ring of back-fills (each up to 4 KiB of driver
/// samples; one device's every second at the most, and one per device at
/// stop, so 64 slots hold the stop of a 64-GPU node).
pub const BACKFILL_RING: usize = 64;
/// Slots of the dispatcher's ring of lines for live subscribers.
pub const SUBSCRIBER_RING: usize = 1 << 16;

/// A validated `tal record` configuration.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Sampling interval.
    pub interval: Duration,
    /// Output directory.
    pub out: PathBuf,
    /// Session id.
    pub session_id: String,
    /// Node id.
    pub node_id: String,
    /// Full host name.
    pub hostname: String,
    /// Backend name on the agent's events.
    pub backend: String,
    /// CPU to pin to.
    pub pin: Option<usize>,
    /// Write the JSONL at the end.
    pub convert: bool,
    /// Self-snapshot interval.
    pub snapshot_every: Duration,
    /// Command to wrap (empty: run until signalled).
    pub command: Vec<OsString>,
    /// Session attributes.
    pub attributes: Vec<(String, String)>,
    /// Log growth chunk, bytes.
    pub log_chunk: u64,
    /// The ingest socket's path.
    pub socket: PathBuf,
    /// Which GPUs to sample.
    pub gpus: crate::agent::gpu::GpuSelection,
    /// A live OTLP push: where, and how often.
    pub otlp: Option<(crate::otlp_http::Endpoints, Duration)>,
    /// The job cgroup to read.
    pub cgroup: crate::agent::cgroup::CgroupChoice,
}

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
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
fn arm_second_sigint() {
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
fn arm_exit_signals() {
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
fn try_reap(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: plain syscall with a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (r == pid).then(|| exit_code(status))
}

fn reap_blocking(pid: libc::pid_t) -> i32 {
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

/// Creates the log at `path`, or, if a log of that name exists (a Slurm
/// job requeued after its agent was killed keeps its job id, so its
/// session id), beside it as `<session>.<node>.N.tal` with the first free
/// N from 1: `tal convert` of them all gives one session. Returns the path
/// tried last.
fn create_log(path: &std::path::Path, header: &Header) -> (PathBuf, Result<LogWriter, WriteError>) {
    let stem = path.with_extension("");
    let mut candidate = path.to_path_buf();
    for n in 1..=MAX_LOG_NUMBER {
        match LogWriter::create(&candidate, header) {
            Err(WriteError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let mut name = stem.as_os_str().to_owned();
                name.push(format!(".{n}.tal"));
                candidate = PathBuf::from(name);
            }
            r => return (candidate, r),
        }
    }
    let r = LogWriter::create(&candidate, header);
    (candidate, r)
}

/// How many numbered logs of one session and node `tal record` tries.
const MAX_LOG_NUMBER: u32 = 999;

/// The wrapped command as its shell would start it: tal's original CPU
/// affinity and signal mask, SIGXFSZ at its default, and the session in its
/// environment. `None` without a command.
fn wrapped_command(
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
fn spawn_wrapped(cmd: &mut Command) -> Result<libc::pid_t, i32> {
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
fn run_unrecorded(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    old_mask: libc::sigset_t,
    sigs: &libc::sigset_t,
    why: &anyhow::Error,
) -> i32 {
    eprintln!("tal: {why}; running the command without recording");
    let Some(mut cmd) = wrapped_command(cfg, orig_mask, old_mask) else {
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
        match wait_signal(sigs, Some(Duration::from_millis(200))) {
            Some(libc::SIGCHLD) | None => {}
            Some(STOP_REQUEST_SIGNAL) => {}
            Some(sig) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }
}

/// Waits for one of `set`'s signals for at most `timeout`; `None` on timeout.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<libc::c_int> {
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

/// The writer stage: the only owner of the log file. After a write error
/// (disk full) it reports once on stderr, keeps the file valid up to the
/// last whole record, and counts every later record as lost; the recording
/// (and a wrapped command) carry on.
#[derive(Debug)]
pub struct WriterStage {
    writer: LogWriter,
    failed: Option<crate::log::WriteError>,
    lost: Arc<AtomicU64>,
    /// Told to the ingest listener once the log takes no more records.
    full: Option<Arc<StopControl>>,
}

impl WriterStage {
    /// A stage appending to `writer`, counting lost records in `lost`.
    pub fn new(writer: LogWriter, lost: Arc<AtomicU64>) -> Self {
        Self {
            writer,
            failed: None,
            lost,
            full: None,
        }
    }

    /// Also tells `control`'s listener when the log is full.
    pub fn telling(mut self, control: Arc<StopControl>) -> Self {
        self.full = Some(control);
        self
    }

    /// Trims and syncs the log; the first write error, if any.
    pub fn finish(self) -> Result<PathBuf, crate::log::WriteError> {
        let path = self.writer.finish(None)?;
        match self.failed {
            Some(e) => Err(e),
            None => Ok(path),
        }
    }
}

impl WriterStage {
    /// Runs one writer call; counts the records it lost, and reports the
    /// first failure once (the writer refuses, and counts, every record
    /// from then on).
    fn write(&mut self, op: impl FnOnce(&mut LogWriter) -> Result<(), WriteError>) {
        let before = self.writer.lost_records();
        let res = op(&mut self.writer);
        let lost = self.writer.lost_records() - before;
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
        if let Err(e) = res {
            if self.failed.is_none() {
                eprintln!("tal: {e}");
                self.failed = Some(e);
                if let Some(c) = &self.full {
                    c.log_full.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}

impl crate::dispatch::Sink for WriterStage {
    fn put(&mut self, r: Record) {
        self.write(|w| w.append(&r));
    }

    fn put_encoded(&mut self, payload: &[u8]) {
        self.write(|w| w.append_encoded(payload));
    }

    fn put_final(&mut self, r: Record) {
        self.write(|w| w.append_final(&r));
    }

    fn flush(&mut self) {
        self.write(LogWriter::flush);
    }
}

type DispatchResult = Result<PathBuf, crate::log::WriteError>;

/// The running pipeline's thread handles and stop flags.
struct Pipeline {
    sampler: thread::JoinHandle<()>,
    gpu: Option<thread::JoinHandle<()>>,
    dispatcher: thread::JoinHandle<DispatchResult>,
    sampler_stop: Arc<AtomicBool>,
    dispatch_stop: Arc<AtomicBool>,
    end_reason: Arc<AtomicU64>,
}

impl Pipeline {
    /// Stops every stage in pipeline order and returns the finished log.
    fn finish(self, reason: EndReason) -> anyhow::Result<PathBuf> {
        self.end_reason
            .store(encode_end_reason(reason), Ordering::Release);
        self.sampler_stop.store(true, Ordering::Release);
        while !self.sampler.is_finished() {
            crate::agent::proc::wake(&self.sampler);
            thread::sleep(Duration::from_millis(2));
        }
        self.sampler
            .join()
            .map_err(|_| anyhow!("the sampling thread panicked"))?;
        if let Some(g) = self.gpu {
            // It shares the stop flag; an NVML call in progress finishes first.
            while !g.is_finished() {
                crate::agent::proc::wake(&g);
                thread::sleep(Duration::from_millis(2));
            }
            g.join()
                .map_err(|_| anyhow!("the GPU sampling thread panicked"))?;
        }
        self.dispatch_stop.store(true, Ordering::Release);
        self.dispatcher.thread().unpark();
        let res = self
            .dispatcher
            .join()
            .map_err(|_| anyhow!("the dispatcher thread panicked"))?;
        Ok(res?)
    }
}

/// The signal a `{"op": "stop"}` request raises in the agent process (and
/// that a site script may send as well): finalise as on SIGTERM.
pub const STOP_REQUEST_SIGNAL: libc::c_int = libc::SIGUSR1;

fn request_stop() {
    // SAFETY: kill(2) of our own process; every thread blocks this signal
    // and the main thread takes it with sigwaitinfo.
    unsafe { libc::kill(libc::getpid(), STOP_REQUEST_SIGNAL) };
}

/// Runs `tal record`; returns the process exit code.
pub fn run(cfg: RecordConfig) -> anyhow::Result<i32> {
    let stop_sigs = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        STOP_REQUEST_SIGNAL,
    ];
    let all_sigs = sigset(&[
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGCHLD,
        STOP_REQUEST_SIGNAL,
    ]);
    // SAFETY: an empty sigset is a valid out-parameter for the old mask.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers. Threads spawned after this inherit it.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all_sigs, &mut old_mask) };

    std::fs::create_dir_all(&cfg.out).with_context(|| {
        format!(
            "cannot create output directory '{}' — pass --out DIR that you can write to",
            cfg.out.display()
        )
    })?;
    let log_path = cfg
        .out
        .join(format!("{}.{}.tal", cfg.session_id, cfg.node_id));

    let socket = bind_socket(&cfg.socket).with_context(|| {
        format!(
            "cannot listen on {} — pass --socket PATH in a directory you can write",
            cfg.socket.display()
        )
    })?;
    // Removes the socket file on every early return below; the listener
    // removes it itself once it runs.
    let mut socket_guard = SocketGuard(Some(cfg.socket.clone()));

    let orig_mask = CpuMask::current().context("cannot read CPU affinity")?;
    if let Some(cpu) = cfg.pin {
        affinity::pin_current_thread(cpu)
            .with_context(|| format!("cannot pin to CPU {cpu} — pass --pin CPU or --pin none"))?;
    }

    // A file-size limit (RLIMIT_FSIZE) must surface as a write error that
    // the writer reports, not as SIGXFSZ killing the agent.
    // SAFETY: setting a signal disposition; restored for the wrapped command.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let cgroup = crate::agent::cgroup::CgroupSources::open(&cfg.cgroup)
        .map_err(|e| anyhow!("--cgroup: {e}"))?;
    let cgroup_note = cgroup.as_ref().map(|c| format!("tal: job: {}", c.describe));
    let mut sources = ProcSources::open()
        .context("cannot sample /proc")?
        .with_cgroup(cgroup);
    crate::agent::proc::install_wake_handler();
    let mut baseline = Box::<ProcReading>::default();
    sources.read_into(&mut baseline);

    // What tal says about GPUs, after its start line.
    let (gpu_sources, gpu_note) = match crate::agent::gpu::GpuSources::open(&cfg.gpus) {
        Ok(Some(g)) => {
            let list: Vec<String> = g
                .devices()
                .map(|d| format!("{}={} ({}, {})", d.gpu_id, d.uuid, d.name, d.pci_bus_id))
                .collect();
            let note = format!("tal: GPUs: {}", list.join("; "));
            (Some(g), Some(note))
        }
        Ok(None) => (None, None),
        Err(why) => (
            None,
            Some(format!("tal: no GPU data: {why}; GPU fields stay null")),
        ),
    };
    let mut attributes = cfg.attributes.clone();
    if let Some(g) = &gpu_sources {
        for d in g.devices() {
            attributes.push((format!("gpu.{}.uuid", d.gpu_id), d.uuid.clone()));
            attributes.push((format!("gpu.{}.name", d.gpu_id), d.name.clone()));
            attributes.push((format!("gpu.{}.pci_bus_id", d.gpu_id), d.pci_bus_id.clone()));
        }
    }

    let anchor = Anchor::now();
    let header = Header {
        session_id: cfg.session_id.clone(),
        node_id: cfg.node_id.clone(),
        hostname: cfg.hostname.clone(),
        backend: cfg.backend.clone(),
        pid: std::process::id(),
        tal_version: env!("CARGO_PKG_VERSION").to_string(),
        start_wall_ns: anchor.wall_ns,
        start_mono_ns: anchor.mono_ns,
        interval_ns: cfg.interval.as_nanos() as u64,
        chunk_bytes: cfg.log_chunk,
        ncpus: u32::from(baseline.ncpu),
        attributes,
    };
    let (log_path, writer) = create_log(&log_path, &header);
    let writer = writer.map_err(|e| match e {
        crate::log::WriteError::Io { path, source } => anyhow!(
            "cannot create log {}: {source} — pass --out DIR that you can write to{}",
            path.display(),
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                " (or a new --session-id)"
            } else {
                ""
            }
        ),
        other => anyhow!(other),
    });
    let writer = match writer {
        Ok(w) => w,
        // Whatever the log cannot do, a wrapped command still runs.
        Err(e) if !cfg.command.is_empty() => {
            drop(socket_guard);
            return Ok(run_unrecorded(&cfg, orig_mask, old_mask, &all_sigs, &e));
        }
        Err(e) => return Err(e),
    };

    let (proc_tx, proc_rx) = ring::channel::<ProcSample>(PROC_RING);
    let (ingest_tx, ingest_rx) = ring::channel::<crate::ingest::batch::IngestBatch>(INGEST_RING);
    let (recycle_tx, recycle_rx) =
        ring::channel::<crate::ingest::batch::IngestBatch>(INGEST_RECYCLE);
    let ingest_counters = Arc::new(IngestCounters::default());
    let stop_control = Arc::new(StopControl::default());
    let counters = Arc::new(AgentCounters::default());
    let records_dropped = Arc::new(AtomicU64::new(0));
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let dispatch_stop = Arc::new(AtomicBool::new(false));
    let end_reason = Arc::new(AtomicU64::new(encode_end_reason(EndReason::StopRequested)));

    let (mut listener, waker) = Listener::new(
        socket,
        cfg.socket.clone(),
        (ingest_tx, recycle_rx),
        Arc::clone(&ingest_counters),
        Arc::clone(&stop_control),
        AgentInfo {
            session_id: cfg.session_id.clone(),
            node_id: cfg.node_id.clone(),
            log: log_path.clone(),
        },
        request_stop,
    )
    .context("cannot start the ingest listener")?;
    let (sub_tx, sub_rx) = ring::channel::<crate::ingest::listener::SubLine>(SUBSCRIBER_RING);
    let subscribers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    listener.set_subscriptions(sub_rx, Arc::clone(&subscribers));
    let fanout = crate::dispatch::Fanout::new(
        crate::convert::jsonl::Ctx::new(&cfg.session_id),
        cfg.node_id.clone(),
        subscribers,
        sub_tx,
        waker,
        Arc::clone(&ingest_counters.sub_dropped),
    );
    // Both agents sample on the grid start + k·interval.
    let interval_ns = cfg.interval.as_nanos() as u64;
    let start_ns = crate::clock::mono_ns();
    let gpu_counters = Arc::new(crate::agent::gpu::GpuCounters::default());
    let (gpu_tx, gpu_rx) = match &gpu_sources {
        Some(_) => {
            let (tx, rx) = ring::channel::<crate::agent::gpu::GpuSample>(GPU_RING);
            let (btx, brx) = ring::channel::<crate::agent::gpu::Backfill>(BACKFILL_RING);
            (Some((tx, btx)), Some((rx, brx)))
        }
        None => (None, None),
    };
    // The live OTLP exporter, if asked for: its thread first, so that the
    // dispatcher can wake it.
    let live = match &cfg.otlp {
        None => None,
        Some((ep, every)) => {
            let (tx, rx) = ring::channel::<crate::record::Event>(EXPORT_RING);
            let stop = Arc::new(AtomicBool::new(false));
            let counters = Arc::new(crate::otlp_live::LiveCounters::default());
            let exporter = crate::otlp_live::LiveExporter::new(
                rx,
                ep.clone(),
                *every,
                &cfg.session_id,
                &cfg.node_id,
                &cfg.backend,
                anchor.wall_ns,
                &cfg.attributes,
                Arc::clone(&stop),
                Arc::clone(&counters),
            );
            let handle = thread::Builder::new()
                .name("tal-otlp".into())
                .spawn(move || exporter.run())
                .context("cannot start the OTLP export thread")?;
            Some((tx, handle, stop, counters, ep.traces.clone()))
        }
    };
    let (live_tx, live) = match live {
        Some((tx, h, stop, c, url)) => (Some(tx), Some((h, stop, c, url))),
        None => (None, None),
    };
    let dispatcher = {
        let stage = WriterStage::new(writer, Arc::clone(&records_dropped))
            .telling(Arc::clone(&stop_control));
        let d = Dispatcher::new(
            proc_rx,
            stage,
            Arc::clone(&counters),
            Arc::clone(&records_dropped),
            cfg.backend.clone(),
            (baseline.ok & source::STAT != 0).then_some(baseline.cpu),
            anchor.wall_ns,
            cfg.snapshot_every,
        )
        .with_ingest(
            (ingest_rx, recycle_tx),
            cfg.node_id.clone(),
            Arc::clone(&ingest_counters),
        )
        .with_fanout(fanout);
        let d = match gpu_rx {
            Some((rx, brx)) => {
                d.with_gpu(rx, brx, Arc::clone(&gpu_counters), start_ns, interval_ns)
            }
            None => d,
        };
        let d = match (live_tx, &live) {
            (Some(tx), Some((h, _, c, _))) => {
                d.with_exporter(tx, h.thread().clone(), Arc::clone(c))
            }
            _ => d,
        };
        let stop = Arc::clone(&dispatch_stop);
        let reason = Arc::clone(&end_reason);
        thread::Builder::new()
            .name("tal-dispatch".into())
            .spawn(move || d.run(stop, reason).into_sink().finish())
            .context("cannot start the dispatcher thread")?
    };
    let sampler = {
        let agent = ProcAgent::new(
            sources,
            &baseline,
            proc_tx,
            cfg.interval.as_nanos() as u64,
            Arc::clone(&counters),
            Arc::clone(&sampler_stop),
            dispatcher.thread().clone(),
        );
        let agent = agent.starting_at(start_ns);
        thread::Builder::new()
            .name("tal-proc".into())
            .spawn(move || agent.run())
            .context("cannot start the sampling thread")?
    };
    let gpu = match (gpu_sources, gpu_tx) {
        (Some(src), Some((tx, btx))) => {
            let agent = crate::agent::gpu::GpuAgent::new(
                src,
                tx,
                btx,
                start_ns,
                interval_ns,
                Arc::clone(&gpu_counters),
                Arc::clone(&sampler_stop),
            );
            Some(
                thread::Builder::new()
                    .name("tal-gpu".into())
                    .spawn(move || agent.run())
                    .context("cannot start the GPU sampling thread")?,
            )
        }
        _ => None,
    };
    listener.set_dispatcher(dispatcher.thread().clone());
    let listener = thread::Builder::new()
        .name("tal-ingest".into())
        .spawn(move || listener.run())
        .context("cannot start the ingest listener thread")?;
    socket_guard.0 = None;
    let pipeline = Pipeline {
        sampler,
        gpu,
        dispatcher,
        sampler_stop,
        dispatch_stop,
        end_reason,
    };

    eprintln!(
        "tal: recording session={} node={} log={} socket={} interval={:?} pin={}",
        cfg.session_id,
        cfg.node_id,
        log_path.display(),
        cfg.socket.display(),
        cfg.interval,
        cfg.pin.map_or("none".to_string(), |c| format!("cpu{c}")),
    );
    for note in [gpu_note, cgroup_note].into_iter().flatten() {
        eprintln!("{note}");
    }

    // The wrapped command, if any.
    let mut child: Option<libc::pid_t> = None;
    let mut spawn_failure: Option<i32> = None;
    if let Some(mut cmd) = wrapped_command(&cfg, orig_mask, old_mask) {
        cmd.env("TAL_LOG", &log_path).env("TAL_SOCKET", &cfg.socket);
        match spawn_wrapped(&mut cmd) {
            Ok(pid) => child = Some(pid),
            Err(code) => spawn_failure = Some(code),
        }
    }

    // Wait for the end.
    let (reason, mut code) = if let Some(c) = spawn_failure {
        (EndReason::CommandExited(c), Some(c))
    } else {
        loop {
            let Some(sig) = wait_signal(&all_sigs, None) else {
                continue;
            };
            if sig == libc::SIGCHLD {
                if let Some(pid) = child {
                    if let Some(c) = try_reap(pid) {
                        break (EndReason::CommandExited(c), Some(c));
                    }
                }
                continue;
            }
            if stop_sigs.contains(&sig) {
                if sig == libc::SIGINT {
                    arm_second_sigint();
                }
                let mut code = None;
                if let Some(pid) = child {
                    let fwd = if sig == STOP_REQUEST_SIGNAL {
                        libc::SIGTERM
                    } else {
                        sig
                    };
                    // SAFETY: plain kill(2) of our own child.
                    unsafe { libc::kill(pid, fwd) };
                    let deadline = Instant::now() + CHILD_GRACE;
                    while code.is_none() {
                        code = try_reap(pid);
                        let left = deadline.saturating_duration_since(Instant::now());
                        if code.is_some() || left.is_zero() {
                            break;
                        }
                        let chld = sigset(&[libc::SIGCHLD]);
                        wait_signal(&chld, Some(left.min(Duration::from_millis(50))));
                    }
                }
                let reason = if sig == STOP_REQUEST_SIGNAL {
                    EndReason::StopRequested
                } else {
                    EndReason::Signal(sig)
                };
                break (reason, code);
            }
        }
    };

    // Refuse client events from here on, and have every event accepted
    // before with the dispatcher: its last drain comes next.
    if !stop_control.close(&waker, Duration::from_secs(2)) {
        eprintln!(
            "tal: the ingest listener did not hand over its last events within 2 s; \
             events it accepted since may be missing"
        );
    }
    let finished = pipeline.finish(reason);
    if let (Some(pid), None) = (child, code) {
        code = Some(reap_blocking(pid));
    }
    let exit = code.unwrap_or(0);
    let log = match finished {
        Ok(p) => p,
        Err(e) => {
            if e.downcast_ref::<crate::log::WriteError>().is_some() {
                // The writer stage reported the error when it happened.
                eprintln!(
                    "tal: the log {} stops at its last whole record before that error",
                    log_path.display()
                );
            } else {
                eprintln!("tal: {e}");
            }
            log_path
        }
    };

    let mut jsonl: Option<PathBuf> = None;
    if cfg.convert {
        // RHAPSODY's name, unless another node of the session already wrote
        // that file into a shared --out: then this node's own name, so that
        // no agent overwrites another's checkpoint.
        let name = convert::default_file_name(&cfg.session_id, anchor.wall_ns);
        let mut target = cfg.out.join(&name);
        if target.exists() {
            let own = convert::node_file_name(&cfg.session_id, &cfg.node_id, anchor.wall_ns);
            target = cfg.out.join(&own);
            // A requeued job's earlier run of the same second: numbered.
            let stem = own.strip_suffix(".telemetry.jsonl").unwrap_or(&own);
            let mut n = 1;
            while target.exists() && n <= MAX_LOG_NUMBER {
                target = cfg.out.join(format!("{stem}.{n}.telemetry.jsonl"));
                n += 1;
            }
        }
        match convert::to_jsonl(std::slice::from_ref(&log), &Output::File(target)) {
            Ok((path, summary)) => {
                for l in convert::describe(&summary) {
                    eprintln!("tal: {l}");
                }
                if let Some(p) = path {
                    eprintln!("tal: {}", convert::describe_written(&p, &summary));
                    jsonl = Some(p);
                }
            }
            Err(e) => eprintln!("tal: cannot convert {}: {e}", log.display()),
        }
    } else {
        eprintln!("tal: log {}", log.display());
    }

    // The live push's last batch, after the JSONL is on disk: a slow or
    // stuck receiver can then cost at most the push (each request has its
    // time limit), and SIGINT or SIGTERM meanwhile exits at once.
    if live.is_some() {
        arm_exit_signals();
    }
    if let Some((h, stop, c, url)) = live {
        // Every event is with the exporter now: its last push.
        stop.store(true, Ordering::Release);
        h.thread().unpark();
        let why = h
            .join()
            .unwrap_or_else(|_| Some("the OTLP export thread panicked".into()));
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "tal: OTLP live push to {url}: {} span(s) and {} metric point(s) delivered",
            n(&c.spans_sent),
            n(&c.points_sent)
        );
        if why.is_some() || n(&c.events_dropped) > 0 {
            eprintln!(
                "tal: OTLP live push: NOT delivered: {} span(s), {} point(s){}{}; `tal convert --otlp-endpoint` can push the whole session from the log",
                n(&c.spans_lost),
                n(&c.points_lost),
                match n(&c.events_dropped) {
                    0 => String::new(),
                    d => format!(", and {d} event(s) the exporter could not keep up with"),
                },
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
        }
    }
    // Answer `tal stop` clients now that everything is written, and close
    // the socket.
    let mut reply = Vec::new();
    {
        let mut o = crate::convert::json::JsonOut::object(&mut reply);
        o.bool("ok", true)
            .str("log", &log.display().to_string())
            .opt_str(
                "jsonl",
                jsonl.as_ref().map(|p| p.display().to_string()).as_deref(),
            );
        o.end();
    }
    if let Ok(mut d) = stop_control.done.lock() {
        *d = Some(String::from_utf8_lossy(&reply).into_owned());
    }
    stop_control.exit.store(true, Ordering::Release);
    waker.wake();
    let _ = listener.join();
    Ok(exit)
}

/// Removes the socket file if `tal record` fails before its listener runs.
struct SocketGuard(Option<PathBuf>);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
