//! RHAPSODY's OTel instruments, as plain state updated event by event.
//!
//! `convert` (the JSONL's metric line) and the live OTLP exporter (its
//! task counters) share this one definition, with [`crate::tasks`] deciding
//! when a task counts, so the metric line is exactly what the instruments
//! hold after the merged event stream. Values follow RHAPSODY's metric line:
//! counters summed over label sets, `tasks_running` as an up-down counter,
//! `task_duration_seconds` as count and sum (plus an HDR histogram for
//! percentiles), and the node utilisation gauges as the latest value per
//! node summed over nodes. An instrument with no data is left out.

use crate::record::{EventKind, ResourceScope, TaskState};
use crate::stats;
use hdrhistogram::Histogram;

/// The instruments' state.
#[derive(Debug)]
pub struct Instruments {
    /// tasks_submitted, tasks_started, tasks_completed, tasks_failed, tasks_canceled
    pub counters: [Option<u64>; 5],
    /// tasks_running
    pub running: Option<i64>,
    /// task_duration_seconds count and sum.
    pub duration_count: u64,
    /// Sum of durations, seconds.
    pub duration_sum: f64,
    /// Durations in microseconds, for percentiles.
    pub duration_hist: Histogram<u64>,
    /// Latest cpu / memory / gpu utilisation per node (looked up at every
    /// node sample: foldhash, seeded per process, not a tree of string
    /// compares; summed in the nodes' order, see [`Self::node_gauge`]).
    pub node_util: std::collections::HashMap<String, [Option<f64>; 3], foldhash::fast::RandomState>,
}

/// Names of the five task counters, in `counters` order.
pub const COUNTER_NAMES: [&str; 5] = [
    "tasks_submitted",
    "tasks_started",
    "tasks_completed",
    "tasks_failed",
    "tasks_canceled",
];

impl Default for Instruments {
    fn default() -> Self {
        Self {
            counters: [None; 5],
            running: None,
            duration_count: 0,
            duration_sum: 0.0,
            duration_hist: stats::histogram(3_600_000_000),
            node_util: Default::default(),
        }
    }
}

impl Instruments {
    /// Counts a task lifecycle step in its counter (Created and Queued have none).
    pub fn count(&mut self, state: TaskState) {
        let i = match state {
            TaskState::Submitted => 0,
            TaskState::Started => 1,
            TaskState::Completed => 2,
            TaskState::Failed => 3,
            TaskState::Canceled => 4,
            TaskState::Created | TaskState::Queued => return,
        };
        *self.counters[i].get_or_insert(0) += 1;
    }

    /// Adds to `tasks_running`.
    pub fn running_add(&mut self, d: i64) {
        *self.running.get_or_insert(0) += d;
    }

    /// Records a task duration in `task_duration_seconds`.
    pub fn record_duration(&mut self, d: f64) {
        self.duration_count += 1;
        self.duration_sum += d;
        let _ = self.duration_hist.record((d.max(0.0) * 1e6) as u64);
    }

    /// Updates the node gauges for one event seen on `node` (task events are
    /// counted by [`crate::tasks::TaskTracker`], which knows their state).
    pub fn observe(&mut self, node: &str, kind: &EventKind) {
        match kind {
            EventKind::ResourceUpdate(u) if u.scope == ResourceScope::PerNode => {
                let vals = [u.cpu_percent, u.memory_percent, u.gpu_percent];
                let slot = match self.node_util.get_mut(node) {
                    Some(s) => s,
                    None => self.node_util.entry(node.to_string()).or_default(),
                };
                for (s, v) in slot.iter_mut().zip(vals) {
                    if v.is_some() {
                        *s = v;
                    }
                }
            }
            _ => {}
        }
    }

    /// The node utilisation gauge `i` (0 cpu, 1 memory, 2 gpu), summed over
    /// nodes; `None` when no node reported it.
    pub fn node_gauge(&self, i: usize) -> Option<f64> {
        let mut any = false;
        let mut sum = 0.0;
        // By node name, so that the sum's rounding does not depend on the
        // table's order.
        let mut nodes: Vec<(&String, &[Option<f64>; 3])> = self.node_util.iter().collect();
        nodes.sort_unstable_by_key(|n| n.0);
        for v in nodes.into_iter().filter_map(|(_, v)| v[i]) {
            any = true;
            sum += v;
        }
        any.then_some(sum)
    }
}
