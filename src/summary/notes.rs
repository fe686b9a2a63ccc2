//! A few plain notes on a session, as Princeton's jobstats gives them:
//! each drawn from a measured fact, with the threshold that brought it
//! up said in it, so a reader can weigh it. No advice is made up from
//! figures the file does not hold.
//!
//! Notes: failed tasks by error type; task ids reused (a second run under
//! one id, which the spans and counts leave out); tasks still running at
//! the end; a node whose CPU efficiency is under [`CPU_LOW`]; a node whose
//! peak memory is under [`MEMORY_LOW`] or over [`MEMORY_HIGH`] of its
//! own; a GPU idle (under [`super::usage::GPU_IDLE_PERCENT`]) for
//! [`GPU_IDLE_SHARE`] of the session or more. Each kind names at most
//! [`NOTED`] nodes or tasks, then counts the rest, so thousands of nodes
//! make a few lines.

use super::units::{bytes, percent};
use super::usage::{GpuUse, Usage, GPU_IDLE_PERCENT};
use std::collections::BTreeMap;

/// A node's CPU efficiency under this (%) is noted.
pub const CPU_LOW: f64 = 50.0;
/// A node's peak memory under this (% of the node's) is noted.
pub const MEMORY_LOW: f64 = 50.0;
/// A node's peak memory over this (% of the node's) is noted.
pub const MEMORY_HIGH: f64 = 90.0;
/// A GPU idle this share of the session (%) or more is noted.
pub const GPU_IDLE_SHARE: f64 = 25.0;
/// Nodes, GPUs or tasks named by one kind of note, at most.
pub const NOTED: usize = 5;
/// Error types named in the failures' note, at most.
const ERROR_TYPES: usize = 10;

/// A task id that was used again after its task had ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReusedTask {
    /// The id.
    pub task_id: String,
    /// Its node, if its events said.
    pub node_id: Option<String>,
    /// Runs under it after the first (not counted).
    pub later_runs: u64,
}

/// What the notes on tasks are drawn from.
#[derive(Debug, Clone, Copy)]
pub struct TaskFacts<'a> {
    /// Tasks (spans).
    pub total: u64,
    /// Failed tasks by error type.
    pub error_types: &'a BTreeMap<String, u64>,
    /// Failed tasks.
    pub failed: u64,
    /// Still running at the end.
    pub open_at_end: u64,
    /// The reused ids listed.
    pub reused: &'a [ReusedTask],
    /// All the reused ids.
    pub reused_ids: u64,
}

/// A node, for the notes.
#[derive(Debug, Clone)]
pub struct NodeFacts<'a> {
    /// Its id.
    pub node_id: &'a str,
    /// Its use.
    pub usage: &'a Usage,
    /// Its GPUs' use, by id.
    pub gpus: Vec<(u64, &'a GpuUse)>,
}

/// `what` for the first [`NOTED`] of `items`, then one line for the rest.
fn listed<T>(out: &mut Vec<String>, items: &[T], what: impl Fn(&T) -> String, rest: &str) {
    out.extend(items.iter().take(NOTED).map(what));
    if items.len() > NOTED {
        out.push(format!("and {} more {rest}", items.len() - NOTED));
    }
}

/// The notes on tasks.
fn task_notes(out: &mut Vec<String>, t: &TaskFacts<'_>) {
    if t.failed > 0 {
        let mut types: Vec<(&String, &u64)> = t.error_types.iter().collect();
        types.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut named: Vec<String> = types
            .iter()
            .take(ERROR_TYPES)
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        if types.len() > ERROR_TYPES {
            named.push(format!("{} more types", types.len() - ERROR_TYPES));
        }
        out.push(format!(
            "{} of {} tasks failed: {}",
            t.failed,
            t.total,
            named.join(", ")
        ));
    }
    for r in t.reused.iter().take(NOTED) {
        let runs = match r.later_runs {
            1 => "its second run was not counted".to_string(),
            n => format!("its {n} later runs were not counted"),
        };
        out.push(format!("task {}: id reused, {runs}", r.task_id));
    }
    let more = t
        .reused_ids
        .saturating_sub(t.reused.len().min(NOTED) as u64);
    if more > 0 {
        out.push(format!(
            "and {more} more task ids reused (their later runs not counted)"
        ));
    }
    if t.open_at_end > 0 {
        out.push(format!(
            "{} task(s) still running when the session ended (counted as canceled)",
            t.open_at_end
        ));
    }
}

/// The notes on nodes' CPU and memory.
fn node_notes(out: &mut Vec<String>, nodes: &[NodeFacts<'_>]) {
    let low_cpu: Vec<(&str, f64)> = nodes
        .iter()
        .filter_map(|n| Some((n.node_id, n.usage.cpu.as_ref()?.efficiency_percent)))
        .filter(|(_, e)| *e < CPU_LOW)
        .collect();
    listed(
        out,
        &low_cpu,
        |(n, e)| {
            format!(
                "node {n}: CPU efficiency {} (noted under {CPU_LOW} %)",
                percent(*e)
            )
        },
        &format!("nodes with CPU efficiency under {CPU_LOW} %"),
    );
    let memory: Vec<(&str, f64, Option<f64>)> = nodes
        .iter()
        .filter_map(|n| {
            let m = n.usage.memory.as_ref()?;
            Some((n.node_id, m.peak_percent, m.peak_bytes))
        })
        .filter(|(_, p, _)| *p < MEMORY_LOW || *p > MEMORY_HIGH)
        .collect();
    listed(
        out,
        &memory,
        |(n, p, b)| {
            let of = b.map_or(String::new(), |b| format!(", {}", bytes(b)));
            format!(
                "node {n}: peak memory {} of the node's{of} (noted under {MEMORY_LOW} % or over {MEMORY_HIGH} %)",
                percent(*p)
            )
        },
        &format!("nodes with peak memory under {MEMORY_LOW} % or over {MEMORY_HIGH} %"),
    );
    // Near its cgroup's limit, a job is about to be killed for memory.
    let near: Vec<(&str, f64, f64)> = nodes
        .iter()
        .filter_map(|n| {
            let c = n.usage.job_cgroup.as_ref()?;
            Some((
                n.node_id,
                c.memory_peak_percent_of_limit?,
                c.memory_limit_bytes?,
            ))
        })
        .filter(|(_, p, _)| *p > MEMORY_HIGH)
        .collect();
    listed(
        out,
        &near,
        |(n, p, l)| {
            format!(
                "node {n}: the job's peak memory {} of its cgroup's limit, {} (noted over {MEMORY_HIGH} %: past the limit the kernel kills the job's processes)",
                percent(*p),
                bytes(*l)
            )
        },
        &format!("nodes where the job's peak memory passed {MEMORY_HIGH} % of its limit"),
    );
}

/// The notes on GPUs.
fn gpu_notes(out: &mut Vec<String>, nodes: &[NodeFacts<'_>]) {
    let several = nodes.len() > 1;
    let idle: Vec<(String, f64)> = nodes
        .iter()
        .flat_map(|n| {
            n.gpus.iter().filter_map(move |(g, u)| {
                let name = if several {
                    format!("GPU {g} on {}", n.node_id)
                } else {
                    format!("GPU {g}")
                };
                Some((name, u.idle_percent?))
            })
        })
        .filter(|(_, i)| *i >= GPU_IDLE_SHARE)
        .collect();
    listed(
        out,
        &idle,
        |(g, i)| {
            format!(
                "{g} idle (< {GPU_IDLE_PERCENT} %) for {:.0} % of the session (noted from {GPU_IDLE_SHARE} %)",
                i
            )
        },
        &format!("GPUs idle for {GPU_IDLE_SHARE} % of the session or more"),
    );
}

/// The notes on a session.
pub fn notes(tasks: &TaskFacts<'_>, nodes: &[NodeFacts<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    task_notes(&mut out, tasks);
    node_notes(&mut out, nodes);
    gpu_notes(&mut out, nodes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::usage::{CpuUse, MemoryUse};

    fn facts<'a>(
        error_types: &'a BTreeMap<String, u64>,
        reused: &'a [ReusedTask],
    ) -> TaskFacts<'a> {
        TaskFacts {
            total: 12,
            error_types,
            failed: error_types.values().sum(),
            open_at_end: 0,
            reused,
            reused_ids: reused.len() as u64,
        }
    }

    #[test]
    fn failures_and_reused_ids_are_named() {
        let errors: BTreeMap<String, u64> = [("exit:3".to_string(), 1), ("exec:ENOENT".into(), 1)]
            .into_iter()
            .collect();
        let reused = [ReusedTask {
            task_id: "dup".into(),
            node_id: None,
            later_runs: 1,
        }];
        let n = notes(&facts(&errors, &reused), &[]);
        assert_eq!(
            n,
            [
                "2 of 12 tasks failed: exec:ENOENT (1), exit:3 (1)",
                "task dup: id reused, its second run was not counted"
            ]
        );
        assert!(notes(&facts(&BTreeMap::new(), &[]), &[]).is_empty());
    }

    #[test]
    fn a_job_near_its_memory_limit_is_noted_with_the_limit() {
        let mut u = Usage {
            job_cgroup: Some(super::super::usage::CgroupUse {
                memory_peak_bytes: Some(9.5e8),
                ..Default::default()
            }),
            ..Usage::default()
        };
        super::super::usage::set_job_memory_limit(&mut u, Some(1e9));
        let n = |u: &Usage| {
            node_notes_of(&[NodeFacts {
                node_id: "vm",
                usage: u,
                gpus: vec![],
            }])
        };
        assert_eq!(
            n(&u),
            ["node vm: the job's peak memory 95.0 % of its cgroup's limit, 1.00 GB (noted over 90 %: past the limit the kernel kills the job's processes)"]
        );
        super::super::usage::set_job_memory_limit(&mut u, Some(2e9));
        assert!(n(&u).is_empty(), "47.5 % is not noted");
        super::super::usage::set_job_memory_limit(&mut u, None);
        assert!(n(&u).is_empty(), "no limit, no note");
    }

    fn node_notes_of(nodes: &[NodeFacts<'_>]) -> Vec<String> {
        let mut out = Vec::new();
        node_notes(&mut out, nodes);
        out
    }

    #[test]
    fn node_notes_state_their_thresholds_and_stay_few() {
        let u = Usage {
            cpu: Some(CpuUse {
                cpus: Some(2),
                measured_s: 10.0,
                busy_cpu_seconds: Some(2.0),
                available_cpu_seconds: Some(20.0),
                efficiency_percent: 10.0,
            }),
            memory: Some(MemoryUse {
                total_bytes: Some(1e10),
                peak_percent: 9.0,
                mean_percent: 5.0,
                peak_bytes: Some(9e8),
                mean_bytes: Some(5e8),
            }),
            ..Usage::default()
        };
        let idle = GpuUse {
            idle_percent: Some(83.0),
            ..GpuUse::default()
        };
        let names: Vec<String> = (0..300).map(|i| format!("n{i}")).collect();
        let one = [NodeFacts {
            node_id: "vm",
            usage: &u,
            gpus: vec![(1, &idle)],
        }];
        let n = notes(&facts(&BTreeMap::new(), &[]), &one);
        assert_eq!(
            n,
            [
                "node vm: CPU efficiency 10.0 % (noted under 50 %)",
                "node vm: peak memory 9.0 % of the node's, 900 MB (noted under 50 % or over 90 %)",
                "GPU 1 idle (< 5 %) for 83 % of the session (noted from 25 %)"
            ]
        );
        let many: Vec<NodeFacts<'_>> = names
            .iter()
            .map(|name| NodeFacts {
                node_id: name,
                usage: &u,
                gpus: vec![(0, &idle), (1, &idle)],
            })
            .collect();
        let n = notes(&facts(&BTreeMap::new(), &[]), &many);
        assert_eq!(n.len(), 3 * (NOTED + 1), "{n:#?}");
        assert!(n.contains(&"and 595 more GPUs idle for 25 % of the session or more".to_string()));
    }
}
