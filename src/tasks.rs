//! The task state machine: RHAPSODY's task-span and instrument semantics,
//! applied event by event to a (merged) stream.
//!
//! `convert` runs it over the merged events of every node, because one
//! task's events may come from different nodes (TaskCreated from the
//! runtime on one node, TaskStarted and TaskCompleted from `tal run` on
//! another); so spans and task instruments are decided there, once, from
//! everything that was recorded.
//!
//! Rules (RHAPSODY 0.6.0's, made explicit for the cases it leaves open):
//! - The first lifecycle event seen for a task opens its span, at that
//!   event's time (normally TaskCreated).
//! - TaskSubmitted counts `tasks_submitted`; TaskQueued is an annotation of
//!   the open span (kept as its time); TaskStarted counts `tasks_started`,
//!   adds one to `tasks_running` and fixes the start of `duration_seconds`.
//! - TaskCompleted / TaskFailed / TaskCanceled close the span with status
//!   `completed` / `failed` / `canceled` (`OK` / `ERROR` / `ERROR`) and
//!   `error_type` for failures; `tasks_running` drops by one if the task had
//!   started; the duration is the event's own `duration_seconds` when the
//!   client sent one, else TaskStarted → terminal, else 0.0 with
//!   `incomplete_lifecycle: true`.
//! - Duplicates: a lifecycle step seen again for the same task (a second
//!   TaskStarted, a second terminal event) is still written as an event
//!   line but changes no state and no counter: the first one wins. Events
//!   for a task whose span is already closed are treated the same way.
//! - A task still open when the session ends is closed as canceled with
//!   `incomplete_lifecycle: true` (and `closed_at_session_end: true`), and
//!   counted in `tasks_canceled`.
//! - Span attributes are RHAPSODY's (`session_id`, `backend` — that of the
//!   event that opened the span, "" when null — `task_id`, `status`,
//!   `executable`, `task_type`, `error_type`, `incomplete_lifecycle`) plus
//!   the other attributes of the task's events (for example the resource
//!   use `tal run` attaches to the terminal event), first value wins.
//! - GPU memory per task: a task whose events carry a `pid` attribute (as
//!   `tal run`'s TaskStarted does) owns the GPU processes of its node whose
//!   pid, or one of whose ancestors, is that pid, while the task is open
//!   (the nearest task wins for nested tasks). Its terminal event and span
//!   get `gpu_memory_peak_bytes`: the peak device memory of its processes
//!   on each device, as an object keyed by `gpu_id`. (Processes are summed
//!   per device and poll, so a task with two processes on one GPU counts
//!   both.)
//! - GPU energy per task: a task that started on a node whose GPUs are
//!   sampled gets `gpu_energy_joules` on its terminal event and span, e.g.
//!   `{"0": 1520.4, "1": 310.0}`: each device's energy from the task's
//!   TaskStarted to its end (the `gpu_energy_joules` counters of the node's
//!   `per_gpu` samples, so to within one poll at either end). It is the
//!   devices' whole energy while the task ran, not the task's share of it:
//!   tasks that overlap on a node each see all of it, and a CPU-only task
//!   sees what the idle GPUs drew.

use crate::instruments::Instruments;
use crate::record::{Attributes, Event, EventKind, GpuProcess, TaskState, Value};
use std::collections::{HashMap, HashSet};

/// A task span, closed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpan {
    /// The task.
    pub task_id: String,
    /// Opened at, ns since the epoch.
    pub start_ns: i64,
    /// Closed at, ns since the epoch.
    pub end_ns: i64,
    /// When TaskQueued was seen, if it was.
    pub queued_ns: Option<i64>,
    /// Terminal state.
    pub state: TaskState,
    /// Failure type for failed tasks.
    pub error_type: Option<String>,
    /// The backend of the opening event ("" when null, as RHAPSODY writes it).
    pub backend: String,
    /// `executable` attribute.
    pub executable: String,
    /// `task_type` attribute.
    pub task_type: String,
    /// TaskStarted was never seen.
    pub incomplete: bool,
    /// Closed because the session ended.
    pub closed_at_session_end: bool,
    /// Other attributes gathered from the task's events.
    pub extra: Attributes,
}

#[derive(Debug)]
struct Open {
    start_ns: i64,
    queued_ns: Option<i64>,
    started_ns: Option<i64>,
    backend: String,
    executable: Option<String>,
    task_type: Option<String>,
    extra: Attributes,
    /// The node and pid of the task's process, once an event names it.
    pid: Option<(String, u32)>,
    /// Peak GPU memory of its processes, per gpu_id.
    gpu_peak: Vec<(u32, u64)>,
    /// The node it started on, and its devices' energy counters then.
    energy_start: Option<(String, Vec<(u32, f64)>)>,
}

/// What the tracker decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a task event, or one that changes nothing (a duplicate).
    Nothing,
    /// A step of an open task was applied.
    Applied,
    /// The task's span closed; the event should carry this duration and
    /// these attributes (filled in where the client left them out).
    Closed {
        /// The duration to write.
        duration_seconds: f64,
        /// Whether TaskStarted was never seen.
        incomplete: bool,
    },
}

/// Tracks every task of a session.
#[derive(Debug, Default)]
pub struct TaskTracker {
    open: HashMap<String, Open>,
    /// Open tasks by node and pid.
    by_pid: HashMap<String, HashMap<u32, String>>,
    /// Attributes for the terminal event just closed (GPU memory).
    closed_extra: Attributes,
    closed: HashSet<String>,
    spans: Vec<TaskSpan>,
    duplicates: u64,
    /// Each node's GPU energy counters, J, by gpu_id (the latest samples).
    energy: HashMap<String, Vec<(u32, f64)>>,
}

const CORE_ATTRS: [&str; 5] = [
    "executable",
    "task_type",
    "error_type",
    "incomplete_lifecycle",
    "status",
];

fn attr_str(attrs: &Attributes, key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| match v {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        })
}

fn merge_extra(into: &mut Attributes, from: &Attributes) {
    for (k, v) in from {
        if CORE_ATTRS.contains(&k.as_str()) || into.iter().any(|(ek, _)| ek == k) {
            continue;
        }
        into.push((k.clone(), v.clone()));
    }
}

/// `gpu_memory_peak_bytes`: `{"0": bytes, …}`, by gpu_id.
fn gpu_peak_attr(peak: &[(u32, u64)]) -> (String, Value) {
    let mut sorted = peak.to_vec();
    sorted.sort_unstable();
    let body: Vec<String> = sorted
        .iter()
        .map(|(g, b)| format!("\"{g}\": {b}"))
        .collect();
    (
        "gpu_memory_peak_bytes".into(),
        Value::Json(format!("{{{}}}", body.join(", "))),
    )
}

/// `gpu_energy_joules`: `{"0": joules, …}`, each device's energy between
/// `start` and `now`.
fn energy_attr(start: &[(u32, f64)], now: &[(u32, f64)]) -> Option<(String, Value)> {
    let mut body: Vec<(u32, f64)> = start
        .iter()
        .filter_map(|&(g, j0)| {
            let j1 = now.iter().find(|(n, _)| *n == g)?.1;
            Some((g, ((j1 - j0).max(0.0) * 1000.0).round() / 1000.0))
        })
        .collect();
    if body.is_empty() {
        return None;
    }
    body.sort_by_key(|(g, _)| *g);
    let text: Vec<String> = body.iter().map(|(g, j)| format!("\"{g}\": {j}")).collect();
    Some((
        "gpu_energy_joules".into(),
        Value::Json(format!("{{{}}}", text.join(", "))),
    ))
}

impl TaskTracker {
    /// Notes a device's energy counter (`gpu_energy_joules` of a `per_gpu`
    /// sample on `node`).
    pub fn observe_energy(&mut self, node: &str, gpu: u32, joules: f64) {
        let devs = match self.energy.get_mut(node) {
            Some(d) => d,
            None => self.energy.entry(node.to_string()).or_default(),
        };
        match devs.iter_mut().find(|(g, _)| *g == gpu) {
            Some(e) => e.1 = joules,
            None => devs.push((gpu, joules)),
        }
    }

    /// Each node's devices' energy counters, J (the latest samples).
    pub fn energy(&self) -> &HashMap<String, Vec<(u32, f64)>> {
        &self.energy
    }

    /// The energy attribute of a task closing now.
    fn task_energy(&self, open: &Open) -> Option<(String, Value)> {
        let (node, start) = open.energy_start.as_ref()?;
        energy_attr(start, self.energy.get(node)?)
    }

    /// Applies one event seen on no particular node (see [`Self::observe_on`]).
    pub fn observe(&mut self, ev: &Event, inst: &mut Instruments) -> Outcome {
        self.observe_on("", ev, inst)
    }

    /// Attributes the GPU processes of one poll on `node` to the open tasks
    /// they belong to (by pid or ancestor pid).
    pub fn observe_gpu(&mut self, node: &str, procs: &[GpuProcess]) {
        let Some(pids) = self.by_pid.get(node) else {
            return;
        };
        // Summed per task and device for this poll.
        let mut use_: Vec<(&str, u32, u64)> = Vec::new();
        for p in procs {
            let owner = std::iter::once(&p.pid)
                .chain(&p.ancestors)
                .find_map(|pid| pids.get(pid));
            if let Some(task) = owner {
                match use_
                    .iter_mut()
                    .find(|(t, g, _)| *t == task.as_str() && *g == p.gpu_id)
                {
                    Some(u) => u.2 += p.used_bytes,
                    None => use_.push((task.as_str(), p.gpu_id, p.used_bytes)),
                }
            }
        }
        for (task, gpu, bytes) in use_ {
            if let Some(o) = self.open.get_mut(task) {
                match o.gpu_peak.iter_mut().find(|(g, _)| *g == gpu) {
                    Some(e) => e.1 = e.1.max(bytes),
                    None => o.gpu_peak.push((gpu, bytes)),
                }
            }
        }
    }

    /// Attributes to add to the terminal event [`Self::observe_on`] just
    /// closed (its GPU memory), taken once.
    pub fn take_terminal_extra(&mut self) -> Attributes {
        std::mem::take(&mut self.closed_extra)
    }

    /// Applies one event seen on `node`; updates `inst` (the task
    /// instruments).
    pub fn observe_on(&mut self, node: &str, ev: &Event, inst: &mut Instruments) -> Outcome {
        let EventKind::Task(t) = &ev.kind else {
            return Outcome::Nothing;
        };
        let Some(task_id) = ev.task_id.as_deref() else {
            return Outcome::Nothing;
        };
        if self.closed.contains(task_id) {
            self.duplicates += 1;
            return Outcome::Nothing;
        }
        let open = match self.open.get_mut(task_id) {
            Some(o) => o,
            None => self.open.entry(task_id.to_string()).or_insert(Open {
                start_ns: ev.event_time_ns,
                queued_ns: None,
                started_ns: None,
                backend: ev.backend.clone().unwrap_or_default(),
                executable: None,
                task_type: None,
                extra: Vec::new(),
                pid: None,
                gpu_peak: Vec::new(),
                energy_start: None,
            }),
        };
        if open.pid.is_none() {
            let pid = ev.attributes.iter().find_map(|(k, v)| match v {
                Value::Int(p) if k == "pid" && *p > 0 && *p <= i64::from(u32::MAX) => {
                    Some(*p as u32)
                }
                _ => None,
            });
            if let Some(pid) = pid {
                open.pid = Some((node.to_string(), pid));
                self.by_pid
                    .entry(node.to_string())
                    .or_default()
                    .insert(pid, task_id.to_string());
            }
        }
        open.start_ns = open.start_ns.min(ev.event_time_ns);
        if open.executable.is_none() {
            open.executable = attr_str(&ev.attributes, "executable");
        }
        if open.task_type.is_none() {
            open.task_type = attr_str(&ev.attributes, "task_type");
        }
        merge_extra(&mut open.extra, &ev.attributes);
        match t.state {
            TaskState::Created => Outcome::Applied,
            TaskState::Submitted => {
                inst.count(TaskState::Submitted);
                Outcome::Applied
            }
            TaskState::Queued => {
                if open.queued_ns.is_none() {
                    open.queued_ns = Some(ev.event_time_ns);
                    Outcome::Applied
                } else {
                    self.duplicates += 1;
                    Outcome::Nothing
                }
            }
            TaskState::Started => {
                if open.started_ns.is_some() {
                    self.duplicates += 1;
                    return Outcome::Nothing;
                }
                open.started_ns = Some(ev.event_time_ns);
                if let Some(e) = self.energy.get(node) {
                    open.energy_start = Some((node.to_string(), e.clone()));
                }
                inst.count(TaskState::Started);
                inst.running_add(1);
                Outcome::Applied
            }
            TaskState::Completed | TaskState::Failed | TaskState::Canceled => {
                let mut open = self.open.remove(task_id).expect("just looked up");
                self.forget_pid(&open);
                self.closed_extra.clear();
                if !open.gpu_peak.is_empty() {
                    let a = gpu_peak_attr(&open.gpu_peak);
                    open.extra.push(a.clone());
                    self.closed_extra.push(a);
                }
                if let Some(a) = self.task_energy(&open) {
                    open.extra.push(a.clone());
                    self.closed_extra.push(a);
                }
                let incomplete = open.started_ns.is_none()
                    || ev
                        .attributes
                        .iter()
                        .any(|(k, v)| k == "incomplete_lifecycle" && *v == Value::Bool(true));
                let duration = match (t.duration_seconds, open.started_ns) {
                    (Some(d), _) => d,
                    (None, Some(s)) => ((ev.event_time_ns - s) as f64 / 1e9).max(0.0),
                    (None, None) => 0.0,
                };
                if open.started_ns.is_some() {
                    inst.running_add(-1);
                }
                inst.count(t.state);
                inst.record_duration(duration);
                let error_type = (t.state == TaskState::Failed).then(|| {
                    t.error_type
                        .clone()
                        .or_else(|| attr_str(&ev.attributes, "error_type"))
                        .unwrap_or_else(|| "unknown".into())
                });
                self.close(
                    task_id.to_string(),
                    open,
                    ev.event_time_ns,
                    t.state,
                    error_type,
                    incomplete,
                    false,
                );
                Outcome::Closed {
                    duration_seconds: duration,
                    incomplete,
                }
            }
        }
    }

    /// Closes every task still open at `end_ns` as canceled (incomplete),
    /// returning the TaskCanceled events to write for them, in task order.
    pub fn close_all(&mut self, end_ns: i64, inst: &mut Instruments) -> Vec<Event> {
        let mut ids: Vec<String> = self.open.keys().cloned().collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut open = self.open.remove(&id).expect("listed");
            self.forget_pid(&open);
            if open.started_ns.is_some() {
                inst.running_add(-1);
            }
            inst.count(TaskState::Canceled);
            inst.record_duration(0.0);
            let mut attributes: Attributes = vec![
                (
                    "executable".into(),
                    Value::Str(open.executable.clone().unwrap_or_default()),
                ),
                (
                    "task_type".into(),
                    Value::Str(open.task_type.clone().unwrap_or_default()),
                ),
                ("incomplete_lifecycle".into(), Value::Bool(true)),
                ("closed_at_session_end".into(), Value::Bool(true)),
            ];
            if !open.gpu_peak.is_empty() {
                let a = gpu_peak_attr(&open.gpu_peak);
                open.extra.push(a.clone());
                attributes.push(a);
            }
            if let Some(a) = self.task_energy(&open) {
                open.extra.push(a.clone());
                attributes.push(a);
            }
            attributes.shrink_to_fit();
            out.push(Event {
                event_id: u128::from(crate::ids::task_span_id("", &id)) << 64
                    | 0x4000_8000_0000_0002,
                event_time_ns: end_ns,
                emit_time_ns: end_ns,
                backend: Some(open.backend.clone()),
                task_id: Some(id.clone()),
                node_id: None,
                attributes,
                kind: EventKind::Task(crate::record::TaskEvent {
                    state: TaskState::Canceled,
                    duration_seconds: Some(0.0),
                    error_type: None,
                    extra: Vec::new(),
                }),
            });
            self.close(id, open, end_ns, TaskState::Canceled, None, true, true);
        }
        out
    }

    fn forget_pid(&mut self, open: &Open) {
        if let Some((node, pid)) = &open.pid {
            if let Some(m) = self.by_pid.get_mut(node) {
                m.remove(pid);
            }
        }
    }

    /// Records the closed span of `task_id` and remembers it as closed.
    #[allow(clippy::too_many_arguments)]
    fn close(
        &mut self,
        task_id: String,
        open: Open,
        end_ns: i64,
        state: TaskState,
        error_type: Option<String>,
        incomplete: bool,
        closed_at_session_end: bool,
    ) {
        self.spans.push(TaskSpan {
            task_id: task_id.clone(),
            start_ns: open.start_ns,
            end_ns: end_ns.max(open.start_ns),
            queued_ns: open.queued_ns,
            state,
            error_type,
            backend: open.backend,
            executable: open.executable.unwrap_or_default(),
            task_type: open.task_type.unwrap_or_default(),
            incomplete,
            closed_at_session_end,
            extra: open.extra,
        });
        self.closed.insert(task_id);
    }

    /// Closed spans, in closing order.
    pub fn spans(&self) -> &[TaskSpan] {
        &self.spans
    }

    /// Tasks currently open.
    pub fn open_tasks(&self) -> usize {
        self.open.len()
    }

    /// Lifecycle events ignored as duplicates (or late, after the close).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TaskEvent;

    fn ev(t: i64, task: &str, state: TaskState) -> Event {
        Event {
            event_id: t as u128,
            event_time_ns: t * 1_000_000,
            emit_time_ns: t * 1_000_000,
            backend: Some("concurrent".into()),
            task_id: Some(task.into()),
            node_id: None,
            attributes: vec![
                ("executable".into(), Value::Str("/bin/x".into())),
                ("task_type".into(), Value::Str("ComputeTask".into())),
            ],
            kind: EventKind::Task(TaskEvent {
                state,
                duration_seconds: None,
                error_type: None,
                extra: vec![],
            }),
        }
    }

    fn run(events: &[Event]) -> (TaskTracker, Instruments, Vec<Outcome>) {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        let out = events.iter().map(|e| t.observe(e, &mut i)).collect();
        (t, i, out)
    }

    use TaskState::*;

    #[test]
    fn full_lifecycle() {
        let (t, i, out) = run(&[
            ev(1, "a", Created),
            ev(2, "a", Submitted),
            ev(3, "a", Queued),
            ev(5, "a", Started),
            ev(105, "a", Completed),
        ]);
        assert_eq!(
            out[4],
            Outcome::Closed {
                duration_seconds: 0.1,
                incomplete: false
            }
        );
        let s = &t.spans()[0];
        assert_eq!(
            (s.start_ns, s.end_ns, s.queued_ns),
            (1_000_000, 105_000_000, Some(3_000_000))
        );
        assert_eq!(s.state, Completed);
        assert!(!s.incomplete);
        assert_eq!(i.counters, [Some(1), Some(1), Some(1), None, None]);
        assert_eq!(i.running, Some(0));
        assert_eq!(i.duration_count, 1);
    }

    #[test]
    fn failure_without_start_is_incomplete_with_zero_duration() {
        let mut f = ev(9, "b", Failed);
        if let EventKind::Task(t) = &mut f.kind {
            t.error_type = Some("exit:3".into());
        }
        let (t, i, out) = run(&[ev(1, "b", Created), f]);
        assert_eq!(
            out[1],
            Outcome::Closed {
                duration_seconds: 0.0,
                incomplete: true
            }
        );
        assert_eq!(t.spans()[0].error_type.as_deref(), Some("exit:3"));
        assert_eq!(i.running, None);
        assert_eq!(i.counters[3], Some(1));
    }

    #[test]
    fn client_duration_wins_and_first_event_opens_the_span() {
        let mut c = ev(50, "c", Completed);
        if let EventKind::Task(t) = &mut c.kind {
            t.duration_seconds = Some(0.0123);
        }
        let (t, _, out) = run(&[ev(10, "c", Started), c]);
        assert_eq!(
            out[1],
            Outcome::Closed {
                duration_seconds: 0.0123,
                incomplete: false
            }
        );
        assert_eq!(t.spans()[0].start_ns, 10_000_000);
    }

    #[test]
    fn duplicates_and_late_events_change_nothing() {
        let (t, i, out) = run(&[
            ev(1, "d", Created),
            ev(2, "d", Started),
            ev(3, "d", Started),
            ev(4, "d", Completed),
            ev(5, "d", Failed),
            ev(6, "d", Started),
        ]);
        assert_eq!(out[2], Outcome::Nothing);
        assert_eq!(out[4], Outcome::Nothing);
        assert_eq!(out[5], Outcome::Nothing);
        assert_eq!(t.spans().len(), 1);
        assert_eq!(t.duplicates(), 3);
        assert_eq!(i.counters, [None, Some(1), Some(1), None, None]);
        assert_eq!(i.running, Some(0));
    }

    #[test]
    fn out_of_order_created_after_started_keeps_the_earliest_start() {
        let (t, _, _) = run(&[
            ev(5, "e", Started),
            ev(2, "e", Created),
            ev(9, "e", Canceled),
        ]);
        assert_eq!(t.spans()[0].start_ns, 2_000_000);
        assert_eq!(t.spans()[0].state, Canceled);
    }

    #[test]
    fn open_tasks_close_as_canceled_at_session_end() {
        let (mut t, mut i, _) = run(&[ev(1, "f", Created), ev(2, "g", Started)]);
        let evs = t.close_all(100_000_000, &mut i);
        assert_eq!(evs.len(), 2);
        assert!(evs.iter().all(|e| e
            .attributes
            .contains(&("incomplete_lifecycle".into(), Value::Bool(true)))));
        assert_eq!(t.open_tasks(), 0);
        assert_eq!(i.counters[4], Some(2));
        assert_eq!(i.running, Some(0));
        assert!(t
            .spans()
            .iter()
            .all(|s| s.closed_at_session_end && s.incomplete));
    }

    #[test]
    fn extra_attributes_gather_on_the_span() {
        let mut s = ev(2, "h", Started);
        s.attributes.push(("pid".into(), Value::Int(42)));
        let mut c = ev(3, "h", Completed);
        c.attributes
            .push(("cpu_user_seconds".into(), Value::Float(0.5)));
        let (t, _, _) = run(&[s, c]);
        assert_eq!(
            t.spans()[0].extra,
            vec![
                ("pid".to_string(), Value::Int(42)),
                ("cpu_user_seconds".to_string(), Value::Float(0.5))
            ]
        );
    }

    fn started_with_pid(t: i64, task: &str, pid: i64) -> Event {
        let mut e = ev(t, task, Started);
        e.attributes.push(("pid".into(), Value::Int(pid)));
        e
    }

    fn proc_(gpu_id: u32, pid: u32, used_bytes: u64, ancestors: &[u32]) -> GpuProcess {
        GpuProcess {
            gpu_id,
            pid,
            used_bytes,
            ancestors: ancestors.to_vec(),
        }
    }

    #[test]
    fn gpu_memory_goes_to_the_nearest_open_task_on_the_same_node() {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        t.observe_on("n1", &started_with_pid(1, "outer", 100), &mut i);
        t.observe_on("n1", &started_with_pid(2, "inner", 200), &mut i);
        t.observe_on("n2", &started_with_pid(3, "other", 100), &mut i);
        // 300 is a child of inner (200), itself a child of outer (100).
        t.observe_gpu(
            "n1",
            &[
                proc_(0, 300, 7, &[200, 100, 1]),
                proc_(0, 100, 5, &[1]),
                proc_(0, 101, 6, &[100, 1]),
                proc_(1, 999, 50, &[1]),
            ],
        );
        t.observe_gpu("n1", &[proc_(0, 300, 4, &[200, 100, 1])]);
        // Same pid on another node: that node's task.
        t.observe_gpu("n2", &[proc_(1, 100, 8, &[1])]);
        let mut closed = Vec::new();
        for (node, task) in [("n1", "inner"), ("n1", "outer"), ("n2", "other")] {
            let out = t.observe_on(node, &ev(10, task, Completed), &mut i);
            assert!(matches!(out, Outcome::Closed { .. }));
            closed.push(t.take_terminal_extra());
        }
        let peak = |s: &str| vec![("gpu_memory_peak_bytes".to_string(), Value::Json(s.into()))];
        assert_eq!(closed[0], peak(r#"{"0": 7}"#));
        // outer's two processes on GPU 0 in one poll are summed.
        assert_eq!(closed[1], peak(r#"{"0": 11}"#));
        assert_eq!(closed[2], peak(r#"{"1": 8}"#));
        assert!(t.spans()[0].extra.contains(&peak(r#"{"0": 7}"#)[0]));
        // Closed tasks take nothing more.
        t.observe_gpu("n1", &[proc_(0, 100, 99, &[1])]);
        assert!(t.take_terminal_extra().is_empty());
    }

    #[test]
    fn a_task_open_at_the_end_keeps_its_gpu_memory() {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        t.observe_on("n", &started_with_pid(1, "t", 42), &mut i);
        t.observe_gpu("n", &[proc_(2, 42, 1000, &[1])]);
        let evs = t.close_all(50, &mut i);
        assert!(evs[0].attributes.contains(&(
            "gpu_memory_peak_bytes".into(),
            Value::Json(r#"{"2": 1000}"#.into())
        )));
    }
}
