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
//! - Resources per task: a task with `tal.TaskResourceUpdate` samples (see
//!   `crate::agent::tasks`) gets, on its terminal event and span,
//!   `cpu_percent_mean` and `rss_bytes_mean` (weighted by each sample's
//!   interval), `cpu_percent_peak`, `rss_bytes_peak`, `threads_peak`,
//!   `processes_peak`, `read_bytes_sampled` and `write_bytes_sampled` (the
//!   samples' storage bytes summed) and `resource_samples`. CPU is % of one
//!   CPU. A task that ran for less than one task interval has none.
//! - GPU energy per task: a task that started on a node whose GPUs are
//!   sampled gets `gpu_energy_joules` on its terminal event and span, e.g.
//!   `{"0": 1520.4, "1": 310.0}`: each device's energy from the task's
//!   TaskStarted to its end (the `gpu_energy_joules` counters of the node's
//!   `per_gpu` samples, so to within one poll at either end; a task that
//!   no poll fell in has none, rather than 0 J). It is the
//!   devices' whole energy while the task ran, not the task's share of it:
//!   tasks that overlap on a node each see all of it, and a CPU-only task
//!   sees what the idle GPUs drew.
//!
//! Memory (what a session with many tasks costs at conversion, where this
//! runs over the whole session): an open task is one slot of about 100
//! bytes, its id, a 4-byte entry in an index, and the attributes that are
//! not held in common (`pid`, say); the strings tasks repeat (backend,
//! executable, task type, node, attribute names) are interned, counted by
//! use, and freed when no open task uses them; the devices' energy at a
//! task's start is shared by the tasks that started between two polls. A
//! closed task leaves only a 16-byte fingerprint of its id (a seeded 128-bit
//! hash), for the duplicate rule above (not those closed by the session's
//! end, which nothing follows). Closed spans are not kept: each is
//! handed to the caller as it closes ([`Outcome::Closed`], and
//! [`TaskTracker::close_all`] at the end), to write or spill.
//!
//! One piece: the file passes 1,000 lines only with its tests. Every rule
//! above acts on one open task's slot and the tracker's shared tables
//! (interned strings, the index, the fingerprints of closed ids), so the
//! state machine stays in one file where its invariants can be read
//! together.

use crate::instruments::Instruments;
use crate::record::{Attributes, Event, EventKind, GpuProcess, TaskState, Value};
use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

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

/// A node's devices' energy counters at one time, J, by gpu_id, shared by
/// the tasks that started then.
type Energy = Arc<[(u32, f64)]>;

/// An interned string of [`Symbols`]; [`NONE`] is "not seen".
type Sym = u32;
/// No string (its text reads as "").
const NONE: Sym = 0;
/// An optional time of an open task that was not seen.
const NO_TIME: i64 = i64::MIN;

/// Interned strings, counted by use: what many tasks repeat is held once,
/// and a string no open task uses any more is freed (so unique executables,
/// say, cost only while their tasks are open).
#[derive(Debug)]
struct Symbols {
    /// Text and uses, by symbol; slot 0 is [`NONE`].
    names: Vec<(Box<str>, u32)>,
    free: Vec<Sym>,
    index: HashTable<Sym>,
    hasher: RandomState,
}

impl Default for Symbols {
    fn default() -> Self {
        Self {
            names: vec![(Box::from(""), u32::MAX)],
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl Symbols {
    /// The symbol of `s` if some open task uses it.
    fn lookup(&self, s: &str) -> Option<Sym> {
        let names = &self.names;
        self.index
            .find(self.hasher.hash_one(s), |&i| &*names[i as usize].0 == s)
            .copied()
    }

    /// `s`'s symbol, with one more use.
    fn intern(&mut self, s: &str) -> Sym {
        let h = self.hasher.hash_one(s);
        let Self {
            names,
            free,
            index,
            hasher,
        } = self;
        if let Some(&i) = index.find(h, |&i| &*names[i as usize].0 == s) {
            names[i as usize].1 += 1;
            return i;
        }
        let i = match free.pop() {
            Some(i) => {
                names[i as usize] = (Box::from(s), 1);
                i
            }
            None => {
                names.push((Box::from(s), 1));
                Sym::try_from(names.len() - 1).expect("fewer than 2^32 strings in use")
            }
        };
        index.insert_unique(h, i, |&j| hasher.hash_one(&*names[j as usize].0));
        i
    }

    fn get(&self, s: Sym) -> &str {
        &self.names[s as usize].0
    }

    /// One use of `s` fewer ([`NONE`] is never counted).
    fn release(&mut self, s: Sym) {
        if s == NONE {
            return;
        }
        let e = &mut self.names[s as usize];
        e.1 -= 1;
        if e.1 == 0 {
            let text = std::mem::take(&mut e.0);
            if let Ok(found) = self
                .index
                .find_entry(self.hasher.hash_one(&*text), |&i| i == s)
            {
                found.remove();
            }
            self.free.push(s);
        }
    }
}

/// An open task (see the module doc for its size).
#[derive(Debug)]
struct Open {
    id: Box<str>,
    start_ns: i64,
    /// [`NO_TIME`] until TaskQueued.
    queued_ns: i64,
    /// [`NO_TIME`] until TaskStarted.
    started_ns: i64,
    backend: Sym,
    executable: Sym,
    task_type: Sym,
    /// The node of the task's process, when an event named its `pid` (else 0).
    pid_node: Sym,
    pid: u32,
    /// Exactly sized: most tasks have none, or one or two (`pid`).
    extra: Box<[(Sym, Value)]>,
    /// GPU memory and energy, on nodes whose GPUs are sampled.
    gpu: Option<Box<GpuUse>>,
    /// What its `tal.TaskResourceUpdate` samples said, when it has any.
    res: Option<Box<ResUse>>,
}

/// A task's resource samples, summed up (see [`ResUse::attributes`]).
#[derive(Debug, Default)]
struct ResUse {
    samples: u64,
    seconds: f64,
    cpu_weighted: f64,
    cpu_peak: f32,
    rss_weighted: f64,
    rss_peak: u64,
    threads_peak: u32,
    processes_peak: u32,
    read: Option<u64>,
    write: Option<u64>,
}

impl ResUse {
    fn add(&mut self, r: &crate::record::TaskResources) {
        let secs = f64::from(r.interval_seconds).max(0.0);
        let cpu = r.cpu_percent();
        self.samples += 1;
        self.seconds += secs;
        self.cpu_weighted += f64::from(cpu) * secs;
        self.cpu_peak = self.cpu_peak.max(cpu);
        self.rss_weighted += r.rss_bytes as f64 * secs;
        self.rss_peak = self.rss_peak.max(r.rss_bytes);
        self.threads_peak = self.threads_peak.max(r.threads);
        self.processes_peak = self.processes_peak.max(r.processes);
        if let Some(b) = r.read_bytes {
            self.read = Some(self.read.unwrap_or(0) + b);
        }
        if let Some(b) = r.write_bytes {
            self.write = Some(self.write.unwrap_or(0) + b);
        }
    }

    /// What the terminal event and the span get: means weighted by each
    /// sample's interval, peaks, the storage bytes summed, and how many
    /// samples there were.
    fn attributes(&self) -> Attributes {
        let round1 = crate::record::round1;
        let mean = |w: f64| {
            if self.seconds > 0.0 {
                w / self.seconds
            } else {
                0.0
            }
        };
        let mut a: Attributes = vec![
            (
                "cpu_percent_mean".into(),
                Value::Float(round1(mean(self.cpu_weighted))),
            ),
            (
                "cpu_percent_peak".into(),
                Value::Float(round1(f64::from(self.cpu_peak))),
            ),
            (
                "rss_bytes_mean".into(),
                Value::Int(mean(self.rss_weighted).round() as i64),
            ),
            ("rss_bytes_peak".into(), Value::Int(self.rss_peak as i64)),
            (
                "threads_peak".into(),
                Value::Int(i64::from(self.threads_peak)),
            ),
            (
                "processes_peak".into(),
                Value::Int(i64::from(self.processes_peak)),
            ),
        ];
        if let Some(b) = self.read {
            a.push(("read_bytes_sampled".into(), Value::Int(b as i64)));
        }
        if let Some(b) = self.write {
            a.push(("write_bytes_sampled".into(), Value::Int(b as i64)));
        }
        a.push(("resource_samples".into(), Value::Int(self.samples as i64)));
        a
    }
}

#[derive(Debug, Default)]
struct GpuUse {
    /// Peak GPU memory of the task's processes, per gpu_id.
    peak: Vec<(u32, u64)>,
    /// Their GPU memory at the latest poll, per gpu_id.
    now: Vec<(u32, u64)>,
    /// The node it started on, and its devices' energy counters then.
    energy_start: Option<(Sym, Energy)>,
}

/// What the tracker decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a task event, or one that changes nothing (a duplicate).
    Nothing,
    /// A step of an open task was applied.
    Applied,
    /// The task's span closed.
    Closed(Box<Closed>),
}

/// A task the event closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    /// The duration the terminal event should carry (filled in where the
    /// client left it out).
    pub duration_seconds: f64,
    /// Whether TaskStarted was never seen.
    pub incomplete: bool,
    /// Attributes to add to the terminal event (its GPU memory and energy).
    pub terminal_extra: Attributes,
    /// The closed span.
    pub span: TaskSpan,
}

/// Tracks every task of a session.
#[derive(Debug)]
pub struct TaskTracker {
    /// Open tasks; `None` is a free slot.
    slots: Vec<Option<Open>>,
    free_slots: Vec<u32>,
    /// Slots of open tasks, by the hash of their id.
    index: HashTable<u32>,
    syms: Symbols,
    /// Open tasks' slots by node and pid.
    by_pid: HashMap<Sym, HashMap<u32, u32>>,
    /// Fingerprints of the closed tasks' ids.
    closed: HashSet<u128>,
    seed: u64,
    duplicates: u64,
    /// Each node's GPU energy counters, J, by gpu_id (the latest samples).
    energy: HashMap<String, Vec<(u32, f64)>>,
    /// The same, shared by the tasks that start before the next change.
    energy_shared: HashMap<String, Energy>,
}

impl Default for TaskTracker {
    fn default() -> Self {
        let syms = Symbols::default();
        let seed = syms.hasher.hash_one("tal closed-task fingerprint");
        Self {
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashTable::new(),
            syms,
            by_pid: HashMap::new(),
            closed: HashSet::new(),
            seed,
            duplicates: 0,
            energy: HashMap::new(),
            energy_shared: HashMap::new(),
        }
    }
}

const CORE_ATTRS: [&str; 5] = [
    "executable",
    "task_type",
    "error_type",
    "incomplete_lifecycle",
    "status",
];

fn attr_str<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
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
/// `start` and `now`. A device whose counter has not moved since the start
/// (no poll between the task's start and its end: a window too short to
/// measure, see `crate::agent::window`) is left out, not given 0 J; with no
/// device left, so is the attribute.
fn energy_attr(start: &[(u32, f64)], now: &[(u32, f64)]) -> Option<(String, Value)> {
    let mut body: Vec<(u32, f64)> = start
        .iter()
        .filter_map(|&(g, j0)| {
            let j1 = now.iter().find(|(n, _)| *n == g)?.1;
            (j1 != j0).then(|| (g, ((j1 - j0).max(0.0) * 1000.0).round() / 1000.0))
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

/// How a task is being closed.
struct Closing {
    end_ns: i64,
    state: TaskState,
    error_type: Option<String>,
    incomplete: bool,
    at_session_end: bool,
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
        self.energy_shared.remove(node);
    }

    /// Each node's devices' energy counters, J (the latest samples).
    pub fn energy(&self) -> &HashMap<String, Vec<(u32, f64)>> {
        &self.energy
    }

    fn fingerprint(&self, task_id: &str) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(task_id.as_bytes(), self.seed)
    }

    /// The slot of open task `task_id`.
    fn find(&self, task_id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.syms.hasher.hash_one(task_id), |&i| {
                slots[i as usize]
                    .as_ref()
                    .is_some_and(|o| &*o.id == task_id)
            })
            .copied()
    }

    /// Opens `task_id` at `ev`; returns its slot.
    fn open(&mut self, task_id: &str, ev: &Event) -> u32 {
        let backend = self.syms.intern(ev.backend.as_deref().unwrap_or(""));
        let open = Open {
            id: Box::from(task_id),
            start_ns: ev.event_time_ns,
            queued_ns: NO_TIME,
            started_ns: NO_TIME,
            backend,
            executable: NONE,
            task_type: NONE,
            pid_node: NONE,
            pid: 0,
            extra: Box::default(),
            gpu: None,
            res: None,
        };
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(open);
                s
            }
            None => {
                self.slots.push(Some(open));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 open tasks")
            }
        };
        let Self {
            slots, index, syms, ..
        } = self;
        let id_of = |i: &u32| -> &str { slots[*i as usize].as_ref().map_or("", |o| &o.id) };
        index.insert_unique(syms.hasher.hash_one(task_id), slot, |i| {
            syms.hasher.hash_one(id_of(i))
        });
        slot
    }

    /// Applies one event seen on no particular node (see [`Self::observe_on`]).
    pub fn observe(&mut self, ev: &Event, inst: &mut Instruments) -> Outcome {
        self.observe_on("", ev, inst)
    }

    /// Attributes the GPU processes of one poll on `node` to the open tasks
    /// they belong to (by pid or ancestor pid).
    pub fn observe_gpu(&mut self, node: &str, procs: &[GpuProcess]) {
        let Some(pids) = self.syms.lookup(node).and_then(|n| self.by_pid.get(&n)) else {
            return;
        };
        // Summed per task and device for this poll.
        let mut use_: Vec<(u32, u32, u64)> = Vec::new();
        for p in procs {
            let owner = std::iter::once(&p.pid)
                .chain(&p.ancestors)
                .find_map(|pid| pids.get(pid));
            if let Some(&slot) = owner {
                match use_
                    .iter_mut()
                    .find(|(s, g, _)| *s == slot && *g == p.gpu_id)
                {
                    Some(u) => u.2 = u.2.saturating_add(p.used_bytes),
                    None => use_.push((slot, p.gpu_id, p.used_bytes)),
                }
            }
        }
        // This poll replaces what the node's tasks used at the last one.
        for &slot in pids.values() {
            if let Some(g) = self.slots[slot as usize]
                .as_mut()
                .and_then(|o| o.gpu.as_mut())
            {
                g.now.clear();
            }
        }
        for (slot, gpu, bytes) in use_ {
            if let Some(o) = self.slots[slot as usize].as_mut() {
                let g = o.gpu.get_or_insert_with(Box::default);
                g.now.push((gpu, bytes));
                match g.peak.iter_mut().find(|(d, _)| *d == gpu) {
                    Some(e) => e.1 = e.1.max(bytes),
                    None => g.peak.push((gpu, bytes)),
                }
            }
        }
    }

    /// The GPU memory of open task `task_id`'s processes at the latest
    /// poll of its node, per gpu_id (empty when none was seen).
    pub fn gpu_now(&self, task_id: &str) -> &[(u32, u64)] {
        self.find(task_id)
            .and_then(|s| self.slots[s as usize].as_ref())
            .and_then(|o| o.gpu.as_deref())
            .map_or(&[], |g| &g.now)
    }

    /// Applies one event seen on `node`; updates `inst` (the task
    /// instruments).
    pub fn observe_on(&mut self, node: &str, ev: &Event, inst: &mut Instruments) -> Outcome {
        if let (EventKind::TaskResources(r), Some(id)) = (&ev.kind, ev.task_id.as_deref()) {
            if let Some(slot) = self.find(id) {
                if let Some(o) = self.slots[slot as usize].as_mut() {
                    o.res.get_or_insert_with(Box::default).add(r);
                }
            }
            return Outcome::Nothing;
        }
        let EventKind::Task(t) = &ev.kind else {
            return Outcome::Nothing;
        };
        let Some(task_id) = ev.task_id.as_deref() else {
            return Outcome::Nothing;
        };
        let slot = match self.find(task_id) {
            Some(s) => s,
            None => {
                if self.closed.contains(&self.fingerprint(task_id)) {
                    self.duplicates += 1;
                    return Outcome::Nothing;
                }
                self.open(task_id, ev)
            }
        };
        self.gather(slot, node, ev);
        let open = self.slots[slot as usize].as_mut().expect("an open slot");
        match t.state {
            TaskState::Created => Outcome::Applied,
            TaskState::Submitted => {
                inst.count(TaskState::Submitted);
                Outcome::Applied
            }
            TaskState::Queued => {
                if open.queued_ns == NO_TIME {
                    open.queued_ns = ev.event_time_ns;
                    Outcome::Applied
                } else {
                    self.duplicates += 1;
                    Outcome::Nothing
                }
            }
            TaskState::Started => {
                if open.started_ns != NO_TIME {
                    self.duplicates += 1;
                    return Outcome::Nothing;
                }
                open.started_ns = ev.event_time_ns;
                if let Some(e) = self.energy.get(node) {
                    let shared = self
                        .energy_shared
                        .entry(node.to_string())
                        .or_insert_with(|| Arc::from(e.as_slice()))
                        .clone();
                    let n = self.syms.intern(node);
                    let gpu = open.gpu.get_or_insert_with(Box::default);
                    if let Some((old, _)) = gpu.energy_start.replace((n, shared)) {
                        self.syms.release(old);
                    }
                }
                inst.count(TaskState::Started);
                inst.running_add(1);
                Outcome::Applied
            }
            TaskState::Completed | TaskState::Failed | TaskState::Canceled => {
                let started_ns = open.started_ns;
                self.terminal(slot, started_ns, ev, t, inst)
            }
        }
    }

    /// Closes the task in `slot` at its terminal event `ev` (`t`): the
    /// duration (the client's, else TaskStarted → now, else 0), whether its
    /// lifecycle was incomplete, its error type, and the instruments.
    fn terminal(
        &mut self,
        slot: u32,
        started_ns: i64,
        ev: &Event,
        t: &crate::record::TaskEvent,
        inst: &mut Instruments,
    ) -> Outcome {
        let started = started_ns != NO_TIME;
        let incomplete = !started
            || ev
                .attributes
                .iter()
                .any(|(k, v)| k == "incomplete_lifecycle" && *v == Value::Bool(true));
        let duration = match t.duration_seconds {
            Some(d) => d,
            None if started => (ev.event_time_ns.saturating_sub(started_ns) as f64 / 1e9).max(0.0),
            None => 0.0,
        };
        if started {
            inst.running_add(-1);
        }
        inst.count(t.state);
        inst.record_duration(duration);
        let error_type = (t.state == TaskState::Failed).then(|| {
            t.error_type
                .clone()
                .or_else(|| attr_str(&ev.attributes, "error_type").map(String::from))
                .unwrap_or_else(|| "unknown".into())
        });
        let (span, terminal_extra) = self.close(
            slot,
            Closing {
                end_ns: ev.event_time_ns,
                state: t.state,
                error_type,
                incomplete,
                at_session_end: false,
            },
        );
        Outcome::Closed(Box::new(Closed {
            duration_seconds: duration,
            incomplete,
            terminal_extra,
            span,
        }))
    }

    /// Gathers what `ev` (seen on `node`) says about the open task in
    /// `slot`: its pid, start, executable, task type and other attributes
    /// (first value wins).
    fn gather(&mut self, slot: u32, node: &str, ev: &Event) {
        let Self {
            slots,
            syms,
            by_pid,
            ..
        } = self;
        let open = slots[slot as usize].as_mut().expect("an open slot");
        if open.pid == 0 {
            let pid = ev.attributes.iter().find_map(|(k, v)| match v {
                Value::Int(p) if k == "pid" && *p > 0 && *p <= i64::from(u32::MAX) => {
                    Some(*p as u32)
                }
                _ => None,
            });
            if let Some(pid) = pid {
                let n = syms.intern(node);
                open.pid = pid;
                open.pid_node = n;
                by_pid.entry(n).or_default().insert(pid, slot);
            }
        }
        open.start_ns = open.start_ns.min(ev.event_time_ns);
        if open.executable == NONE {
            if let Some(s) = attr_str(&ev.attributes, "executable") {
                open.executable = syms.intern(s);
            }
        }
        if open.task_type == NONE {
            if let Some(s) = attr_str(&ev.attributes, "task_type") {
                open.task_type = syms.intern(s);
            }
        }
        for (k, v) in &ev.attributes {
            if CORE_ATTRS.contains(&k.as_str())
                || open.extra.iter().any(|(ek, _)| syms.get(*ek) == k)
            {
                continue;
            }
            let mut extra = std::mem::take(&mut open.extra).into_vec();
            extra.reserve_exact(1);
            extra.push((syms.intern(k), v.clone()));
            open.extra = extra.into_boxed_slice();
        }
    }

    /// Closes every task still open at `end_ns` as canceled (incomplete),
    /// handing `each` the TaskCanceled event to write for it and its span,
    /// in task order.
    pub fn close_all(
        &mut self,
        end_ns: i64,
        inst: &mut Instruments,
        mut each: impl FnMut(Event, TaskSpan),
    ) {
        let mut order: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].is_some())
            .collect();
        let slots = &self.slots;
        let id = |i: &u32| slots[*i as usize].as_ref().map_or("", |o| &o.id);
        order.sort_unstable_by(|a, b| id(a).cmp(id(b)));
        for slot in order {
            let open = self.slots[slot as usize].as_ref().expect("listed");
            if open.started_ns != NO_TIME {
                inst.running_add(-1);
            }
            inst.count(TaskState::Canceled);
            inst.record_duration(0.0);
            let (span, gpu_attrs) = self.close(
                slot,
                Closing {
                    end_ns,
                    state: TaskState::Canceled,
                    error_type: None,
                    incomplete: true,
                    at_session_end: true,
                },
            );
            let mut attributes: Attributes = vec![
                ("executable".into(), Value::Str(span.executable.clone())),
                ("task_type".into(), Value::Str(span.task_type.clone())),
                ("incomplete_lifecycle".into(), Value::Bool(true)),
                ("closed_at_session_end".into(), Value::Bool(true)),
            ];
            attributes.extend(gpu_attrs);
            let ev = Event {
                event_id: u128::from(crate::ids::task_span_id("", &span.task_id)) << 64
                    | 0x4000_8000_0000_0002,
                event_time_ns: end_ns,
                emit_time_ns: end_ns,
                backend: Some(span.backend.clone()),
                task_id: Some(span.task_id.clone()),
                node_id: None,
                attributes,
                kind: EventKind::Task(crate::record::TaskEvent {
                    state: TaskState::Canceled,
                    duration_seconds: Some(0.0),
                    error_type: None,
                    extra: Vec::new(),
                }),
            };
            each(ev, span);
        }
        // Every slot is free: give the memory back.
        self.slots = Vec::new();
        self.free_slots = Vec::new();
        self.index = HashTable::new();
    }

    /// Closes the task in `slot`: frees what it held, remembers it as
    /// closed, and returns its span and the GPU attributes its terminal
    /// event gets (also on the span).
    fn close(&mut self, slot: u32, how: Closing) -> (TaskSpan, Attributes) {
        let open = self.slots[slot as usize].take().expect("an open slot");
        self.free_slots.push(slot);
        let h = self.syms.hasher.hash_one(&*open.id);
        if let Ok(found) = self.index.find_entry(h, |&i| i == slot) {
            found.remove();
        }
        if open.pid != 0 {
            if let Some(m) = self.by_pid.get_mut(&open.pid_node) {
                // Unless a later task of the same pid took it over.
                if m.get(&open.pid) == Some(&slot) {
                    m.remove(&open.pid);
                }
                if m.is_empty() {
                    self.by_pid.remove(&open.pid_node);
                }
            }
        }
        let mut gpu_attrs = open
            .res
            .as_ref()
            .map(|r| r.attributes())
            .unwrap_or_default();
        if let Some(gpu) = &open.gpu {
            if !gpu.peak.is_empty() {
                gpu_attrs.push(gpu_peak_attr(&gpu.peak));
            }
            if let Some((node, start)) = &gpu.energy_start {
                let now = self.energy.get(self.syms.get(*node));
                if let Some(a) = now.and_then(|now| energy_attr(start, now)) {
                    gpu_attrs.push(a);
                }
            }
        }
        let mut extra: Attributes = open
            .extra
            .iter()
            .map(|(k, v)| (self.syms.get(*k).to_string(), v.clone()))
            .collect();
        extra.extend(gpu_attrs.iter().cloned());
        let span = TaskSpan {
            start_ns: open.start_ns,
            end_ns: how.end_ns.max(open.start_ns),
            queued_ns: (open.queued_ns != NO_TIME).then_some(open.queued_ns),
            state: how.state,
            error_type: how.error_type,
            backend: self.syms.get(open.backend).to_string(),
            executable: self.syms.get(open.executable).to_string(),
            task_type: self.syms.get(open.task_type).to_string(),
            incomplete: how.incomplete,
            closed_at_session_end: how.at_session_end,
            extra,
            task_id: String::from(open.id),
        };
        for s in [open.backend, open.executable, open.task_type, open.pid_node] {
            self.syms.release(s);
        }
        for (k, _) in &open.extra {
            self.syms.release(*k);
        }
        if let Some((node, _)) = open.gpu.and_then(|g| g.energy_start) {
            self.syms.release(node);
        }
        // Nothing follows the session's end: tasks closed by it need not be
        // remembered (which would cost memory when it is needed least).
        if !how.at_session_end {
            self.closed.insert(self.fingerprint(&span.task_id));
        }
        (span, gpu_attrs)
    }

    /// Tasks currently open.
    pub fn open_tasks(&self) -> usize {
        self.slots.len() - self.free_slots.len()
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

    /// The tracker after `events`, the instruments, the outcomes, and the
    /// spans closed, in closing order.
    fn run(events: &[Event]) -> (TaskTracker, Instruments, Vec<Outcome>, Vec<TaskSpan>) {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        let out: Vec<Outcome> = events.iter().map(|e| t.observe(e, &mut i)).collect();
        let spans = out
            .iter()
            .filter_map(closed)
            .map(|c| c.span.clone())
            .collect();
        (t, i, out, spans)
    }

    fn closed(o: &Outcome) -> Option<&Closed> {
        match o {
            Outcome::Closed(c) => Some(c),
            _ => None,
        }
    }

    /// (duration, incomplete) of a closing outcome.
    fn closing(o: &Outcome) -> Option<(f64, bool)> {
        closed(o).map(|c| (c.duration_seconds, c.incomplete))
    }

    fn close_all(t: &mut TaskTracker, end_ns: i64, i: &mut Instruments) -> Vec<(Event, TaskSpan)> {
        let mut out = Vec::new();
        t.close_all(end_ns, i, |e, s| out.push((e, s)));
        out
    }

    use TaskState::*;

    #[test]
    fn full_lifecycle() {
        let (t, i, out, spans) = run(&[
            ev(1, "a", Created),
            ev(2, "a", Submitted),
            ev(3, "a", Queued),
            ev(5, "a", Started),
            ev(105, "a", Completed),
        ]);
        assert_eq!(closing(&out[4]), Some((0.1, false)));
        assert_eq!(t.open_tasks(), 0);
        let s = &spans[0];
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
        let (_, i, out, spans) = run(&[ev(1, "b", Created), f]);
        assert_eq!(closing(&out[1]), Some((0.0, true)));
        assert_eq!(spans[0].error_type.as_deref(), Some("exit:3"));
        assert_eq!(i.running, None);
        assert_eq!(i.counters[3], Some(1));
    }

    #[test]
    fn client_duration_wins_and_first_event_opens_the_span() {
        let mut c = ev(50, "c", Completed);
        if let EventKind::Task(t) = &mut c.kind {
            t.duration_seconds = Some(0.0123);
        }
        let (_, _, out, spans) = run(&[ev(10, "c", Started), c]);
        assert_eq!(closing(&out[1]), Some((0.0123, false)));
        assert_eq!(spans[0].start_ns, 10_000_000);
    }

    #[test]
    fn duplicates_and_late_events_change_nothing() {
        let (t, i, out, spans) = run(&[
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
        assert_eq!(spans.len(), 1);
        assert_eq!(t.duplicates(), 3);
        assert_eq!(i.counters, [None, Some(1), Some(1), None, None]);
        assert_eq!(i.running, Some(0));
    }

    #[test]
    fn out_of_order_created_after_started_keeps_the_earliest_start() {
        let (_, _, _, spans) = run(&[
            ev(5, "e", Started),
            ev(2, "e", Created),
            ev(9, "e", Canceled),
        ]);
        assert_eq!(spans[0].start_ns, 2_000_000);
        assert_eq!(spans[0].state, Canceled);
    }

    #[test]
    fn open_tasks_close_as_canceled_at_session_end() {
        let (mut t, mut i, _, _) = run(&[ev(1, "g", Created), ev(2, "f", Started)]);
        let closed = close_all(&mut t, 100_000_000, &mut i);
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|(e, _)| e
            .attributes
            .contains(&("incomplete_lifecycle".into(), Value::Bool(true)))));
        // In task order, each event with its own span.
        let ids: Vec<_> = closed
            .iter()
            .map(|(e, s)| (e.task_id.clone().unwrap(), s.task_id.clone()))
            .collect();
        assert_eq!(ids, [("f".into(), "f".into()), ("g".into(), "g".into())]);
        assert_eq!(t.open_tasks(), 0);
        assert_eq!(i.counters[4], Some(2));
        assert_eq!(i.running, Some(0));
        assert!(closed
            .iter()
            .all(|(_, s)| s.closed_at_session_end && s.incomplete && s.end_ns == 100_000_000));
        assert!(t.closed.is_empty());
    }

    #[test]
    fn extra_attributes_gather_on_the_span() {
        let mut s = ev(2, "h", Started);
        s.attributes.push(("pid".into(), Value::Int(42)));
        let mut c = ev(3, "h", Completed);
        c.attributes
            .push(("cpu_user_seconds".into(), Value::Float(0.5)));
        let (_, _, _, spans) = run(&[s, c]);
        assert_eq!(
            spans[0].extra,
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
        let mut spans = Vec::new();
        for (node, task) in [("n1", "inner"), ("n1", "outer"), ("n2", "other")] {
            let out = t.observe_on(node, &ev(10, task, Completed), &mut i);
            let c = super::tests::closed(&out).expect("closed");
            closed.push(c.terminal_extra.clone());
            spans.push(c.span.clone());
        }
        let peak = |s: &str| vec![("gpu_memory_peak_bytes".to_string(), Value::Json(s.into()))];
        assert_eq!(closed[0], peak(r#"{"0": 7}"#));
        // outer's two processes on GPU 0 in one poll are summed.
        assert_eq!(closed[1], peak(r#"{"0": 11}"#));
        assert_eq!(closed[2], peak(r#"{"1": 8}"#));
        assert!(spans[0].extra.contains(&peak(r#"{"0": 7}"#)[0]));
        // Closed tasks take nothing more, and their pids are forgotten.
        t.observe_gpu("n1", &[proc_(0, 100, 99, &[1])]);
        assert!(t.by_pid.is_empty());
        assert_eq!(t.open_tasks(), 0);
    }

    #[test]
    fn a_task_no_gpu_poll_fell_in_has_no_energy_figure() {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        let energy = |out: &[Outcome]| {
            closed(&out[1]).and_then(|c| {
                c.terminal_extra
                    .iter()
                    .find(|(k, _)| k == "gpu_energy_joules")
                    .map(|(_, v)| v.clone())
            })
        };
        t.observe_energy("n", 0, 100.0);
        t.observe_energy("n", 1, 50.0);
        // Started and ended between two polls.
        let out = [
            t.observe_on("n", &ev(1, "short", Started), &mut i),
            t.observe_on("n", &ev(2, "short", Completed), &mut i),
        ];
        assert_eq!(energy(&out), None);
        // A poll between start and end: measured, device by device.
        let first = t.observe_on("n", &ev(3, "long", Started), &mut i);
        t.observe_energy("n", 0, 112.5);
        let out = [first, t.observe_on("n", &ev(4, "long", Completed), &mut i)];
        assert_eq!(energy(&out), Some(Value::Json(r#"{"0": 12.5}"#.into())));
    }

    #[test]
    fn a_task_open_at_the_end_keeps_its_gpu_memory() {
        let mut t = TaskTracker::default();
        let mut i = Instruments::default();
        t.observe_on("n", &started_with_pid(1, "t", 42), &mut i);
        t.observe_gpu("n", &[proc_(2, 42, 1000, &[1])]);
        let closed = close_all(&mut t, 50, &mut i);
        assert!(closed[0].0.attributes.contains(&(
            "gpu_memory_peak_bytes".into(),
            Value::Json(r#"{"2": 1000}"#.into())
        )));
    }
}
