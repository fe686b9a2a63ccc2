//! The report's header facts and time marks, gathered while the JSONL is
//! read: what a reader wants first (peaks of CPU, memory and GPU, the
//! GPUs' energy, the task ids that ran more than once) and the custom
//! events to mark on every time axis.
//!
//! These are the report's own readings of the events, kept apart from
//! `tal summary`'s figures so that the page's header does not change
//! when the summary's layout does.
//!
//! A reused task id is one whose lifecycle starts again (`TaskCreated`,
//! `TaskSubmitted`, `TaskQueued` or `TaskStarted`) after its terminal
//! event (`TaskCompleted`, `TaskFailed`, `TaskCanceled`): the span of
//! the run before is all the converter keeps of it, so the page names it.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Custom events marked on the time axes, at most (the rest are counted).
pub(super) const MARKS: usize = 500;

/// Reused task ids named, at most (the rest are counted).
pub(super) const REUSED: usize = 100;

/// Lifecycle events that open a task's run.
const OPENING: [&str; 4] = ["TaskCreated", "TaskSubmitted", "TaskQueued", "TaskStarted"];

/// Terminal lifecycle events.
const TERMINAL: [&str; 3] = ["TaskCompleted", "TaskFailed", "TaskCanceled"];

/// Whether `ty` is a terminal task event.
pub(super) fn is_terminal(ty: &str) -> bool {
    TERMINAL.contains(&ty)
}

/// Whether `ty` is an application's own event type: not a task's or the
/// session's lifecycle, not a resource sample.
pub(super) fn is_custom(ty: &str) -> bool {
    !(ty.starts_with("Task")
        || ty.starts_with("Session")
        || ty == "ResourceUpdate"
        || ty == crate::record::TaskResources::EVENT_TYPE)
}

/// Task ids whose lifecycle started again after their terminal event.
#[derive(Debug, Default)]
pub(super) struct Reuse {
    /// Ids whose last lifecycle event was terminal.
    ended: HashSet<String>,
    /// Reused ids and their runs (2 or more).
    runs: BTreeMap<String, u32>,
    /// Reused ids past [`REUSED`].
    more: u64,
}

/// The reused ids the page names.
#[derive(Debug, Default, Serialize, PartialEq)]
pub(super) struct Reused {
    /// Id and runs, by id.
    pub(super) ids: Vec<(String, u32)>,
    /// Reused ids not listed.
    pub(super) more: u64,
}

impl Reuse {
    /// One task lifecycle event.
    pub(super) fn event(&mut self, ty: &str, task: &str) {
        if is_terminal(ty) {
            self.ended.insert(task.to_string());
        } else if OPENING.contains(&ty) && self.ended.remove(task) {
            let full = self.runs.len() >= REUSED;
            match self.runs.get_mut(task) {
                Some(n) => *n += 1,
                None if full => self.more += 1,
                None => {
                    self.runs.insert(task.to_string(), 2);
                }
            }
        }
    }

    pub(super) fn finish(self) -> Reused {
        Reused {
            ids: self.runs.into_iter().collect(),
            more: self.more,
        }
    }
}

/// The largest value seen, and where.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub(super) struct Peak {
    pub(super) value: f64,
    pub(super) node: String,
    /// s from the session's start.
    pub(super) t: f64,
}

/// The header's figures over every node.
#[derive(Debug, Default, Serialize)]
pub(super) struct Facts {
    /// Node CPU busy %, memory used %, GPU utilisation %: the highest
    /// sample (`null`: none measured).
    pub(super) cpu_percent: Option<Peak>,
    pub(super) memory_percent: Option<Peak>,
    pub(super) gpu_percent: Option<Peak>,
    /// GPU energy, J: the devices' `gpu_energy_joules` counters, as `tal
    /// summary` sums them; without counters, each device's power times
    /// the time since its previous sample, summed (`null`: neither).
    pub(super) gpu_energy_j: Option<f64>,
    pub(super) reused: Reused,
    /// Custom events: their times (s from the start), their type (an
    /// index into `mark_types`) and a short label (the first string
    /// field), in the order read, at most [`MARKS`].
    pub(super) marks: Vec<(f64, u32, String)>,
    pub(super) mark_types: Vec<String>,
    /// Custom events past [`MARKS`].
    pub(super) marks_more: u64,
}

impl Facts {
    /// A sample's figure `v` on `node` at `t`.
    pub(super) fn peak(slot: &mut Option<Peak>, v: Option<f64>, node: &str, t: f64) {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            return;
        };
        if slot.as_ref().is_none_or(|p| v > p.value) {
            *slot = Some(Peak {
                value: v,
                node: node.to_string(),
                t,
            });
        }
    }

    /// A custom event of type `ty` at `t`.
    pub(super) fn mark(&mut self, t: f64, ty: &str, v: &crate::items::Fields<'_>) {
        if self.marks.len() >= MARKS {
            self.marks_more += 1;
            return;
        }
        let idx = match self.mark_types.iter().position(|x| x == ty) {
            Some(i) => i,
            None => {
                self.mark_types.push(ty.to_string());
                self.mark_types.len() - 1
            }
        };
        self.marks.push((t, idx as u32, mark_label(v)));
    }
}

/// A custom event's first own string field as `key=value` (at most 40
/// characters), or nothing.
fn mark_label(v: &crate::items::Fields<'_>) -> String {
    v.first_own_string()
        .map(|(k, s)| format!("{k}={s}").chars().take(40).collect())
        .unwrap_or_default()
}

/// Turns counts since the previous sample into rates per second: the
/// window is the time since the previous sample of the same source (a
/// node, or one of its GPUs). The first sample of a source, and one whose
/// window is not positive, has no rate.
#[derive(Debug, Default)]
pub(super) struct Windows {
    last: std::collections::HashMap<(String, Option<u64>), f64>,
}

impl Windows {
    /// The window, s, that ends at `t` for this source (and `t` noted as
    /// its last sample).
    pub(super) fn window(&mut self, node: &str, gpu: Option<u64>, t: f64) -> Option<f64> {
        let prev = self.last.insert((node.to_string(), gpu), t);
        prev.map(|p| t - p).filter(|w| *w > 0.0)
    }
}

/// A count over a window as a rate per second, to the whole unit (a
/// report draws bytes per second; a fraction of one would only lengthen
/// the page).
pub(super) fn per_second(count: Option<f64>, window: Option<f64>) -> Option<f64> {
    Some((count? / window?).round()).filter(|r| r.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lifecycle_that_starts_again_is_a_reused_id() {
        let mut r = Reuse::default();
        for ty in ["TaskCreated", "TaskStarted", "TaskCompleted"] {
            r.event(ty, "a");
        }
        // Two runs of b: the second's three opening events count once.
        for _ in 0..2 {
            for ty in ["TaskCreated", "TaskSubmitted", "TaskStarted", "TaskFailed"] {
                r.event(ty, "b");
            }
        }
        r.event("TaskCreated", "b");
        assert_eq!(
            r.finish(),
            Reused {
                ids: vec![("b".into(), 3)],
                more: 0
            }
        );
    }

    #[test]
    fn custom_events_are_the_applications_own() {
        for ty in ["app.PhaseStarted", "Checkpoint"] {
            assert!(is_custom(ty), "{ty}");
        }
        for ty in [
            "TaskFailed",
            "SessionEnded",
            "ResourceUpdate",
            "tal.TaskResourceUpdate",
        ] {
            assert!(!is_custom(ty), "{ty}");
        }
        let mut f = Facts::default();
        let e = json!({"event_type": "app.PhaseStarted", "node_id": "n", "phase": "check", "n": 3});
        fn fields(v: &serde_json::Value) -> crate::items::Fields<'_> {
            crate::items::Fields::Json(v.as_object().unwrap())
        }
        f.mark(1.5, "app.PhaseStarted", &fields(&e));
        f.mark(
            2.0,
            "app.Other",
            &fields(&json!({"event_type": "app.Other"})),
        );
        assert_eq!(
            f.marks,
            [(1.5, 0, "phase=check".into()), (2.0, 1, String::new())]
        );
    }

    #[test]
    fn counts_become_rates_over_their_own_window() {
        let mut w = Windows::default();
        assert_eq!(w.window("a", None, 1.0), None);
        assert_eq!(w.window("b", None, 1.2), None);
        let win = w.window("a", None, 1.5);
        assert_eq!(win, Some(0.5));
        assert_eq!(per_second(Some(1000.0), win), Some(2000.0));
        assert_eq!(per_second(None, win), None);
        assert_eq!(w.window("a", None, 1.5), None, "an empty window");
        assert_eq!(per_second(Some(10.0), Some(3.0)), Some(3.0), "whole units");
    }

    #[test]
    fn the_highest_finite_figure_is_the_peak() {
        let mut p = None;
        Facts::peak(&mut p, Some(3.0), "a", 1.0);
        Facts::peak(&mut p, Some(f64::NAN), "b", 2.0);
        Facts::peak(&mut p, None, "b", 2.0);
        Facts::peak(&mut p, Some(7.0), "c", 3.0);
        Facts::peak(&mut p, Some(5.0), "d", 4.0);
        assert_eq!(p.unwrap().node, "c");
    }
}
