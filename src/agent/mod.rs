//! Sampling agents: threads that own their sources, read them on absolute
//! deadlines and hand fixed-size raw readings to the dispatcher through
//! their own ring. The proc agent reads /proc; the GPU agent (NVML) is a
//! separate thread because NVML calls can stall for milliseconds.

pub mod affinity;
pub mod cgroup;
pub mod gpu;
pub mod kept;
pub mod proc;
pub mod procfs;
pub mod tasks;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How much sampled time the dispatcher lets accumulate before it drains:
/// the agents wake it after this much (or early, when their ring fills).
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(1);

/// Counters an agent thread updates and the dispatcher reads (relaxed
/// atomics: each has one writer, and readers only need eventual values).
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Samples taken.
    pub samples_taken: AtomicU64,
    /// Samples dropped because the ring was full.
    pub samples_dropped: AtomicU64,
    /// Deadlines skipped because the agent woke more than one interval late.
    pub deadlines_missed: AtomicU64,
    /// Samples with a source that failed to read or parse.
    pub read_errors: AtomicU64,
    /// Failed reads or parses, per source ([`SOURCE_NAMES`]).
    pub source_errors: [AtomicU64; SOURCES],
}

/// How many sources the proc agent reads (the four /proc files, and the
/// job cgroup's four).
pub const SOURCES: usize = 8;

/// The sources, in [`AgentCounters::source_errors`] order, as the metric
/// line names them.
pub const SOURCE_NAMES: [&str; SOURCES] = [
    "proc_stat",
    "proc_meminfo",
    "proc_diskstats",
    "proc_net_dev",
    "cgroup_cpu",
    "cgroup_memory",
    "cgroup_memory_peak",
    "cgroup_io",
];

impl AgentCounters {
    #[inline]
    pub(crate) fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
