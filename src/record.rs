//! The data model shared by the pipeline, the binary log and the converters.
//!
//! These types are what the dispatcher hands to the writer and what the log
//! stores (bincode 2, standard config). They are the *normalised* events of
//! RHAPSODY's telemetry model: the converters only format them. Ids that
//! can be derived (trace id, span ids, session id, the node of a resource
//! event) are not stored per event: they come from the log header.
//!
//! Compatibility rule for the log format: new enum variants and new record
//! kinds are appended at the end; a field is never reordered or retyped
//! without bumping [`crate::log::FORMAT_VERSION`].

use bincode::{Decode, Encode};

/// Rounds to one decimal, as psutil does for its percentages (every
/// percentage tal writes, live or converted).
#[inline]
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The session attribute (log header, then `tal_logs[].attributes` in the
/// JSONL) that gives the node's memory, bytes, as a decimal string: the
/// recorder writes `MemTotal` of its first reading, and `tal summary`
/// reads it to give memory in bytes (the samples carry a percentage).
pub const NODE_MEMORY_TOTAL_BYTES: &str = "node.memory_total_bytes";
/// The log header attribute with the job cgroup's memory limit, bytes
/// (a decimal string), where tal reads a cgroup that has one.
pub const JOB_MEMORY_LIMIT_BYTES: &str = "job.memory_limit_bytes";

/// An attribute or extension-field value.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Value {
    /// JSON null.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// Any other JSON value (object, array), kept as its JSON text.
    Json(String),
}

/// Ordered key/value pairs (JSON object order is kept as received).
pub type Attributes = Vec<(String, Value)>;

/// One framed record of the binary log.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Record {
    /// A telemetry event (one JSONL `event` line).
    Event(Event),
    /// A periodic snapshot of the agent's own state and histograms.
    Snapshot(AgentSnapshot),
    /// The clean end marker, written last at shutdown.
    End(EndMarker),
    /// A GPU's driver utilisation samples, back-filled (tal's own record:
    /// `convert` fills the `per_gpu` events of the polls they fall in; see
    /// `crate::convert::gpufill`).
    GpuUtil(GpuUtilSamples),
}

/// One back-fill of a GPU's driver utilisation samples.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct GpuUtilSamples {
    /// The device's `gpu_id`.
    pub gpu_id: u32,
    /// When the agent asked the driver, ns since the epoch.
    pub fetched_ns: i64,
    /// Every driver sample up to this time (ns since the epoch) is known
    /// once this record and the earlier ones of the device are.
    pub covers_to_ns: i64,
    /// (when the driver took it, ns since the epoch; GPU utilisation %),
    /// oldest first.
    pub samples: Vec<(i64, f32)>,
}

/// A telemetry event.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Event {
    /// 128-bit id, written as 32 hex digits.
    pub event_id: u128,
    /// When it happened, ns since the epoch.
    pub event_time_ns: i64,
    /// When it entered the agent, ns since the epoch.
    pub emit_time_ns: i64,
    /// The execution backend that produced it.
    pub backend: Option<String>,
    /// The task it belongs to.
    pub task_id: Option<String>,
    /// The node it names, where that is not the log's own node.
    pub node_id: Option<String>,
    /// The event's `attributes` object.
    pub attributes: Attributes,
    /// What kind of event, with its type-specific fields.
    pub kind: EventKind,
}

/// The event types of RHAPSODY's model, with their extra keys.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum EventKind {
    /// The session (this node's agent) started.
    SessionStarted,
    /// The session (this node's agent) ended.
    SessionEnded {
        /// Seconds since SessionStarted.
        duration_seconds: f64,
    },
    /// A resource sample.
    ResourceUpdate(ResourceUpdate),
    /// A task lifecycle event.
    Task(TaskEvent),
    /// A namespaced custom event (`app.Checkpoint`) with its own top-level fields.
    Custom {
        /// The `ns.Type` name.
        event_type: String,
        /// Its fields, written at top level.
        fields: Attributes,
    },
    /// The compute processes on this node's GPUs at one poll (tal's own
    /// record, written when the set or their memory changes; `convert`
    /// attributes it to tasks and writes no line for it).
    GpuProcesses(Vec<GpuProcess>),
    /// One sample of a task's processes (tal's own; written as the custom
    /// event `tal.TaskResourceUpdate`, see `crate::agent::tasks`).
    TaskResources(TaskResources),
}

/// What a task's processes used over one task interval (see
/// `crate::agent::tasks` for how each value is measured).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct TaskResources {
    /// User CPU time since the task's previous sample, as % of one CPU
    /// (100 = one core busy all the time, as `top` shows a process).
    pub cpu_user_percent: f32,
    /// System CPU time, the same way.
    pub cpu_system_percent: f32,
    /// Resident memory summed over the processes, bytes (pages shared
    /// between them count once per process, as `top` adds them up).
    pub rss_bytes: u64,
    /// Threads, over all the processes.
    pub threads: u32,
    /// Processes sampled (the task's process and its descendants).
    pub processes: u32,
    /// Bytes read from storage since the previous sample (`read_bytes` of
    /// `/proc/PID/io`); `None` where that file cannot be read.
    pub read_bytes: Option<u64>,
    /// Bytes written to storage since the previous sample, the same way.
    pub write_bytes: Option<u64>,
    /// Seconds this sample covers (since the previous one, or since the
    /// task was first seen).
    pub interval_seconds: f32,
    /// Device memory of the task's processes per `gpu_id`, at the GPU
    /// agent's latest poll (filled in by `convert`, which attributes the
    /// GPU processes to tasks; empty in the log).
    pub gpu_memory_bytes: Vec<(u32, u64)>,
}

impl TaskResources {
    /// `event_type` of the JSONL line.
    pub const EVENT_TYPE: &'static str = "tal.TaskResourceUpdate";

    /// User and system CPU together, % of one CPU.
    pub fn cpu_percent(&self) -> f32 {
        self.cpu_user_percent + self.cpu_system_percent
    }
}

/// One process using a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GpuProcess {
    /// The device's `gpu_id`.
    pub gpu_id: u32,
    /// The process.
    pub pid: u32,
    /// Device memory it uses, bytes.
    pub used_bytes: u64,
    /// Its parent, grandparent, … (nearest first, up to init, at most
    /// [`crate::agent::gpu::MAX_ANCESTORS`]), so that a task's process
    /// tree can be matched by the task's pid.
    pub ancestors: Vec<u32>,
}

impl EventKind {
    /// The `event_type` string.
    pub fn type_name(&self) -> &str {
        match self {
            EventKind::SessionStarted => "SessionStarted",
            EventKind::SessionEnded { .. } => "SessionEnded",
            EventKind::ResourceUpdate(_) => "ResourceUpdate",
            EventKind::Task(t) => t.state.type_name(),
            EventKind::Custom { event_type, .. } => event_type,
            EventKind::GpuProcesses(_) => "GpuProcesses",
            EventKind::TaskResources(_) => TaskResources::EVENT_TYPE,
        }
    }
}

/// Task lifecycle event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum TaskState {
    /// TaskCreated
    Created,
    /// TaskSubmitted
    Submitted,
    /// TaskQueued
    Queued,
    /// TaskStarted
    Started,
    /// TaskCompleted
    Completed,
    /// TaskFailed
    Failed,
    /// TaskCanceled
    Canceled,
}

impl TaskState {
    /// The `event_type` string.
    pub fn type_name(self) -> &'static str {
        match self {
            TaskState::Created => "TaskCreated",
            TaskState::Submitted => "TaskSubmitted",
            TaskState::Queued => "TaskQueued",
            TaskState::Started => "TaskStarted",
            TaskState::Completed => "TaskCompleted",
            TaskState::Failed => "TaskFailed",
            TaskState::Canceled => "TaskCanceled",
        }
    }

    /// Parses an `event_type` string.
    pub fn from_type_name(s: &str) -> Option<Self> {
        Some(match s {
            "TaskCreated" => TaskState::Created,
            "TaskSubmitted" => TaskState::Submitted,
            "TaskQueued" => TaskState::Queued,
            "TaskStarted" => TaskState::Started,
            "TaskCompleted" => TaskState::Completed,
            "TaskFailed" => TaskState::Failed,
            "TaskCanceled" => TaskState::Canceled,
            _ => return None,
        })
    }

    /// Completed, Failed or Canceled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled
        )
    }
}

/// A task lifecycle event's type-specific fields.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct TaskEvent {
    /// Which lifecycle step.
    pub state: TaskState,
    /// Terminal events: seconds from TaskStarted (0.0 when never started).
    pub duration_seconds: Option<f64>,
    /// TaskFailed: the error type.
    pub error_type: Option<String>,
    /// Other top-level fields a client sent (kept, written after RHAPSODY's keys).
    pub extra: Attributes,
}

/// Which scope a resource sample covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ResourceScope {
    /// The whole node.
    PerNode,
    /// One GPU, by the index the job sees.
    PerGpu(u32),
}

/// A `ResourceUpdate` with RHAPSODY's keys and tal's extensions.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ResourceUpdate {
    /// per_node or per_gpu.
    pub scope: ResourceScope,
    /// Busy share of all CPUs since the previous sample, 0–100. The deltas
    /// here are null over a window too short to measure (the first sample,
    /// usually the last: see `crate::agent::window`).
    pub cpu_percent: Option<f64>,
    /// (total − available) / total, 0–100.
    pub memory_percent: Option<f64>,
    /// GPU utilisation (max over devices on per_node).
    pub gpu_percent: Option<f64>,
    /// Bytes read from whole disks since the previous sample.
    pub disk_read_bytes: Option<f64>,
    /// Bytes written to whole disks since the previous sample.
    pub disk_write_bytes: Option<f64>,
    /// Bytes sent over all interfaces since the previous sample.
    pub net_sent_bytes: Option<f64>,
    /// Bytes received over all interfaces since the previous sample.
    pub net_recv_bytes: Option<f64>,
    /// Extension: busy % of each CPU over the same ticks as `cpu_percent`
    /// (empty, and left out of the JSONL, where that is null).
    pub cpu_percent_per_core: Vec<f32>,
    /// Extension fields (written at top level after RHAPSODY's keys).
    pub extra: Attributes,
}

impl ResourceUpdate {
    /// An update of `scope` with every field null.
    pub fn empty(scope: ResourceScope) -> Self {
        Self {
            scope,
            cpu_percent: None,
            memory_percent: None,
            gpu_percent: None,
            disk_read_bytes: None,
            disk_write_bytes: None,
            net_sent_bytes: None,
            net_recv_bytes: None,
            cpu_percent_per_core: Vec::new(),
            extra: Vec::new(),
        }
    }
}

/// The agent's view of itself at one moment: cost, counts, histograms.
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub struct AgentSnapshot {
    /// When it was taken, ns since the epoch.
    pub wall_ns: i64,
    /// User CPU of the agent process (all threads), ns.
    pub cpu_user_ns: u64,
    /// System CPU of the agent process (all threads), ns.
    pub cpu_system_ns: u64,
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
    /// Samples taken by the sampler.
    pub samples_taken: u64,
    /// Samples the sampler could not hand over (ring full).
    pub samples_dropped: u64,
    /// Deadlines the sampler missed entirely (a sample came more than one
    /// interval late and the missed slots were skipped).
    pub deadlines_missed: u64,
    /// Source read errors (a /proc file that failed to read or parse).
    pub read_errors: u64,
    /// Records the dispatcher could not hand to the writer.
    pub records_dropped: u64,
    /// Histograms, each HDR V2-serialised: CPU busy ‰ (tenths of a percent).
    pub hist_cpu_permille: Vec<u8>,
    /// Memory used ‰.
    pub hist_mem_permille: Vec<u8>,
    /// Time to read and parse all sources for one sample, ns.
    pub hist_sample_latency_ns: Vec<u8>,
    /// Wake-up lateness against the absolute deadline, ns.
    pub hist_jitter_ns: Vec<u8>,
    /// Client event lines accepted on the ingest socket.
    pub ingest_accepted: u64,
    /// Client lines refused (each answered with an error line).
    pub ingest_rejected: u64,
    /// Accepted client events dropped because the dispatcher's ring was full.
    pub ingest_dropped: u64,
    /// Event lines live subscribers lost (slow subscribers).
    pub subscriber_dropped: u64,
    /// Polls the GPU agent took (0 without GPUs).
    pub gpu_polls: u64,
    /// GPU polls lost because the dispatcher's ring was full.
    pub gpu_polls_dropped: u64,
    /// GPU deadlines skipped (an NVML call stalled past a whole interval).
    pub gpu_deadlines_missed: u64,
    /// Times a GPU stopped answering (it is retried with backoff).
    pub gpu_devices_disabled: u64,
    /// The GPU thread's own CPU time, ns.
    pub gpu_thread_cpu_ns: u64,
    /// NVML time per device and poll, ns (HDR V2-serialised; empty
    /// without GPUs).
    pub hist_nvml_latency_ns: Vec<u8>,
    /// NVML errors per device (by `gpu_id`; empty without GPUs).
    pub gpu_errors: Vec<u64>,
    /// Back-fill calls (`nvmlDeviceGetSamples`) made.
    pub gpu_backfills: u64,
    /// Their CPU time, ns.
    pub gpu_backfill_cpu_ns: u64,
    /// Back-fills lost because the dispatcher's ring was full.
    pub gpu_backfills_dropped: u64,
    /// Clients the ingest listener turned away, out of file descriptors.
    pub ingest_clients_refused: u64,
    /// Failed reads or parses per source, in
    /// [`crate::agent::SOURCE_NAMES`] order.
    pub read_errors_by_source: Vec<u64>,
    /// The task sampler's counters, in [`crate::agent::tasks::COUNTER_NAMES`]
    /// order (empty when tasks are not sampled).
    pub task_counters: Vec<u64>,
    /// CPU time of the task sampler's thread, ns.
    pub task_thread_cpu_ns: u64,
    /// Task events that used a task id again (see `crate::ingest::reuse`).
    /// Appended after format 5's first snapshots: see [`Appended`].
    pub ingest_task_ids_reused: Appended<u64>,
}

/// A field appended at the end of a record after logs of its format
/// version were written: a record that ends before it (written by an
/// earlier tal of the same format version) reads as the default, and a
/// record that has it is read by an earlier tal, which stops before the
/// bytes it does not know. Only the last fields of a record may be such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended<T>(pub T);

impl<T: Encode> Encode for Appended<T> {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

impl<Ctx, T: Decode<Ctx> + Default> Decode<Ctx> for Appended<T> {
    fn decode<D: bincode::de::Decoder<Context = Ctx>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        // Only a record that ends here has no value: a value cut short is
        // an error, as before.
        let at_end = decoder.reader().peek_read(1).is_none();
        match T::decode(decoder) {
            Ok(v) => Ok(Self(v)),
            Err(bincode::error::DecodeError::UnexpectedEnd { .. }) if at_end => {
                Ok(Self(T::default()))
            }
            Err(e) => Err(e),
        }
    }
}

impl<'de, Ctx, T: bincode::BorrowDecode<'de, Ctx> + Default> bincode::BorrowDecode<'de, Ctx>
    for Appended<T>
{
    fn borrow_decode<D: bincode::de::BorrowDecoder<'de, Context = Ctx>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        use bincode::de::read::Reader;
        let at_end = decoder.reader().peek_read(1).is_none();
        match T::borrow_decode(decoder) {
            Ok(v) => Ok(Self(v)),
            Err(bincode::error::DecodeError::UnexpectedEnd { .. }) if at_end => {
                Ok(Self(T::default()))
            }
            Err(e) => Err(e),
        }
    }
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum EndReason {
    /// A signal (SIGTERM, SIGINT, SIGHUP) asked the agent to stop.
    Signal(i32),
    /// The wrapped command exited with this status (128+N for signal N).
    CommandExited(i32),
    /// A stop request from a client.
    StopRequested,
}

/// The last record of a cleanly finished log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct EndMarker {
    /// ns since the epoch.
    pub wall_ns: i64,
    /// Why it ended.
    pub reason: EndReason,
}
