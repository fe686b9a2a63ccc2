//! The command line: clap definitions, and their validation into the
//! configs the rest of tal runs on (arguments are parsed here and nowhere
//! else; the recorder and converter never see clap types).

use crate::convert::Output;
use crate::recorder::RecordConfig;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// tal records what happens during an HPC workflow run — the session, every
/// task's lifecycle, and each node's CPU, memory, disk, network and GPU use —
/// into a crash-safe binary log, and converts it to RHAPSODY's JSONL
/// checkpoint.
#[derive(Debug, Parser)]
#[command(name = "tal", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// tal's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record this node's telemetry until SIGTERM/SIGINT, or around a command.
    ///
    /// With a command after `--`, tal runs it, records while it runs, and
    /// exits with its status. Without one, tal records until it gets SIGTERM,
    /// SIGINT or SIGHUP. Either way it finishes the log cleanly and (unless
    /// --no-convert) writes the JSONL checkpoint next to it.
    Record(Box<RecordArgs>),
    /// Run one command as a task of the session, reporting its lifecycle.
    ///
    /// Reports TaskCreated, TaskSubmitted, TaskStarted (with the pid) and
    /// TaskCompleted or TaskFailed (error_type exit:N, signal:SIGNAME or
    /// exec:ENOENT) with the command's CPU time, peak RSS and I/O bytes, and
    /// exits with the command's status. Without a reachable agent it warns
    /// once and runs the command anyway.
    Run(RunArgs),
    /// Send one event to the local agent (for shell workflows).
    Emit(EmitArgs),
    /// Ask the local agent to finish: it finalises its log, writes the JSONL,
    /// then answers; this waits for that answer.
    Stop(StopArgs),
    /// Wait until this node's agent of the session is up: listening on its
    /// socket and answering.
    ///
    /// For job scripts that start `tal record` in the background: `tal wait`
    /// before the first `tal run` or `tal emit` makes sure their events are
    /// recorded. It asks the agent (`{"op": "ping"}`) every 50 ms, prints
    /// its answer (session, node, log) and exits 0 once it answers; exits 2
    /// if no agent answers within --timeout. It does not wait for the agent
    /// or its tasks to finish (`tal stop` does that).
    Wait(WaitArgs),
    /// Print every event as a JSONL line as the local agent handles it.
    ///
    /// The lines are those `tal convert` writes. A subscriber that does not
    /// keep up loses lines (the agent never waits for it) and is told with a
    /// `{"dropped": N}` line. Ends when the agent finishes.
    Subscribe(SubscribeArgs),
    /// Convert node logs of one session into one JSONL checkpoint, OTLP JSON files, or an OTLP push.
    ///
    /// Several logs (one per node) merge into one file: one trace, one
    /// session span, events in time order. A log that was cut off (agent
    /// killed, node lost, disk full) converts up to its last whole record.
    /// A log that cannot be read at all (cut inside its header, empty, not
    /// a log) is named on stderr and the others are converted: exit status
    /// 1 (also for `tal summary` and `tal report`). A log given twice, or a
    /// copy of one, is taken once.
    Convert(ConvertArgs),
    /// Summarise a session on the terminal: tasks, durations, failures,
    /// nodes' and GPUs' use, tal's own cost, and what its logs held.
    ///
    /// Reads node logs (`.tal`) or one JSONL checkpoint (tal's or
    /// RHAPSODY's). `--json` prints the same as one JSON object.
    Summary(SummaryArgs),
    /// Write a session's report: one self-contained HTML file (opens
    /// offline in any browser) with a task timeline, resource charts on one
    /// zoomable time axis, duration distributions and a task table.
    ///
    /// Reads node logs (`.tal`) or one JSONL checkpoint (tal's or
    /// RHAPSODY's).
    Report(ReportArgs),
}

/// `tal report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Node logs (`.tal`) of one session, or one JSONL checkpoint
    /// (`.jsonl`). A directory stands for the node logs in it (`out/`: what
    /// `tal record --out out/` wrote).
    #[arg(required = true, value_name = "LOG|DIR")]
    pub logs: Vec<PathBuf>,

    /// The HTML file [default: `{session_id}.{start_unix_seconds}.report.html`
    /// beside the first input].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Show no progress (it shows only when stderr is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `tal summary` flags.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Node logs (`.tal`) of one session, or one JSONL checkpoint
    /// (`.jsonl`). A directory stands for the node logs in it (`out/`: what
    /// `tal record --out out/` wrote).
    #[arg(required = true, value_name = "LOG|DIR")]
    pub logs: Vec<PathBuf>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// Show no progress (it shows only when stderr is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

/// `tal record` flags.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Sampling interval: seconds (`0.1`) or with a unit (`100ms`, `1s`,
    /// `2m`). At least 1ms.
    #[arg(
        long,
        default_value = "0.1",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub interval: String,

    /// Interval of the per-task samples (`tal.TaskResourceUpdate`: CPU,
    /// memory, threads and I/O of each running task's processes, for tasks
    /// whose TaskStarted names a `pid`, as `tal run`'s does), or `off`. Not
    /// faster than --interval [default: 1s, or --interval if slower].
    #[arg(long, value_name = "DURATION|off")]
    pub task_interval: Option<String>,

    /// Directory for the log (`<session>.<node>.tal`) and the JSONL; created
    /// if missing.
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,

    /// Session id [default: slurm.<SLURM_JOB_ID> under Slurm (array jobs:
    /// slurm.<ARRAY_JOB_ID>_<TASK_ID>), else a generated tal.session.<hex>].
    /// Every node of a session must use the same id.
    #[arg(long, value_name = "ID")]
    pub session_id: Option<String>,

    /// Node id [default: $SLURMD_NODENAME, else the short host name].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Backend name written on the agent's events.
    #[arg(long, default_value = "tal", value_name = "NAME")]
    pub backend: String,

    /// CPU to pin tal's threads to, or `none` [default: the last CPU this
    /// process may run on]. A wrapped command keeps tal's original affinity.
    #[arg(long, value_name = "CPU|none")]
    pub pin: Option<String>,

    /// Interval of the agent's self-snapshots in the log (cost, counters,
    /// histograms).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub snapshot_interval: String,

    /// Do not write the JSONL or the dataset at the end (the log alone is
    /// kept).
    #[arg(long)]
    pub no_convert: bool,

    /// What to write from the log at the end: `jsonl` (RHAPSODY's
    /// checkpoint), `parquet` (this node's parts of the session's Parquet
    /// dataset, in --dataset), or both: `jsonl,parquet`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "jsonl")]
    pub format: Vec<RecordFormat>,

    /// The Parquet dataset's folder, with `--format parquet` [default:
    /// `{session_id}.dataset` in --out]. Every node of the session writes
    /// its own parts into it, so the dataset is whole when the last node
    /// stops.
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,

    /// Also write the session's HTML report beside the JSONL at the end
    /// (`<session>.<start>.report.html`, as `tal report` writes it).
    #[arg(long, conflicts_with = "no_convert")]
    pub report: bool,

    /// Bytes by which the log file's space is reserved ahead (so that a
    /// full disk shows at reservation): a multiple of the page size.
    #[arg(long, default_value_t = crate::log::DEFAULT_CHUNK_BYTES, value_name = "BYTES")]
    pub log_chunk: u64,

    /// The ingest socket for task events [default: tal.<session>.<node>.sock
    /// in $XDG_RUNTIME_DIR, else in tal-<uid> in $TMPDIR or /tmp]. If it
    /// cannot be made (or its directory is not privately yours), tal
    /// listens in a new private directory instead and says where; the
    /// command runs either way. Exported to a wrapped command as TAL_SOCKET.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The job's cgroup, for the job's own CPU, memory and I/O next to the
    /// node totals (`job_*` fields): `auto` (Slurm's `job_<id>` cgroup
    /// among tal's own ancestors, when there is one), `none`, or a cgroup
    /// directory.
    #[arg(long, default_value = "auto", value_name = "auto|none|DIR")]
    pub cgroup: crate::agent::cgroup::CgroupChoice,

    /// Push spans (as tasks end) and metrics (every --otlp-interval) live
    /// to an OTLP/HTTP receiver, on a thread of their own: `http://host:4318`,
    /// or without a URL OTEL_EXPORTER_OTLP_ENDPOINT and the other OTEL_*
    /// variables. The log and JSONL are written as always.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub otlp_endpoint: Option<String>,

    /// How often the live OTLP push sends.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub otlp_interval: String,

    /// What the live OTLP push may hold for a receiver that is away
    /// (encoded requests: KiB, MiB or GiB, or bytes). Beyond it the oldest
    /// are dropped, counted and said at the end; the log keeps everything,
    /// and `tal convert --otlp-endpoint` pushes the whole session from it.
    #[arg(long, default_value = "16MiB", value_name = "SIZE", value_parser = parse_size)]
    pub otlp_buffer: usize,

    /// GPUs to sample through NVML: `auto` (the job's CUDA_VISIBLE_DEVICES,
    /// else every GPU), `none`, or a list of NVML indices or UUIDs (each
    /// device's gpu_id is its place in the list). Without an NVIDIA driver
    /// tal records normally, with GPU fields null. $TAL_NVML_LIBRARY names
    /// the NVML library if it is not libnvidia-ml.so.1 on the loader's path.
    #[arg(long, default_value = "auto", value_name = "auto|none|LIST")]
    pub gpus: crate::agent::gpu::GpuSelection,

    /// The command to run and record (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Where to find the agent (shared by run, emit, stop).
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The agent's socket [default: $TAL_SOCKET, else the default socket of
    /// this Slurm job's agent on this node].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `tal run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task id [default: run.<host>.<pid>.<n>, unique on this node].
    #[arg(long, value_name = "ID")]
    pub task_id: Option<String>,
    /// The task_type attribute.
    #[arg(long, default_value = "ComputeTask", value_name = "TYPE")]
    pub task_type: String,
    /// Backend name on the task's events.
    #[arg(long, default_value = "tal", value_name = "NAME")]
    pub backend: String,
    #[command(flatten)]
    pub socket: SocketArg,
    /// The command (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `tal emit` flags.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Event type: TaskCreated … TaskCanceled, or a namespaced custom type
    /// such as app.Checkpoint.
    #[arg(value_name = "EVENT_TYPE")]
    pub event_type: String,
    /// The task the event belongs to (required for task events).
    #[arg(long, value_name = "ID")]
    pub task_id: Option<String>,
    /// An attribute, KEY=VALUE (VALUE is JSON if it parses as JSON, else a
    /// string); repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// A top-level field (custom events' own fields, duration_seconds,
    /// error_type), KEY=VALUE; repeatable.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// Backend name on the event.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// When it happened, seconds since the epoch [default: now].
    #[arg(long, value_name = "SECONDS")]
    pub event_time: Option<f64>,
    /// Exit non-zero when no agent is reachable (default: warn and exit 0,
    /// so that a workflow never fails for want of telemetry).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `tal subscribe` flags.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Only events of this type (repeatable; default: all).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub types: Vec<String>,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `tal stop` flags.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// How long to wait for the agent to finish.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// `tal wait` flags.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// How long to wait for an agent to answer.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    #[command(flatten)]
    pub socket: SocketArg,
}

/// What `tal record` writes from its log at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    /// RHAPSODY's JSONL checkpoint.
    Jsonl,
    /// This node's parts of the session's Parquet dataset.
    Parquet,
}

/// What `tal convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvertFormat {
    /// RHAPSODY's JSONL checkpoint.
    Jsonl,
    /// OTLP JSON: `<prefix>.traces.json` (a /v1/traces request) and
    /// `<prefix>.metrics.json` (a /v1/metrics request).
    OtlpJson,
    /// Trace Event Format JSON, for Perfetto UI and chrome://tracing: tasks
    /// as slices on each node's slots, resources as counters.
    ChromeTrace,
    /// A Parquet dataset, in the folder `-o` names: one part per node log
    /// and table (samples, gpu_samples, tasks, task_samples, events,
    /// session), Hive-partitioned by node.
    Parquet,
}

/// `tal convert` flags.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Node logs (`.tal`) of one session (a directory stands for the node
    /// logs in it); or, for OTLP or Chrome trace output or an OTLP push, one
    /// RHAPSODY JSONL checkpoint (`.jsonl`, written by tal or by RHAPSODY).
    #[arg(required = true, value_name = "LOG|DIR")]
    pub logs: Vec<PathBuf>,

    /// Output file, or `-` for stdout [default:
    /// `{session_id}.{start_unix_seconds}.telemetry.jsonl` beside the first
    /// log]. With `--format otlp-json`, the prefix of the two files
    /// [default: `{session_id}.{start_unix_seconds}.otlp` beside the first
    /// input]; with `--format chrome-trace`, the file [default:
    /// `{session_id}.{start_unix_seconds}.trace.json`]; with `--format
    /// parquet`, the dataset's folder [default: `{session_id}.dataset`
    /// beside the first log].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ConvertFormat,

    /// Also push the session's spans and metrics to an OTLP/HTTP receiver
    /// (protobuf): `http://host:4318` gets /v1/traces and /v1/metrics.
    /// Without a URL, OTEL_EXPORTER_OTLP_ENDPOINT (or the per-signal
    /// variables) say where. OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
    /// OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_PROTOCOL
    /// (http/protobuf or http/json) apply. Exits 1 if anything was not
    /// delivered (the files are written regardless).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub otlp_endpoint: Option<String>,

    /// Show no progress (it shows only when stderr is a terminal).
    #[arg(short, long)]
    pub quiet: bool,
}

impl Cli {
    /// Parses the command line, or exits with clap's message. A command
    /// given to `tal run` or `tal record` without the `--` before it
    /// (`tal run sleep 1`) is an "unexpected argument" to clap; the message
    /// then ends with the line to type instead (`tal run -- sleep 1`).
    pub fn parse_or_exit() -> Self {
        let args: Vec<OsString> = std::env::args_os().collect();
        Self::try_parse_from(&args).unwrap_or_else(|mut e| {
            if let Some(tip) = dashdash_tip(&e, &args) {
                e.insert(
                    clap::error::ContextKind::Suggested,
                    clap::error::ContextValue::StyledStrs(vec![tip.into()]),
                );
            }
            e.exit()
        })
    }
}

/// For a command line that left out the `--` before the command to run
/// (see [`Cli::parse_or_exit`]): the same line with `--` put before the
/// first word clap did not expect, as a tip. None for other errors, other
/// subcommands, an unexpected word that looks like a flag (a misspelt
/// option: clap says which one it means), or a line that has a `--`.
fn dashdash_tip(e: &clap::Error, args: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let sub = args.get(1)?.to_str()?;
    if !matches!(sub, "run" | "record") || args.iter().any(|a| a == "--") {
        return None;
    }
    let Some(ContextValue::String(bad)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    if bad.starts_with('-') {
        return None;
    }
    let at = 2 + args[2..].iter().position(|a| a == bad.as_str())?;
    let mut words: Vec<String> = vec!["tal".into()];
    words.extend(args[1..at].iter().map(|a| shell_word(&a.to_string_lossy())));
    words.push("--".into());
    words.extend(args[at..].iter().map(|a| shell_word(&a.to_string_lossy())));
    Some(format!("put the command after `--`: {}", words.join(" ")))
}

/// `w` as a POSIX shell reads it back: as is when it has only safe
/// characters, else in single quotes.
fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// Parses a size in bytes: a whole number, with `KiB`, `MiB` or `GiB`
/// (or `K`, `M`, `G`, the same), at most 64 GiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        u => return Err(format!("unknown unit '{u}' (use KiB, MiB, GiB or bytes)")),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|n| *n <= 64 << 30)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| "expected a whole number of bytes up to 64GiB (e.g. 16MiB)".to_string())
}

/// Parses a duration: a bare number is seconds; units ns, us, ms, s, m, h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err("not a duration (e.g. 0.1, 100ms, 1s)".to_string());
    }
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => {
            return Err(format!(
                "unknown unit '{u}' (use ms, s, m or a plain number of seconds)"
            ))
        }
    };
    let v: f64 = num
        .parse()
        .map_err(|_| "not a number (e.g. 0.1, 100ms, 1s)".to_string())?;
    if !v.is_finite() || v <= 0.0 {
        return Err("must be greater than zero (e.g. 0.1, 100ms, 1s)".to_string());
    }
    let secs = v * scale;
    if secs > 86_400.0 {
        return Err("must be at most 24h".to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn short_hostname() -> String {
    full_hostname()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

/// The host name, as `gethostname(2)` gives it (which is `uname(2)`'s
/// node name, read here).
pub fn full_hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The longest session and node ids together: the log's file name
/// `<session>.<node>.tal`, numbered (`.N` up to 999) and as a temporary
/// file (a dot, the name, six random characters and `.tmp`), stays within
/// a file name's 255 bytes.
const MAX_IDS_BYTES: usize = 230;

fn check_id(what: &str, id: &str) -> anyhow::Result<()> {
    crate::ids::check_id(id).map_err(|rule| anyhow::anyhow!("invalid {what} {id:?}: use {rule}"))
}

impl RecordArgs {
    /// What to write at the end: the JSONL, and the dataset's folder
    /// (see [`RecordFormat`]).
    fn outputs(&self, session_id: &str) -> anyhow::Result<(bool, Option<PathBuf>)> {
        let jsonl = self.format.contains(&RecordFormat::Jsonl);
        let parquet = self.format.contains(&RecordFormat::Parquet);
        if self.report && !jsonl {
            bail!("--report is made from the JSONL: give --format jsonl,parquet, or leave out --report");
        }
        if self.dataset.is_some() && (!parquet || self.no_convert) {
            bail!("--dataset names the Parquet dataset's folder: add --format parquet (or jsonl,parquet), without --no-convert");
        }
        let dataset = (!self.no_convert && parquet).then(|| {
            self.dataset
                .clone()
                .unwrap_or_else(|| self.out.join(crate::dataset::default_dir_name(session_id)))
        });
        Ok((!self.no_convert && jsonl, dataset))
    }

    /// `--pin`: the CPU for tal's threads, or none.
    fn pin_cpu(&self) -> anyhow::Result<Option<usize>> {
        Ok(match self.pin.as_deref() {
            None => Some(
                crate::agent::affinity::default_cpu()
                    .context("cannot read this process's CPU affinity — pass --pin none")?,
            ),
            Some("none") => None,
            Some(s) => Some(s.parse::<usize>().map_err(|_| {
                anyhow::anyhow!("invalid --pin '{s}': give a CPU number or 'none'")
            })?),
        })
    }

    /// Validates the flags into a [`RecordConfig`].
    pub fn into_config(self) -> anyhow::Result<RecordConfig> {
        let interval = parse_duration(&self.interval)
            .map_err(|e| anyhow::anyhow!("invalid --interval '{}': {e}", self.interval))?;
        if interval < Duration::from_millis(1) {
            bail!(
                "invalid --interval '{}': must be at least 1ms",
                self.interval
            );
        }
        let task_interval = match self.task_interval.as_deref() {
            None => Some(interval.max(Duration::from_secs(1))),
            Some("off") => None,
            Some(t) => {
                let d = parse_duration(t)
                    .map_err(|e| anyhow::anyhow!("invalid --task-interval '{t}': {e}"))?;
                if d < interval {
                    bail!(
                        "invalid --task-interval '{t}': tasks are sampled at most as often as the node (--interval {:?}); give {:?} or more, or 'off'",
                        interval,
                        interval
                    );
                }
                Some(d)
            }
        };
        let snapshot_every = parse_duration(&self.snapshot_interval).map_err(|e| {
            anyhow::anyhow!(
                "invalid --snapshot-interval '{}': {e}",
                self.snapshot_interval
            )
        })?;
        let otlp = match self.otlp_endpoint.as_deref() {
            None => None,
            Some(u) => {
                let ep = crate::otlp_http::Endpoints::resolve((!u.is_empty()).then_some(u))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let every = parse_duration(&self.otlp_interval)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "invalid --otlp-interval '{}': a duration of at least 100ms",
                            self.otlp_interval
                        )
                    })?;
                Some(crate::otlp_live::LiveConfig {
                    endpoints: ep,
                    interval: every,
                    max_pending_bytes: self.otlp_buffer,
                })
            }
        };
        let pin = self.pin_cpu()?;
        let session_id = self
            .session_id
            .clone()
            .unwrap_or_else(crate::slurm::default_session_id);
        check_id("--session-id", &session_id)?;
        let (jsonl, dataset_dir) = self.outputs(&session_id)?;
        let node_id = self
            .node_id
            .or_else(|| env("SLURMD_NODENAME"))
            .unwrap_or_else(short_hostname);
        check_id("--node-id", &node_id)?;
        // The log is `<session>.<node>.tal` (with room for a numbered
        // `.N` and a temporary file's suffix): a file name has 255 bytes.
        if session_id.len() + node_id.len() > MAX_IDS_BYTES {
            bail!(
                "--session-id ({} bytes) and --node-id ({} bytes) together name the log file, and a file name has at most 255 bytes: use ids of at most {MAX_IDS_BYTES} bytes together",
                session_id.len(),
                node_id.len()
            );
        }
        let page = crate::log::writer::system_page_size();
        if self.log_chunk < page || self.log_chunk % page != 0 || self.log_chunk > 1 << 30 {
            bail!(
                "invalid --log-chunk {}: must be a multiple of the page size ({page}) up to 1 GiB",
                self.log_chunk
            );
        }
        let socket_explicit = self.socket.is_some();
        let socket = self
            .socket
            .unwrap_or_else(|| crate::ingest::sockdir::default_socket_path(&session_id, &node_id));
        if socket.as_os_str().len() >= 108 {
            bail!(
                "socket path {} is longer than the 107 bytes a Unix socket allows — pass a shorter --socket PATH",
                socket.display()
            );
        }
        Ok(RecordConfig {
            socket,
            socket_explicit,
            log_chunk: self.log_chunk,
            interval,
            task_interval,
            out: self.out,
            session_id,
            node_id,
            hostname: full_hostname(),
            backend: self.backend,
            pin,
            convert: jsonl,
            dataset: dataset_dir,
            report: self.report,
            snapshot_every,
            command: self.command,
            attributes: crate::slurm::slurm_attributes(),
            gpus: self.gpus,
            otlp,
            cgroup: self.cgroup,
        })
    }
}

impl RunArgs {
    /// Validates into a [`crate::run::RunConfig`].
    pub fn into_config(self) -> anyhow::Result<crate::run::RunConfig> {
        let task_id = match self.task_id {
            Some(t) if !t.is_empty() => t,
            Some(_) => bail!("--task-id must not be empty"),
            None => {
                let n = crate::ids::EventIdGen::from_os().next_id() as u32;
                format!("run.{}.{}.{n:08x}", short_hostname(), std::process::id())
            }
        };
        Ok(crate::run::RunConfig {
            task_id,
            task_type: self.task_type,
            backend: self.backend,
            socket: self.socket.socket,
            command: self.command,
        })
    }
}

impl ConvertArgs {
    /// Where the output goes.
    pub fn output(&self) -> Output {
        match &self.output {
            Some(p) if p.as_os_str() == "-" => Output::Stdout,
            Some(p) => Output::File(p.clone()),
            None => Output::DefaultIn(
                self.logs[0]
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tip(line: &[&str]) -> Option<String> {
        let args: Vec<OsString> = line.iter().map(OsString::from).collect();
        let e = Cli::try_parse_from(&args).unwrap_err();
        dashdash_tip(&e, &args)
    }

    #[test]
    fn a_command_without_dashdash_gets_the_line_to_type() {
        assert_eq!(
            tip(&["tal", "run", "sleep", "1"]).as_deref(),
            Some("put the command after `--`: tal run -- sleep 1")
        );
        assert_eq!(
            tip(&["tal", "run", "--task-id", "a b", "sh", "-c", "echo 'hi'"]).as_deref(),
            Some(
                r#"put the command after `--`: tal run --task-id 'a b' -- sh -c 'echo '\''hi'\'''"#
            )
        );
        assert_eq!(
            tip(&["tal", "record", "--out", "o", "./workflow.sh"]).as_deref(),
            Some("put the command after `--`: tal record --out o -- ./workflow.sh")
        );
        // A misspelt flag is not a command; other subcommands get no tip.
        assert_eq!(tip(&["tal", "run", "--taskid", "a", "--", "true"]), None);
        assert_eq!(tip(&["tal", "summary", "--jsn", "x.tal"]), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "3X",
            "65GiB",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["0", "-1", "abc", "", "1x", "nan", "inf", "0ms"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("x", "slurm.123").is_ok());
        for bad in ["", "a/b", ".hidden", "a b"] {
            assert!(check_id("x", bad).is_err());
        }
    }
}
