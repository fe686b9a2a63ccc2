//! The JSONL checkpoint writer: RHAPSODY's `event`, `metric` and `span`
//! lines (see `SCHEMA.md`), from a merged event stream.
//!
//! Layout of the file, as RHAPSODY writes it: every event line in time
//! order, then one SessionEnded line for the whole session, then the metric
//! line, then the span lines (task spans, then the session span).
//!
//! Multi-node rules: the earliest SessionStarted is written and the others
//! are dropped, one SessionEnded closes the session at the latest node's
//! end, so there is one session span covering all nodes. A node log with no
//! SessionEnded (the agent was killed) ends at its last record's time, and
//! the SessionEnded line then carries `"recovered": true` in its attributes
//! (as does a SessionStarted synthesised at the header's start time when no
//! node log has one, e.g. a log cut off right after its header).
//!
//! Extension keys (RHAPSODY's keys are never renamed or retyped):
//! - ResourceUpdate: `cpu_percent_per_core` (list of floats), plus any
//!   extension fields the agent recorded.
//! - metric line: the agent's own cost summed over nodes (`agent_cpu_seconds`,
//!   `agent_cpu_us_per_sample`, `agent_peak_rss_bytes` (max over nodes),
//!   `agent_samples_taken`, `agent_samples_dropped`, `agent_deadlines_missed`,
//!   `agent_read_errors` (samples with any source failed),
//!   `agent_read_errors_by_source` (failed reads or parses per source:
//!   `proc_stat`, `proc_meminfo`, `proc_diskstats`, `proc_net_dev`,
//!   `cgroup_cpu`, `cgroup_memory`, `cgroup_memory_peak`, `cgroup_io`; per
//!   node in `tal_logs[].read_errors_by_source`),
//!   `agent_records_dropped`, and the ingest socket's
//!   `ingest_events_accepted`, `ingest_lines_rejected`,
//!   `ingest_events_dropped`, `subscriber_events_dropped`, and
//!   `ingest_clients_refused`, clients turned away out of file
//!   descriptors, and `ingest_task_ids_reused`, task events that used a
//!   task id again: see `crate::ingest::reuse`), sampling jitter and read
//!   latency percentiles from the merged HDR histograms
//!   (`agent_sampling_jitter_p50_ms`, `..._p99_ms`, `..._max_ms`,
//!   `agent_sample_latency_p50_us`, `..._p99_us`), utilisation percentiles
//!   (`node_cpu_utilization_p50/p90/p99/max`, same for memory), task duration
//!   percentiles when there are tasks (`task_duration_seconds_p50/p90/p99/max`),
//!   and `tal_logs`: one object per node log with what reading it found
//!   and the node's `attributes` (Slurm ids; the node's memory,
//!   `node.memory_total_bytes`, a decimal string; each GPU's `gpu.N.uuid`,
//!   `gpu.N.name`, `gpu.N.pci_bus_id`, N being the `gpu_id` of its
//!   per_gpu events). With GPUs: `agent_gpu_polls`,
//!   `agent_gpu_polls_dropped`, `agent_gpu_deadlines_missed`,
//!   `agent_gpu_devices_disabled` (times a device stopped answering),
//!   `agent_gpu_errors` (NVML errors, all devices; per device in
//!   `tal_logs[].gpu_errors`), `agent_gpu_cpu_us_per_poll` (the GPU
//!   thread's CPU per poll, back-fills included), `agent_gpu_backfills`,
//!   `agent_gpu_backfill_cpu_us` (CPU per back-fill call),
//!   `agent_gpu_backfills_dropped`, `agent_nvml_latency_p50_us` / `_p99_us` /
//!   `_max_us` (NVML time per device and poll), and the GPUs' energy:
//!   `gpu_energy_joules`, each device's energy over the session, as an
//!   object keyed by `gpu_id` (by `node:gpu_id` when several nodes), and
//!   `gpu_energy_joules_total`. Where tasks were sampled (see
//!   `crate::agent::tasks`): `task_samples_taken`, `task_samples_dropped`,
//!   `task_tasks_refused`, `task_processes_refused`, `task_watches_dropped`
//!   and `agent_task_thread_cpu_seconds` (the task sampler's own CPU).
//! - session span attributes: `nodes` (how many node logs) and, with GPUs,
//!   `gpu_energy_joules` and `gpu_energy_joules_total` as on the metric line.
//! - task span attributes: `queued_time_s` when TaskQueued was seen,
//!   `closed_at_session_end`, and the other attributes of the task's events
//!   (see `tasks`).

use super::merge::Merge;
use super::replay::{replay, Replayed, Sink};
use crate::clock::ns_to_secs;
use crate::event_json::{energy_fields, session_energy, write_session_span, write_task_span, Ctx};
use crate::instruments::{Instruments, COUNTER_NAMES};
use crate::json::JsonOut;
use crate::log::{LogReader, ReadStats};
use crate::record::{AgentSnapshot, Event};
use crate::stats;
use crate::tasks::TaskSpan;
use hdrhistogram::Histogram;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};

/// What one conversion did, per log and overall.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Session id.
    pub session_id: String,
    /// Earliest start, ns since the epoch.
    pub start_wall_ns: i64,
    /// Session end, ns since the epoch.
    pub end_wall_ns: i64,
    /// Event lines written (including the one SessionEnded).
    pub events: u64,
    /// Per log: path, node, reading statistics.
    pub logs: Vec<(PathBuf, String, ReadStats)>,
    /// Inputs refused, each with why (see [`super::open_logs`]): when any
    /// was, the commands exit 1 after converting the others.
    pub refused: Vec<String>,
    /// Inputs taken once though given more than once, said so.
    pub repeated: Vec<String>,
    /// Tasks in the session (spans written), and how many were still open
    /// at its end.
    pub tasks: u64,
    /// Of [`Self::tasks`], those closed by the session's end.
    pub tasks_open_at_end: u64,
    /// Task events that used a task id again, as the agents counted them
    /// (`ingest_task_ids_reused`): tasks recorded but not counted apart.
    pub task_ids_reused: u64,
    /// The converting process's peak resident memory during the conversion,
    /// and its resident memory when the conversion began, bytes (see
    /// [`crate::stats::peak_rss`]); set by [`super::to_jsonl`].
    pub peak_rss_bytes: Option<(u64, u64)>,
}

fn pct(h: &Option<Histogram<u64>>, q: f64) -> Option<u64> {
    h.as_ref().filter(|h| !h.is_empty()).map(|h| {
        if q >= 1.0 {
            h.max()
        } else {
            h.value_at_quantile(q)
        }
    })
}

/// Span lines kept for the end of the file: in memory up to
/// [`SpanSpill::MEMORY`], beyond that in an unnamed temporary file (created
/// with `O_TMPFILE` or unlinked at once, so nothing is left behind), so that
/// a session's memory at conversion does not grow with its closed tasks.
struct SpanSpill<'a> {
    dir: &'a Path,
    buf: Vec<u8>,
    file: Option<io::BufWriter<File>>,
}

impl<'a> SpanSpill<'a> {
    /// Span lines held in memory before the rest go to disk.
    const MEMORY: usize = 4 << 20;

    fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            buf: Vec::with_capacity(Self::MEMORY + (64 << 10)),
            file: None,
        }
    }

    /// Adds one task's span line.
    fn push(&mut self, ctx: &Ctx, sp: &TaskSpan) -> io::Result<()> {
        write_task_span(&mut self.buf, ctx, sp);
        if self.buf.len() >= Self::MEMORY {
            if self.file.is_none() {
                let f = tempfile::tempfile_in(self.dir).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "cannot create a temporary file for task spans in {} \
                             (the spans wait there for the end of the events; it is \
                             the output's directory, or $TMPDIR when writing to \
                             stdout or a device: set TMPDIR to a writable one): {e}",
                            self.dir.display()
                        ),
                    )
                })?;
                self.file = Some(io::BufWriter::with_capacity(1 << 20, f));
            }
            let f = self.file.as_mut().expect("just made");
            f.write_all(&self.buf).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot write task spans to a temporary file in {}: {e}",
                        self.dir.display()
                    ),
                )
            })?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes every span line, in order, to `out`.
    fn copy_to(self, out: &mut dyn Write) -> io::Result<()> {
        if let Some(f) = self.file {
            let mut f = f.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            io::copy(&mut io::BufReader::with_capacity(1 << 20, f), out)?;
        }
        out.write_all(&self.buf)
    }
}

/// The JSONL sink of a replay: event lines go through `buf` to `out`, span
/// lines wait in `spans` for the end of the file.
struct Lines<'a> {
    ctx: Ctx,
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    spans: SpanSpill<'a>,
}

impl Sink for Lines<'_> {
    fn event(&mut self, node: &str, ev: &Event) -> io::Result<()> {
        self.ctx.event_line(&mut self.buf, node, ev);
        if self.buf.len() >= 1 << 20 {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn span(&mut self, span: &TaskSpan) -> io::Result<()> {
        self.spans.push(&self.ctx, span)
    }
}

impl Lines<'_> {
    /// The span lines after the event and metric lines: the task spans in
    /// closing order, then `session_span` (written by the caller into the
    /// buffer it is given), as RHAPSODY writes them.
    fn finish(self, session_span: impl FnOnce(&mut Vec<u8>, &Ctx)) -> io::Result<()> {
        let Self {
            ctx,
            out,
            mut buf,
            spans,
        } = self;
        out.write_all(&buf)?;
        buf.clear();
        spans.copy_to(out)?;
        session_span(&mut buf, &ctx);
        out.write_all(&buf)?;
        out.flush()
    }
}

/// Merges `readers` (logs of one session) and writes the JSONL checkpoint
/// to `out`; span lines beyond a few MiB wait in a temporary file in
/// `spill_dir` (see `SpanSpill`).
pub fn write_jsonl(
    readers: Vec<LogReader>,
    out: &mut dyn Write,
    spill_dir: &Path,
) -> io::Result<Summary> {
    write_jsonl_showing(
        readers,
        out,
        spill_dir,
        &crate::progress::Progress::hidden(),
    )
}

/// [`write_jsonl`], showing the bytes of the logs read in `progress`.
pub fn write_jsonl_showing(
    readers: Vec<LogReader>,
    out: &mut dyn Write,
    spill_dir: &Path,
    progress: &crate::progress::Progress,
) -> io::Result<Summary> {
    let mut lines = Lines {
        ctx: Ctx::new(&readers[0].header().session_id),
        out,
        buf: Vec::with_capacity(1 << 20),
        spans: SpanSpill::new(spill_dir),
    };
    let r = replay(readers, &mut lines, progress)?;
    let energy = session_energy(&r.tracker, r.merge.nodes.len());
    write_metric_line(&mut lines.buf, &r.merge, &r.inst, r.end.end_ns, &energy);
    lines.finish(|buf, ctx| {
        write_session_span(
            buf,
            ctx,
            &r.backend,
            r.start_ns,
            r.end.end_ns,
            r.merge.nodes.len(),
            &energy,
        )
    })?;
    Ok(Summary::of(r))
}

impl Summary {
    /// What the replay `r` did.
    fn of(r: Replayed) -> Self {
        let task_ids_reused = r
            .merge
            .nodes
            .iter()
            .filter_map(|n| n.snapshot.as_ref())
            .fold(0, |a: u64, s| a.saturating_add(s.ingest_task_ids_reused.0));
        let logs = r
            .merge
            .nodes
            .iter()
            .zip(r.node_ids)
            .map(|(n, id)| (n.reader.path().to_path_buf(), id, n.reader.stats().clone()))
            .collect();
        Summary {
            session_id: r.session_id,
            start_wall_ns: r.start_ns,
            end_wall_ns: r.end.end_ns,
            events: r.events,
            logs,
            tasks: r.tasks,
            tasks_open_at_end: r.tasks_open_at_end,
            task_ids_reused,
            peak_rss_bytes: None,
            refused: Vec::new(),
            repeated: Vec::new(),
        }
    }
}

/// The metric line: RHAPSODY's instruments, the agents' totals, the GPUs'
/// energy and `tal_logs`.
pub fn write_metric_line(
    buf: &mut Vec<u8>,
    merge: &Merge,
    inst: &Instruments,
    end_ns: i64,
    energy: &[(String, f64)],
) {
    let mut o = JsonOut::object(buf);
    o.f64("checkpoint_time", ns_to_secs(end_ns));
    session_instruments(&mut o, inst);
    if let Some(agents) = AgentTotals::of(merge) {
        agents.write(&mut o);
    }
    energy_fields(&mut o, energy);
    tal_logs(&mut o, merge);
    o.str("section", "metric");
    o.end();
    buf.push(b'\n');
}

/// The agents' own cost and counters, summed (or merged) over the nodes'
/// last `snapshots`, as a JSON object of the metric line's names (empty
/// when there is no snapshot): for a reader of several logs' parts that
/// has each log's snapshot (`crate::items::dataset`).
pub fn agent_totals(snapshots: &[AgentSnapshot]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut o = JsonOut::object(&mut buf);
    if let Some(t) = AgentTotals::of_snapshots(snapshots.iter()) {
        t.write(&mut o);
    }
    o.end();
    buf
}

/// RHAPSODY's instruments: the task counters, `tasks_running`, the task
/// durations (with percentiles) and the node utilisation gauges.
fn session_instruments(o: &mut JsonOut<'_>, inst: &Instruments) {
    for (name, v) in COUNTER_NAMES.iter().zip(inst.counters) {
        if let Some(v) = v {
            o.uint(name, v);
        }
    }
    if let Some(r) = inst.running {
        o.int("tasks_running", r);
    }
    if inst.duration_count > 0 {
        o.uint("task_duration_seconds_count", inst.duration_count)
            .f64("task_duration_seconds_sum", inst.duration_sum);
        let h = Some(inst.duration_hist.clone());
        for (k, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
            if let Some(v) = pct(&h, q) {
                o.f64(&format!("task_duration_seconds_{k}"), v as f64 / 1e6);
            }
        }
    }
    for (i, name) in [
        "node_cpu_utilization",
        "node_memory_utilization",
        "node_gpu_utilization",
    ]
    .iter()
    .enumerate()
    {
        if let Some(v) = inst.node_gauge(i) {
            o.f64(name, v);
        }
    }
}

/// The agents' own cost and counters, summed (or merged) over the nodes'
/// last snapshots.
struct AgentTotals {
    cpu_ns: u64,
    /// The largest peak RSS of any node's agent.
    rss: u64,
    /// In [`AGENT_COUNTS`] order.
    counts: [u64; 11],
    /// In [`AgentTotals::GPU`] order.
    gpu: [u64; 9],
    by_source: [u64; crate::agent::SOURCES],
    /// The task samplers' counters ([`crate::agent::tasks::COUNTER_NAMES`]),
    /// their threads' CPU ns, and whether any node sampled tasks.
    tasks: ([u64; 5], u64, bool),
    /// CPU %, memory %, sample latency, jitter, NVML latency.
    hists: [Option<Histogram<u64>>; 5],
}

/// The metric line's names of [`AgentTotals::counts`].
const AGENT_COUNTS: [&str; 11] = [
    "agent_samples_taken",
    "agent_samples_dropped",
    "agent_deadlines_missed",
    "agent_read_errors",
    "agent_records_dropped",
    "ingest_events_accepted",
    "ingest_lines_rejected",
    "ingest_events_dropped",
    "subscriber_events_dropped",
    "ingest_clients_refused",
    "ingest_task_ids_reused",
];

impl AgentTotals {
    /// GPU agents: polls, polls dropped, deadlines missed, devices
    /// disabled, thread CPU ns, errors, back-fills, their CPU ns, back-fills
    /// dropped.
    const GPU: [&'static str; 4] = [
        "agent_gpu_polls",
        "agent_gpu_polls_dropped",
        "agent_gpu_deadlines_missed",
        "agent_gpu_devices_disabled",
    ];

    /// The totals of `merge`'s nodes; `None` when no node left a snapshot.
    fn of(merge: &Merge) -> Option<Self> {
        Self::of_snapshots(merge.nodes.iter().filter_map(|n| n.snapshot.as_ref()))
    }

    /// The totals of the nodes' last `snapshots`; `None` when there is none.
    fn of_snapshots<'a>(snapshots: impl Iterator<Item = &'a AgentSnapshot>) -> Option<Self> {
        let mut t = Self {
            cpu_ns: 0,
            rss: 0,
            counts: [0; 11],
            gpu: [0; 9],
            by_source: [0; crate::agent::SOURCES],
            tasks: ([0; 5], 0, false),
            hists: [None, None, None, None, None],
        };
        let mut any = false;
        for s in snapshots {
            any = true;
            let add = |into: &mut [u64], from: &[u64]| {
                for (c, v) in into.iter_mut().zip(from) {
                    *c = c.saturating_add(*v);
                }
            };
            add(&mut t.by_source, &s.read_errors_by_source);
            if !s.task_counters.is_empty() {
                add(&mut t.tasks.0, &s.task_counters);
                t.tasks.1 = t.tasks.1.saturating_add(s.task_thread_cpu_ns);
                t.tasks.2 = true;
            }
            add(
                &mut t.gpu,
                &[
                    s.gpu_polls,
                    s.gpu_polls_dropped,
                    s.gpu_deadlines_missed,
                    s.gpu_devices_disabled,
                    s.gpu_thread_cpu_ns,
                    s.gpu_errors
                        .iter()
                        .fold(0, |a: u64, &e| a.saturating_add(e)),
                    s.gpu_backfills,
                    s.gpu_backfill_cpu_ns,
                    s.gpu_backfills_dropped,
                ],
            );
            add(
                &mut t.counts,
                &[
                    s.samples_taken,
                    s.samples_dropped,
                    s.deadlines_missed,
                    s.read_errors,
                    s.records_dropped,
                    s.ingest_accepted,
                    s.ingest_rejected,
                    s.ingest_dropped,
                    s.subscriber_dropped,
                    s.ingest_clients_refused,
                    s.ingest_task_ids_reused.0,
                ],
            );
            t.cpu_ns = t
                .cpu_ns
                .saturating_add(s.cpu_user_ns.saturating_add(s.cpu_system_ns));
            t.rss = t.rss.max(s.peak_rss_bytes);
            for (h, bytes) in t.hists.iter_mut().zip([
                &s.hist_cpu_permille,
                &s.hist_mem_permille,
                &s.hist_sample_latency_ns,
                &s.hist_jitter_ns,
                &s.hist_nvml_latency_ns,
            ]) {
                if !bytes.is_empty() {
                    stats::merge_into(h, bytes);
                }
            }
        }
        any.then_some(t)
    }

    fn write(&self, o: &mut JsonOut<'_>) {
        let [hc, hm, hl, hj, _] = &self.hists;
        o.f64("agent_cpu_seconds", self.cpu_ns as f64 / 1e9);
        if self.counts[0] > 0 {
            o.f64(
                "agent_cpu_us_per_sample",
                (self.cpu_ns as f64 / 1e3 / self.counts[0] as f64 * 100.0).round() / 100.0,
            );
        }
        o.uint("agent_peak_rss_bytes", self.rss);
        for (k, v) in AGENT_COUNTS.iter().zip(self.counts) {
            o.uint(k, v);
        }
        o.nested("agent_read_errors_by_source", |e| {
            for (name, c) in crate::agent::SOURCE_NAMES.iter().zip(self.by_source) {
                e.uint(name, c);
            }
        });
        for (k, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            if let Some(v) = pct(hj, q) {
                o.f64(&format!("agent_sampling_jitter_{k}_ms"), v as f64 / 1e6);
            }
        }
        for (k, q) in [("p50", 0.5), ("p99", 0.99)] {
            if let Some(v) = pct(hl, q) {
                o.f64(&format!("agent_sample_latency_{k}_us"), v as f64 / 1e3);
            }
        }
        if self.gpu[0] > 0 {
            self.write_gpu(o);
        }
        if self.tasks.2 {
            let (counts, cpu_ns, _) = &self.tasks;
            for (k, v) in crate::agent::tasks::COUNTER_NAMES.iter().zip(counts) {
                o.uint(k, *v);
            }
            o.f64("agent_task_thread_cpu_seconds", *cpu_ns as f64 / 1e9);
        }
        for (name, h) in [
            ("node_cpu_utilization", hc),
            ("node_memory_utilization", hm),
        ] {
            for (k, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
                if let Some(v) = pct(h, q) {
                    o.f64(&format!("{name}_{k}"), v as f64 / 10.0);
                }
            }
        }
    }

    /// The GPU agents' counters and NVML latency.
    fn write_gpu(&self, o: &mut JsonOut<'_>) {
        let gpu = &self.gpu;
        for (k, v) in Self::GPU.iter().zip(gpu) {
            o.uint(k, *v);
        }
        o.uint("agent_gpu_errors", gpu[5]);
        o.f64(
            "agent_gpu_cpu_us_per_poll",
            (gpu[4] as f64 / 1e3 / gpu[0] as f64 * 100.0).round() / 100.0,
        );
        o.uint("agent_gpu_backfills", gpu[6]);
        if gpu[6] > 0 {
            o.f64(
                "agent_gpu_backfill_cpu_us",
                (gpu[7] as f64 / 1e3 / gpu[6] as f64 * 10.0).round() / 10.0,
            );
        }
        o.uint("agent_gpu_backfills_dropped", gpu[8]);
        for (k, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            if let Some(v) = pct(&self.hists[4], q) {
                o.f64(&format!("agent_nvml_latency_{k}_us"), v as f64 / 1e3);
            }
        }
    }
}

/// `tal_logs`: what reading each node log found, and the node's own
/// counters and attributes.
fn tal_logs(o: &mut JsonOut<'_>, merge: &Merge) {
    o.key("tal_logs");
    let mut arr = Vec::new();
    arr.push(b'[');
    for (i, n) in merge.nodes.iter().enumerate() {
        if i > 0 {
            arr.extend_from_slice(b", ");
        }
        let st = n.reader.stats();
        let mut l = JsonOut::object(&mut arr);
        l.str("node_id", &n.reader.header().node_id)
            .str("path", &n.reader.path().display().to_string())
            .uint("records", st.records)
            .bool("clean_end", st.end_marker)
            .uint("corrupt_frames", st.corrupt_frames)
            .bool("truncated", st.truncated_tail)
            .str("hostname", &n.reader.header().hostname)
            .f64("start_time_s", ns_to_secs(n.reader.header().start_wall_ns))
            // The same instant on the agent's monotonic clock: with
            // start_time_s, the anchor its wall times were made from.
            .uint("start_monotonic_ns", n.reader.header().start_mono_ns)
            .f64("last_record_time_s", ns_to_secs(n.last_time_ns));
        if let Some(s) = &n.snapshot {
            if !s.read_errors_by_source.is_empty() {
                l.nested("read_errors_by_source", |e| {
                    for (name, c) in crate::agent::SOURCE_NAMES
                        .iter()
                        .zip(&s.read_errors_by_source)
                    {
                        e.uint(name, *c);
                    }
                });
            }
            if !s.gpu_errors.is_empty() {
                l.nested("gpu_errors", |e| {
                    for (g, c) in s.gpu_errors.iter().enumerate() {
                        e.uint(&g.to_string(), *c);
                    }
                });
            }
        }
        if !n.reader.header().attributes.is_empty() {
            l.nested("attributes", |a| {
                for (k, v) in &n.reader.header().attributes {
                    a.str(k, v);
                }
            });
        }
        l.end();
    }
    arr.push(b']');
    o.raw(&arr);
}
