//! Step 2 of `tal record` (see `super`): the rings, and the pipeline's
//! threads started in the order that lets each wake the next: the live
//! exporter, the dispatcher (with the writer stage), the samplers (proc,
//! GPU, tasks), then the ingest listener. Apart from opening (step 1) and
//! finalising (step 4), which own the log and the outputs: this only
//! connects and spawns.

use super::stage::WriterStage;
use super::{
    signals, DispatchResult, LiveExport, Opened, Pipeline, RecordConfig, BACKFILL_RING,
    EXPORT_RING, GPU_RING, INGEST_RECYCLE, INGEST_RING, PROC_RING, SUBSCRIBER_RING,
};
use crate::agent::affinity::CpuMask;
use crate::agent::gpu::{GpuAgent, GpuCounters, GpuSources};
use crate::agent::proc::{ProcAgent, ProcSample, ProcSources};
use crate::agent::tasks::{TaskAgent, TaskCounters, TaskKeys, TaskSample};
use crate::agent::AgentCounters;
use crate::clock::Anchor;
use crate::dispatch::{encode_end_reason, Dispatcher};
use crate::ingest::listener::{AgentInfo, IngestCounters, Listener, StopControl, Waker};
use crate::log::{LogWriter, WriteError};
use crate::otlp_live::{LiveCounters, LiveExporter};
use crate::record::EndReason;
use crate::ring;
use anyhow::Context;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// What [`start`] made: the pipeline's threads, running.
pub(super) struct Running {
    pub(super) pipeline: Pipeline,
    pub(super) listener: thread::JoinHandle<()>,
    pub(super) waker: Waker,
    pub(super) stop_control: Arc<StopControl>,
    pub(super) live: Option<LiveExport>,
    pub(super) orig_mask: CpuMask,
    pub(super) notes: Vec<String>,
    pub(super) anchor: Anchor,
    pub(super) log_path: PathBuf,
    /// A directory tal made for its socket, removed at the end.
    pub(super) socket_dir: Option<PathBuf>,
    /// The socket and that directory, for a signal that ends tal at once.
    pub(super) _socket_registered: Vec<crate::tempfiles::Registered>,
}

/// The flags and counters the pipeline's threads share.
struct Shared {
    counters: Arc<AgentCounters>,
    ingest_counters: Arc<IngestCounters>,
    gpu_counters: Arc<GpuCounters>,
    records_dropped: Arc<AtomicU64>,
    stop_control: Arc<StopControl>,
    sampler_stop: Arc<AtomicBool>,
    dispatch_stop: Arc<AtomicBool>,
    end_reason: Arc<AtomicU64>,
}

impl Shared {
    fn new() -> Self {
        Self {
            counters: Arc::default(),
            ingest_counters: Arc::default(),
            gpu_counters: Arc::default(),
            records_dropped: Arc::default(),
            stop_control: Arc::default(),
            sampler_stop: Arc::default(),
            dispatch_stop: Arc::default(),
            end_reason: Arc::new(AtomicU64::new(encode_end_reason(EndReason::StopRequested))),
        }
    }
}

/// The rings the dispatcher drains, and the live exporter it feeds.
struct DispatchInputs<'a> {
    proc: ring::Consumer<ProcSample>,
    ingest: (
        ring::Consumer<crate::ingest::batch::IngestBatch>,
        ring::Producer<crate::ingest::batch::IngestBatch>,
    ),
    gpu: Option<(
        crate::agent::gpu::PollsIn,
        ring::Consumer<crate::agent::gpu::Backfill>,
    )>,
    live: Option<(ring::Producer<crate::otlp_live::Offered>, &'a LiveExport)>,
    fanout: crate::dispatch::Fanout,
    tasks: Option<(ring::Consumer<TaskSample>, Arc<TaskCounters>)>,
}

/// The task sampler's rings: starts and ends from the listener, samples
/// to the dispatcher.
const TASK_WATCH_RING: usize = 1024;
const TASK_SAMPLE_RING: usize = 8192;

/// Step 2: the rings, and the threads in the order that lets each wake the
/// next: the live exporter, the dispatcher (with the writer stage), the
/// samplers, then the ingest listener.
pub(super) fn start(cfg: &RecordConfig, o: Opened) -> anyhow::Result<Running> {
    let Opened {
        socket,
        mut socket_guard,
        orig_mask,
        sources,
        gpus,
        notes,
        anchor,
        log_path,
        writer,
    } = o;
    let shared = Shared::new();
    let (proc_tx, proc_rx) = ring::channel::<ProcSample>(PROC_RING);
    let (ingest_tx, ingest_rx) = ring::channel::<crate::ingest::batch::IngestBatch>(INGEST_RING);
    let (recycle_tx, recycle_rx) =
        ring::channel::<crate::ingest::batch::IngestBatch>(INGEST_RECYCLE);
    let (mut listener, waker, fanout) = ingest_listener(
        cfg,
        socket,
        &log_path,
        (ingest_tx, recycle_rx),
        &shared.ingest_counters,
        &shared.stop_control,
    )?;
    // Both agents sample on the grid start + k·interval.
    let grid = (crate::clock::mono_ns(), cfg.interval.as_nanos() as u64);
    let gpu_rings = gpus.as_ref().map(|_| {
        (
            crate::agent::gpu::poll_rings(GPU_RING),
            ring::channel::<crate::agent::gpu::Backfill>(BACKFILL_RING),
        )
    });
    let (gpu_tx, gpu_rx) = match gpu_rings {
        Some(((tx, rx), (btx, brx))) => (Some((tx, btx)), Some((rx, brx))),
        None => (None, None),
    };
    // The live OTLP exporter first, so that the dispatcher can wake it.
    let (live_tx, live) = match start_live(cfg, &anchor)? {
        Some((tx, live)) => (Some(tx), Some(live)),
        None => (None, None),
    };
    // The task sampler's rings, when tasks are sampled.
    let task_counters = Arc::new(TaskCounters::default());
    let (task_out, task_in) = match cfg.task_interval {
        Some(_) => {
            let (wtx, wrx) = crate::agent::tasks::watch_rings(TASK_WATCH_RING);
            let (stx, srx) = ring::channel::<TaskSample>(TASK_SAMPLE_RING);
            (
                Some((wrx, stx, wtx)),
                Some((srx, Arc::clone(&task_counters))),
            )
        }
        None => (None, None),
    };
    let inputs = DispatchInputs {
        proc: proc_rx,
        ingest: (ingest_rx, recycle_tx),
        gpu: gpu_rx,
        live: live_tx.zip(live.as_ref()),
        fanout,
        tasks: task_in,
    };
    let dispatcher = start_dispatcher(cfg, &shared, writer, &anchor, inputs, grid)?;
    let sampler = start_proc(sources, proc_tx, grid, &shared, &dispatcher)?;
    let gpu = match (gpus, gpu_tx) {
        (Some(src), Some(rings)) => Some(start_gpu(
            src,
            rings,
            grid,
            &shared.gpu_counters,
            &shared.sampler_stop,
        )?),
        _ => None,
    };
    let tasks = match (task_out, cfg.task_interval) {
        (Some(rings), Some(every)) => Some(start_tasks(
            rings,
            every,
            &task_counters,
            &shared,
            &dispatcher,
            &mut listener,
        )?),
        _ => None,
    };
    listener.set_dispatcher(dispatcher.thread().clone());
    let listener = thread::Builder::new()
        .name("tal-ingest".into())
        .spawn(move || listener.run())
        .context("cannot start the ingest listener thread")?;
    // The listener removes the socket file from now on (and `finalise` a
    // directory made for it).
    let socket_dir = socket_guard.dir.take();
    socket_guard.socket = None;
    let socket_registered = std::mem::take(&mut socket_guard.registered);
    Ok(Running {
        pipeline: Pipeline {
            sampler,
            gpu,
            tasks,
            dispatcher,
            sampler_stop: shared.sampler_stop,
            dispatch_stop: shared.dispatch_stop,
            end_reason: shared.end_reason,
        },
        listener,
        waker,
        stop_control: shared.stop_control,
        live,
        orig_mask,
        notes,
        anchor,
        log_path,
        socket_dir,
        _socket_registered: socket_registered,
    })
}

/// The /proc sampler's thread, on the grid `grid.0 + k·grid.1` (ns).
fn start_proc(
    sources: ProcSources,
    tx: ring::Producer<ProcSample>,
    grid: (u64, u64),
    shared: &Shared,
    dispatcher: &thread::JoinHandle<Result<PathBuf, WriteError>>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let agent = ProcAgent::new(
        sources,
        tx,
        grid.1,
        Arc::clone(&shared.counters),
        Arc::clone(&shared.sampler_stop),
        dispatcher.thread().clone(),
    )
    .starting_at(grid.0);
    thread::Builder::new()
        .name("tal-proc".into())
        .spawn(move || agent.run())
        .context("cannot start the sampling thread")
}

/// The task sampler's thread (`--task-interval`), which the listener
/// tells of tasks to watch through `rings`.
fn start_tasks(
    (wrx, stx, wtx): (
        crate::agent::tasks::WatchRx,
        ring::Producer<TaskSample>,
        crate::agent::tasks::WatchTx,
    ),
    every: Duration,
    task_counters: &Arc<TaskCounters>,
    shared: &Shared,
    dispatcher: &thread::JoinHandle<Result<PathBuf, WriteError>>,
    listener: &mut Listener,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let agent = TaskAgent::new(
        wrx,
        stx,
        every.as_nanos() as u64,
        Arc::clone(task_counters),
        Arc::clone(&shared.sampler_stop),
        dispatcher.thread().clone(),
    );
    let t = thread::Builder::new()
        .name("tal-tasks".into())
        .spawn(move || agent.run())
        .context("cannot start the task sampling thread")?;
    let mut keys = TaskKeys::new(wtx, Arc::clone(task_counters));
    keys.set_thread(t.thread().clone());
    listener.set_tasks(keys);
    Ok(t)
}

/// The dispatcher's thread, with the writer stage on `writer` as its sink
/// (on a thread of its own in the benchmark-only `writer-thread` build).
fn start_dispatcher(
    cfg: &RecordConfig,
    shared: &Shared,
    writer: LogWriter,
    anchor: &Anchor,
    inputs: DispatchInputs<'_>,
    (start_ns, interval_ns): (u64, u64),
) -> anyhow::Result<thread::JoinHandle<DispatchResult>> {
    let stage = WriterStage::new(writer, Arc::clone(&shared.records_dropped))
        .telling(Arc::clone(&shared.stop_control));
    #[cfg(feature = "writer-thread")]
    let stage =
        super::threaded::ThreadedStage::spawn(stage).context("cannot start the writer thread")?;
    let mut d = Dispatcher::new(
        inputs.proc,
        stage,
        Arc::clone(&shared.counters),
        Arc::clone(&shared.records_dropped),
        cfg.backend.clone(),
        cfg.interval,
        anchor.wall_ns,
        cfg.snapshot_every,
    )
    .with_ingest(
        inputs.ingest,
        cfg.node_id.clone(),
        Arc::clone(&shared.ingest_counters),
    )
    .with_fanout(inputs.fanout);
    if let Some((rx, brx)) = inputs.gpu {
        d = d.with_gpu(
            rx,
            brx,
            Arc::clone(&shared.gpu_counters),
            start_ns,
            interval_ns,
        );
    }
    if let Some((rx, counters)) = inputs.tasks {
        d = d.with_tasks(rx, counters);
    }
    if let Some((tx, l)) = inputs.live {
        d = d.with_exporter(tx, l.handle.thread().clone(), Arc::clone(&l.counters));
    }
    let stop = Arc::clone(&shared.dispatch_stop);
    let reason = Arc::clone(&shared.end_reason);
    thread::Builder::new()
        .name("tal-dispatch".into())
        .spawn(move || d.run(stop, reason).into_sink().finish())
        .context("cannot start the dispatcher thread")
}

/// The ingest listener on `socket` (not yet running), the waker the
/// dispatcher wakes it with, and the dispatcher's fan-out to its live
/// subscribers (through a ring back to the listener).
fn ingest_listener(
    cfg: &RecordConfig,
    socket: UnixListener,
    log_path: &std::path::Path,
    rings: (
        ring::Producer<crate::ingest::batch::IngestBatch>,
        ring::Consumer<crate::ingest::batch::IngestBatch>,
    ),
    counters: &Arc<IngestCounters>,
    stop_control: &Arc<StopControl>,
) -> anyhow::Result<(Listener, Waker, crate::dispatch::Fanout)> {
    let (mut listener, waker) = Listener::new(
        socket,
        cfg.socket.clone(),
        rings,
        Arc::clone(counters),
        Arc::clone(stop_control),
        AgentInfo {
            session_id: cfg.session_id.clone(),
            node_id: cfg.node_id.clone(),
            log: log_path.to_path_buf(),
        },
        signals::request_stop,
    )
    .context("cannot start the ingest listener")?;
    let (sub_tx, sub_rx) = ring::channel::<crate::ingest::listener::SubLine>(SUBSCRIBER_RING);
    let subscribers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    listener.set_subscriptions(sub_rx, Arc::clone(&subscribers));
    let fanout = crate::dispatch::Fanout::new(
        crate::event_json::Ctx::new(&cfg.session_id),
        cfg.node_id.clone(),
        subscribers,
        sub_tx,
        waker.clone(),
        Arc::clone(&counters.sub_dropped),
    );
    Ok((listener, waker, fanout))
}

/// The GPU agent's thread, polling on the grid `start_ns + k·interval_ns`
/// into its rings (polls, back-fills).
fn start_gpu(
    src: GpuSources,
    (tx, btx): (
        crate::agent::gpu::PollsOut,
        ring::Producer<crate::agent::gpu::Backfill>,
    ),
    (start_ns, interval_ns): (u64, u64),
    counters: &Arc<GpuCounters>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let agent = GpuAgent::new(
        src,
        tx,
        btx,
        start_ns,
        interval_ns,
        Arc::clone(counters),
        Arc::clone(stop),
    );
    thread::Builder::new()
        .name("tal-gpu".into())
        .spawn(move || agent.run())
        .context("cannot start the GPU sampling thread")
}

/// The live OTLP exporter's thread, if `--otlp-endpoint` asked for one,
/// and the ring the dispatcher feeds it through.
fn start_live(
    cfg: &RecordConfig,
    anchor: &Anchor,
) -> anyhow::Result<Option<(ring::Producer<crate::otlp_live::Offered>, LiveExport)>> {
    let Some(live) = &cfg.otlp else {
        return Ok(None);
    };
    let (tx, rx) = ring::channel::<crate::otlp_live::Offered>(EXPORT_RING);
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(LiveCounters::default());
    let exporter = LiveExporter::new(
        rx,
        live,
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
    Ok(Some((
        tx,
        LiveExport {
            handle,
            stop,
            counters,
            url: live.endpoints.traces.to_string(),
            max_pending_bytes: live.max_pending_bytes,
        },
    )))
}
