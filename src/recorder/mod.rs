//! `tal record`: wires the pipeline together and runs it until a signal or
//! the end of the wrapped command ([`run`]: open, start, wait, finalise).
//!
//! Threads: the main thread, which only waits for signals; the proc agent
//! (`tal-proc`, wakes every interval); the GPU agent (`tal-gpu`, when GPUs
//! are sampled); the dispatcher (`tal-dispatch`), which runs the writer
//! stage in the same wake-up (about once a second, or early when a ring
//! fills); the ingest listener (`tal-ingest`, the socket's clients and
//! subscribers); and with `--otlp-endpoint`, the live exporter
//! (`tal-otlp`). They hand data on through single-producer rings. All of
//! tal's threads are pinned to one CPU (`--pin`); a wrapped command is
//! started with tal's original CPU affinity and signal mask.
//!
//! Signals: SIGINT, SIGTERM, SIGHUP, SIGUSR1 (a `tal stop`) and SIGCHLD are
//! blocked in every thread and taken synchronously by the main thread with
//! `sigwaitinfo`, so no handler runs on the sampling threads. On
//! SIGTERM/SIGINT/SIGHUP:
//! - without a command, tal finalises at once and exits 0;
//! - with a command, tal forwards the signal to it, gives it
//!   `CHILD_GRACE` to exit, finalises, then waits for it and exits with its
//!   status (128+N when killed by signal N, as shells report).
//!
//! Finalising stops the agent (one last sample), drains every ring, writes
//! SessionEnded, the final snapshot and the end marker, trims and fsyncs
//! the log: well under a second. A second SIGINT during any of this exits
//! at once with status 130; the log still converts (without end marker).
//! Once the log is complete, a SIGINT during the JSONL or the report exits
//! at once too (130), removing the file being written (no name ever holds
//! a partial JSONL) and saying how to convert the log again. A SIGTERM
//! then waits: Slurm sends two at a time limit, and the JSONL is wanted.
//!
//! Layout: this file opens (the log, the socket), waits and finalises;
//! `start.rs` connects the rings and spawns the threads; `child.rs` is the
//! wrapped command, `signals.rs` the signals, `stage.rs` the writer stage.

mod child;
mod signals;
mod stage;
mod start;
#[cfg(feature = "writer-thread")]
mod threaded;

pub use signals::STOP_REQUEST_SIGNAL;
pub use stage::WriterStage;
use start::Running;

use crate::agent::affinity::{self, CpuMask};
use crate::agent::gpu::GpuSources;
use crate::agent::proc::{ProcReading, ProcSources};
use crate::clock::Anchor;
use crate::convert::{self, Output};
use crate::dispatch::encode_end_reason;
use crate::ingest::sockdir::bind_agent_socket;
use crate::log::{Header, LogWriter, WriteError};
use crate::otlp_live::LiveCounters;
use crate::record::EndReason;
use anyhow::{anyhow, Context};
use child::{reap_blocking, run_unrecorded, spawn_wrapped, try_reap, wrapped_command};
use signals::{arm_exit_signals, arm_second_sigint, Signals, STOP_SIGNALS};
use std::ffi::OsString;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
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
    /// Per-task sampling interval (`None`: tasks are not sampled).
    pub task_interval: Option<Duration>,
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
    /// Write this node's parts of the Parquet dataset into this folder at
    /// the end (`--format parquet`).
    pub dataset: Option<PathBuf>,
    /// Write the HTML report beside the JSONL at the end.
    pub report: bool,
    /// Self-snapshot interval.
    pub snapshot_every: Duration,
    /// Command to wrap (empty: run until signalled).
    pub command: Vec<OsString>,
    /// Session attributes.
    pub attributes: Vec<(String, String)>,
    /// Log growth chunk, bytes.
    pub log_chunk: u64,
    /// The ingest socket's path: the one asked for until [`run`] binds it,
    /// then the one in use (empty when none could be made: see
    /// [`crate::ingest::sockdir`]).
    pub socket: PathBuf,
    /// Whether `socket` was given (`--socket`) rather than the default.
    pub socket_explicit: bool,
    /// Which GPUs to sample.
    pub gpus: crate::agent::gpu::GpuSelection,
    /// A live OTLP push: where, how often, and what it may hold.
    pub otlp: Option<crate::otlp_live::LiveConfig>,
    /// The job cgroup to read.
    pub cgroup: crate::agent::cgroup::CgroupChoice,
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

type DispatchResult = Result<PathBuf, crate::log::WriteError>;

/// The running pipeline's thread handles and stop flags.
struct Pipeline {
    sampler: thread::JoinHandle<()>,
    gpu: Option<thread::JoinHandle<()>>,
    tasks: Option<thread::JoinHandle<()>>,
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
        if let Some(t) = self.tasks {
            // It shares the stop flag; it may be parked (no tasks) or asleep.
            while !t.is_finished() {
                t.thread().unpark();
                crate::agent::proc::wake(&t);
                thread::sleep(Duration::from_millis(2));
            }
            t.join()
                .map_err(|_| anyhow!("the task sampling thread panicked"))?;
        }
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

/// Runs `tal record`; returns the process exit code. Four steps: open and
/// bind everything (`open`), start the pipeline's threads (`start`), wait
/// for the end (`wait_for_end`), and finalise (`finalise`).
pub fn run(mut cfg: RecordConfig) -> anyhow::Result<i32> {
    let signals = Signals::block();
    let opened = match open(&mut cfg, &signals)? {
        Ok(o) => o,
        // The log could not be made: the command ran unrecorded.
        Err(code) => return Ok(code),
    };
    let running = start::start(&cfg, opened)?;
    running.announce(&cfg);
    let (child, spawn_failure) = running.spawn_command(&cfg, &signals);
    let (reason, code) = match spawn_failure {
        Some(c) => (EndReason::CommandExited(c), Some(c)),
        None => wait_for_end(&signals, child),
    };
    finalise(&cfg, running, reason, child, code)
}

/// What [`open`] made: every file, socket and source, and no thread yet.
struct Opened {
    socket: UnixListener,
    /// Removes the socket file if tal fails before its listener runs.
    socket_guard: SocketGuard,
    /// tal's CPU affinity before pinning (the wrapped command's).
    orig_mask: CpuMask,
    sources: ProcSources,
    gpus: Option<GpuSources>,
    /// What tal says after its start line (GPUs, cgroup).
    notes: Vec<String>,
    anchor: Anchor,
    log_path: PathBuf,
    writer: LogWriter,
}

/// Step 1: the output directory, the socket, the pin, the sources and the
/// log. `Ok(Err(code))`: the log could not be made and the wrapped command
/// ran unrecorded, with this status.
fn open(cfg: &mut RecordConfig, signals: &Signals) -> anyhow::Result<Result<Opened, i32>> {
    std::fs::create_dir_all(&cfg.out).with_context(|| {
        format!(
            "cannot create output directory '{}' — pass --out DIR that you can write to",
            cfg.out.display()
        )
    })?;
    let bound = bind_agent_socket(&cfg.socket, cfg.socket_explicit, &cfg.out)
        .with_context(|| format!("cannot listen on {}", cfg.socket.display()))?;
    let mut notes = Vec::new();
    if !bound.notes.is_empty() {
        let now = match &bound.path {
            Some(p) => format!("listening on {} instead (TAL_SOCKET)", p.display()),
            None => "recording with no socket: no client events, TAL_SOCKET not set".into(),
        };
        notes.push(format!("tal: {}; {now}", bound.notes.join("; ")));
    }
    cfg.socket = bound.path.clone().unwrap_or_default();
    // Also removed when a signal ends tal at once (see `finalise`).
    let socket_registered = [&bound.made_dir, &bound.path]
        .into_iter()
        .flatten()
        .map(|p| crate::tempfiles::register(p))
        .collect();
    let socket = bound.listener;
    let socket_guard = SocketGuard {
        socket: bound.path,
        dir: bound.made_dir,
        registered: socket_registered,
    };

    let orig_mask = CpuMask::current().context("cannot read CPU affinity")?;
    if let Some(cpu) = cfg.pin {
        affinity::pin_current_thread(cpu)
            .with_context(|| format!("cannot pin to CPU {cpu} — pass --pin CPU or --pin none"))?;
    }
    signals::ignore_file_size_limit();
    crate::sys::raise_nofile();

    let cgroup = crate::agent::cgroup::CgroupSources::open(&cfg.cgroup)
        .map_err(|e| anyhow!("--cgroup: {e}"))?;
    let cgroup_note = cgroup.as_ref().map(|c| format!("tal: job: {}", c.describe));
    let job_memory_limit = cgroup.as_ref().and_then(|c| c.memory_limit_bytes);
    let mut sources = ProcSources::open()
        .context("cannot sample /proc")?
        .with_cgroup(cgroup);
    crate::agent::proc::install_wake_handler();
    // A first reading, for the log header (the CPUs). The deltas start
    // from the agent's first sample, its warm-up reading.
    let mut baseline = Box::<ProcReading>::default();
    sources.read_into(&mut baseline);

    let gpus = match GpuSources::open(&cfg.gpus) {
        Ok(Some(g)) => {
            let list: Vec<String> = g
                .devices()
                .map(|d| format!("{}={} ({}, {})", d.gpu_id, d.uuid, d.name, d.pci_bus_id))
                .collect();
            notes.push(format!("tal: GPUs: {}", list.join("; ")));
            Some(g)
        }
        Ok(None) => None,
        Err(why) => {
            notes.push(format!("tal: no GPU data: {why}; GPU fields stay null"));
            None
        }
    };
    notes.extend(cgroup_note);

    let anchor = Anchor::now();
    let header = log_header(cfg, &anchor, &baseline, gpus.as_ref(), job_memory_limit);
    let log_path = cfg
        .out
        .join(format!("{}.{}.tal", cfg.session_id, cfg.node_id));
    let (log_path, writer) = create_log(&log_path, &header);
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            let e = log_create_error(e);
            if cfg.command.is_empty() {
                return Err(e);
            }
            // Whatever the log cannot do, a wrapped command still runs.
            drop(socket_guard);
            return Ok(Err(run_unrecorded(cfg, orig_mask, signals, &e)));
        }
    };
    Ok(Ok(Opened {
        socket,
        socket_guard,
        orig_mask,
        sources,
        gpus,
        notes,
        anchor,
        log_path,
        writer,
    }))
}

/// The log's header: the session, this node, the clock anchor, and the
/// session attributes (with the node's memory, the job cgroup's memory
/// limit where it has one, and each GPU's identity).
fn log_header(
    cfg: &RecordConfig,
    anchor: &Anchor,
    baseline: &ProcReading,
    gpus: Option<&GpuSources>,
    job_memory_limit: Option<u64>,
) -> Header {
    let mut attributes = cfg.attributes.clone();
    if let Some(limit) = job_memory_limit {
        attributes.push((
            crate::record::JOB_MEMORY_LIMIT_BYTES.to_string(),
            limit.to_string(),
        ));
    }
    if baseline.node.mem_total_kb > 0 {
        attributes.push((
            crate::record::NODE_MEMORY_TOTAL_BYTES.to_string(),
            baseline.node.mem_total_kb.saturating_mul(1024).to_string(),
        ));
    }
    for d in gpus.into_iter().flat_map(GpuSources::devices) {
        attributes.push((format!("gpu.{}.uuid", d.gpu_id), d.uuid.clone()));
        attributes.push((format!("gpu.{}.name", d.gpu_id), d.name.clone()));
        attributes.push((format!("gpu.{}.pci_bus_id", d.gpu_id), d.pci_bus_id.clone()));
    }
    Header {
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
    }
}

/// Why the log could not be made, and what to do about it.
fn log_create_error(e: WriteError) -> anyhow::Error {
    match e {
        WriteError::Io { path, source } => anyhow!(
            "cannot create log {}: {source} — pass --out DIR that you can write to{}",
            path.display(),
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                " (or a new --session-id)"
            } else {
                ""
            }
        ),
        other => anyhow!(other),
    }
}

/// The live OTLP push, running.
struct LiveExport {
    handle: thread::JoinHandle<Option<String>>,
    stop: Arc<AtomicBool>,
    counters: Arc<LiveCounters>,
    url: String,
    max_pending_bytes: usize,
}

impl LiveExport {
    /// Its last push (everything is with the exporter by now), then what
    /// was and was not delivered, on stderr.
    fn finish(self) {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        let why = self
            .handle
            .join()
            .unwrap_or_else(|_| Some("the OTLP export thread panicked".into()));
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        eprintln!(
            "tal: OTLP live push to {}: {} span(s) and {} metric point(s) delivered",
            self.url,
            n(&c.spans_sent),
            n(&c.points_sent)
        );
        if why.is_some() || n(&c.events_dropped) > 0 {
            let shed = match (n(&c.spans_shed), n(&c.points_shed)) {
                (0, 0) => String::new(),
                (s, p) => format!(
                    " (of which {s} span(s) and {p} point(s) were shed while the receiver was away, \
                     to hold at most {} MiB: --otlp-buffer)",
                    self.max_pending_bytes as f64 / (1 << 20) as f64
                ),
            };
            eprintln!(
                "tal: OTLP live push: NOT delivered: {} span(s), {} point(s){shed}{}{}; `tal convert --otlp-endpoint` can push the whole session from the log",
                n(&c.spans_lost),
                n(&c.points_lost),
                match n(&c.events_dropped) {
                    0 => String::new(),
                    d => format!(", and {d} event(s) the exporter could not keep up with"),
                },
                why.map(|w| format!(": {}", crate::term::escape_for_terminal(&w, 2000)))
                    .unwrap_or_default()
            );
        }
    }
}

impl Running {
    /// The start line, and the notes after it.
    fn announce(&self, cfg: &RecordConfig) {
        eprintln!(
            "tal: recording session={} node={} log={} socket={} interval={:?} pin={}{}",
            cfg.session_id,
            cfg.node_id,
            self.log_path.display(),
            if cfg.socket.as_os_str().is_empty() {
                "none".into()
            } else {
                cfg.socket.display().to_string()
            },
            cfg.interval,
            cfg.pin.map_or("none".to_string(), |c| format!("cpu{c}")),
            if cfg.command.is_empty() {
                String::new()
            } else {
                child::TalPath::get().describe()
            },
        );
        for note in &self.notes {
            eprintln!("{note}");
        }
    }

    /// Starts the wrapped command, if there is one: its pid, or the status
    /// of a command that could not start.
    fn spawn_command(
        &self,
        cfg: &RecordConfig,
        signals: &Signals,
    ) -> (Option<libc::pid_t>, Option<i32>) {
        let Some(mut cmd) = wrapped_command(cfg, self.orig_mask, signals.old_mask) else {
            return (None, None);
        };
        cmd.env("TAL_LOG", &self.log_path);
        if cfg.socket.as_os_str().is_empty() {
            // No socket (see `crate::ingest::sockdir`): not one of another
            // agent's either.
            cmd.env_remove("TAL_SOCKET");
        } else {
            cmd.env("TAL_SOCKET", &cfg.socket);
        }
        match spawn_wrapped(&mut cmd) {
            Ok(pid) => (Some(pid), None),
            Err(code) => (None, Some(code)),
        }
    }
}

/// Step 3: waits for the end: the wrapped command's exit, a stop signal
/// (forwarded to the command, which gets [`CHILD_GRACE`] to exit), or
/// `tal stop`. Returns why, and the command's status if it is known.
fn wait_for_end(signals: &Signals, child: Option<libc::pid_t>) -> (EndReason, Option<i32>) {
    loop {
        let Some(sig) = signals.all.wait(None) else {
            continue;
        };
        if sig == libc::SIGCHLD {
            if let Some(c) = child.and_then(try_reap) {
                return (EndReason::CommandExited(c), Some(c));
            }
            continue;
        }
        if !STOP_SIGNALS.contains(&sig) {
            continue;
        }
        // Whatever the first stop signal, a SIGINT from now on exits at
        // once (docs/reference.md: "A second SIGINT exits at once").
        arm_second_sigint();
        let code = child.and_then(|pid| stop_child(pid, sig));
        let reason = if sig == STOP_REQUEST_SIGNAL {
            EndReason::StopRequested
        } else {
            EndReason::Signal(sig)
        };
        return (reason, code);
    }
}

/// Forwards stop signal `sig` to the wrapped command (SIGTERM for a `tal
/// stop`) and waits up to [`CHILD_GRACE`] for it to exit: its status if it
/// did.
fn stop_child(pid: libc::pid_t, sig: libc::c_int) -> Option<i32> {
    let fwd = if sig == STOP_REQUEST_SIGNAL {
        libc::SIGTERM
    } else {
        sig
    };
    signals::kill(pid, fwd);
    let deadline = Instant::now() + CHILD_GRACE;
    let chld = crate::sys::SigSet::of(&[libc::SIGCHLD]);
    loop {
        if let Some(c) = try_reap(pid) {
            return Some(c);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        chld.wait(Some(left.min(Duration::from_millis(50))));
    }
}

/// Step 4: the last events in, the pipeline stopped (its last sample, the
/// end marker), the wrapped command reaped, the JSONL written, the live
/// push's last batch, and `tal stop` answered. Returns tal's exit status.
fn finalise(
    cfg: &RecordConfig,
    running: Running,
    reason: EndReason,
    child: Option<libc::pid_t>,
    code: Option<i32>,
) -> anyhow::Result<i32> {
    let Running {
        pipeline,
        listener,
        waker,
        stop_control,
        live,
        anchor,
        log_path,
        socket_dir,
        ..
    } = running;
    // Refuse client events from here on, and have every event accepted
    // before with the dispatcher: its last drain comes next.
    if !stop_control.close(&waker, Duration::from_secs(2)) {
        eprintln!(
            "tal: the ingest listener did not hand over its last events within 2 s; \
             events it accepted since may be missing"
        );
    }
    let finished = pipeline.finish(reason);
    // The log is complete: from here on (the JSONL, the report, the last
    // push) a SIGINT exits at once, removing what was being written and
    // saying how to make it again from the log. Not a SIGTERM: Slurm sends
    // two at a time limit, and the JSONL is still wanted then.
    arm_second_sigint();
    let exit = match (child, code) {
        (Some(pid), None) => reap_blocking(pid),
        (_, code) => code.unwrap_or(0),
    };
    let log = match finished {
        Ok(p) => p,
        Err(e) => {
            if e.downcast_ref::<WriteError>().is_some() {
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
    let jsonl = if cfg.convert {
        write_jsonl(cfg, &log, &anchor)
    } else {
        eprintln!("tal: log {}", log.display());
        None
    };
    if let (true, Some(j)) = (cfg.report, &jsonl) {
        write_report(j);
    }
    if let Some(dir) = &cfg.dataset {
        write_dataset(dir, &log);
    }
    // The live push's last batch, after the JSONL is on disk: a slow or
    // stuck receiver can then cost at most the push (each request has its
    // time limit), and SIGINT or SIGTERM meanwhile exits at once.
    if let Some(l) = live {
        arm_exit_signals();
        l.finish();
    }
    // Answer `tal stop` clients now that everything is written, and close
    // the socket.
    let mut reply = Vec::new();
    let mut o = crate::json::JsonOut::object(&mut reply);
    o.bool("ok", true)
        .str("log", &log.display().to_string())
        .opt_str(
            "jsonl",
            jsonl.as_ref().map(|p| p.display().to_string()).as_deref(),
        );
    o.end();
    if let Ok(mut d) = stop_control.done.lock() {
        *d = Some(String::from_utf8_lossy(&reply).into_owned());
    }
    stop_control.exit.store(true, Ordering::Release);
    waker.wake();
    let _ = listener.join();
    if let Some(d) = socket_dir {
        // Empty now: the listener removed the socket.
        let _ = std::fs::remove_dir(d);
    }
    Ok(exit)
}

/// Converts the finished log to the session's JSONL in `--out`: RHAPSODY's
/// name, unless another node of the session already has that file in a
/// shared `--out` (then this node's own name, so that no agent overwrites
/// another's checkpoint, numbered after a requeued job's earlier run of the
/// same second). The JSONL is written under a temporary name and moved to
/// the first free name only when complete, without replacing anything
/// ([`convert::PendingOutput::commit_first_free`]): agents of several nodes
/// that stop at the same moment (a `scancel` of the job) each get a name of
/// their own, and a name only ever holds a whole JSONL. Interrupted (a
/// SIGINT exits at once from here on: see `finalise`), tal
/// removes the temporary and says how to convert the log again. Says what
/// it wrote, or why it could not.
fn write_jsonl(cfg: &RecordConfig, log: &std::path::Path, anchor: &Anchor) -> Option<PathBuf> {
    let names = jsonl_names(&cfg.out, &cfg.session_id, &cfg.node_id, anchor.wall_ns);
    crate::tempfiles::set_signal_message(format!(
        "\ntal: interrupted; the log {} is complete: `tal convert {}` (or `tal report`) makes what was not written\n",
        log.display(),
        log.display()
    ));
    match convert::to_jsonl(&[log.to_path_buf()], &Output::FirstFree(names)) {
        Ok((path, summary)) => {
            for l in convert::describe(&summary) {
                eprintln!("tal: {l}");
            }
            let p = path?;
            eprintln!("tal: {}", convert::describe_written(&p, &summary));
            Some(p)
        }
        Err(e) => {
            eprintln!(
                "tal: cannot convert {}: {e}; the log is complete: run tal convert on it",
                log.display()
            );
            None
        }
    }
}

/// Writes this node's parts of the session's Parquet dataset into `dir`
/// (see `crate::dataset`); says what it wrote, or why it could not (the
/// log is complete either way, and `tal convert --format parquet` makes
/// the parts again from it).
fn write_dataset(dir: &std::path::Path, log: &std::path::Path) {
    if let Err(e) = crate::dataset::convert(&[log.to_path_buf()], Some(dir), true, "tal") {
        eprintln!(
            "tal: cannot write the dataset parts of {}: {e}; the log is complete: \
             tal convert --format parquet -o {} makes them",
            log.display(),
            dir.display()
        );
    }
}

/// The names the session's JSONL may take in `out`, in order: RHAPSODY's,
/// then the node's own, then numbered.
fn jsonl_names(
    out: &std::path::Path,
    session_id: &str,
    node_id: &str,
    wall_ns: i64,
) -> Vec<PathBuf> {
    let own = convert::node_file_name(session_id, node_id, wall_ns);
    let stem = own.strip_suffix(".telemetry.jsonl").unwrap_or(&own);
    std::iter::once(convert::default_file_name(session_id, wall_ns))
        .chain(std::iter::once(own.clone()))
        .chain((1..=MAX_LOG_NUMBER).map(|n| format!("{stem}.{n}.telemetry.jsonl")))
        .map(|n| out.join(n))
        .collect()
}

/// The HTML report of the JSONL `jsonl`, beside it (`--report`). A
/// failure is said on stderr and changes nothing else: the log and the
/// JSONL are written by then.
fn write_report(jsonl: &std::path::Path) {
    let path = jsonl.with_file_name(format!("{}.report.html", convert::jsonl_stem(jsonl)));
    let open = || std::fs::File::open(jsonl).map(|f| std::io::BufReader::with_capacity(1 << 20, f));
    let mut src = crate::items::jsonl::Jsonl::new(open);
    match convert::write_output(&path, |w| crate::report::write_report(&mut src, w)) {
        Ok(_) => eprintln!("tal: report {}", path.display()),
        Err(e) => eprintln!("tal: cannot write the report {}: {e}", path.display()),
    }
}

/// Removes the socket file, and a directory tal made for it, if `tal
/// record` fails before its listener runs.
struct SocketGuard {
    socket: Option<PathBuf>,
    dir: Option<PathBuf>,
    /// Both, for a signal that ends tal at once.
    registered: Vec<crate::tempfiles::Registered>,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(d) = self.dir.take() {
            // Only if empty: nothing but tal's socket was ever in it.
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_jsonl_gets_a_name_of_its_own_and_only_when_whole() {
        // Agents of a session that stop at the same moment each finish a
        // JSONL: the second must not replace the first one's, and no name
        // holds a file before it is complete.
        let dir = tempfile::tempdir().unwrap();
        let wall = 1_700_000_000_000_000_000;
        let names = jsonl_names(dir.path(), "s", "n1", wall);
        let pending: Vec<_> = (0..4)
            .map(|_| convert::PendingOutput::create(&names[0]).unwrap())
            .collect();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        assert!(
            names.iter().all(|n| !n.exists()),
            "nothing under a final name yet"
        );
        let got: Vec<String> = pending
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                use std::io::Write;
                writeln!(p.writer, "{i}").unwrap();
                let path = p.commit_first_free(&names).unwrap();
                assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{i}\n"));
                path.file_name().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            got,
            [
                "s.1700000000.telemetry.jsonl",
                "s.n1.1700000000.telemetry.jsonl",
                "s.n1.1700000000.1.telemetry.jsonl",
                "s.n1.1700000000.2.telemetry.jsonl",
            ]
        );
        // No temporary left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}
